"""Where a decoding step's time goes: one profiled run split into model forward, cache, hook, sampling.

`profile_decode` runs a function once under `torch.profiler` with labels put around:

- every model forward (the model's ``forward``; the first call of a run is the prompt's prefill),
- key/value cache writes (``update`` of the `transformers` cache layers and of ours), inside a forward,
- the pre-logit control hook (`mpc_llm.lm.control.PreLogitControl`), inside a forward,
- our token choice (`mpc_llm.lm.decoding`: `choose_tokens`, `token_logprobs`).

Top-level operators outside a forward are "sampling" when they are the token-choice kind (softmax,
multinomial, top-k, cumsum, searchsorted, random draws...; the whole of ``generate``'s logits
processing and ``multinomial``) and "bookkeeping" otherwise (masks, finished rows, stopping
criteria); what the profiler did not see at all is Python and host overhead (wall time minus every
top-level event). On CUDA the operator times are host-side (launches); the kernels' total device
time is printed beside them. The profiler adds its own overhead: read shares, not absolute times.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, record_function

import mpc_llm.lm.control as control_module
import mpc_llm.lm.decoding as engine_module
from mpc_llm.lm.cache import growing_layer_class

FORWARD, CACHE, HOOK, SAMPLE = "## forward", "## cache", "## hook", "## sampling"
CATEGORIES = ("prefill", "forward", "cache", "hook", "sampling", "bookkeeping", "python/host")
SAMPLING_OPS = {
    "aten::softmax", "aten::_softmax", "aten::log_softmax", "aten::_log_softmax", "aten::multinomial",
    "aten::exponential_", "aten::topk", "aten::sort", "aten::cumsum", "aten::searchsorted",
    "aten::rand", "aten::uniform_", "aten::argmax", "aten::amax", "aten::exp", "aten::exp_",
    "aten::div", "aten::gather", "aten::nextafter", "aten::minimum", "aten::argsort",
}  # fmt: skip


def _labelled(fn: Callable[..., Any], label: str) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with record_function(label):
            return fn(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def _labels(model: Any) -> Iterator[None]:
    """Put the labels in (instance / class attributes), and take them out again."""
    from transformers.cache_utils import DynamicLayer, StaticLayer

    patches: list[tuple[Any, str, Any]] = [
        (model, "forward", _labelled(model.forward, FORWARD)),
        (
            control_module.PreLogitControl,
            "__call__",
            _labelled(control_module.PreLogitControl.__call__, HOOK),
        ),
        (engine_module, "choose_tokens", _labelled(engine_module.choose_tokens, SAMPLE)),
        (engine_module, "token_logprobs", _labelled(engine_module.token_logprobs, SAMPLE)),
    ]
    for cls in (DynamicLayer, StaticLayer, growing_layer_class()):
        patches.append((cls, "update", _labelled(cls.__dict__["update"], CACHE)))
    saved = [(obj, name, obj.__dict__.get(name)) for obj, name, _ in patches]
    try:
        for obj, name, new in patches:
            setattr(obj, name, new)
        yield
    finally:
        for obj, name, old in saved:
            if old is None:
                delattr(obj, name)
            else:
                setattr(obj, name, old)


def _inside(event: Any, label: str) -> float:
    """Microseconds of the ``label`` ranges nested in ``event``."""
    total = 0.0
    for child in event.cpu_children:
        total += child.cpu_time_total if child.name == label else _inside(child, label)
    return total


def profile_decode(fn: Callable[[], Any], model: Any, steps: int, device: torch.device) -> dict[str, float]:
    """Milliseconds per decoding step in each category (`CATEGORIES`) of one run of ``fn``.

    ``prefill`` is the run's first forward (spread over the steps like the rest, so that the
    categories add up to the wall time per step); ``device_ms`` is the CUDA kernels' total (CUDA only).
    """
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with _labels(model), profile(activities=activities) as prof:
        tic = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall_us = (time.perf_counter() - tic) * 1e6
    top = sorted((e for e in prof.events() if e.cpu_parent is None), key=lambda e: e.time_range.start)
    us = dict.fromkeys(CATEGORIES, 0.0)
    first_forward = True
    for event in top:
        if event.name == FORWARD:
            cache, hook = _inside(event, CACHE), _inside(event, HOOK)
            us["cache"] += cache
            us["hook"] += hook
            us["prefill" if first_forward else "forward"] += event.cpu_time_total - cache - hook
            first_forward = False
        elif event.name == SAMPLE or event.name in SAMPLING_OPS:
            us["sampling"] += event.cpu_time_total
        elif event.name.startswith("ProfilerStep") or event.name.startswith("## "):
            continue
        else:
            us["bookkeeping"] += event.cpu_time_total
    us["python/host"] = max(0.0, wall_us - sum(us.values()))
    result = {k: v / 1e3 / steps for k, v in us.items()}
    if device.type == "cuda":
        kernels = sum(
            getattr(e, "self_device_time_total", 0.0)
            for e in prof.events()
            if str(getattr(e, "device_type", "")).endswith("CUDA")
        )
        result["device_ms"] = kernels / 1e3 / steps
    return result


def print_profile(profiles: dict[str, dict[str, float]]) -> None:
    """A table: one column per run, ms per step and share of the run's wall time per category."""
    names = list(profiles)
    print("\nper decoding step (one profiled run each; ms, and % of that run's time)")
    print(f"{'':<14}" + "".join(f"{name:>24}" for name in names))
    for category in CATEGORIES:
        cells = []
        for name in names:
            p = profiles[name]
            total = sum(p[c] for c in CATEGORIES)
            cells.append(f"{p[category]:>14.2f} ms {100 * p[category] / total:>5.1f}%")
        print(f"{category:<14}" + "".join(f"{c:>24}" for c in cells))
    if any("device_ms" in p for p in profiles.values()):
        print(
            f"{'CUDA kernels':<14}"
            + "".join(f"{p.get('device_ms', 0.0):>21.2f} ms" for p in profiles.values())
        )
