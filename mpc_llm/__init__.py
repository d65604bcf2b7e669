"""mpc_llm: test-time alignment of language models as sampling-based optimal control.

The language model is a stochastic system whose control input is a Gaussian perturbation of its
pre-logits; controllers (AISP / MPPI, CEM, random shooting, best-of-N) steer it toward a reward.
"""

from mpc_llm.controllers.base import Controller, ControllerConfig, ControllerState
from mpc_llm.cost import CostFunction
from mpc_llm.dynamics.base import Dynamics
from mpc_llm.result import Budget, IterationRecord, OptimizeResult
from mpc_llm.rollout import Rollout

__version__ = "0.1.0"

__all__ = [
    "Budget",
    "Controller",
    "ControllerConfig",
    "ControllerState",
    "CostFunction",
    "Dynamics",
    "IterationRecord",
    "OptimizeResult",
    "Rollout",
    "__version__",
]
