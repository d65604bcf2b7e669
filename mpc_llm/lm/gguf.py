"""GGUF files and the fast-load cache.

GGUF files are de-quantised at load time (~20 s for SmolLM2 on two CPU cores) and the model that
`transformers` returns refuses ``save_pretrained``. The first load of a GGUF file therefore writes a
plain ``safetensors`` copy (state dict, config, generation config and tokenizer) to the fast-load
cache, ``$MPC_LLM_CACHE`` (default ``$XDG_CACHE_HOME/mpc_llm`` or ``~/.cache/mpc_llm``); later loads
read it in about a second.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from mpc_llm.core import require
from mpc_llm.lm.hub import load_pretrained, transformers_module

CACHE_FORMAT = "1"  # bump when the layout of the fast-load cache changes
COMPLETE = "mpc_llm-cache-complete"


def cache_root() -> Path:
    """The fast-load cache: ``$MPC_LLM_CACHE``, else ``$XDG_CACHE_HOME/mpc_llm`` or ``~/.cache/mpc_llm``."""
    if env := os.environ.get("MPC_LLM_CACHE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "mpc_llm"


def cache_dir(file: Path) -> Path:
    """Where the fast-load copy of GGUF ``file`` lives (keyed by path, size, mtime and versions)."""
    import transformers

    stat = file.stat()
    key = f"{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{transformers.__version__}|{CACHE_FORMAT}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_root() / "gguf" / f"{file.stem}-{digest}"


def is_cached(file: Path) -> bool:
    """Whether the fast-load cache holds a complete copy of GGUF ``file``."""
    return file.is_file() and (cache_dir(file) / COMPLETE).is_file()


def load_gguf(
    file: Path, dtype: torch.dtype | str | None, use_cache: bool, device_map: str | dict[str, Any] | None
) -> tuple[Any, Any]:
    """A GGUF model and its tokenizer, through the fast-load cache when possible."""
    if not file.is_file():
        raise FileNotFoundError(f"GGUF file {file} does not exist; pass the path of an existing .gguf file")
    cached = cache_dir(file)
    if use_cache and (cached / COMPLETE).is_file():
        try:
            return load_cached(cached, dtype, device_map)
        except Exception as exc:  # a corrupt cache must never block loading: rebuild it
            warnings.warn(
                f"ignoring unreadable fast-load cache {cached} ({exc}); rebuilding it", stacklevel=3
            )
            shutil.rmtree(cached, ignore_errors=True)
    require("gguf", extra="hf", feature="to read GGUF files")
    require("accelerate", extra="hf", feature="to load GGUF files")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name)
    model = AutoModelForCausalLM.from_pretrained(file.parent, gguf_file=file.name)
    if use_cache:
        try:
            write_cache(model, tokenizer, cached)
        except OSError as exc:
            warnings.warn(
                f"could not write the fast-load cache {cached} ({exc}); set MPC_LLM_CACHE to a writable "
                "folder to make later loads fast",
                stacklevel=3,
            )
        else:
            del model
            return load_cached(cached, dtype, device_map)  # a fresh cache that fails to load: raise
    if dtype not in (None, "auto"):
        model = model.to(dtype)  # type: ignore[arg-type]
    return model, tokenizer


def load_gguf_tokenizer(file: Path) -> Any:
    """The tokenizer stored in GGUF ``file`` (from the fast-load cache when it is there)."""
    cached = cache_dir(file)
    if (cached / COMPLETE).is_file():
        tf = transformers_module("to load tokenizers")
        return load_pretrained(tf.AutoTokenizer, cached, what="tokenizer", local_files_only=True)
    require("gguf", extra="hf", feature="to read GGUF files")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name)


def load_cached(
    cached: Path, dtype: torch.dtype | str | None, device_map: str | dict[str, Any] | None
) -> tuple[Any, Any]:
    """The model and tokenizer from a fast-load cache entry."""
    tf = transformers_module("to load Hugging Face models")
    if device_map is not None:
        require("accelerate", extra="hf", feature="for device_map")
    model = load_pretrained(
        tf.AutoModelForCausalLM,
        cached,
        what="model",
        local_files_only=True,
        dtype=dtype,
        device_map=device_map,
    )
    return model, load_pretrained(tf.AutoTokenizer, cached, what="tokenizer", local_files_only=True)


def write_cache(model: Any, tokenizer: Any, target: Path) -> None:
    """Save ``model`` (state dict, de-duplicating tied tensors), its configs and tokenizer to ``target``."""
    from safetensors.torch import save_file

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        tensors: dict[str, torch.Tensor] = {}
        seen: set[tuple[int, int]] = set()
        for name, tensor in model.state_dict().items():
            key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
            if key in seen:  # a tied weight (e.g. lm_head = embed_tokens): from_pretrained re-ties it
                continue
            seen.add(key)
            tensors[name] = tensor.detach().cpu().contiguous()
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(tmp)
        if model.generation_config is not None:
            model.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / COMPLETE).write_text("ok\n")
        if target.exists():  # another process won the race; keep its copy
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
