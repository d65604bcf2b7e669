"""Comparison records: one per (prompt, controller, seed, budget), read off an `OptimizeResult`.

A record holds the chosen response's ``cost`` (the objective) and, apart, its ``reward`` as the
reward term scored it (the negated cost when the objective reports no reward), the fields its
rollout describes (for a language model ``response``, ``length``, and ``kl`` when the decode kept
log-probs), the ``samples`` it scored and the ``tokens`` it generated to get there, and the
``seconds`` it took; the absolute ``sigma`` a Gaussian controller started from (resolved from
``sigma_relative``) and AISP's mean temperature ``lambda_mean`` (chosen per iteration with
``ess_target``). Given the dynamics, the closeness of the response to the base model:
``base_logp_mean``, ``base_ppl``, ``kl_estimate`` and ``selection_bound``
(`mpc_llm.evaluation.compare.closeness`, which says which is an estimate and which a bound) and,
when the decode kept log-probs, ``kl_proposal`` (the mean steering log-ratio of every sample within
the budget, selected or not: `_steering_log_ratios`); a sampler's
records add what its weights estimate about the tilted model: ``beta``, ``log_z``, ``kl_tilted``
(``E_pi[r] / beta - log Z``) and ``ess`` (`mpc_llm.core.tilted_estimate`); a comparison
with held-out rewards adds ``eval`` (`mpc_llm.evaluation.compare.heldout`).

Two ways to read a budget ``k``:

- `anytime_records` (open-loop controllers): one run serves every budget; the answer at budget
  ``k`` is the best of the run's first samples within ``k`` (``k`` samples, or as many samples as
  fit in ``k`` generated tokens, at least one), or for a sampler (soft best-of-N, AISP's sampling
  mode) its weighted draw among them (`mpc_llm.controllers.Controller.choose`).
- `final_records` (sequential controllers: receding horizon, blockwise): one run per budget; its
  answer is the run's own.

Invalid samples. A sample whose reward or cost is NaN or infinite is never chosen while a valid one
is within the budget. When every sample within a budget is invalid (e.g. a reward that could not
score the first ``k`` responses), the record says so: ``"invalid": true`` with ``"reward": null``
and ``"cost": null``, and no response; summaries count such records apart and leave them out of
the means. A record only ever holds finite numbers or null (the store writes strict JSON).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from mpc_llm.controllers import Planner
from mpc_llm.core import BudgetUnit, Dynamics, OptimizeResult, make_generators
from mpc_llm.evaluation.compare.closeness import chosen_rollout, closeness_fields, selection_bound
from mpc_llm.evaluation.compare.records_file import finite


def anytime_records(
    result: OptimizeResult,
    indices: list[int],
    name: str,
    seed: int,
    budgets: list[int],
    unit: BudgetUnit,
    dynamics: Dynamics | None = None,
    controller: Planner | None = None,
    context: torch.Tensor | None = None,
) -> list[dict[str, Any]]:
    """Records at every budget from one run kept with ``keep_rollouts=True``; with the ``dynamics``,
    each returned response's closeness to the base model (`mpc_llm.evaluation.compare.closeness`).

    The answer at budget ``k`` is the ``controller``'s `Controller.choose` among the first samples
    when it declares its answer a draw (``answer == "draw"``, the samplers: a weighted draw, with
    the uniform of ``settings["choice_seed"]``; its record adds ``beta``, ``log_z``, ``kl_tilted``,
    ``ess``, and ``selection_bound = log k``), otherwise the lowest cost. ``context``: ``(B,)`` prompt
    tokens (`Dynamics.context_tokens`), for the records' compute (`compute_fields`)."""
    history = result.history
    sampler = controller if controller is not None and controller.answer == "draw" else None
    ratios = None
    if sampler is not None and all(r.log_ratio is not None for r in history):
        ratios = torch.cat([r.log_ratio for r in history], dim=1)  # type: ignore[misc]
    costs = result.all_costs()
    rewards = result.all_metric("reward") if "reward" in history[0].metrics else -costs
    counts = torch.cat([r.token_counts for r in history], dim=1).cumsum(dim=1)  # type: ignore[misc]
    sizes = [r.costs.shape[1] for r in history]
    ends = torch.tensor(sizes).cumsum(0).tolist()
    per_sample = [s for r in history for s in [r.seconds / r.costs.shape[1]] * r.costs.shape[1]]
    steering = _steering_log_ratios(history)  # (B, total) or None: each sample's own, unselected
    records: list[dict[str, Any]] = []
    picks: list[list[int]] = [[0] * len(budgets) for _ in indices]  # sample chosen per budget
    where: list[tuple[int, int, int]] = []  # (record, b, budget index) of the valid records
    for ki, k in enumerate(budgets):
        for b, prompt_index in enumerate(indices):
            # in tokens: the samples whose tokens fit in k (at least one)
            used = k if unit == "samples" else max(1, int((counts[b] <= k).sum()))
            valid = torch.isfinite(costs[b, :used]) & torch.isfinite(rewards[b, :used])
            masked = costs[b, :used].masked_fill(~valid, float("inf"))
            figures: dict[str, float] = {}
            if sampler is not None and bool(valid.any()):  # a weighted draw among the first samples
                seed_b = int(result.settings["choice_seed"][b])
                index, stats = sampler.choose(  # type: ignore[attr-defined]
                    masked.unsqueeze(0), None if ratios is None else ratios[b : b + 1, :used],
                    make_generators([seed_b], 1),
                )  # fmt: skip
                j, figures = int(index[0]), {k: float(v[0]) for k, v in stats.items()}
            else:
                j = int(masked.argmin())
            it = next(i for i, end in enumerate(ends) if end > j)
            rollout = history[it].rollout
            assert rollout is not None, "anytime records need optimize(..., keep_rollouts=True)"
            key = {"prompt_index": prompt_index, "controller": name, "seed": seed, "budget": k}
            spent = compute_fields(
                used, int(counts[b, used - 1]), sum(per_sample[:used]) / len(indices),
                None if context is None else int(context[b]), history[0].stats, b,
            )  # fmt: skip
            if not bool(valid.any()):
                records.append(invalid_record(key, spent))
                continue
            picks[b][ki] = j
            where.append((len(records), b, ki))
            records.append(
                {
                    **key,
                    "reward": float(rewards[b, j]),
                    "cost": float(costs[b, j]),
                    **rollout.describe(b, j - (ends[it] - sizes[it])),
                    "selection_bound": math.log(used) if sampler is not None else selection_bound(used),
                    **figures,
                    **({} if steering is None else {"kl_proposal": float(steering[b, :used].mean())}),
                    **_settings(result, b, history, used, sizes),
                    **spent,
                }
            )
    if dynamics is not None and where:
        fields = closeness_fields(dynamics, chosen_rollout(history, picks))
        for i, b, ki in where:
            records[i].update(fields[b][ki])
    return [r if r.get("invalid") else finite_record(r) for r in records]


