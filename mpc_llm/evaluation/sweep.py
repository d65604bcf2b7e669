"""A small sweep over AISP's sigma and lambda, whose useful scale depends on the model.

The pre-logit norm sets the scale of sigma (a perturbation matters relative to ``||z_t||``), and the
reward's spread sets the scale of lambda. Build the candidates here, then run them through
`mpc_llm.evaluation.compare.compare` beside the baseline and read the table. A sweep is a comparison
like any other: on many processes (``compare(..., world=...)``, `mpc_llm.evaluation.distributed`)
its candidates and prompt chunks are shared out over the ranks, and it resumes on any number of them
(``benchmarks/sweep_aisp.py`` under ``torchrun``).

Example:
    >>> sorted(aisp_grid(sigmas=[0.5, 1.0], lambdas=[0.1], num_samples=8))
    ['aisp[sigma=0.5,lambda=0.1]', 'aisp[sigma=1,lambda=0.1]']
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from mpc_llm.controllers.aisp import AISP


def _name(sigma: float, lambda_: float) -> str:
    return f"aisp[sigma={sigma:.3g},lambda={lambda_:.3g}]"


def aisp_grid(sigmas: Sequence[float], lambdas: Sequence[float], **common: Any) -> dict[str, AISP]:
    """Every (sigma, lambda) pair; ``common`` holds the other AISP settings (alpha, num_samples, ...)."""
    if not sigmas or not lambdas:
        raise ValueError("aisp_grid needs at least one sigma and one lambda")
    return {_name(s, lam): AISP(sigma=s, lambda_=lam, **common) for s in sigmas for lam in lambdas}


def aisp_random(
    num: int,
    sigma_range: tuple[float, float],
    lambda_range: tuple[float, float],
    seed: int = 0,
    **common: Any,
) -> dict[str, AISP]:
    """``num`` log-uniform draws of (sigma, lambda) from the given ranges, through a seeded generator."""
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    for label, (low, high) in (("sigma_range", sigma_range), ("lambda_range", lambda_range)):
        if not 0 < low <= high:
            raise ValueError(f"{label} must be (low, high) with 0 < low <= high, got {(low, high)}")
    g = torch.Generator().manual_seed(seed)
    u = torch.rand((num, 2), generator=g, dtype=torch.float64)

    def log_uniform(t: float, low: float, high: float) -> float:
        return math.exp(math.log(low) + t * (math.log(high) - math.log(low)))

    out = {}
    for a, b in u.tolist():
        sigma, lambda_ = log_uniform(a, *sigma_range), log_uniform(b, *lambda_range)
        out[_name(sigma, lambda_)] = AISP(sigma=sigma, lambda_=lambda_, **common)
    return out
