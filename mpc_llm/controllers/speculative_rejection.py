"""Speculative rejection: start many responses, score the partial ones, drop the weak early.

Follows Sun et al., "Fast Best-of-N Decoding via Speculative Rejection" (NeurIPS 2024): ``N``
responses per prompt are generated side by side; at each checkpoint (every ``checkpoint`` tokens)
the partial responses are scored by the reward and only the best ``keep_fraction`` of the unfinished
ones continue; the best finished response is returned. Deviations: the checkpoints are every
``checkpoint`` tokens rather than where the GPU memory fills up, and the rejection keeps a fixed
fraction (at least one) rather than a fraction tuned online. The partial scores must be meaningful
(the cost must accept partial text: `mpc_llm.core.CostFunction.accepts_partial`).

Budgets: every partial response scored at a checkpoint counts as a scored sample; with a total
``max_samples`` (or ``max_tokens``) budget the number of starting responses ``N`` is the largest whose
schedule fits (`SpeculativeRejection.start_size`).

In control terms: each response is a branch of the system (`Dynamics.select` duplicates a
problem), decoded in closed loop with zero control and committed checkpoint by checkpoint
(`Dynamics.advance`); only the branch set is optimised.

Example:
    >>> from mpc_llm.dynamics import GoalCost, PointMass
    >>> result = SpeculativeRejection(num_samples=8, checkpoint=5, keep_fraction=0.5).optimize(
    ...     PointMass(horizon=10), GoalCost(goal=[1.0, 1.0]), seed=0)
    >>> result.budget.samples       # 8 partial trajectories scored, then the best 4 finished
    12
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import Field

from mpc_llm.controllers.sequential import Episode, SequentialController, Start, Step, require_partial
from mpc_llm.controllers.state import Settings
from mpc_llm.core import BudgetUnit, CostFunction, Dynamics, draw_seeds, make_generators


class SpeculativeRejectionConfig(Settings):
    """Speculative-rejection settings.

    Attributes:
        num_samples: responses started per prompt (``N``) when no total budget is given.
        checkpoint: tokens (steps) between two scorings.
        keep_fraction: share of the unfinished responses kept at each checkpoint, in ``(0, 1]``.
    """

    num_samples: int = Field(16, ge=1)
    checkpoint: int = Field(16, ge=1)
    keep_fraction: float = Field(0.5, gt=0.0, le=1.0)


#: One random stream per branch (row), carried from checkpoint to checkpoint.
Streams = list[torch.Generator]


class SpeculativeRejection(SequentialController[SpeculativeRejectionConfig, Streams]):
    """Best-of-N with early rejection of weak partial responses."""

    config_class = SpeculativeRejectionConfig

    def schedule(self, N: int, episode: int) -> list[int]:
        """Responses alive at each checkpoint of an ``episode``-step episode, starting from ``N``."""
        sizes = [N]
        for _ in range(math.ceil(episode / self.config.checkpoint) - 1):
            sizes.append(max(1, math.ceil(self.config.keep_fraction * sizes[-1])))
        return sizes

    def start_size(self, episode: int, max_samples: int | None = None, max_tokens: int | None = None) -> int:
        """``N``: ``num_samples``, or the most starting responses whose schedule fits the budget."""
        if max_samples is None and max_tokens is None:
            return self.config.num_samples
        step = min(self.config.checkpoint, episode)

        def spend(N: int) -> int:
            sizes = self.schedule(N, episode)
            return sum(sizes) if max_samples is not None else sum(n * step for n in sizes)

        limit = max_samples if max_samples is not None else max_tokens
        assert limit is not None
        if spend(1) > limit:
            unit = "samples" if max_samples is not None else "tokens"
            raise ValueError(
                f"a budget of {limit} {unit} is smaller than one response scored at every checkpoint "
                f"({spend(1)} {unit}); raise the budget or the checkpoint interval"
            )
        N = 1
        while spend(N + 1) <= limit:
            N += 1
        return N

    def check_budget(self, episode: int | None, budget: int, unit: BudgetUnit = "samples") -> None:
        """Raise a `ValueError` if the budget cannot score one response at every checkpoint."""
        if episode is not None:
            self.start_size(episode, **{"max_samples" if unit == "samples" else "max_tokens": budget})

    def check(self, episode: int, cost: Any = None, *, episode_name: str = "the episode length") -> None:
        """Refuse a cost that cannot score partial responses (before any model work; ``cost`` may be
        any object with ``accepts_partial``, e.g. a reward's traits)."""
        require_partial(cost, "speculative rejection scores partial responses at its checkpoints")

    def begin(self, dynamics: Dynamics, start: Start) -> tuple[list[int], Streams]:
        """``N`` branches per problem, each with a fresh random stream drawn from its problem's."""
        N = self.start_size(dynamics.horizon, start.max_samples, start.max_tokens)
        owners = [b for b in range(dynamics.batch_size) for _ in range(N)]
        streams = start.streams(dynamics)
        branch_seeds = [draw_seeds([streams[b]])[0] for b in owners]  # N fresh streams per problem
        return owners, make_generators(branch_seeds, len(owners), dynamics.device)

    def step(self, system: Dynamics, cost: CostFunction, episode: Episode[Streams]) -> Step[Streams]:
        """Decode every branch to the next checkpoint (zero control) and score it."""
        planner = system.with_horizon(min(self.config.checkpoint, system.horizon))
        rollout = planner.rollout(system.zero_controls(), episode.carry)
        costs, metrics = cost.evaluate(rollout)
        return Step(
            chosen=rollout,
            commit=planner.horizon,
            costs=costs[:, 0].double().cpu().nan_to_num(nan=math.inf),
            metrics={k: v[:, 0].double().cpu() for k, v in metrics.items()},
            samples=[1] * system.batch_size,
            tokens=[int(n) for n in rollout.token_counts()[:, 0].tolist()],
            carry=episode.carry,
        )

    def keep(self, episode: Episode[Streams], step: Step[Streams], done: list[bool]) -> list[int]:
        """Per problem, the best ``keep_fraction`` of its unfinished branches (at least one)."""
        keep: list[int] = []
        owners = episode.owners
        for b in dict.fromkeys(owners):
            alive = [i for i, o in enumerate(owners) if o == b and not done[i]]
            alive.sort(key=lambda i: float(step.costs[i]))
            keep.extend(alive[: max(1, math.ceil(self.config.keep_fraction * len(alive)))] if alive else [])
        return sorted(keep)
