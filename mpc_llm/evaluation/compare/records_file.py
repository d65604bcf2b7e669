"""A records file: one strict-JSON record per line (finite numbers or null, never NaN or infinities).

`read_records` reads one back (a torn last line, from a process killed mid-write, is cut off),
`append_records` adds records in one fsynced write, `write_records` replaces a file atomically.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
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


class RunFolderError(ValueError):
    """The output folder holds something this run must not overwrite or cannot read."""


class _NonFinite(ValueError):
    """A records line holding NaN or an infinity (json's ``NaN``, ``Infinity``, ``-Infinity``)."""


def _refuse_constant(constant: str) -> Any:
    raise _NonFinite(constant)


def read_records(path: Path, *, repair: bool = True) -> list[dict[str, Any]]:
    """The records of one file; a torn last line (a kill mid-write) is cut off the file with a warning
    (``repair=False``: left in place and skipped, e.g. to check a folder without writing to it).

    Raises:
        RunFolderError: a line before the last is not JSON (not a torn write: the file is damaged), or
            a line holds NaN or an infinity (records hold finite numbers or null); the message names
            the file and line and what to do.
    """
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    records: list[dict[str, Any]] = []
    good_bytes = 0
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line, parse_constant=_refuse_constant))
        except _NonFinite as err:
            raise RunFolderError(
                f"{path}:{number} holds {err} (records hold finite numbers or null): delete that line "
                "and run again with --resume to redo its job, or start anew with --overwrite"
            ) from None
        except json.JSONDecodeError as err:
            if number == len(lines):
                if repair:
                    warnings.warn(f"dropping a torn last line of {path}", RuntimeWarning, stacklevel=4)
                    with path.open("r+b") as handle:
                        handle.truncate(good_bytes)
                break
            raise RunFolderError(
                f"{path}:{number} is not valid JSON ({err}): delete that line and run again with --resume "
                "to redo its job, or start anew with --overwrite"
            ) from err
        good_bytes += len(line.encode("utf-8"))
    return records


def append_records(path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    """Append ``records`` to ``path`` in one write, flushed and fsynced (strict JSON, one per line)."""
    payload = "".join(strict_json(r) + "\n" for r in records)
    if path.exists() and path.stat().st_size > 0:
        with path.open("rb") as handle:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":  # a complete last line cut before its newline
                payload = "\n" + payload
    with path.open("a", encoding="utf-8") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())


def write_records(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Replace ``path`` by ``records`` atomically (a temporary file, fsynced, then renamed)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write("".join(strict_json(r) + "\n" for r in records))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
