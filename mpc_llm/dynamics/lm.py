"""Pre-logit control of any Hugging Face causal LM: a batched, KV-cached rollout engine.

The control ``v_t`` is added to the pre-logit ``z_t`` (the input of the LM head, after the final norm)
for the first ``tau`` response tokens: ``logits_t = head(z_t + v_t)``.

How the control gets in: a forward pre-hook on ``model.get_output_embeddings()`` adds ``v_t`` to the
head's input while the model runs its own forward. The head is therefore the model's own module (tied
embeddings, a bias), and whatever the model does to the head's output stays in place (Gemma-2's final
logit soft-capping, Cohere's logit scale, Granite's logit scaling...), with no per-architecture code.
When log-probs under the unperturbed model are requested, the hook stacks ``[z + v; z]`` along the batch
so that one head call (still inside the model's forward) gives both; for ``t >= tau`` there is no
control, and the base log-probs are the controlled ones (no second head call).

How a rollout runs:

1. Once per bound prompt set (cached across `rollout` calls): the ``B`` prompts are tokenised (chat
   template or not), left-padded, and all but their last token are prefilled into a key/value cache.
2. Per call: the cached prefix cache is expanded to ``B * N`` rows (row ``b * N + n``), sharing nothing
   mutable with the cached one. Step 0 feeds each prompt's last token, step ``t`` the token chosen at
   step ``t - 1``; each step adds ``controls[:, :, t]`` (``t < tau``), picks tokens (greedy or sampled,
   problem ``b``'s draws from ``generators[b]`` only), and masks finished rows (they get ``pad``, their
   length stops growing). The loop ends when every row has finished or after ``max_new_tokens``.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from mpc_llm.dynamics.base import Dynamics
from mpc_llm.dynamics.lm_cache import expand_cache
from mpc_llm.dynamics.lm_rollout import LMRollout, Prompt
from mpc_llm.dynamics.lm_sampling import StopStrings, choose_tokens, token_logprobs

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class LMConfig(BaseModel):
    """Decoding options of `LMDynamics` (validated; loadable from YAML / JSON like other configs).

    Attributes:
        max_new_tokens: longest response, in tokens (``T``).
        tau: controlled steps (the control window; default ``max_new_tokens``); later steps get none.
        temperature: softmax temperature of sampling and of the reported log-probs.
        top_k: sample among the ``k`` most likely tokens only (None: all).
        top_p: nucleus sampling mass (None: no nucleus filtering).
        greedy: take the argmax instead of sampling (the control is then the only randomness).
        stop_at_eos: end a response at an end-of-sequence token (it counts in the length).
        stop_strings: end a response when its text contains one (the text is cut before it).
        chat_template: format prompts with the tokenizer's chat template (None: when it has one).
        return_logprobs: record per-token log-probs under the controlled and the unperturbed model.
        eos_token_id: end-of-sequence id(s) (default: the tokenizer's and the generation config's).
        sync_every: check "all finished" every this many steps (default 1 on CPU, 8 elsewhere).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_new_tokens: int = Field(64, ge=1)
    tau: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, gt=0.0, allow_inf_nan=False)
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    greedy: bool = False
    stop_at_eos: bool = True
    stop_strings: tuple[str, ...] = ()
    chat_template: bool | None = None
    return_logprobs: bool = False
    eos_token_id: int | tuple[int, ...] | None = None
    sync_every: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _logprobs_of_the_sampling_policy(self) -> LMConfig:
        if self.return_logprobs and (self.greedy or self.top_k is not None or self.top_p is not None):
            warnings.warn(
                "return_logprobs with greedy / top_k / top_p: the log-probs are those of the unfiltered "
                "softmax(logits / temperature), not of the truncated distribution tokens are drawn from, "
                "so kl_to_base() is not the KL between the two sampling policies",
                UserWarning,
                stacklevel=2,
            )
        return self

    @model_validator(mode="after")
    def _tau_within_response(self) -> LMConfig:
        if self.tau is not None and self.tau > self.max_new_tokens:
            raise ValueError(
                f"tau={self.tau} exceeds max_new_tokens={self.max_new_tokens}; "
                "the control window cannot be longer than the response"
            )
        return self


