"""The language-model rollout: tokens, lengths, texts and optional per-token log-probs."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor

from mpc_llm.rollout import Rollout, _cat_padded

L = TypeVar("L", bound="LMRollout")

#: A prompt as the user gives it: a plain string, or chat messages ``[{"role", "content"}, ...]``.
Prompt = str | list[dict[str, Any]]


@dataclass(frozen=True)
class LMRollout(Rollout):
    """``N`` sampled responses for each of ``B`` prompts.

    Attributes:
        controls: ``(B, N, tau, d)`` pre-logit controls (``t >= tau`` got none).
        tokens: ``(B, N, T)`` generated token ids; positions ``>= lengths`` hold ``pad_token_id``.
        lengths: ``(B, N)`` generated tokens per response (an EOS token counts).
        texts: ``texts[b][n]``, the decoded response (special tokens and stop strings removed).
        prompts: the ``B`` prompts as given (shared by all samples of a problem).
        logprobs: ``(B, N, T)`` log-prob of each generated token under the controlled model
            (0 past the end), or None when not requested.
        base_logprobs: ``(B, N, T)`` the same under the unperturbed model, or None.
    """

    tokens: Tensor
    lengths: Tensor
    texts: list[list[str]]
    prompts: list[Prompt]
    logprobs: Tensor | None = None
    base_logprobs: Tensor | None = None
    pad_token_id: int = 0

    pad_values: ClassVar[dict[str, float]] = {}

    @property
    def tokens_generated(self) -> int:
        return int(self.lengths.sum())

    @classmethod
    def cat(cls: type[L], rollouts: Sequence[L]) -> L:
        """Concatenate along ``N``; shorter ``tokens`` are right-padded with ``pad_token_id``.

        Log-probs are padded with 0 (as past the end of a response).
        """
        out = super().cat(rollouts)
        pads = {r.pad_token_id for r in rollouts}
        if len(pads) > 1:
            raise ValueError(f"cannot concatenate rollouts with different pad_token_id values {sorted(pads)}")
        if len({r.tokens.shape[-1] for r in rollouts}) == 1 or out.pad_token_id == 0:
            return out
        tokens = _cat_padded([r.tokens for r in rollouts], float(out.pad_token_id))
        return dataclasses.replace(out, tokens=tokens)

    def kl_to_base(self) -> Tensor:
        """``(B, N)`` single-sample estimate of ``KL(controlled || base)``: ``sum_t log p_u - log p_0``.

        Raises:
            ValueError: if the rollout was made without log-probs.
        """
        if self.logprobs is None or self.base_logprobs is None:
            raise ValueError("this rollout has no log-probs; create the dynamics with return_logprobs=True")
        T = self.tokens.shape[-1]
        mask = torch.arange(T, device=self.lengths.device) < self.lengths.unsqueeze(-1)
        return ((self.logprobs - self.base_logprobs) * mask).sum(dim=-1)
