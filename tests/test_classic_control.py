"""Classic control systems: the closed-loop hooks (advance, finished, select, with_horizon) of the point
mass and the pendulum, the pendulum's physics and cost, and a receding-horizon MPPI swing-up."""

from __future__ import annotations

import math

import pytest
import torch

from mpc_llm.controllers import AISP, RecedingHorizon
from mpc_llm.dynamics import (
    GoalCost,
    Pendulum,
    PendulumRollout,
    PointMass,
    SwingUpCost,
    angle_normalize,
)
from mpc_llm.dynamics.point_mass import StateSpaceSystem

X0 = {
    "point_mass": [[0.0, 0.0, 0.0, 0.0], [1.0, -1.0, 0.5, 0.0], [-2.0, 0.3, 0.0, 1.0]],
    "pendulum": [[math.pi, 0.0], [0.3, -1.0], [-2.0, 4.0]],
}


def make(name: str, horizon: int) -> StateSpaceSystem:
    if name == "point_mass":
        return PointMass(horizon=horizon, dt=0.1, x0=X0[name])
    return Pendulum(horizon=horizon, x0=X0[name])


def controls(system: StateSpaceSystem, n: int, tau: int, seed: int = 0) -> torch.Tensor:
    """``(B, n, tau, d)`` standard normal controls (scaled to use the pendulum's torque limit)."""
    g = torch.Generator().manual_seed(seed)
    return 3.0 * torch.randn((system.batch_size, n, tau, system.control_dim), generator=g)


SYSTEMS = pytest.mark.parametrize("name", ["point_mass", "pendulum"])


@SYSTEMS
def test_advance_continues_from_the_reached_state_and_keeps_the_history(name: str) -> None:
    system = make(name, horizon=6)
    plan = controls(system, 1, 6)
    full = system.rollout(plan, [])
    later = system.advance(full, 2)
    assert (later.horizon, later.history.steps, system.horizon, system.history.steps) == (4, 2, 6, 0)
    assert torch.equal(later.x0, full.states[:, 0, 2])
    assert torch.equal(system.x0, torch.tensor(X0[name]))  # the original is unchanged
    assert later.finished().tolist() == [False] * 3

    tries = later.rollout(controls(system, 5, 4, seed=1), [])
    m, s, d = 2, system.state_dim, system.control_dim
    assert tuple(tries.states.shape) == (3, 5, m + 4 + 1, s)
    assert tuple(tries.controls.shape) == (3, 5, m + 4, d)
    assert torch.equal(tries.states[:, :, : m + 1], full.states[:, :, : m + 1].expand(-1, 5, -1, -1))
    assert torch.equal(tries.controls[:, :, :m], plan[:, :, :m].expand(-1, 5, -1, -1))

    # committing in pieces gives the open-loop rollout of the same controls, bit for bit
    rest = later.rollout(plan[:, :, 2:], [])
    assert torch.equal(rest.states, full.states) and torch.equal(rest.controls, full.controls)
    end = later.advance(rest, 3).advance(rest, 1)
    assert end.horizon == 0 and end.finished().tolist() == [True] * 3
    assert torch.equal(end.x0, full.states[:, 0, -1]) and torch.equal(end.history.controls, plan[:, 0])


@SYSTEMS
def test_with_horizon_and_short_controls(name: str) -> None:
    system = make(name, horizon=6)
    later = system.advance(system.rollout(controls(system, 1, 6), []), 3)
    short = later.with_horizon(2)
    assert (short.horizon, short.history.steps, later.horizon) == (2, 3, 3)
    rollout = short.rollout(controls(short, 4, 1), [])  # tau = 1 < horizon = 2: padded with zeros
    assert tuple(rollout.states.shape)[2] == 3 + 2 + 1
    assert torch.equal(rollout.controls[:, :, -1], torch.zeros_like(rollout.controls[:, :, -1]))
    first = rollout.take(torch.zeros(3, 1, dtype=torch.long))
    assert torch.equal(short.advance(first, 2).x0, rollout.states[:, 0, -1])
    assert short.with_horizon(0).finished().all()
    with pytest.raises(ValueError, match="horizon"):
        later.with_horizon(4)
    with pytest.raises(ValueError, match="more than the horizon"):
        short.rollout(controls(short, 1, 3), [])


@SYSTEMS
def test_select_keeps_the_chosen_problems_and_their_histories(name: str) -> None:
    system = make(name, horizon=5)
    plan = controls(system, 1, 5)
    full = system.rollout(plan, [])
    picked = system.advance(full, 2).select([2, 0])
    assert (picked.batch_size, picked.horizon) == (2, 3)
    again = picked.rollout(plan[[2, 0], :, 2:], [])
    assert torch.equal(again.states, full.states[[2, 0]])
    assert torch.equal(again.controls, full.controls[[2, 0]])


