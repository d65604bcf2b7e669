"""Bad input, round four (issue 35, and issue 34's "Bad input"): train-value, merge, the value-guided
controllers and the samplers, as a new user tries them.

One row per case, run in this process on the tiny model folder ``{llama}``: the command line, the
line expected on stderr and the exit status. An error (status 2) is one ``mpc-llm: error:`` line;
where the check needs no weights it comes before any model loads (every load is recorded) and
within `FAST` seconds. A warning row (status 0) runs to the end and prints warning lines only.
Every row compares every file under the run's folder ``{out}`` and under the shared inputs
(``{root}``: values, finished runs, prompt files), bytes and modification times, before and after:
a refused command leaves all of them as they were, and the data-loss rows (a finished value, a
finished run, a user's files) are among them.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mpc_llm.cli import main

FAST = 20.0
PROMPTS = ["Hello", "Hi there", "Tell me a story", "What is two plus two", "Good morning"]


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Callable[[str], Path], tiny_lm: Any
) -> dict:
    """Prompt files, values for the tiny llama (good, another d, another reward, trained on the run's
    prompts, another dtype, an edited card.json, no card) and two finished runs to merge."""
    from mpc_llm.dynamics import LMDynamics
    from mpc_llm.values import ValueMLP, save_value

    root = tmp_path_factory.mktemp("round_four")
    llama = str(tiny_model_dir("llama"))
    (root / "p_ok.txt").write_text("\n".join(PROMPTS) + "\n")
    (root / "p_three.txt").write_text("\n".join(PROMPTS[:3]) + "\n")
    (root / "afile.txt").write_text("a file of the user's\n")
    model, tok = tiny_lm("llama")
    fingerprint = LMDynamics(model, tok, max_new_tokens=4).model_fingerprint()
    card = {"model": "llama", "model_fingerprint": fingerprint, "reward": "length",
            "prompts": {"source": "sharegpt:train", "count": 80}}  # fmt: skip
    values = root / "values"
    save_value(ValueMLP(64, 8, 1), card, values / "good")
    save_value(ValueMLP(65, 8, 1), card, values / "other_d")
    save_value(ValueMLP(64, 8, 1), {**card, "reward": "judge"}, values / "judge")
    save_value(ValueMLP(64, 8, 1), {**card, "prompts": {"source": str(root / "p_ok.txt")}}, values / "seen")
    save_value(ValueMLP(64, 8, 1), {**card, "dtype": "float16"}, values / "float16")
    save_value(ValueMLP(64, 8, 1), card, values / "edited")
    edited = json.loads((values / "edited" / "card.json").read_text())
    (values / "edited" / "card.json").write_text(json.dumps({**edited, "reward": "vader"}))
    _no_card(values / "no_card", ValueMLP(64, 8, 1))
    runs = root / "runs"
    for name, controller in (("a", "best_of_n"), ("b", "aisp")):
        argv = ["compare", "--out", str(runs / name), "--quiet", "--model", llama, "--prompts",
                str(root / "p_three.txt"), "--controllers", controller, "--budgets", "2", "-n", "2",
                "--max-new-tokens", "4", "--reward", "length"]  # fmt: skip
        assert main(argv) == 0
    return {"root": str(root), "llama": llama}


def _no_card(folder: Path, net: Any) -> None:
    """A safetensors file of a value's tensors without the card in its metadata."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "value.safetensors"))


def _state(folder: Path) -> Any:
    """Every file under ``folder`` with its bytes and modification time, every folder by name."""
    if not folder.exists():
        return "absent"
    if folder.is_file():
        return folder.read_bytes(), folder.stat().st_mtime_ns
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else "folder"
        for p in sorted(folder.rglob("*"))
    }


# ------------------------------------------------------------------------------------------ set-ups
def _value_copy(out: Path, world: dict) -> None:
    """``{out}`` := a copy of a finished value (issue 35, item 1: ``values/smollm2-vader`` copied)."""
    shutil.copytree(Path(world["root"]) / "values" / "good", out)


def _value_and_notes(out: Path, world: dict) -> None:
    _value_copy(out, world)
    (out / "notes.txt").write_text("mine")


