"""A run folder that never loses finished work: settings, and records appended as they finish.

The folder (`RunStore`: which files it holds, resume, shards, merge); each records file is read
and written by `mpc_llm.evaluation.compare.records_file`.

::

    run/
      settings.json               what the run is (refuses a different run in the same folder; a run
                                  may grow to more prompts, the first ones its own: `RunStore.check`)
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

import contextlib
import json
import os
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mpc_llm.evaluation.compare.records_file import (
    RunFolderError,
    append_records,
    read_records,
    strict_json,
    write_records,
)


def comparable(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` with its decoding options (``lm``) completed by `LMConfig`'s defaults, so a run
    recorded before an option existed (with its default behaviour, e.g. ``keep_states``) equals one
    recorded after."""
    out = dict(settings)
    if isinstance(out.get("lm"), Mapping):
        from mpc_llm.lm.config import LMConfig

        with contextlib.suppress(ValueError):  # options this version does not read: compared as they are
            out["lm"] = LMConfig.model_validate(out["lm"]).model_dump(mode="json")
    return out


#: The settings that say which prompts a run holds: a resumed run may grow to more prompts when its
#: own are the first of the new list (`RunStore.check`).
PROMPT_KEYS = ("num_prompts", "prompts_sha256")


def _without_prompts(settings: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k not in PROMPT_KEYS}


def shard_name(rank: int) -> str:
    """The records file of ``rank`` in a run on many processes.

    Example:
        >>> shard_name(3)
        'records.rank-00003.jsonl'
    """
    return f"records.rank-{rank:05d}.jsonl"


_SHARD = re.compile(r"records\.rank-\d{5,}\.jsonl")


def _listed(names: Sequence[str]) -> str:  # the first three, then ...
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")


def _check_writable(folder: Path) -> None:
    """Refuse a new run folder that could not be created: its nearest existing parent is a file or
    is not writable."""
    parent = folder.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise RunFolderError(f"--out {folder}: {parent} is a file, not a folder; pass a folder for the run")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RunFolderError(
            f"--out {folder}: cannot create it ({parent} is not writable); choose another folder"
        )


