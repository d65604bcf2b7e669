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
from typing import Any

from pydantic import Field

from mpc_llm.controllers.sequential import Episode, SequentialController, Step, require_partial
from mpc_llm.controllers.state import Settings
from mpc_llm.core import BudgetUnit, CostFunction, Dynamics


class ARGSConfig(Settings):
    """ARGS settings.

    Attributes:
        num_candidates: ``k``, the most likely next tokens rescored at each step.
        weight: ``w``, the reward's weight against the log-probability.
    """

    num_candidates: int = Field(10, ge=1)
    weight: float = Field(1.5, ge=0.0, allow_inf_nan=False)


class ARGS(SequentialController[ARGSConfig, None]):
    """Greedy reward-guided decoding over the top-``k`` next tokens (``seed`` is unused: greedy
    search; a token budget does not bind: ARGS generates exactly one token per step)."""

    config_class = ARGSConfig

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

    def check_budget(self, episode: int | None, budget: int, unit: BudgetUnit = "samples") -> None:
        """Raise a `ValueError` if a sample budget is less than one candidate per token, or a token
        budget less than one response (ARGS generates one token per step, ``episode`` at most)."""
        if episode is None:
            return
        if unit == "samples":
            self.candidates_per_step(episode, budget)
        elif budget < episode:
            raise ValueError(
                f"ARGS generates one token per step and a response may take {episode} (max_new_tokens): "
                f"a budget of {budget} tokens could be overspent; raise the smallest budget to {episode} "
                "or lower max_new_tokens"
            )

    def check_system(self, system: Any) -> None:
        """Refuse more candidates per token than the model's vocabulary (``system.vocab_size``)."""
        vocab = getattr(system, "vocab_size", None)
        if vocab is not None and self.config.num_candidates > vocab:
            raise ValueError(
                f"num_candidates={self.config.num_candidates} exceeds the model's vocabulary of {vocab} "
                f"tokens (ARGS rescores at most every next token); lower num_candidates to at most {vocab}"
            )

    def check(self, episode: int, cost: Any = None, *, episode_name: str = "the episode length") -> None:
        """Refuse a cost that cannot score partial text (before any model work)."""
        require_partial(cost, "ARGS scores partial responses at every token")

    def step(self, system: Dynamics, cost: CostFunction, episode: Episode[None]) -> Step[None]:
        """Rescore the ``k`` most likely next tokens and commit the best."""
        k = self.candidates_per_step(episode.length, episode.max_samples)
        rollout, logp = system.candidates(k)
        costs, metrics = cost.evaluate(rollout)
        costs = costs.double().cpu().nan_to_num(nan=math.inf)
        pick = (logp.double().cpu() - self.config.weight * costs).argmax(dim=1, keepdim=True)
        return Step(
            chosen=rollout.take(pick),
            commit=1,
            costs=costs.gather(1, pick).squeeze(1),
            metrics={n: v.double().cpu().gather(1, pick).squeeze(1) for n, v in metrics.items()},
            samples=[k] * system.batch_size,
            tokens=[1] * system.batch_size,
        )
