"""Summarise several finished comparisons together, on the prompts they share.

A comparison is often run in parts: a new controller next to an earlier run's best-of-N, samplers
beside the protocol's AISP, a method that only runs at larger budgets. `merge_runs` reads the
records of each finished run folder, refuses runs whose records are not comparable (another model,
decoding, reward, held-out rewards, budget unit or prompt source: the first differing setting is
named), keeps the (prompt, seed) pairs every run holds, and writes the usual ``summary.md``,
``summary.json`` and plots, with the merged records and the runs they came from.

A controller label found in several runs must have the same settings in each (otherwise it is
refused: rename it in one run's config); its records are taken from the first run that holds it.

The output folder is guarded as `compare` guards its own (`RunStore`): a run already there is
replaced only with ``overwrite`` (its own files only: a folder holding anything else is refused), a
non-empty folder that holds no run is refused, and so are an output inside one of the runs (it would
become a stranger's file there) and the same run given twice (its records would count twice). A
``baseline`` that no run holds is refused, naming the labels there are. Every check runs before
anything is written or deleted.

From the command line: ``mpc-llm merge runs/protocol runs/samplers --out runs/protocol+samplers``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mpc_llm.controllers import BASELINE
from mpc_llm.evaluation.compare.records_file import read_records, write_records
from mpc_llm.evaluation.compare.store import RunStore, comparable
from mpc_llm.evaluation.summary import amortised_learning, summarize, write_summary

#: Settings every merged run must share (absent in all of them counts as equal).
COMPARABLE = ("model", "dtype", "lm", "prompts", "reward", "eval_rewards", "budget_unit", "system")


def read_run(folder: str | os.PathLike[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(settings, records)`` of a finished run folder.

    Raises:
        ValueError: no such run, or a run that has not finished (its records are still in shards).
    """
    root = Path(folder)
    settings_path, records_path = root / "settings.json", root / "records.jsonl"
    if not settings_path.is_file():
        raise ValueError(f"{root} is not a comparison's folder (no settings.json)")
    if not records_path.is_file():
        raise ValueError(
            f"{root} has not finished (no records.jsonl, only shards): finish it with the same command "
            "and --resume before merging"
        )
    settings = json.loads(settings_path.read_text(encoding="utf-8"))
    return settings, read_records(records_path, repair=False)


def prompt_key(record: Mapping[str, Any]) -> tuple[Any, int]:
    """``(prompt, seed)`` of a record: the source's prompt id where it has one (ShareGPT), else the
    prompt's index in its source."""
    return record.get("prompt_id", record["prompt_index"]), record["seed"]


def check_out(folders: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
              overwrite: bool = False) -> None:  # fmt: skip
    """Refuse the same run twice, and an output folder that is a run, inside a run, or not ours to
    fill (module docstring), writing and deleting nothing.

    Raises:
        ValueError: naming the folder and what to pass instead.
    """
    seen: dict[Path, str] = {}
    for f in folders:
        key = Path(f).resolve()
        if key in seen:
            raise ValueError(
                f"{f} is given twice (as {seen[key]} too): its records would count twice; give each run once"
            )
        seen[key] = str(f)
    root = Path(out)
    target = root.resolve()
    for key, name in seen.items():
        if target == key:
            raise ValueError(f"--out {root} is one of the runs being merged; write the merge elsewhere")
        if key in target.parents:
            raise ValueError(
                f"--out {root} is inside the run {name}, where it would be a file no run writes; write the "
                "merge outside every run"
            )
    records = root.glob("records*.jsonl") if root.is_dir() else []
    has_run = (root / RunStore.SETTINGS).is_file() and any(p.stat().st_size > 0 for p in records)
    if has_run and not overwrite:
        raise ValueError(
            f"{root} already holds a run ({RunStore.SETTINGS} and its records); pass --overwrite to replace "
            "it, or choose another folder for --out"
        )
    RunStore.check(root, {}, overwrite=True)  # a file, an unwritable place, files no run writes


