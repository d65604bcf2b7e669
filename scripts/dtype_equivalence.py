"""Does bfloat16 change any answer? Pair two comparison runs that differ only in ``--dtype`` by prompt.

For every controller and budget in both runs: the mean of each figure in each dtype and the mean
difference (bfloat16 - float32) with its 95% bootstrap interval over prompts
(`mpc_llm.evaluation.summary.metrics.paired_bootstrap`), for the optimised reward, each held-out
reward, the base perplexity and the steering estimate. Prints a markdown table.

    python scripts/dtype_equivalence.py docs/results/dtype_equivalence/bfloat16 \\
        docs/results/dtype_equivalence/float32
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from mpc_llm.evaluation.summary.metrics import paired_bootstrap


def read(run: Path) -> dict[tuple[str, int, int], dict[str, Any]]:
    """The run's records by (controller, budget, prompt index), the dtype checked."""
    out = {}
    for line in (run / "records.jsonl").read_text().splitlines():
        r = json.loads(line)
        out[(r["controller"], int(r["budget"]), int(r["prompt_index"]))] = r
    return out


def figures(record: dict[str, Any]) -> dict[str, float]:
    """The figures compared, by column name."""
    out = {
        "reward": record.get("reward"),
        "base_ppl": record.get("base_ppl"),
        "kl_estimate": record.get("kl_estimate"),
    }
    for label, value in (record.get("eval") or {}).items():
        out[f"held-out {label}"] = value
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(float(v))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("half", type=Path, help="the bfloat16 run")
    parser.add_argument("full", type=Path, help="the float32 run")
    args = parser.parse_args(argv)
    half, full = read(args.half), read(args.full)
    dtypes = {r.get("dtype") for r in half.values()}, {r.get("dtype") for r in full.values()}
    print(f"dtypes: {sorted(map(str, dtypes[0]))} vs {sorted(map(str, dtypes[1]))}; "
          f"{len(set(half) & set(full))} paired records")  # fmt: skip
    print("\n| controller | budget | figure | bfloat16 | float32 | difference [95% interval] | prompts |")
    print("|---|---:|---|---:|---:|---|---:|")
    for controller, budget in sorted({(c, b) for c, b, _ in half}):
        keys = sorted(k for k in half if k[:2] == (controller, budget) and k in full)
        names = sorted(set.intersection(*(set(figures(half[k])) & set(figures(full[k])) for k in keys)))
        for name in names:
            a = [figures(half[k])[name] for k in keys]
            b = [figures(full[k])[name] for k in keys]
            boot = paired_bootstrap(a, b, [k[2] for k in keys])
            print(f"| {controller} | {budget} | {name} | {sum(a) / len(a):.3f} | {sum(b) / len(b):.3f} | "
                  f"{boot.diff:+.3f} [{boot.diff_low:+.3f}, {boot.diff_high:+.3f}] | {boot.n} |")  # fmt: skip
    same = sum(half[k].get("response") == full[k].get("response") for k in set(half) & set(full))
    print(f"\nidentical responses: {same} of {len(set(half) & set(full))}")


if __name__ == "__main__":
    main()
