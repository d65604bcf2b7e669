"""Twists: values of partial responses, in reward units, for weights and plans that look ahead.

A `Twist` maps each row of an ``(R, 1)`` partial rollout to ``psi`` (``(R,)`` float64), reading,
when it asks for them (``needs_states``), the state at each row's last generated step: the
pre-logit the head read to choose the row's last token (for a language model,
`mpc_llm.lm.LMRollout.last_states` with ``keep_states``; in a decode under state feedback, what
`mpc_llm.controllers.twisted_smc.StateTap` kept). Twisted SMC weights particles by the twist's
increments (`mpc_llm.controllers.TwistedSMC`); model predictive control lets it stand for the rest of
the response at a plan's end (`mpc_llm.values.TerminalValueCost`).

- `ValueTwist`: a value network of the pre-logit state (`mpc_llm.values.ValueMLP`).
- `FunctionTwist`: any function of the rollout (the exact soft value of a toy model's prefix, the
  reward of the partial text).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor

from mpc_llm.core import Rollout


class Twist(ABC):
    """``psi``: a value of each particle's partial response, in reward units.

    Attributes:
        needs_states: whether it reads the states the decode saw (`ValueTwist`), which makes the
            particles grow through `Dynamics.rollout_feedback`.
        evaluations: rows evaluated so far.
    """

    needs_states: ClassVar[bool] = False

    def __init__(self) -> None:
        self.evaluations = 0

    @abstractmethod
    def __call__(self, rollout: Rollout, states: Tensor | None) -> Tensor:
        """``(B * N,)`` float64 twist of the ``(B, N)`` ``rollout``'s responses (row-major);
        ``states``: ``(B * N, d)`` the state at each one's last generated step (None unless
        ``needs_states``)."""


class FunctionTwist(Twist):
    """A twist given by a function of the rollout, ``(B, N)`` -> ``(B, N)`` or ``(B * N,)`` (e.g. an
    exact soft value of a toy model's prefix, or the reward of the partial text)."""

    def __init__(self, fn: Callable[[Rollout], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def __call__(self, rollout: Rollout, states: Tensor | None) -> Tensor:
        self.evaluations += rollout.batch_size * rollout.num_samples
        return torch.as_tensor(self.fn(rollout), dtype=torch.float64).reshape(-1).cpu()


class ValueTwist(Twist):
    """A value network of the pre-logit state (`mpc_llm.values.ValueMLP`) as the twist."""

    needs_states = True

    def __init__(self, value: torch.nn.Module) -> None:
        super().__init__()
        self.value = value.eval()

    def __call__(self, rollout: Rollout, states: Tensor | None) -> Tensor:
        assert states is not None, "ValueTwist reads the state at each response's last step"
        self.evaluations += states.shape[0]
        param = next(self.value.parameters())
        with torch.no_grad():
            return self.value(states.to(param.device, param.dtype)).double().reshape(-1).cpu()
