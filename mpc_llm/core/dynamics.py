"""The abstract dynamics: control sequences in, rollouts out.

Vocabulary (used everywhere in the package):

- ``horizon``: the steps the dynamics runs (for a language model, ``max_new_tokens``);
- ``tau``: the controlled steps, ``tau <= horizon`` (the length of a control sequence; steps
  ``t >= tau`` get no control);
- ``K``: knots, the free control vectors a controller searches over (`ZeroOrderHold` expands them
  to ``tau`` steps).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from mpc_llm.core.policy import Policy
from mpc_llm.core.rollout import Rollout


class Dynamics(ABC):
    """A batch of ``B`` problems (initial states, prompts) driven by control sequences.

    A subclass states its size through `batch_size` (``B``), `horizon` (the steps it runs) and
    `control_dim` (``d``), and implements `rollout`. Everything is batched: one call simulates ``N``
    control sequences of ``tau <= horizon`` steps for each of the ``B`` problems.

    Capabilities are declared, never found out by calling and catching an error:

    Attributes:
        commits_per_row: whether `advance` takes one step count per row (a closed-loop system that
            can commit a different number of steps to each row at once, e.g. `mpc_llm.dynamics.ToyLM`).
            False (the default): callers that need per-row counts (QAlign) commit the rows with
            equal counts together instead, which gives the same result, only slower.
    """

    commits_per_row: ClassVar[bool] = False

    @property
    @abstractmethod
    def batch_size(self) -> int:
        """``B``, the number of problems this dynamics simulates at once."""

    @property
    @abstractmethod
    def horizon(self) -> int:
        """The number of steps the dynamics runs; control sequences have ``tau <= horizon`` steps."""

    @property
    @abstractmethod
    def control_dim(self) -> int:
        """``d``, the size of one control vector."""

    @property
    def device(self) -> torch.device:
        """Where controls must live."""
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype of controls."""
        return torch.float32

    @property
    def model_dtype(self) -> torch.dtype | None:
        """The dtype the system's model computes in (a language model's weights; records say it), or
        None for a system without one."""
        return None

    @property
    def model_params(self) -> int | None:
        """Parameters of the system's model (a language model's; records weigh a learned value's
        work against a model token by it), or None for a system without one."""
        return None

    def context_tokens(self) -> Tensor | None:
        """``(B,)`` tokens the model reads before it generates the first response token of each
        problem (a language model's prompt; records count them as prefill compute), or None for a
        system without a model."""
        return None

    def zero_controls(self, samples: int = 1, steps: int = 1, rows: int | None = None) -> Tensor:
        """``(rows, samples, steps, d)`` zero controls on this system's device and dtype (``rows``:
        default ``B``): the base system's own behaviour, which controllers that only select or
        reweight (SMC, QAlign, speculative rejection, value-guided blocks) roll out."""
        shape = (self.batch_size if rows is None else rows, samples, steps, self.control_dim)
        return torch.zeros(shape, dtype=self.dtype, device=self.device)

    @abstractmethod
    def rollout(self, controls: Tensor, generators: Sequence[torch.Generator]) -> Rollout:
        """Simulate every control sequence.

        Args:
            controls: ``(B, N, tau, d)`` control sequences, ``tau <= horizon`` (later steps get none).
            generators: one `torch.Generator` per problem, the only source of randomness for
                problem ``b``, so that a problem gives the same rollout alone or in a batch.

        Returns:
            A rollout with ``B`` problems and ``N`` samples each.
        """

    def rollout_feedback(
        self, controls: Tensor, generators: Sequence[torch.Generator], policy: Policy
    ) -> Rollout:
        """Simulate under state feedback: at each step ``t < tau`` the control applied is
        ``u_t + policy(x_t + u_t, t)``, ``u_t = controls[:, :, t]`` (zeros: the policy alone).

        Returns:
            A rollout whose ``controls`` are the ``(B, N, T, d)`` controls applied.

        Raises:
            ValueError: for systems without state feedback (the default).
        """
        raise ValueError(
            f"{type(self).__name__} has no state feedback (a control law evaluated inside its rollout); "
            "feedback controllers such as RE-Control need a language model"
        )

    def model_fingerprint(self) -> str | None:
        """A short string identifying the model behind the system (None: no model), so that a
        component learned on one model (a value function) refuses another."""
        return None

    def control_scale(self) -> Tensor:
        """``(B,)`` the natural size of a control for each problem, which ``sigma_relative`` scales.

        A language model's is the RMS of its pre-logit on each prompt (`LMDynamics.prelogit_rms`).

        Raises:
            ValueError: for systems that have no such scale (the default).
        """
        raise ValueError(
            f"sigma_relative needs dynamics with pre-logits (a language model) to measure the control "
            f"scale; {type(self).__name__} has none: give an absolute sigma instead"
        )

    def closeness_to_base(self, rollout: Rollout, controls: Tensor | None = None) -> dict[str, Tensor]:
        """How close each response of ``rollout`` is to the unperturbed system, ``(B, N)`` each.

        Systems with a base model (a language model) report, per response, its mean per-token
        log-likelihood under the base model at temperature 1 (``base_logp_mean``) and, given the
        ``(B, N, tau, d)`` ``controls`` that produced it, the steering log-ratio
        ``kl_estimate = sum_t log p_u(y_t) - log p_0(y_t)`` at the sampling temperature. The
        default reports nothing (``{}``).
        """
        return {}

    def check_controls(self, controls: Tensor) -> None:
        """Raise a `ValueError` that says what was expected when ``controls`` has the wrong shape.

        Controls are ``(B, N, tau, d)`` with ``1 <= tau <= horizon``.
        """
        expected = (self.batch_size, "N", f"tau<={self.horizon}", self.control_dim)
        ok = (
            controls.dim() == 4
            and controls.shape[0] == self.batch_size
            and 1 <= controls.shape[2] <= self.horizon
            and controls.shape[3] == self.control_dim
        )
        if not ok:
            raise ValueError(
                f"controls must have shape (B, N, tau, d) = {expected} for this dynamics, "
                f"got {tuple(controls.shape)}"
            )
        if not controls.is_floating_point():
            raise ValueError(f"controls must be a floating tensor, got {controls.dtype}")

    # ------------------------------------------------------------------ closed loop
    # Receding-horizon control (`mpc_llm.controllers.RecedingHorizon`) needs three more things of a
    # system: to commit steps of a chosen rollout, to say which episodes have ended, and to drop the
    # problems whose episode has ended. Systems that support it override all three (and, to score a
    # plan over its planning horizon only, `with_horizon`).

    def advance(self, rollout: Rollout, steps: int | Sequence[int]) -> Dynamics:
        """The same problems after committing the first ``steps`` steps of ``rollout``.

        Args:
            rollout: one rollout per problem (``N = 1``), made by this dynamics (or by
                ``self.with_horizon(h)``).
            steps: steps to commit, ``1 <= steps <= horizon``; or one count per row (``>= 0``), for
                systems that declare `commits_per_row` (`mpc_llm.dynamics.ToyLM`); callers read
                that declaration and otherwise commit groups of rows with equal counts.

        Returns:
            A new dynamics (this one is unchanged) whose initial state is the state reached, whose
            `horizon` is ``steps`` shorter, and whose rollouts include the committed history (so a
            cost sees the whole episode so far).
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not support closed-loop control: implement advance, finished "
            "and select (see mpc_llm.core.Dynamics)"
        )

    def finished(self) -> Tensor:
        """``(B,)`` bool: problems whose episode has ended (no step left, or e.g. an EOS committed)."""
        return torch.full((self.batch_size,), self.horizon == 0, dtype=torch.bool)

    def select(self, index: Sequence[int]) -> Dynamics:
        """The problems ``index`` only (in that order), e.g. those whose episode goes on."""
        raise NotImplementedError(f"{type(self).__name__} does not support closed-loop control (select)")

    def with_horizon(self, horizon: int) -> Dynamics:
        """A copy that runs only ``horizon`` more steps (to score a plan over its planning horizon)."""
        raise NotImplementedError(
            f"{type(self).__name__} cannot shorten its horizon; score plans to the end of the episode"
        )

    def candidates(self, k: int) -> tuple[Rollout, Tensor]:
        """The ``k`` most likely next steps of each problem (systems with discrete transitions).

        Returns:
            One-step rollouts ``(B, k)`` (with the committed history, like any rollout) and their
            ``(B, k)`` log-likelihoods under the system, most likely first. Token-level methods
            (ARGS) rescore them.
        """
        raise NotImplementedError(f"{type(self).__name__} has no discrete next-step candidates")

    def pad_controls(self, controls: Tensor) -> Tensor:
        """``(B, N, tau, d)`` controls right-padded with zeros to ``(B, N, horizon, d)``."""
        missing = self.horizon - controls.shape[2]
        if missing <= 0:
            return controls
        pad = controls.new_zeros((*controls.shape[:2], missing, controls.shape[3]))
        return torch.cat([controls, pad], dim=2)
