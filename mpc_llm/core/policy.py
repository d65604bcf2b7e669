"""State feedback: a control law evaluated inside a rollout, ``v_t = policy(z_t, t)``.

An open-loop controller hands the dynamics a fixed control sequence; a feedback controller
(RE-Control) hands it a `Policy`, which the dynamics calls at every controlled step with the state
it sees (for a language model, the pre-logit ``z_t``, the LM head's input) and whose output it adds
to that state. The dynamics records the controls it applied, so that everything measured on
controls (closeness to the base model) is measured as for open-loop controls.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor


class Policy(ABC):
    """A control law ``(z (R, d), t) -> v (R, d)``.

    It is called inside the dynamics' decode, which runs under ``torch.no_grad()``: a policy that
    needs gradients opens ``torch.enable_grad()`` on a detached copy of ``z`` itself. ``z`` is in the
    model's dtype; the returned ``v`` is cast to it.

    Attributes:
        calls: row-steps the policy was called on so far (``R`` per controlled step).
        evaluations: row evaluations of the policy's own model so far (e.g. of a value function).
        gradient_steps: row gradient steps taken so far.
    """

    def __init__(self) -> None:
        self.evaluations = 0
        self.gradient_steps = 0
        self.calls = 0

    @abstractmethod
    def __call__(self, z: Tensor, t: int) -> Tensor:
        """The control ``(R, d)`` to add to the state ``z`` ``(R, d)`` at step ``t``."""
