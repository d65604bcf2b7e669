"""One table of per-architecture quirks, and the adapter that drives a loaded causal LM.

The engine needs five things from a model: its LM head (the module whose input is the pre-logit),
the size of that input ``d``, its context length, the keyword its forward takes for the key/value
cache (and whether it can compute the last position's logits only), and whatever it does to the
head's output. Almost every family answers them the same way; the differences are declared here,
in `ARCHITECTURES`, and nowhere else.

How the families differ, and where it is handled:

- **tied heads and head biases** (GPT-2 and Llama tie the head to the embeddings; Phi's head has
  a bias): nothing to do; the control is added to the head's *input* by a forward pre-hook, so the
  model's own head module (tied weight, bias) computes the logits.
- **post-head transforms** (Gemma-2/3 final-logit soft-capping, Cohere's logit scale, Granite's
  logit scaling): the model applies them after the head inside its own forward, so the hook keeps
  them in place. They are declared here (`Architecture.post_head`) so that logits can also be
  computed from pre-logits by hand (`ModelAdapter.logits`); a test checks each declaration against
  the model's own forward.
- **context length**: GPT-2 names it ``n_positions``, most families ``max_position_embeddings``.
- **sliding-window caches** (Gemma-2, Mistral...): their cache layers are repeated as they are;
  only plain full-attention layers are preallocated (`mpc_llm.lm.cache`, decided by layer type).
- **forward keywords**: ``cache=`` (transformers >= 5.x) or ``past_key_values=``, and
  ``logits_to_keep``, are read from the forward's signature.

To support a new family with a quirk, add an `Architecture` under its ``config.model_type``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

#: Names a config may give its context length, tried in order when the family declares none.
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def _softcap(logits: Tensor, config: Any) -> Tensor:
    cap = getattr(config, "final_logit_softcapping", None)
    return cap * torch.tanh(logits / cap) if cap else logits


def _logit_scale(logits: Tensor, config: Any) -> Tensor:
    return logits * float(getattr(config, "logit_scale", 1.0))


def _logits_scaling(logits: Tensor, config: Any) -> Tensor:
    return logits / float(getattr(config, "logits_scaling", 1.0))


@dataclass(frozen=True)
class Architecture:
    """What is particular about one model family.

    Attributes:
        context_keys: config attributes that hold the context length, in order.
        post_head: what the model does to the head's output, ``(logits, config) -> logits``.
        notes: what else a reader should know (kept with the declaration).
    """

    context_keys: tuple[str, ...] = CONTEXT_KEYS
    post_head: Callable[[Tensor, Any], Tensor] | None = None
    notes: str = ""


#: Families by ``config.model_type``; any other family uses ``Architecture()``.
ARCHITECTURES: dict[str, Architecture] = {
    "gpt2": Architecture(context_keys=("n_positions",), notes="head tied to the token embeddings"),
    "llama": Architecture(notes="head tied to the embeddings in small models (SmolLM2)"),
    "phi": Architecture(notes="the LM head has a bias"),
    "gemma2": Architecture(post_head=_softcap, notes="final-logit soft-capping; sliding-window layers"),
    "gemma3_text": Architecture(post_head=_softcap, notes="final-logit soft-capping; sliding-window layers"),
    "cohere": Architecture(post_head=_logit_scale, notes="logits multiplied by logit_scale"),
    "cohere2": Architecture(post_head=_logit_scale, notes="logits multiplied by logit_scale"),
    "granite": Architecture(post_head=_logits_scaling, notes="logits divided by logits_scaling"),
    "granitemoe": Architecture(post_head=_logits_scaling, notes="logits divided by logits_scaling"),
}


def text_config(model: Any) -> Any:
    """The language model's config (the text part of a multimodal config)."""
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


class ModelAdapter:
    """A loaded causal LM as the engine and the judge drive it.

    Args:
        model: a `transformers` causal LM whose ``get_output_embeddings()`` returns its head.

    Raises:
        ValueError: if the model has no LM head module.

    Example:
        >>> from mpc_llm.lm.testing import random_model, tiny_config
        >>> adapter = ModelAdapter(random_model(tiny_config("gemma2", 64)))
        >>> adapter.control_dim, adapter.context_length, adapter.architecture.post_head is not None
        (64, 256, True)
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.model_type = str(getattr(text_config(model), "model_type", ""))
        self.architecture = ARCHITECTURES.get(self.model_type, Architecture())
        head = model.get_output_embeddings()
        if head is None:
            raise ValueError(
                f"{type(model).__name__} has no output embeddings (LM head); pre-logit control needs a "
                "causal LM whose get_output_embeddings() returns its head"
            )
        self.head: torch.nn.Module = head
        params = inspect.signature(model.forward).parameters
        self.cache_keyword = "cache" if "cache" in params else "past_key_values"
        self.keeps_last_logits = "logits_to_keep" in params

    @property
    def control_dim(self) -> int:
        """``d``, the size of the pre-logit (the LM head's input)."""
        if hasattr(self.head, "in_features"):
            return int(self.head.in_features)
        return int(self.head.weight.shape[-1])  # type: ignore[union-attr, index]

    @property
    def device(self) -> torch.device:
        """Where the LM head lives (controls and generators go there)."""
        return self.head.weight.device  # type: ignore[union-attr, return-value]

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the LM head's weights."""
        return self.head.weight.dtype  # type: ignore[union-attr, return-value]

    @property
    def context_length(self) -> int | None:
        """The longest sequence the model takes (prompt + response), or None if its config says none."""
        config = text_config(self.model)
        for name in self.architecture.context_keys:
            value = getattr(config, name, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def logits(self, z: Tensor) -> Tensor:
        """Logits from pre-logits ``z`` ``(..., d)``: the head, then the family's post-head transform."""
        logits = self.head(z)
        post = self.architecture.post_head
        return post(logits, text_config(self.model)) if post is not None else logits

    def forward(
        self,
        input_ids: Tensor,
        mask: Tensor,
        positions: Tensor,
        cache: Any = None,
        *,
        use_cache: bool = True,
        module: Any = None,
    ) -> Any:
        """One forward pass that computes the last position's logits only (when the model can).

        Args:
            input_ids, mask, positions: ``(R, L)`` token ids, attention mask (over the cache and
                the new tokens: ``(R, cached + L)``) and position ids.
            cache: the key/value cache to extend (None: start one when ``use_cache``).
            module: what to call instead of the model (e.g. its `torch.compile` wrapper).
        """
        kwargs: dict[str, Any] = {"use_cache": use_cache}
        if use_cache:
            kwargs[self.cache_keyword] = cache
        if self.keeps_last_logits:
            kwargs["logits_to_keep"] = 1
        model = self.model if module is None else module
        return model(input_ids=input_ids, attention_mask=mask, position_ids=positions, **kwargs)

    @staticmethod
    def output_cache(out: Any) -> Any:
        """The key/value cache of a forward's output (the field is ``past_key_values`` or ``cache``)."""
        cache = getattr(out, "cache", None)
        return cache if cache is not None else out.past_key_values
