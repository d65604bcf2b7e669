"""Control parameterisations: a few knots held over chunks of the controlled steps.

Sampling-based MPC libraries search over a few knots and interpolate them over the horizon. For a
language model the natural analogue is a zero-order hold: ``K`` knot vectors, each held constant
over a chunk of ``tau / K`` consecutive tokens (``K = 1``: one vector for the whole window;
``K = tau``: one per token). Steps from ``tau`` to the dynamics' horizon get no control.
"""

from __future__ import annotations

import torch
from torch import Tensor


class ZeroOrderHold:
    """Expand ``(..., K, d)`` knots to ``(..., tau, d)`` controls.

    Args:
        tau: number of controlled steps, ``>= 1``.
        num_knots: ``K``, ``1 <= K <= tau``; chunk sizes differ by at most one.
        horizon: if given (``>= tau``), pad the controls with zeros to ``horizon`` steps.

    Example:
        >>> hold = ZeroOrderHold(tau=4, num_knots=2)
        >>> hold.expand(torch.tensor([[1.0], [2.0]])).flatten().tolist()
        [1.0, 1.0, 2.0, 2.0]
    """

    def __init__(self, tau: int, num_knots: int, horizon: int | None = None) -> None:
        if tau < 1 or (horizon is not None and tau > horizon):
            raise ValueError(f"tau must be in [1, horizon={horizon}], got {tau}")
        if not 1 <= num_knots <= tau:
            raise ValueError(f"num_knots must be in [1, tau={tau}], got {num_knots}")
        self.tau, self.num_knots = tau, num_knots
        self.horizon = tau if horizon is None else horizon
        self.knot_of_step = (torch.arange(tau) * num_knots) // tau

    def compress(self, controls: Tensor) -> Tensor:
        """``(..., tau, d)`` controls -> ``(..., K, d)`` knots: the value at the first step of each chunk.

        The inverse of `expand` on held controls (``compress(expand(k)) == k``).
        """
        starts = torch.searchsorted(self.knot_of_step, torch.arange(self.num_knots))
        return controls.index_select(-2, starts.to(controls.device))

    def shift(
        self, knots: Tensor, steps: int, fill: str = "zeros", to: ZeroOrderHold | None = None
    ) -> Tensor:
        """Move a plan ``steps`` steps forward in time (receding-horizon warm start).

        The knots are expanded to steps, the first ``steps`` dropped, the tail filled with zeros
        (``fill="zeros"``) or the last step's value (``"last"``), and the result compressed to the
        knots of ``to`` (default: this hold; a shorter hold near the end of an episode).

        Example:
            >>> hold = ZeroOrderHold(tau=4, num_knots=4)
            >>> hold.shift(torch.tensor([[1.0], [2.0], [3.0], [4.0]]), 1, "last").flatten().tolist()
            [2.0, 3.0, 4.0, 4.0]
        """
        if fill not in ("zeros", "last"):
            raise ValueError(f"fill must be 'zeros' or 'last', got {fill!r}")
        to = to or self
        steps_ = self.expand(knots)[..., : self.tau, :]
        kept = steps_[..., steps:, :]
        missing = to.tau - kept.shape[-2]
        if missing > 0:
            if fill == "last":
                tail = steps_[..., -1:, :].expand(*steps_.shape[:-2], missing, steps_.shape[-1])
            else:
                tail = steps_.new_zeros((*steps_.shape[:-2], missing, steps_.shape[-1]))
            kept = torch.cat([kept, tail], dim=-2)
        return to.compress(kept[..., : to.tau, :])

    def expand(self, knots: Tensor) -> Tensor:
        """``(..., K, d)`` knots -> ``(..., tau, d)`` controls (``(..., horizon, d)`` when padded)."""
        index = self.knot_of_step.to(knots.device)
        held = knots.index_select(-2, index)
        if self.horizon == self.tau:
            return held
        pad = held.new_zeros((*held.shape[:-2], self.horizon - self.tau, held.shape[-1]))
        return torch.cat([held, pad], dim=-2)