def _steering_log_ratios(history: list[Any]) -> torch.Tensor | None:
    """``(B, total)`` steering log-ratio ``sum_t log p_u - log p_0`` of every sample, when the decode
    kept log-probs (``return_logprobs``). Their mean over the samples within a budget, a record's
    ``kl_proposal``, estimates ``KL(proposal || base)`` of the unselected proposal: unbiased when
    the edit is a deterministic function of the state (RE-Control; 0 for best-of-N); for a random
    control (AISP, CEM) it is the log-ratio given the drawn controls, whose mean bounds the
    proposal's KL from above (convexity)."""
    rollouts = [r.rollout for r in history]
    if any(
        getattr(r, "logprobs", None) is None or getattr(r, "base_logprobs", None) is None for r in rollouts
    ):
        return None
    return torch.cat([r.kl_to_base().cpu() for r in rollouts], dim=1)


def _settings(
    result: OptimizeResult, b: int, history: list[Any], used: int, sizes: list[int]
) -> dict[str, Any]:
    """The absolute ``sigma`` problem ``b`` started from and, for controllers that weight samples, the
    mean temperature ``lambda`` of the updates within the first ``used`` samples (updates whose
    costs were all equal, where the temperature does not matter, are left out)."""
    out: dict[str, Any] = {}
    if "sigma" in result.settings:
        out["sigma"] = float(result.settings["sigma"][b])
    seen, lambdas = 0, []
    for record, size in zip(history, sizes, strict=True):
        seen += size
        if seen > used:
            break
        if "lambda" in record.stats and math.isfinite(value := float(record.stats["lambda"][b])):
            lambdas.append(value)  # +inf: all costs equal, any lambda gives the same weights
    if lambdas:
        out["lambda_mean"] = sum(lambdas) / len(lambdas)
    return out


#: per-token compute a controller reports in its stats (RE-Control's value gradients), and the
#: record field of its total over the tokens spent
COMPUTE_STATS = {"grad_steps_per_token": "grad_steps", "value_evals_per_token": "value_evals"}


def value_tokens(grad_steps: float, value_evals: float, ratio: float) -> float:
    """A learned value's work in model-token equivalents: a value forward costs ``ratio`` (its
    parameters over the model's) of a model token's forward, a gradient step (forward and backward)
    three times that; ``value_evals`` counts the forwards inside the gradient steps too.

    Example:
        >>> value_tokens(grad_steps=30.0, value_evals=30.0, ratio=0.01)
        0.9
    """
    return ratio * (3.0 * grad_steps + max(value_evals - grad_steps, 0.0))


def add_value_tokens(records: list[dict[str, Any]], ratio: float | None) -> list[dict[str, Any]]:
    """Each record with a learned value's work (``grad_steps``, ``value_evals``) gains
    ``value_tokens`` (`value_tokens`; ``ratio``: the value's parameters over the model's, None:
    unknown, nothing added)."""
    for r in records:
        if ratio is not None and ("grad_steps" in r or "value_evals" in r):
            r["value_tokens"] = value_tokens(r.get("grad_steps") or 0.0, r.get("value_evals") or 0.0, ratio)
    return records


