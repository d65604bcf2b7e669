"""Complete records made before ``state_reads`` was counted, and rewrite their summaries.

Twisted SMC's value twist and MPC's terminal value read the pre-logit state after a block's last
token, which the decode reads with one more forward. Records made before that forward was counted
(`mpc_llm.evaluation.compare.records.compute_fields`) lack ``state_reads`` and leave it out of
``forward_tokens``. For these two controllers it is exact to complete them: every value evaluation
they record is either a twist or terminal value of a read state, or a steered proposal's evaluation
inside one of its gradient steps (one each), so ``state_reads = value_evals - grad_steps``
(`tests/test_twisted_smc.py` checks the identity on live runs).

Usage: ``python scripts/backfill_state_reads.py FOLDER [FOLDER ...]`` (a ``compare`` or ``merge``
output folder). Records that already hold ``state_reads`` are left as they are, so running it twice
changes nothing; a folder with nothing to complete keeps its files untouched.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from mpc_llm.controllers import BASELINE
from mpc_llm.evaluation.compare.records_file import read_records, write_records
from mpc_llm.evaluation.summary import amortised_learning, summarize, write_summary

#: controller classes whose value reads a state after each decode (when they name a value)
READS_STATES = ("TwistedSMC", "RecedingHorizon")


def labels_reading_states(settings: dict[str, Any]) -> set[str]:
    """The labels of ``settings['controllers']`` whose value reads the state after a decode."""
    out = set()
    for label, spec in (settings.get("controllers") or {}).items():
        if spec.get("class") in READS_STATES and (spec.get("config") or {}).get("value"):
            out.add(label)
    return out


def complete(record: dict[str, Any]) -> bool:
    """Add ``state_reads`` to one record (in place); whether it changed."""
    if "state_reads" in record or record.get("value_evals") is None:
        return False
    reads = float(record["value_evals"]) - float(record.get("grad_steps") or 0.0)
    if reads < 0 or abs(reads - round(reads)) > 1e-6:
        raise ValueError(f"value_evals - grad_steps is not a count of states: {record}")
    record["state_reads"] = round(reads)
    if record.get("forward_tokens") is not None:
        record["forward_tokens"] = record["forward_tokens"] + record["state_reads"]
    return True


def backfill(folder: Path) -> int:
    """Complete ``folder``'s records and rewrite its summary; the number of records completed."""
    settings = json.loads((folder / "settings.json").read_text(encoding="utf-8"))
    labels = labels_reading_states(settings)
    records = read_records(folder / "records.jsonl")
    changed = sum(complete(r) for r in records if r.get("controller") in labels)
    if not changed:
        return 0
    write_records(folder / "records.jsonl", records)
    present = {r["controller"] for r in records}
    baseline = BASELINE if BASELINE in present else None
    names = list(settings["controllers"])
    ordered = sorted(records, key=lambda r: names.index(r["controller"]))
    rows = summarize(ordered, baseline=baseline, learning=amortised_learning(settings))
    write_summary(rows, folder, settings, baseline)
    return changed


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(f"{name}: {backfill(Path(name))} records completed")
