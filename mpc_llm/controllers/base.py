"""The open-loop controller template: ``sample -> rollout -> cost -> update``, with explicit state.

A new controller is a config (a pydantic model) and two methods:

- ``sample(state, num_samples, generators) -> (B, N, K, d)`` knots to try;
- ``update(state, knots, costs) -> state`` the next state (a controller that does not implement
  it never adapts, like random shooting and best-of-N).

The base class owns the loop, the budget, the best-so-far bookkeeping (`BestSoFar`, kept by the
loop, not in the state), invalid costs, and the expansion of ``K`` knots to ``(tau, d)`` controls
(`ZeroOrderHold`). Gaussian controllers (AISP, CEM, random shooting, best-of-N) build on
`mpc_llm.controllers.gaussian.GaussianController`, which adds the proposal ``N(U, sigma^2 I)``.
It knows only `mpc_llm.core`.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import torch
from torch import Tensor

from mpc_llm.controllers.planner import Planner
from mpc_llm.controllers.state import ControllerConfig, PlannerState, SettingError
from mpc_llm.core import (
    Budget,
    BudgetUnit,
    CostFunction,
    Dynamics,
    IterationRecord,
    Metrics,
    OptimizeResult,
    Policy,
    Rollout,
    ZeroOrderHold,
    draw_seeds,
    make_generators,
)

C = TypeVar("C", bound=ControllerConfig)
S = TypeVar("S", bound=PlannerState)


@dataclass(frozen=True)
class BestSoFar:
    """The best sample of each problem seen so far in one `Controller.optimize` call.

    Attributes:
        cost: ``(B,)`` its cost.
        controls: ``(B, tau, d)`` its controls.
        rollout: the samples, one per problem (``N = 1``).
        metrics: what the cost function scored for it, each ``(B,)``.
    """

    cost: Tensor
    controls: Tensor
    rollout: Rollout
    metrics: Mapping[str, Tensor]

    @classmethod
    def of(cls, rollout: Rollout, controls: Tensor, costs: Tensor, metrics: Metrics) -> BestSoFar:
        """The lowest-cost sample of each problem among ``(B, N)`` ``costs``."""
        cost, idx = costs.min(dim=1)
        chosen = controls[torch.arange(controls.shape[0], device=controls.device), idx.to(controls.device)]
        picked = {k: v.gather(1, idx.to(v.device).unsqueeze(1)).squeeze(1) for k, v in metrics.items()}
        return cls(cost, chosen, rollout.take(idx.unsqueeze(1)), picked)

    def merge(self, other: BestSoFar) -> BestSoFar:
        """Per problem, ``other`` where its cost is strictly lower, else this one (ties keep the first)."""
        improved = other.cost < self.cost
        pick = improved.long().unsqueeze(1)
        mask = improved.to(other.controls.device).view(-1, 1, 1)
        return BestSoFar(
            cost=torch.where(improved, other.cost, self.cost),
            controls=torch.where(mask, other.controls, self.controls),
            rollout=type(other.rollout).cat([self.rollout, other.rollout]).take(pick),
            metrics={
                k: torch.where(improved.to(v.device), v, self.metrics.get(k, v))
                for k, v in other.metrics.items()
            },
        )


class Controller(Planner[C], Generic[C, S]):
    """Base class of open-loop sampling-based controllers.

    Subclasses set ``config_class`` and implement `init_state`, `sample` and, if they adapt,
    `update`; Gaussian ones subclass `mpc_llm.controllers.GaussianController`, which implements
    `init_state`.

    Example:
        >>> from mpc_llm.controllers import AISP
        >>> from mpc_llm.dynamics import PointMass, GoalCost
        >>> system = PointMass(horizon=20)
        >>> result = AISP(sigma=1.0, lambda_=1.0, num_samples=64).optimize(
        ...     system, GoalCost(goal=[1.0, 1.0]), seed=0, num_iterations=10)
        >>> bool(result.best_cost < result.history[0].costs.mean())
        True
    """

    config_class: ClassVar[type[ControllerConfig]] = ControllerConfig
    anytime: ClassVar[bool] = True
    open_loop: ClassVar[bool] = True
    #: Whether the proposal changes between iterations: true exactly when the class implements
    #: `update`. A non-adaptive controller's iterations are independent batches, so the best of the
    #: first ``k`` samples of a run is distributed as a budget-``k`` run's answer.
    adaptive: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls.adaptive = cls.update is not Controller.update

    # ----------------------------------------------------------------- to implement
    @abstractmethod
    def init_state(self, dynamics: Dynamics, mean: Tensor | None = None) -> S:
        """The state a run starts from on ``dynamics``' ``B`` problems (``mean``: an initial plan)."""

    @abstractmethod
    def sample(self, state: S, num_samples: int, generators: Sequence[torch.Generator]) -> Tensor | Policy:
        """Draw ``(B, num_samples, K, d)`` knots; draw for problem ``b`` only from ``generators[b]``.

        A feedback controller returns a `mpc_llm.core.Policy` instead: the loop then rolls out
        ``num_samples`` samples under it (`Dynamics.rollout_feedback`), and the controls it keeps and
        reports are those the dynamics applied, ``(B, N, horizon, d)``.
        """

    def update(self, state: S, knots: Tensor, costs: Tensor) -> S:
        """Return the state after seeing ``(B, N, K, d)`` knots and their ``(B, N)`` costs.

        Invalid costs arrive as ``+inf``. The base class advances ``iteration``. The default keeps
        the proposal unchanged (a non-adaptive controller).
        """
        return state

    def resolved_settings(self, state: S) -> dict[str, Tensor]:
        """Per-problem settings resolved when a run starts, each ``(B,)`` (`OptimizeResult.settings`)."""
        return {}

    def final_mean(self, state: S) -> Tensor | None:
        """The ``(B, K, d)`` control mean a result reports (None: this controller has none)."""
        return None

    def log_ratio(self, state: S, knots: Tensor) -> Tensor | None:
        """``(B, N)`` ``log p(V) - log q(V | state)`` of the knots just drawn, kept in each iteration's
        record (``IterationRecord.log_ratio``) for samplers that weight by it; None (default): not
        reported."""
        return None

    def choose(
        self, costs: Tensor, log_ratio: Tensor | None, generators: Sequence[torch.Generator]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The answer among ``(B, k)`` scored samples (``+inf``: invalid), as a comparison reads a run
        at budget ``k`` (`mpc_llm.evaluation.compare.records.anytime_records`).

        Args:
            costs: ``(B, k)`` float64 costs of the first ``k`` samples, in draw order.
            log_ratio: ``(B, k)`` their ``log p / q`` (`log_ratio`), or None.
            generators: one per problem, for controllers whose answer is a random draw (samplers).

        Returns:
            ``(B,)`` the index chosen, and figures to record, each ``(B,)`` (samplers: ``beta``,
            ``log_z``, ``kl_tilted``, ``ess``). Default: the lowest cost (the first on ties), no figures.
        """
        return costs.argmin(dim=1), {}

    @property
    def iterations(self) -> int | None:
        """``num_iterations``: the rounds a run makes when no budget bounds it."""
        return self.config.num_iterations

    @property
    def samples_per_round(self) -> int | None:
        """``num_samples``: the samples one iteration scores."""
        return self.config.num_samples

    # ----------------------------------------------------------------- checks
    def check_system(self, system: Any) -> None:
        """Refuse a ``sigma`` or ``sigma_relative`` too large for the system's numbers: a control of
        ``system.control_dim`` coordinates drawn with it, pushed through a language model's head,
        would not stay finite in its dtype, and the decode would fail deep inside the model.
        ``system.largest_sigma`` is the bound (`mpc_llm.lm.facts.largest_sigma`; a system without
        one is not checked).

        Raises:
            SettingError: naming the setting, its flag, the dtype and the largest value it allows.
        """
        limit = getattr(system, "largest_sigma", None)
        if limit is None:
            return
        for key, flag in (("sigma", "--sigma"), ("sigma_relative", "--sigma-relative")):
            value = getattr(self.config, key, None)
            if isinstance(value, int | float) and not value <= limit:
                d = getattr(system, "control_dim", None)
                over = f" over d={d} coordinates" if d else ""
                dtype = str(getattr(system, "dtype", "float32")).removeprefix("torch.")
                raise SettingError(
                    f"{key}={value:g} ({flag}) is too large for the model's dtype {dtype}: controls drawn "
                    f"with it{over} would not stay finite (at most {limit:.3g}); give a much smaller {key}"
                    + (" (a fraction of the pre-logit RMS, e.g. 0.05)" if key == "sigma_relative" else "")
                )

    def check(self, episode: int, cost: Any = None, *, episode_name: str = "the episode length") -> None:
        """``tau <= episode`` and ``num_knots <= tau``, before any model work."""
        tau, knots = self.config.tau, self.config.num_knots
        if tau is not None and tau > episode:
            raise ValueError(
                f"tau={tau} exceeds {episode_name}={episode} (at most {episode} steps to control); "
                f"lower tau or raise {episode_name}"
            )
        if knots is not None and knots > (tau or episode):
            bound = f"tau={tau}" if tau is not None else f"tau (unset: all {episode_name}={episode})"
            raise ValueError(
                f"num_knots={knots} exceeds {bound}: each knot holds at least one controlled step; lower "
                f"num_knots or raise tau / {episode_name}"
            )

    def check_budget(self, episode: int | None, budget: int, unit: BudgetUnit = "samples") -> None:
        """A sample budget of an adaptive controller must be at least one iteration (``num_samples``):
        its answer at budget ``k`` is the state of one run after ``k`` samples. A token budget must
        hold one whole sample (``episode`` tokens at most): its answer is the best of the samples
        whose tokens fit, and no record may spend more than its budget."""
        per_iteration = self.config.num_samples
        if unit == "samples" and self.adaptive and budget < per_iteration:
            raise ValueError(
                f"budget {budget} is smaller than one iteration ({per_iteration} samples); lower its "
                "num_samples or raise the smallest budget"
            )
        if unit == "tokens" and episode is not None and budget < episode:
            raise ValueError(
                f"a budget of {budget} tokens is smaller than one response, which may take {episode} tokens "
                f"(max_new_tokens): its first response could overspend it; raise the smallest budget to "
                f"{episode} or lower max_new_tokens"
            )

    # ----------------------------------------------------------------- helpers
    def parameterization(self, dynamics: Dynamics) -> ZeroOrderHold:
        """The knots -> controls map for ``dynamics`` under this config."""
        tau = self.config.tau or dynamics.horizon
        if tau > dynamics.horizon:
            raise ValueError(
                f"tau={tau} exceeds the dynamics' horizon {dynamics.horizon}; "
                f"lower tau or raise the dynamics' horizon (for a language model, max_new_tokens)"
            )
        return ZeroOrderHold(tau, self.config.num_knots or tau)

    # ----------------------------------------------------------------- the loop
    def optimize(
        self,
        dynamics: Dynamics,
        cost: CostFunction,
        *,
        seed: int | Sequence[int] | None = None,
        num_iterations: int | None = None,
        max_samples: int | None = None,
        max_tokens: int | None = None,
        state: S | None = None,  # type: ignore[override]
        callback: Callable[[IterationRecord], None] | None = None,
        keep_rollouts: bool = False,
    ) -> OptimizeResult:
        """Run ``sample -> rollout -> cost -> update`` and return the best sample seen.

        Args:
            dynamics: the system, with its ``B`` problems.
            cost: maps rollouts to ``(B, N)`` costs.
            seed: one seed (every problem gets the same stream, so a problem is solved exactly as
                it would be alone) or one seed per problem. Default: continue the random streams of
                ``state`` when it has them (a warm start never replays noise), else seed 0.
            num_iterations: iterations to run (default: ``config.num_iterations``, or as many as
                ``max_samples`` allows when that is given).
            max_samples: budget of scored samples per problem; the last iteration draws fewer
                samples if needed so that no more than this many are scored (exactly this many unless
                ``num_iterations`` runs out first).
            max_tokens: budget of generated tokens per problem (language models): iterations go on
                until every problem has generated at least this many; the last may overshoot (a
                comparison reads the best among the samples within the budget).
            state: a previous state to warm-start from (default: `init_state`): its proposal and
                random streams carry over; the best sample starts afresh (it is the loop's, not the
                state's).
            callback: called with each iteration's record (progress bars, logging).
            keep_rollouts: keep each iteration's rollout in its record (``record.rollout``), e.g. to
                read the best response after the first ``k`` samples (memory grows with the run).
        """
        if max_samples is not None and max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {max_samples}")
        if num_iterations is not None and num_iterations < 1:
            raise ValueError(f"num_iterations must be >= 1, got {num_iterations}")
        if max_tokens is not None and (max_tokens < 1 or max_samples is not None):
            raise ValueError(f"max_tokens must be >= 1 and not given with max_samples, got {max_tokens}")
        hold = self.parameterization(dynamics)
        if num_iterations is None:
            if max_tokens is not None:
                num_iterations = sys.maxsize
            elif max_samples is None:
                num_iterations = self.config.num_iterations
            else:
                num_iterations = math.ceil(max_samples / self.config.num_samples)
        if max_samples is not None:
            budget = max_samples
        elif max_tokens is not None:
            budget = sys.maxsize
        else:
            budget = num_iterations * self.config.num_samples
        state = state if state is not None else self.init_state(dynamics)
        settings = self.resolved_settings(state)
        generators = self._generators(state, seed, dynamics.batch_size, dynamics.device)
        history: list[IterationRecord] = []
        best: BestSoFar | None = None
        used = 0
        tokens_per_problem = torch.zeros(dynamics.batch_size, dtype=torch.long)
        start = time.perf_counter()
        for _ in range(num_iterations):
            n = min(self.config.num_samples, budget - used)
            if n <= 0 or (max_tokens is not None and bool((tokens_per_problem >= max_tokens).all())):
                break
            tic = time.perf_counter()
            knots = self.sample(state, n, generators)
            feedback = knots if isinstance(knots, Policy) else None
            controls = hold.expand(knots) if feedback is None else _zeros(dynamics, n, hold.tau)
            dynamics.check_controls(controls)
            sub_seeds = draw_seeds(generators)
            streams = make_generators(sub_seeds, len(sub_seeds), dynamics.device)
            if feedback is None:
                rollout = dynamics.rollout(controls, streams)
            else:  # the controls applied, padded to the horizon so that iterations' bests merge
                rollout = dynamics.rollout_feedback(controls, streams, feedback)
                controls = dynamics.pad_controls(rollout.controls)
            raw_costs, metrics = cost.evaluate(rollout)
            costs = self._checked_costs(raw_costs, n, state.iteration)
            log_ratio = self.log_ratio(state, knots)
            state = self.update(state, knots, costs)
            state = state.replace(iteration=state.iteration + 1)
            candidate = BestSoFar.of(rollout, controls, costs, metrics)
            best = candidate if best is None else best.merge(candidate)
            used += n
            counts = rollout.token_counts()
            if max_tokens is not None and bool((counts.sum(dim=1) == 0).any()):
                raise ValueError("max_tokens needs dynamics that generate tokens (a language model)")
            tokens_per_problem = tokens_per_problem + counts.sum(dim=1)
            record = IterationRecord(
                iteration=state.iteration - 1,
                costs=costs.detach().to("cpu", torch.float64),
                best_cost=best.cost.detach().cpu(),
                seconds=time.perf_counter() - tic,
                tokens=int(counts.sum()),
                stats={k: v.detach().cpu() for k, v in state.stats.items()},
                metrics={k: v.detach().to("cpu", torch.float64) for k, v in metrics.items()},
                best_metrics={k: v.detach().to("cpu", torch.float64) for k, v in best.metrics.items()},
                token_counts=counts.detach().cpu(),
                rollout=rollout if keep_rollouts else None,
                log_ratio=None if log_ratio is None else log_ratio.detach().to("cpu", torch.float64),
            )
            history.append(record)
            if callback is not None:
                callback(record)
        state = state.replace(rng=tuple(g.get_state() for g in generators))
        assert best is not None
        return OptimizeResult(
            best_rollout=best.rollout,
            best_cost=best.cost,
            best_controls=best.controls,
            mean=self.final_mean(state),
            history=history,
            budget=Budget(
                samples=used,
                iterations=len(history),
                seconds=time.perf_counter() - start,
                tokens=int(tokens_per_problem.sum()),
                samples_per_problem=(used,) * dynamics.batch_size,
                tokens_per_problem=tuple(int(t) for t in tokens_per_problem.tolist()),
            ),
            state=state,
            best_metrics=dict(best.metrics),
            settings=settings,
        )

    @staticmethod
    def _generators(
        state: PlannerState, seed: int | Sequence[int] | None, B: int, device: torch.device | str
    ) -> list[torch.Generator]:
        """Fresh generators from ``seed``, or (no seed) ``state``'s streams continued, else seed 0."""
        if seed is not None or state.rng is None:
            return make_generators(0 if seed is None else seed, B, device)
        if len(state.rng) != B:
            raise ValueError(f"the state holds random streams for {len(state.rng)} problems, not {B}")
        generators = [torch.Generator(device=device) for _ in range(B)]
        for g, rng in zip(generators, state.rng, strict=True):
            g.set_state(rng)
        return generators

    @staticmethod
    def _checked_costs(costs: Tensor, n: int, iteration: int) -> Tensor:
        """Validate the shape; replace NaN / ±inf by ``+inf`` (zero weight) with a warning."""
        if costs.dim() != 2 or costs.shape[1] != n:
            raise ValueError(f"the cost function must return (B, N={n}) costs, got {tuple(costs.shape)}")
        valid = torch.isfinite(costs)
        if bool(valid.all()):
            return costs
        none_valid = (~valid.any(dim=1)).nonzero().flatten().tolist()
        if none_valid:
            raise ValueError(
                f"every cost is NaN or infinite for problem(s) {none_valid} at iteration {iteration}; "
                "check the reward / cost function (it must return finite numbers)"
            )
        warnings.warn(
            f"{int((~valid).sum())} of {valid.numel()} costs are NaN or infinite at iteration "
            f"{iteration}; those samples get zero weight and cannot be the best",
            RuntimeWarning,
            stacklevel=3,
        )
        return costs.masked_fill(~valid, float("inf"))


def _zeros(dynamics: Dynamics, n: int, tau: int) -> Tensor:
    """``(B, n, tau, d)`` zero controls (a broadcast view): a feedback policy's open-loop part."""
    zero = torch.zeros((), dtype=dynamics.dtype, device=dynamics.device)
    return zero.expand(dynamics.batch_size, n, tau, dynamics.control_dim)
