"""The contract kit (`mpc_llm.core.contracts`, `mpc_llm.controllers.contracts`) on the project's own
systems, costs and controllers, and on systems that break the contract (each caught, by name)."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from mpc_llm.controllers import (
    AISP,
    CEM,
    SMC,
    AISPSampler,
    BestOfN,
    BlockwiseBestOfN,
    QAlign,
    RandomShooting,
    RecedingHorizon,
    SoftBestOfN,
    SpeculativeRejection,
)
from mpc_llm.controllers.contracts import check_planner
from mpc_llm.core.contracts import check_cost, check_dynamics
from mpc_llm.dynamics import (
    GoalCost,
    IdentityDynamics,
    LinearCost,
    LMDynamics,
    Pendulum,
    PointMass,
    SwingUpCost,
    ToyLM,
    ToyReward,
)
from mpc_llm.rewards import KeywordReward


def tiny_lm_system(tiny_lm) -> LMDynamics:
    model, tok = tiny_lm("llama")
    return LMDynamics(model, tok, ["Hello there", "A"], max_new_tokens=6, chat_template=False)


SYSTEMS = {
    "toy language model": lambda: (ToyLM.example(3), ToyReward.example()),
    "point mass": lambda: (
        PointMass(horizon=6, dt=0.1, x0=[[0.0] * 4, [1.0, 0, 0, 0]]),
        GoalCost(goal=[1.0, 1.0]),
    ),
    "pendulum": lambda: (Pendulum(horizon=6, x0=[[3.0, 0.0], [2.0, 0.5]]), SwingUpCost()),
    "identity": lambda: (IdentityDynamics(horizon=3, control_dim=2, batch_size=2), LinearCost([1.0, -1.0])),
}


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_the_projects_systems_and_costs_keep_the_contract(name):
    system, cost = SYSTEMS[name]()
    check_dynamics(system)
    check_cost(cost, system)


def test_the_language_model_keeps_the_contract_per_row_commits_included(tiny_lm):
    system = tiny_lm_system(tiny_lm)
    assert system.commits_per_row
    check_dynamics(system)
    check_cost(KeywordReward(["the"]).as_cost(), system)


@pytest.mark.parametrize(
    "planner",
    [
        BestOfN(num_samples=4),
        AISP(sigma=0.5, lambda_=1.0, num_samples=4),
        CEM(sigma=0.5, num_samples=4),
        RandomShooting(sigma=0.5, num_samples=4),
        SoftBestOfN(beta=1.0, num_samples=4),
        AISPSampler(sigma=0.5, lambda_=1.0, num_samples=4),
        SMC(num_particles=4, block=1, beta=1.0),
        QAlign(beta=1.0),
        RecedingHorizon(inner=BestOfN(num_samples=2), horizon=2, commit=1),
        BlockwiseBestOfN(num_samples=2, block=2),
        SpeculativeRejection(num_samples=4, checkpoint=2, keep_fraction=0.5),
    ],
    ids=lambda p: type(p).__name__,
)
def test_the_projects_controllers_keep_the_contract(planner):
    check_planner(planner, ToyLM.example(2), ToyReward.example(), budget=8)


# --------------------------------------------------------------------------- broken systems are caught
class ForgetfulToy(ToyLM):
    """Draws from the global generator, not the problem's: runs differ."""

    def rollout(self, controls, generators):
        return super().rollout(controls, [torch.Generator().manual_seed(int(torch.randint(0, 10**6, ())))
                                          for _ in generators])  # fmt: skip


class SharedStreamToy(ToyLM):
    """Every problem draws from the first problem's generator: problems depend on each other."""

    def rollout(self, controls, generators):
        seed = int(torch.randint(0, 10**6, (), generator=generators[-1]))
        return super().rollout(controls, [torch.Generator().manual_seed(seed) for _ in generators])


class WrongCountToy(ToyLM):
    """Returns one sample fewer than asked."""

    def rollout(self, controls, generators):
        return super().rollout(controls[:, 1:], generators)


class ClaimsPerRowToy(ToyLM):
    """Declares per-row commits but takes one count only (a system written to the earlier contract
    that sets the flag)."""

    def advance(self, rollout, steps):
        if not isinstance(steps, int):
            raise TypeError("steps must be an int")
        return super().advance(rollout, steps)


class BadCost(ToyReward):
    def evaluate(self, rollout):
        costs, metrics = super().evaluate(rollout)
        return costs[:, :1], metrics


@pytest.mark.parametrize(
    ("system", "message"),
    [
        (ForgetfulToy, "the same controls and generators must give the same rollout"),
        (SharedStreamToy, "problem b must draw from generators\\[b\\] only"),
        (WrongCountToy, "must be a Rollout with B=3, N=2"),
        (ClaimsPerRowToy, "commits_per_row is True but advance.*TypeError: steps must be an int"),
    ],
    ids=lambda x: x.__name__ if isinstance(x, type) else "",
)
def test_a_system_that_breaks_the_contract_is_named(system, message):
    toy = ToyLM.example(3)
    broken = copy.copy(toy)
    broken.__class__ = system
    with pytest.raises(AssertionError, match=message):
        check_dynamics(broken)


def test_a_cost_of_the_wrong_shape_and_a_planner_that_overspends_are_named():
    with pytest.raises(AssertionError, match=r"evaluate must return \(3, 2\) floating costs"):
        check_cost(BadCost(ToyReward.example().fn), ToyLM.example(3))

    class Overspends(BestOfN):
        def optimize(self, dynamics, cost, **kwargs):
            result = super().optimize(dynamics, cost, **{**kwargs, "max_samples": None})
            return dataclasses.replace(result)

    with pytest.raises(AssertionError, match="max_samples=8 must bound every problem's scored samples"):
        check_planner(Overspends(num_samples=4, num_iterations=4), ToyLM.example(2), ToyReward.example())
