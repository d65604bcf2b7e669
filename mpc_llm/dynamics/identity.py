"""The identity system: the outcome is the control itself. Closed-form optima for testing.

With ``p = N(0, s^2 I)`` and temperature ``lambda``:

- `LinearCost` (reward ``<a, V>``): ``q* = N(s^2 a / lambda, s^2 I)``;
- `QuadraticCost` (reward ``-c ||V - g||^2``): ``q*`` has mean ``(2c/lambda) g / (1/s^2 + 2c/lambda)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mpc_llm.core import CostFunction, Dynamics, Rollout


class IdentityDynamics(Dynamics):
    """``B`` copies of the system whose outcome is the control sequence ``V`` itself.

    Args:
        horizon: steps; controls of ``tau < horizon`` steps are padded with zeros.
        control_dim: ``d``.
        batch_size: ``B``.
    """

    def __init__(
        self, horizon: int, control_dim: int, batch_size: int = 1, dtype: torch.dtype = torch.float64
    ) -> None:
        self._horizon, self._control_dim, self._batch_size = horizon, control_dim, batch_size
        self._dtype = dtype

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def horizon(self) -> int:
        return self._horizon

    @property
    def control_dim(self) -> int:
        return self._control_dim

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    def rollout(self, controls: Tensor, generators: Sequence[torch.Generator]) -> Rollout:
        """The outcome is ``V`` itself, ``(B, N, horizon, d)`` (zero past the controlled ``tau`` steps)."""
        self.check_controls(controls)
        return Rollout(controls=self.pad_controls(controls))


def _per_problem(value: Tensor | Sequence[float] | float, like: Tensor) -> Tensor:
    """``value`` broadcast against ``(B, N, tau, d)``: a ``(tau, d)``/``(d,)`` shared or ``(B, tau, d)``."""
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if value.dim() == 3:
        return value.unsqueeze(1)
    return value


class LinearCost(CostFunction):
    """Cost ``-<a, V>`` (reward ``<a, V>``); ``a``: ``(d,)``, ``(tau, d)`` or per problem ``(B, tau, d)``."""

    def __init__(self, a: Tensor | Sequence[float]) -> None:
        self.a = torch.as_tensor(a, dtype=torch.float64)

    def __call__(self, rollout: Rollout) -> Tensor:
        V = rollout.controls
        return -(_per_problem(self.a, V) * V).sum(dim=(-1, -2))


class QuadraticCost(CostFunction):
    """Cost ``c ||V - g||^2`` (reward ``-c ||V - g||^2``); ``g`` shaped like `LinearCost`'s ``a``."""

    def __init__(self, g: Tensor | Sequence[float], c: float = 1.0) -> None:
        self.g = torch.as_tensor(g, dtype=torch.float64)
        self.c = float(c)

    def __call__(self, rollout: Rollout) -> Tensor:
        V = rollout.controls
        return self.c * (V - _per_problem(self.g, V)).pow(2).sum(dim=(-1, -2))
