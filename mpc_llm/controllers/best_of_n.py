"""Best-of-N: the baseline. No perturbation; N samples from the system itself, keep the best."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from mpc_llm.controllers.gaussian import GAUSSIAN_PRESET, GaussianController
from mpc_llm.controllers.state import ControllerConfig, GaussianState


class BestOfN(GaussianController[ControllerConfig]):
    """Zero control (``sigma = 0``): the only randomness is the system's own (e.g. token sampling).

    With a budget of ``N`` samples, ``optimize(..., max_samples=N)`` returns the best of ``N``.
    """

    config_class = ControllerConfig
    preset: ClassVar[dict[str, Any]] = {k: GAUSSIAN_PRESET[k] for k in ("num_samples", "num_iterations")}

    def sample(self, state: GaussianState, num_samples: int, generators: Sequence[torch.Generator]) -> Tensor:
        B, K, d = state.mean.shape
        return state.mean.new_zeros((B, num_samples, K, d))
