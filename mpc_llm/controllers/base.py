"""The controller template: ``sample -> rollout -> cost -> update``, with explicit state.

A new controller is a config (a pydantic model) and two methods:

- ``sample(state, num_samples, generators) -> (B, N, K, d)`` knots to try;
- ``update(state, knots, costs) -> ControllerState`` the next mean / sigma (a controller that
  does not implement it never adapts, like random shooting and best-of-N).

The base class owns the loop, the budget, the best-so-far bookkeeping, invalid costs, and the
expansion of ``K`` knots to ``(tau, d)`` controls (`ZeroOrderHold`). It knows only `mpc_llm.core`.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Generic, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor
from typing_extensions import Self

from mpc_llm.core import (
    Budget,
    CostFunction,
    Dynamics,
    IterationRecord,
    Metrics,
    OptimizeResult,
    Rollout,
    ZeroOrderHold,
    draw_seeds,
    make_generators,
    read_mapping,
)


class ControllerConfig(BaseModel):
    """Settings every controller has.

    Attributes:
        num_samples: samples per iteration and problem.
        num_iterations: iterations when `Controller.optimize` is given no budget.
        tau: controlled steps (default: the dynamics' whole horizon); later steps get no control.
            For a language model, the first ``tau`` response tokens.
        num_knots: knots ``K`` held over equal chunks of ``tau`` (default: one per step).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_name=True)

    num_samples: int = Field(16, ge=1)
    num_iterations: int = Field(4, ge=1)
    tau: int | None = Field(None, ge=1)
    num_knots: int | None = Field(None, ge=1)

    @classmethod
    def from_file(cls, path: str | Path) -> Self:
        """Load and validate settings from a YAML or JSON file (e.g. ``{sigma: 0.5, lambda: 0.1}``)."""
        return cls.model_validate(read_mapping(path))

    def initial_sigma(self) -> float:
        """The proposal's standard deviation in the initial state (0: no perturbation)."""
        return 0.0


class GaussianConfig(ControllerConfig):
    """A controller that samples ``V = U + sigma * eps``, ``eps ~ N(0, I)``."""

    sigma: float = Field(1.0, ge=0.0, allow_inf_nan=False)

    def initial_sigma(self) -> float:
        return self.sigma


@dataclass(frozen=True)
class ControllerState:
    """Everything a controller carries between iterations; `update` returns a new one.

    Attributes:
        mean: ``(B, K, d)`` control mean ``U``.
        sigma: ``(B, K, d)`` standard deviation of the proposal.
        iteration: iterations done.
        best_cost: ``(B,)`` lowest cost seen (``+inf`` before the first sample).
        best_controls: ``(B, tau, d)`` controls of the best sample.
        best_rollout: the best sample per problem (``N = 1``), or None before the first.
        best_metrics: what the cost function scored for the best sample (e.g. ``"reward"``), ``(B,)``.
        stats: diagnostics of the last update, e.g. ``{"ess": (B,)}``.
        rng: each problem's random-generator state after the last draw (``torch.Generator.get_state``),
            so that a warm-started `Controller.optimize` continues the streams instead of replaying
            them, and a saved state resumes a run bit for bit. None before the first call.

    The best-so-far fields describe one call of `Controller.optimize`: a warm-started call starts
    them afresh (its problems may have moved on, e.g. in receding-horizon control).
    """

    mean: Tensor
    sigma: Tensor
    iteration: int = 0
    best_cost: Tensor | None = None
    best_controls: Tensor | None = None
    best_rollout: Rollout | None = None
    best_metrics: Mapping[str, Tensor] = field(default_factory=dict)
    stats: Mapping[str, Tensor] = field(default_factory=dict)
    rng: tuple[Tensor, ...] | None = None

    def replace(self, **changes: object) -> ControllerState:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def restart(self) -> ControllerState:
        """The proposal and random streams of this state, with no best sample yet (a warm start)."""
        return self.replace(best_cost=None, best_controls=None, best_rollout=None, best_metrics={})

    def select(self, index: Sequence[int]) -> ControllerState:
        """The state of problems ``index`` only (e.g. those whose episode goes on); no best sample."""
        idx = torch.as_tensor(list(index), dtype=torch.long)
        rng = None if self.rng is None else tuple(self.rng[i] for i in idx.tolist())
        mean, sigma = self.mean[idx.to(self.mean.device)], self.sigma[idx.to(self.sigma.device)]
        return ControllerState(mean=mean, sigma=sigma, iteration=self.iteration, rng=rng)


