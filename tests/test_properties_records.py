"""Comparison records and summaries, checked against the property each field names.

Each record's ``cost`` is the minimum of the first ``k`` costs of the run it was read from (``k``
samples, or the samples whose tokens fit in ``k``); its closeness and held-out figures are a fresh
scoring of the response it records; the bootstrap interval of a summary has the level it states.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import pytest
import torch
from fake_text import COST, PROMPTS, FakeText

from mpc_llm import CostFunction
from mpc_llm.controllers import AISP, BestOfN, BlockwiseBestOfN, RandomShooting
from mpc_llm.dynamics import IdentityDynamics, LMDynamics, QuadraticCost
from mpc_llm.evaluation.compare import compare
from mpc_llm.evaluation.compare.records import anytime_records, final_records
from mpc_llm.evaluation.summary import summarize
from mpc_llm.evaluation.summary.metrics import paired_bootstrap
from mpc_llm.lm import LMRollout
from mpc_llm.rewards import KeywordReward, Reward


# --------------------------------------------------------------------------- the anytime rule
@pytest.mark.parametrize(
    "controller", [AISP(sigma=1.0, lambda_=0.5, num_samples=3), RandomShooting(num_samples=3)]
)
def test_each_record_is_the_minimum_of_the_first_k_costs_of_the_run(controller) -> None:
    system = IdentityDynamics(horizon=2, control_dim=2, batch_size=2)
    result = controller.optimize(system, QuadraticCost([[1.0, -1.0]] * 2), seed=[5, 6], max_samples=12,
                                 keep_rollouts=True)  # fmt: skip
    costs = result.all_costs().double()  # (B, 12), distinct (continuous draws)
    budgets = list(range(1, 13))
    records = anytime_records(result, [10, 11], "c", 0, budgets, "samples")
    assert len(records) == 2 * len(budgets)
    late = 0
    for r in records:
        b, k = r["prompt_index"] - 10, r["budget"]
        assert r["samples"] == k
        assert r["cost"] == float(costs[b, :k].min())
        assert r["reward"] == -r["cost"]  # no reward term: the negated cost
        late += int(float(costs[b, :k].min()) != float(costs[b].min()))
    assert late > 0  # some budget's best is not the whole run's best: the rule is exercised


class VariableText(FakeText):
    """`FakeText` whose responses have lengths 1..T drawn from the problem's generator."""

    def rollout(self, controls: torch.Tensor, generators: Sequence[torch.Generator]) -> LMRollout:
        out = super().rollout(controls, generators)
        N, T = out.tokens.shape[1:]
        lengths = torch.stack([torch.randint(1, T + 1, (N,), generator=g) for g in generators])
        texts = [[" ".join(t.split()[: int(lengths[b, n])]) for n, t in enumerate(row)]
                 for b, row in enumerate(out.texts)]  # fmt: skip
        return LMRollout(controls=out.controls, tokens=out.tokens, lengths=lengths, texts=texts,
                         prompts=out.prompts, logprobs=out.logprobs,
                         base_logprobs=out.base_logprobs)  # fmt: skip


def graded(rollout: LMRollout) -> torch.Tensor:
    """Cost with (almost surely) distinct values: minus the goods, plus a tie-breaking hash."""
    h = torch.tensor([[(hash(t) % 9973) / 1e5 for t in row] for row in rollout.texts], dtype=torch.float64)
    return COST(rollout).double() + h


