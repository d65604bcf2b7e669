"""Deprecated alias: in 0.2.0 these names moved to `mpc_llm.lm` and `mpc_llm.lm.gguf`.

Using one warns (a `DeprecationWarning` naming its new import); the alias goes in 0.3.0.
"""

from mpc_llm import lm as _lm
from mpc_llm._moved import moved as _moved
from mpc_llm.lm import gguf as _gguf

_alias, __all__ = _moved(
    __name__,
    {
        _lm: [
            "DEFAULT_MODEL",
            "default_model_path",
            "is_cache_warm",
            "load_default_model",
            "load_default_tokenizer",
            "load_model",
            "resolve_dtype",
        ],
        _gguf: ["cache_root"],
    },
)


def __getattr__(name: str) -> object:
    return _alias(name)
