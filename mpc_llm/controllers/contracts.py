"""Contract check for your own controller: what comparisons and records rely on of a `Planner`.

`check_planner` runs a controller on a system and cost of yours (or the toy ones) and raises an
``AssertionError`` naming the broken promise: one answer per problem (``best_rollout`` with
``N = 1``, ``best_cost`` ``(B,)``), the budget kept (no problem scores more samples than
``max_samples``, the counts add up), and the same answer for the same seed. The project runs it on
its own controllers; `mpc_llm.core.contracts` checks systems and costs.

Example:
    >>> from mpc_llm.controllers import BestOfN
    >>> from mpc_llm.dynamics import ToyLM, ToyReward
    >>> check_planner(BestOfN(num_samples=4), ToyLM.example(2), ToyReward.example(), budget=8)
"""

from __future__ import annotations

import torch

from mpc_llm.controllers.planner import Planner
from mpc_llm.core import CostFunction, Dynamics
from mpc_llm.core.contracts import same_rollout

__all__ = ["check_planner"]


def _fail(planner: Planner, what: str) -> AssertionError:
    return AssertionError(f"Planner contract ({type(planner).__name__}): {what}")


def check_planner(
    planner: Planner, system: Dynamics, cost: CostFunction, budget: int = 8, seed: int = 0
) -> None:
    """Run ``planner`` twice on ``system`` with ``max_samples=budget`` and the same seeds; check the
    answer's shapes, the budget kept and that both runs agree."""
    B = system.batch_size
    seeds = list(range(seed, seed + B))
    first = planner.optimize(system, cost, seed=seeds, max_samples=budget)
    if (first.best_rollout.batch_size, first.best_rollout.num_samples) != (B, 1):
        raise _fail(
            planner,
            f"best_rollout must hold one answer per problem (B={B}, N=1), got "
            f"({first.best_rollout.batch_size}, {first.best_rollout.num_samples})",
        )
    if tuple(first.best_cost.shape) != (B,):
        raise _fail(planner, f"best_cost must be ({B},), got {tuple(first.best_cost.shape)}")
    spent = first.budget.samples_per_problem or (first.budget.samples,) * B
    if len(spent) != B or max(spent) > budget or first.budget.samples != max(spent):
        raise _fail(
            planner,
            f"max_samples={budget} must bound every problem's scored samples, and "
            f"budget.samples be their largest; got {list(spent)}, {first.budget.samples}",
        )
    second = planner.optimize(system, cost, seed=seeds, max_samples=budget)
    same_cost = torch.equal(first.best_cost.nan_to_num(0.0), second.best_cost.nan_to_num(0.0))
    if not same_cost or not same_rollout(first.best_rollout, second.best_rollout):
        raise _fail(planner, "the same seed must give the same answer (draw only from the generators)")
