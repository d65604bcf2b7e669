"""``mpc-llm merge``: summarise finished comparisons together, on the prompts they share.

    mpc-llm merge runs/protocol runs/samplers --out runs/protocol+samplers

Refuses runs that are not comparable (another model, decoding, reward, held-out reward, budget unit
or prompt source) and a label with different settings in two runs (`mpc_llm.evaluation.compare.merge`);
the same run twice; a ``--baseline`` no run holds; and an ``--out`` that is one of the runs, inside
one, a run already (unless ``--overwrite``, which deletes only a run's own files) or a folder holding
other files. Every check runs before anything is written or deleted.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    """The ``merge`` sub-command and its flags."""
    p: argparse.ArgumentParser = sub.add_parser(
        "merge", help="summarise finished comparisons together, on the prompts and seeds they share"
    )
    p.add_argument("runs", nargs="+", type=Path, help="the run folders (at least two, each finished)")
    p.add_argument("--out", type=Path, required=True, help="where the merged records and summary go")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out (its own files only)")
    from mpc_llm.controllers import BASELINE

    p.add_argument("--baseline", help=f"the controller label others are paired against (default: {BASELINE} "
                   "where a run holds it; a label no run holds is refused)")  # fmt: skip


def cmd_merge(args: argparse.Namespace) -> int:
    """Run ``merge``; prints the summary table."""
    from mpc_llm.evaluation.compare.merge import merge_runs
    from mpc_llm.evaluation.summary import markdown_table

    rows = merge_runs(args.runs, args.out, baseline=args.baseline, overwrite=args.overwrite)
    print(markdown_table(rows))
    print(f"records, summary.md and plots are in {args.out}")
    return 0
