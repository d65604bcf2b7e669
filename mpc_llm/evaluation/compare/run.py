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
scored sample. Every record says the ``samples`` and ``tokens`` it spent
(`mpc_llm.evaluation.compare.records`).

Problem ``p`` under run seed ``s`` draws from seed ``s * 1_000_003 + p``, whatever chunk it is in,
so results do not depend on ``prompts_per_batch`` (up to floating-point effects of batch shapes) and
a resumed run equals an uninterrupted one. The same holds for a run grown to more prompts on resume
(the first ones its own, `mpc_llm.evaluation.compare.store.RunStore.check`): only the new prompts'
jobs run, and the records equal a run over all of them from the start.

Many processes (``world``, `mpc_llm.evaluation.compare.distributed`). The jobs still to do are listed by
rank 0 in one order (`pending_jobs`: seed, controller, prompt chunk) and dealt out round robin
(`distributed.assign`); each rank appends its records to its own shard of the run folder, and rank
0 merges the shards into ``records.jsonl`` sorted by prompt, controller, seed and budget once every
rank has finished, then writes the summary. A job's records do not depend on the rank that ran it,
so the merged records equal a one-process run's, whatever the number of processes; a resumed run
reads every shard, so it may run on another number of processes.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from tqdm.auto import tqdm

from mpc_llm.controllers import BASELINE, Planner
from mpc_llm.core import BudgetUnit, CostFunction, Dynamics
from mpc_llm.evaluation.compare.distributed import DistributedError, World, assign
from mpc_llm.evaluation.compare.heldout import score_held_out
from mpc_llm.evaluation.compare.records import add_value_tokens, anytime_records, final_records
from mpc_llm.evaluation.compare.store import RunStore
from mpc_llm.evaluation.summary import amortised_learning, summarize, write_summary
from mpc_llm.lm import Prompt
from mpc_llm.rewards import Reward

SEED_STRIDE = 1_000_003
KEY = ("prompt_index", "controller", "seed")
#: The order of a merged ``records.jsonl``: one record per value.
ORDER = (*KEY, "budget")


class Job(NamedTuple):
    """One run of a controller on a chunk of prompts under one seed: the unit a rank takes."""

    seed: int
    controller: str
    start: int  # the chunk's first prompt
    indices: list[int]  # the chunk's prompts not done yet


def pending_jobs(
    num_prompts: int,
    controllers: Sequence[str],
    seeds: Sequence[int],
    prompts_per_batch: int,
    done: set[tuple[Any, ...]],
) -> list[Job]:
    """The jobs with prompts not ``done`` (keys ``KEY``), in the order seed, controller, chunk.

    Example:
        >>> [tuple(j) for j in pending_jobs(3, ["a"], [0], 2, done={(0, "a", 0)})]
        [(0, 'a', 0, [1]), (0, 'a', 2, [2])]
    """
    jobs = []
    for seed in seeds:
        for name in controllers:
            for start in range(0, num_prompts, prompts_per_batch):
                chunk = range(start, min(start + prompts_per_batch, num_prompts))
                if indices := [i for i in chunk if (i, name, seed) not in done]:
                    jobs.append(Job(seed, name, start, indices))
    return jobs


def check_budgets(
    controllers: Mapping[str, Planner],
    budgets: Sequence[int],
    unit: BudgetUnit = "samples",
    episode: int | None = None,
) -> list[int]:
    """Sorted distinct budgets, refused (with what to change) when a controller cannot spend them
    (`Planner.check_budget`: e.g. one iteration of an adaptive open-loop controller, one planning
    step of a sequential one; ``episode``: the steps of an episode, e.g. ``max_new_tokens``, which
    the sequential ones need: without it their checks wait for the run).
    """
    if unit not in ("samples", "tokens"):
        raise ValueError(f"the budget unit is 'samples' or 'tokens', got {unit!r}")
    if not budgets or any(int(b) < 1 for b in budgets):
        raise ValueError(f"budgets must be positive integers, got {list(budgets)}")
    ordered = sorted({int(b) for b in budgets})
    for name, controller in controllers.items():
        try:
            controller.check_budget(episode, ordered[0], unit)
        except ValueError as err:
            raise ValueError(f"controller {name!r}: {err}") from None
    return ordered


def _prompt_text(prompt: Prompt) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)


