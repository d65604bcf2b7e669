"""What every sequential (closed-loop) controller offers: the interface comparisons rely on.

Open-loop controllers subclass `Controller`; sequential ones (`RecedingHorizon`, `BlockwiseBestOfN`,
`SpeculativeRejection`, `ARGS`) drive a system step by step through the closed-loop hooks of
`mpc_llm.core.Dynamics` and satisfy this protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

import torch
from pydantic import BaseModel

from mpc_llm.core import Budget, CostFunction, Dynamics, IterationRecord, OptimizeResult, Rollout
from mpc_llm.core.rollout import stack_problems


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


def require_partial(cost: Any, what: str, instead: str = "") -> None:
    """Refuse a cost that cannot score partial trajectories (unfinished text), which ``what`` needs.

    Args:
        cost: a cost function, or any object with ``accepts_partial`` (e.g. a reward class); None
            passes.
        what: the method and why it scores partial text, for the message.
        instead: what the user may do instead, for the message (e.g. "use score='to_end'").
    """
    if cost is not None and not cost.accepts_partial:
        alternative = f"{instead}, or " if instead else ""
        raise ValueError(
            f"{what}, but the cost {cost!r} cannot score partial text (a reward model or judge); "
            f"{alternative}set reward.accepts_partial = True if you know it can"
        )


class Final(NamedTuple):
    """One problem's finished episode: its cost, its trajectory (``B = N = 1``) and its metrics."""

    cost: float
    rollout: Rollout
    metrics: dict[str, float]


def episode_result(
    finals: Sequence[Final],
    samples: Sequence[int],
    tokens: Sequence[int],
    seconds: float,
    *,
    mean: torch.Tensor | None = None,
    history: Sequence[IterationRecord] = (),
    state: object = None,
) -> OptimizeResult:
    """The `OptimizeResult` of ``B`` finished episodes (``finals`` in problem order); ``mean``
    defaults to zeros ``(B, 1, d)`` for controllers without a control mean."""
    best = stack_problems([f.rollout for f in finals])
    if mean is None:
        mean = best.controls.new_zeros((best.batch_size, 1, best.controls.shape[-1]))
    return OptimizeResult(
        best_rollout=best,
        best_cost=torch.tensor([f.cost for f in finals], dtype=torch.float64),
        best_controls=best.controls[:, 0],
        mean=mean,
        history=list(history),
        budget=Budget(
            samples=max(samples),
            iterations=len(history),
            seconds=seconds,
            tokens=sum(tokens),
            samples_per_problem=tuple(samples),
            tokens_per_problem=tuple(tokens),
        ),
        state=state,
        best_metrics={
            k: torch.tensor([f.metrics[k] for f in finals], dtype=torch.float64) for k in finals[0].metrics
        },
    )
