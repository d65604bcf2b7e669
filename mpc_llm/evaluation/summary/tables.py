"""Summaries of a comparison: one row per (controller, budget), ``summary.md`` and the plot."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mpc_llm.controllers import BASELINE
from mpc_llm.evaluation.summary.curve import curve_fields
from mpc_llm.evaluation.summary.frontier import plot_frontier
from mpc_llm.evaluation.summary.metrics import (
    distinct_n,
    is_valid,
    mean_ci,
    paired_bootstrap,
    rep_n,
    win_rate,
)
from mpc_llm.evaluation.summary.verdicts import curve_table, plain_answer

#: what a row of `summarize` averages over its records, per prompt
SPENT_MEANS = ("prefill_tokens", "state_reads", "forward_tokens", "grad_steps", "value_evals", "value_tokens")


def summarize(
    records: Sequence[Mapping[str, Any]],
    baseline: str | None = BASELINE,
    learning: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Aggregate records over prompts and seeds.

    Each row: ``controller``, ``budget``, ``n`` (prompts with a valid record), ``reward`` mean with
    its 95% Student-t interval ``reward_low`` / ``reward_high`` over prompts (seeds of a prompt are
    averaged first: they are not independent of each other), ``win_rate`` against ``baseline`` at
    the same budget (paired by prompt and seed, ties count one half), ``distinct_2`` over the
    returned responses, mean ``rep_2``, mean ``kl`` (when log-probs were recorded), mean ``tokens``
    and ``seconds`` per prompt, and ``invalid``: the records whose every sample within the budget
    was invalid (NaN or infinite reward). Those are left out of every mean and of the win rates;
    when a group has only such records, its reward and interval are None.

    Against the baseline, paired by prompt and seed and bootstrapped over prompts
    (`paired_bootstrap`, 95% percentile intervals): ``diff`` (mean reward difference) with
    ``diff_low`` / ``diff_high``, and ``win_low`` / ``win_high`` around the win rate. Closeness to the
    base model, when recorded (`mpc_llm.evaluation.compare.closeness`): mean ``base_logp_mean``,
    ``base_ppl`` (``exp(-mean base_logp_mean)``), mean ``kl_estimate`` (an estimate) and mean
    ``selection_bound`` (a bound). Held-out rewards (records' ``eval``): ``eval[label]`` with the
    mean, its t-interval, ``n``, ``missing`` (records whose score was null, left out) and the
    bootstrap difference against the baseline's held-out score.

    Compute per prompt: mean ``prefill_tokens``, ``state_reads``, ``forward_tokens``, ``grad_steps``,
    ``value_evals``, ``value_tokens`` (None when any record lacks the field: records from before it
    was recorded, or, for ``state_reads``, of a controller that reads no state after a decode). Against the
    baseline's whole curve (its records at every budget; `mpc_llm.evaluation.summary.curve`):
    ``curve[axis]`` for the optimised reward and ``eval_curve[label][axis]`` for held-out scores,
    on the axes ``kl``, ``ppl`` and ``compute`` (``learning``: a label's learned-value training
    tokens per prompt, amortised, added to its compute; `amortised_learning`).
    """
    groups: dict[tuple[str, int], list[Mapping[str, Any]]] = defaultdict(list)
    for record in records:
        groups[(record["controller"], int(record["budget"]))].append(record)
    base = {
        (r["prompt_index"], r["seed"], int(r["budget"])): float(r["reward"])
        for r in records
        if r["controller"] == baseline and is_valid(r)
    }
    eval_base = {
        (r["prompt_index"], r["seed"], int(r["budget"]), label): value
        for r in records
        if r["controller"] == baseline and is_valid(r)
        for label, value in (r.get("eval") or {}).items()
        if value is not None
    }
    order = list(dict.fromkeys(r["controller"] for r in records))
    rows = []
    for (name, budget), everything in sorted(
        groups.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1])
    ):
        group = [r for r in everything if is_valid(r)]
        per_prompt: dict[Any, list[float]] = defaultdict(list)
        for r in group:
            per_prompt[r["prompt_index"]].append(float(r["reward"]))
        ci = mean_ci([sum(v) / len(v) for v in per_prompt.values()]) if per_prompt else None
        row: dict[str, Any] = {
            "controller": name,
            "budget": budget,
            "n": ci.n if ci else 0,
            "reward": ci.mean if ci else None,
            "reward_low": ci.low if ci else None,
            "reward_high": ci.high if ci else None,
            "invalid": len(everything) - len(group),
        }
        pairs = [
            (float(r["reward"]), base.get((r["prompt_index"], r["seed"], budget)), r["prompt_index"])
            for r in group
        ]
        pairs = [(a, b, p) for a, b, p in pairs if b is not None]
        row["win_rate"] = win_rate([a for a, _, _ in pairs], [b for _, b, _ in pairs]) if pairs else None
        row.update(_bootstrap_fields(pairs))
        responses = [r["response"] for r in group if "response" in r]
        if responses:
            row["distinct_2"] = distinct_n(responses, 2)
            row["rep_2"] = sum(rep_n(t, 2) for t in responses) / len(responses)
        kls = [float(r["kl"]) for r in group if r.get("kl") is not None]
        row["kl"] = sum(kls) / len(kls) if kls else None
        for key in ("base_logp_mean", "kl_estimate", "selection_bound", "kl_proposal"):
            values = [float(r[key]) for r in group if r.get(key) is not None]
            row[key] = sum(values) / len(values) if values else None
        row["base_ppl"] = math.exp(-row["base_logp_mean"]) if row["base_logp_mean"] is not None else None
        if labels := list(dict.fromkeys(k for r in group for k in (r.get("eval") or {}))):
            row["eval"] = {label: _held_out(group, label, eval_base, budget) for label in labels}
        # what was spent counts every record, invalid ones included
        tokens = [int(r["tokens"]) for r in everything if "tokens" in r]
        row["tokens"] = sum(tokens) / len(tokens) if tokens else None
        samples = [int(r["samples"]) for r in everything if "samples" in r]
        row["samples"] = sum(samples) / len(samples) if samples else None
        row["seconds"] = sum(float(r["seconds"]) for r in everything) / len(everything)
        for key in SPENT_MEANS:
            spent = [r.get(key) for r in everything]  # unknown (None) when a record lacks it, never 0
            row[key] = None if any(v is None for v in spent) else sum(map(float, spent)) / len(spent)  # type: ignore[arg-type]
        if baseline is not None and name != baseline:
            row.update(curve_fields(records, name, budget, baseline, (learning or {}).get(name, 0.0)))
        rows.append(row)
    return rows


