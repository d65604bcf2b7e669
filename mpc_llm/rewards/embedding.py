"""Similarity of the response to target texts in a sentence-transformers embedding space.

An optional extra: ``pip install 'mpc_llm[embed]'`` (sentence-transformers).

Example:
    >>> reward = EmbeddingSimilarityReward(["I love this!"], model="path/to/all-MiniLM-L6-v2")
    ... # doctest: +SKIP
    >>> reward.score("Review the film.", ["A delightful film.", "Dull and too long."])  # doctest: +SKIP
    tensor([0.52, 0.11])
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from mpc_llm.core import require
from mpc_llm.rewards.base import Prompt, Reward

__all__ = ["EmbeddingSimilarityReward"]

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


class EmbeddingSimilarityReward(Reward):
    """Cosine similarity between the response's embedding and those of target texts.

    Args:
        targets: one or more target texts.
        model: a sentence-transformers model id, a local folder, or a loaded ``SentenceTransformer``.
        aggregate: over targets, ``"max"`` (closest target) or ``"mean"``.
        batch_size: responses per encoding call.
        device: where to run the model (default: sentence-transformers' choice for a loaded id, or
            where the given model is).
        local_files_only: never try to download.

    Returns (from `score`): ``(M,)`` similarities in ``[-1, 1]``; the prompt is ignored.

    Raises:
        MissingDependencyError: if sentence-transformers is not installed.
        OSError: if the model cannot be loaded (e.g. an id with no reachable hub).
    """

    def __init__(
        self,
        targets: Sequence[str] | str,
        model: str | os.PathLike[str] | Any = DEFAULT_EMBEDDING_MODEL,
        *,
        aggregate: Literal["max", "mean"] = "max",
        batch_size: int | None = 32,
        device: str | torch.device | None = None,
        local_files_only: bool = False,
        name: str | None = None,
    ) -> None:
        st = require(
            "sentence_transformers",
            extra="embed",
            feature="by EmbeddingSimilarityReward",
            package="sentence-transformers",
        )
        targets = [targets] if isinstance(targets, str) else list(targets)
        if not targets or not all(isinstance(t, str) for t in targets):
            raise ValueError(f"targets must be a non-empty list of strings, got {targets!r}")
        if aggregate not in ("max", "mean"):
            raise ValueError(f"aggregate must be 'max' or 'mean', got {aggregate!r}")
        if isinstance(model, (str, os.PathLike)):
            source = os.fspath(model)
            dev = None if device is None else str(device)
            try:
                model = st.SentenceTransformer(source, device=dev, local_files_only=local_files_only)
            except OSError as exc:
                raise OSError(
                    f"could not load the embedding model {source!r}: it is not a local folder and it could "
                    "not be downloaded (no model hub may be reachable from this machine). Download it where "
                    "there is network access and pass the local folder."
                ) from exc
        elif device is not None:
            model = model.to(device)
        super().__init__(batch_size=batch_size, device=model.device, name=name)
        self.model = model
        self.targets = targets
        self.aggregate = aggregate
        self.target_embeddings = self._embed(targets)

    def _embed(self, texts: list[str]) -> Tensor:
        """``(len(texts), D)`` unit-norm float32 embeddings on the CPU."""
        emb = self.model.encode(
            texts,
            batch_size=self.batch_size or max(len(texts), 1),
            convert_to_tensor=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return emb.float().cpu()

    def score_batch(self, prompts: list[Prompt], responses: list[str]) -> Tensor:
        sims = self._embed(responses) @ self.target_embeddings.T
        return sims.amax(dim=1) if self.aggregate == "max" else sims.mean(dim=1)

    def __repr__(self) -> str:
        return f"EmbeddingSimilarityReward({len(self.targets)} targets, {self.aggregate})"
