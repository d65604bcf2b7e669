"""Sampling-based controllers: each implements only ``sample`` and ``update``."""

from mpc_llm.controllers.aisp import AISP, AISPConfig
from mpc_llm.controllers.base import Controller, ControllerConfig, ControllerState, GaussianConfig
from mpc_llm.controllers.best_of_n import BestOfN
from mpc_llm.controllers.cem import CEM, CEMConfig
from mpc_llm.controllers.random_shooting import RandomShooting

#: Controllers by name, as the CLI and config files spell them.
CONTROLLERS: dict[str, type[Controller]] = {
    "aisp": AISP,
    "cem": CEM,
    "random_shooting": RandomShooting,
    "best_of_n": BestOfN,
}

__all__ = [
    "AISP",
    "CEM",
    "CONTROLLERS",
    "AISPConfig",
    "BestOfN",
    "CEMConfig",
    "Controller",
    "ControllerConfig",
    "ControllerState",
    "GaussianConfig",
    "RandomShooting",
]
