"""Controller behaviour: CEM convergence, best-of-N, seeds, batching, budgets, best-so-far, NaN costs."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mpc_llm import CostFunction, Dynamics, Rollout
from mpc_llm.controllers import AISP, CEM, BestOfN, RandomShooting
from mpc_llm.dynamics import GoalCost, IdentityDynamics, PointMass, QuadraticCost

CONTROLLERS = {
    "aisp": lambda: AISP(sigma=0.5, lambda_=0.5, num_samples=32),
    "aisp_mppi": lambda: AISP(sigma=0.5, lambda_=0.5, alpha=1.0, num_samples=32),
    "cem": lambda: CEM(sigma=0.5, elite_fraction=0.25, refit_sigma=True, num_samples=32),
    "random_shooting": lambda: RandomShooting(sigma=0.5, num_samples=32),
    "best_of_n": lambda: BestOfN(num_samples=32),
}


class NoisyIdentity(IdentityDynamics):
    """The identity system plus its own noise (like token sampling), drawn from each problem's generator."""

    def rollout(self, controls: torch.Tensor, generators: Sequence[torch.Generator]) -> Rollout:
        noise = torch.stack(
            [torch.randn(controls.shape[1:], generator=g, dtype=controls.dtype) for g in generators]
        )
        return Rollout(controls=controls + 0.3 * noise)


class Recording(Dynamics):
    """Wraps a dynamics and records every control tensor it is given."""

    def __init__(self, inner: Dynamics) -> None:
        self.inner, self.seen = inner, []

    batch_size = property(lambda self: self.inner.batch_size)
    horizon = property(lambda self: self.inner.horizon)
    control_dim = property(lambda self: self.inner.control_dim)
    dtype = property(lambda self: self.inner.dtype)

    def rollout(self, controls, generators):
        self.seen.append(controls.clone())
        return self.inner.rollout(controls, generators)


@settings(max_examples=10)
@given(g=st.lists(st.floats(-3.0, 3.0), min_size=4, max_size=4), seed=st.integers(0, 1000))
def test_cem_converges_to_the_optimum_of_a_quadratic(g: list[float], seed: int) -> None:
    goal = torch.tensor(g, dtype=torch.float64).view(2, 2)
    system = IdentityDynamics(horizon=2, control_dim=2)
    # the initial sigma must cover the optimum: CEM with refit sigma can collapse before reaching it
    cem = CEM(sigma=2.0, elite_fraction=0.2, smoothing=0.3, refit_sigma=True, sigma_min=1e-4, num_samples=200)
    result = cem.optimize(system, QuadraticCost(goal), seed=seed, num_iterations=30)
    torch.testing.assert_close(result.mean[0], goal, atol=0.02, rtol=0)
    assert result.best_cost.item() < 1e-3


def test_cem_sigma_refit_respects_its_floor() -> None:
    system = IdentityDynamics(horizon=1, control_dim=3)
    cem = CEM(sigma=1.0, elite_fraction=0.05, refit_sigma=True, sigma_min=0.2, num_samples=100)
    result = cem.optimize(system, QuadraticCost([1.0, 2.0, 3.0]), num_iterations=20)
    assert float(result.state.sigma.min()) == pytest.approx(0.2)


def test_best_of_n_never_perturbs() -> None:
    system = Recording(NoisyIdentity(horizon=3, control_dim=2, batch_size=2))
    result = BestOfN(num_samples=5).optimize(system, QuadraticCost([1.0, 1.0]), max_samples=12)
    assert [c.shape[1] for c in system.seen] == [5, 5, 2]
    assert all(bool((c == 0).all()) for c in system.seen)
    assert bool((result.best_controls == 0).all())


def test_random_shooting_does_not_adapt() -> None:
    system = IdentityDynamics(horizon=2, control_dim=2)
    result = RandomShooting(sigma=1.0, num_samples=16).optimize(
        system, QuadraticCost([2.0, 2.0]), num_iterations=5
    )
    assert bool((result.mean == 0).all())
    assert bool((result.state.sigma == 1.0).all())


@pytest.mark.parametrize("name", sorted(CONTROLLERS))
def test_the_same_seed_gives_the_same_result(name: str) -> None:
    def run(seed: int):
        system = NoisyIdentity(horizon=3, control_dim=2, batch_size=2)
        return CONTROLLERS[name]().optimize(system, QuadraticCost([1.0, -1.0]), seed=seed, num_iterations=3)

    first, again, other = run(7), run(7), run(8)
    torch.testing.assert_close(first.best_cost, again.best_cost, rtol=0, atol=0)
    torch.testing.assert_close(first.mean, again.mean, rtol=0, atol=0)
    assert not torch.equal(first.best_cost, other.best_cost)


