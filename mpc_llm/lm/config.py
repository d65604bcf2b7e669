"""`LMConfig`: the decoding options of the engine (validated; loadable from YAML / JSON)."""

from __future__ import annotations

import warnings
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class LMConfig(BaseModel):
    """Decoding options.

    Attributes:
        max_new_tokens: longest response, in tokens: the dynamics' ``horizon``.
        temperature: softmax temperature of sampling and of the reported log-probs.
        top_k: sample among the ``k`` most likely tokens only (None: all).
        top_p: nucleus sampling mass (None: no nucleus filtering).
        greedy: take the argmax instead of sampling (the control is then the only randomness).
        stop_at_eos: end a response at an end-of-sequence token (it counts in the length).
        stop_strings: end a response when its text contains one (the text is cut before it).
        chat_template: format prompts with the tokenizer's chat template (None: when it has one).
        return_logprobs: record per-token log-probs under the controlled and the unperturbed model.
        keep_states: keep each response's pre-logit state after its last token (the head's input,
            before any control, at the position that reads the last generated token: one more
            forward step per decode; `LMRollout.last_states`), for a value of the whole text so far
            (`mpc_llm.values.terminal.TerminalValueCost`, twisted SMC). Eager decoding only.
        eos_token_id: end-of-sequence id(s) (default: the tokenizer's and the generation config's).
        sync_every: check "all finished" every this many steps (default 1 on CPU, 8 elsewhere).
        compile: run each decoding step through `torch.compile` (static key/value cache; on CUDA,
            CUDA graphs by default). The first rollout pays the compilation (tens of seconds);
            later ones of the same ``(B * N)`` reuse it. Tokens equal the eager path's up to the
            rounding of fused kernels (bit for bit with ``compile_backend="eager"``).
        static_cache: preallocate the whole response's key/value cache as fixed-shape tensors
            (None: when compiling). Same tokens as the default growing cache, slower in eager mode.
        compile_backend: the `torch.compile` backend ("inductor", or "eager" / "aot_eager" to check).
        compile_mode: the `torch.compile` mode (None: "reduce-overhead", i.e. CUDA graphs, on CUDA,
            the default mode elsewhere).

    The number of controlled tokens, ``tau``, is not a decoding option: it is the length of the
    controls (``(B, N, tau, d)``), set by the controller's ``tau``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_new_tokens: int = Field(64, ge=1)
    temperature: float = Field(1.0, gt=0.0, allow_inf_nan=False)
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    greedy: bool = False
    stop_at_eos: bool = True
    stop_strings: tuple[str, ...] = ()
    chat_template: bool | None = None
    return_logprobs: bool = False
    keep_states: bool = False
    eos_token_id: int | tuple[int, ...] | None = None
    sync_every: int | None = Field(None, ge=1)
    compile: bool = False
    static_cache: bool | None = None
    compile_backend: str = "inductor"
    compile_mode: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _tau_is_the_controllers(cls, data: Any) -> Any:
        if isinstance(data, dict) and "tau" in data:
            raise ValueError(
                "tau (the number of controlled tokens) is a controller setting, not a decoding option: "
                "give it to the controller (e.g. AISP(tau=16), or `controller: {tau: 16}` in a config "
                "file, or --tau on the command line)"
            )
        return data

    @property
    def uses_static_cache(self) -> bool:
        """Whether decoding preallocates a fixed-shape cache (``static_cache``, default: ``compile``)."""
        return self.compile if self.static_cache is None else self.static_cache

    @model_validator(mode="after")
    def _static_cache_for_compile(self) -> LMConfig:
        if self.compile and self.static_cache is False:
            raise ValueError(
                "compile=True needs the static cache (fixed shapes at every step): drop static_cache=False"
            )
        return self

    @model_validator(mode="after")
    def _states_in_eager_decoding(self) -> LMConfig:
        if self.compile and self.keep_states:
            raise ValueError(
                "keep_states reads the head's input at every step, which a compiled decode does not expose; "
                "drop compile or keep_states"
            )
        return self

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