BOOTSTRAP_KEYS = ("diff", "diff_low", "diff_high", "win_low", "win_high")


def _bootstrap_fields(pairs: Sequence[tuple[float, float, Any]]) -> dict[str, Any]:
    """``diff``, ``diff_low``, ``diff_high``, ``win_low``, ``win_high`` of (ours, baseline, prompt) pairs."""
    if not pairs:
        return dict.fromkeys(BOOTSTRAP_KEYS)
    b = paired_bootstrap([a for a, _, _ in pairs], [x for _, x, _ in pairs], [p for _, _, p in pairs])
    return {k: getattr(b, k) for k in BOOTSTRAP_KEYS}


def _held_out(
    group: Sequence[Mapping[str, Any]], label: str, base: Mapping[tuple[Any, ...], float], budget: int
) -> dict[str, Any]:
    """Mean held-out score ``label`` over prompts (seeds first), its t-interval, the records without
    a score, and the bootstrap difference against the baseline's held-out score."""
    per_prompt: dict[Any, list[float]] = defaultdict(list)
    pairs = []
    missing = 0
    for r in group:
        value = (r.get("eval") or {}).get(label)
        if value is None:
            missing += 1
            continue
        per_prompt[r["prompt_index"]].append(float(value))
        other = base.get((r["prompt_index"], r["seed"], budget, label))
        if other is not None:
            pairs.append((float(value), other, r["prompt_index"]))
    ci = mean_ci([sum(v) / len(v) for v in per_prompt.values()]) if per_prompt else None
    return {
        "mean": ci.mean if ci else None,
        "low": ci.low if ci else None,
        "high": ci.high if ci else None,
        "n": ci.n if ci else 0,
        "missing": missing,
        **_bootstrap_fields(pairs),
    }


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else "–"
    return str(value)


def _reward_cell(row: Mapping[str, Any]) -> str:
    """``mean [low, high]``, with the count of invalid records when there are any."""
    invalid = int(row.get("invalid") or 0)
    if row["reward"] is None:
        return f"– (all {invalid} invalid: no valid sample within the budget)" if invalid else "–"
    cell = f"{_fmt(row['reward'])} [{_fmt(row['reward_low'])}, {_fmt(row['reward_high'])}]"
    return f"{cell} ({invalid} invalid, excluded)" if invalid else cell


