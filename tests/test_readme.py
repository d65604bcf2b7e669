"""The README's and the documentation's code runs.

Every fenced code block with a language in README.md, CHANGELOG.md and docs/**/*.md is preceded by
one of

- ``<!-- test: NAME -->``: a ``python`` block is executed (each page's blocks in order, in one
  namespace); a ``yaml`` block is validated as an `ExperimentConfig`; a ``bash`` block's commands are
  ``mpc-llm`` invocations, each parsed by the CLI's own parser (flags and values checked, nothing
  run);
- ``<!-- not run: REASON -->``: not run, and the reason says why (a GPU, a cluster, minutes of work).

Blocks without a language (diagrams, directory trees), ``text`` blocks and MyST directives
(``{toctree}``, ``{eval-rst}``) are not code. A Python
block that appears in several files under one name must be the same code in each.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from mpc_llm import Controller

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CHANGELOG = ROOT / "CHANGELOG.md"  # on the site through docs/changelog.md's include
TAG = re.compile(r"<!-- (test|not run): (.+?) -->")
NOT_CODE = {"", "text"}


def pages() -> list[Path]:
    """README.md, CHANGELOG.md and every page of the site (not the studies' generated summary.md)."""
    docs = sorted(
        p
        for p in (ROOT / "docs").rglob("*.md")
        if "_build" not in p.parts and not (p.name == "summary.md" and "results" in p.parts)
    )
    return [README, CHANGELOG, *docs]


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    kind: str | None  # "test", "not run" or None (untagged)
    label: str  # the test's name or the reason
    code: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks_of(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        fence = re.match(r"^(`{3,})(\S*)", lines[i])
        if not fence:
            i += 1
            continue
        ticks, lang = fence.group(1), fence.group(2)
        if lang.startswith("{"):  # a MyST directive (toctree, eval-rst), not code
            lang = ""
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == ticks), None)
        if end is None:
            raise AssertionError(f"{path.relative_to(ROOT)}:{i + 1}: unclosed code fence")
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        tag = TAG.fullmatch(before.strip())
        code = "\n".join(lines[i + 1 : end]) + "\n"
        kind, label = (tag.group(1), tag.group(2).strip()) if tag else (None, "")
        found.append(Block(path, i + 1, lang, kind, label, code))
        i = end + 1
    return found


def all_blocks() -> list[Block]:
    return [b for p in pages() for b in blocks_of(p)]


def python_blocks() -> dict[str, str]:
    """Tested Python blocks by name, from every page."""
    named: dict[str, str] = {}
    for b in all_blocks():
        if b.kind == "test" and b.lang == "python":
            assert named.get(b.label, b.code) == b.code, f"{b.where}: '{b.label}' differs from its namesake"
            named[b.label] = b.code
    return named


def run_block(name: str, namespace: dict[str, object]) -> None:
    exec(compile(python_blocks()[name], f"docs:{name}", "exec"), namespace)


# ------------------------------------------------------------------------ every block: run or why


def test_every_code_block_is_run_or_says_why() -> None:
    untagged = [f"{b.where} ({b.lang})" for b in all_blocks() if b.lang not in NOT_CODE and b.kind is None]
    assert not untagged, "code blocks without <!-- test: NAME --> or <!-- not run: REASON -->: " + ", ".join(
        untagged
    )
    for b in all_blocks():
        if b.kind == "test":
            assert b.lang in {"python", "yaml", "bash"}, f"{b.where}: cannot test a {b.lang!r} block"
        if b.kind == "not run":
            assert len(b.label) >= 10, f"{b.where}: say why the block is not run"


def test_readme_has_the_promised_examples() -> None:
    readme = {b.label for b in blocks_of(README) if b.kind == "test"}
    assert "llm-api" in readme
    assert {"llm-api", "python-api", "custom-controller", "llm-mpc", "pendulum-mpc"} <= set(python_blocks())


def test_readme_is_a_landing_page_whose_links_resolve() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if not re.match(r"[a-z]+://", target):
            assert (ROOT / target).exists(), f"README links to a missing file: {target}"


# ------------------------------------------------------------------------ pages run, in order

#: Blocks that load the embedded model (slow) or are long, run with their own checks below.
OWN_TESTS = {"llm-api", "llm-mpc", "pendulum-mpc"}


