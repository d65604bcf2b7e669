"""The exact soft value of the enumerable toy model's prefixes, for the value-guided controllers' tests."""

from __future__ import annotations

import math

from mpc_llm.dynamics import ToyLM, ToyReward

REWARD = ToyReward.example()


def soft_values(beta: float) -> dict[tuple[int, ...], float]:
    """``beta log E_p[exp(r / beta) | prefix]`` of `ToyLM.example()` under `REWARD`, for every prefix
    of every complete sequence (by enumeration)."""
    seqs, logp = ToyLM.example().sequences()
    num: dict[tuple[int, ...], float] = {}
    den: dict[tuple[int, ...], float] = {}
    for seq, lp in zip(seqs, logp.tolist(), strict=True):
        for k in range(1, len(seq) + 1):
            num[seq[:k]] = num.get(seq[:k], 0.0) + math.exp(lp + REWARD.fn(seq) / beta)
            den[seq[:k]] = den.get(seq[:k], 0.0) + math.exp(lp)
    return {k: beta * math.log(num[k] / den[k]) for k in num}