def prompts_digest(prompts: Sequence[Prompt]) -> str:
    """The ``prompts_sha256`` a run records: the sha256 of the prompts' texts joined by newlines.

    Example:
        >>> prompts_digest(["a", "b"]) == hashlib.sha256(b"a\\nb").hexdigest()
        True
    """
    return hashlib.sha256("\n".join(_prompt_text(p) for p in prompts).encode()).hexdigest()


def prefix_digests(prompts: Sequence[Prompt]) -> Callable[[int], str]:
    """``n -> prompts_digest(prompts[:n])``: what tells whether a run's prompts are the first of
    ``prompts``, so that ``resume`` may grow it (`RunStore.check`)."""
    return lambda n: prompts_digest(prompts[:n])


def run_settings(
    prompts: Sequence[Prompt],
    controllers: Mapping[str, Planner],
    budgets: Sequence[int],
    seeds: Sequence[int],
    extra: Mapping[str, Any],
    unit: BudgetUnit = "samples",
) -> dict[str, Any]:
    """What identifies a run: resuming requires the same settings (or these over more prompts, the
    first ones the run's: `RunStore.check`)."""
    return {
        "prompts_sha256": prompts_digest(prompts),
        "num_prompts": len(prompts),
        "controllers": {name: c.spec() for name, c in controllers.items()},
        "budgets": list(budgets),
        "budget_unit": unit,
        "seeds": list(seeds),
        **dict(extra),
    }


def comparison_settings(
    prompts: Sequence[Prompt],
    controllers: Mapping[str, Planner],
    budgets: Sequence[int],
    seeds: Sequence[int],
    settings: Mapping[str, Any] | None = None,
    eval_labels: Sequence[str] = (),
    unit: BudgetUnit = "samples",
    baseline_budgets: Sequence[int] = (),
) -> dict[str, Any]:
    """The settings `compare` records in ``settings.json`` for these arguments (``eval_labels``: the
    held-out rewards' labels; ``baseline_budgets``: the baseline's extra budgets), so that a caller
    can check a run folder (`check_run_folder`) before any model loads."""
    extra = {**(settings or {}), **({"eval_rewards": list(eval_labels)} if eval_labels else {})}
    if baseline_budgets:  # only when given: earlier runs' settings stay the same
        extra["baseline_budgets"] = sorted({int(b) for b in baseline_budgets})
    return run_settings(prompts, controllers, sorted({int(b) for b in budgets}), seeds, extra, unit)


def check_run_folder(
    out_dir: str | Path,
    settings: Mapping[str, Any],
    *,
    resume: bool = False,
    overwrite: bool = False,
    prompts: Sequence[Prompt] | None = None,
) -> None:
    """Refuse a run folder `compare` would refuse (`RunStore.check`), writing and deleting nothing.

    ``prompts``: the run's prompts (those ``settings`` were made of), which let ``resume`` grow a run
    of fewer prompts, the first of these, as `compare` does. Without them such a run is refused.
    """
    digests = None if prompts is None else prefix_digests(prompts)
    RunStore.check(out_dir, settings, resume=resume, overwrite=overwrite, prefix_digest=digests)


