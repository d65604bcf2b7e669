"""Sweeps over AISP's settings: sigma x lambda (absolute: their useful scale depends on the model
and the reward), or sigma_relative x ess_target (scale-free, `aisp_scale_free_grid`).

The pre-logit norm sets the scale of sigma (a perturbation matters relative to ``||z_t||``), and the
reward's spread sets the scale of lambda. Build the candidates here, then run them through
`mpc_llm.evaluation.compare.compare` beside the baseline and read the table. A sweep is a comparison
like any other: on many processes (``compare(..., world=...)``, `mpc_llm.evaluation.compare.distributed`)
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


def aisp_scale_free_grid(
    sigma_relatives: Sequence[float], ess_targets: Sequence[float], **common: Any
) -> dict[str, AISP]:
    """Every (``sigma_relative``, ``ess_target``) pair: the scale-free settings, whose values carry
    over between models and rewards (sigma as a fraction of the pre-logit RMS, the temperature chosen
    for a target ESS fraction). Labels share the ``aisp`` family, so the frontier plot draws them
    as one family's curves.

    Example:
        >>> sorted(aisp_scale_free_grid([0.05, 0.1], [0.5], num_samples=8))
        ['aisp[sigma_rel=0.05,ess=0.5]', 'aisp[sigma_rel=0.1,ess=0.5]']
    """
    if not sigma_relatives or not ess_targets:
        raise ValueError("aisp_scale_free_grid needs at least one sigma_relative and one ess_target")
    return {
        f"aisp[sigma_rel={s:.3g},ess={e:.3g}]": AISP(sigma_relative=s, ess_target=e, **common)
        for s in sigma_relatives
        for e in ess_targets
    }
