"""Receding-horizon control, warm starts, and the language model in closed loop."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mpc_llm.controllers import AISP, BestOfN, BlockwiseBestOfN, RandomShooting, RecedingHorizon
from mpc_llm.core import CostFunction, make_generators
from mpc_llm.dynamics import IdentityDynamics, LMDynamics, QuadraticCost
from mpc_llm.rewards import HFRewardModel, JudgeReward, KeywordReward, LengthReward

PROMPTS = ["Hello there", "The quick brown fox jumps"]


def tiny(tiny_lm, prompts=PROMPTS, **options) -> LMDynamics:
    model, tok = tiny_lm("llama")
    options.setdefault("chat_template", False)
    options.setdefault("max_new_tokens", 8)
    return LMDynamics(model, tok, prompts, **options)


def token_count(token: int) -> CostFunction:
    """Cost: minus the number of times ``token`` appears in the response."""
    return CostFunction.from_fn(lambda r: -(r.tokens == token).sum(-1).double(), f"count({token})")


def assert_same_result(a, b) -> None:
    assert torch.equal(a.best_rollout.tokens, b.best_rollout.tokens)
    assert a.best_rollout.texts == b.best_rollout.texts
    assert torch.equal(a.best_cost.double().cpu(), b.best_cost.double().cpu())
    assert a.budget.samples_per_problem == b.budget.samples_per_problem
    assert a.budget.tokens_per_problem == b.budget.tokens_per_problem


# --------------------------------------------------------------------------- warm starts
def test_two_consecutive_warm_starts_draw_different_samples() -> None:
    system = IdentityDynamics(horizon=2, control_dim=3)
    shooter = RandomShooting(sigma=1.0, num_samples=5, num_iterations=1)
    first = shooter.optimize(system, QuadraticCost([0.0] * 3), seed=4)
    second = shooter.optimize(system, QuadraticCost([0.0] * 3), state=first.state)
    third = shooter.optimize(system, QuadraticCost([0.0] * 3), state=second.state)
    costs = [r.all_costs() for r in (first, second, third)]
    assert not torch.equal(costs[0], costs[1]) and not torch.equal(costs[1], costs[2])
    again = shooter.optimize(system, QuadraticCost([0.0] * 3), state=first.state)
    assert torch.equal(again.all_costs(), costs[1])  # the streams travel with the state


def test_resuming_from_a_saved_state_reproduces_an_uninterrupted_run(tmp_path) -> None:
    system = IdentityDynamics(horizon=3, control_dim=2, batch_size=2)
    cost = QuadraticCost([[1.0, -1.0]] * 3)
    aisp = AISP(sigma=1.0, lambda_=0.5, num_samples=16)
    whole = aisp.optimize(system, cost, seed=[1, 2], num_iterations=4)
    half = aisp.optimize(system, cost, seed=[1, 2], num_iterations=2)
    (tmp_path / "state.pkl").write_bytes(pickle.dumps(half.state))
    saved = pickle.loads((tmp_path / "state.pkl").read_bytes())
    rest = aisp.optimize(system, cost, state=saved, num_iterations=2)
    assert torch.equal(rest.mean, whole.mean)
    assert torch.equal(torch.cat([half.all_costs(), rest.all_costs()], dim=1), whole.all_costs())


def test_a_warm_start_never_returns_a_stale_best() -> None:
    system = IdentityDynamics(horizon=1, control_dim=1)
    shooter = RandomShooting(sigma=1.0, num_samples=8, num_iterations=1)
    near = shooter.optimize(system, QuadraticCost([0.0]), seed=0)
    # the problem moves: the old best (near 0) would be excellent under the old cost only
    far = shooter.optimize(system, QuadraticCost([10.0]), state=near.state)
    assert bool(far.best_cost == far.all_costs().min(dim=1).values.to(far.best_cost))
    assert not torch.equal(far.best_controls, near.best_controls)


# --------------------------------------------------------------------------- the LM in closed loop
def test_committed_tokens_extend_the_cache_and_greedy_continues_the_same_response(tiny_lm) -> None:
    lm = tiny(tiny_lm, max_new_tokens=10, greedy=True, stop_at_eos=False, return_logprobs=True)
    gens = make_generators(0, 2)
    whole = lm.sample(1, gens)
    after = lm.advance(whole, 4)
    assert after.horizon == 6 and after.committed == 4 and not bool(after.finished().any())
    rest = after.sample(1, gens)
    assert torch.equal(rest.tokens, whole.tokens)  # committed part first, then the same continuation
    assert rest.texts == whole.texts
    torch.testing.assert_close(rest.logprobs, whole.logprobs, atol=1e-5, rtol=1e-5)
    assert rest.token_counts().tolist() == [[6], [6]]  # only new tokens count as generated
    assert lm.horizon == 10 and lm.committed == 0  # advance returns a new system
    one = after.select([1])
    assert one.batch_size == 1 and torch.equal(one.sample(1, gens[:1]).tokens[0], whole.tokens[1])


def test_a_committed_end_of_sequence_finishes_the_problem(tiny_lm) -> None:
    probe = tiny(tiny_lm, max_new_tokens=10, greedy=True, stop_at_eos=False)
    free = probe.sample(1, make_generators(0, 2)).tokens[0, 0].tolist()
    lm = probe.with_options(eos_token_id=free[2], stop_at_eos=True)
    rollout = lm.sample(1, make_generators(0, 2))
    after = lm.advance(rollout, 4)
    ended = after.finished().tolist()
    assert ended[0] is True
    assert ended[1] == bool(rollout.lengths[1, 0] <= 4)


def test_a_stop_string_spanning_the_commit_boundary_ends_the_response(tiny_lm) -> None:
    probe = tiny(tiny_lm, prompts=PROMPTS[:1], max_new_tokens=12, greedy=True, stop_at_eos=False)
    whole = probe.sample(1, make_generators(0, 1)).tokens[0, 0].tolist()
    decode = probe.engine.tokenizer.decode
    head, tail, text = decode(whole[:6]), decode(whole[6:]), decode(whole)
    stop = next(  # a string that begins in the first 6 tokens and ends in the rest
        (head[-i:] + tail[:j] for i in range(1, len(head) + 1) for j in range(1, len(tail) + 1)
         if head[-i:] + tail[:j] not in head and head[-i:] + tail[:j] not in tail
         and text.find(head[-i:] + tail[:j]) == len(head) - i),
        None,
    )  # fmt: skip
    assert stop is not None and head + tail == text  # byte-level BPE: decoding is additive here
    lm = probe.with_options(stop_strings=(stop,))
    first = lm.with_horizon(6).sample(1, make_generators(0, 1))
    assert not bool(first.finished.any())  # the stop string is not complete within 6 tokens
    after = lm.advance(first, 6)
    assert not bool(after.finished().any())
    rest = after.sample(1, make_generators(0, 1))
    assert bool(rest.finished.all())  # found across the boundary: the response ends there
    assert rest.texts[0][0] == text[: text.find(stop)] and int(rest.lengths[0, 0]) < 12


@settings(max_examples=6)
@given(seed=st.integers(0, 1000), num_samples=st.integers(1, 4), tau=st.integers(1, 8))
def test_one_plan_of_the_whole_response_is_the_inner_controller(tiny_lm, seed, num_samples, tau) -> None:
    lm = tiny(tiny_lm, max_new_tokens=8)
    inner = AISP(sigma=2.0, lambda_=0.5, num_samples=num_samples, num_iterations=2, tau=tau, num_knots=1)
    cost = token_count(200)
    alone = inner.optimize(lm, cost, seed=seed)
    mpc = RecedingHorizon(inner, horizon=8, commit=8).optimize(lm, cost, seed=seed)
    assert_same_result(mpc, alone)


def test_blockwise_best_of_n_with_one_block_is_best_of_n(tiny_lm) -> None:
    lm = tiny(tiny_lm, max_new_tokens=8)
    cost = token_count(200)
    bon = BestOfN(num_samples=6, num_iterations=1).optimize(lm, cost, seed=[3, 4])
    block = BlockwiseBestOfN(num_samples=6, block=8).optimize(lm, cost, seed=[3, 4])
    assert_same_result(block, bon)
    longer = BlockwiseBestOfN(num_samples=6, block=50).optimize(lm, cost, seed=[3, 4])  # one block
    assert_same_result(longer, bon)


def test_receding_horizon_commits_plans_until_every_response_ends(tiny_lm) -> None:
    lm = tiny(tiny_lm, max_new_tokens=12, stop_at_eos=False)
    mpc = RecedingHorizon(AISP(sigma=2.0, lambda_=0.5, num_samples=4, num_iterations=1), horizon=6, commit=4)
    result = mpc.optimize(lm, token_count(200), seed=0)
    assert result.best_rollout.tokens.shape[:2] == (2, 1)
    assert result.best_rollout.lengths.tolist() == [[12], [12]]
    assert result.budget.samples_per_problem == (12, 12)  # 3 plans (commit 4 of 12) x 4 samples
    assert all(t > 0 for t in result.budget.tokens_per_problem)
    assert result.best_cost.tolist() == token_count(200)(result.best_rollout)[:, 0].tolist()
    # the blockwise peer: more candidates per block means a better block, never worse than random
    blockwise = BlockwiseBestOfN(num_samples=4, block=4).optimize(lm, token_count(200), seed=0)
    assert blockwise.budget.samples_per_problem == (12, 12)


def test_a_total_budget_is_split_over_the_planning_steps(tiny_lm) -> None:
    lm = tiny(tiny_lm, max_new_tokens=8, stop_at_eos=False)
    mpc = RecedingHorizon(BestOfN(num_samples=4, num_iterations=1), horizon=4, commit=2)
    result = mpc.optimize(lm, token_count(200), seed=0, max_samples=13)  # 4 plans: 3 each
    assert result.budget.samples_per_problem == (12, 12)
    tokens = mpc.optimize(lm, token_count(200), seed=0, max_tokens=60)
    assert all(t <= 60 + 8 for t in tokens.budget.tokens_per_problem)


# --------------------------------------------------------------------------- bad input
def test_bad_receding_horizon_settings_are_clear_errors(tiny_lm) -> None:
    with pytest.raises(ValueError, match="commit=5 exceeds horizon=4"):
        RecedingHorizon(AISP(), horizon=4, commit=5)
    lm = tiny(tiny_lm, max_new_tokens=8)
    with pytest.raises(ValueError, match=r"planning horizon 16 is longer than the episode \(8 steps"):
        RecedingHorizon(AISP(), horizon=16).optimize(lm, token_count(1))
    with pytest.raises(ValueError, match="smaller than one planning step"):
        RecedingHorizon(AISP(num_samples=4), horizon=4, commit=2).optimize(lm, token_count(1), max_samples=8)
    keyword = RecedingHorizon(BestOfN(num_samples=2), horizon=4, score="horizon")
    keyword.check(
        8, KeywordReward(["good"]).as_cost() + 0.5 * LengthReward().as_cost()
    )  # partial text is fine
    assert JudgeReward.accepts_partial is False and HFRewardModel.accepts_partial is False

    class WholeAnswers(KeywordReward):
        accepts_partial = False  # like a reward model trained on complete answers

    with pytest.raises(ValueError, match="cannot score partial"):
        keyword.check(8, KeywordReward(["good"]).as_cost() + WholeAnswers(["good"]).as_cost())


# --------------------------------------------------------------------------- comparisons
@pytest.mark.parametrize("unit, budgets", [("samples", [8, 12]), ("tokens", [40, 80])])
def test_compare_runs_sequential_peers_at_equal_budgets(tiny_lm, tmp_path, unit, budgets) -> None:
    from mpc_llm.controllers import SpeculativeRejection
    from mpc_llm.evaluation.compare import compare

    lm = tiny(tiny_lm, max_new_tokens=8, stop_at_eos=False)
    reward = KeywordReward(["the", "a"], mode="count")
    controllers = {
        "best_of_n": BestOfN(num_samples=4),
        "rh_aisp": RecedingHorizon(AISP(sigma=1.0, lambda_=0.5, num_samples=2, num_iterations=1), horizon=4),
        "blockwise": BlockwiseBestOfN(num_samples=2, block=4),
        "specrej": SpeculativeRejection(checkpoint=4, keep_fraction=0.5),
    }
    rows = compare(PROMPTS, controllers, lm.with_prompts, reward.as_cost(), budgets=budgets, budget_unit=unit,
                   out_dir=tmp_path / "run", progress=False)  # fmt: skip
    assert {(r["controller"], r["budget"]) for r in rows} == {(c, k) for c in controllers for k in budgets}
    records = [json.loads(x) for x in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    assert len(records) == len(controllers) * len(budgets) * len(PROMPTS)
    for r in records:
        assert r["reward"] == reward.score("", [r["response"]]).item()
        spent = r["samples"] if unit == "samples" else r["tokens"]
        slack = (
            0 if unit == "samples" or r["controller"] == "best_of_n" else 8
        )  # a plan may overshoot a little
        assert 1 <= spent <= r["budget"] + slack
    again = compare(PROMPTS, controllers, lm.with_prompts, reward.as_cost(), budgets=budgets,
                    budget_unit=unit, out_dir=tmp_path / "run", resume=True, progress=False)  # fmt: skip
    assert again == rows  # resume redoes nothing


def test_args_rescores_the_top_k_next_tokens_by_the_reward(tiny_lm) -> None:
    from mpc_llm.controllers import ARGS

    lm = tiny(tiny_lm, max_new_tokens=6, stop_at_eos=False)
    rollout, logp = lm.candidates(5)
    assert rollout.tokens.shape == (2, 5, 1) and logp.shape == (2, 5)
    assert bool((logp[:, :-1] >= logp[:, 1:]).all())  # most likely first
    greedy = lm.with_options(greedy=True).sample(1, make_generators(0, 2))
    assert torch.equal(rollout.tokens[:, 0, 0], greedy.tokens[:, 0, 0])  # the top candidate is the argmax
    # with no weight on the reward ARGS is greedy decoding; with weight it chases the reward
    plain = ARGS(num_candidates=5, weight=0.0).optimize(lm, token_count(200))
    assert torch.equal(
        plain.best_rollout.tokens, lm.with_options(greedy=True).sample(1, make_generators(0, 2)).tokens
    )
    steered = ARGS(num_candidates=50, weight=100.0).optimize(lm, token_count(200))
    assert bool((steered.best_cost <= plain.best_cost).all())
    assert steered.budget.samples_per_problem == (300, 300) and steered.budget.tokens_per_problem == (6, 6)
    with pytest.raises(ValueError, match="smaller than one candidate per token"):
        ARGS().optimize(lm, token_count(200), max_samples=5)
