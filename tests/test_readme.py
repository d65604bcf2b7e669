"""The README's code runs: each Python block after a `<!-- test: NAME -->` marker."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from mpc_llm import Controller

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"<!-- test: ([\w-]+) -->\s*```python\n(.*?)```", re.DOTALL)


def readme_blocks() -> dict[str, str]:
    return dict(BLOCK.findall(README.read_text(encoding="utf-8")))


def run_block(name: str, namespace: dict[str, object]) -> None:
    exec(compile(readme_blocks()[name], f"README:{name}", "exec"), namespace)


def test_readme_has_the_promised_examples() -> None:
    assert {"llm-api", "python-api", "custom-controller", "llm-mpc", "pendulum-mpc"} <= set(readme_blocks())


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
