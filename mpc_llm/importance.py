"""Deprecated alias: in 0.2.0 these names moved to `mpc_llm.core`.

Using one warns (a `DeprecationWarning` naming its new import); the alias goes in 0.3.0.
"""

from mpc_llm import core as _core
from mpc_llm._moved import moved as _moved

_alias, __all__ = _moved(
    __name__, {_core: ["effective_sample_size", "importance_weights", "likelihood_log_ratio"]}
)


def __getattr__(name: str) -> object:
    return _alias(name)
