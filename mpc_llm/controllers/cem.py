"""The cross-entropy method: refit the proposal to the elite fraction of samples."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor

from mpc_llm.controllers.gaussian import GAUSSIAN_PRESET, GaussianController
from mpc_llm.controllers.state import GaussianConfig, GaussianState


class CEMConfig(GaussianConfig):
    """CEM settings.

    Attributes:
        elite_fraction: share of samples kept, in ``(0, 1]`` (at least one sample is kept).
        smoothing: weight of the old mean / sigma in ``[0, 1)``: ``U' = s U + (1 - s) elite_mean``.
        refit_sigma: also refit a per-coordinate sigma to the elites.
        sigma_min: floor of the refitted sigma, ``>= 0``.
    """

    sigma: float | None = Field(None, gt=0.0, allow_inf_nan=False)
    elite_fraction: float = Field(0.1, gt=0.0, le=1.0)
    smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    refit_sigma: bool = False
    sigma_min: float = Field(1e-3, ge=0.0)


class CEM(GaussianController[CEMConfig]):
    """Cross-entropy method with optional sigma refit."""

    config_class = CEMConfig
    preset: ClassVar[dict[str, Any]] = dict(GAUSSIAN_PRESET)

    def sample(self, state: GaussianState, num_samples: int, generators: Sequence[torch.Generator]) -> Tensor:
        return self.gaussian(state, num_samples, generators)

    def update(self, state: GaussianState, knots: Tensor, costs: Tensor) -> GaussianState:
        cfg = self.config
        num_elites = max(1, math.ceil(cfg.elite_fraction * costs.shape[1]))
        elite_costs, idx = costs.topk(num_elites, dim=1, largest=False)
        elites = knots[torch.arange(knots.shape[0], device=knots.device).unsqueeze(1), idx]
        weight = torch.isfinite(elite_costs).to(knots.dtype)
        weight = (weight / weight.sum(dim=1, keepdim=True)).unsqueeze(-1).unsqueeze(-1)
        elite_mean = (weight * elites).sum(dim=1)
        s = cfg.smoothing
        mean = s * state.mean + (1.0 - s) * elite_mean
        sigma = state.sigma
        if cfg.refit_sigma:
            elite_std = (weight * (elites - elite_mean.unsqueeze(1)).pow(2)).sum(dim=1).sqrt()
            sigma = (s * state.sigma + (1.0 - s) * elite_std).clamp_min(cfg.sigma_min)
        return state.replace(mean=mean, sigma=sigma)
