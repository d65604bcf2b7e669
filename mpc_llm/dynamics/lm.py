"""A causal language model as a dynamical system driven by pre-logit controls.

State: the prompt and the tokens generated so far (with their key/value cache); control ``v_t``:
added to the pre-logit for the first ``tau`` response tokens; transition: the next token, sampled
from (or the argmax of) ``softmax(head(z_t + v_t) / temperature)``. The work is done by the decode
engine (`mpc_llm.lm.engine`); this class binds prompts and turns decodes into `LMRollout`s.

Closed loop (`advance`): committing tokens appends them to each prompt's key/value cache (only the
new tokens run through the model, when the next rollout needs them); the dynamics then has
``max_new_tokens - committed`` steps left, and its rollouts hold the whole response, the committed
tokens first, so a reward scores the whole text.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from mpc_llm.core import Dynamics, validated
from mpc_llm.dynamics import lm_closeness
from mpc_llm.dynamics.lm_feedback import StateFeedback
from mpc_llm.lm import LMConfig, LMRollout, Prompt, load_model, resolve_dtype
from mpc_llm.lm.engine import DecodeEngine, Prefix
from mpc_llm.lm.prompts import as_prompt_list, encode_prompt, uses_chat_template

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class LMDynamics(StateFeedback, Dynamics):
    """Any `transformers` causal LM as a system driven by pre-logit controls, for ``B`` bound prompts.

    Args:
        model: a loaded causal LM, or a model id / local folder / ``.gguf`` file /
            `mpc_llm.lm.DEFAULT_MODEL` to load with `mpc_llm.lm.load_model`.
        tokenizer: the model's tokenizer (optional when ``model`` is loaded from a name or path).
        prompts: the ``B`` prompts (plain strings or chat messages); one prompt is a batch of one.
            Bind them later with `with_prompts` if not given here.
        device: where to run (default: where the model is; a loaded model is moved there, in place).
        dtype: the model's dtype. ``"auto"`` (default): bfloat16 where ``device`` computes it natively,
            else float32, for a model loaded by name (`mpc_llm.lm.precision`); a model object keeps
            its dtype unless a dtype is named (then it is converted in place). Controls stay float32
            for half / bfloat16 models and are added to the pre-logit in float32; sampling,
            log-probs and closeness are float32 from the logits sampled from.
        config: an `LMConfig` or a mapping; keyword ``options`` override its fields.

    Shapes: ``horizon = max_new_tokens``; controls are ``(B, N, tau, d)`` with ``tau <= horizon`` the
    controlled tokens and ``d`` the head's input size; rollouts carry ``tokens (B, N, T)`` with
    ``T <= max_new_tokens`` the steps actually run.

    Example:
        >>> import torch
        >>> from mpc_llm.core import make_generators
        >>> from mpc_llm.lm.testing import random_model, tiny_config, tiny_tokenizer
        >>> tok = tiny_tokenizer()
        >>> lm = LMDynamics(random_model(tiny_config("llama", len(tok))), tok, ["Hello", "Hi there"],
        ...                 max_new_tokens=8)
        >>> controls = torch.randn(2, 3, 4, lm.control_dim)     # tau = 4 controlled tokens
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
        dtype: torch.dtype | str | None = "auto",
        config: LMConfig | Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        lm_config = validated(LMConfig, config, options)
        if isinstance(model, str | os.PathLike):
            model, tokenizer = load_model(model, tokenizer=tokenizer, device=device, dtype=dtype)
        else:
            if tokenizer is None:
                raise ValueError("pass the model's tokenizer: LMDynamics(model, tokenizer, prompts, ...)")
            torch_dtype = None if dtype == "auto" else resolve_dtype(dtype, device)
            if torch_dtype is not None or device is not None:
                model = model.to(device=device, dtype=torch_dtype)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.engine = DecodeEngine(self.model, tokenizer, lm_config)
        self._prompts: list[Prompt] | None = None
        self._prefix: Prefix | None = None
        self._bind_state()
        if prompts is not None:
            self._bind(prompts)

    # ------------------------------------------------------------------ Dynamics interface
    @property
    def config(self) -> LMConfig:
        """The decoding options."""
        return self.engine.config

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
        """Tokens left: ``max_new_tokens`` less those committed (controls cover the first ``tau``)."""
        return self.config.max_new_tokens - self.committed

    @property
    def committed(self) -> int:
        """Response tokens committed so far (`advance`); 0 for fresh prompts."""
        return 0 if self._response is None else int(self._response.shape[1])

    @property
    def control_dim(self) -> int:
        """``d``, the size of the pre-logit (the LM head's input)."""
        return self.engine.adapter.control_dim

    @property
    def device(self) -> torch.device:
        """Where the LM head (and controls, generators) live."""
        return self.engine.adapter.device

    @property
    def model_dtype(self) -> torch.dtype:
        """The dtype of the LM head's weights."""
        return self.engine.adapter.dtype

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of controls: the model's, but float32 for half / bfloat16 models."""
        dt = self.model_dtype
        return torch.float32 if dt in (torch.float16, torch.bfloat16) else dt

    @property
    def pad_token_id(self) -> int:
        """The id written past the end of each response."""
        return self.engine.pad_token_id

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """The ids that end a response (when ``stop_at_eos``)."""
        return self.engine.eos_token_ids

    def with_prompts(self, prompts: Sequence[Prompt] | Prompt) -> LMDynamics:
        """A copy bound to other prompts, sharing the model, tokenizer and config."""
        other = copy.copy(self)
        other._bind(prompts)
        return other

    def with_options(self, **options: Any) -> LMDynamics:
        """A copy with some `LMConfig` fields changed (same model and prompts; the prefill is reused)."""
        other = copy.copy(self)
        config = validated(LMConfig, self.config, options)
        other.engine = DecodeEngine(self.model, self.tokenizer, config)
        if config.chat_template != self.config.chat_template:
            other._prefix = None
        return other

    def rollout(self, controls: Tensor, generators: Sequence[torch.Generator]) -> LMRollout:
        """Generate ``N`` responses per prompt under pre-logit controls.

        Args:
            controls: ``(B, N, tau, d)``; token ``t < tau`` of sample ``(b, n)`` adds
                ``controls[b, n, t]`` to the pre-logit. Cast to the model's device and dtype.
            generators: ``B`` generators on `device`; problem ``b`` samples only from ``generators[b]``.

        Returns:
            An `LMRollout` with ``tokens (B, N, T)``, ``lengths (B, N)``, texts, and log-probs if asked.
        """
        self.check_controls(controls)
        B, N, tau, d = controls.shape
        if not bool(controls.any()):  # e.g. best-of-N: skip the hook's work (and the doubled head for KL)
            return dataclasses.replace(self._generate(None, N, generators), controls=controls)
        flat = controls.to(device=self.device, dtype=self.dtype).reshape(B * N, tau, d)
        return dataclasses.replace(self._generate(flat, N, generators), controls=controls)

    def sample(self, num_samples: int, generators: Sequence[torch.Generator]) -> LMRollout:
        """Generate ``num_samples`` uncontrolled responses per prompt (the model as it is).

        The rollout's ``controls`` are zeros ``(B, N, 1, d)`` (a broadcast view, no memory).
        """
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        return self._generate(None, num_samples, generators)

    def check_controls(self, controls: Tensor) -> None:
        """Raise a `ValueError` saying what was expected when ``controls`` has the wrong shape."""
        super().check_controls(controls)
        if controls.shape[1] < 1:
            raise ValueError("controls must hold at least one sample per prompt (N >= 1)")

    def prelogit_rms(self) -> Tensor:
        """``(B,)`` float64 RMS over ``d`` of each prompt's pre-logit at the first response position."""
        return lm_closeness.prelogit_rms(self.engine, self.prefill())

    def control_scale(self) -> Tensor:
        """The scale ``sigma_relative`` is a fraction of: `prelogit_rms`, measured once per call."""
        return self.prelogit_rms()

    def closeness_to_base(self, rollout: LMRollout, controls: Tensor | None = None) -> dict[str, Tensor]:  # type: ignore[override]
        """``(B, N)`` ``base_logp_mean`` (temperature 1) and, given ``controls`` ``(B, N, tau, d)``,
        ``kl_estimate`` of ``rollout``'s responses, by one teacher-forced pass (`lm_closeness`)."""
        B, N = rollout.batch_size, rollout.num_samples
        ids = [p for p in self.encode_prompts() for _ in range(N)]
        flat = None if controls is None else controls.reshape(B * N, *controls.shape[2:])
        out = lm_closeness.closeness(self.engine, ids, rollout.tokens.reshape(B * N, -1),
                                     rollout.lengths.reshape(-1), flat)  # fmt: skip
        return {k: v.view(B, N) for k, v in out.items()}

    # ------------------------------------------------------------------ prompts
    def encode_prompts(self) -> list[list[int]]:
        """The token ids of each bound prompt, as fed to the model (chat template applied if enabled)."""
        template = uses_chat_template(self.tokenizer, self.config.chat_template)
        return [
            encode_prompt(self.tokenizer, p, chat_template=template, index=b)
            for b, p in enumerate(self.prompts)
        ]

    def prefill(self) -> Prefix:
        """Encode, check and prefill the bound prompts and any committed tokens (once; later calls
        return the cached prefix)."""
        if self._prefix is None:
            self._prefix = self.engine.prefill(self.encode_prompts())
        if self._pending is not None:
            self._prefix = self.engine.extend(self._prefix, self._pending)
            self._pending = None
        return self._prefix

    # ------------------------------------------------------------------ closed loop
    def advance(self, rollout: LMRollout, steps: int | Sequence[int]) -> LMDynamics:  # type: ignore[override]
        """Commit the next ``steps`` tokens of each problem's response in ``rollout`` (``N = 1``).

        A problem is finished when its response ended (end-of-sequence or a stop string) within
        the committed tokens, or no token is left.
        """
        m = self.committed
        if not isinstance(steps, int):  # one count per row: not for a language model yet
            raise NotImplementedError("LMDynamics commits one count for all rows (select equal ones)")
        if not 1 <= steps <= self.horizon:
            raise ValueError(f"steps must be in [1, {self.horizon}] (tokens left), got {steps}")
        if rollout.batch_size != self.batch_size or rollout.num_samples != 1:
            raise ValueError(f"advance needs one rollout per problem, (B={self.batch_size}, N=1)")
        new = _columns(rollout.tokens[:, 0], m, steps, self.pad_token_id)
        lengths = rollout.lengths[:, 0].to(new.device)
        ended = rollout.finished[:, 0] if rollout.finished is not None else lengths < m + steps
        other = copy.copy(self)
        other._prefix = self._prefix
        other._pending = new if self._pending is None else torch.cat([self._pending, new], dim=1)
        other._response = new if self._response is None else torch.cat([self._response, new], dim=1)
        logp = [rollout.logprobs, rollout.base_logprobs]
        if all(x is not None for x in logp) and (m == 0 or self._response_logp is not None):
            parts = [_columns(x[:, 0], m, steps, 0.0) for x in logp]  # type: ignore[index]
            if self._response_logp is not None:
                parts = [
                    torch.cat([old, p], dim=1) for old, p in zip(self._response_logp, parts, strict=True)
                ]
            other._response_logp = (parts[0], parts[1])
        else:
            other._response_logp = None
        other._finished = (ended.to(new.device) & (lengths <= m + steps)) | (
            m + steps >= self.config.max_new_tokens
        )
        return other

    def finished(self) -> Tensor:
        """``(B,)`` bool: responses that ended within the committed tokens, or have no token left."""
        if self._finished is not None:
            return self._finished
        return torch.full((self.batch_size,), self.horizon == 0, dtype=torch.bool)

    def select(self, index: Sequence[int]) -> LMDynamics:
        """The problems ``index`` only (repeats allowed: branches of one prompt), with their prompts,
        caches and committed tokens. Fresh prompts are prefilled once, before the selection;
        committed tokens not yet in the cache are selected too, so dropped problems never run them."""
        rows = list(index)
        if self._prefix is None:
            self.prefill()
        assert self._prefix is not None
        other = copy.copy(self)
        other._prompts = [self.prompts[i] for i in rows]
        other._prefix = self.engine.select(self._prefix, rows)
        for name in ("_pending", "_response", "_finished"):
            value = getattr(self, name)
            setattr(other, name, None if value is None else value[rows])
        if self._response_logp is not None:
            other._response_logp = (self._response_logp[0][rows], self._response_logp[1][rows])
        return other

    def candidates(self, k: int) -> tuple[LMRollout, Tensor]:
        """The ``k`` most likely next tokens of each response, as one-token continuations.

        Returns:
            An `LMRollout` ``(B, k)`` whose responses are the committed tokens plus one candidate,
            and the candidates' ``(B, k)`` log-probs under ``softmax(logits / temperature)``.
        """
        if not 1 <= k <= self.engine.vocab_size:
            raise ValueError(f"k must be in [1, {self.engine.vocab_size}], got {k}")
        B, m = self.batch_size, self.committed
        logp = (self.engine.next_logits(self.prefill()) / self.config.temperature).log_softmax(dim=-1)
        top = logp.topk(k, dim=-1)
        tokens = top.indices.unsqueeze(-1)  # (B, k, 1)
        if self._response is not None:
            tokens = torch.cat([self._response.unsqueeze(1).expand(B, k, m), tokens], dim=-1)
        lengths = torch.full((B, k), m + 1, dtype=torch.long, device=tokens.device)
        texts = self.engine.texts(tokens.reshape(B * k, m + 1), lengths.reshape(-1))
        eos = torch.tensor(self.eos_token_ids if self.config.stop_at_eos else [], dtype=torch.long)
        rollout = LMRollout(
            controls=torch.zeros((), dtype=self.dtype, device=self.device).expand(B, k, 1, self.control_dim),
            tokens=tokens,
            lengths=lengths,
            texts=[texts[b * k : (b + 1) * k] for b in range(B)],
            prompts=list(self.prompts),
            pad_token_id=self.pad_token_id,
            finished=torch.isin(top.indices, eos.to(top.indices.device)),
            prefix_lengths=torch.full((B, k), m, dtype=torch.long),
        )
        return rollout, top.values

    def with_horizon(self, horizon: int) -> LMDynamics:
        """A copy that generates at most ``horizon`` more tokens (the prefill is shared)."""
        if not 1 <= horizon <= self.horizon:
            raise ValueError(f"horizon must be in [1, {self.horizon}] (tokens left), got {horizon}")
        self.prefill()
        return self.with_options(max_new_tokens=self.committed + horizon)

    def _bind(self, prompts: Sequence[Prompt] | Prompt) -> None:
        self._prompts = as_prompt_list(prompts)
        self._prefix = None
        self._bind_state()

    def _bind_state(self) -> None:
        """No committed tokens (fresh prompts)."""
        self._pending: Tensor | None = None  # (B, p) committed tokens not yet in the cache
        self._response: Tensor | None = None  # (B, m) committed tokens
        self._response_logp: tuple[Tensor, Tensor] | None = None  # their (controlled, base) log-probs
        self._finished: Tensor | None = None  # (B,)

    def _generate(
        self, controls: Tensor | None, N: int, generators: Sequence[torch.Generator], policy: Any = None
    ) -> LMRollout:
        B, m = self.batch_size, self.committed
        self.engine.check_generators(generators, B)
        out = self.engine.decode(
            self.prefill(), controls, N, generators, steps=self.horizon, history=self._response, policy=policy
        )
        tokens, lengths, logp, base_logp = out.tokens, out.lengths, out.logprobs, out.base_logprobs
        if self._response is not None:  # the committed tokens first: rollouts hold whole responses
            tokens = torch.cat([self._response.repeat_interleave(N, dim=0), tokens], dim=1)
            lengths = lengths + m
            if logp is not None and base_logp is not None and self._response_logp is not None:
                before = [x.repeat_interleave(N, dim=0) for x in self._response_logp]
                logp, base_logp = (
                    torch.cat([before[0], logp], dim=1),
                    torch.cat([before[1], base_logp], dim=1),
                )
            else:
                logp = base_logp = None
        T = tokens.shape[1]
        texts = self.engine.texts(tokens, lengths)

        def per_problem(x: Tensor | None) -> Tensor | None:
            return None if x is None else x.reshape(B, N, *x.shape[1:])

        zero = torch.zeros((), dtype=self.dtype, device=self.device).expand(B, N, 1, self.control_dim)
        return LMRollout(  # a feedback decode's controls: those applied to the new tokens (StateFeedback)
            controls=zero if out.controls is None else out.controls.view(B, N, *out.controls.shape[1:]),
            tokens=tokens.view(B, N, T),
            lengths=lengths.view(B, N),
            texts=[texts[b * N : (b + 1) * N] for b in range(B)],
            prompts=list(self.prompts),
            logprobs=per_problem(logp),
            base_logprobs=per_problem(base_logp),
            pad_token_id=self.pad_token_id,
            finished=per_problem(out.finished),
            prefix_lengths=torch.full((B, N), m, dtype=torch.long),
        )


def _columns(x: Tensor, start: int, width: int, pad: float) -> Tensor:
    """Columns ``start .. start + width`` of ``x`` ``(B, L)``, right-padded with ``pad`` past ``L``."""
    part = x[:, start : start + width]
    if part.shape[1] < width:
        filler = part.new_full((x.shape[0], width - part.shape[1]), pad)
        part = torch.cat([part, filler], dim=1)
    return part
