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
2. `decode`: the prefix cache is expanded to ``B * N`` rows (row ``b * N + n``), sharing nothing
   mutable with the kept one. Step 0 feeds each prompt's last token, step ``t`` the token chosen at
   step ``t - 1``; each step adds ``controls[:, :, t]`` (``t < tau``), picks tokens (greedy or
   sampled, problem ``b``'s draws from ``generators[b]`` only), and masks finished rows (they get
   ``pad``, their length stops growing). The loop ends when every row has finished or after
   ``max_new_tokens`` steps.

Compiled decoding (``LMConfig(compile=True)``): the cache copy is static (fixed shapes, see
`mpc_llm.lm.cache`), every step calls the model through one `torch.compile` wrapper kept per model,
and the head hook stays registered between decodes (inactive outside them) so that no decode
changes the traced module. Prefill and `extend` stay eager.

Batching: with prompts of equal length, a problem decodes bit for bit as it would alone. With
left padding, batch shapes change the floating-point reductions slightly (logits differ by about
1e-5), so a sampled token can, rarely, differ from the one drawn alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mpc_llm.lm.adapters import ModelAdapter
from mpc_llm.lm.cache import expand_cache
from mpc_llm.lm.config import LMConfig
from mpc_llm.lm.control import PreLogitControl, compiled_step, feedback_record, recorded
from mpc_llm.lm.prefix import left_pad
from mpc_llm.lm.sampling import StopStrings, choose_tokens, token_logprobs

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
        lengths: prompt lengths in tokens.
    """

    cache: Any
    mask: Tensor
    last_tokens: Tensor
    positions: Tensor
    lengths: tuple[int, ...]


@dataclass(frozen=True)
class Decoded:
    """What `DecodeEngine.decode` produced, rows ``b * N + n``.

    Attributes:
        tokens: ``(B * N, T)`` token ids (``pad`` past each row's end), ``T`` the steps run.
        lengths: ``(B * N,)`` tokens generated per row (an EOS token counts).
        logprobs: ``(B * N, T)`` log-probs under the controlled model, or None.
        base_logprobs: ``(B * N, T)`` under the unperturbed model, or None.
        finished: ``(B * N,)`` rows that ended (end-of-sequence or a stop string) before the step limit.
        controls: ``(B * N, T, d)`` controls a feedback ``policy`` applied (else None), 0 past the end.
    """

    tokens: Tensor
    lengths: Tensor
    logprobs: Tensor | None
    base_logprobs: Tensor | None
    finished: Tensor
    controls: Tensor | None = None


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
        self.eos_token_ids = self._resolve_eos_ids()
        self.pad_token_id = self._resolve_pad_id()
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
    def extend(self, prefix: Prefix, tokens: Tensor) -> Prefix:
        """``prefix`` followed by ``tokens`` ``(B, c)`` (e.g. committed response tokens).

        Only the new tokens run through the model, on a copy of the prefix's cache (which is left
        untouched): the prompt is never recomputed.
        """
        B, c = tokens.shape
        if c == 0:
            return prefix
        device = self.adapter.device
        tokens = tokens.to(device)
        cache = expand_cache(prefix.cache, 1, c)
        ids = torch.cat([prefix.last_tokens.unsqueeze(1), tokens[:, :-1]], dim=1)
        mask = torch.cat([prefix.mask, torch.ones((B, c), dtype=prefix.mask.dtype, device=device)], dim=1)
        positions = prefix.positions.unsqueeze(1) + torch.arange(c, device=device)
        out = self.adapter.forward(ids, mask, positions, cache)
        return Prefix(
            cache=self.adapter.output_cache(out) if cache is None else cache,
            mask=mask,
            last_tokens=tokens[:, -1],
            positions=prefix.positions + c,
            lengths=tuple(n + c for n in prefix.lengths),
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
        history: Tensor | None = None,
        policy: Callable[[Tensor, int], Tensor] | None = None,
    ) -> Decoded:
        """Decode ``N`` responses per prompt of ``prefix``.

        Args:
            prefix: from `prefill` (or `extend`), ``B`` prompts.
            controls: ``(B * N, tau, d)`` pre-logit controls in the model's dtype (None: no control).
            N: samples per prompt.
            generators: ``B`` generators; problem ``b`` samples only from ``generators[b]``.
            steps: the most tokens to generate (default ``max_new_tokens``).
            history: ``(B, m)`` response tokens already in ``prefix`` (committed ones), so that a stop
                string begun in them and ended in the new tokens ends the response.
            policy: state feedback (`mpc_llm.core.Policy`): the head's input at ``t < tau`` is
                ``z + u + policy(z + u, t)``, recorded in ``Decoded.controls`` (eager decoding only).
        """
        cfg, adapter = self.config, self.adapter
        B, device = len(prefix.lengths), adapter.device
        T = cfg.max_new_tokens if steps is None else steps
        self.check_generators(generators, B)
        self.check_context(prefix.lengths, T)
        R, P = B * N, prefix.mask.shape[1]
        tau = 0 if controls is None else controls.shape[1]
        static = cfg.uses_static_cache
        width = -(-(P + T) // STATIC_BUCKET) * STATIC_BUCKET if static else P + T
        cache = self._static_cache(prefix.cache, N, R, width) if static else expand_cache(prefix.cache, N, T)
        mask = torch.zeros((R, width), dtype=torch.long, device=device)
        mask[:, :P] = prefix.mask.repeat_interleave(N, dim=0)
        mask[:, P : P + T] = 1
        input_ids = prefix.last_tokens.repeat_interleave(N).unsqueeze(1)  # (R, 1)
        positions = prefix.positions.repeat_interleave(N).unsqueeze(1)  # (R, 1)
        tokens = torch.full((R, T), self.pad_token_id, dtype=torch.long, device=device)
        lengths = torch.zeros(R, dtype=torch.long, device=device)
        done = torch.zeros(R, dtype=torch.bool, device=device)
        logp = torch.zeros((R, T), dtype=torch.float32, device=device) if cfg.return_logprobs else None
        base_logp = torch.zeros_like(logp) if logp is not None else None
        eos = torch.tensor(self.eos_token_ids, dtype=torch.long, device=device) if cfg.stop_at_eos else None
        sync_every = cfg.sync_every or (1 if device.type == "cpu" else 8)
        before = (
            self.stops.tails(history.repeat_interleave(N, dim=0))
            if self.stops and history is not None
            else None
        )

        record = feedback_record(policy, controls, cfg.compile, T)
        module, hook, release = self._hook()
        ran = T
        try:
            for t in range(T):
                controlled = controls is not None and t < tau
                hook.control = controls[:, t] if controlled else None  # type: ignore[index]
                hook.policy, hook.step, hook.record = (policy if controlled else None), t, record
                hook.with_base = controlled and logp is not None
                step_mask = mask if static else mask[:, : P + t + 1]
                out = adapter.forward(input_ids, step_mask, positions, cache, module=module)
                self._check_hook(hook)
                if cache is None:
                    cache = adapter.output_cache(out)
                logits = out.logits[:, -1].float()
                base_logits = None
                if hook.with_base:
                    logits, base_logits = logits[:R], logits[R:]
                next_tokens = choose_tokens(
                    logits, generators, greedy=cfg.greedy, temperature=cfg.temperature,
                    top_k=cfg.top_k, top_p=cfg.top_p,
                )  # fmt: skip
                alive = ~done
                next_tokens = next_tokens.masked_fill(done, self.pad_token_id)
                tokens[:, t] = next_tokens
                lengths += alive
                if logp is not None and base_logp is not None:
                    lp = token_logprobs(logits, next_tokens, cfg.temperature).masked_fill(done, 0.0)
                    logp[:, t] = lp
                    if base_logits is None:
                        base_logp[:, t] = lp
                    else:
                        blp = token_logprobs(base_logits, next_tokens, cfg.temperature)
                        base_logp[:, t] = blp.masked_fill(done, 0.0)
                if eos is not None:
                    done |= torch.isin(next_tokens, eos)
                if self.stops:
                    done |= self.stops.check(tokens, t, done, before)
                if (t + 1) % sync_every == 0 and bool(done.all()):
                    ran = t + 1
                    break
                input_ids = next_tokens.unsqueeze(1)
                positions = positions + 1
        finally:
            hook.control, hook.with_base, hook.policy, hook.record = None, False, None, None
            release()
        return Decoded(
            tokens=tokens[:, :ran],
            lengths=lengths,
            logprobs=None if logp is None else logp[:, :ran],
            base_logprobs=None if base_logp is None else base_logp[:, :ran],
            finished=done,
            controls=recorded(record, ran, lengths),
        )

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

    def _static_cache(self, prefix_cache: Any, N: int, R: int, width: int) -> Any:
        """A static ``B * N``-row copy of ``prefix_cache`` holding ``width`` positions (prefix included).

        The previous decode's static cache is refilled in place when its shapes agree (its tensors
        keep their addresses, which CUDA graphs need); one-token prompts (no prefix cache) get an
        empty `transformers` ``StaticCache``.
        """
        if prefix_cache is None:
            from transformers import StaticCache

            old = self._static
            if isinstance(old, StaticCache) and all(
                layer.max_cache_len == width and getattr(layer, "batch_size", R) == R for layer in old.layers
            ):
                for layer in old.layers:
                    if layer.is_initialized:
                        layer.cumulative_length.zero_()
                return old
            self._static = StaticCache(config=self.model.config, max_cache_len=width)
        else:
            length = prefix_cache.get_seq_length()
            self._static = expand_cache(prefix_cache, N, width - length, static=True, into=self._static)
        return self._static

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

    # ------------------------------------------------------------------ special tokens
    def _resolve_eos_ids(self) -> tuple[int, ...]:
        if self.config.eos_token_id is not None:
            value = self.config.eos_token_id
            return (value,) if isinstance(value, int) else tuple(value)
        ids: list[int] = []
        gen = getattr(self.model, "generation_config", None)
        sources = [getattr(self.tokenizer, "eos_token_id", None), getattr(gen, "eos_token_id", None)]
        for value in sources:
            for i in [value] if isinstance(value, int) else (value or []):
                if i not in ids:
                    ids.append(int(i))
        return tuple(ids)

    def _resolve_pad_id(self) -> int:
        pad = getattr(self.tokenizer, "pad_token_id", None)
        if pad is None:
            gen = getattr(self.model, "generation_config", None)
            pad = getattr(gen, "pad_token_id", None) if gen is not None else None
        if pad is None:
            pad = self.eos_token_ids[0] if self.eos_token_ids else 0
        return int(pad)
