"""Random shooting: perturb a fixed mean, keep the best sample; no adaptation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mpc_llm.controllers.base import Controller
from mpc_llm.controllers.state import ControllerState, GaussianConfig


class RandomShooting(Controller[GaussianConfig]):
    """Best of ``V ~ N(U_0, sigma^2 I)`` samples around the initial mean ``U_0`` (zero by default)."""

    config_class = GaussianConfig

    def sample(
        self, state: ControllerState, num_samples: int, generators: Sequence[torch.Generator]
    ) -> Tensor:
        return self.gaussian(state, num_samples, generators)
