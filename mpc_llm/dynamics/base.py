"""The abstract dynamics: control sequences in, rollouts out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor

from mpc_llm.rollout import Rollout


class Dynamics(ABC):
    """A batch of ``B`` problems (initial states, prompts) driven by control sequences.

    A subclass states its control shape through `horizon` (``tau``, the number of controlled steps)
    and `control_dim` (``d``), and implements `rollout`. Everything is batched: one call simulates
    ``N`` control sequences for each of the ``B`` problems.
    """

    @property
    @abstractmethod
    def batch_size(self) -> int:
        """``B``, the number of problems this dynamics simulates at once."""

    @property
    @abstractmethod
    def horizon(self) -> int:
        """``tau``, the number of steps that take a control."""

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

    @abstractmethod
    def rollout(self, controls: Tensor, generators: Sequence[torch.Generator]) -> Rollout:
        """Simulate every control sequence.

        Args:
            controls: ``(B, N, tau, d)`` control sequences.
            generators: one `torch.Generator` per problem, the only source of randomness for
                problem ``b``, so that a problem gives the same rollout alone or in a batch.

        Returns:
            A rollout with ``B`` problems and ``N`` samples each.
        """

    def check_controls(self, controls: Tensor) -> None:
        """Raise a `ValueError` that says what was expected when ``controls`` has the wrong shape."""
        expected = (self.batch_size, "N", self.horizon, self.control_dim)
        ok = (
            controls.dim() == 4
            and controls.shape[0] == self.batch_size
            and controls.shape[2] == self.horizon
            and controls.shape[3] == self.control_dim
        )
        if not ok:
            raise ValueError(
                f"controls must have shape (B, N, tau, d) = {expected} for this dynamics, "
                f"got {tuple(controls.shape)}"
            )
        if not controls.is_floating_point():
            raise ValueError(f"controls must be a floating tensor, got {controls.dtype}")


def make_generators(
    seeds: int | Sequence[int], batch_size: int, device: torch.device | str = "cpu"
) -> list[torch.Generator]:
    """One seeded generator per problem.

    An ``int`` seed gives every problem the same stream, so that problem ``b`` is solved exactly
    as it would be alone with that seed; a sequence gives one seed per problem.
    """
    if isinstance(seeds, int):
        seeds = [seeds] * batch_size
    if len(seeds) != batch_size:
        raise ValueError(f"got {len(seeds)} seeds for a batch of {batch_size} problems")
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
