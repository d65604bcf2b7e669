"""Gradient ascent on a learned value, as a state-feedback policy (RE-Control's test-time step)."""

from __future__ import annotations

import torch
from torch import Tensor

from mpc_llm.core import Policy
from mpc_llm.values.network import ValueMLP


class GradientAscentPolicy(Policy):
    """``v = x_K - z`` where ``x_0 = z`` and ``x_{k+1} = x_k + step_size * grad V(x_k)``.

    Args:
        value: the value network (moved to the state's device on first use; its parameters are
            frozen).
        num_steps: gradient steps per token, ``K >= 0`` (0: ``v = 0``, the base model exactly).
        step_size: ``> 0``, in pre-logit units per unit of value gradient.
        max_norm: a trust region: after every step the edit ``x_k - z`` is projected onto the ball
            of this radius (None: no bound, as RE-Control).

    Each step is one value evaluation (forward and backward) per row; `evaluations` and
    `gradient_steps` count them (``K`` per row per controlled token). The ascent runs in float32
    under ``torch.enable_grad()`` on a detached copy of ``z`` (the decode itself stays under
    ``no_grad``).
    """

    def __init__(
        self, value: ValueMLP, num_steps: int, step_size: float, max_norm: float | None = None
    ) -> None:
        super().__init__()
        if num_steps < 0:
            raise ValueError(f"num_steps must be >= 0, got {num_steps}")
        if not step_size > 0:
            raise ValueError(f"step_size must be > 0, got {step_size}")
        if max_norm is not None and not max_norm > 0:
            raise ValueError(f"max_norm must be > 0 (or None), got {max_norm}")
        self.value = value.requires_grad_(False).eval()
        self.num_steps, self.step_size, self.max_norm = num_steps, float(step_size), max_norm

    def __call__(self, z: Tensor, t: int) -> Tensor:
        """The edit ``(R, d)`` of the states ``z`` ``(R, d)`` (float32, or the value's dtype)."""
        R = z.shape[0]
        self.calls += R
        dtype = self.value.mean.dtype
        z0 = z.detach().to(dtype)
        if self.num_steps == 0:
            return torch.zeros_like(z0)
        if self.value.mean.device != z.device:
            self.value = self.value.to(z.device)
        x = z0.clone()
        with torch.enable_grad():
            for _ in range(self.num_steps):
                x.requires_grad_(True)
                (grad,) = torch.autograd.grad(self.value(x).sum(), x)
                x = (x + self.step_size * grad).detach()
                if self.max_norm is not None:
                    edit = x - z0
                    norm = edit.norm(dim=-1, keepdim=True)
                    x = z0 + edit * (self.max_norm / norm.clamp_min(1e-30)).clamp(max=1.0)
        self.evaluations += R * self.num_steps
        self.gradient_steps += R * self.num_steps
        return x - z0
