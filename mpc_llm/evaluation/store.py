"""A run folder that never loses finished work: settings, and records appended as they finish.

::

    run/
      settings.json               what the run is (refuses a different run in the same folder)
      records.jsonl               one JSON object per line, appended, flushed and fsynced as each job
                                  finishes (one process), or the merged records of every rank
      records.rank-00003.jsonl    rank 3's records while a run on many processes is under way: each
                                  rank appends to its own shard; `RunStore.merge` folds the shards into
                                  ``records.jsonl`` in a canonical order and deletes them

Every records file is read on resume, whatever the number of processes that wrote them, so a run
started on two processes can be finished on one or three. A torn last line (a process killed
mid-write) is dropped per file.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any


class RunFolderError(ValueError):
    """The output folder holds something this run must not overwrite or cannot read."""


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


def shard_name(rank: int) -> str:
    """The records file of ``rank`` in a run on many processes.

    Example:
        >>> shard_name(3)
        'records.rank-00003.jsonl'
    """
    return f"records.rank-{rank:05d}.jsonl"


_SHARD = re.compile(r"records\.rank-\d{5,}\.jsonl")


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of one file; a torn last line (a kill mid-write) is cut off the file with a warning.

    Raises:
        RunFolderError: a line before the last is not JSON (not a torn write: the file is damaged).
    """
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    records: list[dict[str, Any]] = []
    good_bytes = 0
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number == len(lines):
                warnings.warn(f"dropping a torn last line of {path}", RuntimeWarning, stacklevel=4)
                with path.open("r+b") as handle:
                    handle.truncate(good_bytes)
                break
            raise RunFolderError(f"{path}:{number} is not valid JSON: {err}") from err
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


