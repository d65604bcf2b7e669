"""AISP: adaptive importance sampling on pre-logits (arXiv 2510.26219), an MPPI-style update.

Each iteration draws ``V_i ~ N(U, sigma^2 I)`` and moves the mean to the self-normalised
importance-sampling estimate of the optimal mean ``U* = E_{q*}[V]``, ``q* ∝ exp(r / lambda) p``:

    w_i ∝ exp( r_i / lambda - ((1 - alpha) / sigma^2) * sum_t <u_t, v_{t,i}> ),   U' = sum_i w_i V_i.

``alpha = 0`` is exact importance sampling toward the ``p = N(0, sigma^2 I)``-anchored optimum;
``alpha = 1`` drops the likelihood ratio (plain reward softmax, MPPI's usual setting).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import Field
from torch import Tensor

from mpc_llm.controllers.base import Controller
from mpc_llm.controllers.state import ControllerState, GaussianConfig
from mpc_llm.core import effective_sample_size, importance_weights, likelihood_log_ratio


class AISPConfig(GaussianConfig):
    """AISP settings.

    Attributes:
        sigma: proposal and prior standard deviation, ``> 0``.
        lambda_: temperature ``lambda > 0`` (``lambda`` in YAML / JSON); small -> greedy on reward.
        alpha: weight in ``[0, 1]`` that removes the likelihood-ratio term (1 = MPPI).
    """

    sigma: float = Field(1.0, gt=0.0, allow_inf_nan=False)
    lambda_: float = Field(1.0, gt=0.0, alias="lambda", allow_inf_nan=False)
    alpha: float = Field(0.0, ge=0.0, le=1.0)


class AISP(Controller[AISPConfig]):
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

    def sample(
        self, state: ControllerState, num_samples: int, generators: Sequence[torch.Generator]
    ) -> Tensor:
        return self.gaussian(state, num_samples, generators)

    def update(self, state: ControllerState, knots: Tensor, costs: Tensor) -> ControllerState:
        cfg = self.config
        log_ratio = (1.0 - cfg.alpha) * likelihood_log_ratio(state.mean, knots, state.sigma)
        weights = importance_weights(costs, cfg.lambda_, log_ratio)
        mean = (weights.unsqueeze(-1).unsqueeze(-1) * knots).sum(dim=1)
        return state.replace(mean=mean, stats={"ess": effective_sample_size(weights)})
