"""Best-of-N: the baseline. No perturbation; N samples from the system itself, keep the best."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mpc_llm.controllers.base import Controller
from mpc_llm.controllers.state import ControllerConfig, ControllerState


class BestOfN(Controller[ControllerConfig]):
    """Zero control (``sigma = 0``): the only randomness is the system's own (e.g. token sampling).

    With a budget of ``N`` samples, ``optimize(..., max_samples=N)`` returns the best of ``N``.
    """

    config_class = ControllerConfig

    def sample(
        self, state: ControllerState, num_samples: int, generators: Sequence[torch.Generator]
    ) -> Tensor:
        B, K, d = state.mean.shape
        return state.mean.new_zeros((B, num_samples, K, d))
