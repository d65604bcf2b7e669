"""Compare controllers at equal budgets: scored responses (``samples``) or generated ``tokens``.

Budget accounting. An open-loop controller (``anytime``: AISP, CEM, random shooting, best-of-N)
runs once per (prompt chunk, controller, seed) up to the largest budget; the record for budget
``k`` is read off the anytime curve: the best of the first ``k`` samples (or of the first samples
whose tokens fit in ``k``). For a non-adaptive controller that is distributed exactly as a
budget-``k`` run's answer (not bit for bit: a run with another ``N`` uses the random stream
differently); for an adaptive one it is the state of the run after ``k`` samples, which is why
every sample budget must be at least one iteration (``num_samples``) of each adaptive controller.
A sequential controller (receding horizon, blockwise best-of-N) runs once per budget, the budget
split over its planning steps; a partial response scored to choose among candidates counts as a
scored sample. Every record says the ``samples`` and ``tokens`` it spent (`mpc_llm.evaluation.records`).

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

from tqdm.auto import tqdm

from mpc_llm.controllers import Controller, SequentialController
from mpc_llm.core import CostFunction, Dynamics
from mpc_llm.evaluation.records import BudgetUnit, anytime_records, final_records
from mpc_llm.evaluation.store import RunStore
from mpc_llm.evaluation.summary import summarize, write_summary
from mpc_llm.lm import Prompt

#: An open-loop controller or a sequential one: anything with ``optimize`` that compare can run.
Planner = Controller | SequentialController

SEED_STRIDE = 1_000_003
KEY = ("prompt_index", "controller", "seed")


def check_budgets(
    controllers: Mapping[str, Planner],
    budgets: Sequence[int],
    unit: BudgetUnit = "samples",
    episode: int | None = None,
) -> list[int]:
    """Sorted distinct budgets, refused (with what to change) when a controller cannot spend them.

    In samples, each budget must be at least one iteration of every adaptive open-loop controller
    and one planning step of every sequential one (``episode``: the steps of an episode, e.g.
    ``max_new_tokens``, needed for the latter).
    """
    if unit not in ("samples", "tokens"):
        raise ValueError(f"the budget unit is 'samples' or 'tokens', got {unit!r}")
    if not budgets or any(int(b) < 1 for b in budgets):
        raise ValueError(f"budgets must be positive integers, got {list(budgets)}")
    ordered = sorted({int(b) for b in budgets})
    if unit == "tokens":
        return ordered
    for name, controller in controllers.items():
        if not isinstance(controller, Controller):  # sequential: one planning step / one schedule
            if episode is not None:
                try:
                    controller.check_budget(episode, ordered[0])
                except ValueError as err:
                    raise ValueError(f"controller {name!r}: {err}") from None
            continue
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
    controllers: Mapping[str, Planner],
    budgets: Sequence[int],
    seeds: Sequence[int],
    extra: Mapping[str, Any],
    unit: BudgetUnit = "samples",
) -> dict[str, Any]:
    """What identifies a run: resuming requires the same settings."""
    digest = hashlib.sha256("\n".join(_prompt_text(p) for p in prompts).encode()).hexdigest()
    return {
        "prompts_sha256": digest,
        "num_prompts": len(prompts),
        "controllers": {name: c.spec() for name, c in controllers.items()},
        "budgets": list(budgets),
        "budget_unit": unit,
        "seeds": list(seeds),
        **dict(extra),
    }


def compare(
    prompts: Sequence[Prompt],
    controllers: Mapping[str, Planner],
    make_dynamics: Callable[[list[Prompt]], Dynamics],
    cost: CostFunction,
    *,
    budgets: Sequence[int],
    budget_unit: BudgetUnit = "samples",
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
        budgets: budgets per prompt at which to read the results, in ``budget_unit``.
        budget_unit: ``"samples"`` (responses scored, partial ones included) or ``"tokens"``
            (tokens generated).
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
    episode = make_dynamics([prompts[0]]).horizon
    budgets = check_budgets(controllers, budgets, budget_unit, episode)
    for controller in controllers.values():
        if not isinstance(controller, Controller):
            controller.check(episode, cost)
    store = RunStore(
        out_dir,
        run_settings(prompts, controllers, budgets, seeds, settings or {}, budget_unit),
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
        dynamics = make_dynamics([prompts[i] for i in indices])
        store.append(_run_job(controllers[name], dynamics, cost, indices, name, seed, budgets, budget_unit))
    rows = summarize(store.records, baseline=baseline)
    write_summary(rows, Path(out_dir), store.settings)
    return rows


def _run_job(
    controller: Planner,
    dynamics: Dynamics,
    cost: CostFunction,
    indices: list[int],
    name: str,
    seed: int,
    budgets: list[int],
    unit: BudgetUnit,
) -> list[dict[str, Any]]:
    """The records of one (prompt chunk, controller, seed) at every budget."""
    seeds = [seed * SEED_STRIDE + i for i in indices]
    if controller.anytime:  # open loop: one run, read at every budget
        limit = {"max_samples": budgets[-1]} if unit == "samples" else {"max_tokens": budgets[-1]}
        assert isinstance(controller, Controller), "anytime controllers are Controller subclasses"
        result = controller.optimize(dynamics, cost, seed=seeds, keep_rollouts=True, **limit)
        return anytime_records(result, indices, name, seed, budgets, unit)
    records = []
    for k in budgets:  # sequential: one run per budget
        limit = {"max_samples": k} if unit == "samples" else {"max_tokens": k}
        result = controller.optimize(dynamics, cost, seed=seeds, **limit)
        records.extend(final_records(result, indices, name, seed, k))
    return records