def compute_fields(
    samples: int,
    tokens: int,
    seconds: float,
    context: int | None,
    stats: Mapping[str, Any],
    b: int,
    rereads: int = 0,
    state_reads: int | None = None,
) -> dict[str, Any]:
    """What a record spent: ``samples`` (responses scored: one reward call each), ``tokens``
    (generated: one decode step each) and wall ``seconds``; with the prompt's ``context`` tokens,
    ``prefill_tokens`` (the prompt read once, plus ``rereads``: committed tokens a sequential
    controller reads again) and ``forward_tokens = prefill_tokens + state_reads + tokens`` (tokens
    through the model; ``state_reads``, recorded when a controller counts them: the states a learned
    value read after a decode, one forward of the decode's last token each); the per-token ``stats``
    of `COMPUTE_STATS` with their totals over ``tokens``.

    Example:
        >>> compute_fields(4, 100, 2.0, 30, {}, 0)
        {'samples': 4, 'tokens': 100, 'seconds': 2.0, 'prefill_tokens': 30, 'forward_tokens': 130}
    """
    out: dict[str, Any] = {"samples": samples, "tokens": tokens, "seconds": seconds}
    if state_reads is not None:
        out["state_reads"] = state_reads
    if context is not None:
        out["prefill_tokens"] = context + rereads
        out["forward_tokens"] = context + rereads + (state_reads or 0) + tokens
    for name, total in COMPUTE_STATS.items():
        if name in stats:
            per_token = float(stats[name][b])
            out[name], out[total] = per_token, per_token * tokens
    return out


#: the fields of what a record spent (`compute_fields`), kept by an invalid record too
SPENT = ("samples", "tokens", "seconds", "prefill_tokens", "state_reads", "forward_tokens", *COMPUTE_STATS,
         *COMPUTE_STATS.values(), "value_tokens")  # fmt: skip


def invalid_record(key: Mapping[str, Any], spent: Mapping[str, Any]) -> dict[str, Any]:
    """The record of a budget whose every sample was invalid (NaN or infinite reward or cost)."""
    return finite_record({**key, "reward": None, "cost": None, "invalid": True, **spent})


def finite_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` with every non-finite number made null; a non-finite ``reward`` or ``cost`` makes
    the whole record invalid (its response is dropped: nothing chose it)."""
    out = finite(record)
    if not out.get("invalid") and (out.get("reward") is None or out.get("cost") is None):
        key = {k: out[k] for k in ("prompt_index", "controller", "seed", "budget") if k in out}
        return invalid_record(key, {k: out[k] for k in SPENT if k in out})
    return out


def final_records(
    result: OptimizeResult,
    indices: list[int],
    name: str,
    seed: int,
    budget: int,
    dynamics: Dynamics | None = None,
    context: torch.Tensor | None = None,
) -> list[dict[str, Any]]:
    """Records of one run at one budget: each problem's answer is the run's own (with the
    ``dynamics``, its base log-likelihood; no selection bound: such a run selects at every step;
    for a sampler with a weighted population, SMC, its ``beta``, ``log_z``, ``kl_tilted``, ``ess``).

    With the prompts' ``context`` tokens, the compute (`compute_fields`) adds the committed tokens
    the run read again (`Budget.compute_per_problem`'s ``rereads``: every row that went on, resampled
    copies included), the states a value read after a decode (``state_reads``), and its totals of
    value evaluations and gradient steps."""
    rewards = result.best_metrics.get("reward")
    fields = (
        None if dynamics is None else closeness_fields(dynamics, result.best_rollout, with_controls=False)
    )
    extra = result.budget.compute_per_problem
    records = []
    for b, prompt_index in enumerate(indices):
        cost = float(result.best_cost[b])
        spent = compute_fields(
            result.budget.samples_per_problem[b], result.budget.tokens_per_problem[b],
            result.budget.seconds / len(indices), None if context is None else int(context[b]), {}, b,
            int(extra["rereads"][b]) if "rereads" in extra else 0,
            int(extra["state_reads"][b]) if "state_reads" in extra else None,
        )  # fmt: skip
        spent.update({k: extra[k][b] for k in COMPUTE_STATS.values() if k in extra})
        records.append(
            finite_record(
                {
                    "prompt_index": prompt_index,
                    "controller": name,
                    "seed": seed,
                    "budget": budget,
                    "reward": float(rewards[b]) if rewards is not None else -cost,
                    "cost": cost,
                    **result.best_rollout.describe(b, 0),
                    **(fields[b][0] if fields is not None else {}),
                    **({} if result.population is None else result.population.estimate.figures(b)),
                    **spent,
                }
            )
        )
    return records