def _interval(mean: Any, low: Any, high: Any, digits: int = 3) -> str:
    return "–" if mean is None else f"{_fmt(mean, digits)} [{_fmt(low, digits)}, {_fmt(high, digits)}]"


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The summary rows as Markdown: the optimised reward (a reward cell counts the records that had no
    valid sample), then, when recorded, closeness to the base model and the held-out rewards."""
    header = (
        "| controller | budget | prompts | mean best reward [95% t-CI] "
        "| Δ reward vs baseline [95% bootstrap] | win rate vs baseline [95% bootstrap] "
        "| distinct-2 | rep-2 | scored / prompt | tokens / prompt "
        "| s / prompt |\n|---|---:|---:|---|---|---|---:|---:|---:|---:|---:|\n"
    )
    lines = [
        f"| {r['controller']} | {r['budget']} | {r['n']} | {_reward_cell(r)} "
        f"| {_interval(r.get('diff'), r.get('diff_low'), r.get('diff_high'))} "
        f"| {_interval(r['win_rate'], r.get('win_low'), r.get('win_high'), 2)} "
        f"| {_fmt(r.get('distinct_2'))} | {_fmt(r.get('rep_2'))} "
        f"| {_fmt(r.get('samples'), 1)} | {_fmt(r['tokens'], 0)} | {_fmt(r['seconds'], 2)} |"
        for r in rows
    ]
    text = header + "\n".join(lines) + "\n"
    return text + closeness_table(rows)


def closeness_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Closeness to the base model and held-out rewards per row ('' when neither was recorded).

    ``base log-lik / token`` and ``base ppl`` are exact (teacher-forced, temperature 1); the steering
    log-ratio is a one-sample estimate of ``KL(steered || base)``; the selection bound
    ``log n - (n - 1) / n`` bounds what choosing the best of ``n`` adds (all of best-of-N's KL).
    """
    labels = list(dict.fromkeys(k for r in rows for k in (r.get("eval") or {})))
    closeness = any(r.get("base_logp_mean") is not None or r.get("selection_bound") is not None for r in rows)
    if not labels and not closeness:
        return ""
    cols = ["controller", "budget", "base log-lik / token", "base ppl", "steering log-ratio (estimate)",
            "selection bound", "steering estimate + selection bound"]  # fmt: skip
    for label in labels:
        cols += [f"held-out {label} [95% t-CI]", f"Δ held-out {label} vs baseline [95% bootstrap]"]
    lines = ["| " + " | ".join(cols) + " |", "|---|---:|" + "---:|" * 5 + "---|---|" * len(labels)]
    for r in rows:
        kl, sel = r.get("kl_estimate"), r.get("selection_bound")
        both = None if kl is None else kl + (sel or 0.0)
        cells = [r["controller"], str(r["budget"]), _fmt(r.get("base_logp_mean")), _fmt(r.get("base_ppl"), 2),
                 _fmt(kl, 2), _fmt(sel, 2), _fmt(both, 2)]  # fmt: skip
        for label in labels:
            e = (r.get("eval") or {}).get(label) or {}
            cell = _interval(e.get("mean"), e.get("low"), e.get("high"))
            if e.get("missing"):
                cell += f" ({e['missing']} unscored, excluded)"
            cells += [cell, _interval(e.get("diff"), e.get("diff_low"), e.get("diff_high"))]
        lines.append("| " + " | ".join(cells) + " |")
    return (
        "\nCloseness to the base model (base log-likelihood: exact; selection bound: a bound; their sum "
        "with the steering log-ratio, the KL figure: a bound for best-of-N, a bound plus an unbiased "
        "estimate for a deterministic edit such as RE-Control, a heuristic for AISP and CEM, absent "
        "for controllers that select at every step) and held-out rewards:\n\n" + "\n".join(lines) + "\n"
    )