def check_seeds(seeds: Sequence[int]) -> list[int]:
    """The run seeds, refused when empty or repeated (a repeated seed repeats its records)."""
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("compare needs at least one seed")
    if repeated := sorted({s for s in seeds if seeds.count(s) > 1}):
        raise ValueError(
            f"seed {repeated[0]} is given twice (--seeds {','.join(map(str, seeds))}): a repeated seed "
            "writes the same records twice; give distinct seeds"
        )
    return seeds


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
    baseline: str | None = BASELINE,
    progress: bool = True,
    world: World | None = None,
    eval_rewards: Mapping[str, Reward] | None = None,
    closeness: bool = True,
    origins: Sequence[Mapping[str, Any]] | None = None,
    baseline_budgets: Sequence[int] = (),
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
        resume: continue an interrupted run with the same settings, redoing nothing; or grow a run
            (finished or not) to more prompts when its prompts are the first of ``prompts``: only the
            new prompts' jobs (and any unfinished ones) run, and ``settings.json`` is rewritten.
        overwrite: replace the run ``out_dir`` holds (only a run's own files are deleted).
        prompts_per_batch: prompts optimised together in one batch (does not change results).
        settings: extra JSON-serialisable settings to record (model, reward, dynamics options).
        baseline: controller name for win rates (None: no win rates).
        progress: show a progress bar (rank 0's only, on many processes).
        world: this process's rank among many (`mpc_llm.evaluation.compare.distributed.launch`): the jobs
            are shared out, each rank appends to its own shard, rank 0 merges the shards and writes
            the summary once every rank has finished. None: this process does every job.
        eval_rewards: held-out rewards, ``label -> Reward``, scored on every returned response and
            never given to the controllers (records' ``eval``; `mpc_llm.evaluation.compare.heldout`).
        closeness: score each returned response's closeness to the base model (one teacher-forced
            pass over the returned responses; `mpc_llm.evaluation.compare.closeness`).
        origins: where each prompt came from (`mpc_llm.evaluation.prompts.PromptSet.origins`, e.g.
            ``prompt_source``, ``prompt_split``, ``prompt_id``), copied into each of its records.
        baseline_budgets: more budgets at which to read the ``baseline`` alone (e.g. ``1, 2, 4, ...,
            256``): its whole reward-closeness curve, the reference of the summary's verdicts
            (`mpc_llm.evaluation.summary.curve`). The baseline must be open loop (``anytime``): one
            run to the largest budget is read at every budget, with common random numbers.

    Returns:
        The summary rows (one per controller and budget), as written to ``summary.md`` (on every rank).
    """
    if not prompts:
        raise ValueError("compare needs at least one prompt")
    if not controllers:
        raise ValueError("compare needs at least one controller")
    seeds = check_seeds(seeds)
    if prompts_per_batch < 1:
        raise ValueError(f"--prompts-per-batch must be at least 1, got {prompts_per_batch}")
    if origins is not None and len(origins) != len(prompts):
        raise ValueError(f"{len(origins)} origins for {len(prompts)} prompts; give one per prompt")
    episode = make_dynamics([prompts[0]]).horizon
    curve = check_baseline_budgets(controllers, baseline, baseline_budgets, budget_unit, episode)
    if baseline is not None and baseline not in controllers:
        warnings.warn(
            f"no controller is labelled {baseline!r}: the summary has no win rates", UserWarning, stacklevel=2
        )
        baseline = None
    settings = comparison_settings(
        prompts, controllers, budgets, seeds, settings, list(eval_rewards or {}), budget_unit, curve
    )
    if world is not None:  # first: ranks given different settings stop here, every one of them
        world.check_same(settings)
    budgets = check_budgets(controllers, budgets, budget_unit, episode)
    budgets_of = {name: sorted({*budgets, *(curve if name == baseline else [])}) for name in controllers}
    for controller in controllers.values():
        controller.check(episode, cost)
    shard = None if world is None else world.rank

    def open_run() -> tuple[RunStore, list[Job]]:
        """The store (settings checked or written, torn jobs dropped) and the jobs left to do."""
        # one process writes nothing until its first records: a run that fails before leaves the folder
        # as it was; rank 0 of many writes settings.json at once, for the others to join
        store = RunStore(
            out_dir, settings, resume=resume, overwrite=overwrite, shard=shard, lazy=world is None,
            prefix_digest=prefix_digests(prompts),
        )  # fmt: skip
        done = _done(store, budgets_of)
        store.discard(KEY, store.done(KEY) - done)  # jobs torn mid-write are redone from scratch
        return store, pending_jobs(len(prompts), list(controllers), seeds, prompts_per_batch, done)

    if world is None:
        store, jobs = open_run()
        mine = jobs
    else:  # rank 0 opens the folder while the others wait; then each joins and takes its share
        opened = world.on_main(open_run)
        jobs = world.broadcast(opened[1] if opened is not None else None)
        store = opened[0] if opened is not None else RunStore(out_dir, settings, shard=shard, join=True)
        mine = assign(jobs, world.rank, world.size)
    label = "compare" if world is None else f"compare (rank {world.rank} of {world.size})"
    quiet = not progress or (world is not None and not world.is_main)
    bar = tqdm(mine, desc=label, disable=quiet, unit="job")
    for job in bar:
        bar.set_postfix_str(f"{job.controller} seed={job.seed} prompts {job.indices[0]}..{job.indices[-1]}")
        dynamics = make_dynamics([prompts[i] for i in job.indices])
        records = _run_job(
            controllers[job.controller], dynamics, cost, job.indices, job.controller, job.seed,
            budgets_of[job.controller], budget_unit, closeness,
        )  # fmt: skip
        score_held_out(records, {i: prompts[i] for i in job.indices}, eval_rewards or {})
        if origins is not None:
            for record in records:
                record.update(origins[record["prompt_index"]])
        if dynamics.model_dtype is not None:  # the dtype that ran (bfloat16 where "auto" chose it)
            for record in records:
                record["dtype"] = str(dynamics.model_dtype).removeprefix("torch.")
        store.append(records)

    def finish() -> list[dict[str, Any]]:
        """Merge the shards (if any), check that every job is there, write the summary."""
        if world is not None or store.has_shards():
            store.merge(ORDER)
        missing = pending_jobs(len(prompts), list(controllers), seeds, prompts_per_batch,
                               _done(store, budgets_of))  # fmt: skip
        if missing:
            raise DistributedError(
                f"{len(missing)} jobs of {out_dir} have no records (a rank stopped early?); "
                "run the same command with resume (--resume) to finish them"
            )
        names = list(controllers)  # rows in the controllers' order, however the records are sorted
        ordered = sorted(store.records, key=lambda r: names.index(r["controller"]))
        rows = summarize(ordered, baseline=baseline, learning=amortised_learning(store.settings))
        write_summary(rows, Path(out_dir), store.settings, baseline)
        return rows

    if world is None:
        return finish()
    try:
        world.barrier()  # every rank has written its share
    except RuntimeError as err:
        raise DistributedError(
            f"rank {world.rank}: another rank stopped before finishing its jobs; the records written are "
            "kept: run the same command with resume (--resume) to finish the run"
        ) from err
    return world.broadcast(world.on_main(finish))


def _done(store: RunStore, budgets_of: Mapping[str, Sequence[int]]) -> set[tuple[Any, ...]]:
    """The jobs' keys (``KEY``) with a record at each of their controller's budgets."""
    counts = Counter(tuple(r[f] for f in KEY) for r in store.records)
    return {key for key, count in counts.items() if count >= len(budgets_of.get(key[1], ()))}


def check_baseline_budgets(
    controllers: Mapping[str, Planner],
    baseline: str | None,
    baseline_budgets: Sequence[int],
    unit: BudgetUnit = "samples",
    episode: int | None = None,
) -> list[int]:
    """The sorted extra budgets of the baseline's curve, refused when there is no open-loop baseline
    to read them off, or when the baseline cannot spend one (`check_budgets`: not a positive
    integer, less than one iteration of an adaptive baseline, ...)."""
    if not baseline_budgets:
        return []
    if baseline is None or baseline not in controllers:
        raise ValueError(
            f"--baseline-budgets reads the baseline's curve, but no controller is labelled {baseline!r}; "
            f"add it to the controllers or name another with --baseline"
        )
    if not controllers[baseline].anytime:
        raise ValueError(
            f"--baseline-budgets reads {baseline!r} at many budgets off one run, which needs an open-loop "
            "(anytime) controller such as best_of_n; give the budgets with --budgets instead"
        )
    try:
        return check_budgets({baseline: controllers[baseline]}, baseline_budgets, unit, episode)
    except ValueError as err:
        raise ValueError(f"--baseline-budgets: {err}") from None


def _run_job(
    controller: Planner,
    dynamics: Dynamics,
    cost: CostFunction,
    indices: list[int],
    name: str,
    seed: int,
    budgets: list[int],
    unit: BudgetUnit,
    closeness: bool = True,
) -> list[dict[str, Any]]:
    """The records of one (prompt chunk, controller, seed) at every budget."""
    scorer = dynamics if closeness else None
    context = dynamics.context_tokens()
    value, model = controller.value_params(), dynamics.model_params
    ratio = value / model if value is not None and model else None  # a value forward per model token
    seeds = [seed * SEED_STRIDE + i for i in indices]
    if controller.anytime:  # open loop: one run, read at every budget
        limit = {"max_samples": budgets[-1]} if unit == "samples" else {"max_tokens": budgets[-1]}
        result = controller.optimize(dynamics, cost, seed=seeds, keep_rollouts=True, **limit)
        return add_value_tokens(
            anytime_records(result, indices, name, seed, budgets, unit, scorer, controller, context), ratio
        )
    records = []
    for k in budgets:  # sequential: one run per budget
        limit = {"max_samples": k} if unit == "samples" else {"max_tokens": k}
        result = controller.optimize(dynamics, cost, seed=seeds, **limit)
        records.extend(final_records(result, indices, name, seed, k, scorer, context))
    return add_value_tokens(records, ratio)
