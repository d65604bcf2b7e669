"""Soft best-of-N: draw ``N`` responses from the model and return one with probability ∝ exp(r / beta).

Follows Verdun et al., "Soft Best-of-n Sampling for Model Alignment" (2025): ``N`` samples of the
base model (zero control), and the returned one drawn with probability ``softmax(r / beta)`` over
them. As ``N`` grows, what it returns tends to the tilted model ``p exp(r / beta) / Z``; ``beta -> 0``
is best-of-N, ``beta -> inf`` a plain sample of the model. The weights' mean estimates ``Z``
(`OptimizeResult.population`). Departure: ``beta`` may instead be chosen, per problem and budget,
for a target effective sample size of the weights (``ess_target``, `mpc_llm.core.temperature_for_ess`).

Its KL to the base model is at most ``log N`` (it returns one of ``N`` base samples).

Example:
    >>> from mpc_llm.dynamics import ToyLM, ToyReward
    >>> system, reward = ToyLM.example(), ToyReward.example()
    >>> result = SoftBestOfN(beta=0.5, num_samples=64).optimize(system, reward, max_samples=64, seed=0)
    >>> result.population.rollout.num_samples, result.budget.samples
    (64, 64)
"""

from __future__ import annotations

from typing import Any, ClassVar

from mpc_llm.controllers.best_of_n import BestOfN
from mpc_llm.controllers.gaussian import GAUSSIAN_PRESET
from mpc_llm.controllers.sampling import Sampler, SamplerConfig


class SoftBestOfN(Sampler, BestOfN):
    """``N`` base samples (``sigma = 0``); the answer drawn by ``softmax(-c / beta)``."""

    config_class = SamplerConfig
    preset: ClassVar[dict[str, Any]] = {
        **{k: GAUSSIAN_PRESET[k] for k in ("num_samples", "num_iterations")},
        "ess_target": 0.1,
    }
