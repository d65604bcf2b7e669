"""Which floating dtype a model runs in: dtype names, ``"auto"``, and native bfloat16.

``"auto"`` (the default of the command line, config files, `LMDynamics`, the judge reward and
value collection) is bfloat16 where the device computes it natively and float32 elsewhere:

- a CPU with AVX-512 BF16 or AMX tiles (a bfloat16 matrix product there runs ~4x a float32 one);
- a CUDA GPU that supports bfloat16 (Ampere and later);
- anything else (older CPUs, Apple MPS): float32.

Only the model's own forward runs in that dtype. Sampling, log-probabilities, closeness figures and
importance weights are computed in float32 from the logits the model actually sampled from, and a
control is added to the pre-logit in float32 (`mpc_llm.lm.control`).

Example:
    >>> resolve_dtype("bf16"), resolve_dtype("float32"), resolve_dtype(None)
    (torch.bfloat16, torch.float32, None)
    >>> resolve_dtype("auto", "cpu") in (torch.bfloat16, torch.float32)
    True
    >>> dtype_name(torch.bfloat16)
    'bfloat16'
"""

from __future__ import annotations

import torch

#: the dtype names accepted besides torch's own (``float32``, ``bfloat16``, ``float16``)
ALIASES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}

#: what ``--dtype`` accepts, for messages
CHOICES = "auto, float32, bfloat16 or float16"


def _device(device: str | torch.device | None) -> torch.device:
    """The first device of ``device`` (``"cuda:0,cuda:1"`` -> cuda:0; None -> cpu)."""
    if device is None:
        return torch.device("cpu")
    if isinstance(device, torch.device):
        return device
    return torch.device(str(device).split(",")[0].strip())


def native_bfloat16(device: str | torch.device | None = None) -> bool:
    """Whether ``device`` (default CPU) computes bfloat16 natively: a CPU with AVX-512 BF16 or AMX, or
    a CUDA GPU that supports bfloat16 without emulation."""
    where = _device(device)
    if where.type == "cuda":
        if not torch.cuda.is_available():
            return False
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # older torch: no including_emulation
            return bool(torch.cuda.is_bf16_supported())
    if where.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)
    return False


def auto_dtype(device: str | torch.device | None = None) -> torch.dtype:
    """bfloat16 where ``device`` computes it natively (`native_bfloat16`), else float32."""
    return torch.bfloat16 if native_bfloat16(device) else torch.float32


def resolve_dtype(
    dtype: torch.dtype | str | None, device: str | torch.device | None = None
) -> torch.dtype | None:
    """A dtype from a name (``"bfloat16"``, ``"bf16"``, ``"torch.float16"``), ``"auto"`` resolved for
    ``device`` (`auto_dtype`); None stays None (the weights' own dtype).

    Raises:
        ValueError: an unknown name, saying which names are accepted.
    """
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    text = str(dtype).strip().lower()
    if text == "auto":
        return auto_dtype(device)
    name = ALIASES.get(text, text).removeprefix("torch.")
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(f"unknown dtype {dtype!r}; use {CHOICES}")
    return value


def check_dtype(
    dtype: torch.dtype | str | None, device: str | torch.device | None = None
) -> torch.dtype | None:
    """`resolve_dtype`, refusing bfloat16 on a device that does not compute it natively (it would run,
    emulated, slower than float32).

    Raises:
        ValueError: one line naming ``--dtype``, the device and what it supports.
    """
    resolved = resolve_dtype(dtype, device)
    if resolved is torch.bfloat16 and not native_bfloat16(device):
        where = _device(device)
        kind = (
            "this CPU has no AVX-512 BF16 or AMX"
            if where.type == "cpu"
            else f"{where} has no native bfloat16"
        )
        raise ValueError(
            f"--dtype {dtype}: {kind}, so bfloat16 would be emulated (slower than float32); "
            f"use --dtype float32 (or auto, which picks float32 here)"
        )
    return resolved


def dtype_name(dtype: torch.dtype | str | None) -> str | None:
    """The short name of a dtype (``torch.bfloat16`` -> ``"bfloat16"``), as records and settings store it."""
    if dtype is None:
        return None
    if isinstance(dtype, str):
        return dtype
    return str(dtype).removeprefix("torch.")
