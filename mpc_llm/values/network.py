"""The value function: an MLP over the pre-logit state ``z`` in R^d predicting the final reward."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

Activation = Literal["relu", "silu", "tanh"]
_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh}


class ValueMLP(nn.Module):
    """``V(z) = MLP((z - mean) / scale)``: ``depth`` hidden layers of ``width`` units, one output.

    The input standardisation (``mean``, ``scale``, buffers saved with the weights) is set from the
    training states (`standardize`); gradients with respect to ``z`` flow through it, so gradient
    ascent on ``V`` works in the model's own pre-logit units.

    Args:
        d: the state size (the LM head's input size).
        width: units per hidden layer.
        depth: hidden layers (RE-Control's network: 2 hidden layers of 4096, ReLU).
        activation: ``relu``, ``silu`` or ``tanh``.

    Shapes: ``forward(z (..., d)) -> (...,)``.

    Example:
        >>> v = ValueMLP(8, width=16, depth=2)
        >>> tuple(v(torch.zeros(3, 5, 8)).shape)
        (3, 5)
    """

    def __init__(self, d: int, width: int = 256, depth: int = 2, activation: Activation = "relu") -> None:
        super().__init__()
        if d < 1 or width < 1 or depth < 0:
            raise ValueError(f"need d >= 1, width >= 1, depth >= 0; got d={d}, width={width}, depth={depth}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        self.d, self.width, self.depth, self.activation = d, width, depth, activation
        layers: list[nn.Module] = []
        size = d
        for _ in range(depth):
            layers += [nn.Linear(size, width), _ACTIVATIONS[activation]()]
            size = width
        layers.append(nn.Linear(size, 1))
        self.net = nn.Sequential(*layers)
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("scale", torch.ones(d))

    def forward(self, z: Tensor) -> Tensor:
        """``(..., d)`` states -> ``(...,)`` predicted final rewards."""
        if z.shape[-1] != self.d:
            raise ValueError(f"this value function takes states of size d={self.d}, got {z.shape[-1]}")
        x = (z.to(self.mean.dtype) - self.mean) / self.scale
        return self.net(x).squeeze(-1)

    @torch.no_grad()
    def standardize(self, states: Tensor) -> None:
        """Set the input standardisation from ``(M, d)`` training states (per-coordinate mean and
        standard deviation, floored at 1e-6 of the largest)."""
        mean = states.to(self.mean.dtype).mean(dim=0)
        std = states.to(self.mean.dtype).std(dim=0, correction=0)
        self.mean.copy_(mean)
        self.scale.copy_(std.clamp_min(1e-6 * float(std.max().clamp_min(1e-12))))

    def architecture(self) -> dict[str, object]:
        """What rebuilds this network: ``d``, ``width``, ``depth``, ``activation``."""
        return {"d": self.d, "width": self.width, "depth": self.depth, "activation": self.activation}