@pytest.mark.parametrize("name", sorted(CONTROLLERS))
def test_a_batch_gives_the_same_answer_as_each_problem_alone(name: str) -> None:
    goals = torch.tensor([[[1.0, 0.0]], [[-2.0, 1.0]], [[0.5, 0.5]]], dtype=torch.float64)
    batched = CONTROLLERS[name]().optimize(
        NoisyIdentity(horizon=1, control_dim=2, batch_size=3), QuadraticCost(goals), seed=3, num_iterations=3
    )
    for b in range(3):
        alone = CONTROLLERS[name]().optimize(
            NoisyIdentity(horizon=1, control_dim=2), QuadraticCost(goals[b : b + 1]), seed=3, num_iterations=3
        )
        torch.testing.assert_close(batched.best_cost[b : b + 1], alone.best_cost, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(batched.mean[b : b + 1], alone.mean, rtol=1e-12, atol=1e-12)


def test_per_problem_seeds_give_independent_streams() -> None:
    system = IdentityDynamics(horizon=1, control_dim=2, batch_size=2)
    result = RandomShooting(sigma=1.0, num_samples=4).optimize(system, QuadraticCost([0.0, 0.0]), seed=[1, 2])
    costs = result.history[0].costs
    assert not torch.equal(costs[0], costs[1])


@pytest.mark.parametrize(
    ("budget", "per_iteration", "expected"), [(50, 16, [16, 16, 16, 2]), (8, 8, [8]), (3, 10, [3])]
)
def test_a_sample_budget_is_spent_exactly(budget: int, per_iteration: int, expected: list[int]) -> None:
    system = IdentityDynamics(horizon=1, control_dim=1)
    result = AISP(num_samples=per_iteration).optimize(system, QuadraticCost([1.0]), max_samples=budget)
    assert [r.costs.shape[1] for r in result.history] == expected
    assert result.budget.samples == budget
    assert result.budget.iterations == len(expected)
    samples, curve = result.best_cost_curve()
    assert samples.tolist() == list(range(1, budget + 1))
    assert curve.shape == (1, budget)


@pytest.mark.parametrize("name", sorted(CONTROLLERS))
def test_the_best_sample_seen_is_returned(name: str) -> None:
    system = PointMass(horizon=10, x0=[[0.0, 0.0, 0.0, 0.0], [1.0, -1.0, 0.0, 0.5]])
    cost = GoalCost(goal=[1.0, 1.0])
    result = CONTROLLERS[name]().optimize(system, cost, seed=0, num_iterations=4)
    all_costs = torch.cat([r.costs for r in result.history], dim=1)
    torch.testing.assert_close(result.best_cost.double(), all_costs.min(dim=1).values)
    best_curve = torch.stack([r.best_cost for r in result.history], dim=1)
    assert bool((best_curve[:, 1:] <= best_curve[:, :-1]).all())
    # the stored rollout and controls are the ones that earned the best cost
    torch.testing.assert_close(cost(result.best_rollout)[:, 0], result.best_cost)
    torch.testing.assert_close(result.best_rollout.controls[:, 0], result.best_controls)
    replay = system.rollout(result.best_controls.unsqueeze(1), [])
    torch.testing.assert_close(cost(replay)[:, 0], result.best_cost)


def test_aisp_drives_the_point_mass_to_its_goal() -> None:
    system = PointMass(horizon=20)
    cost = GoalCost(goal=[1.0, 1.0])
    zero = cost(system.rollout(torch.zeros(1, 1, 20, 2), [])).item()
    result = AISP(sigma=2.0, lambda_=1.0, num_samples=256).optimize(system, cost, seed=0, num_iterations=15)
    assert result.best_cost.item() < 0.3 * zero
    final_position = result.best_rollout.states[0, 0, -1, :2]
    assert float((final_position - torch.tensor([1.0, 1.0])).norm()) < 0.25


def test_warm_start_continues_from_a_previous_state() -> None:
    system = IdentityDynamics(horizon=1, control_dim=2)
    aisp = AISP(sigma=0.5, lambda_=0.1, num_samples=64)
    cost = QuadraticCost([2.0, -2.0])
    first = aisp.optimize(system, cost, num_iterations=3)
    second = aisp.optimize(system, cost, num_iterations=3, state=first.state, seed=1)
    assert second.state.iteration == 6
    assert second.best_cost.item() <= first.best_cost.item()


def test_nan_costs_get_zero_weight_with_a_warning() -> None:
    system = IdentityDynamics(horizon=1, control_dim=1)

    def half_nan(rollout: Rollout) -> torch.Tensor:
        v = rollout.controls[..., 0, 0]
        return torch.where(v > 0, torch.full_like(v, float("nan")), (v + 1).pow(2))

    with pytest.warns(RuntimeWarning, match="NaN or infinite"):
        result = AISP(sigma=1.0, lambda_=0.5, num_samples=200).optimize(
            system, CostFunction.from_fn(half_nan), num_iterations=2
        )
    assert torch.isfinite(result.mean).all()
    assert result.best_controls.item() <= 0
    assert torch.isfinite(result.best_cost).all()


def test_a_step_where_every_cost_is_invalid_raises() -> None:
    system = IdentityDynamics(horizon=1, control_dim=1, batch_size=2)

    def nan_for_second(rollout: Rollout) -> torch.Tensor:
        costs = rollout.controls[..., 0, 0].pow(2)
        costs[1] = float("nan")
        return costs

    with pytest.raises(ValueError, match=r"every cost is NaN or infinite for problem\(s\) \[1\]"):
        AISP().optimize(system, CostFunction.from_fn(nan_for_second))


def test_a_cost_of_the_wrong_shape_is_reported() -> None:
    system = IdentityDynamics(horizon=1, control_dim=1)
    with pytest.raises(ValueError, match=r"must return \(B, N=16\) costs"):
        AISP().optimize(system, CostFunction.from_fn(lambda r: r.controls.sum()))


def test_knots_hold_one_control_over_chunks_of_the_window() -> None:
    system = Recording(IdentityDynamics(horizon=6, control_dim=2))
    result = AISP(num_samples=4, tau=4, num_knots=2).optimize(
        system, QuadraticCost([0.0, 0.0]), num_iterations=1
    )
    (controls,) = system.seen
    assert controls.shape == (1, 4, 4, 2)  # tau = 4 controlled steps of the horizon of 6
    torch.testing.assert_close(controls[:, :, 0], controls[:, :, 1])
    torch.testing.assert_close(controls[:, :, 2], controls[:, :, 3])
    assert not torch.equal(controls[:, :, 1], controls[:, :, 2])
    outcome = result.best_rollout.controls  # the system ran all 6 steps, the last two uncontrolled
    assert outcome.shape == (1, 1, 6, 2) and bool((outcome[:, :, 4:] == 0).all())