def plot_reward_vs_samples(
    rows: Sequence[Mapping[str, Any]], path: str | Path, unit: str = "samples"
) -> Path:
    """Mean best reward against budget per controller, with 95% confidence bands, as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("plotting needs matplotlib: pip install 'mpc_llm[plot]'") from err
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for name in dict.fromkeys(r["controller"] for r in rows):
        valid = (r for r in rows if r["controller"] == name and r["reward"] is not None)
        mine = sorted(valid, key=lambda r: r["budget"])
        x = [r["budget"] for r in mine]
        ax.plot(x, [r["reward"] for r in mine], marker="o", label=name)
        ax.fill_between(x, [r["reward_low"] for r in mine], [r["reward_high"] for r in mine], alpha=0.2)
    ax.set_xscale("log", base=2)
    ax.set_xlabel(
        "responses scored per prompt (budget)" if unit == "samples" else "tokens generated per prompt"
    )
    ax.set_ylabel("mean best reward (95% CI)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def learning_costs(settings: Mapping[str, Any]) -> str:
    """A paragraph on what the learned values the controllers use cost to learn (their cards'
    ``learning_cost``, `mpc_llm.values.ValueRef.learning`), beside the test-time budgets; empty when
    no controller uses one."""
    lines = []
    for label, spec in sorted((settings.get("controllers") or {}).items()):
        learned = spec.get("value_learning") if isinstance(spec, Mapping) else None
        if not learned:
            continue
        cost = learned.get("learning_cost") or {}
        prompts = learned.get("prompts") or {}
        seconds = sum(float(cost.get(k) or 0.0) for k in ("seconds_collect", "seconds_train"))
        where = f"{prompts.get('count', '?')} prompts of {prompts.get('source', '?')}"
        spent = f"{cost.get('responses_scored', '?')} responses sampled and scored"
        spent += f", {cost.get('tokens', '?')} tokens"
        lines.append(
            f"- {label}: a value learned on {where} ({learned.get('reward', '?')}): {spent}, {seconds:.0f} s"
        )
    if not lines:
        return ""
    return (
        "\nWhat the learned values cost to learn (once, outside the budgets above):\n\n"
        + "\n".join(lines)
        + "\n"
    )


#: the test prompts a learned value's training is amortised over in the compute comparisons
AMORTISED_OVER = 1000


def amortised_learning(settings: Mapping[str, Any], uses: int = AMORTISED_OVER) -> dict[str, float]:
    """Per controller label using a learned value: its training's generated tokens (the card's
    ``learning_cost.tokens``; the prompts' prefill is not on the card, so this is a lower bound)
    divided by ``uses`` test prompts: what each prompt adds to the label's compute."""
    out = {}
    for label, spec in (settings.get("controllers") or {}).items():
        learned = spec.get("value_learning") if isinstance(spec, Mapping) else None
        tokens = ((learned or {}).get("learning_cost") or {}).get("tokens")
        if isinstance(tokens, int | float):
            out[label] = float(tokens) / uses
    return out


def write_summary(
    rows: Sequence[Mapping[str, Any]],
    folder: Path,
    settings: Mapping[str, Any],
    baseline: str | None = BASELINE,
) -> None:
    """Write ``summary.md`` (settings, the plain answer against the ``baseline``'s curve and the
    tables), ``summary.json``, ``reward_vs_samples.png`` and, when closeness was recorded,
    ``frontier.png`` (`mpc_llm.evaluation.summary.frontier`)."""
    text = "# Comparison\n"
    if baseline is not None:
        text += plain_answer(rows, baseline)
    text += "\n" + markdown_table(rows) + learning_costs(settings)
    if baseline is not None:
        text += curve_table(rows, baseline)
        if learned := amortised_learning(settings):
            text += (
                f"\nCompute at equal compute counts each learned value's training tokens over "
                f"{AMORTISED_OVER} test prompts: "
                + ", ".join(f"{label} +{tokens:.0f} tokens / prompt" for label, tokens in learned.items())
                + ".\n"
            )
    text += "\n<details><summary>settings</summary>\n\n```json\n"
    text += json.dumps(settings, indent=2, sort_keys=True, allow_nan=False) + "\n```\n</details>\n"
    (folder / "summary.md").write_text(text, encoding="utf-8")
    summary = json.dumps(list(rows), indent=2, allow_nan=False)  # strict JSON: None, never NaN
    (folder / "summary.json").write_text(summary, encoding="utf-8")
    plot_reward_vs_samples(
        rows, folder / "reward_vs_samples.png", str(settings.get("budget_unit", "samples"))
    )
    plot_frontier(rows, folder / "frontier.png", baseline)
