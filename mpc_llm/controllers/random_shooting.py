"""Random shooting: perturb a fixed mean, keep the best sample; no adaptation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from mpc_llm.controllers.gaussian import GAUSSIAN_PRESET, GaussianController
from mpc_llm.controllers.state import GaussianConfig, GaussianState


class RandomShooting(GaussianController[GaussianConfig]):
    """Best of ``V ~ N(U_0, sigma^2 I)`` samples around the initial mean ``U_0`` (zero by default)."""

    config_class = GaussianConfig
    preset: ClassVar[dict[str, Any]] = dict(GAUSSIAN_PRESET)

    def sample(self, state: GaussianState, num_samples: int, generators: Sequence[torch.Generator]) -> Tensor:
        return self.gaussian(state, num_samples, generators)