@dataclass(frozen=True)
class _Prefix:
    """The bound prompts, encoded and prefilled once.

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


class _PreLogitControl:
    """Forward pre-hook on the LM head: ``z -> z + v`` (and ``[z + v; z]`` when the base is wanted)."""

    def __init__(self) -> None:
        self.control: Tensor | None = None  # (R, d)
        self.with_base = False
        self.fired = False

    def __call__(self, module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        self.fired = True
        if self.control is None:
            return None
        z = args[0]
        v = self.control.to(z.dtype).unsqueeze(1)  # (R, 1, d), broadcast over positions
        zv = z + v
        if self.with_base:
            zv = torch.cat([zv, z], dim=0)
        return (zv, *args[1:])


class LMDynamics(Dynamics):
    """Any `transformers` causal LM as a system driven by pre-logit controls, for ``B`` bound prompts.

    Args:
        model: a loaded causal LM, or a model id / local folder / ``.gguf`` file /
            `mpc_llm.models.DEFAULT_MODEL` to load with `mpc_llm.models.load_model`.
        tokenizer: the model's tokenizer (optional when ``model`` is loaded from a name or path).
        prompts: the ``B`` prompts (plain strings or chat messages); one prompt is a batch of one.
            Bind them later with `with_prompts` if not given here.
        device: where to run (default: where the model is; a loaded model is moved there, in place).
        dtype: the model's dtype (a loaded model is converted in place). Controls are float32 for
            half / bfloat16 models (the controller's arithmetic stays accurate) and cast at the head.
        config: an `LMConfig` or a mapping; keyword ``options`` override its fields.

    Shapes: controls are ``(B, N, tau, d)`` with ``d`` the head's input size; rollouts carry
    ``tokens (B, N, T)`` with ``T <= max_new_tokens`` the steps actually run.

    The model is put in eval mode. A rollout briefly registers a forward pre-hook on the model's
    head, so two rollouts must not run on the same model object at the same time (threads).

    Example:
        >>> import torch
        >>> from mpc_llm.dynamics import LMDynamics, make_generators
        >>> from mpc_llm.testing import random_model, tiny_config, tiny_tokenizer
        >>> tok = tiny_tokenizer()
        >>> lm = LMDynamics(random_model(tiny_config("llama", len(tok))), tok, ["Hello", "Hi there"],
        ...                 max_new_tokens=8, tau=4)
        >>> controls = torch.randn(2, 3, lm.horizon, lm.control_dim)
        >>> rollout = lm.rollout(controls, make_generators(0, 2))
        >>> tuple(rollout.tokens.shape[:2]), len(rollout.texts[1])
        ((2, 3), 3)
    """

    def __init__(
        self,
        model: PreTrainedModel | str | os.PathLike[str],
        tokenizer: PreTrainedTokenizerBase | None = None,
        prompts: Sequence[Prompt] | Prompt | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        config: LMConfig | Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        from mpc_llm.models import load_model, resolve_dtype

        if isinstance(config, LMConfig):
            data = {**config.model_dump(), **options}
        else:
            data = {**dict(config or {}), **options}
        self.config = LMConfig.model_validate(data)
        if isinstance(model, str | os.PathLike):
            model, tokenizer = load_model(model, tokenizer=tokenizer, device=device, dtype=dtype)
        else:
            if tokenizer is None:
                raise ValueError("pass the model's tokenizer: LMDynamics(model, tokenizer, prompts, ...)")
            torch_dtype = resolve_dtype(dtype)
            if isinstance(torch_dtype, torch.dtype) or device is not None:
                model = model.to(
                    device=device, dtype=torch_dtype if isinstance(torch_dtype, torch.dtype) else None
                )
        self.model = model.eval()
        self.tokenizer = tokenizer
        self._head = self.model.get_output_embeddings()
        if self._head is None:
            raise ValueError(
                f"{type(self.model).__name__} has no output embeddings (LM head); pre-logit control needs a "
                "causal LM whose get_output_embeddings() returns its head"
            )
        forward_params = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in forward_params else "past_key_values"
        self._keep_kw = "logits_to_keep" in forward_params
        self._checked_hook = False
        self._eos_ids = self._resolve_eos_ids()
        self._pad_id = self._resolve_pad_id()
        self._stops = StopStrings(self.tokenizer, self.config.stop_strings)
        self._prompts: list[Prompt] | None = None
        self._prefix: _Prefix | None = None
        if prompts is not None:
            self._bind(prompts)

    # ------------------------------------------------------------------ Dynamics interface
    @property
    def prompts(self) -> list[Prompt]:
        """The ``B`` bound prompts."""
        if self._prompts is None:
            raise ValueError(
                "no prompts are bound; create the dynamics with prompts=[...] or use with_prompts()"
            )
        return self._prompts

    @property
    def batch_size(self) -> int:
        """``B``, the number of bound prompts."""
        return len(self.prompts)

    @property
    def horizon(self) -> int:
        """``tau``, the control window (steps ``t >= tau`` get no control)."""
        return self.config.tau or self.config.max_new_tokens

    @property
    def control_dim(self) -> int:
        """``d``, the size of the pre-logit (the LM head's input)."""
        head = self._head
        if hasattr(head, "in_features"):
            return int(head.in_features)
        return int(head.weight.shape[-1])

    @property
    def device(self) -> torch.device:
        """Where the LM head (and controls, generators) live."""
        return self._head.weight.device

    @property
    def model_dtype(self) -> torch.dtype:
        """The dtype of the LM head's weights."""
        return self._head.weight.dtype

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of controls: the model's, but float32 for half / bfloat16 models."""
        dt = self.model_dtype
        return torch.float32 if dt in (torch.float16, torch.bfloat16) else dt

    @property
    def pad_token_id(self) -> int:
        """The id written past the end of each response."""
        return self._pad_id

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """The ids that end a response (when ``stop_at_eos``)."""
        return self._eos_ids

    def with_prompts(self, prompts: Sequence[Prompt] | Prompt) -> LMDynamics:
        """A copy bound to other prompts, sharing the model, tokenizer and config."""
        other = copy.copy(self)
        other._bind(prompts)
        return other

    def with_options(self, **options: Any) -> LMDynamics:
        """A copy with some `LMConfig` fields changed (same model and prompts; the prefill is reused)."""
        other = copy.copy(self)
        other.config = LMConfig.model_validate({**self.config.model_dump(), **options})
        other._eos_ids = other._resolve_eos_ids()
        other._stops = StopStrings(self.tokenizer, other.config.stop_strings)
        if other.config.chat_template != self.config.chat_template:
            other._prefix = None
        return other

    def rollout(self, controls: Tensor, generators: Sequence[torch.Generator]) -> LMRollout:
        """Generate ``N`` responses per prompt under pre-logit controls.

        Args:
            controls: ``(B, N, tau, d)``; step ``t < tau`` of sample ``(b, n)`` adds ``controls[b, n, t]``
                to the pre-logit. Cast to the model's device and dtype.
            generators: ``B`` generators on `device`; problem ``b`` samples only from ``generators[b]``.

        Returns:
            An `LMRollout` with ``tokens (B, N, T)``, ``lengths (B, N)``, texts, and log-probs if asked.
        """
        self.check_controls(controls)
        if not bool(controls.any()):  # e.g. best-of-N: skip the hook's work (and the doubled head for KL)
            return dataclasses.replace(self._generate(None, controls.shape[1], generators), controls=controls)
        return self._generate(controls, controls.shape[1], generators)

    def sample(self, num_samples: int, generators: Sequence[torch.Generator]) -> LMRollout:
        """Generate ``num_samples`` uncontrolled responses per prompt (the model as it is).

        The rollout's ``controls`` are zeros (a broadcast view, no memory).
        """
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        return self._generate(None, num_samples, generators)

    def check_controls(self, controls: Tensor) -> None:
        """Raise a `ValueError` saying what was expected when ``controls`` has the wrong shape."""
        super().check_controls(controls)
        if controls.shape[1] < 1:
            raise ValueError("controls must hold at least one sample per prompt (N >= 1)")

    # ------------------------------------------------------------------ prompts
    def encode_prompts(self) -> list[list[int]]:
        """The token ids of each bound prompt, as fed to the model (chat template applied if enabled)."""
        use_template = self.config.chat_template
        has_template = getattr(self.tokenizer, "chat_template", None) is not None
        if use_template is None:
            use_template = has_template
        if use_template and not has_template:
            raise ValueError(
                "chat_template=True but the tokenizer has no chat template; set tokenizer.chat_template "
                "or use chat_template=False with plain-string prompts"
            )
        ids = []
        for b, prompt in enumerate(self.prompts):
            if use_template:
                messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
                text = self.tokenizer.apply_chat_template(
                    messages, add_generation_prompt=True, tokenize=False
                )
                encoded = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            elif isinstance(prompt, str):
                encoded = self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
            else:
                raise ValueError(
                    f"prompt {b} is a list of chat messages but chat templates are off; pass plain strings "
                    "or set chat_template=True (the tokenizer needs a chat template)"
                )
            if not encoded:
                raise ValueError(f"prompt {b} is empty after tokenisation; give it at least one token")
            ids.append(list(encoded))
        return ids

    def _bind(self, prompts: Sequence[Prompt] | Prompt) -> None:
        if isinstance(prompts, str) or (
            isinstance(prompts, list) and prompts and isinstance(prompts[0], dict)
        ):
            prompts = [prompts]  # a single prompt (a string, or one conversation)
        prompts = list(prompts)
        if not prompts:
            raise ValueError("give at least one prompt")
        for b, p in enumerate(prompts):
            if not isinstance(p, str) and not (isinstance(p, list) and all(isinstance(m, dict) for m in p)):
                raise TypeError(
                    f"prompt {b} must be a string or a list of chat messages "
                    f"[{{'role': ..., 'content': ...}}], got {type(p).__name__}"
                )
        self._prompts = prompts
        self._prefix = None

    def _context_length(self) -> int | None:
        cfg = self.model.config
        cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = getattr(cfg, name, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def _check_context(self, lengths: Sequence[int]) -> None:
        ctx = self._context_length()
        if ctx is None:
            return
        for b, n in enumerate(lengths):
            if n + self.config.max_new_tokens > ctx:
                what = "longer than" if n >= ctx else "too long for"
                raise ValueError(
                    f"prompt {b} has {n} tokens, {what} the model's context of {ctx} tokens with "
                    f"max_new_tokens={self.config.max_new_tokens}; shorten the prompt or lower "
                    f"max_new_tokens (prompt + response must fit in {ctx})"
                )

    @torch.no_grad()
    def prefill(self) -> _Prefix:
        """Encode, check and prefill the bound prompts (once; later calls return the cached prefix)."""
        if self._prefix is not None:
            return self._prefix
        ids = self.encode_prompts()
        lengths = tuple(len(x) for x in ids)
        self._check_context(lengths)
        device = self.device
        B, P = len(ids), max(lengths) - 1
        prefix = torch.full((B, P), self._pad_id, dtype=torch.long)
        mask = torch.zeros((B, P), dtype=torch.long)
        for b, seq in enumerate(ids):
            if len(seq) > 1:
                prefix[b, P - len(seq) + 1 :] = torch.tensor(seq[:-1])
                mask[b, P - len(seq) + 1 :] = 1
        prefix, mask = prefix.to(device), mask.to(device)
        cache = None
        if P > 0:
            positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
            out = self._forward(prefix, mask, positions, None)
            cache = self._output_cache(out)
        self._prefix = _Prefix(
            cache=cache,
            mask=mask,
            last_tokens=torch.tensor([seq[-1] for seq in ids], device=device),
            positions=torch.tensor([n - 1 for n in lengths], device=device),
            lengths=lengths,
        )
        return self._prefix

    # ------------------------------------------------------------------ the engine
    def _forward(self, input_ids: Tensor, mask: Tensor, positions: Tensor, cache: Any) -> Any:
        kwargs: dict[str, Any] = {self._cache_kw: cache, "use_cache": True}
        if self._keep_kw:
            kwargs["logits_to_keep"] = 1
        return self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, **kwargs)

    @staticmethod
    def _output_cache(out: Any) -> Any:
        cache = getattr(out, "cache", None)
        return cache if cache is not None else out.past_key_values

    def _check_generators(self, generators: Sequence[torch.Generator], check_device: bool) -> None:
        if len(generators) != self.batch_size:
            raise ValueError(f"expected {self.batch_size} generators (one per prompt), got {len(generators)}")
        if not check_device:
            return
        device = self.device
        for g in generators:
            if g.device.type != device.type:
                raise ValueError(
                    f"generators must live on the model's device ({device}), got one on {g.device}; "
                    f"create them with make_generators(seed, B, dynamics.device)"
                )

    @torch.no_grad()
    def _generate(self, controls: Tensor | None, N: int, generators: Sequence[torch.Generator]) -> LMRollout:
        cfg = self.config
        self._check_generators(generators, check_device=not cfg.greedy)
        prefix = self.prefill()
        self._check_context(prefix.lengths)
        B, device, tau, T = self.batch_size, self.device, self.horizon, cfg.max_new_tokens
        R, P = B * N, prefix.mask.shape[1]
        flat = None
        if controls is not None:
            flat = controls.to(device=device, dtype=self.model_dtype).reshape(R, tau, self.control_dim)

        cache = expand_cache(prefix.cache, N, T)
        mask = torch.ones((R, P + T), dtype=torch.long, device=device)
        mask[:, :P] = prefix.mask.repeat_interleave(N, dim=0)
        input_ids = prefix.last_tokens.repeat_interleave(N).unsqueeze(1)  # (R, 1)
        positions = prefix.positions.repeat_interleave(N).unsqueeze(1)  # (R, 1)
        tokens = torch.full((R, T), self._pad_id, dtype=torch.long, device=device)
        lengths = torch.zeros(R, dtype=torch.long, device=device)
        done = torch.zeros(R, dtype=torch.bool, device=device)
        logp = torch.zeros((R, T), dtype=torch.float32, device=device) if cfg.return_logprobs else None
        base_logp = torch.zeros_like(logp) if logp is not None else None
        eos = torch.tensor(self._eos_ids, dtype=torch.long, device=device) if cfg.stop_at_eos else None
        sync_every = cfg.sync_every or (1 if device.type == "cpu" else 8)

        hook = _PreLogitControl()
        handle = self._head.register_forward_pre_hook(hook)
        steps = T
        try:
            for t in range(T):
                controlled = flat is not None and t < tau
                hook.control = flat[:, t] if controlled else None  # type: ignore[index]
                hook.with_base = controlled and logp is not None
                out = self._forward(input_ids, mask[:, : P + t + 1], positions, cache)
                if not self._checked_hook:
                    self._assert_hook_fired(hook)
                if cache is None:
                    cache = self._output_cache(out)
                logits = out.logits[:, -1].float()
                base_logits = None
                if hook.with_base:
                    logits, base_logits = logits[:R], logits[R:]
                next_tokens = choose_tokens(
                    logits,
                    generators,
                    greedy=cfg.greedy,
                    temperature=cfg.temperature,
                    top_k=cfg.top_k,
                    top_p=cfg.top_p,
                )
                alive = ~done
                next_tokens = next_tokens.masked_fill(done, self._pad_id)
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
                if self._stops:
                    done |= self._stops.check(tokens, t, done)
                if (t + 1) % sync_every == 0 and bool(done.all()):
                    steps = t + 1
                    break
                input_ids = next_tokens.unsqueeze(1)
                positions = positions + 1
        finally:
            handle.remove()

        tokens = tokens[:, :steps]
        texts = self._decode(tokens, lengths)
        if controls is None:
            controls = torch.zeros((), dtype=self.dtype, device=device).expand(B, N, tau, self.control_dim)
        return LMRollout(
            controls=controls,
            tokens=tokens.view(B, N, steps),
            lengths=lengths.view(B, N),
            texts=[texts[b * N : (b + 1) * N] for b in range(B)],
            prompts=list(self.prompts),
            logprobs=None if logp is None else logp[:, :steps].reshape(B, N, steps),
            base_logprobs=None if base_logp is None else base_logp[:, :steps].reshape(B, N, steps),
            pad_token_id=self._pad_id,
        )

    def _assert_hook_fired(self, hook: _PreLogitControl) -> None:
        if not hook.fired:
            raise RuntimeError(
                f"{type(self.model).__name__} computes its logits without calling its output embedding "
                f"module ({type(self._head).__name__}), so the pre-logit control cannot be applied; this "
                "architecture is not supported"
            )
        self._checked_hook = True

    def _decode(self, tokens: Tensor, lengths: Tensor) -> list[str]:
        rows = [row[:n] for row, n in zip(tokens.tolist(), lengths.tolist(), strict=True)]
        texts = self.tokenizer.batch_decode(rows, skip_special_tokens=True)
        if self._stops:
            texts = [self._stops.truncate(text) for text in texts]
        return texts

    # ------------------------------------------------------------------ special tokens
    def _resolve_eos_ids(self) -> tuple[int, ...]:
        if self.config.eos_token_id is not None:
            value = self.config.eos_token_id
            return (value,) if isinstance(value, int) else tuple(value)
        ids: list[int] = []
        sources = [getattr(self.tokenizer, "eos_token_id", None)]
        gen = getattr(self.model, "generation_config", None)
        sources.append(getattr(gen, "eos_token_id", None) if gen is not None else None)
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
            pad = self._eos_ids[0] if self._eos_ids else 0
        return int(pad)
