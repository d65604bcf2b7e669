"""Dynamics: systems that turn ``(B, N, tau, d)`` control sequences into rollouts.

The language model (`LMDynamics`, on `mpc_llm.lm`) and systems with closed forms or classic control
problems (`IdentityDynamics`, `PointMass`, `Pendulum`), and a toy autoregressive model small
enough to enumerate (`ToyLM`, exact tilted distributions).
"""

from mpc_llm.core import Dynamics, make_generators
from mpc_llm.dynamics.identity import IdentityDynamics, LinearCost, QuadraticCost
from mpc_llm.dynamics.lm import LMDynamics
from mpc_llm.dynamics.pendulum import Pendulum, PendulumRollout, SwingUpCost, angle_normalize
from mpc_llm.dynamics.point_mass import GoalCost, PointMass, PointMassRollout
from mpc_llm.dynamics.toy_lm import ToyLM, ToyReward, ToyRollout, exact_tilted
from mpc_llm.lm import LMConfig, LMRollout

__all__ = [
    "Dynamics",
    "GoalCost",
    "IdentityDynamics",
    "LMConfig",
    "LMDynamics",
    "LMRollout",
    "LinearCost",
    "Pendulum",
    "PendulumRollout",
    "PointMass",
    "PointMassRollout",
    "QuadraticCost",
    "SwingUpCost",
    "ToyLM",
    "ToyReward",
    "ToyRollout",
    "angle_normalize",
    "exact_tilted",
    "make_generators",
]
