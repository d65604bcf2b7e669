"""Loading any `transformers` auto class from a local folder, the local cache or the hub.

The one loader that causal LMs, reward models, judges and their tokenizers all go through, so that
every one of them fails the same way when no hub is reachable: with a message that says to pass a
local folder. transformers is an optional extra (``mpc_llm[hf]``), imported only when a model loads.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

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
            a local folder instead. When the hub must be asked, one quick connection attempt comes
            first (`hub_unreachable`), so a machine without network fails in seconds, not after the
            hub client's retries.
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
    gguf = " or a .gguf file" if what == "model" else ""
    if path.exists():
        raise ValueError(f"{path} is a file; pass a folder with config.json and weights{gguf}")
    if looks_like_a_path(name):
        raise FileNotFoundError(
            f"no such folder: {path}; pass an existing local folder (with config.json and weights, as "
            f"save_pretrained writes){gguf}, or a hub id such as 'org/name'"
        )
    base = f"could not load the {what} {name!r}: it is not a local folder and not in the local Hugging Face "
    base += "cache"
    advice = f"`hf download {name} --local-dir DIR` where there is network access, and pass the local path "
    advice += f"DIR{gguf}"
    try:  # a model in the local cache loads without touching the network
        return auto_class.from_pretrained(name, **{**kwargs, "local_files_only": True})
    except OSError as cached_error:
        if local_files_only:
            raise OSError(
                f"{base} (local_files_only=True). Pass a local folder (the path of a folder that holds "
                f"the model, e.g. one made with `hf download {name} --local-dir DIR`){gguf}."
            ) from cached_error
        if hub_offline():
            raise OSError(
                f"{base}, and HF_HUB_OFFLINE is set: no hub was asked, as no model hub may be reachable "
                f"from this machine. Check the id, or download the model: {advice}."
            ) from cached_error
    if (unreachable := hub_unreachable()) is not None:
        raise OSError(
            f"{base}, and no model hub may be reachable from this machine ({unreachable}). "
            f"Check the id, or download the model: {advice}."
        )
    try:
        return auto_class.from_pretrained(name, **kwargs)
    except OSError as exc:
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OSError(
            f"{base}, and downloading it failed (no model hub may be reachable from this machine, or the "
            f"id is wrong or private). Download it: {advice}. Cause: {cause}"
        ) from exc


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` asks never to contact the hub (the environment, or the hub client's
    setting when it is loaded)."""
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None and getattr(constants, "HF_HUB_OFFLINE", False):
        return True
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_unreachable(timeout: float = 5.0) -> str | None:
    """Why the hub's host cannot be reached (a name that does not resolve, a refused or timed-out
    connection), or None when it can, or when a proxy is configured (the proxy decides).

    One connection attempt of at most ``timeout`` seconds (name resolution included), instead of
    the hub client's five retries with back-off (about half a minute) on a machine without network.
    """
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    parsed = urlsplit(endpoint)
    host = parsed.hostname
    if not host:
        return None
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(f"{host}:{port}: {exc.strerror or exc}")

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        return f"{host}:{port}: no answer within {timeout:g} s"
    return outcome[0]


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
