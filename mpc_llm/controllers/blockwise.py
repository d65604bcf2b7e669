"""Blockwise best-of-N (controlled decoding): ``K`` candidates per block, keep the best, continue.

Follows blockwise best-of-N / controlled decoding (Mudgal et al., "Controlled Decoding from
Language Models", 2024, blockwise CD with a best-of-K block sampler): from the current prefix, draw
``num_samples`` continuations, keep the block of ``block`` tokens of the best one, and repeat from
the extended prefix until the response ends. Deviation: a candidate is scored by the reward of the
whole response it starts (rolled out to the end, ``score="to_end"``, the default) rather than by a
learned prefix value function; ``score="horizon"`` scores the prefix plus the block only, for
rewards that accept partial text. With one block as long as the response it is best-of-N.

In control terms it is `RecedingHorizon` around `BestOfN` with ``horizon = commit = block``: it
holds one (`BlockwiseBestOfN.plan`) and lets it run each step, with settings of its own.

Example:
    >>> from mpc_llm.dynamics import GoalCost, PointMass
    >>> result = BlockwiseBestOfN(num_samples=4, block=5).optimize(
    ...     PointMass(horizon=10), GoalCost(goal=[1.0, 1.0]), seed=0)
    >>> result.budget.samples     # 4 candidates in each of 2 blocks
    8
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field

from mpc_llm.controllers.best_of_n import BestOfN
from mpc_llm.controllers.receding_horizon import Plan, RecedingHorizon
from mpc_llm.controllers.sequential import Episode, SequentialController, Start, Step
from mpc_llm.controllers.state import Settings
from mpc_llm.core import BudgetUnit, CostFunction, Dynamics


class BlockwiseConfig(Settings):
    """Blockwise best-of-N settings.

    Attributes:
        num_samples: candidates per block (``K``).
        block: tokens (steps) committed per block.
        score: ``"to_end"`` (score the whole response a candidate starts) or ``"horizon"`` (the
            prefix and the block only).
    """

    num_samples: int = Field(8, ge=1)
    block: int = Field(16, ge=1)
    score: Literal["to_end", "horizon"] = "to_end"


class BlockwiseBestOfN(SequentialController[BlockwiseConfig, Plan]):
    """Best of ``num_samples`` continuations per block of ``block`` steps."""

    config_class = BlockwiseConfig
    preset: ClassVar[dict[str, Any]] = {"num_samples": 8}

    def __init__(self, config: BlockwiseConfig | Mapping[str, Any] | None = None, **settings: Any) -> None:
        super().__init__(config, **settings)
        s = self.config
        #: the receding-horizon loop it is: best-of-``num_samples`` plans of ``block`` steps, each committed
        self.plan = RecedingHorizon(
            BestOfN(num_samples=s.num_samples, num_iterations=1),
            horizon=s.block,
            commit=s.block,
            samples_per_step=s.num_samples,
            score=s.score,
        )

    def check(self, episode: int, cost: Any = None, *, episode_name: str = "the episode length") -> None:
        """Any block length is valid: a block longer than the episode is one block (best-of-N)."""
        self.plan.check(max(episode, self.config.block), cost, episode_name=episode_name)

    def check_budget(self, episode: int | None, budget: int, unit: BudgetUnit = "samples") -> None:
        """At least one candidate per block (in tokens: per block, one rolled out as long as it may run)."""
        self.plan.check_budget(episode, budget, unit)

    def begin(self, dynamics: Dynamics, start: Start) -> tuple[list[int], Plan]:
        """One row per problem (`RecedingHorizon.begin`)."""
        return self.plan.begin(dynamics, start)

    def step(self, system: Dynamics, cost: CostFunction, episode: Episode[Plan]) -> Step[Plan]:
        """Best of ``num_samples`` continuations; commit its first ``block`` steps."""
        return self.plan.step(system, cost, episode)
