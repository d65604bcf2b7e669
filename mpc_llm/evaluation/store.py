"""A run folder that never loses finished work: settings, and records appended as they finish.

run/
  settings.json   what the run is (refuses a different run in the same folder)
  records.jsonl   one JSON object per line, appended, flushed and fsynced as each job finishes
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping
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


class RunStore:
    """Append-only records of one run, with resume.

    Args:
        folder: the run folder (created if missing).
        settings: a JSON-serialisable description of the run; a folder holding a run with other
            settings is refused unless ``overwrite``.
        resume: continue a run with the same settings (finished records are kept and skipped).
        overwrite: replace the run the folder holds (only the files a run writes are deleted; a
            folder holding other files is still refused).
    """

    SETTINGS = "settings.json"
    RECORDS = "records.jsonl"
    OUTPUTS = ("summary.md", "summary.json", "reward_vs_samples.png")

    def __init__(
        self,
        folder: str | Path,
        settings: Mapping[str, Any],
        *,
        resume: bool = False,
        overwrite: bool = False,
    ) -> None:
        self.folder = Path(folder)
        self.settings = json.loads(json.dumps(settings))  # normalise (tuples -> lists, ...)
        settings_path = self.folder / self.SETTINGS
        if overwrite and settings_path.exists():  # only ever delete what a run wrote
            for name in (self.SETTINGS, self.RECORDS, *self.OUTPUTS):
                (self.folder / name).unlink(missing_ok=True)
        if settings_path.exists():
            try:
                existing = json.loads(settings_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise RunFolderError(
                    f"{settings_path} is not valid JSON; pass overwrite to start anew"
                ) from err
            if existing != self.settings:
                changed = sorted(
                    k for k in set(existing) | set(self.settings) if existing.get(k) != self.settings.get(k)
                )
                raise RunFolderError(
                    f"{self.folder} holds a run with different settings (differs in: {', '.join(changed)}); "
                    "choose another folder or pass overwrite to replace it"
                )
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
        self.records_path = self.folder / self.RECORDS
        self.records: list[dict[str, Any]] = self._load()

    def _load(self) -> list[dict[str, Any]]:
        """Read the records; a torn last line (a kill mid-write) is dropped with a warning."""
        if not self.records_path.exists():
            return []
        lines = self.records_path.read_text(encoding="utf-8").splitlines(keepends=True)
        records: list[dict[str, Any]] = []
        good_bytes = 0
        for number, line in enumerate(lines, start=1):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                if number == len(lines):
                    warnings.warn(
                        f"dropping a torn last line of {self.records_path}", RuntimeWarning, stacklevel=3
                    )
                    with self.records_path.open("r+b") as handle:
                        handle.truncate(good_bytes)
                    break
                raise RunFolderError(f"{self.records_path}:{number} is not valid JSON: {err}") from err
            good_bytes += len(line.encode("utf-8"))
        return records

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append records durably (one write, flushed and fsynced).

        Raises:
            ValueError: a record holds NaN or an infinity (strict JSON has none; a record of an
                invalid sample holds null, see `mpc_llm.evaluation.records`); nothing is written.
        """
        batch = [dict(r) for r in records]
        payload = "".join(strict_json(r) + "\n" for r in batch)
        if self.records_path.exists() and self.records_path.stat().st_size > 0:
            with self.records_path.open("rb") as handle:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":  # a complete last line cut before its newline
                    payload = "\n" + payload
        with self.records_path.open("a", encoding="utf-8") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        self.records.extend(batch)

    def discard(self, key_fields: Iterable[str], keys: set[tuple[Any, ...]]) -> None:
        """Remove the records of ``keys`` (e.g. a job only partly written before a crash), atomically."""
        fields = tuple(key_fields)
        kept = [r for r in self.records if tuple(r[f] for f in fields) not in keys]
        if len(kept) == len(self.records):
            return
        tmp = self.records_path.with_name(self.records_path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write("".join(strict_json(r) + "\n" for r in kept))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.records_path)
        self.records = kept

    def done(self, key_fields: Iterable[str], per_key: int = 1) -> set[tuple[Any, ...]]:
        """The keys (tuples of ``key_fields``) with at least ``per_key`` records written.

        A job that writes several records (one per budget) counts as done only when all of them
        made it to disk; a torn write leaves it to be redone.
        """
        fields = tuple(key_fields)
        counts = Counter(tuple(r[f] for f in fields) for r in self.records)
        return {key for key, count in counts.items() if count >= per_key}
