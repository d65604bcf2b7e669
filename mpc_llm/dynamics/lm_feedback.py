"""State feedback on a language model: a `mpc_llm.core.Policy` evaluated on the pre-logit inside
the decode (`LMDynamics.rollout_feedback`), and the model's fingerprint (a value learned on one
model refuses another).

The head hook (`mpc_llm.lm.control`) adds ``u_t + policy(z_t + u_t, t)`` to the head's input at
each step ``t < tau`` and records the controls applied; the decode stays under ``no_grad`` (a
policy that needs gradients opens ``torch.enable_grad()`` on a detached copy of ``z``). The rollout
carries those controls, so closeness (steering log-ratio, base perplexity) is measured from them
exactly as for open-loop controls.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from mpc_llm.core import Policy
from mpc_llm.lm.fingerprint import head_fingerprint

if TYPE_CHECKING:
    from mpc_llm.dynamics.lm import LMDynamics
    from mpc_llm.lm import LMRollout


class StateFeedback:
    """`LMDynamics`' implementation of `mpc_llm.core.Dynamics.rollout_feedback` and
    `mpc_llm.core.Dynamics.model_fingerprint`."""

    def rollout_feedback(
        self: LMDynamics, controls: Tensor, generators: Sequence[torch.Generator], policy: Policy
    ) -> LMRollout:
        """Generate with ``z + u_t + policy(z + u_t, t)`` at the head for tokens ``t < tau``,
        ``u_t = controls[:, :, t]`` ``(B, N, tau, d)`` (zeros: the policy alone, e.g. RE-Control).

        Returns:
            An `LMRollout` whose ``controls`` are the ``(B, N, T, d)`` controls applied (float32 at
            least; zero past each response's end and on committed tokens, which came before).
        """
        self.check_controls(controls)
        B, N, tau, d = controls.shape
        flat = controls.to(device=self.device, dtype=self.dtype).reshape(B * N, tau, d)
        rollout = self._generate(flat, N, generators, policy)
        applied, T = rollout.controls, rollout.tokens.shape[-1]
        if applied.shape[2] < T:  # the committed tokens come first in a closed loop
            front = applied.new_zeros((B, N, T - applied.shape[2], d))
            rollout = dataclasses.replace(rollout, controls=torch.cat([front, applied], dim=2))
        return rollout

    def model_fingerprint(self: LMDynamics) -> str:
        """The model's `mpc_llm.lm.fingerprint.head_fingerprint` (its head's shape and first rows)."""
        return head_fingerprint(self.engine.adapter.head)
