"""The classic pendulum swing-up (Gym's ``Pendulum-v1``): a torque-limited pendulum, upright is ``0``.

With the default limits (``max_torque = 2``) the motor cannot lift the pendulum straight up from
hanging (gravity's angular acceleration reaches ``3 g / (2 l) = 15``, the motor's ``6``): a
controller must pump energy by swinging back and forth, then catch and hold it upright.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mpc_llm.core import CostFunction, Rollout
from mpc_llm.dynamics.point_mass import StateSpaceSystem


def angle_normalize(theta: Tensor) -> Tensor:
    """Angles wrapped to ``[-pi, pi)`` (any shape)."""
    return torch.remainder(theta + math.pi, 2 * math.pi) - math.pi


@dataclass(frozen=True)
class PendulumRollout(Rollout):
    """A pendulum rollout.

    Attributes:
        states: ``(B, N, m + T + 1, 2)`` trajectories ``[theta, theta_dot]`` from the episode's
            initial state (``m`` committed steps, then ``T`` simulated ones).
        torques: ``(B, N, m + T, 1)`` the torques applied: ``controls`` clipped to ``±max_torque``.
    """

    states: Tensor
    torques: Tensor


class Pendulum(StateSpaceSystem):
    """``theta_dot' = clip(theta_dot + (3 g / (2 l) sin(theta) + 3 / (m l^2) u) dt, ±max_speed)``,
    ``theta' = theta + theta_dot' dt``, with the torque ``u`` clipped to ``±max_torque``.

    Args:
        horizon: steps ``T`` (the first ``tau`` controlled; the rollout's controls are padded to ``T``).
        dt: time step.
        x0: ``(2,)`` or ``(B, 2)`` initial states ``[theta, theta_dot]`` (default: hanging at rest,
            ``[pi, 0]``).
        g, m, l: gravity, mass and length.
        max_torque: the torque limit (controls beyond it act as ``±max_torque``).
        max_speed: the angular speed limit.

    Example:
        >>> system = Pendulum(horizon=1, x0=[0.0, 0.0])   # upright, at rest
        >>> rollout = system.rollout(torch.full((1, 1, 1, 1), 100.0), [])   # clipped to 2
        >>> [round(v, 4) for v in rollout.states[0, 0, -1].tolist()], rollout.torques.flatten().tolist()
        ([0.015, 0.3], [2.0])
    """

    state_dim = 2
    rollout_class = PendulumRollout

    def __init__(
        self,
        horizon: int,
        dt: float = 0.05,
        x0: Tensor | Sequence[float] | Sequence[Sequence[float]] | None = None,
        g: float = 10.0,
        m: float = 1.0,
        l: float = 1.0,  # noqa: E741 (Gym's name)
        max_torque: float = 2.0,
        max_speed: float = 8.0,
    ) -> None:
        self.dt, self.g, self.m, self.l = dt, g, m, l
        self.max_torque, self.max_speed = max_torque, max_speed
        super().__init__(horizon, [math.pi, 0.0] if x0 is None else x0)

    @property
    def control_dim(self) -> int:
        return 1

    def step(self, x: Tensor, u: Tensor) -> Tensor:
        """``(B, N, 2)`` states and ``(B, N, 1)`` torques (clipped here) -> ``(B, N, 2)`` next states."""
        theta, speed = x[..., 0], x[..., 1]
        torque = u[..., 0].clamp(-self.max_torque, self.max_torque)
        accel = 3 * self.g / (2 * self.l) * torch.sin(theta) + 3.0 / (self.m * self.l**2) * torque
        speed = (speed + accel * self.dt).clamp(-self.max_speed, self.max_speed)
        return torch.stack([theta + speed * self.dt, speed], dim=-1)

    def make_rollout(self, states: Tensor, controls: Tensor) -> PendulumRollout:
        """The rollout of ``(B, N, m + T + 1, 2)`` states and ``(B, N, m + T, 1)`` controls."""
        torques = controls.clamp(-self.max_torque, self.max_torque)
        return PendulumRollout(controls=controls, states=states, torques=torques)


class SwingUpCost(CostFunction):
    """Gym's pendulum cost, summed over the trajectory (the whole episode so far):

    ``sum_{t=1..T} [angle_normalize(theta_t)^2 + w_speed theta_dot_t^2] + w_torque sum_{t<T} u_t^2
    + w_terminal [angle_normalize(theta_T)^2 + w_speed theta_dot_T^2]``,

    over the states reached (not the episode's initial one, which no control changes) and the
    applied (clipped) torques ``u``.
    """

    def __init__(self, w_speed: float = 0.1, w_torque: float = 0.001, w_terminal: float = 0.0) -> None:
        self.w_speed, self.w_torque, self.w_terminal = w_speed, w_torque, w_terminal

    def state_cost(self, states: Tensor) -> Tensor:
        """``(..., 2)`` states -> ``(...)``: ``angle_normalize(theta)^2 + w_speed theta_dot^2``."""
        return angle_normalize(states[..., 0]).pow(2) + self.w_speed * states[..., 1].pow(2)

    def step_cost(self, states: Tensor, torques: Tensor) -> Tensor:
        """One step's cost: ``(..., 2)`` states reached and ``(..., 1)`` applied torques -> ``(...)``."""
        return self.state_cost(states) + self.w_torque * torques.pow(2).sum(-1)

    def __call__(self, rollout: Rollout) -> Tensor:
        """``(B, N)`` costs of a `PendulumRollout`."""
        assert isinstance(rollout, PendulumRollout), "SwingUpCost needs a Pendulum rollout"
        per_state = self.state_cost(rollout.states[..., 1:, :])
        effort = rollout.torques.pow(2).sum(dim=(-1, -2))
        return per_state.sum(-1) + self.w_torque * effort + self.w_terminal * per_state[..., -1]
