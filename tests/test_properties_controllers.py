"""Controllers checked against the property each one is named for, through the public API only.

AISP's one-step mean has a closed form for a linear reward at every ``alpha``; speculative rejection
keeps the lowest-cost branches and starts as many as its budget allows; ARGS's choice moves with the
reward; blockwise best-of-N commits the best candidate's block; receding horizon's ``fill``,
``samples_per_step``, ``state=`` and ``callback`` do what they say; CEM keeps sigma unless told to
refit it; sampled noise has the sigma the run resolved (``sigma_relative`` included); the pre-logit
scale is the RMS of the teacher-forced pre-logits; the compiled decode runs through
`torch.compile`; budgets are spent from below as well as bounded from above.
"""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mpc_llm import CostFunction
from mpc_llm.controllers import (
    AISP,
    ARGS,
    CEM,
    BestOfN,
    BlockwiseBestOfN,
    RandomShooting,
    RecedingHorizon,
    SpeculativeRejection,
)
from mpc_llm.dynamics import GoalCost, IdentityDynamics, LinearCost, LMDynamics, PointMass, QuadraticCost
from mpc_llm.rewards import KeywordReward

PROMPTS = ["Hello there", "The quick brown fox jumps"]


def tiny(tiny_lm, prompts=PROMPTS, **options) -> LMDynamics:
    model, tok = tiny_lm("llama")
    options.setdefault("chat_template", False)
    options.setdefault("stop_at_eos", False)
    return LMDynamics(model, tok, prompts, **options)


def tie_free(rollout) -> torch.Tensor:
    """A cost on token sequences with distinct values for distinct sequences (in practice)."""
    T = rollout.tokens.shape[-1]
    w = 0.37 ** torch.arange(T, dtype=torch.float64)
    return -(torch.sin(rollout.tokens.double() * 1.7) * w).sum(-1)


TIE_FREE = CostFunction.from_fn(tie_free, "tie_free")


# --------------------------------------------------------------------------- AISP's closed form
@settings(max_examples=8)
@given(alpha=st.floats(0.0, 1.0))
@example(alpha=0.5)
def test_one_aisp_step_moves_the_mean_to_the_closed_form_for_any_alpha(alpha: float) -> None:
    """Linear reward <a, V>, proposal N(U, s^2 I), prior N(0, s^2 I): the weights
    exp(<a, V>/lambda - (1 - alpha) <U, V>/s^2) tilt the proposal to the mean alpha U + s^2 a / lambda."""
    s, lam = 0.8, 1.0
    a = torch.tensor([0.6, -0.3])
    U = torch.tensor([[[0.5, -0.5]]])  # (B, K, d)
    system = IdentityDynamics(horizon=1, control_dim=2)
    aisp = AISP(sigma=s, lambda_=lam, alpha=alpha, num_samples=40000)
    result = aisp.optimize(system, LinearCost(a), seed=3, num_iterations=1, state=aisp.init_state(system, U))
    expected = alpha * U[0, 0] + s**2 * a / lam
    torch.testing.assert_close(result.mean.flatten().float(), expected, atol=0.03, rtol=0.0)


# --------------------------------------------------------------------------- speculative rejection
class Recording(CostFunction):
    """A cost that keeps every rollout it scored (tokens and costs)."""

    accepts_partial = True

    def __init__(self, inner: CostFunction) -> None:
        self.inner, self.calls = inner, []

    def __call__(self, rollout):
        costs = self.inner(rollout)
        self.calls.append((rollout.tokens.clone(), costs.double().clone()))
        return costs


