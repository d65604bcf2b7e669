"""Sampling-based controllers, all behind one interface (`Planner`: check, check_budget, optimize).

- Open loop (`Controller`: sample -> rollout -> cost -> update): `AISP`, `CEM`, `RandomShooting`,
  `BestOfN`, each implementing only ``sample`` (and ``update`` if it adapts) on the Gaussian
  proposal of `GaussianController`.
- Closed loop (`SequentialController`: one ``step`` in a loop the base class owns):
  `RecedingHorizon` turns any open-loop controller into model predictive control (plan, commit,
  re-plan); `BlockwiseBestOfN` is receding-horizon best-of-N, the controlled-decoding baseline;
  `SpeculativeRejection` starts many responses and drops the weak ones at checkpoints; `ARGS`
  rescores the top-k next tokens by the reward.
- Samplers (return a draw toward the tilted model ``p exp(r / beta) / Z``, with ``log Z``):
  `SoftBestOfN` and `AISPSampler` (open loop, `Sampler`), `SMC` and `QAlign` (sequential);
  `TwistedSMC`, SMC whose twist is a learned value and whose proposal may be steered by it, with
  the proposal's exact log-ratio in the weights.
- State feedback (a `Controller` whose ``sample`` returns a `mpc_llm.core.Policy`): `REControl`,
  gradient ascent on a learned value of the pre-logit at every step (`mpc_llm.values`).
- Learned prefix value, no gradient: `ValueBlockwise`, controlled decoding that keeps the best of
  ``K`` blocks by the value and calls the reward only on finished responses.
- `CONTROLLERS`, `register`, `build`, `with_preset`, `with_settings`, `BASELINE`: controllers by
  name, for config files and the command line (`mpc_llm.controllers.registry`).
"""

from mpc_llm.controllers.aisp import AISP, AISPConfig
from mpc_llm.controllers.aisp_sampler import AISPSampler
from mpc_llm.controllers.args import ARGS, ARGSConfig
from mpc_llm.controllers.base import BestSoFar, Controller
from mpc_llm.controllers.best_of_n import BestOfN
from mpc_llm.controllers.blockwise import BlockwiseBestOfN, BlockwiseConfig
from mpc_llm.controllers.cem import CEM, CEMConfig
from mpc_llm.controllers.gaussian import GAUSSIAN_PRESET, GaussianController
from mpc_llm.controllers.planner import Planner
from mpc_llm.controllers.qalign import QAlign, QAlignConfig
from mpc_llm.controllers.random_shooting import RandomShooting
from mpc_llm.controllers.re_control import REControl, REControlConfig
from mpc_llm.controllers.receding_horizon import Plan, RecedingHorizon, RecedingHorizonConfig
from mpc_llm.controllers.registry import (
    BASELINE,
    COMPARE_DEFAULT,
    CONTROLLERS,
    DEFAULT_NAME,
    accepted_settings,
    baseline,
    build,
    controller_class,
    is_baseline,
    names,
    register,
    settings_of,
    unregister,
    with_preset,
    with_settings,
)
from mpc_llm.controllers.sampling import Sampler, SamplerConfig
from mpc_llm.controllers.sequential import Episode, Final, SequentialController, Start, Step
from mpc_llm.controllers.smc import SMC, SMCConfig
from mpc_llm.controllers.soft_best_of_n import SoftBestOfN
from mpc_llm.controllers.speculative_rejection import SpeculativeRejection, SpeculativeRejectionConfig
from mpc_llm.controllers.state import (
    ControllerConfig,
    ControllerState,
    GaussianConfig,
    GaussianState,
    PlannerState,
    SettingError,
    Settings,
    override,
)
from mpc_llm.controllers.twisted_smc import TwistedSMC, TwistedSMCConfig
from mpc_llm.controllers.value_blockwise import ValueBlockwise, ValueBlockwiseConfig

__all__ = [
    "AISP",
    "ARGS",
    "BASELINE",
    "CEM",
    "COMPARE_DEFAULT",
    "CONTROLLERS",
    "DEFAULT_NAME",
    "GAUSSIAN_PRESET",
    "SMC",
    "AISPConfig",
    "AISPSampler",
    "ARGSConfig",
    "BestOfN",
    "BestSoFar",
    "BlockwiseBestOfN",
    "BlockwiseConfig",
    "CEMConfig",
    "Controller",
    "ControllerConfig",
    "ControllerState",
    "Episode",
    "Final",
    "GaussianConfig",
    "GaussianController",
    "GaussianState",
    "Plan",
    "Planner",
    "PlannerState",
    "QAlign",
    "QAlignConfig",
    "REControl",
    "REControlConfig",
    "RandomShooting",
    "RecedingHorizon",
    "RecedingHorizonConfig",
    "SMCConfig",
    "Sampler",
    "SamplerConfig",
    "SequentialController",
    "SettingError",
    "Settings",
    "SoftBestOfN",
    "SpeculativeRejection",
    "SpeculativeRejectionConfig",
    "Start",
    "Step",
    "TwistedSMC",
    "TwistedSMCConfig",
    "ValueBlockwise",
    "ValueBlockwiseConfig",
    "accepted_settings",
    "baseline",
    "build",
    "controller_class",
    "is_baseline",
    "names",
    "override",
    "register",
    "settings_of",
    "unregister",
    "with_preset",
    "with_settings",
]
