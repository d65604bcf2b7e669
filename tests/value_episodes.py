"""Synthetic value-training data for the value-training tests: random states, distinct rewards."""

from __future__ import annotations

import torch

from mpc_llm.values import ValueData


def episodes(prompts: int = 5, responses: int = 2, steps: int = 4, d: int = 6, seed: int = 0) -> ValueData:
    """``prompts x responses`` responses of ``steps`` random states each, rewards distinct per response."""
    g = torch.Generator().manual_seed(seed)
    n = prompts * responses
    M = n * steps
    return ValueData(
        states=torch.randn(M, d, generator=g),
        reward=torch.arange(n, dtype=torch.float64).repeat_interleave(steps) / n,
        step=torch.arange(steps).repeat(n),
        last=(torch.arange(M) % steps) == steps - 1,
        prompt=torch.arange(prompts).repeat_interleave(responses * steps),
        response=torch.arange(n).repeat_interleave(steps),
    )
