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
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field

from mpc_llm.controllers.sequential import Final, episode_result, require_partial
from mpc_llm.core import CostFunction, Dynamics, OptimizeResult, draw_seeds, make_generators, validated


class SpeculativeRejectionConfig(BaseModel):
    """Speculative-rejection settings.

    Attributes:
        num_samples: responses started per prompt (``N``) when no total budget is given.
        checkpoint: tokens (steps) between two scorings.
        keep_fraction: share of the unfinished responses kept at each checkpoint, in ``(0, 1]``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_samples: int = Field(16, ge=1)
    checkpoint: int = Field(16, ge=1)
    keep_fraction: float = Field(0.5, gt=0.0, le=1.0)


class SpeculativeRejection:
    """Best-of-N with early rejection of weak partial responses."""

    config_class: ClassVar[type[BaseModel]] = SpeculativeRejectionConfig
    anytime: ClassVar[bool] = False
    adaptive: ClassVar[bool] = False

    def __init__(self, config: SpeculativeRejectionConfig | Mapping[str, Any] | None = None, **settings: Any):
        self.config = validated(SpeculativeRejectionConfig, config, settings)

    def spec(self) -> dict[str, Any]:
        """What identifies this controller in a comparison's settings."""
        return {"class": type(self).__name__, "config": self.config.model_dump(mode="json")}

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

    def check_budget(self, episode: int, max_samples: int) -> None:
        """Raise a `ValueError` if ``max_samples`` cannot score one response at every checkpoint."""
        self.start_size(episode, max_samples=max_samples)

    def check(self, episode: int, cost: CostFunction | None = None) -> None:
        """Refuse a cost that cannot score partial responses (before any model work; ``cost`` may be
        any object with ``accepts_partial``, e.g. a reward class)."""
        require_partial(cost, "speculative rejection scores partial responses at its checkpoints")

    def optimize(
        self,
        dynamics: Dynamics,
        cost: CostFunction,
        *,
        seed: int | Sequence[int] | None = None,
        max_samples: int | None = None,
        max_tokens: int | None = None,
        **_: Any,
    ) -> OptimizeResult:
        """Generate, score at checkpoints, reject, and return each problem's best finished response."""
        self.check(dynamics.horizon, cost)
        start, B = time.perf_counter(), dynamics.batch_size
        N = self.start_size(dynamics.horizon, max_samples, max_tokens)
        owners = [b for b in range(B) for _ in range(N)]
        streams = make_generators(0 if seed is None else seed, B, dynamics.device)
        branch_seeds = [draw_seeds([streams[b]])[0] for b in owners]  # N fresh streams per problem
        generators = make_generators(branch_seeds, len(owners), dynamics.device)
        system = dynamics.select(owners)
        best: dict[int, Final] = {}
        samples, tokens = [0] * B, [0] * B
        while owners:
            planner = system.with_horizon(min(self.config.checkpoint, system.horizon))
            zero = torch.zeros(
                (len(owners), 1, 1, system.control_dim), dtype=system.dtype, device=system.device
            )
            rollout = planner.rollout(zero, generators)
            costs, metrics = cost.evaluate(rollout)
            costs = costs[:, 0].double().cpu().nan_to_num(nan=math.inf)
            counts = rollout.token_counts()[:, 0].tolist()
            for i, b in enumerate(owners):
                samples[b] += 1
                tokens[b] += int(counts[i])
            system = system.advance(rollout, planner.horizon)
            done = system.finished().tolist()
            for i, b in enumerate(owners):
                if done[i] and (b not in best or costs[i] < best[b].cost):
                    best[b] = Final(
                        float(costs[i]),
                        rollout.problems([i]),
                        {k: float(v[i, 0]) for k, v in metrics.items()},
                    )
            keep = self._keep(owners, costs, done)
            if not keep:
                break
            system, owners = system.select(keep), [owners[i] for i in keep]
            generators = [generators[i] for i in keep]
        return episode_result([best[b] for b in range(B)], samples, tokens, time.perf_counter() - start)

    def _keep(self, owners: list[int], costs: torch.Tensor, done: list[bool]) -> list[int]:
        """Indices of the unfinished branches kept: per problem, the best ``keep_fraction`` (at least one)."""
        keep: list[int] = []
        for b in dict.fromkeys(owners):
            alive = [i for i, o in enumerate(owners) if o == b and not done[i]]
            alive.sort(key=lambda i: float(costs[i]))
            keep.extend(alive[: max(1, math.ceil(self.config.keep_fraction * len(alive)))] if alive else [])
        return sorted(keep)