class RunStore:
    """Append-only records of one run, with resume, written by one process or by many.

    Args:
        folder: the run folder (created if missing).
        settings: a JSON-serialisable description of the run; a folder holding a run with other
            settings is refused unless ``overwrite``.
        resume: continue a run with the same settings (finished records are kept and skipped), or
            grow one to more prompts whose first ones are the run's (with ``prefix_digest``: see
            `RunStore.check`); ``settings.json`` then holds ``settings`` once the store writes.
        overwrite: replace the run the folder holds (only the files a run writes are deleted; a
            folder holding any other file is refused before anything is deleted).
        shard: the rank whose shard this process appends to (None: ``records.jsonl``, one process).
        join: join a run another process (rank 0) has just opened: check that ``settings.json`` is
            there and equal, read no records (``records`` then holds only what this store appends)
            and only append to the shard. The folder must be the same one every process sees.
        lazy: write nothing (no folder, no ``settings.json``, no deletion for ``overwrite``) until the
            first records are appended, so that a run that fails before it finishes a job leaves the
            folder as it was (`mpc_llm.evaluation.compare` on one process).
        prefix_digest: ``n -> the prompts_sha256 of the first n prompts`` of this run's list, which
            lets ``resume`` grow a run of fewer prompts (None: a run's prompts must be these).

    A folder whose ``settings.json`` has no records beside it (a run that failed before finishing a
    job) holds no run to protect: a new run replaces it without ``overwrite``. Every check
    (`RunStore.check`) runs before anything is written or deleted.

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
        lazy: bool = False,
        prefix_digest: Callable[[int], str] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.settings = json.loads(json.dumps(settings))  # normalise (tuples -> lists, ...)
        self.records_path = self.folder / (self.RECORDS if shard is None else shard_name(shard))
        self._pending: str | None = None  # "new" or "replace": what the first append must do first
        if join:
            self._compare_settings(self.folder, self._existing_settings(joining=True), self.settings)
            self.records: list[dict[str, Any]] = []
            return
        state = self.check(
            self.folder, self.settings, resume=resume, overwrite=overwrite, prefix_digest=prefix_digest
        )
        if state in ("resume", "grow"):
            self.records = self._load()
            if state == "grow":  # settings.json says the larger run from the first write on
                self._pending = state
                if not lazy:
                    self._open()
            return
        self.records = []
        self._pending = state
        if not lazy:
            self._open()

    @classmethod
    def check(
        cls,
        folder: str | Path,
        settings: Mapping[str, Any],
        *,
        resume: bool = False,
        overwrite: bool = False,
        prefix_digest: Callable[[int], str] | None = None,
    ) -> str:
        """Whether a run with ``settings`` may use ``folder``, without writing or deleting anything.

        A run may grow: with ``resume``, a run whose settings differ only in its prompts (``PROMPT_KEYS``)
        is continued over more prompts when its ``num_prompts`` are the first of these, that is when
        ``prefix_digest(its num_prompts)`` (the ``prompts_sha256`` of the first prompts of this run's
        list) is its ``prompts_sha256``. Its records are keyed by prompt index, so none is redone.

        Returns:
            ``"new"`` (no run there: the folder is missing or empty, or holds only the
            ``settings.json`` of a run that wrote no records), ``"resume"`` (the same run, to continue),
            ``"grow"`` (the same run over more prompts, to continue) or ``"replace"`` (another run, to
            delete: ``overwrite``).

        Raises:
            RunFolderError: the path is a file; the folder holds files no run writes; it holds another
                run (without ``overwrite``: e.g. fewer or more prompts that are not the first of these)
                or this run (without ``resume`` or ``overwrite``); a records file is damaged (with
                ``resume``). The message says which flag or folder to use.
        """
        folder = Path(folder)
        settings = json.loads(json.dumps(settings))
        if folder.exists() and not folder.is_dir():
            raise RunFolderError(
                f"--out {folder} is a file, not a folder; pass a folder for the run (a new one, or a run "
                "folder to continue with --resume)"
            )
        if not folder.exists():
            _check_writable(folder)
            return "new"
        entries = sorted(p.name for p in folder.iterdir())
        foreign = [n for n in entries if not cls._is_run_file(n)]
        settings_path = folder / cls.SETTINGS
        has_records = any(p.stat().st_size > 0 for p in cls._record_files(folder))
        if not settings_path.exists() or not has_records:  # no run to protect
            if foreign or (entries and not settings_path.exists()):
                raise RunFolderError(
                    f"{folder} is not empty ({_listed(foreign or entries)}) and holds no run; choose an "
                    "empty or new folder for --out"
                )
            return "new"
        if overwrite:
            if foreign:
                raise RunFolderError(
                    f"{folder} holds files that no run writes ({_listed(foreign)}); --overwrite deletes only "
                    "a run's own files and never empties a folder holding others: move them out or choose "
                    "another folder"
                )
            return "replace"
        try:
            existing = json.loads(settings_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise RunFolderError(
                f"{settings_path} is not valid JSON; pass --overwrite to start anew, or choose another folder"
            ) from err
        grows = cls._grows(folder, existing, settings, prefix_digest)
        if not grows:
            cls._compare_settings(folder, existing, settings)
        if grows and not resume:
            raise RunFolderError(
                f"{folder} holds a run of the first {existing['num_prompts']} of these "
                f"{settings['num_prompts']} prompts; run again with --resume to grow it (its records are "
                "kept), choose another folder for --out, or pass --overwrite to replace that run"
            )
        if not resume:
            raise RunFolderError(
                f"{folder} already holds this run; run again with --resume to continue it or --overwrite "
                "to start anew"
            )
        for path in cls._record_files(folder):
            read_records(path, repair=False)  # a damaged line is refused here, before any work
        return "grow" if grows else "resume"

    @staticmethod
    def _grows(
        folder: Path, existing: Any, settings: Mapping[str, Any], prefix_digest: Callable[[int], str] | None
    ) -> bool:
        """Whether ``settings`` are the run ``existing`` over more prompts, its own the first of them.

        False where `_compare_settings` decides: a setting other than the prompts differs, the
        prompts are the same, or there is no ``prefix_digest`` to tell whether more prompts begin with
        the run's. Raises `RunFolderError` when only the prompts differ and the run's are not the first
        of these (fewer, other or reordered).
        """
        if not isinstance(existing, Mapping):
            return False
        old, new = comparable(existing), comparable(settings)
        if old == new or _without_prompts(old) != _without_prompts(new):
            return False
        n_old, n_new = old.get("num_prompts"), new.get("num_prompts")
        if not isinstance(n_old, int) or not isinstance(n_new, int):
            return False
        fix = "choose another folder for --out, or pass --overwrite to replace that run"
        if n_new < n_old:
            raise RunFolderError(
                f"{folder} holds a run of {n_old} prompts, more than these {n_new}, and a run never "
                f"shrinks; resume it with its {n_old} prompts (or more, in the same order), {fix}"
            )
        if n_new == n_old:
            raise RunFolderError(
                f"{folder} holds a run of {n_old} other prompts (another source or order); {fix}"
            )
        if prefix_digest is None:
            return False
        if prefix_digest(n_old) != old.get("prompts_sha256"):
            raise RunFolderError(
                f"the run's {n_old} prompts in {folder} are not the first {n_old} of these {n_new} prompts "
                f"(another source or order), so it cannot grow to them; {fix}"
            )
        return True

    @classmethod
    def _is_run_file(cls, name: str) -> bool:
        """Whether a run writes a file of this name (settings, records, shards, summaries, temporaries)."""
        base = name.removesuffix(".tmp")
        return name in (cls.SETTINGS, *cls.OUTPUTS) or base == cls.RECORDS or bool(_SHARD.fullmatch(base))

    def _open(self) -> None:
        """Make the folder hold this run: delete the run it replaces (only a run's own files; a run it
        grows keeps them all), create the folder and write ``settings.json``."""
        if self._pending == "replace":
            for name in sorted(p.name for p in self.folder.iterdir()):
                if self._is_run_file(name):  # only ever delete what a run wrote
                    (self.folder / name).unlink(missing_ok=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        settings_path = self.folder / self.SETTINGS
        settings_path.write_text(json.dumps(self.settings, indent=2, sort_keys=True), encoding="utf-8")
        self._pending = None

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
            raise RunFolderError(
                f"{settings_path} is not valid JSON; pass --overwrite to start anew"
            ) from err

    @staticmethod
    def _compare_settings(folder: Path, existing: Any, settings: Mapping[str, Any]) -> None:
        existing = comparable(existing) if isinstance(existing, Mapping) else {}
        settings = comparable(settings)
        if existing != settings:
            changed = sorted(k for k in set(existing) | set(settings) if existing.get(k) != settings.get(k))
            raise RunFolderError(
                f"{folder} holds a run with different settings (differs in: {', '.join(changed)}); "
                "choose another folder for --out, or pass --overwrite to replace that run"
            )

    @classmethod
    def _record_files(cls, folder: Path) -> list[Path]:
        shards = sorted(p for p in folder.glob("records.rank-*.jsonl") if _SHARD.fullmatch(p.name))
        main = folder / cls.RECORDS
        return ([main] if main.exists() else []) + shards

    def record_files(self) -> list[Path]:
        """The records files on disk: ``records.jsonl`` first (if present), then the shards in rank order."""
        return self._record_files(self.folder)

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
                invalid sample holds null, see `mpc_llm.evaluation.compare.records`); nothing is written.
        """
        batch = [dict(r) for r in records]
        for record in batch:
            strict_json(record)  # refused before the folder changes
        if self._pending is not None:
            self._open()
        append_records(self.records_path, batch)
        self.records.extend(batch)

    def discard(self, key_fields: Iterable[str], keys: set[tuple[Any, ...]]) -> None:
        """Remove the records of ``keys`` (e.g. a job only partly written before a crash) from every
        records file, each file atomically. Only while no other process writes to the folder."""
        fields = tuple(key_fields)
        if not keys:
            return

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
