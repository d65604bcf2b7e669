"""Sampling-based controllers: each implements only ``sample`` (and ``update`` if it adapts).

`RecedingHorizon` turns any of them into model predictive control (plan, commit, re-plan);
`BlockwiseBestOfN` is receding-horizon best-of-N, the controlled-decoding baseline;
`SpeculativeRejection` starts many responses and drops the weak ones at checkpoints; `ARGS`
rescores the top-k next tokens by the reward (all `SequentialController` classes).
"""

from mpc_llm.controllers.aisp import AISP, AISPConfig
from mpc_llm.controllers.args import ARGS, ARGSConfig
from mpc_llm.controllers.base import Controller
from mpc_llm.controllers.best_of_n import BestOfN
from mpc_llm.controllers.blockwise import BlockwiseBestOfN, BlockwiseConfig
from mpc_llm.controllers.cem import CEM, CEMConfig
from mpc_llm.controllers.random_shooting import RandomShooting
from mpc_llm.controllers.receding_horizon import RecedingHorizon, RecedingHorizonConfig
from mpc_llm.controllers.sequential import SequentialController
from mpc_llm.controllers.speculative_rejection import SpeculativeRejection, SpeculativeRejectionConfig
from mpc_llm.controllers.state import ControllerConfig, ControllerState, GaussianConfig

#: Controllers by name, as the CLI and config files spell them. ``receding_horizon`` takes an
#: ``inner`` controller spec (``{name: aisp, ...}``) beside its own settings.
CONTROLLERS: dict[str, type] = {
    "aisp": AISP,
    "cem": CEM,
    "random_shooting": RandomShooting,
    "best_of_n": BestOfN,
    "receding_horizon": RecedingHorizon,
    "blockwise_best_of_n": BlockwiseBestOfN,
    "speculative_rejection": SpeculativeRejection,
    "args": ARGS,
}

__all__ = [
    "AISP",
    "ARGS",
    "CEM",
    "CONTROLLERS",
    "AISPConfig",
    "ARGSConfig",
    "BestOfN",
    "BlockwiseBestOfN",
    "BlockwiseConfig",
    "CEMConfig",
    "Controller",
    "ControllerConfig",
    "ControllerState",
    "GaussianConfig",
    "RandomShooting",
    "RecedingHorizon",
    "RecedingHorizonConfig",
    "SequentialController",
    "SpeculativeRejection",
    "SpeculativeRejectionConfig",
]
