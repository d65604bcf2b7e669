"""Self-normalised importance weights and their effective sample size.

AISP / MPPI (docs/architecture.md, "The control problem") weight sample ``i`` of a proposal
``q(V | U, sigma^2 I)`` by

    w_i ∝ exp( -c_i / lambda - (1 - alpha) * sum_t <u_t, v_{t,i}> / sigma^2 ),

with ``c_i = -r_i`` the cost. Samples with a non-finite cost get weight zero.
"""

from __future__ import annotations

import torch
from torch import Tensor


def likelihood_log_ratio(mean: Tensor, samples: Tensor, sigma: Tensor) -> Tensor:
    """``log p(V_i) - log q(V_i | U)`` up to a constant in ``i``, with ``p = N(0, sigma^2 I)``.

    Args:
        mean: ``(B, K, d)`` proposal mean ``U``.
        samples: ``(B, N, K, d)`` samples ``V``.
        sigma: standard deviation broadcastable to ``(B, K, d)``, positive.

    Returns:
        ``(B, N)``: ``-sum <u, v> / sigma^2``.
    """
    sigma = torch.as_tensor(sigma, dtype=samples.dtype, device=samples.device)
    scaled_mean = (mean / sigma.pow(2)).unsqueeze(1)
    return -(scaled_mean * samples).sum(dim=(-1, -2))


def importance_weights(costs: Tensor, lambda_: float, log_ratio: Tensor | None = None) -> Tensor:
    """Normalised weights ``softmax(-costs / lambda + log_ratio)`` over samples.

    Args:
        costs: ``(B, N)`` costs; NaN or ``±inf`` entries get weight zero.
        lambda_: temperature, ``> 0``; ``lambda -> 0`` tends to one-hot on the lowest cost.
        log_ratio: optional ``(B, N)`` log likelihood ratio added to the log-weights.

    Returns:
        ``(B, N)`` non-negative weights that sum to 1 along ``N``.

    Raises:
        ValueError: if ``lambda_ <= 0`` or a problem has no sample with a finite cost.

    Example:
        >>> w = importance_weights(torch.tensor([[0.0, 1.0]]), lambda_=1.0)
        >>> [round(x, 3) for x in w[0].tolist()]
        [0.731, 0.269]
    """
    if not lambda_ > 0:
        raise ValueError(f"lambda_ must be > 0, got {lambda_}")
    valid = torch.isfinite(costs)
    if not bool(valid.any(dim=1).all()):
        bad = (~valid.any(dim=1)).nonzero().flatten().tolist()
        raise ValueError(f"no sample has a finite cost for problem(s) {bad}; cannot weight samples")
    logits = -costs.to(torch.float64) / lambda_
    if log_ratio is not None:
        logits = logits + log_ratio.to(torch.float64)
    logits = logits.masked_fill(~valid | torch.isnan(logits), float("-inf"))
    return torch.softmax(logits, dim=1).to(costs.dtype)


def effective_sample_size(weights: Tensor) -> Tensor:
    """Kish's effective sample size ``1 / sum_i w_i^2`` of normalised ``(B, N)`` weights -> ``(B,)``."""
    return 1.0 / weights.pow(2).sum(dim=1)
