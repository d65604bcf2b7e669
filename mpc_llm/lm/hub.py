"""Loading any `transformers` auto class from a local folder, the local cache or the hub.

The one loader that causal LMs, reward models, judges and their tokenizers all go through, so that
every one of them fails the same way when no hub is reachable: with a message that says to pass a
local folder. transformers is an optional extra (``mpc_llm[hf]``), imported only when a model loads.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from mpc_llm.core import require


def transformers_module(feature: str) -> ModuleType:
    """``transformers``, or a `MissingDependencyError` naming ``feature`` and the ``hf`` extra."""
    return require("transformers", extra="hf", feature=feature)


def looks_like_a_path(name: str) -> bool:
    """A hub id is ``name`` or ``org/name``; anything else with a slash or a leading ``.``/``~`` is a path."""
    return (
        name.startswith(("/", ".", "~"))
        or name.count("/") > 1
        or "\\" in name
        or (os.sep != "/" and os.sep in name)
    )


def load_pretrained(
    auto_class: Any,
    source: str | os.PathLike[str],
    *,
    what: str,
    local_files_only: bool = False,
    **kwargs: Any,
) -> Any:
    """``auto_class.from_pretrained(source, **kwargs)``: a local folder, else the local cache, else the hub.

    Args:
        auto_class: e.g. ``AutoModelForCausalLM``, ``AutoModelForSequenceClassification``, ``AutoTokenizer``.
        source: a hub id (``name`` or ``org/name``) or a local folder.
        what: what is being loaded, for messages (e.g. ``"reward model"``, ``"model tokenizer"``).
        local_files_only: never try the network.
        kwargs: passed to ``from_pretrained`` (None values are dropped).

    Raises:
        FileNotFoundError: ``source`` looks like a path and does not exist (the hub is not asked).
        ValueError: ``source`` is a file, not a folder.
        OSError: nothing could be loaded; the message says whether the hub was needed and how to pass
            a local folder instead.
    """
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    name = os.fspath(source)
    path = Path(name).expanduser()
    if path.is_dir():
        try:
            return auto_class.from_pretrained(str(path), **kwargs)
        except (OSError, ValueError) as exc:
            raise OSError(
                f"no usable {what} found in {path}; save one there (save_pretrained) or pass it explicitly. "
                f"Original error: {exc}"
            ) from exc
    if path.exists():
        raise ValueError(f"{path} is a file; pass a folder with config.json and weights, or a .gguf file")
    if looks_like_a_path(name):
        raise FileNotFoundError(
            f"no such folder: {path}; pass an existing local folder (with config.json and weights, as "
            "save_pretrained writes) or a .gguf file, or a hub id such as 'org/name'"
        )
    try:  # a model in the local cache loads without touching the network
        return auto_class.from_pretrained(name, **{**kwargs, "local_files_only": True})
    except OSError as cached_error:
        if local_files_only:
            raise OSError(
                f"could not load the {what} {name!r}: it is not a local folder and not in the local "
                f"Hugging Face cache (local_files_only=True). Pass a local folder (the path of a folder "
                f"that holds the model, e.g. one made with `hf download {name} --local-dir DIR`) or a "
                f".gguf file."
            ) from cached_error
    try:
        return auto_class.from_pretrained(name, **kwargs)
    except OSError as exc:
        raise OSError(
            f"could not load the {what} {name!r}: it is not a local folder, not in the local Hugging "
            f"Face cache, and downloading it failed (no model hub may be reachable from this machine, "
            f"or the id is wrong). Download it where there is network access "
            f"(`hf download {name} --local-dir DIR`) and pass the local path DIR. "
            f"(Set HF_HUB_OFFLINE=1 to fail fast without network.) Cause: {exc}"
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
        tf = transformers_module(f"to load the {what}'s tokenizer")
        return load_pretrained(
            tf.AutoTokenizer, tokenizer, what=f"{what} tokenizer", local_files_only=local_files_only, **kwargs
        )
    return tokenizer


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter (CPU for a model without parameters)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
