"""A derived data set cached as one JSONL file: a header line saying what it was derived from, then
one object per line. A reader that finds another header (another source hash, other settings, an
older format) or a torn file gets None, and the caller rebuilds; writes go through a temporary
file, so a reader never sees half of one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def write_jsonl(target: Path, header: Mapping[str, Any], rows: Iterable[Mapping[str, Any]]) -> None:
    """Write ``header`` and then ``rows`` to ``target``, replacing it at once."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_suffix(f".{os.getpid()}.tmp")
    with temporary.open("w", encoding="utf-8") as out:
        out.write(json.dumps(header) + "\n")
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(temporary, target)


def read_jsonl(target: Path, expect: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """``(header, rows)`` of ``target`` if its header holds every item of ``expect``, else None (also
    for a missing or unreadable file)."""
    try:
        with target.open(encoding="utf-8") as handle:
            header = json.loads(handle.readline())
            if not isinstance(header, dict) or any(header.get(k) != v for k, v in expect.items()):
                return None
            rows = [json.loads(line) for line in handle if line.strip()]
    except (OSError, ValueError):
        return None
    return header, rows
