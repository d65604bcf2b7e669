"""ARGS: reward-guided decoding, token by token (the AISP paper's token-level baseline).

Follows Khanov et al., "ARGS: Alignment as Reward-Guided Search" (ICLR 2024), greedy variant: at
each step the ``k`` most likely next tokens are rescored by ``log p(token) + w * reward(prefix +
token)`` and the best is committed. Deviation: the log-probability (of the tempered softmax) stands
in for the logit; the two differ by a constant per step, so the choice is the same. The reward
scores partial text (the cost must accept it: `mpc_llm.core.CostFunction.accepts_partial`).

Budgets: every candidate scored counts as a scored sample (``k`` per token), and each step
generates one token. With a total ``max_samples``, ``k`` is the most candidates per token that fit.

In control terms: a one-step horizon over the system's discrete candidates
(`Dynamics.candidates`), committed step by step (`Dynamics.advance`).

Example:
    >>> from mpc_llm.controllers import ARGS
    >>> ARGS(num_candidates=5, weight=1.5).config.num_candidates
    5
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from mpc_llm.controllers.sequential import Final, episode_result, require_partial
from mpc_llm.core import CostFunction, Dynamics, OptimizeResult, validated


class ARGSConfig(BaseModel):
    """ARGS settings.

    Attributes:
        num_candidates: ``k``, the most likely next tokens rescored at each step.
        weight: ``w``, the reward's weight against the log-probability.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_candidates: int = Field(10, ge=1)
    weight: float = Field(1.5, ge=0.0, allow_inf_nan=False)


class ARGS:
    """Greedy reward-guided decoding over the top-``k`` next tokens."""

    config_class: ClassVar[type[BaseModel]] = ARGSConfig
    anytime: ClassVar[bool] = False
    adaptive: ClassVar[bool] = False

    def __init__(self, config: ARGSConfig | Mapping[str, Any] | None = None, **settings: Any) -> None:
        self.config = validated(ARGSConfig, config, settings)

    def spec(self) -> dict[str, Any]:
        """What identifies this controller in a comparison's settings."""
        return {"class": type(self).__name__, "config": self.config.model_dump(mode="json")}

    def candidates_per_step(self, episode: int, max_samples: int | None) -> int:
        """``k``: ``num_candidates``, or the most that fit a total budget over ``episode`` steps."""
        if max_samples is None:
            return self.config.num_candidates
        k = max_samples // episode
        if k < 1:
            raise ValueError(
                f"ARGS scores candidates at every token: a budget of {max_samples} samples is smaller than "
                f"one candidate per token ({episode} tokens); raise the budget or compare in tokens"
            )
        return min(k, self.config.num_candidates)

    def check_budget(self, episode: int, max_samples: int) -> None:
        """Raise a `ValueError` if ``max_samples`` is less than one candidate per token."""
        self.candidates_per_step(episode, max_samples)

    def check(self, episode: int, cost: Any = None) -> None:
        """Refuse a cost that cannot score partial text (before any model work)."""
        require_partial(cost, "ARGS scores partial responses at every token")

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
        """Decode every problem's response token by token; ``seed`` is unused (greedy search), and a
        token budget does not bind (ARGS generates exactly one token per step)."""
        self.check(dynamics.horizon, cost)
        k = self.candidates_per_step(dynamics.horizon, max_samples)
        start, B = time.perf_counter(), dynamics.batch_size
        system, active = dynamics, list(range(B))
        finals: dict[int, Final] = {}
        samples, tokens = [0] * B, [0] * B
        while active:
            rollout, logp = system.candidates(k)
            costs, metrics = cost.evaluate(rollout)
            costs = costs.double().cpu().nan_to_num(nan=math.inf)
            score = logp.double().cpu() - self.config.weight * costs
            pick = score.argmax(dim=1)
            chosen = rollout.take(pick.unsqueeze(1))
            system = system.advance(chosen, 1)
            done = system.finished().tolist()
            for i, b in enumerate(active):
                samples[b] += k
                tokens[b] += 1
                if done[i]:
                    j = int(pick[i])
                    finals[b] = Final(
                        float(costs[i, j]),
                        chosen.problems([i]),
                        {n: float(v[i, j]) for n, v in metrics.items()},
                    )
            keep = [i for i, d in enumerate(done) if not d]
            if not keep:
                break
            system, active = system.select(keep), [active[i] for i in keep]
        return episode_result([finals[b] for b in range(B)], samples, tokens, time.perf_counter() - start)
