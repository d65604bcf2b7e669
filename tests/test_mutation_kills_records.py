"""Comparison records (``evaluation/compare/records.py``), what its mutation run left untested
(issue 36): a record made invalid by one non-finite number keeps its key and what it spent, a
value's work in model-token equivalents, the temperature and sigma a record reports, when a decode
kept the log-probs a steering figure needs, and the anytime records of problems whose first samples
cannot be scored."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from mpc_llm.controllers import BestOfN
from mpc_llm.dynamics import ToyLM, ToyReward
from mpc_llm.evaluation.compare.records import (
    _settings,
    _steering_log_ratios,
    add_value_tokens,
    anytime_records,
    finite_record,
    value_tokens,
)

NAN = math.nan
KEY = {"prompt_index": 3, "controller": "aisp", "seed": 1, "budget": 8}
SPENT = {"samples": 8, "tokens": 40, "seconds": 1.5}


@pytest.mark.parametrize("bad", ["reward", "cost"])
def test_one_non_finite_reward_or_cost_makes_the_record_invalid_keeping_its_key_and_spending(
    bad: str,
) -> None:
    record = {**KEY, "reward": 0.5, "cost": -0.5, "response": "a b", "length": 2, **SPENT, bad: NAN}
    assert finite_record(record) == {**KEY, "reward": None, "cost": None, "invalid": True, **SPENT}


def test_a_values_work_counts_a_gradient_step_as_three_forwards_and_the_other_forwards_once() -> None:
    assert value_tokens(grad_steps=10.0, value_evals=30.0, ratio=0.1) == pytest.approx(0.1 * (30.0 + 20.0))
    assert value_tokens(grad_steps=10.0, value_evals=4.0, ratio=0.1) == pytest.approx(3.0)


def test_value_tokens_are_added_to_every_record_with_value_work_and_only_with_a_ratio() -> None:
    records = [{"grad_steps": 2.0}, {"value_evals": 5.0}, {"grad_steps": 1.0, "value_evals": 4.0}, {"x": 1},
               {"grad_steps": 0.0}]  # fmt: skip
    out = add_value_tokens([dict(r) for r in records], 0.5)
    assert [r.get("value_tokens") for r in out] == [
        pytest.approx(3.0), pytest.approx(2.5), pytest.approx(0.5 * (3.0 + 3.0)), None, 0.0,
    ]  # fmt: skip
    assert add_value_tokens([dict(r) for r in records], None) == records


def test_a_record_reports_its_problems_sigma_and_the_mean_lambda_of_the_updates_within_its_budget() -> None:
    """Updates of 4 samples each; a budget of 8 reads the first two updates' temperatures (the
    third's samples are beyond it), and an infinite temperature (equal costs) is left out."""
    lam = [torch.tensor([1.0, 10.0]), torch.tensor([3.0, math.inf]), torch.tensor([100.0, 100.0])]
    history = [SimpleNamespace(stats={"lambda": x}) for x in lam]
    result = SimpleNamespace(settings={"sigma": torch.tensor([0.5, 0.75])})
    assert _settings(result, 0, history, 8, [4, 4, 4]) == {"sigma": 0.5, "lambda_mean": 2.0}  # type: ignore[arg-type]
    assert _settings(result, 1, history, 8, [4, 4, 4]) == {"sigma": 0.75, "lambda_mean": 10.0}  # type: ignore[arg-type]
    assert _settings(result, 0, history, 12, [4, 4, 4]) == {
        "sigma": 0.5,
        "lambda_mean": pytest.approx(104 / 3),
    }  # type: ignore[arg-type]


def test_no_steering_figure_unless_every_rollout_kept_both_log_probs() -> None:
    both = SimpleNamespace(logprobs=torch.zeros(1, 2, 3), base_logprobs=torch.zeros(1, 2, 3))
    only_controlled = SimpleNamespace(logprobs=torch.zeros(1, 2, 3), base_logprobs=None)
    no_attribute = SimpleNamespace(logprobs=torch.zeros(1, 2, 3))
    for rollouts in ([both, only_controlled], [only_controlled], [no_attribute]):
        assert _steering_log_ratios([SimpleNamespace(rollout=r) for r in rollouts]) is None


@pytest.mark.filterwarnings("ignore:.*costs are NaN or infinite")
def test_a_problem_whose_first_samples_cannot_be_scored_gets_an_invalid_record_and_the_others_theirs() -> (
    None
):
    """A reward undefined (NaN) on responses that start with token 2: at budget 1 the problems whose
    first response does are invalid records (key and spending kept), and every problem still has a
    record at every budget; a sample with a NaN reward is never chosen."""
    B, budgets = 8, [1, 4]
    reward = ToyReward(lambda seq: NAN if seq[:1] == (2,) else float(sum(t == 1 for t in seq)))
    result = BestOfN(num_samples=4).optimize(
        ToyLM.example(B), reward, seed=list(range(B)), num_iterations=1, keep_rollouts=True
    )
    records = anytime_records(result, list(range(10, 10 + B)), "best_of_n", 0, budgets, "samples")
    assert len(records) == B * len(budgets)
    first = [r for r in records if r["budget"] == 1]
    invalid = [r["prompt_index"] for r in first if r.get("invalid")]
    assert invalid and min(invalid) < 10 + B - 1, "the seeds must make a problem before the last invalid"
    for r in first:
        if r.get("invalid"):
            assert set(r) == {"prompt_index", "controller", "seed", "budget", "reward", "cost", "invalid",
                              "samples", "tokens", "seconds"}  # fmt: skip
            assert r["controller"] == "best_of_n" and r["samples"] == 1 and r["reward"] is None
    for r in records:
        assert r.get("invalid") or not r["response"].startswith("2")


