"""What every sequential (closed-loop) controller offers: the interface comparisons rely on.

Open-loop controllers subclass `Controller`; sequential ones (`RecedingHorizon`, `BlockwiseBestOfN`,
`SpeculativeRejection`, `ARGS`) drive a system step by step through the closed-loop hooks of
`mpc_llm.core.Dynamics` and satisfy this protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel

from mpc_llm.core import CostFunction, Dynamics, OptimizeResult


@runtime_checkable
class SequentialController(Protocol):
    """A controller whose answer at a budget needs a run at that budget (``anytime = False``)."""

    anytime: ClassVar[bool]
    config: BaseModel

    def spec(self) -> dict[str, Any]:
        """Its class and settings, for a comparison's settings."""
        ...

    def check(self, episode: int, cost: Any = None) -> None:
        """Raise a `ValueError` for settings that cannot run an ``episode``-step episode with ``cost``
        (any object with ``accepts_partial``), before any model work."""
        ...

    def check_budget(self, episode: int, max_samples: int) -> None:
        """Raise a `ValueError` if ``max_samples`` scored samples cannot run one episode."""
        ...

    def optimize(
        self,
        dynamics: Dynamics,
        cost: CostFunction,
        *,
        seed: int | Sequence[int] | None = None,
        max_samples: int | None = None,
        max_tokens: int | None = None,
    ) -> OptimizeResult:
        """Run every problem's episode in closed loop; ``best_rollout`` is the whole trajectory."""
        ...
