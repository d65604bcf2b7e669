"""Best-of-N's whole curve as the reference: is a controller's point above it, level with it, below it?

Best-of-N at budgets ``n = 1, 2, 4, ...`` traces how much reward plain sampling buys for each step
away from the base model. A controller's point (mean reward, mean closeness) is compared with that
curve at the same closeness, on three axes (`AXES`):

- ``kl``: the KL figure ``kl_estimate + selection_bound`` (nats; for best-of-N the bound
  ``log n - (n - 1) / n``; what the figure is for each family: ``docs/concepts.md``);
- ``ppl``: the base model's perplexity of the returned responses (exact), as a distance: ``|log ppl
  - log ppl_1|`` (nats per token) from best-of-N's smallest budget, the model's own samples, since
  a degenerate response (repeated words) can be more likely than the model's own samples;
- ``compute``: model-token equivalents per prompt (``forward_tokens``: prefill and decode; a learned
  value's evaluations and gradient steps, ``value_tokens``; its training tokens amortised over its
  stated uses), interpolated in ``log``.

The curve (`envelope`). Best-of-N's mean points are sorted by the axis and made monotone: the
reward reachable at a closeness ``x`` is the best mean reward of any budget whose closeness is at
most ``x`` (a larger budget can always be spent like a smaller one), so a point that does worse
than a closer one is dropped and ties keep the better budget. Between two kept points the curve is
the straight line (in ``log x`` for compute).

Interpolated on the means, per prompt paired. The controller's mean closeness ``x`` falls between
two kept budgets ``n_lo`` and ``n_hi`` with weight ``w``; each prompt's reference reward is
``(1 - w) r(n_lo) + w r(n_hi)``, so the mean of the references is the curve at ``x`` and every
difference is paired by prompt and seed (`paired_bootstrap`, prompts resampled). The means, not
each prompt's closeness: closeness is a budget on an expectation (a KL is a mean over prompts),
best-of-N's bound is the same for every prompt, and a single response's steering estimate is too
noisy to place it on a curve. The interval is for the reward at the observed mean closeness; the
closeness's own uncertainty is not folded in.

Out of range. A point farther from the model than best-of-N's largest measured budget is not
extrapolated: it is compared with that last point, and is ``below`` the curve only when it is
significantly worse there (worse and farther: dominated); otherwise ``beyond`` (no verdict). A
point closer than the closest budget is ``above`` only when significantly better than that point.
Fewer than `MIN_PROMPTS` prompts give the numbers and no verdict (``unknown``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mpc_llm.evaluation.summary.metrics import is_valid, paired_bootstrap

Axis = Literal["kl", "ppl", "compute"]
Verdict = Literal["above", "level", "below", "beyond", "unknown"]


def _kl(records: Sequence[Mapping[str, Any]]) -> float | None:
    """Mean ``kl_estimate + selection_bound``; None unless every record has its steering figure (a
    missing one, e.g. a sequential controller's or a non-finite one, is unknown, never 0)."""
    kl = [r.get("kl_estimate") for r in records]
    if any(k is None for k in kl):
        return None
    sel = [r.get("selection_bound") or 0.0 for r in records]
    return sum(float(k) + float(s) for k, s in zip(kl, sel, strict=True)) / len(records)  # type: ignore[arg-type]


def _log_ppl(records: Sequence[Mapping[str, Any]]) -> float | None:
    """Minus the mean base log-likelihood per token: the log of the base perplexity (None when a
    record lacks it)."""
    logp = [r.get("base_logp_mean") for r in records]
    if any(v is None for v in logp):
        return None
    return -sum(float(v) for v in logp) / len(records)  # type: ignore[arg-type]


def _compute(records: Sequence[Mapping[str, Any]]) -> float | None:
    """Mean model-token equivalents: ``forward_tokens`` plus a learned value's ``value_tokens``; None
    when a record lacks either (records from before compute was recorded: unknown, never zero)."""
    total = 0.0
    for r in records:
        valued = "grad_steps" in r or "value_evals" in r
        if r.get("forward_tokens") is None or (valued and r.get("value_tokens") is None):
            return None
        total += float(r["forward_tokens"]) + float(r.get("value_tokens") or 0.0)
    return total / len(records)


#: axis -> (mean closeness of a list of records, None when unknown; interpolate in log x?). On the
#: ``ppl`` axis the figure is the log base perplexity, and closeness is its distance from the base
#: model's own samples (`against_curve`).
AXES: dict[Axis, tuple[Callable[[Sequence[Mapping[str, Any]]], float | None], bool]] = {
    "kl": (_kl, False),
    "ppl": (_log_ppl, False),
    "compute": (_compute, True),
}

#: fewer prompts than this give a comparison but no verdict (a percentile bootstrap over a handful
#: of prompts is too narrow to trust)
MIN_PROMPTS = 10


@dataclass(frozen=True)
class CurvePoint:
    """One budget of the reference: mean closeness ``x``, mean reward ``y``, budget ``n``."""

    x: float
    y: float
    n: int


def envelope(points: Sequence[CurvePoint]) -> list[CurvePoint]:
    """The monotone curve through ``points``: sorted by ``x``, each kept point better than every
    point at or before its ``x`` (ties in ``x`` keep the better point).

    Example:
        >>> pts = [CurvePoint(0.0, 0.5, 1), CurvePoint(1.0, 0.7, 2), CurvePoint(1.0, 0.8, 4),
        ...        CurvePoint(2.0, 0.75, 8), CurvePoint(3.0, 0.9, 16)]
        >>> [p.n for p in envelope(pts)]
        [1, 4, 16]
    """
    kept: list[CurvePoint] = []
    for p in sorted(points, key=lambda p: (p.x, -p.y)):
        if not kept or p.y > kept[-1].y:  # within a tie in x the better point comes first
            kept.append(p)
    return kept


@dataclass(frozen=True)
class Place:
    """Where a closeness ``x`` falls on a curve: ``status`` ``"within"``, ``"beyond"`` (farther than
    the last point) or ``"before"`` (closer than the first); ``lo`` and ``hi`` index the bracketing
    points (equal out of range: the end point compared with) and ``w`` is the weight of ``hi``."""

    status: Literal["within", "beyond", "before"]
    lo: int
    hi: int
    w: float


def locate(curve: Sequence[CurvePoint], x: float, log: bool = False) -> Place:
    """Bracket ``x`` on ``curve`` (an `envelope`); linear in ``x``, or in ``log x`` with ``log``.

    Example:
        >>> c = [CurvePoint(0.0, 0.5, 1), CurvePoint(1.0, 0.8, 4), CurvePoint(3.0, 0.9, 16)]
        >>> locate(c, 2.0), locate(c, 5.0).status, locate(c, 1.0)
        (Place(status='within', lo=1, hi=2, w=0.5), 'beyond', Place(status='within', lo=1, hi=1, w=0.0))
    """
    if not curve:
        raise ValueError("an empty curve has no place")

    def f(v: float) -> float:
        return math.log(v) if log else v

    if x > curve[-1].x:
        return Place("beyond", len(curve) - 1, len(curve) - 1, 0.0)
    if x < curve[0].x:
        return Place("before", 0, 0, 0.0)
    for i, p in enumerate(curve):
        if x == p.x:
            return Place("within", i, i, 0.0)
        if x < p.x:
            lo = curve[i - 1]
            return Place("within", i - 1, i, (f(x) - f(lo.x)) / (f(p.x) - f(lo.x)))
    raise AssertionError("unreachable: x is within the curve's range")


Key = tuple[Any, Any]  # (prompt, seed)


def against_curve(
    ours: Mapping[Key, Mapping[str, Any]],
    baseline: Mapping[int, Mapping[Key, Mapping[str, Any]]],
    axis: Axis,
    value: Callable[[Mapping[str, Any]], float | None] = lambda r: r.get("reward"),
    extra: float = 0.0,
) -> dict[str, Any] | None:
    """A controller's point against the baseline's curve on ``axis``.

    Args:
        ours: the controller's valid records at one budget, by ``(prompt, seed)``.
        baseline: the baseline's valid records by budget, then by ``(prompt, seed)``.
        axis: a key of `AXES`.
        value: what is compared (the optimised reward; or a held-out score: the curve is still
            placed by the optimised reward, and the same brackets and weights read its held-out one).
        extra: added to the controller's closeness (a learned value's amortised training compute).

    Returns:
        None when the axis is unknown on either side or no pair is shared; else ``x`` (our mean
        closeness), ``status`` (`Place`), ``n_lo``/``n_hi``/``w`` (the bracketing budgets),
        ``ref`` (the curve's value at ``x``: the end point's out of range), ``diff`` with
        ``diff_low``/``diff_high`` (paired bootstrap over prompts), ``pairs`` and ``verdict``
        (``above``/``level``/``below`` within range; out of range ``below`` or ``beyond``, ``above``
        or ``unknown``, as the module says).
    """
    closeness, log = AXES[axis]
    keys = [k for k in ours if all(k in b for b in baseline.values())]
    keys = [k for k in keys if value(ours[k]) is not None]
    keys = [k for k in keys if all(value(b[k]) is not None for b in baseline.values())]
    if not keys or not baseline:
        return None
    x = closeness([ours[k] for k in keys])
    xs = {n: closeness([b[k] for k in keys]) for n, b in baseline.items()}
    if x is None or any(v is None for v in xs.values()):
        return None
    if axis == "ppl":  # a distance from the base model's own samples (its smallest budget), either way
        own = xs[min(xs)]
        x, xs = abs(x - own), {n: abs(v - own) for n, v in xs.items()}  # type: ignore[operator]
    x += extra
    reward = {n: sum(float(b[k]["reward"]) for k in keys) / len(keys) for n, b in baseline.items()}
    curve = envelope([CurvePoint(float(xs[n]), reward[n], n) for n in baseline])  # type: ignore[arg-type]
    place = locate(curve, x, log)
    lo, hi = curve[place.lo].n, curve[place.hi].n

    def ref(k: Key) -> float:
        return (1 - place.w) * float(value(baseline[lo][k])) + place.w * float(value(baseline[hi][k]))  # type: ignore[arg-type]

    mine = [float(value(ours[k])) for k in keys]  # type: ignore[arg-type]
    refs = [ref(k) for k in keys]
    b = paired_bootstrap(mine, refs, [k[0] for k in keys])
    prompts = len({k[0] for k in keys})
    if prompts < MIN_PROMPTS:
        verdict: Verdict = "unknown"
    elif place.status == "within":
        verdict = "above" if b.diff_low > 0 else "below" if b.diff_high < 0 else "level"
    elif place.status == "beyond":
        verdict = "below" if b.diff_high < 0 else "beyond"
    else:
        verdict = "above" if b.diff_low > 0 else "unknown"
    return {
        "x": x,
        "status": place.status,
        "n_lo": lo,
        "n_hi": hi,
        "w": place.w,
        "ref": sum(refs) / len(refs),
        "diff": b.diff,
        "diff_low": b.diff_low,
        "diff_high": b.diff_high,
        "pairs": len(keys),
        "prompts": prompts,
        "verdict": verdict,
    }


def by_budget(
    records: Sequence[Mapping[str, Any]], controller: str
) -> dict[int, dict[Key, Mapping[str, Any]]]:
    """A controller's records by budget, then by ``(prompt, seed)``."""
    out: dict[int, dict[Key, Mapping[str, Any]]] = defaultdict(dict)
    for r in records:
        if r["controller"] == controller:
            out[int(r["budget"])][(r["prompt_index"], r["seed"])] = r
    return dict(out)


def curve_fields(
    records: Sequence[Mapping[str, Any]],
    controller: str,
    budget: int,
    baseline: str,
    learning: float = 0.0,
) -> dict[str, Any]:
    """``{"curve": {axis: against_curve(...)}}`` of one (controller, budget) against the ``baseline``'s
    curve on every axis with a figure, and ``{"eval_curve": {label: {axis: ...}}}`` for held-out
    scores; ``learning``: a learned value's amortised training tokens per prompt (compute axis)."""
    valid = [r for r in records if is_valid(r)]
    ours = by_budget(valid, controller).get(budget, {})
    base = by_budget(valid, baseline)
    if not ours or not base:
        return {}
    curve = {a: against_curve(ours, base, a, extra=learning if a == "compute" else 0.0) for a in AXES}  # type: ignore[arg-type]
    out: dict[str, Any] = {"curve": {a: c for a, c in curve.items() if c is not None}}
    labels = dict.fromkeys(k for r in ours.values() for k in (r.get("eval") or {}))
    held = {
        label: {
            a: c
            for a in AXES
            if (c := against_curve(ours, base, a, _held_out(label), learning if a == "compute" else 0.0))  # type: ignore[arg-type]
        }
        for label in labels
    }
    if any(held.values()):
        out["eval_curve"] = held
    return out


def _held_out(label: str) -> Callable[[Mapping[str, Any]], float | None]:
    return lambda r: (r.get("eval") or {}).get(label)
