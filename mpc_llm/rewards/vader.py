"""VADER sentiment of the response: a lexicon reward that works offline (the embedded default).

Example:
    >>> from mpc_llm.rewards import VaderReward
    >>> scores = VaderReward().score("How was the film?", ["It was wonderful!", "It was awful."])
    >>> bool(scores[0] > 0 > scores[1])
    True
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from mpc_llm.core import require
from mpc_llm.rewards.base import Prompt, Reward

__all__ = ["VaderReward"]

_FIELDS = ("compound", "pos", "neg", "neu")


class VaderReward(Reward):
    """VADER's ``polarity_scores(response)[field]``; the prompt is ignored.

    Args:
        field: ``"compound"`` (in ``[-1, 1]``, the default), ``"pos"``, ``"neg"`` or ``"neu"``.
        batch_size: responses per chunk (VADER scores them one by one on the CPU).

    Raises:
        MissingDependencyError: if ``vaderSentiment`` is not installed (``pip install 'mpc_llm[vader]'``).
    """

    def __init__(
        self,
        field: Literal["compound", "pos", "neg", "neu"] = "compound",
        *,
        batch_size: int | None = 256,
        name: str | None = None,
    ) -> None:
        if field not in _FIELDS:
            raise ValueError(f"field must be one of {_FIELDS}, got {field!r}")
        module = require(
            "vaderSentiment.vaderSentiment", extra="vader", feature="by VaderReward", package="vaderSentiment"
        )
        super().__init__(batch_size=batch_size, name=name)
        self.field = field
        self.analyzer = module.SentimentIntensityAnalyzer()

    def score_batch(self, prompts: list[Prompt], responses: list[str]) -> Tensor:
        return torch.tensor(
            [self.analyzer.polarity_scores(r)[self.field] for r in responses], dtype=torch.float64
        )

    def __repr__(self) -> str:
        return "VaderReward()" if self.field == "compound" else f"VaderReward({self.field!r})"