def _user_data(out: Path, world: dict) -> None:
    """A project of the user's whose ``data/`` holds their ``train.csv`` (item 2)."""
    (out / "data").mkdir(parents=True)
    (out / "data" / "train.csv").write_text("text,label\nhello,1\n")


def _user_folder(out: Path, world: dict) -> None:
    out.mkdir()
    (out / "notes.txt").write_text("my notes")


def _a_file(out: Path, world: dict) -> None:
    out.write_text("not a folder")


def _other_collection(out: Path, world: dict) -> None:
    """`TV`'s collection but of 3 samples per prompt, with one finished chunk (its tensors need not
    load: the check reads the settings only)."""
    from mpc_llm.lm import LMConfig
    from mpc_llm.lm.precision import dtype_name, resolve_dtype

    settings = {
        "chunk_size": 8,
        "dtype": dtype_name(resolve_dtype("auto")),
        "model": world["llama"],
        "lm": LMConfig(max_new_tokens=4, temperature=0.7).model_dump(mode="json"),
        "num_prompts": 2,
        "prompts": f"{world['root']}/p_ok.txt",
        "reward": "length",
        "samples_per_prompt": 3,
        "seed": 0,
    }
    (out / "data").mkdir(parents=True)
    (out / "data" / "collection.json").write_text(json.dumps(settings))
    (out / "data" / "chunk-00000.safetensors").write_bytes(b"a chunk")


def _stale_collection(out: Path, world: dict) -> None:
    """What a failed collection leaves: its settings (of other settings) and no chunk."""
    (out / "data").mkdir(parents=True)
    (out / "data" / "collection.json").write_text(json.dumps({"samples_per_prompt": 7}))


def _run_copy(out: Path, world: dict) -> None:
    shutil.copytree(Path(world["root"]) / "runs" / "a", out)


def _run_and_notes(out: Path, world: dict) -> None:
    _run_copy(out, world)
    (out / "notes.txt").write_text("mine")


def _read_only(monkeypatch: pytest.MonkeyPatch, out: Path) -> None:
    """``{out}``'s parent is not writable (as root every folder is: ``os.access`` says so instead)."""
    import os

    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != out.parent and real(p, mode, **kw))