@SYSTEMS
def test_advance_refuses_what_it_cannot_commit(name: str) -> None:
    system = make(name, horizon=4)
    several = system.rollout(controls(system, 2, 4), [])
    with pytest.raises(ValueError, match="N = 1"):
        system.advance(several, 1)
    one = several.take(torch.zeros(3, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="steps"):
        system.advance(one, 5)
    later = system.advance(one, 1)
    other = system.advance(system.rollout(controls(system, 1, 4, seed=7), []), 1)
    with pytest.raises(ValueError, match="history"):
        later.advance(other.rollout(controls(system, 1, 3), []), 1)


def test_the_goal_cost_sees_the_whole_episode() -> None:
    system, cost = PointMass(horizon=8), GoalCost(goal=[1.0, 1.0])
    plan = controls(system, 1, 8)
    full = system.rollout(plan, [])
    later = system.advance(full, 3)
    assert torch.equal(cost(later.rollout(plan[:, :, 3:], [])), cost(full))


# ---------------------------------------------------------------------------------------- pendulum
def run(system: Pendulum, torque: float | torch.Tensor) -> PendulumRollout:
    """One rollout (``N = 1``) of a constant or given ``(B, 1, T, 1)`` torque over the whole horizon."""
    shape = (system.batch_size, 1, system.horizon, 1)
    u = torque if isinstance(torque, torch.Tensor) else torch.full(shape, torque)
    rollout = system.rollout(u, [])
    assert isinstance(rollout, PendulumRollout)
    return rollout


def test_the_pendulum_clips_the_torque_and_the_speed() -> None:
    system = Pendulum(horizon=40, x0=[[0.0, 0.0], [math.pi, 0.0]])
    for sign in (1.0, -1.0):
        big, limit = run(system, 50.0 * sign), run(system, 2.0 * sign)
        assert torch.equal(big.states, limit.states) and torch.equal(big.torques, limit.torques)
        assert torch.equal(big.torques, torch.full_like(big.torques, 2.0 * sign))
        assert SwingUpCost()(big).tolist() == SwingUpCost()(limit).tolist()  # reads the torque applied
    slow = Pendulum(horizon=60, x0=[0.1, 0.0], max_speed=1.0)
    assert run(slow, 2.0).states[..., 1].abs().max() <= 1.0


def test_the_pendulum_step_is_gyms() -> None:
    """One step from a generic state, written out as in Gym's Pendulum-v1."""
    theta, speed, u, dt = 0.7, -1.3, 1.5, 0.05
    new_speed = speed + (3 * 10.0 / (2 * 1.0) * math.sin(theta) + 3.0 / (1.0 * 1.0**2) * u) * dt
    expected = [theta + new_speed * dt, new_speed]
    got = run(Pendulum(horizon=1, x0=[theta, speed]), u).states[0, 0, 1].tolist()
    assert got == pytest.approx(expected, abs=1e-6)


def test_hanging_is_stable_upright_is_not_and_energy_is_kept() -> None:
    hanging = run(Pendulum(horizon=200), 0.0).states[0, 0]
    assert (angle_normalize(hanging[:, 0]).abs() - math.pi).abs().max() < 1e-4
    upright = run(Pendulum(horizon=60, x0=[0.01, 0.0]), 0.0).states[0, 0]
    assert angle_normalize(upright[:, 0]).abs().max() > 3.0  # it falls through the bottom
    # without torque, 0.5 theta_dot^2 + (3 g / 2 l) cos(theta) is kept up to an O(dt) error that does not
    # grow (semi-implicit Euler is symplectic)
    for dt, bound in [(0.05, 0.1), (0.01, 0.02)]:
        steps = int(20 / dt)
        swing = run(Pendulum(horizon=steps, dt=dt, x0=[math.pi / 2, 0.0]), 0.0).states[0, 0]
        energy = (0.5 * swing[:, 1].pow(2) + 15.0 * torch.cos(swing[:, 0])).abs()
        assert swing[:, 1].abs().max() > 5.0  # it really swings (the bottom speed is sqrt(30))
        assert energy.max() < bound * 15.0
        assert energy[-steps // 4 :].max() < 1.01 * energy[: steps // 4].max()


def test_the_swing_up_cost_wraps_the_angle() -> None:
    thetas = torch.tensor([0.1, 0.1 + 2 * math.pi, 0.1 - 4 * math.pi, math.pi - 0.01, -math.pi + 0.01])
    states = torch.stack([torch.zeros(5), torch.zeros(5), thetas]).T.reshape(1, 5, 3, 1)
    states = torch.cat([states, torch.zeros_like(states)], dim=-1)  # theta_dot = 0
    zeros = torch.zeros(1, 5, 2, 1)
    rollout = PendulumRollout(controls=zeros, states=states, torques=zeros)
    costs = SwingUpCost()(rollout)[0]
    expected = [0.01, 0.01, 0.01, (math.pi - 0.01) ** 2, (math.pi - 0.01) ** 2]
    torch.testing.assert_close(costs, torch.tensor(expected), rtol=1e-5, atol=1e-5)
    assert bool(((angle_normalize(thetas) >= -math.pi) & (angle_normalize(thetas) < math.pi)).all())
    terminal = SwingUpCost(w_terminal=2.0)(rollout)[0]
    torch.testing.assert_close(terminal, 3.0 * costs)  # only the last state differs from 0 here


# ---------------------------------------------------------------------------------------- swing-up
@pytest.mark.parametrize("seed", [0, 1])
def test_receding_horizon_mppi_swings_the_pendulum_up_and_holds_it(seed: int) -> None:
    episode = 150  # 7.5 s: the swing-up takes about 3.5 s
    mpc = RecedingHorizon(
        AISP(sigma=1.0, lambda_=1.0, alpha=1.0, num_samples=64, num_iterations=1),
        horizon=20, commit=1, score="horizon",
    )  # fmt: skip
    result = mpc.optimize(Pendulum(horizon=episode), SwingUpCost(), seed=seed)
    states = result.best_rollout.states
    assert tuple(states.shape) == (1, 1, episode + 1, 2)
    assert tuple(result.best_rollout.controls.shape) == (1, 1, episode, 1)
    tail = angle_normalize(states[0, 0, -episode // 5 :, 0]).abs()
    assert tail.max() < 0.3, f"not upright at the end: max |angle| {tail.max():.2f}"
    replay = Pendulum(horizon=episode).rollout(result.best_rollout.controls, [])  # open loop, same controls
    assert torch.equal(replay.states, states)
    torch.testing.assert_close(
        result.best_cost, SwingUpCost()(result.best_rollout)[:, 0].double(), rtol=1e-5, atol=0
    )
