"""The shape of the package: layers, module sizes, the adapter table, reward and cost kept apart."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fake_text import PROMPTS, FakeText

from mpc_llm.controllers import RandomShooting
from mpc_llm.evaluation.compare import compare
from mpc_llm.lm import ARCHITECTURES, ModelAdapter
from mpc_llm.lm.testing import TINY_ARCHITECTURES
from mpc_llm.rewards import ControlCost, KeywordReward, KLCost

PACKAGE = Path(__file__).resolve().parents[1] / "mpc_llm"


@pytest.mark.parametrize("module", ["mpc_llm.core", "mpc_llm.controllers", "mpc_llm"])
def test_core_and_controllers_load_nothing_above_them(module: str) -> None:
    """A fresh interpreter: importing the core or the controllers loads no Hugging Face code, no LM
    layer, no dynamics, rewards or evaluation."""
    code = (
        f"import sys, {module}\n"
        "above = ('transformers', 'mpc_llm.lm', 'mpc_llm.dynamics', 'mpc_llm.rewards', "
        "'mpc_llm.evaluation', 'mpc_llm.experiment', 'mpc_llm.cli')\n"
        "print(sorted(m for m in sys.modules if m.startswith(above)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


#: A ceiling no module should reach by accident. Modules are split when they hold two jobs, not when
#: they reach a number (docs/architecture.md); this only catches a module grown without anyone looking.
MODULE_CEILING = 600


def test_no_module_reaches_the_ceiling() -> None:
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert len(sizes) > 30
    assert {name: n for name, n in sizes.items() if n > MODULE_CEILING} == {}


def test_every_evaluation_module_names_its_one_job() -> None:
    """Each module of `mpc_llm.evaluation` opens with a docstring whose first line says what it does."""
    for path in (PACKAGE / "evaluation").rglob("*.py"):
        text = path.read_text()
        assert text.startswith('"""'), f"{path.relative_to(PACKAGE)} has no module docstring"
        first = text[3:].splitlines()[0].strip()
        assert len(first) > 20, f"{path.relative_to(PACKAGE)}: the docstring's first line names no job"


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_the_adapter_table_declares_what_the_model_does_after_its_head(tiny_lm, arch: str) -> None:
    """`ModelAdapter.logits` (head + the declared post-head transform) equals the model's own logits."""
    model, tok = tiny_lm(arch)
    adapter = ModelAdapter(model)
    seen: list[torch.Tensor] = []
    handle = adapter.head.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    ids = torch.tensor([tok("Hello there, how are you?")["input_ids"]])
    with torch.no_grad():
        try:
            own = model(input_ids=ids).logits
        finally:
            handle.remove()
        by_table = adapter.logits(seen[0])
    torch.testing.assert_close(by_table, own, atol=1e-5, rtol=1e-5)
    if getattr(model.config, "final_logit_softcapping", None):
        assert ARCHITECTURES[adapter.model_type].post_head is not None
        assert not torch.allclose(adapter.head(seen[0]), own, atol=1e-3)  # the cap matters here


def test_the_context_length_is_read_where_each_family_keeps_it(tiny_lm) -> None:
    assert ModelAdapter(tiny_lm("gpt2")[0]).context_length == 256  # n_positions
    assert ModelAdapter(tiny_lm("llama")[0]).context_length == 256  # max_position_embeddings


def test_a_penalty_changes_the_cost_and_the_best_never_a_responses_reward() -> None:
    """Same samples (a non-adaptive controller, the same seed) under two objectives: the reward of
    every response is the same, the costs and the chosen best differ."""
    reward = KeywordReward(["good"], mode="count")
    plain = reward.as_cost()
    penalised = reward.as_cost() + 10.0 * ControlCost(sigma=1.0) + KLCost(beta=1.0)
    controller = RandomShooting(sigma=1.0, num_samples=16)
    runs = [
        controller.optimize(FakeText(PROMPTS[:2]), cost, seed=3, num_iterations=2)
        for cost in (plain, penalised)
    ]
    a, b = runs
    torch.testing.assert_close(a.all_metric("reward"), b.all_metric("reward"))
    assert not torch.allclose(a.all_costs(), b.all_costs())
    assert "kl" in b.history[0].metrics and "kl" not in a.history[0].metrics
    assert not torch.equal(a.all_costs().argmin(1), b.all_costs().argmin(1))
    for result in runs:  # the recorded reward of the best is its response's reward, whatever the cost
        texts = [row[0] for row in result.best_rollout.texts]
        rescored = reward.score(PROMPTS[:2], texts).double()
        torch.testing.assert_close(result.best_metrics["reward"].double().cpu(), rescored)
    torch.testing.assert_close(a.best_cost, -a.best_metrics["reward"].to(a.best_cost))
    assert not torch.allclose(b.best_cost, -b.best_metrics["reward"].to(b.best_cost))


def test_compare_records_the_reward_apart_from_the_cost(tmp_path) -> None:
    reward = KeywordReward(["good"], mode="count")
    cost = reward.as_cost() + 10.0 * ControlCost(sigma=1.0)
    compare(
        PROMPTS[:3], {"rs": RandomShooting(sigma=1.0, num_samples=4)}, FakeText, cost,
        budgets=[4, 8], out_dir=tmp_path / "run", progress=False, baseline=None,
    )  # fmt: skip
    lines = (tmp_path / "run" / "records.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 6
    for r in records:
        assert r["reward"] == r["response"].split().count("good")
        assert r["cost"] > -r["reward"]  # the control penalty is in the cost, not in the reward
