"""The frontier plot: reward against closeness to the base model, one curve per controller.

Reward over-optimisation shows as a curve that keeps climbing in the optimised reward while the
held-out reward stalls or falls as the KL grows. Panels: the optimised reward (top) and the first
held-out reward (bottom, when recorded) against the KL figure ``kl_estimate + selection_bound``
(left: the steering estimate plus the selection bound, nats) and against the base perplexity
(right). Each controller label is one curve across its budgets; labels of one family (``aisp`` and
the sweep's ``aisp[...]``) share a colour, so a sweep's settings trace the family's frontier and
best-of-N's budgets trace it across ``N``. The baseline's curve, the reference of the summary's
verdicts, is drawn in black with each point's budget.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def family(label: str) -> str:
    """``aisp[sigma_rel=0.1,ess=0.5]`` -> ``aisp``."""
    return label.split("[", 1)[0]


def kl_figure(row: Mapping[str, Any]) -> float | None:
    """``kl_estimate + selection_bound`` of a summary row (None without the steering figure: a
    selection bound alone would put a steered controller on best-of-N's own point)."""
    kl, sel = row.get("kl_estimate"), row.get("selection_bound")
    return None if kl is None else kl + (sel or 0.0)


def plot_frontier(
    rows: Sequence[Mapping[str, Any]], path: str | Path, baseline: str | None = None
) -> Path | None:
    """Write the frontier PNG; None (nothing written) when the rows hold no closeness figures. The
    ``baseline``'s curve (every budget it was read at) is drawn in black, each point labelled with
    its budget: the reference the summary's verdicts read (`mpc_llm.evaluation.summary.curve`)."""
    if not any(kl_figure(r) is not None for r in rows):
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("plotting needs matplotlib: pip install 'mpc_llm[plot]'") from err
    label = next((k for r in rows for k in (r.get("eval") or {})), None)
    ys: list[tuple[str, Any]] = [("optimised reward", lambda r: r.get("reward"))]
    if label is not None:
        ys.append((f"held-out {label}", lambda r: ((r.get("eval") or {}).get(label) or {}).get("mean")))
    xs = [
        ("steering estimate + selection bound (nats)", kl_figure),
        ("base perplexity", lambda r: r.get("base_ppl")),
    ]
    fig, axes = plt.subplots(len(ys), 2, figsize=(10, 3.8 * len(ys)), dpi=110, squeeze=False)
    families = list(dict.fromkeys(family(r["controller"]) for r in rows))
    palette = plt.get_cmap("tab20" if len(families) > 10 else "tab10")  # distinct past ten families
    colours = {f: palette(i % palette.N) for i, f in enumerate(families)}
    for i, (ylabel, y_of) in enumerate(ys):
        for j, (xlabel, x_of) in enumerate(xs):
            ax = axes[i][j]
            for name in dict.fromkeys(r["controller"] for r in rows):
                mine = sorted((r for r in rows if r["controller"] == name), key=lambda r: r["budget"])
                marked = [(x_of(r), y_of(r), r["budget"]) for r in mine]
                marked = [(x, y, n) for x, y, n in marked if x is not None and y is not None]
                points = [(x, y) for x, y, _ in marked]
                if not points:
                    continue
                if name == baseline:  # the reference curve: black, each point with its budget
                    ax.plot(*zip(*points, strict=True), marker="s", color="black", linewidth=2,
                            label=f"{name} (n = {marked[0][2]}..{marked[-1][2]})")  # fmt: skip
                    for x, y, n in marked:
                        ax.annotate(str(n), (x, y), fontsize=7, xytext=(3, -9), textcoords="offset points")
                    continue
                colour = colours[family(name)]
                shown = name == family(name) or name == next(
                    r["controller"] for r in rows if family(r["controller"]) == family(name)
                )
                ax.plot(*zip(*points, strict=True), marker="o", color=colour, alpha=0.8,
                        label=family(name) if shown else None)  # fmt: skip
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
    legend: dict[str, Any] = {}  # every family, also those with no point on the first panel
    for ax in (a for row in axes for a in row):
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(name, handle)
    axes[0][0].legend(list(legend.values()), list(legend), fontsize="small")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
