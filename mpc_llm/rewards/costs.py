"""Cost terms that read the controls and the log-probs of a rollout rather than its text.

They are *extra* per-sample regularisers, composed with a reward as

    cost = -reward + (1 / (2 sigma^2)) sum_t ||u_t||^2 + beta * KL(controlled || base)

They are not the ``lambda * KL(q || p)`` term of the control objective (docs/architecture.md): AISP
already accounts for that prior through its likelihood ratio (``alpha < 1``), so adding `ControlCost`
to an AISP cost penalises the controls a second time. `ControlCost` sums over the expanded control
steps (a knot held over ``c`` tokens counts ``c`` times).

Example:
    >>> import torch
    >>> from mpc_llm.core import Rollout
    >>> cost = ControlCost(sigma=2.0) + 0.5 * ControlCost(sigma=1.0)
    >>> cost(Rollout(controls=torch.ones(1, 2, 3, 4))).tolist()    # sum_t ||u_t||^2 = 12
    [[4.5, 4.5]]
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mpc_llm.core import CostFunction, Metrics, Rollout

__all__ = ["ControlCost", "KLCost"]


def _positive(value: float, what: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{what} must be a finite number > 0, got {value!r}")
    return float(value)


class ControlCost(CostFunction):
    """The quadratic control cost ``(1 / (2 sigma^2)) sum_t ||u_t||^2``.

    Args:
        sigma: the prior standard deviation ``sigma > 0`` of ``p = N(0, sigma^2 I)``.

    Returns (when called on a rollout with ``(B, N, tau, d)`` controls):
        ``(B, N)`` costs in the controls' dtype (at least float32) and on their device.
    """

    def __init__(self, sigma: float = 1.0) -> None:
        self.sigma = _positive(sigma, "sigma")

    def __call__(self, rollout: Rollout) -> Tensor:
        u = rollout.controls
        if u.dim() != 4:
            raise ValueError(f"controls must be (B, N, tau, d), got shape {tuple(u.shape)}")
        u = u.to(torch.promote_types(u.dtype, torch.float32))
        return u.pow(2).sum(dim=(-1, -2)) / (2.0 * self.sigma**2)

    def __repr__(self) -> str:
        return f"ControlCost(sigma={self.sigma:g})"


class KLCost(CostFunction):
    """``beta`` times the single-sample KL estimate ``sum_t log p_u(y_t) - log p_0(y_t)``.

    Reads `LMRollout.kl_to_base`, so the dynamics must record log-probs (``return_logprobs=True``).

    Args:
        beta: the weight ``beta > 0``.

    Returns (when called on an `LMRollout`):
        ``(B, N)`` costs on the device of the rollout's log-probs; `evaluate` also reports the
        unweighted estimate as ``"kl"``.
    """

    def __init__(self, beta: float = 1.0) -> None:
        self.beta = _positive(beta, "beta")

    def __call__(self, rollout: Rollout) -> Tensor:
        return self.evaluate(rollout)[0]

    def evaluate(self, rollout: Rollout) -> tuple[Tensor, Metrics]:
        kl_to_base = getattr(rollout, "kl_to_base", None)
        if kl_to_base is None:
            raise TypeError(
                f"KLCost needs an LMRollout with log-probs, got {type(rollout).__name__}; "
                "it applies to language-model dynamics only"
            )
        kl = kl_to_base()
        return self.beta * kl, {"kl": kl}

    def __repr__(self) -> str:
        return f"KLCost(beta={self.beta:g})"