def test_speculative_rejection_keeps_the_lowest_cost_branches_and_starts_what_the_budget_allows(
    tiny_lm,
) -> None:
    lm = tiny(tiny_lm, prompts=PROMPTS[:1], max_new_tokens=12)
    cost = Recording(TIE_FREE)
    spec = SpeculativeRejection(checkpoint=4, keep_fraction=0.5)
    result = spec.optimize(lm, cost, seed=0, max_samples=16)
    # the schedule N, N/2, N/4 over three checkpoints: 8 + 4 + 2 = 14 <= 16 < 9 + 5 + 3
    assert [tokens.shape[0] for tokens, _ in cost.calls] == [8, 4, 2]
    assert result.budget.samples_per_problem == (14,) and result.budget.tokens_per_problem == (56,)
    for (before, c), (after, _) in zip(cost.calls, cost.calls[1:], strict=False):
        assert len(set(c[:, 0].tolist())) == c.shape[0]  # distinct costs: "the best" is well defined
        steps = before.shape[-1]
        best = c[:, 0].argsort()[: after.shape[0]]
        kept = {tuple(row) for row in after[:, 0, :steps].tolist()}  # continued branches, committed part
        assert kept == {tuple(before[i, 0].tolist()) for i in best.tolist()}
    last = cost.calls[-1][1]
    assert float(result.best_cost[0]) == float(last.min())


# --------------------------------------------------------------------------- ARGS
def test_args_commits_the_candidate_the_reward_prefers(tiny_lm) -> None:
    lm = tiny(tiny_lm, prompts=PROMPTS[:1], max_new_tokens=4)
    rollout, _ = lm.candidates(5)
    second = int(rollout.tokens[0, 1, 0])  # the second most likely first token
    wanted = CostFunction.from_fn(lambda r: -(r.tokens == second).sum(-1).double(), "wanted")
    plain = ARGS(num_candidates=5, weight=0.0).optimize(lm, wanted)
    steered = ARGS(num_candidates=5, weight=100.0).optimize(lm, wanted)
    assert int(plain.best_rollout.tokens[0, 0, 0]) == int(rollout.tokens[0, 0, 0]) != second  # greedy
    assert int(steered.best_rollout.tokens[0, 0, 0]) == second
    assert float(steered.best_cost[0]) < float(plain.best_cost[0])


# --------------------------------------------------------------------------- blockwise best-of-N
def test_blockwise_best_of_n_commits_the_best_candidates_block_in_every_block(tiny_lm) -> None:
    lm = tiny(tiny_lm, max_new_tokens=9)
    records = []
    result = BlockwiseBestOfN(num_samples=4, block=3).optimize(
        lm, TIE_FREE, seed=2, callback=records.append, keep_rollouts=True
    )
    assert len(records) == 3 and result.budget.samples_per_problem == (12, 12)
    final = result.best_rollout.tokens[:, 0]  # (B, 9)
    for k, record in enumerate(records):
        best = record.costs.argmin(dim=1)
        assert all(len(set(row.tolist())) == 4 for row in record.costs)  # a unique best candidate
        for b in range(2):
            chosen = record.rollout.tokens[b, int(best[b])]
            assert torch.equal(chosen[: 3 * (k + 1)], final[b, : 3 * (k + 1)])
    assert torch.equal(result.best_cost, records[-1].costs.min(dim=1).values.double())
    assert bool((records[-1].costs.min(dim=1).values < records[-1].costs.max(dim=1).values).all())


# --------------------------------------------------------------------------- receding horizon
@pytest.mark.parametrize("fill", ["zeros", "last"])
def test_receding_horizon_starts_from_state_fills_the_shifted_tail_and_calls_back(fill: str) -> None:
    """A near-deterministic plan (sigma 1e-4): each plan's samples sit on its initial mean."""
    inner = AISP(sigma=1e-4, lambda_=1.0, num_samples=2, num_iterations=1)
    M = torch.tensor([[[0.5, -0.25], [2.0, 3.0]]])  # (B, K = H = 2, d)
    state = inner.init_state(PointMass(horizon=2), M)
    records = []
    mpc = RecedingHorizon(inner, horizon=2, commit=1, fill=fill, score="horizon")
    result = mpc.optimize(PointMass(horizon=3), GoalCost(goal=[1.0, 1.0]),
                          state=state, callback=records.append, keep_rollouts=True)  # fmt: skip
    assert len(records) == 3 == len(result.history)  # 3 plans of one iteration each
    assert result.budget.samples_per_problem == (6,)
    first, second = records[0].rollout.controls, records[1].rollout.controls
    torch.testing.assert_close(first[0, :, -2:], M[0].expand(2, 2, 2), atol=1e-3, rtol=0)  # from `state`
    torch.testing.assert_close(second[0, :, -2], M[0, 1].expand(2, 2), atol=1e-3, rtol=0)  # shifted by 1
    tail = M[0, 1] if fill == "last" else torch.zeros(2)
    torch.testing.assert_close(second[0, :, -1], tail.expand(2, 2), atol=1e-3, rtol=0)


