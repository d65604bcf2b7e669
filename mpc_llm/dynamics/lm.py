"""A causal language model as a dynamical system driven by pre-logit controls.

State: the prompt and the tokens generated so far (with their key/value cache); control ``v_t``:
added to the pre-logit for the first ``tau`` response tokens; transition: the next token, sampled
from (or the argmax of) ``softmax(head(z_t + v_t) / temperature)``. The work is done by the decode
engine (`mpc_llm.lm.engine`); this class binds prompts and turns decodes into `LMRollout`s.

Closed loop (`advance`): committing tokens appends them to each prompt's key/value cache (only the
new tokens run through the model, when the next rollout needs them); the dynamics then has
``max_new_tokens - committed`` steps left, and its rollouts hold the whole response, the committed
tokens first, so a reward scores the whole text. Rows may commit different numbers of tokens (one
count per row, `commits_per_row`): one decode then serves them all, each row stopping at its own
``max_new_tokens`` (`mpc_llm.dynamics.lm_history`, `DecodeEngine.extend`).

State feedback (`rollout_feedback`): a `mpc_llm.core.Policy` evaluated on the pre-logit inside the
decode; the head hook (`mpc_llm.lm.control`) adds ``u_t + policy(z_t + u_t, t)`` at each step
``t < tau`` and records the controls applied, so closeness is measured from them exactly as for
open-loop controls.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from mpc_llm.core import Dynamics, Policy, validated
from mpc_llm.dynamics import lm_closeness
from mpc_llm.dynamics.lm_history import Committed
from mpc_llm.lm import LMConfig, LMRollout, Prompt, load_model, resolve_dtype
from mpc_llm.lm.engine import DecodeEngine, Prefix
from mpc_llm.lm.fingerprint import head_fingerprint
from mpc_llm.lm.prompts import as_prompt_list, encode_prompt, uses_chat_template

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class LMDynamics(Dynamics):
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

    #: `advance` takes one count per row (rows of different committed lengths decode together)
    commits_per_row = True

    @property
    def horizon(self) -> int:
        """The most tokens any row has left: ``max_new_tokens`` less the fewest committed (each row
        stops at ``max_new_tokens`` in all; controls cover the first ``tau``)."""
        return self.config.max_new_tokens - self.committed

    @property
    def committed(self) -> int:
        """Response tokens committed so far (`advance`): the fewest of any row (all rows have the same
        count unless `advance` was given one per row; see `committed_counts`); 0 for fresh prompts."""
        counts = self.committed_counts
        return int(counts.min()) if len(counts) else 0

    @property
    def committed_counts(self) -> Tensor:
        """``(B,)`` long: response tokens committed so far by each row."""
        if self._history is None:
            return torch.zeros(self.batch_size, dtype=torch.long)
        return self._history.counts

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
    def model_params(self) -> int:
        """The language model's parameter count."""
        return sum(p.numel() for p in self.model.parameters())

    def context_tokens(self) -> Tensor:
        """``(B,)`` prompt tokens of each problem (chat template applied): what the prefill reads."""
        return torch.tensor([len(ids) for ids in self.encode_prompts()], dtype=torch.long)

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

    def rollout_feedback(
        self, controls: Tensor, generators: Sequence[torch.Generator], policy: Policy
    ) -> LMRollout:
        """Generate with ``z + u_t + policy(z + u_t, t)`` at the head for tokens ``t < tau``,
        ``u_t = controls[:, :, t]`` ``(B, N, tau, d)`` (zeros: the policy alone, e.g. RE-Control).

        Returns:
            An `LMRollout` whose ``controls`` are the ``(B, N, T, d)`` controls applied (float32 at
            least; zero past each response's end and on committed tokens, which came before).
        """
        self.check_controls(controls)
        B, N, tau, d = controls.shape
        flat = controls.to(device=self.device, dtype=self.dtype).reshape(B * N, tau, d)
        return self._generate(flat, N, generators, policy)

    def model_fingerprint(self) -> str:
        """The model's `mpc_llm.lm.fingerprint.head_fingerprint` (its head's shape and first rows)."""
        return head_fingerprint(self.engine.adapter.head)

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
            self._prefix = self.engine.extend(self._prefix, self._pending.tokens, self._pending.counts)
            self._pending = None
        return self._prefix

    # ------------------------------------------------------------------ closed loop
    def advance(self, rollout: LMRollout, steps: int | Sequence[int]) -> LMDynamics:  # type: ignore[override]
        """Commit the next ``steps`` tokens of each problem's response in ``rollout`` (``N = 1``): one
        count for all rows (``1 <= steps <= horizon``; a row with fewer tokens left commits what it
        has) or one per row (``0 <= steps[b] <=`` the row's tokens left).

        A problem is finished when its response ended (end-of-sequence or a stop string) within
        the committed tokens, or no token is left.
        """
        B, top = self.batch_size, self.config.max_new_tokens
        if rollout.batch_size != B or rollout.num_samples != 1:
            raise ValueError(f"advance needs one rollout per problem, (B={B}, N=1)")
        m = self.committed_counts
        counts = _counts(steps, B, self.horizon, top - m)
        c = int(counts.max()) if B else 0
        new = _columns(rollout.tokens[:, 0], m, c, self.pad_token_id)
        logp = None
        if rollout.logprobs is not None and rollout.base_logprobs is not None:
            logp = (
                _columns(rollout.logprobs[:, 0], m, c, 0.0),
                _columns(rollout.base_logprobs[:, 0], m, c, 0.0),
            )
        history = self._history or Committed.empty(B, self.pad_token_id, new.device)
        pending = self._pending or Committed(
            new[:, :0], torch.zeros(B, dtype=torch.long), None, self.pad_token_id
        )
        lengths = rollout.lengths[:, 0].to(new.device)
        end = (m + counts).to(new.device)
        ended = rollout.finished[:, 0].to(new.device) if rollout.finished is not None else lengths < end
        other = copy.copy(self)
        other._history = history.append(new, counts, logp)
        other._pending = pending.append(new, counts, None)
        other._finished = (ended & (lengths <= end)) | (end >= top)
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
        other._history = None if self._history is None else self._history.select(rows)
        other._pending = None if self._pending is None else self._pending.select(rows)
        other._finished = None if self._finished is None else self._finished[rows]
        return other

    def candidates(self, k: int) -> tuple[LMRollout, Tensor]:
        """The ``k`` most likely next tokens of each response, as one-token continuations.

        Returns:
            An `LMRollout` ``(B, k)`` whose responses are the committed tokens plus one candidate,
            and the candidates' ``(B, k)`` log-probs under ``softmax(logits / temperature)``.
        """
        if not 1 <= k <= self.engine.vocab_size:
            raise ValueError(f"k must be in [1, {self.engine.vocab_size}], got {k}")
        B, m = self.batch_size, self.committed_counts
        logp = (self.engine.next_logits(self.prefill()) / self.config.temperature).log_softmax(dim=-1)
        top = logp.topk(k, dim=-1)
        flat = top.indices.reshape(B * k, 1)
        if self._history is not None:  # the committed tokens first
            flat = self._history.prepend(flat, k, self.pad_token_id)
        tokens = flat.view(B, k, -1)
        lengths = (m + 1).to(tokens.device).view(B, 1).expand(B, k).clone()
        texts = self.engine.texts(flat, lengths.reshape(-1))
        eos = torch.tensor(self.eos_token_ids if self.config.stop_at_eos else [], dtype=torch.long)
        rollout = LMRollout(
            controls=torch.zeros((), dtype=self.dtype, device=self.device).expand(B, k, 1, self.control_dim),
            tokens=tokens,
            lengths=lengths,
            texts=[texts[b * k : (b + 1) * k] for b in range(B)],
            prompts=list(self.prompts),
            pad_token_id=self.pad_token_id,
            finished=torch.isin(top.indices, eos.to(top.indices.device)),
            prefix_lengths=m.view(B, 1).expand(B, k).clone(),
        )
        return rollout, top.values

    def with_horizon(self, horizon: int) -> LMDynamics:
        """A copy that generates at most ``horizon`` more tokens (the prefill is shared; rows with more
        committed tokens than the fewest get fewer: they stop at the same ``max_new_tokens``)."""
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
        self._history: Committed | None = None  # committed response tokens (and their log-probs)
        self._pending: Committed | None = None  # committed tokens not yet in the cache
        self._finished: Tensor | None = None  # (B,)

    def _generate(
        self, controls: Tensor | None, N: int, generators: Sequence[torch.Generator], policy: Any = None
    ) -> LMRollout:
        B, h = self.batch_size, self._history
        self.engine.check_generators(generators, B)
        m = self.committed_counts
        limits = None if h is None or bool((m == m[0]).all()) else (self.config.max_new_tokens - m)
        out = self.engine.decode(
            self.prefill(), controls, N, generators, steps=self.horizon,
            history=None if h is None else h.rows(), policy=policy, limits=limits,
        )  # fmt: skip
        tokens, lengths, applied = out.tokens, out.lengths, out.controls
        logp = None if out.logprobs is None else (out.logprobs, out.base_logprobs)
        if h is not None:  # the committed tokens first: rollouts hold whole responses
            tokens = h.prepend(tokens, N, self.pad_token_id)
            lengths = lengths + m.to(lengths.device).repeat_interleave(N)
            logp = None if logp is None else h.prepend_logprobs(logp, N)  # type: ignore[arg-type]
            if applied is not None:
                applied = _shifted(applied, m.repeat_interleave(N), tokens.shape[1])
        T = tokens.shape[1]
        texts = self.engine.texts(tokens, lengths)

        def per_problem(x: Tensor | None) -> Tensor | None:
            return None if x is None else x.reshape(B, N, *x.shape[1:])

        zero = torch.zeros((), dtype=self.dtype, device=self.device).expand(B, N, 1, self.control_dim)
        return LMRollout(
            controls=zero if applied is None else applied.view(B, N, *applied.shape[1:]),
            tokens=tokens.view(B, N, T),
            lengths=lengths.view(B, N),
            texts=[texts[b * N : (b + 1) * N] for b in range(B)],
            prompts=list(self.prompts),
            logprobs=per_problem(None if logp is None else logp[0]),
            base_logprobs=per_problem(None if logp is None else logp[1]),
            pad_token_id=self.pad_token_id,
            finished=per_problem(out.finished),
            prefix_lengths=m.view(B, 1).expand(B, N).clone(),
            last_states=per_problem(out.last_states),
        )