# ------------------------------------------------------------------------------------------ checks
def _strict(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def _json_card(out: Path, stdout: str) -> None:
    """Item 14: the card on stdout and in card.json is strict JSON; the NaN correlation is null."""
    card = _strict(stdout)
    assert card["report"]["heldout"]["spearman"] is None
    saved = _strict((out / "card.json").read_text())
    assert {k: v for k, v in saved.items() if k not in ("format", "architecture")} == card


def _collected_afresh(out: Path, stdout: str) -> None:
    assert json.loads((out / "data" / "collection.json").read_text())["samples_per_prompt"] == 2
    assert (out / "value.safetensors").is_file()


def _blockwise_json(out: Path, stdout: str) -> None:
    """Item 4: align runs value_blockwise; a block scored by the value has no reward (null)."""
    summary = _strict(stdout)
    assert summary["controller"]["name"] == "value_blockwise"
    assert summary["history"] and summary["history"][0]["best_reward"] is None


def _value_provenance(out: Path, stdout: str) -> None:
    """Item 9: the value's prompts are in settings.json beside the run's own."""
    settings = json.loads((out / "settings.json").read_text())
    learned = settings["controllers"]["re_control"]["value_learning"]
    assert learned["prompts"]["source"] == settings["prompts"]


def _within_budget(out: Path, stdout: str) -> None:
    """Item 5: no QAlign record spends more tokens than its budget, and each ran a proposal."""
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert {r["budget"] for r in records if r["controller"] == "qalign"} == {8, 12, 13}
    assert all(r["tokens"] <= r["budget"] for r in records), [(r["budget"], r["tokens"]) for r in records]
    assert all(r["samples"] >= 2 for r in records if r["controller"] == "qalign")


def _merged_anew(out: Path, stdout: str) -> None:
    settings = json.loads((out / "settings.json").read_text())
    assert sorted(settings["controllers"]) == ["aisp", "best_of_n"] and "merged_from" in settings


def _to_stderr(
    message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    """What Python shows a warning with outside pytest (which records them instead)."""
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


# ------------------------------------------------------------------------------------------ the table
@dataclass(frozen=True)
class Case:
    argv: list[str]
    message: str
    code: int = 2
    before: Callable[[Path, dict], None] | None = None
    loads_model: bool = False  # the error (or the run) may come once the model has loaded
    check: Callable[[Path, str], None] | None = None  # more checks on {out} and stdout
    patch: Callable[[pytest.MonkeyPatch, Path], None] | None = None
    warnings: int = 0  # warning lines expected (rows with status 0)


TV = ["train-value", "--model", "{llama}", "--reward", "length", "--prompts", "{root}/p_ok.txt",
      "--num-prompts", "2", "--samples-per-prompt", "2", "--max-new-tokens", "4", "--epochs", "1", "--width",
      "8", "--depth", "1", "--quiet", "--out", "{out}"]  # fmt: skip
ALIGN = ["align", "Hi", "--model", "{llama}", "--max-new-tokens", "4", "--reward", "length", "--quiet"]
RE = [*ALIGN, "--controller", "re_control", "--set", "num_steps=1"]
COMPARE = ["compare", "--out", "{out}", "--quiet", "--model", "{llama}", "--reward", "length", "--prompts",
           "{root}/p_ok.txt", "--max-new-tokens", "4"]  # fmt: skip
MERGE = ["merge", "{root}/runs/a", "{root}/runs/b", "--out", "{out}"]
V = "{root}/values"

CASES: dict[str, Case] = {
    # ---- finished work lost (items 1 to 3)
    "1: train-value --out a finished value": Case(
        TV,
        "already holds a trained value (value.safetensors); pass --overwrite to replace it",
        before=_value_copy,
    ),
    "2: --overwrite and a bad reward, a user's data/train.csv": Case(
        [*TV, "--reward", "nosuch", "--overwrite"], "unknown reward 'nosuch'", before=_user_data
    ),
    "2: --overwrite with a user's data/train.csv": Case(
        [*TV, "--overwrite"],
        "holds files that train-value does not write (data); --overwrite deletes only its own",
        before=_user_data,
    ),
    "2: --overwrite with a finished value and a user's file beside it": Case(
        [*TV, "--overwrite"],
        "holds files that train-value does not write (notes.txt)",
        before=_value_and_notes,
    ),
    "2: --overwrite replaces a finished value (only once the model has loaded)": Case(
        [*TV, "--overwrite"], "", code=0, before=_value_copy, loads_model=True, check=_collected_afresh
    ),
    "3: merge --out a finished run": Case(
        MERGE, "already holds a run (settings.json and its records); pass --overwrite", before=_run_copy
    ),
    "3: merge --out a user's folder": Case(
        MERGE, "is not empty (notes.txt) and holds no run", before=_user_folder
    ),
    "3: merge --out inside an input run": Case(
        ["merge", "{root}/runs/a", "{root}/runs/b", "--out", "{root}/runs/a/merged"],
        "is inside the run {root}/runs/a, where it would be a file no run writes",
    ),
    "3: merge --overwrite a run holding a user's file": Case(
        [*MERGE, "--overwrite"], "holds files that no run writes (notes.txt)", before=_run_and_notes
    ),
    "3: merge --overwrite replaces a finished run": Case(
        [*MERGE, "--overwrite"], "", code=0, before=_run_copy, loads_model=True, check=_merged_anew
    ),
    # ---- traceback (item 4)
    "4: align with value_blockwise": Case(
        [
            *ALIGN,
            "--controller",
            "value_blockwise",
            "--set",
            f"value={V}/good",
            "--set",
            "block=2",
            "-n",
            "2",
            "--json",
        ],
        "",
        code=0,
        loads_model=True,
        check=_blockwise_json,
    ),
    # ---- a budget overspent (item 5)
    "5: QAlign with a token budget below one proposal": Case(
        [
            *COMPARE,
            "--controllers",
            "qalign",
            "--budget-unit",
            "tokens",
            "--budgets",
            "7",
            "--num-prompts",
            "1",
        ],
        "a budget of 7 tokens is below one QAlign step (the first response and one proposal, each up to 4 "
        "tokens: 8); raise the budget to at least 8",
    ),
    "5: QAlign under token budgets spends no more than each": Case(
        [
            *COMPARE,
            "--controllers",
            "qalign,best_of_n",
            "--budget-unit",
            "tokens",
            "--budgets",
            "8,12,13",
            "--num-prompts",
            "2",
        ],
        "",
        code=0,
        loads_model=True,
        check=_within_budget,
    ),
    # ---- nonsense accepted in silence (items 6 to 17)
    "6: merge the same run twice": Case(
        ["merge", "{root}/runs/a", "{root}/runs/a", "--out", "{out}"], "{root}/runs/a is given twice"
    ),
    "7: train-value --num-prompts -1": Case(
        [*TV, "--num-prompts", "-1"], "--num-prompts: must be at least 1, got -1"
    ),
    "8: train-value on sharegpt:test": Case(
        [*TV, "--prompts", "sharegpt:test"],
        "--prompts sharegpt:test is a split results are reported on (test)",
    ),
    "9: a value trained on the prompts the run answers": Case(
        [
            *COMPARE,
            "--controllers",
            "re_control,best_of_n",
            "--set",
            f"value={V}/seen",
            "--set",
            "num_steps=1",
            "--budgets",
            "1",
            "--num-prompts",
            "1",
        ],
        "mpc-llm: warning: the value {root}/values/seen was trained on {root}/p_ok.txt, the prompts this run "
        "answers: its results are not held out",
        code=0,
        loads_model=True,
        warnings=1,
        check=_value_provenance,
    ),
    "10: a value trained for another reward": Case(
        [*RE, "--set", f"value={V}/judge"],
        "mpc-llm: warning: the value {root}/values/judge was trained for the "
        "reward judge, and this run optimises length",
        code=0,
        loads_model=True,
        warnings=1,
    ),
    "11: --ess-target for QAlign": Case(
        [*ALIGN, "--controller", "qalign", "--ess-target", "0.5"],
        "--ess-target: controller 'qalign' has no setting ess_target (its settings: beta, num_steps)",
    ),
    "11: --set ess_target for QAlign (the same answer)": Case(
        [*ALIGN, "--controller", "qalign", "--set", "ess_target=0.5"],
        "--set ess_target: controller 'qalign' has no setting ess_target (its settings: beta, num_steps)",
    ),
    "12: merge --baseline a label no run holds": Case(
        [*MERGE, "--baseline", "nosuch"],
        "--baseline nosuch: no run holds that controller; the labels are aisp, best_of_n",
    ),
    "13: train-value --out a user's folder": Case(
        TV, "is not empty (notes.txt) and holds no value or collection of train-value's", before=_user_folder
    ),
    "14: train-value --json with a NaN correlation": Case(
        [*TV, "--samples-per-prompt", "1", "--json"], "", code=0, loads_model=True, check=_json_card
    ),
    "15: RE-Control num_steps=1e8": Case(
        [*RE, "--set", f"value={V}/good", "--set", "num_steps=1e8"],
        "num_steps=100000000 gradient steps per token is more than 1000",
    ),
    "16: a prompt file with fewer prompts than asked (train-value)": Case(
        [*TV, "--prompts", "{root}/p_three.txt", "--num-prompts", "4"],
        "p_three.txt holds 3 prompts, fewer than the 4 asked (--num-prompts); ask for at most 3",
    ),
    "16: a prompt file with fewer prompts than asked (compare)": Case(
        [*COMPARE, "--prompts", "{root}/p_three.txt", "--num-prompts", "4"],
        "p_three.txt holds 3 prompts, fewer than the 4 asked (--num-prompts); ask for at most 3",
    ),
    "17: -n for SMC (align)": Case(
        [*ALIGN, "--controller", "smc", "-n", "4"],
        "-n/--num-samples: controller 'smc' has no setting num_samples (its settings: beta, block, "
        "ess_target, num_particles, resample_threshold)",
    ),
    "17: -n for SMC alone (compare)": Case(
        [*COMPARE, "--controllers", "smc", "-n", "4", "--set", "block=4"],
        "-n/--num-samples: no selected controller has the setting num_samples",
    ),
    # ---- messages and late checks (items 18 to 23)
    "18: train-value --out a file": Case(TV, "--out {out} is a file, not a folder", before=_a_file),
    "18: train-value --out below a file": Case(
        [*TV, "--out", "{root}/afile.txt/sub"],
        "afile.txt is a file, not a folder; pass a folder for the value",
    ),
    "18: merge --out a file": Case(MERGE, "--out {out} is a file, not a folder", before=_a_file),
    "19: train-value --num-prompts 1": Case(
        [*TV, "--num-prompts", "1"], "the held-out split by prompt needs at least 2"
    ),
    "19: a failed collection's data/ does not block the corrected run": Case(
        TV, "", code=0, before=_stale_collection, loads_model=True, check=_collected_afresh
    ),
    "20: a token budget below one SMC particle": Case(
        [*COMPARE, "--controllers", "smc", "--set", "block=2", "--budget-unit", "tokens", "--budgets", "3"],
        "a budget of 3 tokens is below one SMC particle through the episode (up to 4 tokens, whatever the "
        "block); raise the budget to at least 4",
    ),
    "21: --set value= (empty)": Case(
        [*RE, "--set", "value="], "value is empty; give the folder a value was trained"
    ),
    "22: train-value into an unwritable place": Case(TV, "cannot write there", patch=_read_only),
    "22: train-value --num-prompts 0": Case(
        [*TV, "--num-prompts", "0"], "--num-prompts: must be at least 1, got 0"
    ),
    "22: a data folder collected with other settings": Case(
        TV,
        "holds value data collected with other settings (samples_per_prompt: 3 there, 2 now); pass "
        "--overwrite to collect afresh",
        before=_other_collection,
    ),
    "22: --heldout-fraction nan": Case(
        [*TV, "--heldout-fraction", "nan"], "heldout_fraction: Input should be a finite number"
    ),
    "22: a value for another d (RE-Control)": Case(
        [*RE, "--set", f"value={V}/other_d"],
        "was trained on states of size d=65 (model llama), but this model's pre-logit has d=64",
    ),
    "22: a value for another d (value_blockwise)": Case(
        [*ALIGN, "--controller", "value_blockwise", "--set", f"value={V}/other_d"],
        "d=65",
    ),
    "23: card.json edited": Case(
        [*RE, "--set", f"value={V}/edited"],
        "card.json differs from the card in value.safetensors (reward: "
        "'length' in the weights, 'vader' in card.json); the weights file's card is authoritative",
    ),
    # ---- issue 34: a missing card, another dtype
    "34: a value file without a card": Case(
        [*RE, "--set", f"value={V}/no_card"], "holds tensors but no card (the metadata 'card'"
    ),
    "34: a value collected in another dtype": Case(
        [*RE, "--set", f"value={V}/float16"],
        "mpc-llm: warning: the value {root}/values/float16 was collected with the model in float16",
        code=0,
        loads_model=True,
        warnings=1,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_round_four(
    name: str,
    world: dict,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mpc_llm.evaluation.value_training as value_training
    import mpc_llm.experiment as experiment

    case = CASES[name]
    root, out = Path(world["root"]), tmp_path / "out"
    if case.before is not None:
        case.before(out, world)
    if case.patch is not None:
        case.patch(monkeypatch, out)
    before = (_state(out), _state(root))
    loads: list[float] = []
    start = time.perf_counter()
    for module in (experiment, value_training):
        real = module.LMDynamics

        def recording(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
            loads.append(time.perf_counter() - start)
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, "LMDynamics", recording)

    def fill(text: str) -> str:
        return text.replace("{root}", str(root)).replace("{llama}", world["llama"]).replace("{out}", str(out))

    with warnings.catch_warnings():  # shown on stderr as the command shows them, every time
        warnings.simplefilter("always")
        warnings.showwarning = _to_stderr
        code = main([fill(a) for a in case.argv])
    elapsed = time.perf_counter() - start
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert code == case.code, captured.err
    assert fill(case.message) in captured.err, captured.err
    if case.code == 2:
        assert len(lines) == 1 and lines[0].startswith("mpc-llm: error: "), captured.err
        assert (_state(out), _state(root)) == before, "a refused command changed a file"
        if not case.loads_model:
            assert loads == [], f"the error came only after the model loaded ({loads[0]:.1f} s in)"
            assert elapsed < FAST, f"{elapsed:.1f} s before an error that needs no model"
    else:
        assert len(lines) == case.warnings and all(x.startswith("mpc-llm: warning: ") for x in lines), (
            captured.err
        )
        assert _state(root) == before[1], "a run changed its inputs"
    if case.check is not None:
        case.check(out, captured.out)