def test_a_records_seconds_are_its_samples_share_of_the_batchs_time_per_problem() -> None:
    result = BestOfN(num_samples=4).optimize(
        ToyLM.example(2), ToyReward.example(), seed=[0, 1], num_iterations=2, keep_rollouts=True
    )
    records = anytime_records(result, [0, 1], "best_of_n", 0, [2, 6], "samples")
    per_sample = [r.seconds / 4 for r in result.history for _ in range(4)]
    for r in records:
        assert r["seconds"] == pytest.approx(sum(per_sample[: r["budget"]]) / 2, rel=1e-12)


class Penalised(ToyReward):
    """The toy reward with a cost that is not its negation (a penalty of 1 beside it), and its
    reported reward NaN on responses that start with token 2 (cost finite); ``metrics=False``
    reports no reward at all."""

    def __init__(self, metrics: bool = True) -> None:
        super().__init__(ToyReward.example().fn)
        self.metrics = metrics

    def evaluate(self, rollout):  # type: ignore[no-untyped-def]
        costs, metrics = super().evaluate(rollout)
        starts = rollout.tokens[:, :, 0] == 2
        reward = metrics["reward"].masked_fill(starts.to(metrics["reward"].device), NAN)
        return costs + 1.0, ({"reward": reward} if self.metrics else {})


@pytest.mark.filterwarnings("ignore:.*NaN")
def test_a_records_reward_is_the_reported_one_and_a_sample_without_one_is_never_chosen() -> None:
    B = 4
    result = BestOfN(num_samples=6).optimize(
        ToyLM.example(B), Penalised(), seed=list(range(B)), num_iterations=1, keep_rollouts=True
    )
    records = anytime_records(result, list(range(B)), "best_of_n", 0, [6], "samples")
    for r in records:
        assert not r["response"].startswith("2")
        assert r["reward"] == pytest.approx(1.0 - r["cost"])  # the reported reward, not -cost


def test_anytime_records_need_the_runs_rollouts() -> None:
    result = BestOfN(num_samples=2).optimize(ToyLM.example(1), ToyReward.example(), seed=0, num_iterations=1)
    with pytest.raises(
        AssertionError, match=r"^anytime records need optimize\(\.\.\., keep_rollouts=True\)$"
    ):
        anytime_records(result, [0], "best_of_n", 0, [2], "samples")


def test_a_sequential_records_seconds_are_per_problem_and_its_reward_the_negated_cost_without_one() -> None:
    from mpc_llm.controllers import QAlign
    from mpc_llm.evaluation.compare.records import final_records

    result = QAlign(beta=1.0).optimize(ToyLM.example(2), Penalised(metrics=False), max_samples=4, seed=[0, 1])
    records = final_records(result, [5, 6], "qalign", 0, 4)
    for b, r in enumerate(records):
        assert r["seconds"] == pytest.approx(result.budget.seconds / 2, rel=1e-12)
        assert r["reward"] == -r["cost"] == -float(result.best_cost[b])


def test_a_samplers_record_weighs_its_samples_with_their_proposal_to_base_log_ratio() -> None:
    """AISP's sampling mode at sigma 2 after its first update: each record's figures (log Z, the
    tilted KL, the ESS) are those of the weights with every sample's log-ratio, within its budget."""
    from mpc_llm.controllers import AISPSampler
    from mpc_llm.controllers.sampling import tilted_weights

    B, budgets = 3, [8, 16]
    sampler = AISPSampler(sigma=2.0, lambda_=1.0, num_samples=8, num_knots=4)
    result = sampler.optimize(
        ToyLM.example(B), ToyReward.example(), max_samples=16, seed=[0, 1, 2], keep_rollouts=True
    )
    ratios = torch.cat([r.log_ratio for r in result.history], dim=1)
    assert float(ratios[:, 8:].abs().max()) > 0.1  # the second iteration's proposal is not the base
    records = anytime_records(
        result, list(range(B)), "aisp_sampler", 0, budgets, "samples", controller=sampler
    )
    costs = result.all_costs()
    for r in records:
        b, k = r["prompt_index"], r["budget"]
        _, est = tilted_weights(costs[b : b + 1, :k], ratios[b : b + 1, :k], *sampler.temperature())
        assert r["log_z"] == pytest.approx(float(est.log_z[0]), rel=1e-9)
        assert r["ess"] == pytest.approx(float(est.ess[0]), rel=1e-9)