def _counts(steps: int | Sequence[int], rows: int, horizon: int, left: Tensor) -> Tensor:
    """``(rows,)`` long counts to commit: an int in ``[1, horizon]`` for every row (capped at each
    row's tokens ``left``), or one count per row in ``[0, left[b]]``."""
    if isinstance(steps, int):
        if not 1 <= steps <= horizon:
            raise ValueError(f"steps must be in [1, {horizon}] (tokens left), got {steps}")
        return torch.full((rows,), steps, dtype=torch.long).minimum(left)
    counts = torch.tensor([int(k) for k in steps], dtype=torch.long)
    if counts.shape != (rows,) or bool((counts < 0).any()) or bool((counts > left).any()):
        raise ValueError(
            f"give one count per row, each in [0, tokens left] ({left.tolist()}), got {counts.tolist()}"
        )
    return counts


def _columns(x: Tensor, start: Tensor, width: int, pad: float) -> Tensor:
    """``(B, width)``: columns ``start[b] .. start[b] + width`` of row ``b`` of ``x`` ``(B, L)``,
    ``pad`` past ``L``."""
    B, L = x.shape
    cols = start.to(x.device).unsqueeze(1) + torch.arange(width, device=x.device)
    if L == 0:
        return x.new_full((B, width), pad)
    return torch.where(
        cols < L, x.gather(1, cols.clamp(max=L - 1)), torch.full_like(cols, 0).to(x.dtype) + pad
    )


def _shifted(applied: Tensor, start: Tensor, width: int) -> Tensor:
    """``(R, width, d)`` zeros with row ``r``'s ``(R, T, d)`` ``applied`` controls from column
    ``start[r]`` on (the committed tokens, which came before, got none from this decode)."""
    R, T, d = applied.shape
    out = applied.new_zeros((R, width, d))
    cols = (start.to(applied.device).unsqueeze(1) + torch.arange(T, device=applied.device)).clamp(
        max=width - 1
    )
    return out.scatter_(1, cols.unsqueeze(-1).expand(R, T, d), applied)