C = TypeVar("C", bound=ControllerConfig)


class Controller(ABC, Generic[C]):
    """Base class of sampling-based controllers.

    Subclasses set ``config_class`` and implement `sample` and, if they adapt, `update`.

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
    #: Whether the proposal changes between iterations: true exactly when the class implements
    #: `update`. A non-adaptive controller's iterations are independent batches, so the best of the
    #: first ``k`` samples of a run is distributed as a budget-``k`` run's answer.
    adaptive: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls.adaptive = cls.update is not Controller.update

    def __init__(self, config: C | Mapping[str, object] | None = None, **overrides: object) -> None:
        if isinstance(config, ControllerConfig):
            data = {**config.model_dump(), **overrides}
        else:
            data = {**dict(config or {}), **overrides}
        self.config: C = self.config_class.model_validate(data)  # type: ignore[assignment]

    # ----------------------------------------------------------------- to implement
    @abstractmethod
    def sample(
        self, state: ControllerState, num_samples: int, generators: Sequence[torch.Generator]
    ) -> Tensor:
        """Draw ``(B, num_samples, K, d)`` knots; draw for problem ``b`` only from ``generators[b]``."""

    def update(self, state: ControllerState, knots: Tensor, costs: Tensor) -> ControllerState:
        """Return the state after seeing ``(B, N, K, d)`` knots and their ``(B, N)`` costs.

        Invalid costs arrive as ``+inf``. The base class updates ``iteration`` and the best so far.
        The default keeps the proposal unchanged (a non-adaptive controller).
        """
        return state

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

    def init_state(self, dynamics: Dynamics, mean: Tensor | None = None) -> ControllerState:
        """The initial state: mean ``U`` (zeros unless given, ``(B, K, d)``) and ``sigma``."""
        shape = (dynamics.batch_size, self.parameterization(dynamics).num_knots, dynamics.control_dim)
        if mean is None:
            mean = torch.zeros(shape, device=dynamics.device, dtype=dynamics.dtype)
        elif tuple(mean.shape) != shape:
            raise ValueError(f"initial mean must have shape (B, K, d) = {shape}, got {tuple(mean.shape)}")
        sigma = self.config.initial_sigma()
        return ControllerState(mean=mean, sigma=torch.full_like(mean, sigma))

    @staticmethod
    def gaussian(state: ControllerState, num_samples: int, generators: Sequence[torch.Generator]) -> Tensor:
        """``V = U + sigma * eps``, ``(B, num_samples, K, d)``, eps from each problem's generator."""
        _, K, d = state.mean.shape
        eps = torch.stack(
            [
                torch.randn(
                    (num_samples, K, d), generator=g, device=state.mean.device, dtype=state.mean.dtype
                )
                for g in generators
            ]
        )
        return state.mean.unsqueeze(1) + state.sigma.unsqueeze(1) * eps

    # ----------------------------------------------------------------- the loop
    def optimize(
        self,
        dynamics: Dynamics,
        cost: CostFunction,
        *,
        seed: int | Sequence[int] | None = None,
        num_iterations: int | None = None,
        max_samples: int | None = None,
        state: ControllerState | None = None,
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
            state: a previous state to warm-start from (default: `init_state`): its mean, sigma and
                random streams carry over, its best sample does not (`ControllerState.restart`).
            callback: called with each iteration's record (progress bars, logging).
            keep_rollouts: keep each iteration's rollout in its record (``record.rollout``), e.g. to
                read the best response after the first ``k`` samples (memory grows with the run).
        """
        if max_samples is not None and max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {max_samples}")
        if num_iterations is not None and num_iterations < 1:
            raise ValueError(f"num_iterations must be >= 1, got {num_iterations}")
        hold = self.parameterization(dynamics)
        if num_iterations is None:
            if max_samples is None:
                num_iterations = self.config.num_iterations
            else:
                num_iterations = math.ceil(max_samples / self.config.num_samples)
        budget = max_samples if max_samples is not None else num_iterations * self.config.num_samples
        state = state.restart() if state is not None else self.init_state(dynamics)
        generators = self._generators(state, seed, dynamics.batch_size)
        history: list[IterationRecord] = []
        used = tokens = 0
        start = time.perf_counter()
        for _ in range(num_iterations):
            n = min(self.config.num_samples, budget - used)
            if n <= 0:
                break
            tic = time.perf_counter()
            knots = self.sample(state, n, generators)
            controls = hold.expand(knots)
            dynamics.check_controls(controls)
            sub_seeds = draw_seeds(generators)
            rollout = dynamics.rollout(controls, make_generators(sub_seeds, len(sub_seeds), dynamics.device))
            raw_costs, metrics = cost.evaluate(rollout)
            costs = self._checked_costs(raw_costs, n, state.iteration)
            state = self._track_best(self.update(state, knots, costs), rollout, controls, costs, metrics)
            used += n
            counts = rollout.token_counts()
            tokens += int(counts.sum())
            record = IterationRecord(
                iteration=state.iteration - 1,
                costs=costs.detach().to("cpu", torch.float64),
                best_cost=state.best_cost.detach().cpu(),  # type: ignore[union-attr]
                seconds=time.perf_counter() - tic,
                tokens=int(counts.sum()),
                stats={k: v.detach().cpu() for k, v in state.stats.items()},
                metrics={k: v.detach().to("cpu", torch.float64) for k, v in metrics.items()},
                best_metrics={k: v.detach().to("cpu", torch.float64) for k, v in state.best_metrics.items()},
                token_counts=counts.detach().cpu(),
                rollout=rollout if keep_rollouts else None,
            )
            history.append(record)
            if callback is not None:
                callback(record)
        state = state.replace(rng=tuple(g.get_state() for g in generators))
        assert state.best_rollout is not None and state.best_cost is not None
        assert state.best_controls is not None
        return OptimizeResult(
            best_rollout=state.best_rollout,
            best_cost=state.best_cost,
            best_controls=state.best_controls,
            mean=state.mean,
            history=history,
            budget=Budget(used, len(history), time.perf_counter() - start, tokens),
            state=state,
            best_metrics=dict(state.best_metrics),
        )

    @staticmethod
    def _generators(
        state: ControllerState, seed: int | Sequence[int] | None, B: int
    ) -> list[torch.Generator]:
        """Fresh generators from ``seed``, or (no seed) ``state``'s streams continued, else seed 0."""
        device = state.mean.device
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

    @staticmethod
    def _track_best(
        state: ControllerState, rollout: Rollout, controls: Tensor, costs: Tensor, metrics: Metrics
    ) -> ControllerState:
        """Advance ``iteration`` and merge this iteration's best sample into the best so far."""
        cand_cost, idx = costs.min(dim=1)
        candidate = rollout.take(idx.unsqueeze(1))
        cand_controls = controls[
            torch.arange(controls.shape[0], device=controls.device), idx.to(controls.device)
        ]
        cand_metrics = {k: v.gather(1, idx.to(v.device).unsqueeze(1)).squeeze(1) for k, v in metrics.items()}
        if state.best_rollout is None or state.best_cost is None or state.best_controls is None:
            best_rollout, best_cost, best_controls = candidate, cand_cost, cand_controls
            best_metrics = cand_metrics
        else:
            improved = cand_cost < state.best_cost
            pick = improved.long().unsqueeze(1)
            best_rollout = type(candidate).cat([state.best_rollout, candidate]).take(pick)
            best_cost = torch.where(improved, cand_cost, state.best_cost)
            mask = improved.to(controls.device).view(-1, 1, 1)
            best_controls = torch.where(mask, cand_controls, state.best_controls)
            best_metrics = {
                k: torch.where(improved.to(v.device), v, state.best_metrics.get(k, v))
                for k, v in cand_metrics.items()
            }
        return state.replace(
            iteration=state.iteration + 1,
            best_cost=best_cost,
            best_controls=best_controls,
            best_rollout=best_rollout,
            best_metrics=best_metrics,
        )
