"""The core of mpc_llm: the control problem's types, with nothing of Hugging Face in them.

- `Dynamics`: ``B`` problems driven by ``(B, N, tau, d)`` control sequences -> a `Rollout`;
- `CostFunction`: rollout -> ``(B, N)`` costs (and the named quantities scored on the way);
- `OptimizeResult`, `IterationRecord`, `Budget`: what a controller returns;
- `importance_weights`, `effective_sample_size`, `likelihood_log_ratio`: the AISP / MPPI weights,
  and `temperature_for_ess`: the temperature that reaches a target effective sample size;
- `ZeroOrderHold`: ``K`` knots held over ``tau`` controlled steps;
- `tilted_estimate`, `Population`: what a sampler's weights estimate about the tilted model
  (``log Z``, its KL to the base model);
- `Policy`: a state-feedback control law ``v_t = policy(z_t, t)`` (`Dynamics.rollout_feedback`);
- `make_generators`: one seeded `torch.Generator` per problem.

This package imports nothing else of mpc_llm (checked by the import-linter contracts).
"""

from mpc_llm.core.config import read_mapping, validated
from mpc_llm.core.cost import CostFunction, FunctionCost, Metrics, SumCost
from mpc_llm.core.dynamics import Dynamics
from mpc_llm.core.importance import (
    effective_sample_size,
    importance_weights,
    likelihood_log_ratio,
    temperature_for_ess,
)
from mpc_llm.core.optional import MissingDependencyError, require
from mpc_llm.core.parameterization import ZeroOrderHold
from mpc_llm.core.policy import Policy
from mpc_llm.core.random import draw_seeds, make_generators
from mpc_llm.core.result import Budget, BudgetUnit, IterationRecord, OptimizeResult
from mpc_llm.core.rollout import Rollout
from mpc_llm.core.tilted import Population, TiltedEstimate, draw_index, tilted_estimate
from mpc_llm.core.weighted import WeightedTerms, check_weight

__all__ = [
    "Budget",
    "BudgetUnit",
    "CostFunction",
    "Dynamics",
    "FunctionCost",
    "IterationRecord",
    "Metrics",
    "MissingDependencyError",
    "OptimizeResult",
    "Policy",
    "Population",
    "Rollout",
    "SumCost",
    "TiltedEstimate",
    "WeightedTerms",
    "ZeroOrderHold",
    "check_weight",
    "draw_index",
    "draw_seeds",
    "effective_sample_size",
    "importance_weights",
    "likelihood_log_ratio",
    "make_generators",
    "read_mapping",
    "require",
    "temperature_for_ess",
    "tilted_estimate",
    "validated",
]
