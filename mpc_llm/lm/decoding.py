"""One decode's running state: the tokens, lengths, log-probs and end flags of its ``R`` rows.

`DecodeEngine.decode` runs the model; this module keeps the books of each step: it picks the next
tokens from the float32 logits (greedy or sampled, problem ``b``'s draws from its own generator),
writes them, records their log-probs under the controlled and the unperturbed model, and marks rows
done when they end (end-of-sequence, a stop string) or reach their own step limit (per-row limits:
rows whose responses already hold different numbers of committed tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mpc_llm.lm.config import LMConfig
from mpc_llm.lm.sampling import Scratch, StopStrings, choose_tokens, token_logprobs


@dataclass(frozen=True)
class Decoded:
    """What `DecodeEngine.decode` produced, rows ``b * N + n``.

    Attributes:
        tokens: ``(B * N, T)`` token ids (``pad`` past each row's end), ``T`` the steps run.
        lengths: ``(B * N,)`` tokens generated per row (an EOS token counts).
        logprobs: ``(B * N, T)`` log-probs under the controlled model, or None.
        base_logprobs: ``(B * N, T)`` under the unperturbed model, or None.
        finished: ``(B * N,)`` rows that ended (end-of-sequence or a stop string) before their step limit.
        controls: ``(B * N, T, d)`` controls a feedback ``policy`` applied (else None), 0 past the end.
        last_states: ``(B * N, d)`` float32 head input after each row's last token, before any
            control (``keep_states``; else None).
    """

    tokens: Tensor
    lengths: Tensor
    logprobs: Tensor | None
    base_logprobs: Tensor | None
    finished: Tensor
    controls: Tensor | None = None
    last_states: Tensor | None = None


class DecodeState:
    """The books of one decode of ``R`` rows over at most ``T`` steps.

    Args:
        config: decoding options (greedy, temperature, top-k / top-p, log-probs, EOS).
        rows: ``R``.
        steps: ``T``, the most steps the decode runs.
        limits: ``(R,)`` the most tokens each row may generate (``<= T``; None: ``T`` for all).
        eos: the end-of-sequence ids (empty: none ends a row).
        pad: the id written past each row's end.
        stops: stop strings; ``before`` their `StopStrings.tails` of each row's committed tokens.
        device: where the buffers live.
    """

    def __init__(
        self,
        config: LMConfig,
        rows: int,
        steps: int,
        limits: Tensor | None,
        eos: Sequence[int],
        pad: int,
        stops: StopStrings,
        before: tuple[list[list[int]], list[bool]] | None,
        device: torch.device,
    ) -> None:
        self.config, self.pad, self.stops, self.before = config, pad, stops, before
        self.tokens = torch.full((rows, steps), pad, dtype=torch.long, device=device)
        self.lengths = torch.zeros(rows, dtype=torch.long, device=device)
        self.limits = None if limits is None else limits.to(device=device, dtype=torch.long)
        self.ended = torch.zeros(rows, dtype=torch.bool, device=device)  # EOS or a stop string
        self.done = self.ended.clone() if self.limits is None else self.limits <= 0
        logp = config.return_logprobs
        self.logp = torch.zeros((rows, steps), dtype=torch.float32, device=device) if logp else None
        self.base_logp = torch.zeros_like(self.logp) if self.logp is not None else None
        ids = list(eos) if config.stop_at_eos else []
        self.eos = torch.tensor(ids, dtype=torch.long, device=device) if ids else None
        self.scratch = Scratch()  # the step's (R, V) work tensors, kept from step to step

    def float_logits(self, logits: Tensor) -> Tensor:
        """``(rows, V)`` logits in float32 (at least), in a tensor kept from step to step."""
        wide = logits.new_empty((), dtype=torch.promote_types(logits.dtype, torch.float32))
        return self.scratch.get("logits", logits.shape, wide).copy_(logits)

    def step(
        self, t: int, logits: Tensor, base_logits: Tensor | None, generators: Sequence[torch.Generator]
    ) -> Tensor:
        """Choose, write and score the tokens of step ``t`` from ``(R, V)`` float32 ``logits`` (and the
        unperturbed model's, None where they are the same); returns the ``(R,)`` tokens to feed next."""
        cfg, done = self.config, self.done
        chosen = choose_tokens(
            logits,
            generators,
            greedy=cfg.greedy,
            temperature=cfg.temperature,
            top_k=cfg.top_k,
            top_p=cfg.top_p,
            scratch=self.scratch,
        )
        chosen = chosen.masked_fill(done, self.pad)
        self.tokens[:, t] = chosen
        self.lengths += ~done
        if self.logp is not None and self.base_logp is not None:
            lp = token_logprobs(logits, chosen, cfg.temperature).masked_fill(done, 0.0)
            self.logp[:, t] = lp
            if base_logits is None:
                self.base_logp[:, t] = lp
            else:
                self.base_logp[:, t] = token_logprobs(base_logits, chosen, cfg.temperature).masked_fill(
                    done, 0.0
                )
        ended = torch.zeros_like(done)
        if self.eos is not None:
            ended |= torch.isin(chosen, self.eos) & ~done
        if self.stops:
            ended |= self.stops.check(self.tokens, t, done, self.before)
        self.ended |= ended
        self.done = done | ended
        if self.limits is not None:
            self.done |= self.lengths >= self.limits
        return chosen

    def result(self, ran: int, controls: Tensor | None = None, states: Tensor | None = None) -> Decoded:
        """The first ``ran`` steps, as `Decoded` (``states``: each row's last state, `keep_states`)."""
        return Decoded(
            tokens=self.tokens[:, :ran],
            lengths=self.lengths,
            logprobs=None if self.logp is None else self.logp[:, :ran],
            base_logprobs=None if self.base_logp is None else self.base_logp[:, :ran],
            finished=self.ended,
            controls=controls,
            last_states=states,
        )
