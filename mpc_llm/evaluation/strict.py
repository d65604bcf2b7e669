"""Strict JSON for records: finite numbers or null, never NaN or infinities."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float (in nested dicts, lists and tuples) made None.

    Example:
        >>> finite({"reward": float("nan"), "kl": [0.5, float("inf")]})
        {'reward': None, 'kl': [0.5, None]}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def strict_json(value: Any, **options: Any) -> str:
    """``json.dumps`` (sorted keys) that refuses NaN and infinities, naming the offending fields.

    Example:
        >>> try:
        ...     strict_json({"reward": float("nan"), "cost": 1.0})
        ... except ValueError as err:
        ...     print(str(err).split(":")[0])
        refusing to write a non-finite number (NaN or infinity) in reward
    """
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False, **options)
    except ValueError:
        fields = [] if not isinstance(value, Mapping) else [
            str(k) for k, v in value.items() if isinstance(v, float) and not math.isfinite(v)
        ]  # fmt: skip
        where = f" in {', '.join(sorted(fields))}" if fields else ""
        raise ValueError(
            f"refusing to write a non-finite number (NaN or infinity){where}: "
            "records hold finite numbers or null"
        ) from None
