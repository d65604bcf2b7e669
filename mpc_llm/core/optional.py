"""Optional dependencies: import them lazily, and say how to install them when they are missing."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingDependencyError(ImportError):
    """An optional dependency is not installed; the message says how to install it."""


def require(module: str, *, extra: str, feature: str, package: str | None = None) -> ModuleType:
    """Import ``module`` or raise a `MissingDependencyError` naming ``feature`` and the pip extra.

    Args:
        module: the module to import, e.g. ``"sentence_transformers"``.
        extra: the optional extra of ``mpc_llm`` that installs it, e.g. ``"embed"``.
        feature: what needs it, completing "is needed ...", e.g. ``"by EmbeddingSimilarityReward"``
            or ``"to read GGUF files"``.
        package: the PyPI name when it differs from the module name.

    Example:
        >>> require("math", extra="none", feature="by this doctest").sqrt(4.0)
        2.0
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        name = package or module
        raise MissingDependencyError(
            f"the optional dependency '{name}' is needed {feature} but is not installed; install it with "
            f"`pip install {name}` or `pip install 'mpc_llm[{extra}]'`"
        ) from exc
