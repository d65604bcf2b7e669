"""Comparison records: one per (prompt, controller, seed, budget), read off an `OptimizeResult`.

A record holds the chosen response's ``cost`` (the objective) and, apart, its ``reward`` as the
reward term scored it (the negated cost when the objective reports no reward), the fields its
rollout describes (for a language model ``response``, ``length``, ``kl``), the ``samples`` it
scored and the ``tokens`` it generated to get there, and the ``seconds`` it took.

Two ways to read a budget ``k``:

- `anytime_records` (open-loop controllers): one run serves every budget; the answer at budget
  ``k`` is the best of the run's first samples within ``k`` (``k`` samples, or as many samples as
  fit in ``k`` generated tokens, at least one).
- `final_records` (sequential controllers: receding horizon, blockwise): one run per budget; its
  answer is the run's own.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from mpc_llm.core import OptimizeResult

BudgetUnit = Literal["samples", "tokens"]


def anytime_records(
    result: OptimizeResult, indices: list[int], name: str, seed: int, budgets: list[int], unit: BudgetUnit
) -> list[dict[str, Any]]:
    """Records at every budget from one run kept with ``keep_rollouts=True``."""
    history = result.history
    costs = result.all_costs()
    rewards = result.all_metric("reward") if "reward" in history[0].metrics else -costs
    counts = torch.cat([r.token_counts for r in history], dim=1).cumsum(dim=1)  # type: ignore[misc]
    sizes = [r.costs.shape[1] for r in history]
    ends = torch.tensor(sizes).cumsum(0).tolist()
    per_sample = [s for r in history for s in [r.seconds / r.costs.shape[1]] * r.costs.shape[1]]
    records = []
    for k in budgets:
        for b, prompt_index in enumerate(indices):
            # in tokens: the samples whose tokens fit in k (at least one)
            used = k if unit == "samples" else max(1, int((counts[b] <= k).sum()))
            j = int(costs[b, :used].argmin())
            it = next(i for i, end in enumerate(ends) if end > j)
            rollout = history[it].rollout
            assert rollout is not None, "anytime records need optimize(..., keep_rollouts=True)"
            records.append(
                {
                    "prompt_index": prompt_index,
                    "controller": name,
                    "seed": seed,
                    "budget": k,
                    "reward": float(rewards[b, j]),
                    "cost": float(costs[b, j]),
                    **rollout.describe(b, j - (ends[it] - sizes[it])),
                    "samples": used,
                    "tokens": int(counts[b, used - 1]),
                    "seconds": sum(per_sample[:used]) / len(indices),
                }
            )
    return records


def final_records(
    result: OptimizeResult, indices: list[int], name: str, seed: int, budget: int
) -> list[dict[str, Any]]:
    """Records of one run at one budget: each problem's answer is the run's own best."""
    rewards = result.best_metrics.get("reward")
    records = []
    for b, prompt_index in enumerate(indices):
        cost = float(result.best_cost[b])
        records.append(
            {
                "prompt_index": prompt_index,
                "controller": name,
                "seed": seed,
                "budget": budget,
                "reward": float(rewards[b]) if rewards is not None else -cost,
                "cost": cost,
                **result.best_rollout.describe(b, 0),
                "samples": result.budget.samples_per_problem[b],
                "tokens": result.budget.tokens_per_problem[b],
                "seconds": result.budget.seconds / len(indices),
            }
        )
    return records
