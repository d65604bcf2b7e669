"""Receding-horizon control: turn any controller into model predictive control.

At each planning step the inner controller plans the next ``horizon`` steps (its own iterations,
``samples_per_step`` scored rollouts per problem), the first ``commit`` steps of the chosen rollout
are committed (`Dynamics.advance`: for a language model, the tokens are appended to the prompt's
key/value cache, never recomputing it), the plan's mean is shifted by ``commit`` steps with its
tail filled (zeros, or the last step's value) and the next plan starts from it with fresh noise.
Problems whose episode has ended (no step left; for a language model, an end-of-sequence token
committed) leave the batch. With ``commit = horizon =`` the whole episode there is one planning
step, and the result is the inner controller's own.

Scoring: ``score="to_end"`` (default) rolls every candidate out to the end of the episode (the
remaining steps uncontrolled) and scores the whole trajectory, e.g. the whole response text;
``score="horizon"`` rolls it out over the planning horizon only (classic MPC; for a reward that
accepts partial text).

Example (a point mass driven to a goal, re-planning every 5 steps):
    >>> from mpc_llm.controllers import AISP
    >>> from mpc_llm.dynamics import GoalCost, PointMass
    >>> mpc = RecedingHorizon(AISP(sigma=1.0, lambda_=1.0, num_samples=32, num_iterations=2),
    ...                       horizon=10, commit=5)
    >>> result = mpc.optimize(PointMass(horizon=20), GoalCost(goal=[1.0, 1.0]), seed=0)
    >>> list(result.best_rollout.states.shape), result.budget.samples   # the whole episode
    ([1, 1, 21, 4], 256)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mpc_llm.controllers.base import Controller
from mpc_llm.controllers.sequential import Final, episode_result, require_partial
from mpc_llm.controllers.state import ControllerState
from mpc_llm.core import (
    CostFunction,
    Dynamics,
    IterationRecord,
    OptimizeResult,
    ZeroOrderHold,
    validated,
)


class RecedingHorizonConfig(BaseModel):
    """Settings of the receding-horizon loop.

    Attributes:
        horizon: planning horizon ``H``, steps planned at each planning step.
        commit: steps committed per planning step, ``1 <= commit <= horizon`` (default: ``horizon``).
        samples_per_step: scored rollouts per problem and planning step (default: the inner
            controller's ``num_samples * num_iterations``).
        fill: the tail of the shifted plan: ``"zeros"`` or ``"last"`` (the last step's control).
        score: ``"to_end"`` (roll candidates out to the end of the episode) or ``"horizon"``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    horizon: int = Field(ge=1)
    commit: int | None = Field(None, ge=1)
    samples_per_step: int | None = Field(None, ge=1)
    fill: Literal["zeros", "last"] = "zeros"
    score: Literal["to_end", "horizon"] = "to_end"

    @model_validator(mode="after")
    def _commit_within_horizon(self) -> RecedingHorizonConfig:
        if self.commit is not None and self.commit > self.horizon:
            raise ValueError(
                f"commit={self.commit} exceeds horizon={self.horizon}: a plan can only commit steps it "
                "planned; lower commit or raise horizon"
            )
        return self

    @property
    def steps_committed(self) -> int:
        """``commit``, defaulting to ``horizon``."""
        return self.commit or self.horizon


class RecedingHorizon:
    """Model predictive control with any inner `Controller`.

    Args:
        inner: the controller that plans each step; each plan controls its first
            ``min(inner tau, horizon, steps left)`` steps (all of the plan by default), with at most
            that many knots.
        config: a `RecedingHorizonConfig` or a mapping; keyword ``settings`` override its fields.
    """

    config_class: ClassVar[type[BaseModel]] = RecedingHorizonConfig
    anytime: ClassVar[bool] = False
    adaptive: ClassVar[bool] = True

    def __init__(
        self,
        inner: Controller,
        config: RecedingHorizonConfig | Mapping[str, Any] | None = None,
        **settings: Any,
    ) -> None:
        self.config = validated(RecedingHorizonConfig, config, settings)
        self.inner = inner

    @property
    def samples_per_step(self) -> int:
        """Scored rollouts per problem and planning step."""
        inner = self.inner.config
        return self.config.samples_per_step or inner.num_samples * inner.num_iterations

    def spec(self) -> dict[str, Any]:
        """What identifies this controller in a comparison's settings (with its inner controller)."""
        return {
            "class": type(self).__name__,
            "config": self.config.model_dump(mode="json"),
            "inner": self.inner.spec(),
        }

    def planning_steps(self, episode: int) -> int:
        """The most planning steps an episode of ``episode`` steps takes (fewer if it ends early)."""
        return math.ceil(episode / self.config.steps_committed)

    def check(self, episode: int, cost: CostFunction | None = None) -> None:
        """Refuse settings that cannot plan an episode of ``episode`` steps with ``cost``, before any
        model work (the experiment and the CLI call it before loading a model; ``cost`` may be any
        object with ``accepts_partial``, e.g. a reward class)."""
        if self.config.horizon > episode:
            raise ValueError(
                f"the planning horizon {self.config.horizon} is longer than the episode ({episode} steps; "
                "for a language model, max_new_tokens); lower horizon or raise the episode length"
            )
        if self.config.score == "horizon":
            require_partial(cost, "score='horizon' scores partial trajectories", "use score='to_end'")

    def check_budget(self, episode: int, max_samples: int) -> None:
        """Raise a `ValueError` if ``max_samples`` cannot give every planning step its minimum."""
        self.per_step_budget(episode, max_samples)

    def per_step_budget(self, episode: int, max_samples: int | None) -> int:
        """Samples per planning step: ``samples_per_step``, or a total budget split over the most
        planning steps an episode of ``episode`` steps takes.

        Raises:
            ValueError: if the budget is smaller than one planning step (one sample, or one
                iteration of an adaptive inner controller, per step).
        """
        if max_samples is None:
            return self.samples_per_step
        steps = self.planning_steps(episode)
        per_step = max_samples // steps
        least = self.inner.config.num_samples if self.inner.adaptive else 1
        if per_step < least:
            raise ValueError(
                f"a budget of {max_samples} samples is smaller than one planning step: {steps} planning "
                f"steps (commit={self.config.steps_committed} of {episode} steps) need at least "
                f"{least} samples each; raise the budget to {steps * least} or commit more steps per plan"
            )
        return per_step

    def optimize(
        self,
        dynamics: Dynamics,
        cost: CostFunction,
        *,
        seed: int | Sequence[int] | None = None,
        max_samples: int | None = None,
        max_tokens: int | None = None,
        state: ControllerState | None = None,
        callback: Callable[[IterationRecord], None] | None = None,
        keep_rollouts: bool = False,
    ) -> OptimizeResult:
        """Run the episode of every problem in closed loop and return the committed trajectories.

        Args:
            dynamics: the system, with its ``B`` problems (it must implement `Dynamics.advance`).
            cost: the objective, evaluated on rollouts that include the committed history.
            seed: one seed or one per problem (default: the streams of ``state``, else 0).
            max_samples: a total budget of scored rollouts per problem, split evenly over the
                planning steps (default: ``samples_per_step`` each).
            max_tokens: a total budget of generated tokens per problem (language models): each
                planning step gets an even share of what is left, turned into samples with the
                tokens per sample of the previous step (at first, the longest a rollout can be).
            state: an inner state to start the first plan from (its mean must fit the first plan).
            callback: called with each inner iteration's record.
            keep_rollouts: keep each inner iteration's rollout in its record.

        Returns:
            An `OptimizeResult` whose ``best_rollout`` is each problem's whole closed-loop trajectory
            (``N = 1``; for a language model, the committed response), ``best_cost`` / ``best_metrics``
            its cost and metrics, ``history`` the inner iterations of every planning step (their
            ``B`` shrinks as episodes end), and ``budget`` the samples and tokens per problem.
        """
        self.check(dynamics.horizon, cost)
        if max_samples is not None and max_tokens is not None:
            raise ValueError("give max_samples or max_tokens, not both")
        per_step = self.per_step_budget(dynamics.horizon, max_samples)
        per_sample = {b: float(self._rollout_steps(dynamics)) for b in range(dynamics.batch_size)}
        start, B = time.perf_counter(), dynamics.batch_size
        commit, fill = self.config.steps_committed, self.config.fill
        system, active = dynamics, list(range(B))
        finals: dict[int, Final] = {}
        samples, tokens = [0] * B, [0] * B
        history: list[IterationRecord] = []
        plan: ControllerState | None = state
        first = True
        while active:
            H = min(self.config.horizon, system.horizon)
            planner = system.with_horizon(H) if self.config.score == "horizon" else system
            tau = self._tau(H)
            inner = self._planner(tau)
            if max_tokens is not None:
                per_step = self._token_share(system, max_tokens, [(tokens[b], per_sample[b]) for b in active])
            result = inner.optimize(
                planner, cost, seed=seed if first else None, state=plan, max_samples=per_step,
                callback=callback, keep_rollouts=keep_rollouts,
            )  # fmt: skip
            first = False
            history.extend(result.history)
            for i, b in enumerate(active):
                samples[b] += result.budget.samples_per_problem[i]
                tokens[b] += result.budget.tokens_per_problem[i]
                per_sample[b] = max(
                    1.0, result.budget.tokens_per_problem[i] / result.budget.samples_per_problem[i]
                )
            steps = min(commit, H)
            system = system.advance(result.best_rollout, steps)
            done = system.finished().tolist()
            for i, b in enumerate(active):
                if done[i]:
                    metrics = {k: float(v[i]) for k, v in result.best_metrics.items()}
                    finals[b] = Final(float(result.best_cost[i]), result.best_rollout.problems([i]), metrics)
            keep = [i for i, d in enumerate(done) if not d]
            if not keep:
                break
            system, active = system.select(keep), [active[i] for i in keep]
            next_tau = self._tau(min(self.config.horizon, system.horizon))
            plan = self._shift(result.state, keep, tau, steps, next_tau, fill)
        seconds = time.perf_counter() - start
        finals_ = [finals[b] for b in range(B)]
        return episode_result(
            finals_, samples, tokens, seconds, mean=result.mean, history=history, state=result.state
        )

    def _rollout_steps(self, system: Dynamics) -> int:
        """The most steps one candidate rollout runs: the planning horizon, or the episode's rest."""
        return min(self.config.horizon, system.horizon) if self.config.score == "horizon" else system.horizon

    def _token_share(self, system: Dynamics, max_tokens: int, spent: list[tuple[int, float]]) -> int:
        """Samples for this planning step under a token budget: each problem's even share of its
        tokens left over the planning steps left, divided by its tokens per sample (``spent``:
        ``(tokens spent, tokens per sample)`` of each active problem); at least one sample (one
        iteration for an adaptive inner controller)."""
        steps_left = math.ceil(system.horizon / self.config.steps_committed)
        allowed = min((max_tokens - used) / steps_left / per for used, per in spent)
        least = self.inner.config.num_samples if self.inner.adaptive else 1
        return max(least, int(allowed))

    def _tau(self, H: int) -> int:
        """Controlled steps of a plan over ``H`` steps: the inner controller's ``tau``, at most ``H``."""
        return min(self.inner.config.tau or H, H)

    def _planner(self, tau: int) -> Controller:
        """The inner controller controlling ``tau`` steps (its knots capped at ``tau``)."""
        knots = self.inner.config.num_knots
        return self.inner.with_config(tau=tau, num_knots=None if knots is None else min(knots, tau))

    def _shift(
        self, state: object, keep: list[int], tau: int, steps: int, next_tau: int, fill: str
    ) -> ControllerState:
        """The next plan: the kept problems' mean and sigma moved ``steps`` forward, random streams on."""
        assert isinstance(state, ControllerState)
        knots = self.inner.config.num_knots
        hold = ZeroOrderHold(tau, min(knots, tau) if knots else tau)
        to = ZeroOrderHold(next_tau, min(knots, next_tau) if knots else next_tau)
        kept = state.select(keep)
        return kept.replace(
            mean=hold.shift(kept.mean, steps, fill, to=to), sigma=hold.shift(kept.sigma, steps, "last", to=to)
        )