def test_a_token_budget_reads_the_samples_whose_tokens_fit() -> None:
    system = VariableText(PROMPTS[:2])
    result = AISP(sigma=1.0, lambda_=0.5, num_samples=4).optimize(
        system, CostFunction.from_fn(graded), seed=0, max_samples=16, keep_rollouts=True
    )
    costs = result.all_costs().double()
    counts = torch.cat([r.rollout.token_counts() for r in result.history], dim=1)  # (B, 16)
    assert len(set(counts.flatten().tolist())) > 1  # lengths vary
    cum = counts.cumsum(dim=1)
    budgets = [1, 3, 5, 8, 13, 21, 34, 55]
    for r in anytime_records(result, [0, 1], "aisp", 0, budgets, "tokens"):
        b, k = r["prompt_index"], r["budget"]
        fit = max(1, int((cum[b] <= k).sum()))  # the samples whose tokens fit in k, at least one
        assert r["samples"] == fit
        assert r["tokens"] == int(cum[b, fit - 1])
        assert r["tokens"] <= k or fit == 1
        assert r["cost"] == float(costs[b, :fit].min())


# --------------------------------------------------------------------------- closeness and held-out
def tie_free(rollout) -> torch.Tensor:
    """Cost of a language-model response: a weighted sum of its token ids (distinct per response)."""
    T = rollout.tokens.shape[-1]
    w = 0.5 ** torch.arange(T, dtype=torch.float64)
    return -(rollout.tokens.double() * w).sum(-1)


def test_each_records_closeness_is_a_fresh_scoring_of_its_response(tiny_lm) -> None:
    model, tok = tiny_lm("llama")
    lm = LMDynamics(model, tok, ["Hello there", "The quick brown fox"], chat_template=False, max_new_tokens=5,
                    stop_at_eos=False)  # fmt: skip
    result = AISP(sigma=2.0, lambda_=1.0, num_samples=3, num_knots=1).optimize(
        lm, CostFunction.from_fn(tie_free), seed=1, num_iterations=3, keep_rollouts=True
    )
    records = anytime_records(result, [0, 1], "aisp", 1, [1, 2, 4, 9], "samples", dynamics=lm)
    chosen_late = 0
    for r in records:
        b = r["prompt_index"]
        # the sample the record describes, found by its response and cost
        found = [(rec.rollout, n, it * 3 + n) for it, rec in enumerate(result.history) for n in range(3)
                 if rec.rollout.texts[b][n] == r["response"]
                 and float(rec.costs[b, n]) == r["cost"]]  # fmt: skip
        assert len(found) == 1
        rollout, n, index = found[0]
        chosen_late += int(index > 0)
        one = rollout.take(torch.full((2, 1), n, dtype=torch.long))
        fresh = lm.closeness_to_base(one, one.controls)
        assert r["base_logp_mean"] == pytest.approx(float(fresh["base_logp_mean"][b, 0]), abs=1e-5)
        assert r["base_ppl"] == pytest.approx(math.exp(-r["base_logp_mean"]), rel=1e-9)
        assert r["kl_estimate"] == pytest.approx(float(fresh["kl_estimate"][b, 0]), abs=1e-4)
        assert r["length"] == 5
    assert chosen_late > 0  # some record describes a sample other than the first


