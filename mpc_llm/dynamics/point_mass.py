"""A classic control system: a point mass (double integrator) in the plane, driven to a goal."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mpc_llm.core import CostFunction, Dynamics, Rollout


@dataclass(frozen=True)
class PointMassRollout(Rollout):
    """Attributes:
    states: ``(B, N, T + 1, 4)`` trajectories ``[x, y, vx, vy]``, starting at the initial state.
    """

    states: Tensor


class PointMass(Dynamics):
    """``p' = p + dt v``, ``v' = v + dt u`` for ``horizon`` steps; control ``u`` is a 2-d force.

    Args:
        horizon: steps ``T`` (the first ``tau`` controlled; the rollout's controls are padded to ``T``).
        dt: time step.
        x0: ``(4,)`` or ``(B, 4)`` initial states ``[x, y, vx, vy]`` (default: at rest at the origin).

    Example:
        >>> system = PointMass(horizon=3, dt=1.0)
        >>> system.rollout(torch.ones(1, 1, 3, 2), []).states[0, 0, -1].tolist()
        [6.0, 6.0, 3.0, 3.0]
    """

    def __init__(
        self, horizon: int = 20, dt: float = 0.1, x0: Tensor | Sequence[float] | None = None
    ) -> None:
        x0 = torch.zeros(4) if x0 is None else torch.as_tensor(x0, dtype=torch.float32)
        self.x0 = x0.reshape(-1, 4).float()
        self._horizon, self.dt = horizon, dt

    @property
    def batch_size(self) -> int:
        return int(self.x0.shape[0])

    @property
    def horizon(self) -> int:
        return self._horizon

    @property
    def control_dim(self) -> int:
        return 2

    def rollout(self, controls: Tensor, generators: Sequence[torch.Generator]) -> PointMassRollout:
        controls = self.pad_controls(controls)  # steps t >= tau get no force
        B, N = controls.shape[:2]
        x = self.x0.to(controls).unsqueeze(1).expand(B, N, 4)
        states = [x]
        for t in range(controls.shape[2]):
            pos, vel = x[..., :2], x[..., 2:]
            vel = vel + self.dt * controls[:, :, t]
            x = torch.cat([pos + self.dt * vel, vel], dim=-1)
            states.append(x)
        return PointMassRollout(controls=controls, states=torch.stack(states, dim=2))


class GoalCost(CostFunction):
    """Quadratic cost: distance to ``goal`` over the trajectory, final speed, and control effort.

    ``sum_t ||p_t - goal||^2 + w_terminal (||p_T - goal||^2 + ||v_T||^2) + w_effort sum_t ||u_t||^2``
    """

    def __init__(
        self, goal: Sequence[float] | Tensor, w_terminal: float = 10.0, w_effort: float = 0.01
    ) -> None:
        self.goal = torch.as_tensor(goal, dtype=torch.float32)
        self.w_terminal, self.w_effort = w_terminal, w_effort

    def __call__(self, rollout: Rollout) -> Tensor:
        assert isinstance(rollout, PointMassRollout), "GoalCost needs a PointMass rollout"
        states = rollout.states
        dist = (states[..., :2] - self.goal.to(states)).pow(2).sum(-1)
        terminal = dist[..., -1] + states[..., -1, 2:].pow(2).sum(-1)
        effort = rollout.controls.pow(2).sum(dim=(-1, -2))
        return dist.sum(-1) + self.w_terminal * terminal + self.w_effort * effort
