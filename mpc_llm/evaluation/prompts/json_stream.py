"""Reading a JSON list one record at a time, up to where a cut-off file stops making sense.

A file cut in the middle of a record (as the ShareGPT file on PyPI is) cannot be read by
`json.load`; `iter_records` streams it and yields each complete record, and `ReadStats` says how
many there were and whether the list was cut. Also `file_sha256`, the hash a cache of the file's
contents is keyed by.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

_CHUNK = 1 << 20  # characters read at a time
_SEPARATORS = re.compile(r"[\s,]*")


class RecordFileError(ValueError):
    """The file is not a JSON list, or not UTF-8 text."""


@dataclass
class ReadStats:
    """What `iter_records` saw: complete records, and whether the file ended inside one."""

    records: int = 0
    truncated: bool = False
    dropped_chars: int = 0  # characters after the last complete record (the cut one)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def iter_records(path: Path, stats: ReadStats | None = None, chunk: int = _CHUNK) -> Iterator[Any]:
    """The records of a JSON list, one at a time, up to the last complete one.

    The file is decoded as UTF-8 in chunks of ``chunk`` characters; each record is parsed with
    `json.JSONDecoder.raw_decode` where it starts, and a record that does not parse yet waits for the
    next chunk. At the end of the file a record that still does not parse is the cut one: it is
    dropped and ``stats.truncated`` set.

    Raises:
        RecordFileError: the file does not start with ``[`` (not a JSON list), or is not UTF-8.
    """
    stats = stats if stats is not None else ReadStats()
    decoder = json.JSONDecoder()
    try:
        with path.open(encoding="utf-8") as handle:
            yield from _records(handle, path, decoder, stats, chunk)
    except UnicodeDecodeError as err:
        raise RecordFileError(f"{path} is not UTF-8 text ({err.reason})") from None


def _records(
    handle: TextIO, path: Path, decoder: json.JSONDecoder, stats: ReadStats, chunk: int
) -> Iterator[Any]:
    buffer, at_end = handle.read(chunk).lstrip("\ufeff"), False
    if not buffer.strip():
        stats.truncated = True  # empty: no record, and no list either
        return
    pos = len(buffer) - len(buffer.lstrip())
    if buffer[pos] != "[":
        raise RecordFileError(f"{path} is not a JSON list of conversations (it does not start with '[')")
    pos += 1
    while True:
        pos = _SEPARATORS.match(buffer, pos).end()  # type: ignore[union-attr]
        if pos < len(buffer) and buffer[pos] == "]":
            return
        if pos < len(buffer):
            try:
                record, pos = decoder.raw_decode(buffer, pos)
            except json.JSONDecodeError:
                pass  # incomplete so far: read on
            else:
                stats.records += 1
                yield record
                continue
        if at_end:  # the list never closed: the file was cut, inside a record or after one
            stats.truncated = True
            stats.dropped_chars = len(buffer) - pos
            return
        more = handle.read(max(chunk, len(buffer) - pos))  # a long record: read at least as much again
        at_end = not more
        buffer, pos = buffer[pos:] + more, 0
