"""Value-guided blockwise decoding: controlled decoding with a learned prefix value.

Follows blockwise controlled decoding (Mudgal et al., "Controlled Decoding from Language Models",
ICML 2024): from the current prefix draw ``num_samples`` (``K``) continuations of ``block`` tokens
from the base model, score each by a learned prefix value ``V``, commit the best block, repeat. No
candidate is rolled out to the end and the reward is not called until a response ends; the value is
any value of `mpc_llm.values` (`mpc-llm train-value`), a regression of the final reward on the
pre-logit state of base-model rollouts (the paper's CD-FUDGE target with Monte Carlo targets).

Scoring, for each candidate:

- unfinished: ``V`` at its last state, the pre-logit of the step *after* the block (each candidate
  runs one look-ahead token past the block to reach it; the look-ahead is counted in the tokens and
  never committed), so ``V`` sees every token of the block, as the paper's ``V(prefix + block)``;
- ended inside the block (end-of-sequence): ``V`` at its last state as well;
- in the block that ends the episode (every candidate is finished): the reward, ``K`` reward calls,
  so the last choice is best-of-``K`` on the true reward (the paper scores it by ``V`` too; the
  reward is available there at ``K`` calls, what a best-of-``K`` spends).

A response chosen because it ended early is scored once by the reward for its record.

Budgets: reward calls (scored samples) per problem are at most ``K`` (the last block; 1 when the
chosen response ended early), so a budget of ``n`` samples runs ``K = n``. A budget in tokens runs
the largest ``K`` whose worst case (every candidate running its whole block and look-ahead, every
block of the episode) fits. Each block costs ``K`` value evaluations per problem (forward only).

In a comparison (a value trained with `mpc-llm train-value --out values/smollm2-vader`):

    controllers:
      cd: {name: value_blockwise, value: values/smollm2-vader, block: 16}

Its settings record says what the value cost to learn (``value_learning``), beside the budget.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor

from mpc_llm.controllers.sequential import Episode, SequentialController, Start, Step
from mpc_llm.controllers.state import Settings
from mpc_llm.core import (
    BudgetUnit,
    CostFunction,
    Dynamics,
    IterationRecord,
    Rollout,
    draw_seeds,
    make_generators,
)
from mpc_llm.core.rollout import stack_problems
from mpc_llm.values import RecordStates, ValuePath, ValueRef

#: One random stream per row (its problem's, shared by nothing else).
Streams = list[torch.Generator]


class ValueBlockwiseConfig(Settings):
    """Value-guided blockwise decoding settings.

    Attributes:
        value: the value folder (`mpc-llm train-value --out ...`) or its ``.safetensors`` file.
        num_samples: candidates per block (``K``) when no budget is given.
        block: tokens committed per block.
    """

    value: ValuePath
    num_samples: int = Field(8, ge=1)
    block: int = Field(16, ge=1)


class ValueBlockwise(SequentialController[ValueBlockwiseConfig, Streams]):
    """Best of ``K`` base-model blocks by a learned value, block after block (module docstring)."""

    config_class = ValueBlockwiseConfig
    preset: ClassVar[dict[str, Any]] = {"num_samples": 8, "block": 16}

    def __init__(self, config: Any = None, **overrides: object) -> None:
        super().__init__(config, **overrides)
        self.value = ValueRef(self.config.value)

    def value_params(self) -> int:
        """The value network's parameters (from its card)."""
        return self.value.params()

    def spec(self) -> dict[str, Any]:
        """Class and config, and what the value cost to learn (from its card)."""
        return {**super().spec(), "value_learning": self.value.learning()}

    def check(self, episode: int, cost: Any = None, *, episode_name: str = "the episode length") -> None:
        """The value file exists and is one (before any model loads)."""
        self.value.check()

    def check_system(self, system: Any) -> None:
        """The value's card against the model and the run (`ValueRef.check_for`), before the weights
        load."""
        self.value.check_for(system)

    def plan_lengths(self, episode: int) -> list[int]:
        """The most tokens one candidate of each block runs: ``block + 1`` (the look-ahead), and the
        rest of the episode for the block that ends it."""
        lengths, left, block = [], episode, self.config.block
        while left > 0:
            lengths.append(left if left <= block + 1 else block + 1)
            left -= lengths[-1] if left <= block + 1 else block
        return lengths

    def candidates(self, episode: int, max_samples: int | None = None, max_tokens: int | None = None) -> int:
        """``K``: ``num_samples``, the sample budget, or the most whose worst case fits the tokens."""
        if max_samples is not None:
            return max_samples
        if max_tokens is None:
            return self.config.num_samples
        worst = sum(self.plan_lengths(episode))
        if max_tokens < worst:
            raise ValueError(
                f"a budget of {max_tokens} tokens is below one candidate per block ({worst} tokens: blocks "
                f"of {self.config.block} and a look-ahead token each over {episode} steps); raise the budget"
            )
        return max_tokens // worst

    def check_budget(self, episode: int | None, budget: int, unit: BudgetUnit = "samples") -> None:
        """Refuse a token budget below one candidate per block (any sample budget >= 1 runs)."""
        if episode is not None and unit == "tokens":
            self.candidates(episode, max_tokens=budget)

    def begin(self, dynamics: Dynamics, start: Start) -> tuple[list[int], Streams]:
        """One row per problem with its own random stream; the value is loaded (and checked)."""
        self.value.for_system(dynamics)
        self.candidates(dynamics.horizon, start.max_samples, start.max_tokens)
        streams = start.streams(dynamics)
        return list(range(dynamics.batch_size)), streams

    def step(self, system: Dynamics, cost: CostFunction, episode: Episode[Streams]) -> Step[Streams]:
        """Draw ``K`` blocks per row, score them (value, or reward in the last block), keep the best."""
        R, block = system.batch_size, self.config.block
        K = self.candidates(episode.length, episode.max_samples, episode.max_tokens)
        H = self.plan_lengths(system.horizon)[0]  # one rule for the step and for the budgets
        last = system.horizon == H
        plan = system.with_horizon(H)
        recorder = RecordStates()
        rollout = plan.rollout_feedback(
            system.zero_controls(K, plan.horizon),
            make_generators(draw_seeds(episode.carry), R, system.device),
            recorder,
        )
        lengths = rollout.token_counts().cpu()  # (R, K), look-ahead included
        metrics: dict[str, Tensor] = {}
        if last:
            costs, metrics = cost.evaluate(rollout)
            scores = costs.double().cpu().nan_to_num(nan=math.inf)
        else:
            scores = -self.values_at_last_state(recorder.states, lengths)
        pick = scores.argmin(dim=1, keepdim=True)  # (R, 1), the first on ties
        chosen = rollout.take(pick.to(rollout.lengths.device))
        row_costs = scores.gather(1, pick)[:, 0]
        row_metrics = {k: v.double().cpu().gather(1, pick)[:, 0] for k, v in metrics.items()}
        calls = [K if last else 0] * R
        ended = [] if last else self._ended_early(chosen, lengths.gather(1, pick)[:, 0])
        if ended:  # chosen responses that ended inside the block: one reward call each, for the record
            c, m = cost.evaluate(stack_problems([chosen.problems([i]) for i in ended]))
            row_costs[ended] = c[:, 0].double().cpu()
            row_metrics = {k: torch.full((R,), math.nan, dtype=torch.float64) for k in m}
            for k, v in m.items():
                row_metrics[k][ended] = v[:, 0].double().cpu()
            for i in ended:
                calls[i] = 1
        record = IterationRecord(
            iteration=episode.steps, costs=scores, best_cost=row_costs, seconds=0.0,
            tokens=int(lengths.sum()),
            token_counts=lengths, stats={"value_evals": torch.full((R,), 0.0 if last else float(K))},
            rollout=rollout if episode.keep_rollouts else None,
        )  # fmt: skip
        return Step(
            chosen=chosen, commit=plan.horizon if last else block, costs=row_costs, metrics=row_metrics,
            samples=calls, tokens=lengths.sum(dim=1).tolist(), carry=list(episode.carry), history=[record],
            compute={"value_evals": [0.0 if last else float(K)] * R},
        )  # fmt: skip

    def _ended_early(self, chosen: Rollout, lengths: Tensor) -> list[int]:
        """Rows whose chosen ``(R, 1)`` candidate ended (end-of-sequence) within the block."""
        done = chosen.finished[:, 0].cpu() if chosen.finished is not None else lengths <= self.config.block
        return [i for i in range(len(lengths)) if bool(done[i]) and int(lengths[i]) <= self.config.block]

    def values_at_last_state(self, states: list[Tensor], lengths: Tensor) -> Tensor:
        """``(R, K)`` float64 ``V`` at each candidate's last state (``states[t]``: ``(R * K, d)``)."""
        R, K = lengths.shape
        stacked = torch.stack(states, dim=1)  # (R * K, T, d)
        index = (lengths.reshape(-1).cpu() - 1).clamp(min=0)
        z = stacked[torch.arange(R * K), index]
        net = self.value.loaded
        with torch.no_grad():
            v = net(z.to(net.mean.dtype))
        return v.double().reshape(R, K)
