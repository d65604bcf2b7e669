"""Summarise several finished comparisons together, on the prompts they share.

A comparison is often run in parts: a new controller next to an earlier run's best-of-N, samplers
beside the protocol's AISP, a method that only runs at larger budgets. `merge_runs` reads the
records of each finished run folder, refuses runs whose records are not comparable (another model,
decoding, reward, held-out rewards, budget unit or prompt source: the first differing setting is
named), keeps the (prompt, seed) pairs every run holds, and writes the usual ``summary.md``,
``summary.json`` and plots, with the merged records and the runs they came from.

A controller label found in several runs must have the same settings in each (otherwise it is
refused: rename it in one run's config); its records are taken from the first run that holds it.

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
from mpc_llm.evaluation.summary import summarize, write_summary

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


def merge_runs(
    folders: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *, baseline: str = BASELINE
) -> list[dict[str, Any]]:
    """Merge the finished runs ``folders`` into ``out`` and return the summary rows.

    Raises:
        ValueError: fewer than two runs, runs with different comparable settings, one label with
            different controller settings in two runs, no (prompt, seed) pair common to all runs, or
            ``out`` being one of the runs.
    """
    if len(folders) < 2:
        raise ValueError("merge needs at least two run folders")
    root = Path(out)
    if any(root.resolve() == Path(f).resolve() for f in folders):
        raise ValueError(f"--out {root} is one of the runs being merged; write the merge elsewhere")
    runs = [(Path(f), *read_run(f)) for f in folders]
    first_folder, first, _ = runs[0]
    for folder, settings, _ in runs[1:]:
        for key in COMPARABLE:
            if settings.get(key) != first.get(key):
                raise ValueError(
                    f"{folder} and {first_folder} differ in {key!r} ({settings.get(key)!r} against "
                    f"{first.get(key)!r}): their records are not comparable"
                )
    if first.get("prompts") is None and len({s.get("prompts_sha256") for _, s, _ in runs}) > 1:
        raise ValueError(
            "the runs were given different prompt lists and name no prompt source (settings 'prompts'), "
            "so their prompt indices cannot be matched; merge runs of one prompt source"
        )
    common = set.intersection(*({prompt_key(r) for r in records} for _, _, records in runs))
    if not common:
        raise ValueError("the runs share no (prompt, seed) pair: nothing to compare")
    owner: dict[str, Path] = {}
    controllers: dict[str, Any] = {}
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
        merged.extend(r for r in records if owner.get(r["controller"]) == folder and prompt_key(r) in common)
    root.mkdir(parents=True, exist_ok=True)
    merged.sort(key=lambda r: (r["controller"], r["budget"], r["seed"], r["prompt_index"]))
    write_records(root / "records.jsonl", merged)
    shared = {k: first[k] for k in COMPARABLE if k in first}
    settings_out = {
        **shared,
        "controllers": controllers,
        "budgets": sorted({r["budget"] for r in merged}),
        "num_prompts": len({p for p, _ in common}),
        "seeds": sorted({s for _, s in common}),
        "merged_from": {
            str(f): {"controllers": sorted(s.get("controllers", {})), "num_prompts": s.get("num_prompts")}
            for f, s, _ in runs
        },
    }
    (root / "settings.json").write_text(json.dumps(settings_out, indent=2, sort_keys=True) + "\n")
    rows = summarize(merged, baseline=baseline if baseline in controllers else None)
    write_summary(rows, root, settings_out)
    return rows
