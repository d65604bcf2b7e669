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

Invalid samples. A sample whose reward or cost is NaN or infinite is never chosen while a valid one
is within the budget. When every sample within a budget is invalid (e.g. a reward that could not
score the first ``k`` responses), the record says so: ``"invalid": true`` with ``"reward": null``
and ``"cost": null``, and no response; summaries count such records apart and leave them out of
the means. A record only ever holds finite numbers or null (the store writes strict JSON).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch

from mpc_llm.core import OptimizeResult
from mpc_llm.evaluation.store import finite

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
            valid = torch.isfinite(costs[b, :used]) & torch.isfinite(rewards[b, :used])
            j = int(costs[b, :used].masked_fill(~valid, float("inf")).argmin())
            it = next(i for i, end in enumerate(ends) if end > j)
            rollout = history[it].rollout
            assert rollout is not None, "anytime records need optimize(..., keep_rollouts=True)"
            key = {"prompt_index": prompt_index, "controller": name, "seed": seed, "budget": k}
            spent = {
                "samples": used,
                "tokens": int(counts[b, used - 1]),
                "seconds": sum(per_sample[:used]) / len(indices),
            }
            if not bool(valid.any()):
                records.append(invalid_record(key, spent))
                continue
            records.append(
                finite_record(
                    {
                        **key,
                        "reward": float(rewards[b, j]),
                        "cost": float(costs[b, j]),
                        **rollout.describe(b, j - (ends[it] - sizes[it])),
                        **spent,
                    }
                )
            )
    return records


def invalid_record(key: Mapping[str, Any], spent: Mapping[str, Any]) -> dict[str, Any]:
    """The record of a budget whose every sample was invalid (NaN or infinite reward or cost)."""
    return finite_record({**key, "reward": None, "cost": None, "invalid": True, **spent})


def finite_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` with every non-finite number made null; a non-finite ``reward`` or ``cost`` makes
    the whole record invalid (its response is dropped: nothing chose it)."""
    out = finite(record)
    if not out.get("invalid") and (out.get("reward") is None or out.get("cost") is None):
        key = {k: out[k] for k in ("prompt_index", "controller", "seed", "budget") if k in out}
        return invalid_record(key, {k: out[k] for k in ("samples", "tokens", "seconds") if k in out})
    return out


def final_records(
    result: OptimizeResult, indices: list[int], name: str, seed: int, budget: int
) -> list[dict[str, Any]]:
    """Records of one run at one budget: each problem's answer is the run's own best."""
    rewards = result.best_metrics.get("reward")
    records = []
    for b, prompt_index in enumerate(indices):
        cost = float(result.best_cost[b])
        records.append(
            finite_record(
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
        )
    return records