def merge_runs(
    folders: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    baseline: str | None = None,
    overwrite: bool = False,
) -> list[dict[str, Any]]:
    """Merge the finished runs ``folders`` into ``out`` and return the summary rows.

    Args:
        folders: the run folders, at least two, each once.
        out: the output folder: new, empty, or (with ``overwrite``) a run to replace.
        baseline: the label the others are paired against (None: `BASELINE` where a run holds it).
        overwrite: replace the run ``out`` holds (only a run's own files).

    Raises:
        ValueError: fewer than two runs, a run given twice, runs with different comparable settings,
            one label with different controller settings in two runs, no (prompt, seed) pair common to
            all runs, a ``baseline`` no run holds, or an ``out`` that is one of the runs, inside one,
            a run (without ``overwrite``) or a folder holding other files.
    """
    if len(folders) < 2:
        raise ValueError("merge needs at least two run folders")
    check_out(folders, out, overwrite=overwrite)
    runs = [(Path(f), *read_run(f)) for f in folders]
    _check_comparable(runs)
    common = set.intersection(*({prompt_key(r) for r in records} for _, _, records in runs))
    if not common:
        raise ValueError("the runs share no (prompt, seed) pair: nothing to compare")
    controllers, merged = _merge_records(runs, common)
    if baseline is not None and baseline not in controllers:
        labels = ", ".join(sorted(controllers))
        raise ValueError(f"--baseline {baseline}: no run holds that controller; the labels are {labels}")
    chosen = baseline if baseline is not None else (BASELINE if BASELINE in controllers else None)
    first = runs[0][1]
    merged.sort(key=lambda r: (r["controller"], r["budget"], r["seed"], r["prompt_index"]))
    settings_out = {
        **{k: first[k] for k in COMPARABLE if k in first},
        "controllers": controllers,
        "budgets": sorted({r["budget"] for r in merged}),
        "num_prompts": len({p for p, _ in common}),
        "seeds": sorted({s for _, s in common}),
        "merged_from": {
            str(f): {"controllers": sorted(s.get("controllers", {})), "num_prompts": s.get("num_prompts")}
            for f, s, _ in runs
        },
    }
    rows = summarize(merged, baseline=chosen, learning=amortised_learning(settings_out))
    root = Path(out)
    RunStore(root, settings_out, overwrite=True)  # deletes a replaced run's own files, writes settings.json
    write_records(root / "records.jsonl", merged)
    write_summary(rows, root, settings_out, chosen)
    return rows


Run = tuple[Path, dict[str, Any], list[dict[str, Any]]]


def _setting(settings: Mapping[str, Any], key: str) -> Any:
    """A comparable setting; a run from before the dtype was recorded (``dtype`` null) ran float32,
    the only engine there was, and decoding options a run predates take their defaults."""
    value = comparable(settings).get(key)
    return "float32" if key == "dtype" and value is None else value


def _check_comparable(runs: Sequence[Run]) -> None:
    """Refuse runs that differ in a `COMPARABLE` setting, or whose prompt lists cannot be matched."""
    first_folder, first, _ = runs[0]
    for folder, settings, _ in runs[1:]:
        for key in COMPARABLE:
            if _setting(settings, key) != _setting(first, key):
                raise ValueError(
                    f"{folder} and {first_folder} differ in {key!r} ({settings.get(key)!r} against "
                    f"{first.get(key)!r}): their records are not comparable"
                )
    if first.get("prompts") is None and len({s.get("prompts_sha256") for _, s, _ in runs}) > 1:
        raise ValueError(
            "the runs were given different prompt lists and name no prompt source (settings 'prompts'), "
            "so their prompt indices cannot be matched; merge runs of one prompt source"
        )


def _merge_records(
    runs: Sequence[Run], common: set[tuple[Any, int]]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Label -> controller settings, and the records on ``common`` pairs: each (label, budget)'s
    from the first run holding it, so a label run at more budgets in a later run (the same settings)
    gains them (a label with other settings in a later run is refused)."""
    owner: dict[str, Path] = {}
    controllers: dict[str, Any] = {}
    budget_owner: dict[tuple[str, int], Path] = {}
    merged: list[dict[str, Any]] = []
    for folder, settings, records in runs:
        for label, spec in settings.get("controllers", {}).items():
            if label in controllers:
                if controllers[label] != spec:
                    raise ValueError(
                        f"controller {label!r} has different settings in {owner[label]} and {folder}; "
                        "rename it in one run's config"
                    )
                continue
            controllers[label], owner[label] = spec, folder
        labels = settings.get("controllers", {})
        for r in records:
            if r["controller"] in labels:
                budget_owner.setdefault((r["controller"], r["budget"]), folder)
        merged.extend(
            r for r in records
            if budget_owner.get((r["controller"], r["budget"])) == folder and prompt_key(r) in common
        )  # fmt: skip
    return controllers, merged
