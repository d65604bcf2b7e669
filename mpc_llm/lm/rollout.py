"""The language-model rollout: tokens, lengths, texts and optional per-token log-probs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from mpc_llm.core import Rollout
from mpc_llm.lm.prompts import Prompt


@dataclass(frozen=True)
class LMRollout(Rollout):
    """``N`` sampled responses for each of ``B`` prompts.

    Attributes:
        controls: ``(B, N, tau, d)`` pre-logit controls (tokens ``t >= tau`` got none).
        tokens: ``(B, N, T)`` generated token ids; positions ``>= lengths`` hold ``pad_token_id``.
        lengths: ``(B, N)`` generated tokens per response (an EOS token counts).
        texts: ``texts[b][n]``, the decoded response (special tokens and stop strings removed).
        prompts: the ``B`` prompts as given (shared by all samples of a problem).
        logprobs: ``(B, N, T)`` log-prob of each generated token under the controlled model
            (0 past the end), or None when not requested.
        base_logprobs: ``(B, N, T)`` the same under the unperturbed model, or None.
        pad_token_id: the id past the end of each response.
        finished: ``(B, N)`` responses that ended (end-of-sequence or a stop string), or None.
        prefix_lengths: ``(B, N)`` leading tokens committed before this rollout (receding-horizon
            control: ``tokens`` hold the whole response, its committed part first), or None (none).
        last_states: ``(B, N, d)`` float32 pre-logit state after each response's last token (the
            head's input, before any control, at the position that reads that token: what a value
            of the whole text so far reads), or None (kept only with ``LMConfig(keep_states=True)``).
    """

    tokens: Tensor
    lengths: Tensor
    texts: list[list[str]]
    prompts: list[Prompt] = field(metadata={"shared": True})  # chat prompts may look [B][N]-shaped
    logprobs: Tensor | None = None
    base_logprobs: Tensor | None = None
    pad_token_id: int = 0
    finished: Tensor | None = None
    prefix_lengths: Tensor | None = None
    last_states: Tensor | None = None

    def token_counts(self) -> Tensor:
        """``(B, N)`` tokens generated for each response by this rollout (an EOS token counts; the
        committed prefix of a receding-horizon plan does not)."""
        counts = self.lengths.detach().cpu()
        return counts if self.prefix_lengths is None else counts - self.prefix_lengths.detach().cpu()

    def describe(self, b: int, n: int) -> dict[str, Any]:
        """The response text, its length in tokens and, with log-probs, the steering log-ratio ``kl``."""
        fields: dict[str, Any] = {"response": self.texts[b][n], "length": int(self.lengths[b, n])}
        if self.logprobs is not None and self.base_logprobs is not None:
            fields["kl"] = float(self.kl_to_base()[b, n])
        return fields

    def pad_value(self, name: str) -> float:
        """``tokens`` pad with ``pad_token_id``; log-probs with 0 (as past the end of a response)."""
        return float(self.pad_token_id) if name == "tokens" else 0.0

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