def test_held_out_scores_are_the_recorded_responses(tmp_path) -> None:
    held_out = KeywordReward(["fine", "meh"], mode="count")
    controllers = {"best_of_n": BestOfN(num_samples=4), "aisp": AISP(sigma=1.0, lambda_=0.5, num_samples=4)}
    rows = compare(PROMPTS[:3], controllers,
                   FakeText, COST, budgets=[4, 8], out_dir=tmp_path / "run", progress=False,
                   eval_rewards={"kw": held_out})  # fmt: skip
    records = [json.loads(x) for x in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    assert len(records) == 3 * 2 * 2
    for r in records:
        assert r["reward"] == r["response"].split().count("good")
        assert r["eval"]["kw"] == float(held_out.score(PROMPTS[r["prompt_index"]], [r["response"]]).item())
    assert len({r["eval"]["kw"] for r in records}) > 1
    assert all("kw" in row["eval"] for row in rows)


# --------------------------------------------------------------------------- interval levels
def test_the_paired_bootstrap_interval_has_the_width_of_its_level() -> None:
    """Many prompts with normal differences: the 95% percentile interval is the normal one,
    mean +- 1.96 s / sqrt(G) (a 50% interval would be less than half as wide)."""
    g = torch.Generator().manual_seed(0)
    G = 400
    diff = torch.randn(G, generator=g, dtype=torch.float64)
    ours, base = (diff + 3.0).tolist(), [3.0] * G
    boot = paired_bootstrap(ours, base, list(range(G)))
    half = 1.959964 * float(diff.std()) / math.sqrt(G)
    assert boot.diff_high - boot.diff_low == pytest.approx(2 * half, rel=0.12)
    assert boot.diff_low < boot.diff < boot.diff_high
    # the 80% interval is narrower in the ratio of the normal quantiles
    narrow = paired_bootstrap(ours, base, list(range(G)), level=0.8)
    assert (narrow.diff_high - narrow.diff_low) / (boot.diff_high - boot.diff_low) == pytest.approx(
        1.281552 / 1.959964, rel=0.12
    )
    # the win rate's interval: a proportion near 1/2, half-width 1.96 sqrt(p (1 - p) / G)
    p = sum(d > 0 for d in diff.tolist()) / G
    assert boot.win == pytest.approx(p)
    assert boot.win_high - boot.win_low == pytest.approx(2 * 1.959964 * math.sqrt(p * (1 - p) / G), rel=0.12)


def test_the_summarys_difference_interval_is_95_percent() -> None:
    g = torch.Generator().manual_seed(1)
    G = 300
    diff = torch.randn(G, generator=g, dtype=torch.float64).tolist()
    records = [
        {
            "prompt_index": i,
            "seed": 0,
            "budget": 8,
            "controller": name,
            "reward": value,
            "tokens": 8,
            "seconds": 0.1,
        }
        for i, d in enumerate(diff)
        for name, value in (("best_of_n", 1.0), ("aisp", 1.0 + d))
    ]
    row = next(r for r in summarize(records) if r["controller"] == "aisp")
    half = 1.959964 * float(torch.tensor(diff).std()) / math.sqrt(G)
    assert row["diff_high"] - row["diff_low"] == pytest.approx(2 * half, rel=0.12)
    assert row["reward_high"] - row["reward_low"] == pytest.approx(2 * half, rel=0.05)  # Student-t, large n


class CharSum(Reward):
    """A reward that tells tiny-model responses apart: their characters' codes, scaled to [0, 1)."""

    accepts_partial = True

    def score_batch(self, prompts, responses):  # type: ignore[no-untyped-def]
        return [sum(map(ord, r)) % 97 / 97 for r in responses]


def test_a_sequential_record_is_its_runs_own_answer_with_fresh_closeness(tiny_lm) -> None:
    """final_records: the reward as the reward scored it (not the negated cost: the cost is scaled),
    and the committed response's base log-likelihood without a steering estimate (its controls
    come from several plans, so no single policy produced it)."""
    model, tok = tiny_lm("llama")
    prompts = ["Hello there", "The quick brown fox"]
    lm = LMDynamics(model, tok, prompts, chat_template=False, max_new_tokens=6, stop_at_eos=False)
    reward = CharSum()
    result = BlockwiseBestOfN(num_samples=3, block=3).optimize(lm, reward.as_cost(2.0), seed=0)
    records = final_records(result, [0, 1], "blockwise", 0, 6, dynamics=lm)
    fresh = lm.closeness_to_base(result.best_rollout, None)
    for b, r in enumerate(records):
        text = result.best_rollout.texts[b][0]
        assert r["response"] == text
        assert r["reward"] == pytest.approx(float(reward.score([prompts[b]], [text])[0]))
        assert r["cost"] == pytest.approx(-2.0 * r["reward"])
        assert r["base_logp_mean"] == pytest.approx(float(fresh["base_logp_mean"][b, 0]), abs=1e-5)
        assert "kl_estimate" not in r and r["samples"] == 6 and r["tokens"] == 3 * 6 + 3 * 3  # to the end
