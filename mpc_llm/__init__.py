"""mpc_llm: test-time alignment of language models as sampling-based optimal control.

The language model is a stochastic system whose control input is a Gaussian perturbation of its
pre-logits; controllers (AISP / MPPI, CEM, random shooting, best-of-N) steer it toward a reward.

Layers (each imports only those below it):

- `mpc_llm.core`: the control problem's types (`Dynamics`, `CostFunction`, `Rollout`, results);
- `mpc_llm.controllers` (on core) and `mpc_llm.lm` (on core: everything Hugging Face);
- `mpc_llm.dynamics` and `mpc_llm.rewards` (on core and lm);
- `mpc_llm.evaluation`, then `mpc_llm.experiment`; `mpc_llm.cli` on top.

The names below are loaded on first use, so ``import mpc_llm.core`` loads nothing else.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_EXPORTS = {
    "Budget": "mpc_llm.core",
    "CostFunction": "mpc_llm.core",
    "Dynamics": "mpc_llm.core",
    "IterationRecord": "mpc_llm.core",
    "OptimizeResult": "mpc_llm.core",
    "Rollout": "mpc_llm.core",
    "Controller": "mpc_llm.controllers",
    "ControllerConfig": "mpc_llm.controllers",
    "ControllerState": "mpc_llm.controllers",
    "GaussianController": "mpc_llm.controllers",
    "GaussianState": "mpc_llm.controllers",
    "Planner": "mpc_llm.controllers",
    "SequentialController": "mpc_llm.controllers",
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mpc_llm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
