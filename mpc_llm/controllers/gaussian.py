"""Gaussian controllers: the proposal ``V = U + sigma * eps`` over ``K`` knots, and its state.

`GaussianController` implements `Controller.init_state` (mean ``U`` zeros unless given, ``sigma``
absolute or a fraction of the dynamics' control scale) and offers `GaussianController.gaussian`
for `sample`. AISP, CEM, random shooting and best-of-N (``sigma = 0``) build on it; they differ
only in `update`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor

from mpc_llm.controllers.base import Controller
from mpc_llm.controllers.state import ControllerConfig, GaussianState
from mpc_llm.core import Dynamics

C = TypeVar("C", bound=ControllerConfig)

#: The project's settings shared by the Gaussian controllers when built from a config file or the
#: command line (AISP's were chosen by a sweep on the embedded default; README): sigma as a fraction
#: of the model's pre-logit RMS, one knot for the whole response, 8 samples x 4 iterations.
GAUSSIAN_PRESET: dict[str, Any] = {
    "sigma_relative": 0.05,
    "num_knots": 1,
    "num_samples": 8,
    "num_iterations": 4,
}


class GaussianController(Controller[C, GaussianState]):
    """A controller whose proposal is ``N(U, sigma^2 I)`` over the knots (`GaussianState`).

    A config without ``sigma`` (`ControllerConfig`) has ``sigma = 0``: no perturbation (best-of-N).
    """

    def init_state(self, dynamics: Dynamics, mean: Tensor | None = None) -> GaussianState:
        """The initial state: mean ``U`` (zeros unless given, ``(B, K, d)``) and ``sigma``.

        With ``sigma_relative`` the sigma of problem ``b`` is that fraction of
        ``dynamics.control_scale()[b]`` (a language model's pre-logit RMS on prompt ``b``), measured
        here, once, and kept in the state's ``control_scale``.
        """
        shape = (dynamics.batch_size, self.parameterization(dynamics).num_knots, dynamics.control_dim)
        if mean is None:
            mean = torch.zeros(shape, device=dynamics.device, dtype=dynamics.dtype)
        elif tuple(mean.shape) != shape:
            raise ValueError(f"initial mean must have shape (B, K, d) = {shape}, got {tuple(mean.shape)}")
        fraction = getattr(self.config, "sigma_relative", None)
        if fraction is None:
            sigma = getattr(self.config, "sigma", None)
            return GaussianState(mean=mean, sigma=torch.full_like(mean, 0.0 if sigma is None else sigma))
        scale = dynamics.control_scale().to(device=mean.device, dtype=mean.dtype)  # (B,), measured once
        sigma = (fraction * scale).view(-1, 1, 1).expand_as(mean).clone()
        return GaussianState(mean=mean, sigma=sigma, control_scale=scale)

    @staticmethod
    def gaussian(state: GaussianState, num_samples: int, generators: Sequence[torch.Generator]) -> Tensor:
        """``V = U + sigma * eps``, ``(B, num_samples, K, d)``, eps from each problem's generator."""
        _, K, d = state.mean.shape
        eps = torch.stack(
            [
                torch.randn(
                    (num_samples, K, d), generator=g, device=state.mean.device, dtype=state.mean.dtype
                )
                for g in generators
            ]
        )
        return state.mean.unsqueeze(1) + state.sigma.unsqueeze(1) * eps

    def resolved_settings(self, state: GaussianState) -> dict[str, Tensor]:
        """``sigma``: the absolute initial sigma per problem; ``control_scale``: what it is a fraction of."""
        settings = {"sigma": state.sigma[:, 0, 0].detach().to("cpu", torch.float64)}
        if state.control_scale is not None:
            settings["control_scale"] = state.control_scale.detach().to("cpu", torch.float64)
        return settings

    def final_mean(self, state: GaussianState) -> Tensor:
        """The ``(B, K, d)`` mean ``U``."""
        return state.mean
