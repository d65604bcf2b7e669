"""The summary's reading of best-of-N's curve: a table of every point against it, and the plain answer.

`curve_table` lists, for each controller and budget, its place against the baseline's curve on each
axis (`mpc_llm.evaluation.summary.curve`): the paired reward difference with its 95% bootstrap
interval, the verdict, and the budgets it was read between. `plain_answer` says in one paragraph
which points are above, level with, below or beyond the curve at equal closeness. Both read
`summarize`'s rows only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: the axes in the table's order, with their column names
COLUMNS = {
    "kl": "at equal closeness (KL figure, nats)",
    "ppl": "at equal base perplexity (distance in log ppl from its smallest budget)",
    "compute": "at equal compute (model-token equivalents)",
}


def _num(value: float, digits: int = 3) -> str:
    return f"{value:+.{digits}f}"


def curve_cell(c: Mapping[str, Any] | None) -> str:
    """One comparison as ``+0.012 [-0.010, 0.034] level (x 2.50; n 32-64)``; ``–`` when unknown.

    Example:
        >>> curve_cell({"x": 5.0, "status": "beyond", "n_lo": 256, "n_hi": 256, "diff": -0.05,
        ...             "diff_low": -0.08, "diff_high": -0.02, "verdict": "below"})
        '-0.050 [-0.080, -0.020] below (x 5.00; beyond n 256)'
    """
    if not c:
        return "–"
    where = {
        "within": f"n {c['n_lo']}" if c["n_lo"] == c["n_hi"] else f"n {c['n_lo']}-{c['n_hi']}",
        "beyond": f"beyond n {c['n_hi']}",
        "before": f"before n {c['n_lo']}",
    }[c["status"]]
    x = f"{c['x']:.2f}" if abs(c["x"]) < 1e4 else f"{c['x']:.3g}"
    prompts = f"; {c['prompts']} prompts" if "prompts" in c else ""
    return (
        f"{_num(c['diff'])} [{_num(c['diff_low'])}, {_num(c['diff_high'])}] {c['verdict']} "
        f"(x {x}; {where}{prompts})"
    )


def curve_table(rows: Sequence[Mapping[str, Any]], baseline: str) -> str:
    """Every non-baseline row against the ``baseline``'s curve ('' when no row has a comparison)."""
    rows = [r for r in rows if r.get("curve") or r.get("eval_curve")]
    if not rows:
        return ""
    labels = list(dict.fromkeys(k for r in rows for k in (r.get("eval_curve") or {})))
    cols = ["controller", "budget", *(f"Δ reward vs {baseline}'s curve {v}" for v in COLUMNS.values())]
    cols += [f"Δ held-out {label} vs its curve at equal closeness" for label in labels]
    lines = ["| " + " | ".join(cols) + " |", "|---|---:|" + "---|" * (len(cols) - 2)]
    for r in rows:
        cells = [str(r["controller"]), str(r["budget"])]
        cells += [curve_cell((r.get("curve") or {}).get(axis)) for axis in COLUMNS]
        cells += [curve_cell(((r.get("eval_curve") or {}).get(label) or {}).get("kl")) for label in labels]
        lines.append("| " + " | ".join(cells) + " |")
    curves = [c for r in rows for c in (r.get("curve") or {}).values()]
    budgets = sorted({n for c in curves for n in (c["n_lo"], c["n_hi"])})
    return (
        f"\nAgainst {baseline}'s whole curve (its budgets read on the same prompts and seeds; paired "
        "differences, 95% bootstrap over prompts; x: the point's mean on that axis; within the "
        "curve's range the verdict is above / level / below; farther than its last point: below "
        "(worse and farther) or beyond (no verdict); closer than its first: above or unknown). "
        f"Curve budgets used: {', '.join(map(str, budgets)) or '–'}.\n\n" + "\n".join(lines) + "\n"
    )


def plain_answer(rows: Sequence[Mapping[str, Any]], baseline: str, axis: str = "kl") -> str:
    """One paragraph: which points are above, level with, below or beyond the curve on ``axis``.

    Example:
        >>> rows = [{"controller": "aisp", "budget": 8, "curve": {"kl": {"verdict": "level"}}},
        ...         {"controller": "cem", "budget": 8, "curve": {"kl": {"verdict": "beyond"}}}]
        >>> plain_answer(rows, "best_of_n").split(":** ")[1].strip()
        'above: none; level: aisp@8; below: none; beyond its measured range (no verdict): cem@8.'
    """
    groups: dict[str, list[str]] = {v: [] for v in ("above", "level", "below", "beyond", "unknown")}
    for r in rows:
        c = (r.get("curve") or {}).get(axis)
        if c:
            groups[c["verdict"]].append(f"{r['controller']}@{r['budget']}")
    if not any(groups.values()):
        return ""

    def listed(names: list[str]) -> str:
        return ", ".join(names) if names else "none"

    text = "; ".join(f"{v}: {listed(groups[v])}" for v in ("above", "level", "below"))
    if groups["beyond"]:
        text += f"; beyond its measured range (no verdict): {listed(groups['beyond'])}"
    if groups["unknown"]:
        text += (
            f"; no verdict (too few prompts, or closer than its closest point): {listed(groups['unknown'])}"
        )
    return f"\n**Against {baseline}'s curve {COLUMNS[axis]}:** {text}.\n"