def _pages_with_python() -> list[Path]:
    return [p for p in pages() if any(b.kind == "test" and b.lang == "python" for b in blocks_of(p))]


@pytest.mark.parametrize("page", _pages_with_python(), ids=lambda p: str(p.relative_to(ROOT)))
def test_page_python_blocks_run(page: Path) -> None:
    namespace: dict[str, object] = {}
    for b in blocks_of(page):
        if b.kind == "test" and b.lang == "python" and b.label not in OWN_TESTS:
            exec(compile(b.code, b.where, "exec"), namespace)


@pytest.mark.parametrize(
    "block",
    [b for b in all_blocks() if b.kind == "test" and b.lang == "yaml"],
    ids=lambda b: b.where,
)
def test_yaml_blocks_are_valid_configs(block: Block) -> None:
    from mpc_llm.experiment import ExperimentConfig

    ExperimentConfig.model_validate(yaml.safe_load(block.code))


def cli_commands(code: str) -> list[list[str]]:
    """The argument lists after ``mpc-llm`` (or ``torchrun ... -m mpc_llm``) of a bash block."""
    commands = []
    for command in code.replace("\\\n", " ").splitlines():
        words = shlex.split(command, comments=True)
        if not words:
            continue
        if words[0] == "torchrun":
            words = words[words.index("mpc_llm") + 1 :]
        elif Path(words[0]).name == "mpc-llm":
            words = words[1:]
        else:
            raise AssertionError(f"not an mpc-llm command: {command!r}")
        commands.append(words)
    return commands


@pytest.mark.parametrize(
    "block",
    [b for b in all_blocks() if b.kind == "test" and b.lang == "bash"],
    ids=lambda b: b.where,
)
def test_cli_blocks_parse(block: Block, capsys: pytest.CaptureFixture[str]) -> None:
    from mpc_llm.cli import build_parser

    for argv in cli_commands(block.code):
        try:
            build_parser().parse_args(argv)
        except SystemExit as exc:
            error = capsys.readouterr().err.strip()
            pytest.fail(f"{block.where}: mpc-llm {shlex.join(argv)}: {error} ({exc})")


# ------------------------------------------------------------------------ the README's examples


def test_python_api_and_custom_controller_run() -> None:
    ns: dict[str, object] = {}
    run_block("python-api", ns)
    system, cost = ns["system"], ns["cost"]
    zero_control = cost(system.rollout(torch.zeros(1, 1, 20, 2), [])).item()
    assert ns["result"].best_cost.item() < 0.3 * zero_control

    run_block("custom-controller", ns)
    assert issubclass(ns["TopKMean"], Controller)
    assert ns["result"].best_cost.item() < 0.3 * zero_control
    assert ns["result"].budget.samples == 15 * 128


@pytest.mark.smollm
def test_llm_api_runs_on_the_embedded_model() -> None:
    ns: dict[str, object] = {}
    run_block("llm-api", ns)
    result, baseline = ns["result"], ns["baseline"]
    assert result.budget.samples == 16 and baseline.budget.samples == 16
    assert isinstance(result.best_rollout.texts[0][0], str)
    assert -1.0 <= -result.best_cost.item() <= 1.0  # VADER compound score


def test_pendulum_swing_up_runs_and_holds_upright() -> None:
    from mpc_llm.dynamics import angle_normalize

    ns: dict[str, object] = {}
    run_block("pendulum-mpc", ns)
    states = ns["states"]
    assert states.shape == (1, 1, 151, 2)
    assert float(angle_normalize(states[0, 0, -30:, 0]).abs().max()) < 0.3


@pytest.mark.smollm
def test_model_predictive_control_runs_on_the_embedded_model() -> None:
    ns: dict[str, object] = {}
    run_block("llm-mpc", ns)
    result, blockwise, speculative = ns["result"], ns["blockwise"], ns["speculative"]
    assert 4 <= result.budget.samples <= 16  # up to 4 plans of 4 samples (fewer if the response ends)
    assert all(isinstance(r.best_rollout.texts[0][0], str) for r in (result, blockwise, speculative))
    assert speculative.budget.samples <= 16
    assert -1.0 <= float(result.best_metrics["reward"][0]) <= 1.0


def test_the_contract_kit_runs_on_the_docs_own_controller() -> None:
    ns: dict[str, object] = {}
    for name in ("extending-setup", "custom-controller", "contracts"):
        run_block(name, ns)
