"""What a model's config and tokenizer say before its weights load: vocabulary, context, dtype.

Checks that need only these (prompts against the context length here; a controller's settings
against the vocabulary or the dtype's range, which the controller itself answers from these facts:
`mpc_llm.controllers.Planner.check_system`) run from `model_facts` before the weights load,
so a bad input is refused in about a second rather than after the model has loaded (minutes for a
7B model). The sources are the model folder's ``config.json`` and tokenizer
(``transformers.AutoConfig`` / ``AutoTokenizer``), the fast-load cache of a GGUF file (or the GGUF
file's own metadata) for the embedded default, and the local Hugging Face cache for a hub id; a
hub is never asked here (the model load reports a model that cannot be found).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mpc_llm.lm.adapters import ARCHITECTURES, Architecture
from mpc_llm.lm.gguf import cache_dir, check_gguf_file, load_gguf_tokenizer
from mpc_llm.lm.hub import looks_like_a_path, transformers_module
from mpc_llm.lm.loading import DEFAULT_MODEL, default_model_path, resolve_dtype
from mpc_llm.lm.prompts import Prompt, encode_prompt, uses_chat_template


@dataclass(frozen=True)
class ModelFacts:
    """A model as its config and tokenizer describe it.

    Attributes:
        vocab_size: the tokens its head scores (None if the config does not say).
        context_length: the longest prompt + response it takes (None if the config does not say).
        dtype: the dtype its weights will load in.
        tokenizer: its tokenizer.
        control_dim: ``d``, the size of its pre-logit (its hidden size; None if the config does not say).
    """

    vocab_size: int | None
    context_length: int | None
    dtype: torch.dtype
    tokenizer: Any
    control_dim: int | None = None

    @property
    def largest_sigma(self) -> float:
        """The largest ``sigma`` (or ``sigma_relative``) its dtype allows over ``control_dim``
        coordinates (`largest_sigma`), which a controller checks its own against."""
        return largest_sigma(self.dtype, self.control_dim)

    @classmethod
    def of(
        cls, dtype: torch.dtype | str | None, control_dim: int | None = None, vocab_size: int | None = None
    ) -> ModelFacts:
        """What is known without the config: the dtype (and, of a loaded model, ``d`` and the
        vocabulary); no context length, no tokenizer."""
        resolved = resolve_dtype(dtype)
        kind = resolved if isinstance(resolved, torch.dtype) else torch.float32
        return cls(vocab_size, None, kind, None, control_dim)

    def check_prompts(
        self, prompts: Sequence[Prompt], max_new_tokens: int, chat_template: bool | None = None
    ) -> None:
        """Refuse a prompt that leaves no room for ``max_new_tokens`` in the context (what the decode
        would refuse once the model has loaded), naming the prompt by its index.

        Raises:
            ValueError: the prompt, its length, the context and what to change.
        """
        template = uses_chat_template(self.tokenizer, chat_template)
        ctx = self.context_length
        for index, prompt in enumerate(prompts):
            n = len(encode_prompt(self.tokenizer, prompt, chat_template=template, index=index))
            if ctx is not None and n + max_new_tokens > ctx:
                what = "longer than" if n >= ctx else "too long for"
                raise ValueError(
                    f"prompt {index} has {n} tokens, {what} the model's context of {ctx} tokens with "
                    f"max_new_tokens={max_new_tokens}; shorten or drop that prompt, or lower "
                    f"--max-new-tokens (prompt + response must fit in {ctx})"
                )


def model_facts(
    model: str | os.PathLike[str] | None, dtype: torch.dtype | str | None = None
) -> ModelFacts | None:
    """The facts of ``model`` (as `mpc_llm.lm.load_model` takes it) from its config and tokenizer,
    without loading its weights; None when they cannot be read without a hub or the model is not
    there (loading it then says why).

    Args:
        model: `DEFAULT_MODEL` or None (the embedded default), a ``.gguf`` file, a local folder, or a
            hub id (read from the local Hugging Face cache only).
        dtype: the dtype asked for (default: the checkpoint's, float32 for GGUF files).
    """
    tf = transformers_module("to read model configs")
    try:
        if model is None or str(model) == DEFAULT_MODEL:
            model = default_model_path()
        path = Path(model).expanduser()
        if path.suffix == ".gguf":
            check_gguf_file(path)
            cached = cache_dir(path)
            if (cached / "config.json").is_file():
                config = tf.AutoConfig.from_pretrained(str(cached), local_files_only=True)
            else:
                config = tf.AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
            tokenizer = load_gguf_tokenizer(path)
            default = torch.float32  # what a GGUF file de-quantises to
        elif path.is_dir() or not looks_like_a_path(str(model)):
            source = str(path) if path.is_dir() else str(model)
            config = tf.AutoConfig.from_pretrained(source, local_files_only=True)
            tokenizer = tf.AutoTokenizer.from_pretrained(source, local_files_only=True)
            default = None
        else:
            return None
    except (OSError, ValueError, ImportError, KeyError):
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    architecture = ARCHITECTURES.get(str(getattr(text, "model_type", "")), Architecture())
    context = next(
        (v for k in architecture.context_keys if isinstance(v := getattr(text, k, None), int) and v > 0), None
    )
    vocab = getattr(text, "vocab_size", None)
    hidden = next(
        (v for k in ("hidden_size", "n_embd", "d_model") if isinstance(v := getattr(text, k, None), int)),
        None,
    )
    return ModelFacts(
        vocab_size=int(vocab) if isinstance(vocab, int) and vocab > 0 else None,
        context_length=context,
        dtype=_load_dtype(dtype, default, text),
        tokenizer=tokenizer,
        control_dim=hidden,
    )


def _load_dtype(asked: torch.dtype | str | None, default: torch.dtype | None, config: Any) -> torch.dtype:
    """The dtype the weights will have: the one asked for, else a GGUF file's float32, else the
    checkpoint's (``config.dtype``), else float32."""
    resolved = resolve_dtype(asked)
    if isinstance(resolved, torch.dtype):
        return resolved
    if default is not None:
        return default
    stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    try:
        value = resolve_dtype(stored) if stored is not None else None
    except ValueError:
        value = None
    return value if isinstance(value, torch.dtype) else torch.float32


#: How far below the dtype's largest number ``sigma * sqrt(d)`` (the norm of a control) must stay:
#: room for the noise's tail and for the head's sum over ``d`` coordinates, so logits stay finite.
SCALE_HEADROOM = 100.0


def largest_sigma(dtype: torch.dtype | str | None, control_dim: int | None = None) -> float:
    """The largest ``sigma`` (or ``sigma_relative``) the model's ``dtype`` allows: ``finfo.max /
    (SCALE_HEADROOM * sqrt(d))`` (``d`` unknown: 1).

    Example:
        >>> f"{largest_sigma('float16', 4096):.3g}"
        '10.2'
    """
    resolved = resolve_dtype(dtype)
    kind = resolved if isinstance(resolved, torch.dtype) else torch.float32
    return float(torch.finfo(kind).max) / (SCALE_HEADROOM * math.sqrt(control_dim or 1))
