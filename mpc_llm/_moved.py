"""Aliases for modules that moved in 0.2.0: the old import keeps working for one release and warns.

Each old module (``mpc_llm.cost``, ``mpc_llm.models``, ``mpc_llm.dynamics.lm_sampling``, ...) is a
few lines: its old public names by new home, handed to `moved`, and a module ``__getattr__``.
A name is looked up in its new home when it is used (``from mpc_llm.cost import CostFunction`` or
``mpc_llm.cost.CostFunction``), and each use warns with a `DeprecationWarning` that names the new
import, attributed to the line that used it. The object is the new home's own, so ``isinstance``
checks and registries see one class. The aliases go in `REMOVED_IN` (CHANGELOG.md).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType

#: The release that removes the aliases.
REMOVED_IN = "0.3.0"


def moved(old: str, homes: Mapping[ModuleType, Sequence[str]]) -> tuple[Callable[[str], object], list[str]]:
    """The old module's lookup (a name from its new home, with a warning) and its ``__all__``.

    Args:
        old: the old module's name (its ``__name__``).
        homes: each new home and the names that moved there.

    Returns:
        ``alias(name)``, to be called from the old module's own ``def __getattr__(name)`` (the
        warning points two frames up, at the line that used the old name; unknown names raise
        `AttributeError` and do not warn), and the moved names, sorted, for ``__all__`` (so that
        ``from old import *`` goes through ``alias`` too).

    Example:
        >>> import warnings
        >>> from mpc_llm import core
        >>> alias, names = moved("mpc_llm.cost", {core: ["SumCost"]})
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     found = alias("SumCost")
        >>> found is core.SumCost, str(caught[0].message).split(";")[0]
        (True, 'mpc_llm.cost is deprecated: import SumCost from mpc_llm.core')
    """
    home_of = {name: home for home, names in homes.items() for name in names}

    def alias(name: str) -> object:
        home = home_of.get(name)
        if home is None:
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        warnings.warn(
            f"{old} is deprecated: import {name} from {home.__name__}; "
            f"{old} moved in mpc_llm 0.2.0 and is removed in {REMOVED_IN} (see CHANGELOG.md)",
            DeprecationWarning,
            stacklevel=3,
        )
        return getattr(home, name)

    return alias, sorted(home_of)
