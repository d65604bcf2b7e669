"""Deprecated alias: in 0.2.0 these names moved to `mpc_llm.lm.testing`.

Using one warns (a `DeprecationWarning` naming its new import); the alias goes in 0.3.0.
"""

from mpc_llm._moved import moved as _moved
from mpc_llm.lm import testing as _testing

_alias, __all__ = _moved(
    __name__,
    {
        _testing: [
            "CHAT_TEMPLATE",
            "EOS_TOKEN",
            "PAD_TOKEN",
            "TINY_ARCHITECTURES",
            "random_llama_1b_config",
            "random_model",
            "tiny_config",
            "tiny_tokenizer",
        ]
    },
)


def __getattr__(name: str) -> object:
    return _alias(name)
