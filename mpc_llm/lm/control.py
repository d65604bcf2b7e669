"""How the control gets into the model: a forward pre-hook on its LM head, and the compiled step.

`PreLogitControl` is registered on the model's head (`ModelAdapter.head`) for a decode: the head's
input ``z`` becomes ``z + v``, or ``[z + v; z]`` stacked along the batch when the log-probs of the
unperturbed model are wanted too (one head call gives both). The model's own forward runs as it
is, so whatever it does after the head (soft-capping, scaling) stays in place. With a state-feedback
``policy`` (`mpc_llm.core.Policy`), the hook also adds ``policy(z + v, t)`` at the last position
and records the control applied (`feedback_record`, `recorded`).

For a compiled decode (`compiled_step`), one `torch.compile` wrapper is kept per model with a hook
that stays registered (inactive, ``control`` None, outside decodes): registering a hook per decode
would change the traced module and recompile it every time.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from mpc_llm.lm.adapters import ModelAdapter


class PreLogitControl:
    """Forward pre-hook on the LM head: ``z -> z + v`` (and ``[z + v; z]`` when the base is wanted)."""

    def __init__(self) -> None:
        self.control: Tensor | None = None  # (R, d)
        self.with_base = False
        self.fired = False
        #: state feedback: ``v = policy(z + control, step)`` at the last position, added too, and the
        #: whole control applied written to ``record[:, step]`` (``(R, T, d)``)
        self.policy: Callable[[Tensor, int], Tensor] | None = None
        self.step = 0
        self.record: Tensor | None = None
        #: ``keep_states``: ``states`` ``(R, d)`` float32 holds each row's head input at the last
        #: position of the last forward in which it was ``alive`` ``(R,)`` (set by the decode: the
        #: rows whose token of the previous step that forward reads)
        self.keep_states = False
        self.states: Tensor | None = None
        self.alive: Tensor | None = None

    def __call__(self, module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        self.fired = True
        z = args[0]
        if self.keep_states:
            last = z[:, -1].detach().float()
            kept = self.states if self.states is not None else torch.zeros_like(last)
            self.states = last if self.alive is None else torch.where(self.alive.unsqueeze(1), last, kept)
        if self.control is None and self.policy is None:
            return None
        # the sum is taken in float32 (at least) and rounded once to the head's dtype, so a
        # bfloat16 model applies the float32 control that is recorded, not a rounded copy of it
        wide = torch.promote_types(z.dtype, torch.float32)
        zv = z if self.control is None else z.to(wide) + self.control.to(wide).unsqueeze(1)  # (R, 1, d)
        if self.policy is not None:
            v = self.policy(zv[:, -1].to(z.dtype).detach(), self.step)
            zv = zv.to(wide) + v.to(wide).unsqueeze(1)
            if self.record is not None:
                u = 0.0 if self.control is None else self.control.to(self.record.dtype)
                self.record[:, self.step] = v.to(self.record.dtype) + u
        zv = zv.to(z.dtype)
        if self.with_base:
            zv = torch.cat([zv, z], dim=0)
        return (zv, *args[1:])


#: model -> {(backend, mode): (compiled model, its persistent head hook)}
_COMPILED: weakref.WeakKeyDictionary[Any, dict[tuple[str, str | None], tuple[Any, PreLogitControl]]] = (
    weakref.WeakKeyDictionary()
)


def compiled_step(adapter: ModelAdapter, backend: str, mode: str | None) -> tuple[Any, PreLogitControl]:
    """The `torch.compile` wrapper of ``adapter.model`` and its persistent head hook (made once per model).

    ``mode`` None means "reduce-overhead" (CUDA graphs) on CUDA and the default mode elsewhere.
    """
    per_model = _COMPILED.setdefault(adapter.model, {})
    key = (backend, mode)
    if key not in per_model:
        if mode is None and adapter.device.type == "cuda":
            mode = "reduce-overhead"
        hook = PreLogitControl()
        adapter.head.register_forward_pre_hook(hook)
        per_model[key] = (torch.compile(adapter.model, backend=backend, mode=mode), hook)
    return per_model[key]


def feedback_record(policy: object, controls: Tensor | None, compiled: bool, steps: int) -> Tensor | None:
    """``(R, steps, d)`` zeros (float32 at least) where a feedback decode records the controls it
    applies; None without a ``policy``.

    Raises:
        ValueError: a policy without controls (give zeros for the policy alone) or with compiled
            decoding (a policy's gradient steps cannot run inside a compiled graph).
    """
    if policy is None:
        return None
    if controls is None or compiled:
        raise ValueError("state feedback needs controls (zeros for the policy alone) and eager decoding "
                         "(LMConfig(compile=False))")  # fmt: skip
    dtype = torch.promote_types(controls.dtype, torch.float32)
    return controls.new_zeros((controls.shape[0], steps, controls.shape[-1]), dtype=dtype)


def recorded(record: Tensor | None, steps: int, lengths: Tensor) -> Tensor | None:
    """The first ``steps`` of a feedback decode's ``record``, zero past each row's ``lengths``."""
    if record is None:
        return None
    on = torch.arange(steps, device=record.device).unsqueeze(0) < lengths.unsqueeze(1)
    return record[:, :steps] * on.unsqueeze(-1)
