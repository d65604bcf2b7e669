"""Model predictive control with a terminal value (issue 34, items 3 and 5): plans scored on a short
horizon, the value standing for the rest of the response; and the pre-logit state the decode keeps
for it. Exact on the enumerable toy: with the exact soft value and horizon 1, receding-horizon
best-of-N builds the response token by token as the greedy choice of the soft value."""

from __future__ import annotations

import pytest
import torch
from soft_values import REWARD, soft_values

from mpc_llm.controllers import BestOfN
from mpc_llm.controllers.receding_horizon import RecedingHorizon
from mpc_llm.dynamics import ToyLM
from mpc_llm.values.terminal import TerminalValueCost
from mpc_llm.values.twist import FunctionTwist


def greedy(values: dict[tuple[int, ...], float]) -> tuple[int, ...]:
    """The sequence built by taking, at every step, the next token of the highest value."""
    toy, seq = ToyLM.example(), ()
    while not (seq and (seq[-1] == toy.eos or len(seq) == toy.length)):
        seq = max((s for s in values if len(s) == len(seq) + 1 and s[: len(seq)] == seq), key=values.get)
    return seq


def table_twist(values: dict[tuple[int, ...], float]) -> FunctionTwist:
    def psi(rollout) -> torch.Tensor:  # type: ignore[no-untyped-def]
        B, N = rollout.batch_size, rollout.num_samples
        return torch.tensor([values[rollout.sequence(b, n)] for b in range(B) for n in range(N)])

    return FunctionTwist(psi)


def mpc(terminal=None) -> RecedingHorizon:  # type: ignore[no-untyped-def]
    return RecedingHorizon(BestOfN(num_samples=64), horizon=1, commit=1, score="horizon", terminal=terminal)


@pytest.mark.parametrize("beta", [0.3, 1.0, 5.0])
def test_horizon_one_with_the_exact_value_is_the_greedy_choice_of_the_soft_value(beta) -> None:
    values = soft_values(beta)
    want = greedy(values)
    result = mpc(table_twist(values)).optimize(ToyLM.example(4), REWARD, seed=[0, 1, 2, 3])
    assert [result.best_rollout.sequence(b, 0) for b in range(4)] == [want] * 4
    assert float(result.best_cost[0]) == -REWARD.fn(want)  # the answer's cost is its true reward


def test_without_the_value_the_partial_reward_plans_another_response() -> None:
    """The can-fail check: scoring plans by the reward of the partial text (no value) takes the
    myopic token (here 1, 1, 1, 1 against the value's 1, 1, 2, 1), so the test above tells the value
    from the partial reward."""
    values = soft_values(1.0)
    myopic = mpc().optimize(ToyLM.example(1), REWARD, seed=0)
    assert myopic.best_rollout.sequence(0, 0) != greedy(values)


def test_a_complete_response_is_scored_by_its_reward_never_by_the_value() -> None:
    toy = ToyLM.example()
    rollout = toy.rollout(toy.zero_controls(samples=64, steps=4), [torch.Generator().manual_seed(0)])
    cost = TerminalValueCost(REWARD, FunctionTwist(lambda r: torch.full((64,), 100.0)), episode=4)
    assert torch.equal(cost(rollout), REWARD(rollout))  # every 4-step rollout is complete
    short = toy.with_horizon(2).rollout(toy.zero_controls(samples=64), [torch.Generator().manual_seed(0)])
    c, ended = cost(short)[0], short.finished[0]
    assert bool((c[ended] == REWARD(short)[0][ended]).all()) and bool((c[~ended] == -100.0).all())
    assert bool(ended.any()) and bool((~ended).any())


def test_settings_refuse_a_value_without_horizon_scoring() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="score='horizon'"):
        RecedingHorizon(BestOfN(num_samples=2), horizon=2, value="values/x")
    with pytest.raises(ValueError, match="score='horizon'"):
        RecedingHorizon(BestOfN(num_samples=2), horizon=2, terminal=table_twist(soft_values(1.0)))


def test_the_decode_keeps_each_responses_state_after_its_last_token(tiny_lm) -> None:
    """``last_states`` is what the head reads at the position of the response's last token, i.e. the
    state a feedback policy sees one step later in a longer decode with the same tokens; rows that
    end early (stop strings) keep theirs, and keeping states changes no token."""
    from mpc_llm.dynamics import LMDynamics
    from mpc_llm.values import RecordStates

    model, tok = tiny_lm("llama")
    options = dict(max_new_tokens=7, stop_strings=("a", "e"))
    lm = LMDynamics(model, tok, ["Hi", "Tell me a story"], keep_states=True, **options)
    gens = lambda: [torch.Generator().manual_seed(s) for s in (3, 4)]  # noqa: E731
    kept = lm.rollout(lm.zero_controls(samples=3), gens())
    plain = LMDynamics(model, tok, ["Hi", "Tell me a story"], **options)
    assert torch.equal(kept.tokens, plain.rollout(lm.zero_controls(samples=3), gens()).tokens)
    lengths = kept.lengths.reshape(-1).tolist()
    assert min(lengths) < 7 and max(lengths) == 7, lengths  # rows that end early and rows that do not
    tap = RecordStates()
    longer = plain.with_options(max_new_tokens=8, stop_strings=("a", "e"))
    seen = longer.rollout_feedback(lm.zero_controls(samples=3, steps=8), gens(), tap)
    assert torch.equal(seen.tokens[..., :7], kept.tokens)
    states = torch.stack(tap.states)  # (T, B N, d): what the head read at every step
    for r, length in enumerate(lengths):
        assert torch.allclose(kept.last_states.reshape(6, -1)[r], states[length, r], atol=1e-5), r
        assert not torch.allclose(kept.last_states.reshape(6, -1)[r], states[length - 1, r])
    assert plain.rollout(lm.zero_controls(samples=1), gens()).last_states is None


def test_receding_horizon_with_a_learned_value_runs_on_a_language_model(tiny_lm, tmp_path) -> None:
    from mpc_llm.dynamics import LMDynamics
    from mpc_llm.rewards.rules import KeywordReward
    from mpc_llm.values import ValueMLP, save_value

    model, tok = tiny_lm("llama")
    lm = LMDynamics(model, tok, ["Hi", "Tell me"], max_new_tokens=8, keep_states=True)
    save_value(ValueMLP(lm.control_dim, 8, 1), {"model": "tiny", "model_fingerprint": lm.model_fingerprint()},
               tmp_path / "v")  # fmt: skip
    planner = RecedingHorizon(BestOfN(num_samples=3, num_iterations=1), horizon=4, commit=2, score="horizon",
                              value=str(tmp_path / "v"))  # fmt: skip
    result = planner.optimize(lm, KeywordReward(["the"]).as_cost(), seed=[0, 1])
    assert result.budget.samples_per_problem == (12, 12)  # 4 plans x 3 samples
    assert "value_learning" in planner.spec()
    with pytest.raises(ValueError, match="keep_states"):
        planner.check_system(LMDynamics(model, tok, ["Hi"], max_new_tokens=8))
