"""Compare controllers at equal budgets of scored responses.

Budget accounting: each (prompt chunk, controller, seed) is one run of ``optimize`` with
``max_samples = max(budgets)``; the record for budget ``k`` is read off the anytime curve, i.e. the
best of the first ``k`` samples that run scored. For a non-adaptive controller (best-of-N, random
shooting) that is distributed exactly as a budget-``k`` run's answer (not bit for bit: a run with
another ``N`` uses the random stream differently); for an adaptive one (AISP, CEM) it is the state of
the run after ``k`` samples, which is why every budget must be at least one iteration
(``num_samples``) of each adaptive controller: ``iterations = ceil(k / num_samples)``, the last
iteration possibly partial. Every controller scores exactly ``k`` responses per prompt at budget
``k``.

Problem ``p`` under run seed ``s`` draws from seed ``s * 1_000_003 + p``, whatever chunk it is in,
so results do not depend on ``prompts_per_batch`` (up to floating-point effects of batch shapes) and
a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from mpc_llm.controllers import Controller
from mpc_llm.core import CostFunction, Dynamics, OptimizeResult
from mpc_llm.evaluation.store import RunStore
from mpc_llm.evaluation.summary import summarize, write_summary
from mpc_llm.lm import Prompt

SEED_STRIDE = 1_000_003
KEY = ("prompt_index", "controller", "seed")


def check_budgets(controllers: Mapping[str, Controller], budgets: Sequence[int]) -> list[int]:
    """Sorted distinct budgets; each at least one iteration of every adaptive controller."""
    if not budgets or any(int(b) < 1 for b in budgets):
        raise ValueError(f"budgets must be positive integers, got {list(budgets)}")
    ordered = sorted({int(b) for b in budgets})
    for name, controller in controllers.items():
        per_iteration = controller.config.num_samples
        if controller.adaptive and ordered[0] < per_iteration:
            raise ValueError(
                f"budget {ordered[0]} is smaller than one iteration of controller {name!r} "
                f"({per_iteration} samples); lower its num_samples or raise the smallest budget"
            )
    return ordered


def _prompt_text(prompt: Prompt) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)


def run_settings(
    prompts: Sequence[Prompt],
    controllers: Mapping[str, Controller],
    budgets: Sequence[int],
    seeds: Sequence[int],
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """What identifies a run: resuming requires the same settings."""
    digest = hashlib.sha256("\n".join(_prompt_text(p) for p in prompts).encode()).hexdigest()
    return {
        "prompts_sha256": digest,
        "num_prompts": len(prompts),
        "controllers": {
            name: {"class": type(c).__name__, "config": c.config.model_dump(mode="json")}
            for name, c in controllers.items()
        },
        "budgets": list(budgets),
        "seeds": list(seeds),
        **dict(extra),
    }


def _records_for_chunk(
    result: OptimizeResult, indices: list[int], name: str, seed: int, budgets: list[int]
) -> list[dict[str, Any]]:
    """One record per (prompt of the chunk, budget), read off the run's first ``k`` samples.

    The best of the first ``k`` samples is the one of lowest cost (the objective); its record holds
    that ``cost``, its ``reward`` as the reward term scored it (the negated cost when the objective
    reports no reward), the fields its rollout describes (response, length, KL estimate), the
    ``tokens`` generated for the first ``k`` samples and the ``seconds`` they took.
    """
    history = result.history
    costs = result.all_costs()
    rewards = result.all_metric("reward") if "reward" in history[0].metrics else -costs
    counts = torch.cat([r.token_counts for r in history], dim=1).cumsum(dim=1)  # type: ignore[misc]
    sizes = [r.costs.shape[1] for r in history]
    ends = torch.tensor(sizes).cumsum(0).tolist()
    records = []
    for k in budgets:
        best = costs[:, :k].argmin(dim=1)  # (B,) index into the run's samples
        last = next(i for i, end in enumerate(ends) if end >= k)
        used_of_last = (k - (ends[last] - sizes[last])) / sizes[last]  # prorate a partly used iteration
        seconds = sum(r.seconds for r in history[:last]) + used_of_last * history[last].seconds
        for b, prompt_index in enumerate(indices):
            j = int(best[b])
            it = next(i for i, end in enumerate(ends) if end > j)
            rollout = history[it].rollout
            assert rollout is not None, "compare runs optimize with keep_rollouts=True"
            record: dict[str, Any] = {
                "prompt_index": prompt_index,
                "controller": name,
                "seed": seed,
                "budget": k,
                "reward": float(rewards[b, j]),
                "cost": float(costs[b, j]),
                **rollout.describe(b, j - (ends[it] - sizes[it])),
                "tokens": int(counts[b, k - 1]),
                "seconds": seconds / len(indices),
            }
            records.append(record)
    return records


def compare(
    prompts: Sequence[Prompt],
    controllers: Mapping[str, Controller],
    make_dynamics: Callable[[list[Prompt]], Dynamics],
    cost: CostFunction,
    *,
    budgets: Sequence[int],
    out_dir: str | Path,
    seeds: Sequence[int] = (0,),
    resume: bool = False,
    overwrite: bool = False,
    prompts_per_batch: int = 8,
    settings: Mapping[str, Any] | None = None,
    baseline: str | None = "best_of_n",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run every controller on every prompt and seed; write records, ``summary.md`` and the plot.

    Args:
        prompts: the prompts (strings or chat messages).
        controllers: name -> controller; ``baseline`` names the one win rates are measured against.
        make_dynamics: builds the dynamics for a list of prompts (e.g. ``lm.with_prompts``).
        cost: the objective, e.g. ``reward.as_cost()`` (plus penalties); records store its ``cost`` and,
            separately, the ``reward`` its reward term scored (the negated cost if it has none).
        budgets: responses scored per prompt at which to read the results.
        out_dir: the run folder (see `RunStore`); ``records.jsonl`` is appended as each chunk ends.
        seeds: run seeds.
        resume: continue an interrupted run with the same settings, redoing nothing.
        overwrite: replace the run ``out_dir`` holds (only a run's own files are deleted).
        prompts_per_batch: prompts optimised together in one batch (does not change results).
        settings: extra JSON-serialisable settings to record (model, reward, dynamics options).
        baseline: controller name for win rates (None: no win rates).
        progress: show a progress bar.

    Returns:
        The summary rows (one per controller and budget), as written to ``summary.md``.
    """
    if not prompts:
        raise ValueError("compare needs at least one prompt")
    if not controllers:
        raise ValueError("compare needs at least one controller")
    if baseline is not None and baseline not in controllers:
        warnings.warn(
            f"no controller is labelled {baseline!r}: the summary has no win rates", UserWarning, stacklevel=2
        )
        baseline = None
    budgets = check_budgets(controllers, budgets)
    store = RunStore(
        out_dir,
        run_settings(prompts, controllers, budgets, seeds, settings or {}),
        resume=resume,
        overwrite=overwrite,
    )
    done = store.done(KEY, per_key=len(budgets))
    store.discard(KEY, store.done(KEY) - done)  # jobs torn mid-write are redone from scratch
    jobs = [
        (start, name, seed)
        for seed in seeds
        for name in controllers
        for start in range(0, len(prompts), prompts_per_batch)
    ]
    bar = tqdm(jobs, desc="compare", disable=not progress, unit="job")
    for start, name, seed in bar:
        chunk = range(start, min(start + prompts_per_batch, len(prompts)))
        indices = [i for i in chunk if (i, name, seed) not in done]
        if not indices:
            continue
        bar.set_postfix_str(f"{name} seed={seed} prompts {indices[0]}..{indices[-1]}")
        result = controllers[name].optimize(
            make_dynamics([prompts[i] for i in indices]),
            cost,
            seed=[seed * SEED_STRIDE + i for i in indices],
            max_samples=budgets[-1],
            keep_rollouts=True,
        )
        store.append(_records_for_chunk(result, indices, name, seed, budgets))
    rows = summarize(store.records, baseline=baseline)
    write_summary(rows, Path(out_dir), store.settings)
    return rows
