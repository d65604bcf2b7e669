"""Deprecated alias: in 0.2.0 these names moved to `mpc_llm.lm.cache`.

Using one warns (a `DeprecationWarning` naming its new import); the alias goes in 0.3.0.
"""

from mpc_llm._moved import moved as _moved
from mpc_llm.lm import cache as _cache

_alias, __all__ = _moved(__name__, {_cache: ["expand_cache", "growing_layer_class"]})


def __getattr__(name: str) -> object:
    return _alias(name)
