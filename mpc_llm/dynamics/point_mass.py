"""Classic control systems on explicit states: the shared closed-loop machinery and the point mass.

`StateSpaceSystem` is a deterministic system ``x' = step(x, u)`` on ``(B, N, s)`` state tensors. It
implements the closed-loop hooks of `mpc_llm.core.Dynamics` once for every such system: `advance`
commits steps of a chosen rollout into a `History`, and every later rollout starts with that history,
so a cost always sees the whole episode so far. `PointMass` (here) and `Pendulum`
(`mpc_llm.dynamics.pendulum`) are its two systems.
"""

from __future__ import annotations

import copy
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor
from typing_extensions import Self

from mpc_llm.core import CostFunction, Dynamics, Rollout


@dataclass(frozen=True)
class PointMassRollout(Rollout):
    """A point-mass rollout.

    Attributes:
        states: ``(B, N, m + T + 1, 4)`` trajectories ``[x, y, vx, vy]`` from the episode's initial
            state (``m`` committed steps, then ``T`` simulated ones; ``m = 0`` for a fresh system).
    """

    states: Tensor


@dataclass(frozen=True)
class History:
    """The committed part of an episode, per problem.

    Attributes:
        states: ``(B, m, s)`` the states before the current one, from the episode's initial state.
        controls: ``(B, m, d)`` the controls applied at those states.
    """

    states: Tensor
    controls: Tensor

    @classmethod
    def empty(cls, batch_size: int, state_dim: int, control_dim: int) -> History:
        """No step committed yet (``m = 0``)."""
        return cls(torch.zeros(batch_size, 0, state_dim), torch.zeros(batch_size, 0, control_dim))

    @property
    def steps(self) -> int:
        """``m``, the committed steps."""
        return int(self.controls.shape[1])

    def select(self, index: Tensor) -> History:
        """The history of problems ``index`` (``(B',)`` long) only."""
        return History(self.states[index], self.controls[index])

    def prepend(self, states: Tensor, controls: Tensor) -> tuple[Tensor, Tensor]:
        """Put the history in front of ``N`` continuations.

        Args:
            states: ``(B, N, T + 1, s)`` states from the current one.
            controls: ``(B, N, T, d)`` controls.

        Returns:
            ``(B, N, m + T + 1, s)`` states and ``(B, N, m + T, d)`` controls from the episode's start.
        """
        if self.steps == 0:
            return states, controls
        B, N = states.shape[:2]
        past_states = self.states.to(states).unsqueeze(1).expand(B, N, -1, -1)
        past_controls = self.controls.to(controls).unsqueeze(1).expand(B, N, -1, -1)
        return torch.cat([past_states, states], dim=2), torch.cat([past_controls, controls], dim=2)


class StateSpaceSystem(Dynamics):
    """A deterministic system ``x_{t+1} = step(x_t, u_t)``, with receding-horizon support.

    A subclass sets `state_dim` and `rollout_class` (a rollout with a ``states`` field), and
    implements `control_dim` and `step`. Rollouts hold ``states (B, N, m + T + 1, s)`` and
    ``controls (B, N, m + T, d)``: the ``m`` committed steps (see `advance`), then ``T = horizon``
    simulated ones (the controls right-padded with zeros past ``tau``).

    Args:
        horizon: steps left, ``>= 0``.
        x0: ``(s,)`` or ``(B, s)`` current states (for a fresh system, the episode's initial states).
    """

    state_dim: ClassVar[int]
    rollout_class: ClassVar[type[Rollout]]

    def __init__(self, horizon: int, x0: Tensor | Sequence[float] | Sequence[Sequence[float]]) -> None:
        if horizon < 0:
            raise ValueError(f"horizon must be >= 0, got {horizon}")
        self.x0 = torch.as_tensor(x0, dtype=torch.float32).reshape(-1, self.state_dim).float()
        self._horizon = int(horizon)
        self.history = History.empty(self.batch_size, self.state_dim, self.control_dim)

    @abstractmethod
    def step(self, x: Tensor, u: Tensor) -> Tensor:
        """``(B, N, s)`` states and ``(B, N, d)`` controls -> the ``(B, N, s)`` next states."""

    def make_rollout(self, states: Tensor, controls: Tensor) -> Rollout:
        """The rollout of ``(B, N, m + T + 1, s)`` states and ``(B, N, m + T, d)`` controls."""
        return self.rollout_class(controls=controls, states=states)  # type: ignore[call-arg]

    @property
    def batch_size(self) -> int:
        return int(self.x0.shape[0])

    @property
    def horizon(self) -> int:
        return self._horizon

    def rollout(self, controls: Tensor, generators: Sequence[torch.Generator]) -> Rollout:
        """Simulate ``(B, N, tau, d)`` controls, ``tau <= horizon`` (no control for ``t >= tau``).

        Returns a rollout with the history in front: ``states (B, N, m + horizon + 1, s)``,
        ``controls (B, N, m + horizon, d)``. Deterministic: ``generators`` are not used.
        """
        if controls.shape[2] > self.horizon:
            raise ValueError(f"controls have {controls.shape[2]} steps, more than the horizon {self.horizon}")
        self.check_controls(controls)
        controls = self.pad_controls(controls)
        B, N = controls.shape[:2]
        x = self.x0.to(controls).unsqueeze(1).expand(B, N, self.state_dim)
        states = [x]
        for t in range(controls.shape[2]):
            x = self.step(x, controls[:, :, t])
            states.append(x)
        return self.make_rollout(*self.history.prepend(torch.stack(states, dim=2), controls))

    # ------------------------------------------------------------------ closed loop
    def advance(self, rollout: Rollout, steps: int) -> Self:
        """Commit the first ``steps`` steps of ``rollout`` (``N = 1``, made by this system or by
        ``self.with_horizon(h)``): the new system starts where they end, ``steps`` fewer to go."""
        m = self.history.steps
        if not isinstance(rollout, self.rollout_class) or rollout.num_samples != 1:
            raise ValueError(f"advance needs a {self.rollout_class.__name__} with N = 1 sample per problem")
        if rollout.batch_size != self.batch_size:
            raise ValueError(f"the rollout has {rollout.batch_size} problems, this system {self.batch_size}")
        if not 1 <= steps <= min(self.horizon, rollout.controls.shape[2] - m):
            raise ValueError(f"steps must be in [1, {self.horizon}] and within the rollout, got {steps}")
        states: Tensor = rollout.states[:, 0]  # type: ignore[attr-defined]
        controls = rollout.controls[:, 0]
        same_states = torch.equal(states[:, :m], self.history.states.to(states))
        if not (same_states and torch.equal(controls[:, :m], self.history.controls.to(controls))):
            raise ValueError("the rollout does not continue this system's history (made by another system?)")
        history = History(states[:, : m + steps].clone(), controls[:, : m + steps].clone())
        return self._replace(x0=states[:, m + steps].clone(), history=history, _horizon=self.horizon - steps)

    def select(self, index: Sequence[int]) -> Self:
        """The problems ``index`` only (current states and histories), same horizon."""
        idx = torch.as_tensor(list(index), dtype=torch.long)
        return self._replace(x0=self.x0[idx], history=self.history.select(idx))

    def with_horizon(self, horizon: int) -> Self:
        """A copy that runs only ``horizon`` more steps, ``0 <= horizon <= self.horizon`` (history kept)."""
        if not 0 <= horizon <= self.horizon:
            raise ValueError(f"horizon must be in [0, {self.horizon}], got {horizon}")
        return self._replace(_horizon=int(horizon))

    def _replace(self, **changes: object) -> Self:
        new = copy.copy(self)
        new.__dict__.update(changes)
        return new