def test_samples_per_step_is_what_each_plan_scores() -> None:
    records = []
    mpc = RecedingHorizon(BestOfN(num_samples=4, num_iterations=1), horizon=2, commit=1, samples_per_step=3)
    result = mpc.optimize(PointMass(horizon=3), GoalCost(goal=[1.0, 1.0]), seed=0, callback=records.append)
    assert [r.costs.shape[1] for r in records] == [3, 3, 3]
    assert result.budget.samples_per_problem == (9,)


@pytest.mark.parametrize("unit, budgets", [("samples", [16, 24]), ("tokens", [48, 96])])
def test_sequential_peers_spend_their_budget_from_below_too(tiny_lm, tmp_path, unit, budgets) -> None:
    """Not only at most the budget: within one planning step / one checkpoint of it."""
    from mpc_llm.evaluation.compare import compare

    lm = tiny(tiny_lm, max_new_tokens=8)
    reward = KeywordReward(["the", "a"], mode="count")
    controllers = {
        "best_of_n": BestOfN(num_samples=4),
        "rh_aisp": RecedingHorizon(AISP(sigma=1.0, lambda_=0.5, num_samples=2, num_iterations=1), horizon=4),
        "blockwise": BlockwiseBestOfN(num_samples=2, block=4),
        "specrej": SpeculativeRejection(checkpoint=4, keep_fraction=0.5),
    }
    if unit == "samples":
        controllers["args"] = ARGS(num_candidates=3)
    compare(PROMPTS, controllers, lm.with_prompts, reward.as_cost(), budgets=budgets, budget_unit=unit,
            out_dir=tmp_path / "run", progress=False)  # fmt: skip
    records = [json.loads(x) for x in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    assert len(records) == len(controllers) * len(budgets) * len(PROMPTS)
    for r in records:
        spent, k = (r["samples"], r["budget"]) if unit == "samples" else (r["tokens"], r["budget"])
        if unit == "samples":
            low = k - 8 if r["controller"] == "args" else k - 2  # ARGS: k // 8 candidates per token
            assert low <= spent <= k, r
        else:
            assert k // 2 <= spent <= k + 8, r  # at least half, at most one rollout (8 tokens) over
        if r["controller"] == "specrej" and unit == "samples":
            assert spent == {16: 15, 24: 24}[k], r  # N + ceil(N / 2): N = 10, then 16


# --------------------------------------------------------------------------- Gaussian proposals
def test_cem_keeps_sigma_unless_told_to_refit_it() -> None:
    system = IdentityDynamics(horizon=1, control_dim=4)
    cost = QuadraticCost([0.5, 0.0, -0.5, 1.0])

    def spreads(refit: bool) -> list[float]:
        cem = CEM(sigma=1.0, elite_fraction=0.1, num_samples=3000, refit_sigma=refit)
        result = cem.optimize(system, cost, seed=0, num_iterations=3, keep_rollouts=True)
        return [float(r.rollout.controls.std(dim=1).mean()) for r in result.history]

    fixed, refit = spreads(False), spreads(True)
    assert fixed == pytest.approx([1.0] * 3, rel=0.05)
    assert refit[0] == pytest.approx(1.0, rel=0.05) and refit[1] < 0.7 and refit[2] < refit[1]


@pytest.mark.parametrize("controller", [
    AISP(sigma=0.7, lambda_=1.0, num_samples=500), CEM(sigma=0.3, num_samples=500),
    RandomShooting(sigma=2.5, num_samples=500),
])  # fmt: skip
def test_sampled_noise_has_the_given_sigma(controller) -> None:
    system = IdentityDynamics(horizon=3, control_dim=4, batch_size=2)
    cost = QuadraticCost([1.0] * 4)
    result = controller.optimize(system, cost, seed=1, num_iterations=1, keep_rollouts=True)
    controls = result.history[0].rollout.controls  # (B, N, tau, d) around the zero mean
    sigma = controller.config.sigma
    assert float(controls.std()) == pytest.approx(sigma, rel=0.05)
    assert float(controls.mean()) == pytest.approx(0.0, abs=0.1 * sigma)


@pytest.mark.parametrize("make", [
    lambda f: CEM(sigma_relative=f, num_samples=8, elite_fraction=0.25),
    lambda f: RandomShooting(sigma_relative=f, num_samples=8),
    lambda f: AISP(sigma_relative=f, lambda_=1.0, num_samples=8),
])  # fmt: skip
def test_sigma_relative_is_a_fraction_of_the_prelogit_rms_and_the_noise_has_it(tiny_lm, make) -> None:
    lm = tiny(tiny_lm, max_new_tokens=4)
    rms = lm.prelogit_rms()
    result = make(0.5).optimize(lm, TIE_FREE, seed=0, num_iterations=1, keep_rollouts=True)
    sigma = 0.5 * rms.to(lm.dtype).double()
    torch.testing.assert_close(result.settings["sigma"], sigma)
    controls = result.history[0].rollout.controls.double()  # (B, 8, 4, 64) around the zero mean
    for b in range(2):
        assert float(controls[b].std()) == pytest.approx(float(sigma[b]), rel=0.06)


# --------------------------------------------------------------------------- the language model
def test_the_prelogit_scale_is_the_rms_of_teacher_forced_prelogits(tiny_lm) -> None:
    model, tok = tiny_lm("qwen2")
    lm = LMDynamics(model, tok, ["Hello there! How are you?", "A", "Optimal control"], chat_template=False)
    seen = []
    handle = model.get_output_embeddings().register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    try:
        with torch.no_grad():
            for ids in lm.encode_prompts():  # each prompt alone, no padding
                model(input_ids=torch.tensor([ids]))
    finally:
        handle.remove()
    z = torch.stack([x[0, -1].double() for x in seen])  # (B, d): the head's input after each prompt
    reference = z.pow(2).mean(dim=-1).sqrt()
    torch.testing.assert_close(lm.prelogit_rms(), reference, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(reference, z.abs().mean(dim=-1), rtol=1e-2)  # RMS, not the mean |z|


def test_the_compiled_decode_runs_a_compiled_model(tiny_lm) -> None:
    """The compiled path decodes through `torch.compile`'s module (a graph count could stay flat:
    dynamo reuses graphs another test traced for the same code and shapes)."""
    from mpc_llm.dynamics import make_generators
    from mpc_llm.lm.control import compiled_step

    model, tok = tiny_lm("llama")
    lm = LMDynamics(model, tok, PROMPTS, chat_template=False, max_new_tokens=3, compile=True,
                    compile_backend="eager")  # fmt: skip
    compiled_tokens = lm.sample(2, make_generators(0, 2)).tokens
    step, _ = compiled_step(lm.engine.adapter, "eager", None)
    assert isinstance(step, torch._dynamo.eval_frame.OptimizedModule) and step._orig_mod is model
    eager = LMDynamics(model, tok, PROMPTS, chat_template=False, max_new_tokens=3)
    eager_tokens = eager.sample(2, make_generators(0, 2)).tokens
    assert torch.equal(compiled_tokens, eager_tokens)