class RunStore:
    """Append-only records of one run, with resume, written by one process or by many.

    Args:
        folder: the run folder (created if missing).
        settings: a JSON-serialisable description of the run; a folder holding a run with other
            settings is refused unless ``overwrite``.
        resume: continue a run with the same settings (finished records are kept and skipped).
        overwrite: replace the run the folder holds (only the files a run writes are deleted; a
            folder holding other files is still refused).
        shard: the rank whose shard this process appends to (None: ``records.jsonl``, one process).
        join: join a run another process (rank 0) has just opened: check that ``settings.json`` is
            there and equal, read no records (``records`` then holds only what this store appends)
            and only append to the shard. The folder must be the same one every process sees.

    ``records`` holds the records of every records file (``records.jsonl`` first, then the shards in
    rank order), each exact duplicate once (a merge interrupted before it deleted the shards).
    """

    SETTINGS = "settings.json"
    RECORDS = "records.jsonl"
    OUTPUTS = ("summary.md", "summary.json", "reward_vs_samples.png", "frontier.png")

    def __init__(
        self,
        folder: str | Path,
        settings: Mapping[str, Any],
        *,
        resume: bool = False,
        overwrite: bool = False,
        shard: int | None = None,
        join: bool = False,
    ) -> None:
        self.folder = Path(folder)
        self.settings = json.loads(json.dumps(settings))  # normalise (tuples -> lists, ...)
        self.records_path = self.folder / (self.RECORDS if shard is None else shard_name(shard))
        if join:
            self._check_settings(self._existing_settings(joining=True))
            self.records: list[dict[str, Any]] = []
            return
        settings_path = self.folder / self.SETTINGS
        if overwrite and settings_path.exists():  # only ever delete what a run wrote
            for path in (settings_path, *self.record_files(), *(self.folder / n for n in self.OUTPUTS)):
                path.unlink(missing_ok=True)
        if settings_path.exists():
            self._check_settings(self._existing_settings())
            if not resume:
                raise RunFolderError(
                    f"{self.folder} already holds this run; "
                    "pass resume to continue it or overwrite to start anew"
                )
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            if any(self.folder.iterdir()):
                raise RunFolderError(f"{self.folder} is not empty and holds no run; choose an empty folder")
            settings_path.write_text(json.dumps(self.settings, indent=2, sort_keys=True), encoding="utf-8")
        self.records = self._load()

    def _existing_settings(self, joining: bool = False) -> Any:
        settings_path = self.folder / self.SETTINGS
        if joining and not settings_path.exists():
            raise RunFolderError(
                f"{settings_path} is missing on this process although rank 0 wrote it: the run folder "
                "must be one folder every process sees (a shared file system for many nodes)"
            )
        try:
            return json.loads(settings_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise RunFolderError(f"{settings_path} is not valid JSON; pass overwrite to start anew") from err

    def _check_settings(self, existing: Any) -> None:
        if existing != self.settings:
            changed = sorted(
                k for k in set(existing) | set(self.settings) if existing.get(k) != self.settings.get(k)
            )
            raise RunFolderError(
                f"{self.folder} holds a run with different settings (differs in: {', '.join(changed)}); "
                "choose another folder or pass overwrite to replace it"
            )

    def record_files(self) -> list[Path]:
        """The records files on disk: ``records.jsonl`` first (if present), then the shards in rank order."""
        shards = sorted(p for p in self.folder.glob("records.rank-*.jsonl") if _SHARD.fullmatch(p.name))
        main = self.folder / self.RECORDS
        return ([main] if main.exists() else []) + shards

    def has_shards(self) -> bool:
        """Whether any rank's shard is on disk (a run on many processes, unmerged)."""
        return any(p.name != self.RECORDS for p in self.record_files())

    def _load(self) -> list[dict[str, Any]]:
        """Every records file's records, each exact duplicate once; torn last lines dropped."""
        seen: set[str] = set()
        records: list[dict[str, Any]] = []
        for path in self.record_files():
            for record in read_records(path):
                line = strict_json(record)
                if line not in seen:
                    seen.add(line)
                    records.append(record)
        return records

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append records durably to this process's file (one write, flushed and fsynced).

        Raises:
            ValueError: a record holds NaN or an infinity (strict JSON has none; a record of an
                invalid sample holds null, see `mpc_llm.evaluation.records`); nothing is written.
        """
        batch = [dict(r) for r in records]
        append_records(self.records_path, batch)
        self.records.extend(batch)

    def discard(self, key_fields: Iterable[str], keys: set[tuple[Any, ...]]) -> None:
        """Remove the records of ``keys`` (e.g. a job only partly written before a crash) from every
        records file, each file atomically. Only while no other process writes to the folder."""
        fields = tuple(key_fields)

        def keep(record: Mapping[str, Any]) -> bool:
            return tuple(record[f] for f in fields) not in keys

        for path in self.record_files():
            mine = read_records(path)
            kept = [r for r in mine if keep(r)]
            if len(kept) < len(mine):
                write_records(path, kept)
        self.records = [r for r in self.records if keep(r)]

    def done(self, key_fields: Iterable[str], per_key: int = 1) -> set[tuple[Any, ...]]:
        """The keys (tuples of ``key_fields``) with at least ``per_key`` records written.

        A job that writes several records (one per budget) counts as done only when all of them
        made it to disk; a torn write leaves it to be redone.
        """
        fields = tuple(key_fields)
        counts = Counter(tuple(r[f] for f in fields) for r in self.records)
        return {key for key, count in counts.items() if count >= per_key}

    def merge(self, order: Sequence[str]) -> list[dict[str, Any]]:
        """Fold every records file into ``records.jsonl`` sorted by the fields ``order``, one record per
        distinct ``order`` value (the first file's, in `record_files` order), and delete the shards.

        The merged file is the same whatever the number of processes that wrote the records (up to
        each record's ``seconds``). Only while no other process writes to the folder: rank 0 calls it
        after every rank has finished. A crash between the rename and the deletions leaves exact
        duplicates, which loading reads once.
        """
        self.records = self._load()
        unique: dict[tuple[Any, ...], dict[str, Any]] = {}
        for record in self.records:
            unique.setdefault(tuple(record[f] for f in order), record)
        if len(unique) < len(self.records):
            warnings.warn(
                f"{len(self.records) - len(unique)} records of {self.folder} repeat another's key; "
                "keeping the first of each",
                RuntimeWarning,
                stacklevel=2,
            )
        merged = [unique[key] for key in sorted(unique, key=_sort_key)]
        shards = [p for p in self.record_files() if p.name != self.RECORDS]
        write_records(self.folder / self.RECORDS, merged)
        for path in shards:
            path.unlink(missing_ok=True)
        self.records = merged
        return merged


def _sort_key(key: tuple[Any, ...]) -> tuple[tuple[int, Any], ...]:
    """Sort any mix of numbers and strings: numbers first, by value, then strings."""
    return tuple((0, v) if isinstance(v, int | float) else (1, str(v)) for v in key)
