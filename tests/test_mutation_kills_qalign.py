"""QAlign (``controllers/qalign.py``), what its mutation run left untested (issue 36): the budget
checks and their messages, a proposal the reward cannot score, a NaN reward of the first response,
the chain under a token budget too small for a proposal, and the re-read prefix tokens it reports."""

from __future__ import annotations

import math

import pytest
import torch

from mpc_llm.controllers import QAlign
from mpc_llm.controllers.qalign import acceptance
from mpc_llm.dynamics import ToyLM, ToyReward

INF, NAN = math.inf, math.nan


def test_a_proposal_whose_cost_is_not_finite_is_never_accepted() -> None:
    cost = torch.tensor([1.0, 1.0, 1.0, INF], dtype=torch.float64)
    new_cost = torch.tensor([INF, NAN, -INF, 0.0], dtype=torch.float64)
    lengths = torch.tensor([3, 3, 3, 3])
    assert acceptance(cost, new_cost, lengths, lengths, 1.0).tolist() == [0.0, 0.0, 0.0, 1.0]


def test_the_budget_checks_accept_one_step_refuse_less_and_say_what_to_raise() -> None:
    qalign = QAlign(beta=1.0)
    qalign.check_budget(None, 2)  # the unit defaults to samples
    qalign.check_budget(10, 2, "samples")
    qalign.check_budget(None, 1, "tokens")  # no episode length: nothing to check in tokens
    qalign.check_budget(10, 20, "tokens")
    with pytest.raises(ValueError) as info:
        qalign.check_budget(None, 1)
    assert str(info.value) == (
        "a budget of 1 sample is below one QAlign step (the first response and one proposal: 2 samples); "
        "raise the budget"
    )
    with pytest.raises(ValueError) as info:
        qalign.check_budget(10, 19, "tokens")
    assert str(info.value) == (
        "a budget of 19 tokens is below one QAlign step (the first response and one proposal, each up to 10 "
        "tokens: 20); raise the budget to at least 20"
    )


def test_a_nan_reward_is_never_read_as_zero() -> None:
    """Every reward NaN: no proposal is accepted and the answer's cost is +inf (no reward), not 0."""
    result = QAlign(beta=1.0).optimize(ToyLM.example(2), ToyReward(lambda seq: NAN), max_samples=5, seed=0)
    assert result.best_cost.tolist() == [INF, INF]


def test_a_token_budget_too_small_for_a_proposal_runs_none() -> None:
    """Four-token episodes: after a first response of 3 tokens a proposal could take 4 more, which
    5 tokens cannot hold, so the chain is its first response (through the API, which does not
    refuse the budget as `compare` does)."""
    result = QAlign(beta=1.0).optimize(ToyLM.example(2), ToyReward.example(), max_tokens=5, seed=0)
    assert result.budget.samples_per_problem == (1, 1)
    assert all(t <= 5 for t in result.budget.tokens_per_problem)


class Recorded(QAlign):
    """QAlign that records the prefix lengths each proposal keeps."""

    kept: list[list[int]]

    def propose(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        out = super().propose(*args, **kwargs)
        self.kept.append(out[-1])
        return out


def test_the_reread_tokens_are_the_kept_prefixes_summed_over_proposals() -> None:
    qalign = Recorded(beta=1.0)
    qalign.kept = []
    result = qalign.optimize(ToyLM.example(3), ToyReward.example(), max_samples=7, seed=[0, 1, 2])
    assert len(qalign.kept) == 6
    want = tuple(float(sum(keep[b] for keep in qalign.kept)) for b in range(3))
    assert result.budget.compute_per_problem["rereads"] == want
    assert sum(want) > 0
