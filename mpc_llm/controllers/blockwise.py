"""Blockwise best-of-N (controlled decoding): ``K`` candidates per block, keep the best, continue.

Follows blockwise best-of-N / controlled decoding (Mudgal et al., "Controlled Decoding from
Language Models", 2024, blockwise CD with a best-of-K block sampler): from the current prefix, draw
``num_samples`` continuations, keep the block of ``block`` tokens of the best one, and repeat from
the extended prefix until the response ends. Deviation: a candidate is scored by the reward of the
whole response it starts (rolled out to the end, ``score="to_end"``, the default) rather than by a
learned prefix value function; ``score="horizon"`` scores the prefix plus the block only, for
rewards that accept partial text. With one block as long as the response it is best-of-N.

In control terms it is `RecedingHorizon` around `BestOfN` with ``horizon = commit = block``.

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
from mpc_llm.controllers.planner import Planner
from mpc_llm.controllers.receding_horizon import RecedingHorizon, RecedingHorizonConfig
from mpc_llm.controllers.state import Settings


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


class BlockwiseBestOfN(RecedingHorizon):
    """Best of ``num_samples`` continuations per block of ``block`` steps."""

    config_class = BlockwiseConfig  # type: ignore[assignment]
    preset: ClassVar[dict[str, Any]] = {"num_samples": 8}
    wraps: ClassVar[type[Planner] | None] = None

    def __init__(self, config: BlockwiseConfig | Mapping[str, Any] | None = None, **settings: Any) -> None:
        Planner.__init__(self, config, **settings)
        s: BlockwiseConfig = self.config  # type: ignore[assignment]
        self.inner = BestOfN(num_samples=s.num_samples, num_iterations=1)
        self._loop = RecedingHorizonConfig(
            horizon=s.block, commit=s.block, samples_per_step=s.num_samples, score=s.score
        )

    @property
    def loop(self) -> RecedingHorizonConfig:
        """Receding horizon with ``horizon = commit = block`` and ``num_samples`` per block."""
        return self._loop

    def with_config(self, **changes: object) -> BlockwiseBestOfN:
        """A blockwise best-of-N with some settings changed (validated)."""
        return type(self)(self.config, **changes)  # type: ignore[arg-type]

    def spec(self) -> dict[str, Any]:
        """What identifies this controller in a comparison's settings (its inner best-of-N is implied)."""
        return Planner.spec(self)

    def check(self, episode: int, cost: Any = None, *, episode_name: str = "the episode length") -> None:
        """Any block length is valid: a block longer than the episode is one block (best-of-N)."""
        super().check(max(episode, self.loop.horizon), cost, episode_name=episode_name)
