"""Sequential (closed-loop) controllers: the base class that owns the episode loop.

A sequential controller drives a system step by step through the closed-loop hooks of
`mpc_llm.core.Dynamics` (``advance``, ``finished``, ``select``). The loop is the same for all of
them and lives here, in `SequentialController.optimize`:

    rows = begin()                               # one row per problem, or several (branches)
    while rows are left:
        step = step(system, episode)             # the controller's one step: what to commit
        system = system.advance(step.chosen, step.commit)
        rows that finished -> kept, with their carry
        keep = keep(...)                         # default: the unfinished rows
        system, rows, carry = their selection    # repeats allowed (resampling)
    answer = answer(finished rows)               # default: each problem's best finished row

A new sequential controller implements `SequentialController.step` (and `begin` when it starts
with several rows per problem or carries a state between steps, `keep` when it drops or resamples
rows, `answer` when the answer is not the best finished row, e.g. a draw from a weighted
population). The loop keeps the accounting: samples scored and tokens generated per problem, the
finished rows, and the `OptimizeResult`.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, NamedTuple, TypeVar

import torch
from torch import Tensor

from mpc_llm.controllers.planner import C, Planner
from mpc_llm.controllers.state import PlannerState
from mpc_llm.core import (
    Budget,
    CostFunction,
    Dynamics,
    IterationRecord,
    OptimizeResult,
    Population,
    Rollout,
    make_generators,
)
from mpc_llm.core.rollout import stack_problems

#: What a controller carries from one step to the next, one entry per row (None: nothing).
S = TypeVar("S")


@dataclass(frozen=True)
class Episode(Generic[S]):
    """Where an episode stands before a step: what a step may read.

    Attributes:
        owners: the problem of each row of the system (rows of one problem are its branches).
        carry: the controller's own state for the rows (`SequentialController.begin`, then each
            step's ``carry``), already selected to the rows that go on.
        samples: scored samples so far, per problem (``B``).
        tokens: tokens generated so far, per problem (``B``).
        steps: steps taken so far (0 at the first).
        length: the episode's length in steps (the dynamics' horizon when the run started).
        seed: the run's seed(s), for controllers that draw fresh noise at the first step.
        max_samples / max_tokens: the run's budget per problem (None: unbounded in that unit).
        callback / keep_rollouts: passed on to inner controllers.
    """

    owners: tuple[int, ...]
    carry: S
    samples: tuple[int, ...]
    tokens: tuple[int, ...]
    steps: int = 0
    length: int = 0
    seed: int | Sequence[int] | None = None
    max_samples: int | None = None
    max_tokens: int | None = None
    callback: Callable[[IterationRecord], None] | None = None
    keep_rollouts: bool = False


@dataclass(frozen=True)
class Start:
    """What a run starts from, for `SequentialController.begin`.

    Attributes:
        seed: the run's seed(s): one for all problems, or one per problem.
        max_samples / max_tokens: the run's budget per problem (None: unbounded in that unit).
        state: a plan to start from, for controllers that take one (receding horizon).
    """

    seed: int | Sequence[int] | None = None
    max_samples: int | None = None
    max_tokens: int | None = None
    state: PlannerState | None = None

    def streams(self, dynamics: Dynamics) -> list[torch.Generator]:
        """One random stream per problem of ``dynamics``, from ``seed`` (0 when None)."""
        return make_generators(0 if self.seed is None else self.seed, dynamics.batch_size, dynamics.device)


@dataclass(frozen=True)
class Step(Generic[S]):
    """What one step decided for each of the ``R`` rows of the system.

    Attributes:
        chosen: ``(R, 1)`` the rollout whose first ``commit`` steps are committed, per row.
        commit: steps committed: one count for every row (``1 <= commit <= system.horizon``) or one
            per row (``commit[i] >= 0``; systems that take per-row counts in `Dynamics.advance`).
        costs: ``(R,)`` float64 cost of each chosen rollout (the answer's cost if the row finishes).
        metrics: what the cost function scored for each chosen rollout, each ``(R,)``.
        samples: ``R`` counts of samples scored in this step.
        tokens: ``R`` counts of tokens generated in this step.
        carry: the controller's state for the next step, for these ``R`` rows (the loop selects it).
        history: iteration records of inner controllers, if any.
        compute: other work of this step per row, by name (``value_evals``, ``grad_steps``), each
            ``R`` counts; the loop sums them per problem (`Budget.compute_per_problem`).
    """

    chosen: Rollout
    commit: int | Sequence[int]
    costs: Tensor
    metrics: dict[str, Tensor]
    samples: Sequence[int]
    tokens: Sequence[int]
    carry: Any = None
    history: Sequence[IterationRecord] = field(default_factory=tuple)
    compute: Mapping[str, Sequence[float]] = field(default_factory=dict)


class Final(NamedTuple):
    """A finished row: its cost, its trajectory (``B = N = 1``), its metrics and, for `answer`, the
    step's carry and the row's index in it (``select_rows(carry, [row])`` is the row's own)."""

    cost: float
    rollout: Rollout
    metrics: dict[str, float]
    carry: Any = None
    row: int = 0


def select_rows(carry: Any, index: Sequence[int]) -> Any:
    """``carry`` for rows ``index`` (repeats allowed): None stays None, a list or tuple is indexed,
    anything else must offer ``select(index)`` (e.g. a `PlannerState`)."""
    if carry is None:
        return None
    if isinstance(carry, list | tuple):
        return [carry[i] for i in index]
    return carry.select(index)


class SequentialController(Planner[C], Generic[C, S]):
    """Base class of closed-loop controllers: implement `step` (and `begin`, `keep` if needed).

    Their answer at a budget needs a run at that budget (``anytime = False``): a comparison runs
    them once per budget.
    """

    anytime: ClassVar[bool] = False

    # ----------------------------------------------------------------- to implement
    def begin(self, dynamics: Dynamics, start: Start) -> tuple[list[int], S]:
        """The owner problem of each starting row and the carry of the first step (``start``: the
        run's seed, budget and a plan to start from). Default: one row per problem, no carry."""
        return list(range(dynamics.batch_size)), None  # type: ignore[return-value]

    @abstractmethod
    def step(self, system: Dynamics, cost: CostFunction, episode: Episode[S]) -> Step[S]:
        """Decide what each row of ``system`` commits next (``system``'s ``B`` is the rows)."""

    def keep(self, episode: Episode[S], step: Step[S], done: list[bool]) -> list[int] | tuple[list[int], S]:
        """The rows that go on, in order (repeats allowed: resampling), or the rows and their carry
        when resampling changes it (SMC resets the weights of the rows it resampled; otherwise the
        loop selects ``step.carry`` to match). Default: the unfinished ones."""
        return [i for i, d in enumerate(done) if not d]

    def answer(self, finished: Sequence[Sequence[Final]]) -> tuple[list[Final], Population | None]:
        """Each problem's answer among its finished rows (``finished[b]``, in the order they
        finished), and the weighted population it was drawn from (samplers; None otherwise).
        Default: the lowest cost, the first on ties."""
        return [min(rows, key=lambda f: f.cost) for rows in finished], None

    # ----------------------------------------------------------------- the loop
    def optimize(
        self,
        dynamics: Dynamics,
        cost: CostFunction,
        *,
        seed: int | Sequence[int] | None = None,
        max_samples: int | None = None,
        max_tokens: int | None = None,
        state: PlannerState | None = None,
        callback: Callable[[IterationRecord], None] | None = None,
        keep_rollouts: bool = False,
    ) -> OptimizeResult:
        """Run every problem's episode in closed loop and return its answer.

        Returns:
            An `OptimizeResult` whose ``best_rollout`` is each problem's whole trajectory (``N = 1``;
            for a language model, the committed response; with several rows per problem, the best
            finished one), ``best_cost`` / ``best_metrics`` its cost and metrics, ``history`` the
            inner iterations (if any), and ``budget`` the samples and tokens per problem.
        """
        self.check(dynamics.horizon, cost)
        if max_samples is not None and max_tokens is not None:
            raise ValueError("give max_samples or max_tokens, not both")
        start, B = time.perf_counter(), dynamics.batch_size
        owners, carry = self.begin(dynamics, Start(seed, max_samples, max_tokens, state))
        system = dynamics if owners == list(range(B)) else dynamics.select(owners)
        finals: dict[int, list[Final]] = {}
        samples, tokens = [0] * B, [0] * B
        compute: dict[str, list[float]] = {"rereads": [0.0] * B}
        history: list[IterationRecord] = []
        last: Step[S] | None = None
        steps = 0
        while owners:
            episode = Episode(
                owners=tuple(owners), carry=carry, samples=tuple(samples), tokens=tuple(tokens), steps=steps,
                length=dynamics.horizon, seed=seed, max_samples=max_samples, max_tokens=max_tokens,
                callback=callback, keep_rollouts=keep_rollouts,
            )  # fmt: skip
            last = self.step(system, cost, episode)
            steps += 1
            history.extend(last.history)
            for i, b in enumerate(owners):
                samples[b] += int(last.samples[i])
                tokens[b] += int(last.tokens[i])
                for name, counts in last.compute.items():
                    compute.setdefault(name, [0.0] * B)[b] += float(counts[i])
            system = system.advance(last.chosen, last.commit)
            done = system.finished().tolist()
            for i, b in enumerate(owners):
                if done[i]:
                    finals.setdefault(b, []).append(
                        Final(
                            float(last.costs[i]),
                            last.chosen.problems([i]),
                            {k: float(v[i]) for k, v in last.metrics.items()},
                            last.carry,
                            i,
                        )
                    )
            kept = self.keep(episode, last, done)
            keep, carry = kept if isinstance(kept, tuple) else (kept, None)
            if not keep:
                break
            for i in keep:  # a row that goes on reads its committed tokens again (its cache grows)
                compute["rereads"][owners[i]] += (
                    last.commit if isinstance(last.commit, int) else last.commit[i]
                )
            system, owners = system.select(keep), [owners[i] for i in keep]
            carry = select_rows(last.carry, keep) if not isinstance(kept, tuple) else carry
        missing = [b for b in range(B) if b not in finals]
        if missing:
            raise RuntimeError(f"{type(self).__name__}: the episodes of problems {missing} never finished")
        answers, population = self.answer([finals[b] for b in range(B)])
        return episode_result(
            answers, samples, tokens, time.perf_counter() - start, history=history,
            state=None if last is None else last.carry, population=population, compute=compute,
        )  # fmt: skip


def require_partial(cost: Any, what: str, instead: str = "") -> None:
    """Refuse a cost that cannot score partial trajectories (unfinished text), which ``what`` needs.

    Args:
        cost: a cost function, or any object with ``accepts_partial`` (e.g. a reward class); None
            passes.
        what: the method and why it scores partial text, for the message.
        instead: what the user may do instead, for the message (e.g. "use score='to_end'").
    """
    if cost is not None and not cost.accepts_partial:
        alternative = f"{instead}, or " if instead else ""
        raise ValueError(
            f"{what}, but the cost {cost!r} cannot score partial text (a reward model or judge); "
            f"{alternative}set reward.accepts_partial = True if you know it can"
        )


def episode_result(
    finals: Sequence[Final],
    samples: Sequence[int],
    tokens: Sequence[int],
    seconds: float,
    *,
    history: Sequence[IterationRecord] = (),
    state: object = None,
    population: Population | None = None,
    compute: Mapping[str, Sequence[float]] | None = None,
) -> OptimizeResult:
    """The `OptimizeResult` of ``B`` finished episodes (``finals`` in problem order; ``compute``:
    other work per problem, `Budget.compute_per_problem`)."""
    best = stack_problems([f.rollout for f in finals])
    return OptimizeResult(
        best_rollout=best,
        best_cost=torch.tensor([f.cost for f in finals], dtype=torch.float64),
        best_controls=best.controls[:, 0],
        history=list(history),
        budget=Budget(
            samples=max(samples),
            iterations=len(history),
            seconds=seconds,
            tokens=sum(tokens),
            samples_per_problem=tuple(samples),
            tokens_per_problem=tuple(tokens),
            compute_per_problem={k: tuple(float(x) for x in v) for k, v in (compute or {}).items()},
        ),
        state=state,
        best_metrics={
            k: torch.tensor([f.metrics[k] for f in finals], dtype=torch.float64) for k in finals[0].metrics
        },
        population=population,
    )
