"""``mpc-llm merge``: summarise finished comparisons together, on the prompts they share.

    mpc-llm merge runs/protocol runs/samplers --out runs/protocol+samplers

Refuses runs that are not comparable (another model, decoding, reward, held-out reward, budget unit
or prompt source) and a label with different settings in two runs (`mpc_llm.evaluation.compare.merge`).
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
    from mpc_llm.controllers import BASELINE

    p.add_argument("--baseline", default=BASELINE, help="the controller others are paired against")


def cmd_merge(args: argparse.Namespace) -> int:
    """Run ``merge``; prints the summary table."""
    from mpc_llm.evaluation.compare.merge import merge_runs
    from mpc_llm.evaluation.summary import markdown_table

    rows = merge_runs(args.runs, args.out, baseline=args.baseline)
    print(markdown_table(rows))
    print(f"records, summary.md and plots are in {args.out}")
    return 0
