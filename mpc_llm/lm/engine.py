"""The decode engine: prefill prompts once, then decode ``N`` controlled samples per prompt.

The control ``v_t`` is added to the pre-logit ``z_t`` (the input of the LM head, after the final
norm) for the first ``tau`` response tokens: ``logits_t = head(z_t + v_t)``.

How the control gets in: a forward pre-hook on the model's head (`ModelAdapter.head`) adds ``v_t``
to the head's input while the model runs its own forward, so the head is the model's own module and
whatever the model does after it stays in place (`mpc_llm.lm.adapters`). When log-probs under the
unperturbed model are requested, the hook stacks ``[z + v; z]`` along the batch so that one head
call gives both; for ``t >= tau`` there is no control and the base log-probs are the controlled ones.

How a decode runs:

1. `prefill` (once per prompt set): the ``B`` prompts' token ids are left-padded and all but their
   last token are run through the model into a key/value cache.
2. `extend` (closed loop): committed response tokens run through the model on a copy of the cache,
   one count per row if need be: a row that commits fewer tokens than another gets masked slots
   (attention mask 0) where the other has tokens, so rows of different committed lengths share
   one batch, and each row's position ids stay its own.
3. `decode`: the prefix cache is expanded to ``B * N`` rows (row ``b * N + n``), sharing nothing
   mutable with the kept one. Step 0 feeds each prompt's last token, step ``t`` the token chosen at
   step ``t - 1``; each step adds ``controls[:, :, t]`` (``t < tau``), and `DecodeState` picks the
   tokens (greedy or sampled, problem ``b``'s draws from ``generators[b]`` only) and masks the rows
   that are done (they get ``pad``, their length stops growing): ended, or at their own step limit.
   The loop ends when every row is done or after ``steps`` steps.

Compiled decoding (``LMConfig(compile=True)``): the cache copy is static (fixed shapes, see
`mpc_llm.lm.cache`), every step calls the model through one `torch.compile` wrapper kept per model,
and the head hook stays registered between decodes (inactive outside them) so that no decode
changes the traced module. Prefill and `extend` stay eager.

Batching: with prompts of equal length, a problem decodes bit for bit as it would alone in float32.
With left padding (or masked slots from per-row commits), batch shapes change the floating-point
reductions slightly (float32 logits differ by about 1e-5), so a sampled token can, rarely, differ
from the one drawn alone; in bfloat16 the differences are larger (about 1e-2) and a problem's
tokens depend on the batch it is decoded in more often, though never on the order of the runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mpc_llm.lm.adapters import ModelAdapter
from mpc_llm.lm.attention import grouped_attention, wants_grouped_attention
from mpc_llm.lm.cache import expand_cache, static_copy
from mpc_llm.lm.config import LMConfig
from mpc_llm.lm.control import PreLogitControl, compiled_step, feedback_record, recorded
from mpc_llm.lm.decoding import Decoded, DecodeState
from mpc_llm.lm.prefix import left_pad
from mpc_llm.lm.sampling import StopStrings
from mpc_llm.lm.special_tokens import eos_token_ids, pad_token_id

__all__ = ["STATIC_BUCKET", "DecodeEngine", "Decoded", "Prefix"]

#: static caches (and the attention mask) hold the prompt and response rounded up to a multiple of
#: this many positions, so that prompts of nearby lengths share one compiled step
STATIC_BUCKET = 64


@dataclass(frozen=True)
class Prefix:
    """Prompts, prefilled once.

    Attributes:
        cache: key/value cache of every prompt but its last token, ``B`` rows (None if all prompts
            are one token long).
        mask: ``(B, P)`` attention mask of the left-padded prefix (0 on padding).
        last_tokens: ``(B,)`` each prompt's last token, fed at step 0.
        positions: ``(B,)`` that token's position id.
        lengths: tokens in each row (prompt and committed ones; masked slots not counted).
    """

    cache: Any
    mask: Tensor
    last_tokens: Tensor
    positions: Tensor
    lengths: tuple[int, ...]


class DecodeEngine:
    """Batched, KV-cached decoding of a causal LM under pre-logit controls.

    Args:
        model: a loaded `transformers` causal LM (in eval mode).
        tokenizer: its tokenizer (for special tokens, stop strings and decoding).
        config: decoding options.

    A decode briefly registers a forward pre-hook on the model's head, so two decodes must not run
    on the same model object at the same time (threads).
    """

    def __init__(self, model: Any, tokenizer: Any, config: LMConfig) -> None:
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.adapter = ModelAdapter(model)
        self.eos_token_ids = eos_token_ids(model, tokenizer, config)
        self.pad_token_id = pad_token_id(model, tokenizer, self.eos_token_ids)
        self.stops = StopStrings(tokenizer, config.stop_strings)
        out = getattr(model.get_output_embeddings(), "out_features", None)
        #: the vocabulary the head scores (the most candidates a step can have)
        self.vocab_size = int(out) if out else len(tokenizer)
        self._hook_checked = False
        self._static: Any = None  # the last decode's static cache, refilled by the next one

    def check_context(self, lengths: Sequence[int], new_tokens: int | None = None) -> None:
        """Refuse prompts leaving no room for ``new_tokens`` (default ``max_new_tokens``) in the context."""
        ctx = self.adapter.context_length
        if ctx is None:
            return
        new_tokens = self.config.max_new_tokens if new_tokens is None else new_tokens
        for b, n in enumerate(lengths):
            if n + new_tokens > ctx:
                what = "longer than" if n >= ctx else "too long for"
                raise ValueError(
                    f"prompt {b} has {n} tokens, {what} the model's context of {ctx} tokens with "
                    f"max_new_tokens={self.config.max_new_tokens}; shorten the prompt or lower "
                    f"max_new_tokens (prompt + response must fit in {ctx})"
                )

    @torch.no_grad()
    def prefill(self, ids: Sequence[Sequence[int]]) -> Prefix:
        """Left-pad ``B`` token-id lists and run all but their last token into a cache."""
        lengths = tuple(len(x) for x in ids)
        self.check_context(lengths)
        device = self.adapter.device
        padded = left_pad([seq[:-1] for seq in ids], self.pad_token_id)
        prefix, mask, positions = (t.to(device) for t in padded)
        cache = None
        if prefix.shape[1] > 0:  # pad slots at position 1, as `generate` places them
            positions = positions.masked_fill(mask == 0, 1)
            cache = self.adapter.output_cache(self.adapter.forward(prefix, mask, positions, None))
        return Prefix(
            cache=cache,
            mask=mask,
            last_tokens=torch.tensor([seq[-1] for seq in ids], device=device),
            positions=torch.tensor([n - 1 for n in lengths], device=device),
            lengths=lengths,
        )

    @torch.no_grad()
    def extend(self, prefix: Prefix, tokens: Tensor, counts: Tensor | None = None) -> Prefix:
        """``prefix`` followed by ``tokens`` ``(B, c)`` (e.g. committed response tokens): all ``c`` of
        them, or the first ``counts[b]`` of row ``b`` (``(B,)``, ``0 <= counts[b] <= c``).

        Only the new tokens run through the model, on a copy of the prefix's cache (which is left
        untouched): the prompt is never recomputed. A row with fewer than ``c`` tokens gets masked
        slots after its own, so its positions and attention are those of the row alone.
        """
        B, c = tokens.shape
        device = self.adapter.device
        counts = torch.full((B,), c, dtype=torch.long) if counts is None else counts.to(torch.long).cpu()
        if c == 0 or int(counts.max()) == 0:
            return prefix
        c = int(counts.max())
        tokens, counts = tokens[:, :c].to(device), counts.to(device)
        valid = torch.arange(c, device=device).unsqueeze(0) < counts.unsqueeze(1)  # (B, c)
        cache = expand_cache(prefix.cache, 1, c)
        ids = torch.cat([prefix.last_tokens.unsqueeze(1), tokens[:, :-1]], dim=1)
        mask = torch.cat([prefix.mask, valid.to(prefix.mask.dtype)], dim=1)
        positions = (prefix.positions.unsqueeze(1) + torch.arange(c, device=device)).masked_fill(~valid, 1)
        out = self.adapter.forward(ids, mask, positions, cache)
        last = tokens.gather(1, (counts - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
        return Prefix(
            cache=self.adapter.output_cache(out) if cache is None else cache,
            mask=mask,
            last_tokens=torch.where(counts > 0, last, prefix.last_tokens),
            positions=prefix.positions + counts,
            lengths=tuple(n + k for n, k in zip(prefix.lengths, counts.tolist(), strict=True)),
        )

    @torch.no_grad()
    def next_logits(self, prefix: Prefix) -> Tensor:
        """``(B, V)`` float logits of the token after ``prefix`` (its cache is left untouched)."""
        B = len(prefix.lengths)
        cache = expand_cache(prefix.cache, 1, 1)
        mask = torch.cat(
            [prefix.mask, torch.ones((B, 1), dtype=prefix.mask.dtype, device=prefix.mask.device)], 1
        )
        out = self.adapter.forward(
            prefix.last_tokens.unsqueeze(1), mask, prefix.positions.unsqueeze(1), cache
        )
        return out.logits[:, -1].float()

    def select(self, prefix: Prefix, index: Sequence[int]) -> Prefix:
        """The rows ``index`` of ``prefix`` (a copy; ``prefix`` is left untouched)."""
        idx = torch.as_tensor(list(index), dtype=torch.long, device=prefix.mask.device)
        cache = None
        if prefix.cache is not None:
            cache = expand_cache(prefix.cache, 1, 0)
            cache.batch_select_indices(idx)
        return Prefix(
            cache=cache,
            mask=prefix.mask[idx],
            last_tokens=prefix.last_tokens[idx],
            positions=prefix.positions[idx],
            lengths=tuple(prefix.lengths[i] for i in idx.tolist()),
        )

    def check_generators(self, generators: Sequence[torch.Generator], batch_size: int) -> None:
        """One generator per problem, on the model's device (unless decoding is greedy)."""
        if len(generators) != batch_size:
            raise ValueError(f"expected {batch_size} generators (one per prompt), got {len(generators)}")
        if self.config.greedy:
            return
        device = self.adapter.device
        for g in generators:
            if g.device.type != device.type:
                raise ValueError(
                    f"generators must live on the model's device ({device}), got one on {g.device}; "
                    f"create them with make_generators(seed, B, dynamics.device)"
                )

    @torch.no_grad()
    def decode(
        self,
        prefix: Prefix,
        controls: Tensor | None,
        N: int,
        generators: Sequence[torch.Generator],
        steps: int | None = None,
        history: Sequence[Sequence[int]] | None = None,
        policy: Callable[[Tensor, int], Tensor] | None = None,
        limits: Tensor | None = None,
    ) -> Decoded:
        """Decode ``N`` responses per prompt of ``prefix``.

        Args:
            prefix: from `prefill` (or `extend`), ``B`` prompts.
            controls: ``(B * N, tau, d)`` pre-logit controls, float32 or wider (None: no control),
                added to the head's input in float32 and rounded once to the model's dtype.
            N: samples per prompt.
            generators: ``B`` generators; problem ``b`` samples only from ``generators[b]``.
            steps: the most tokens to generate (default ``max_new_tokens``).
            history: each problem's response tokens already in ``prefix`` (committed ones), so that
                a stop string begun in them and ended in the new tokens ends the response.
            policy: state feedback (`mpc_llm.core.Policy`): the head's input at ``t < tau`` is
                ``z + u + policy(z + u, t)``, recorded in ``Decoded.controls`` (eager decoding only).
            limits: ``(B,)`` the most tokens problem ``b``'s rows generate (``<= steps``; default
                ``steps`` for all), for problems whose responses hold different committed lengths.
        """
        cfg, adapter = self.config, self.adapter
        B, device = len(prefix.lengths), adapter.device
        T = cfg.max_new_tokens if steps is None else steps
        self.check_generators(generators, B)
        extra = 1 if cfg.keep_states else 0  # one more forward reads each last token's state
        self.check_context(prefix.lengths, T + extra)
        R, P = B * N, prefix.mask.shape[1]
        tau = 0 if controls is None else controls.shape[1]
        static = cfg.uses_static_cache
        width = -(-(P + T + extra) // STATIC_BUCKET) * STATIC_BUCKET if static else P + T + extra
        if static:
            cache = self._static = static_copy(prefix.cache, N, R, width, self.model.config, self._static)
        else:
            cache = expand_cache(prefix.cache, N, T + extra)
        mask = torch.zeros((R, width), dtype=torch.long, device=device)
        mask[:, :P] = prefix.mask.repeat_interleave(N, dim=0)
        mask[:, P : P + T + extra] = 1
        input_ids = prefix.last_tokens.repeat_interleave(N).unsqueeze(1)  # (R, 1)
        positions = prefix.positions.repeat_interleave(N).unsqueeze(1)  # (R, 1)
        before = None
        if self.stops and history is not None:
            before = self.stops.tails([row for row in history for _ in range(N)])
        rows = DecodeState(
            cfg, R, T, None if limits is None else limits.to(device).repeat_interleave(N),
            self.eos_token_ids, self.pad_token_id, self.stops, before, device,
        )  # fmt: skip
        sync_every = cfg.sync_every or (1 if device.type == "cpu" else 8)
        record = feedback_record(policy, controls, cfg.compile, T)
        module, hook, release = self._hook()
        hook.keep_states, hook.states = cfg.keep_states, None
        # keep_states: the forward of step t reads the token chosen at t - 1, so it keeps the state of
        # the rows that chose one then (all rows at t = 0: the prompt's state)
        chose = torch.ones(R, dtype=torch.bool, device=device)
        ran = T
        try:
            with grouped_attention(wants_grouped_attention(device, adapter.dtype)):
                for t in range(T):
                    controlled = controls is not None and t < tau
                    hook.control = controls[:, t] if controlled else None  # type: ignore[index]
                    hook.policy, hook.step, hook.record = (policy if controlled else None), t, record
                    hook.with_base = controlled and cfg.return_logprobs
                    hook.alive = chose if cfg.keep_states else None
                    step_mask = mask if static else mask[:, : P + t + 1]
                    out = adapter.forward(input_ids, step_mask, positions, cache, module=module)
                    self._check_hook(hook)
                    if cache is None:
                        cache = adapter.output_cache(out)
                    logits = rows.float_logits(out.logits[:, -1])
                    base = None
                    if hook.with_base:
                        logits, base = logits[:R], logits[R:]
                    chose = ~rows.done
                    input_ids = rows.step(t, logits, base, generators).unsqueeze(1)
                    if (t + 1) % sync_every == 0 and bool(rows.done.all()):
                        ran = t + 1
                        break
                    positions = positions + 1
                if cfg.keep_states:  # the state after the last step's tokens
                    hook.control, hook.policy, hook.with_base, hook.alive = None, None, False, chose
                    last = prefix.positions.repeat_interleave(N).unsqueeze(1) + ran
                    adapter.forward(input_ids, mask if static else mask[:, : P + ran + 1], last, cache,
                                    module=module)  # fmt: skip
            states = hook.states
        finally:
            hook.control, hook.with_base, hook.policy, hook.record = None, False, None, None
            hook.keep_states, hook.states, hook.alive = False, None, None
            release()
        return rows.result(ran, recorded(record, ran, rows.lengths), states)

    def texts(self, tokens: Tensor, lengths: Tensor) -> list[str]:
        """Decode ``(R, T)`` tokens up to each row's length (special tokens and stop strings removed)."""
        rows = [row[:n] for row, n in zip(tokens.tolist(), lengths.tolist(), strict=True)]
        texts = self.tokenizer.batch_decode(rows, skip_special_tokens=True)
        return [self.stops.truncate(text) for text in texts] if self.stops else texts

    def _hook(self) -> tuple[Any, PreLogitControl, Callable[[], None]]:
        """What one decode calls (the compiled wrapper, or None: the model), its head hook, and what to
        call after the decode (the compiled model's hook stays registered)."""
        if self.config.compile:
            module, hook = compiled_step(self.adapter, self.config.compile_backend, self.config.compile_mode)
            hook.fired = False
            return module, hook, lambda: None
        hook = PreLogitControl()
        return None, hook, self.adapter.head.register_forward_pre_hook(hook).remove

    def _check_hook(self, hook: PreLogitControl) -> None:
        if self._hook_checked:
            return
        if not hook.fired:
            raise RuntimeError(
                f"{type(self.model).__name__} computes its logits without calling its output embedding "
                f"module ({type(self.adapter.head).__name__}), so the pre-logit control cannot be applied; "
                "this architecture is not supported"
            )
        self._hook_checked = True
