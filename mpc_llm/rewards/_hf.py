"""Loading Hugging Face models and tokenizers for rewards, with clear errors when offline.

transformers is an optional extra (``mpc_llm[hf]``), so it is imported only when a model is loaded.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from mpc_llm.rewards._optional import require


def transformers_module(feature: str) -> Any:
    """``transformers``, or a `MissingDependencyError` naming ``feature`` and the ``hf`` extra."""
    return require("transformers", extra="hf", feature=feature)


def load_pretrained(
    auto_class: Any,
    source: str | os.PathLike[str],
    *,
    what: str,
    local_files_only: bool = False,
    **kwargs: Any,
) -> Any:
    """``auto_class.from_pretrained(source, **kwargs)``: local folder, then the local cache, then the hub.

    Args:
        auto_class: e.g. ``AutoModelForSequenceClassification`` or ``AutoTokenizer``.
        source: a model id or a local folder.
        what: what is being loaded, for the error message (e.g. ``"reward model"``).
        local_files_only: never try the network.

    Raises:
        OSError: if nothing could be loaded, saying that no hub may be reachable and suggesting a
            local path.
    """
    source = os.fspath(source)
    if os.path.isdir(source):
        return auto_class.from_pretrained(source, **kwargs)
    try:  # a model in the local cache loads without touching the network
        return auto_class.from_pretrained(source, local_files_only=True, **kwargs)
    except OSError as cached_error:
        if local_files_only:
            raise OSError(
                f"could not load the {what} {source!r}: it is not a local folder and not in the local "
                f"Hugging Face cache (local_files_only=True). Pass the path of a folder that holds the "
                f"model (e.g. one made with `hf download {source} --local-dir DIR`)."
            ) from cached_error
    try:
        return auto_class.from_pretrained(source, **kwargs)
    except OSError as exc:
        raise OSError(
            f"could not load the {what} {source!r}: it is not a local folder, not in the local Hugging "
            f"Face cache, and downloading it failed (no model hub may be reachable from this machine, "
            f"or the id is wrong). Download it where there is network access "
            f"(`hf download {source} --local-dir DIR`) and pass the local path DIR. "
            f"Cause: {exc}"
        ) from exc


def resolve_tokenizer(
    tokenizer: str | os.PathLike[str] | Any | None,
    source: str | None,
    *,
    what: str,
    local_files_only: bool = False,
    **kwargs: Any,
) -> Any:
    """A tokenizer object: the one given, or loaded from a path / id, or from the model's ``source``.

    Raises:
        ValueError: if no tokenizer is given and the model object does not say where it came from.
    """
    if tokenizer is None:
        if not source:
            raise ValueError(f"pass the {what}'s tokenizer: the model object does not say where it came from")
        tokenizer = source
    if isinstance(tokenizer, (str, os.PathLike)):
        tf = transformers_module(what)
        return load_pretrained(
            tf.AutoTokenizer, tokenizer, what=f"{what} tokenizer", local_files_only=local_files_only, **kwargs
        )
    return tokenizer


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter (CPU for a model without parameters)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
