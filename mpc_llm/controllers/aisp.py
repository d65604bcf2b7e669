"""AISP: adaptive importance sampling on pre-logits (arXiv 2510.26219), an MPPI-style update.

Each iteration draws ``V_i ~ N(U, sigma^2 I)`` and moves the mean to the self-normalised
importance-sampling estimate of the optimal mean ``U* = E_{q*}[V]``, ``q* ∝ exp(r / lambda) p``:

    w_i ∝ exp( r_i / lambda - ((1 - alpha) / sigma^2) * sum_t <u_t, v_{t,i}> ),   U' = sum_i w_i V_i.

``alpha = 0`` is exact importance sampling toward the ``p = N(0, sigma^2 I)``-anchored optimum;
``alpha = 1`` drops the likelihood ratio (plain reward softmax, MPPI's usual setting).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from pydantic import Field, field_validator
from torch import Tensor

from mpc_llm.controllers.gaussian import GAUSSIAN_PRESET, GaussianController
from mpc_llm.controllers.state import Alternative, GaussianConfig, GaussianState
from mpc_llm.core import effective_sample_size, importance_weights, likelihood_log_ratio, temperature_for_ess


class AISPConfig(GaussianConfig):
    """AISP settings.

    Attributes:
        sigma: proposal and prior standard deviation, ``> 0`` (or ``sigma_relative``: a fraction of
            the model's pre-logit RMS, see `GaussianConfig`).
        lambda_: a fixed temperature ``lambda > 0`` (``lambda`` in YAML / JSON), in reward units;
            small -> greedy on reward.
        ess_target: instead of ``lambda``, the effective sample size to reach at every iteration, as
            a fraction of the samples in ``(0, 1]``: each iteration and problem gets the ``lambda``
            at which the weights' ESS is that fraction (`mpc_llm.core.temperature_for_ess`), so no
            reward scale has to be tuned. Give one of the two (neither: ``lambda = 1``). The
            ``lambda`` used is reported in each iteration's ``stats["lambda"]``.
        alpha: weight in ``[0, 1]`` that removes the likelihood-ratio term (1 = MPPI).
    """

    alternatives: ClassVar[tuple[Alternative, ...]] = (
        *GaussianConfig.alternatives,
        (("lambda", "lambda_"), ("ess_target",), 1.0, "lambda (a fixed temperature)",
         "ess_target (the temperature chosen for a target ESS fraction)"),
    )  # fmt: skip

    sigma: float | None = Field(None, gt=0.0, allow_inf_nan=False)
    lambda_: float | None = Field(None, gt=0.0, alias="lambda", allow_inf_nan=False)
    ess_target: float | None = None
    alpha: float = Field(0.0, ge=0.0, le=1.0)

    @field_validator("ess_target")
    @classmethod
    def _target_in_zero_one(cls, value: float | None) -> float | None:
        if value is not None and not 0.0 < value <= 1.0:
            raise ValueError(
                f"ess_target is the effective sample size to reach as a fraction of num_samples and must be "
                f"in (0, 1]; got {value}"
            )
        return value


class AISP(GaussianController[AISPConfig]):
    """Adaptive importance sampling / MPPI.

    Example:
        >>> from mpc_llm.dynamics import IdentityDynamics, LinearCost
        >>> system = IdentityDynamics(horizon=1, control_dim=2)
        >>> cost = LinearCost(a=[1.0, -1.0])           # reward <a, V>: optimum mean sigma^2 a / lambda
        >>> result = AISP(sigma=1.0, lambda_=1.0, num_samples=4000).optimize(
        ...     system, cost, num_iterations=3)
        >>> [round(x, 1) for x in result.mean.flatten().tolist()]
        [1.0, -1.0]
    """

    config_class = AISPConfig
    #: The project's settings, scale-free so that they carry over to other models and rewards
    #: (chosen with `benchmarks/sweep_aisp.py` on the embedded default; README).
    preset: ClassVar[dict[str, Any]] = {**GAUSSIAN_PRESET, "ess_target": 0.3, "alpha": 0.0}

    def sample(self, state: GaussianState, num_samples: int, generators: Sequence[torch.Generator]) -> Tensor:
        return self.gaussian(state, num_samples, generators)

    def update(self, state: GaussianState, knots: Tensor, costs: Tensor) -> GaussianState:
        cfg = self.config
        log_ratio = (1.0 - cfg.alpha) * likelihood_log_ratio(state.mean, knots, state.sigma)
        B = costs.shape[0]
        if cfg.ess_target is not None:
            lambda_ = temperature_for_ess(costs, cfg.ess_target, log_ratio)
        else:
            lambda_ = torch.full((B,), float(cfg.lambda_), dtype=torch.float64, device=costs.device)
        weights = importance_weights(costs, lambda_, log_ratio)
        mean = (weights.unsqueeze(-1).unsqueeze(-1) * knots).sum(dim=1)
        return state.replace(mean=mean, stats={"ess": effective_sample_size(weights), "lambda": lambda_})
