"""Dynamics: systems that turn ``(B, N, tau, d)`` control sequences into rollouts."""

from mpc_llm.dynamics.base import Dynamics, make_generators
from mpc_llm.dynamics.identity import IdentityDynamics, LinearCost, QuadraticCost
from mpc_llm.dynamics.lm import LMConfig, LMDynamics
from mpc_llm.dynamics.lm_rollout import LMRollout
from mpc_llm.dynamics.point_mass import GoalCost, PointMass, PointMassRollout

__all__ = [
    "Dynamics",
    "GoalCost",
    "IdentityDynamics",
    "LMConfig",
    "LMDynamics",
    "LMRollout",
    "LinearCost",
    "PointMass",
    "PointMassRollout",
    "QuadraticCost",
    "make_generators",
]
