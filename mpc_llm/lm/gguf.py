"""GGUF files and the fast-load cache.

GGUF files are de-quantised at load time (~20 s for SmolLM2 on two CPU cores) and the model that
`transformers` returns refuses ``save_pretrained``. The first load of a GGUF file therefore writes a
plain ``safetensors`` copy (state dict, config, generation config and tokenizer) to the fast-load
cache, ``$MPC_LLM_CACHE`` (default ``$XDG_CACHE_HOME/mpc_llm`` or ``~/.cache/mpc_llm``); later loads
read it in about a second.

`check_gguf_file` reads a file's header and tensor table (a tenth of a second) and refuses, naming
the file, one that is empty, not GGUF or truncated, before anything expensive runs.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import shutil
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from mpc_llm.core import require
from mpc_llm.lm.hub import load_pretrained, transformers_module

CACHE_FORMAT = "1"  # bump when the layout of the fast-load cache changes
COMPLETE = "mpc_llm-cache-complete"

_MAGIC = b"GGUF"
_VERSIONS = (2, 3)
#: byte widths of the fixed-size metadata value types (u8, i8, u16, i16, u32, i32, f32, bool, u64, i64, f64)
_WIDTH = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9


class GGUFFileError(ValueError):
    """A GGUF file is missing, empty, not GGUF, truncated or corrupt; the message names the file."""


def _damaged(file: Path, what: str) -> GGUFFileError:
    return GGUFFileError(
        f"GGUF file {file} {what}; download it again (a partial download or copy?) or pass another model"
    )


def check_gguf_file(file: str | os.PathLike[str]) -> Path:
    """Refuse a GGUF file that is missing, empty, not GGUF or shorter than its tensor table says.

    Reads only the header, the metadata and the tensor table (no tensor data), so it is fast.

    Raises:
        FileNotFoundError: the file does not exist (or is a folder).
        GGUFFileError: the file is empty, not a GGUF file, of an unknown version, or truncated.
    """
    path = Path(file).expanduser()
    if path.is_dir():
        raise GGUFFileError(f"{path} is a folder, not a .gguf file; pass the path of the .gguf file in it")
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {path} does not exist; pass the path of an existing .gguf file")
    size = path.stat().st_size
    if size == 0:
        raise _damaged(path, "is empty (0 bytes)")
    with path.open("rb") as handle:
        if handle.read(4) != _MAGIC:
            raise GGUFFileError(
                f"{path} is not a GGUF file (it does not start with 'GGUF'); pass a .gguf file, a folder "
                "with config.json and weights, or a hub id"
            )
        if size < 24:
            raise _damaged(path, f"is truncated ({size} bytes, shorter than a GGUF header)")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as blob:
            try:
                needed = _tensor_data_end(blob, path)
            except (struct.error, IndexError, UnicodeDecodeError, OverflowError) as exc:
                raise _damaged(path, f"is truncated or corrupt: its metadata cannot be read ({exc})") from exc
    if needed is not None and needed > size:
        raise _damaged(path, f"is truncated: it holds {size:,} bytes but its tensors need {needed:,}")
    return path


def _tensor_data_end(blob: mmap.mmap, path: Path) -> int | None:
    """Where the last tensor's data ends (None when a tensor type's size is unknown here)."""
    (version,) = struct.unpack_from("<I", blob, 4)
    if version not in _VERSIONS:
        raise GGUFFileError(f"GGUF file {path} has version {version}; only versions 2 and 3 can be read")
    tensor_count, kv_count = struct.unpack_from("<QQ", blob, 8)
    pos = 24
    alignment = 32

    def string(at: int) -> tuple[bytes, int]:
        (length,) = struct.unpack_from("<Q", blob, at)
        end = at + 8 + length
        if end > len(blob):
            raise IndexError(f"a string runs past the end of the file at byte {at}")
        return blob[at + 8 : end], end

    def skip(at: int, kind: int) -> int:
        if kind in _WIDTH:
            return at + _WIDTH[kind]
        if kind == _STRING:
            return string(at)[1]
        if kind == _ARRAY:
            item, count = struct.unpack_from("<IQ", blob, at)
            at += 12
            if item in _WIDTH:
                return at + count * _WIDTH[item]
            for _ in range(count):
                at = skip(at, item)
            return at
        raise IndexError(f"unknown metadata value type {kind} at byte {at}")

    for _ in range(kv_count):
        key, pos = string(pos)
        (kind,) = struct.unpack_from("<I", blob, pos)
        pos += 4
        if key == b"general.alignment" and kind == 4:
            (alignment,) = struct.unpack_from("<I", blob, pos)
        pos = skip(pos, kind)
    ends: list[int | None] = []
    for _ in range(tensor_count):
        _, pos = string(pos)
        (dims,) = struct.unpack_from("<I", blob, pos)
        shape = struct.unpack_from(f"<{dims}Q", blob, pos + 4)
        ggml_type, offset = struct.unpack_from("<IQ", blob, pos + 4 + 8 * dims)
        pos += 4 + 8 * dims + 12
        ends.append(_end_of(offset, ggml_type, shape))
    data_start = -(-pos // max(alignment, 1)) * max(alignment, 1)
    if pos > len(blob):
        raise IndexError("the tensor table runs past the end of the file")
    if not ends:
        return data_start
    return None if None in ends else data_start + max(e for e in ends if e is not None)


def _end_of(offset: int, ggml_type: int, shape: tuple[int, ...]) -> int | None:
    """End of one tensor's data relative to the data section (None when its type is unknown)."""
    try:
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (ImportError, ValueError, KeyError):
        return None
    elements = 1
    for n in shape:
        elements *= n
    return offset + elements // block * type_size


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
    """A GGUF model and its tokenizer, through the fast-load cache when possible.

    Raises:
        FileNotFoundError: the file does not exist.
        GGUFFileError: the file is empty, not GGUF, truncated, or cannot be read (the message names it).
    """
    if not file.is_file():
        check_gguf_file(file)  # says whether it is missing or a folder
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
    check_gguf_file(file)  # empty, not GGUF or truncated: refused naming the file, before parsing it
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _reading(file):
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
    check_gguf_file(file)
    from transformers import AutoTokenizer

    with _reading(file):
        return AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name)


@contextmanager
def _reading(file: Path) -> Iterator[None]:
    """Name ``file`` in any error that reading it raises (a reshape or ``struct`` error names nothing)."""
    try:
        yield
    except (ImportError, MemoryError):
        raise
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GGUFFileError(
            f"cannot read GGUF file {file} ({type(exc).__name__}: {detail}); it may be truncated, corrupt or "
            "of an architecture transformers cannot load from GGUF: download it again or pass another model"
        ) from exc


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
