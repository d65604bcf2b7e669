"""AISP's sampling mode: return a response drawn by its importance weights instead of the best.

With ``alpha = 0``, AISP's weights ``exp(r / lambda) N(v; 0, s^2) / N(v; U, s^2)`` are the importance
weights of the joint target ``N(v; 0, s^2) p_v(y) exp(r / lambda)`` under the proposal
``N(v; U, s^2) p_v(y)``; its ``y``-marginal is the tilted model over the noise-smoothed base model
``E_v p_v``. Drawing the returned response by these weights (arXiv 2510.26219's own estimator, read
as a sampler) targets that model; the weights' mean estimates its ``Z``.

Departures: the draw is over every sample of the run, each weighted by the exact ratio ``p(v) /
q(v | U)`` of the proposal that drew it (the last iteration's weights are the one-iteration case),
at the temperature ``lambda`` (or, with ``ess_target``, the one that gives the target ESS on those
samples); ``alpha`` changes only how the mean moves, never the draw's ratio. A comparison reads a
run at budget ``k`` as the draw among its first ``k`` samples.

Example:
    >>> from mpc_llm.dynamics import ToyLM, ToyReward
    >>> result = AISPSampler(sigma=0.5, lambda_=0.5, num_samples=16).optimize(
    ...     ToyLM.example(), ToyReward.example(), max_samples=64, seed=0)
    >>> result.population.log_weights.shape
    torch.Size([1, 64])
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from mpc_llm.controllers.aisp import AISP
from mpc_llm.controllers.sampling import Sampler
from mpc_llm.controllers.state import GaussianState


class AISPSampler(Sampler, AISP):
    """AISP whose answer is a draw by its importance weights (its sampling mode)."""

    preset: ClassVar[dict[str, Any]] = AISP.preset

    def temperature(self) -> tuple[float | None, float | None]:
        """AISP's own temperature: ``(lambda, ess_target)``."""
        return self.config.lambda_, self.config.ess_target

    def log_ratio(self, state: GaussianState, knots: Tensor) -> Tensor:
        """``(B, N)`` ``log N(V; 0, s^2) - log N(V; U, s^2) = sum (U^2 - 2 U V) / (2 s^2)`` over the knots."""
        mean, sigma = state.mean.unsqueeze(1), state.sigma.unsqueeze(1)
        return ((mean.pow(2) - 2 * mean * knots) / (2 * sigma.pow(2))).sum(dim=(-1, -2)).double()