class PointMass(StateSpaceSystem):
    """``p' = p + dt v``, ``v' = v + dt u`` for ``horizon`` steps; control ``u`` is a 2-d force.

    Args:
        horizon: steps ``T`` (the first ``tau`` controlled; the rollout's controls are padded to ``T``).
        dt: time step.
        x0: ``(4,)`` or ``(B, 4)`` initial states ``[x, y, vx, vy]`` (default: at rest at the origin).

    Example:
        >>> system = PointMass(horizon=3, dt=1.0)
        >>> system.rollout(torch.ones(1, 1, 3, 2), []).states[0, 0, -1].tolist()
        [6.0, 6.0, 3.0, 3.0]
        >>> later = system.advance(system.rollout(torch.ones(1, 1, 3, 2), []), 1)  # commit one step
        >>> later.horizon, later.x0.tolist(), later.rollout(torch.zeros(1, 1, 2, 2), []).states.shape
        (2, [[1.0, 1.0, 1.0, 1.0]], torch.Size([1, 1, 4, 4]))
    """

    state_dim = 4
    rollout_class = PointMassRollout

    def __init__(
        self, horizon: int = 20, dt: float = 0.1, x0: Tensor | Sequence[float] | None = None
    ) -> None:
        self.dt = dt
        super().__init__(horizon, torch.zeros(4) if x0 is None else x0)

    @property
    def control_dim(self) -> int:
        return 2

    def step(self, x: Tensor, u: Tensor) -> Tensor:
        vel = x[..., 2:] + self.dt * u
        return torch.cat([x[..., :2] + self.dt * vel, vel], dim=-1)


class GoalCost(CostFunction):
    """Quadratic cost: distance to ``goal`` over the trajectory, final speed, and control effort.

    ``sum_t ||p_t - goal||^2 + w_terminal (||p_T - goal||^2 + ||v_T||^2) + w_effort sum_t ||u_t||^2``
    (over the whole episode so far when the system has committed steps).
    """

    def __init__(
        self, goal: Sequence[float] | Tensor, w_terminal: float = 10.0, w_effort: float = 0.01
    ) -> None:
        self.goal = torch.as_tensor(goal, dtype=torch.float32)
        self.w_terminal, self.w_effort = w_terminal, w_effort

    def __call__(self, rollout: Rollout) -> Tensor:
        """``(B, N)`` costs of a `PointMassRollout`."""
        assert isinstance(rollout, PointMassRollout), "GoalCost needs a PointMass rollout"
        states = rollout.states
        dist = (states[..., :2] - self.goal.to(states)).pow(2).sum(-1)
        terminal = dist[..., -1] + states[..., -1, 2:].pow(2).sum(-1)
        effort = rollout.controls.pow(2).sum(dim=(-1, -2))
        return dist.sum(-1) + self.w_terminal * terminal + self.w_effort * effort
