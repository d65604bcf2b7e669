"""The controller template: ``sample -> rollout -> cost -> update``, with explicit state.

A new controller is a config (a pydantic model) and two methods:

- ``sample(state, num_samples, generators) -> (B, N, K, d)`` knots to try;
- ``update(state, knots, costs) -> ControllerState`` the next mean / sigma (a controller that
  does not implement it never adapts, like random shooting and best-of-N).

The base class owns the loop, the budget, the best-so-far bookkeeping, invalid costs, and the
expansion of ``K`` knots to ``(tau, d)`` controls (`ZeroOrderHold`). It knows only `mpc_llm.core`.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar, Generic, TypeVar

import torch
from torch import Tensor
from typing_extensions import Self

from mpc_llm.controllers.state import ControllerConfig, ControllerState
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
    validated,
)

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

    #: Whether the best of a run's first ``k`` samples is its answer at budget ``k`` (one run serves
    #: every budget of a comparison). Sequential controllers (`SequentialController`: receding
    #: horizon, blockwise, speculative rejection, ARGS) are not `Controller`s and have it False;
    #: `mpc_llm.evaluation.compare` runs them once per budget.
    anytime: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls.adaptive = cls.update is not Controller.update

    def __init__(self, config: C | Mapping[str, object] | None = None, **overrides: object) -> None:
        self.config: C = validated(self.config_class, config, overrides)  # type: ignore[assignment]

    def spec(self) -> dict[str, object]:
        """What identifies this controller in a comparison's settings: its class and config."""
        return {"class": type(self).__name__, "config": self.config.model_dump(mode="json")}

    def with_config(self, **changes: object) -> Self:
        """A controller of the same class with some settings changed (validated)."""
        return type(self)(self.config, **changes)

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
        """The initial state: mean ``U`` (zeros unless given, ``(B, K, d)``) and ``sigma``.

        With ``sigma_relative`` the sigma of problem ``b`` is that fraction of
        ``dynamics.control_scale()[b]`` (a language model's pre-logit RMS on prompt ``b``), measured
        here, once; the state's ``stats["control_scale"]`` holds the scale until the first update.
        """
        shape = (dynamics.batch_size, self.parameterization(dynamics).num_knots, dynamics.control_dim)
        if mean is None:
            mean = torch.zeros(shape, device=dynamics.device, dtype=dynamics.dtype)
        elif tuple(mean.shape) != shape:
            raise ValueError(f"initial mean must have shape (B, K, d) = {shape}, got {tuple(mean.shape)}")
        fraction = getattr(self.config, "sigma_relative", None)
        if fraction is None:
            return ControllerState(mean=mean, sigma=torch.full_like(mean, self.config.initial_sigma()))
        scale = dynamics.control_scale().to(device=mean.device, dtype=mean.dtype)  # (B,), measured once
        sigma = (fraction * scale).view(-1, 1, 1).expand_as(mean).clone()
        return ControllerState(mean=mean, sigma=sigma, stats={"control_scale": scale})

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
        max_tokens: int | None = None,
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
            max_tokens: budget of generated tokens per problem (language models): iterations go on
                until every problem has generated at least this many; the last may overshoot (a
                comparison reads the best among the samples within the budget).
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
        state = state.restart() if state is not None else self.init_state(dynamics)
        settings = {"sigma": state.sigma[:, 0, 0].detach().to("cpu", torch.float64)}
        if "control_scale" in state.stats:
            settings["control_scale"] = state.stats["control_scale"].detach().to("cpu", torch.float64)
        generators = self._generators(state, seed, dynamics.batch_size)
        history: list[IterationRecord] = []
        used = 0
        tokens_per_problem = torch.zeros(dynamics.batch_size, dtype=torch.long)
        start = time.perf_counter()
        for _ in range(num_iterations):
            n = min(self.config.num_samples, budget - used)
            if n <= 0 or (max_tokens is not None and bool((tokens_per_problem >= max_tokens).all())):
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
            if max_tokens is not None and bool((counts.sum(dim=1) == 0).any()):
                raise ValueError("max_tokens needs dynamics that generate tokens (a language model)")
            tokens_per_problem = tokens_per_problem + counts.sum(dim=1)
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
            budget=Budget(
                samples=used,
                iterations=len(history),
                seconds=time.perf_counter() - start,
                tokens=int(tokens_per_problem.sum()),
                samples_per_problem=(used,) * dynamics.batch_size,
                tokens_per_problem=tuple(int(t) for t in tokens_per_problem.tolist()),
            ),
            state=state,
            best_metrics=dict(state.best_metrics),
            settings=settings,
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
