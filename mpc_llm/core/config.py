"""Reading configuration files: YAML or JSON mappings, validated by the pydantic models that use them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


def read_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``) or JSON file holding one mapping.

    Raises:
        ValueError: if the file cannot be read or parsed, or does not hold a mapping; the message
            names the file.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ValueError(f"cannot read config file {path}: {err.strerror or err}") from err
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"cannot parse config file {path}: {err}") from err
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of settings, got {type(data).__name__}")
    return data


def validated(
    model: type[M], config: BaseModel | Mapping[str, Any] | None, overrides: Mapping[str, Any]
) -> M:
    """``model`` validated from a config object or mapping, with keyword ``overrides`` on top.

    Example:
        >>> from pydantic import BaseModel
        >>> class Settings(BaseModel):
        ...     a: int = 1
        ...     b: int = 2
        >>> validated(Settings, {"a": 5}, {"b": 7})
        Settings(a=5, b=7)
    """
    base = config.model_dump() if isinstance(config, BaseModel) else dict(config or {})
    return model.model_validate({**base, **overrides})
