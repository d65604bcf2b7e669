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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from mpc_llm.controllers.base import Controller
from mpc_llm.controllers.planner import Planner
from mpc_llm.controllers.sequential import Episode, SequentialController, Start, Step, require_partial
from mpc_llm.controllers.state import PlannerState, SettingError, Settings
from mpc_llm.core import BudgetUnit, CostFunction, Dynamics, ZeroOrderHold
from mpc_llm.values import ValuePath, ValueRef
from mpc_llm.values.terminal import TerminalValueCost
from mpc_llm.values.twist import Twist, ValueTwist


class RecedingHorizonConfig(Settings):
    """Settings of the receding-horizon loop.

    Attributes:
        horizon: planning horizon ``H``, steps planned at each planning step.
        commit: steps committed per planning step, ``1 <= commit <= horizon`` (default: ``horizon``).
        samples_per_step: scored rollouts per problem and planning step (default: the inner
            controller's ``num_samples * num_iterations``).
        fill: the tail of the shifted plan: ``"zeros"`` or ``"last"`` (the last step's control).
        score: ``"to_end"`` (roll candidates out to the end of the episode) or ``"horizon"``.
        value: a value folder (`mpc-llm train-value --out ...`) or its ``.safetensors`` file: with
            ``score="horizon"``, a plan whose response has not ended by the horizon costs minus the
            value of its last pre-logit state (`mpc_llm.values.terminal.TerminalValueCost`; the
            decode keeps the state with ``lm.keep_states``). None: the cost of the partial text.
    """

    horizon: int = Field(ge=1)
    commit: int | None = Field(None, ge=1)
    samples_per_step: int | None = Field(None, ge=1)
    fill: Literal["zeros", "last"] = "zeros"
    score: Literal["to_end", "horizon"] = "to_end"
    value: ValuePath | None = None

    @model_validator(mode="after")
    def _value_at_the_horizon(self) -> RecedingHorizonConfig:
        if self.value is not None and self.score != "horizon":
            raise ValueError(
                "a terminal value stands for the rest of a response the plan does not roll out; with "
                "score='to_end' every plan reaches the end: set score='horizon' or drop value"
            )
        return self

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


@dataclass(frozen=True)
class Plan:
    """What receding horizon carries from one planning step to the next, per row.

    Attributes:
        state: the inner controller's state after the last plan (None before the first: the inner
            controller starts its own), or a state given to start the first plan from.
        tau: the controlled steps of that plan (None: ``state`` fits the next plan as it is).
        committed: steps the last plan committed (the shift of its mean).
        per_step: samples per planning step under a sample budget (None: a token budget).
        per_sample: ``R`` tokens per scored sample in the last plan (at first, the longest rollout).
    """

    state: PlannerState | None
    tau: int | None
    committed: int
    per_step: int | None
    per_sample: tuple[float, ...]

    def select(self, index: Sequence[int]) -> Plan:
        """The plan of rows ``index`` only."""
        state = None if self.state is None else self.state.select(index)
        return Plan(state, self.tau, self.committed, self.per_step, tuple(self.per_sample[i] for i in index))


class RecedingHorizon(SequentialController[RecedingHorizonConfig, Plan]):
    """Model predictive control with any inner `Controller`.

    Args:
        inner: the controller that plans each step; each plan controls its first
            ``min(inner tau, horizon, steps left)`` steps (all of the plan by default), with at most
            that many knots.
        config: a `RecedingHorizonConfig` or a mapping; keyword ``settings`` override its fields.
        terminal: the value of a plan's response at the horizon when it has not ended
            (`mpc_llm.values.twist.Twist`; default: the ``value`` setting's network, if any).
    """

    config_class = RecedingHorizonConfig
    #: Plan 16 tokens, commit 8, re-plan (6 plans for a 48-token response).
    preset: ClassVar[dict[str, Any]] = {"horizon": 16, "commit": 8}
    wraps: ClassVar[type[Planner] | None] = Controller

    def __init__(
        self,
        inner: Controller,
        config: RecedingHorizonConfig | Mapping[str, Any] | None = None,
        *,
        terminal: Twist | None = None,
        **settings: Any,
    ) -> None:
        super().__init__(config, **settings)
        self.inner, self.terminal = inner, terminal
        if terminal is not None and self.loop.score != "horizon":
            raise ValueError("a terminal value needs score='horizon' (plans that stop before the end)")
        value = getattr(self.loop, "value", None)
        self.value = None if value is None else ValueRef(value)

    @property
    def loop(self) -> RecedingHorizonConfig:
        """The receding-horizon settings the loop runs with (for a subclass, derived from its own)."""
        return self.config

    def with_config(self, **changes: object) -> RecedingHorizon:
        """The same inner controller with some receding-horizon settings changed (validated)."""
        return type(self)(self.inner, self.config, terminal=self.terminal, **changes)

    @property
    def samples_per_step(self) -> int:
        """Scored rollouts per problem and planning step."""
        inner = self.inner.config
        return self.loop.samples_per_step or inner.num_samples * inner.num_iterations

    def value_params(self) -> int | None:
        """The value network's parameters (from its card), when a value is named."""
        return None if self.value is None else self.value.params()

    def spec(self) -> dict[str, Any]:
        """What identifies this controller in a comparison's settings (with its inner controller and
        what its terminal value cost to learn)."""
        learned = {} if self.value is None else {"value_learning": self.value.learning()}
        return {**super().spec(), "inner": self.inner.spec(), **learned}

    def planning_steps(self, episode: int) -> int:
        """The most planning steps an episode of ``episode`` steps takes (fewer if it ends early)."""
        return math.ceil(episode / self.loop.steps_committed)

    def check(self, episode: int, cost: Any = None, *, episode_name: str = "the episode length") -> None:
        """Refuse settings that cannot plan an episode of ``episode`` steps with ``cost``, before any
        model work (``cost`` may be any object with ``accepts_partial``, e.g. a reward's traits)."""
        if self.loop.horizon > episode:
            raise ValueError(
                f"the planning horizon {self.loop.horizon} is longer than the episode ({episode} steps; "
                "for a language model, max_new_tokens); lower horizon or raise the episode length"
            )
        if self.value is not None:
            self.value.check()
        if self.loop.score == "horizon" and not self._valued:
            require_partial(cost, "score='horizon' scores partial trajectories", "use score='to_end'")
        try:  # the inner controller's own limits (tau, num_knots), never capped in silence
            self.inner.check(episode, cost, episode_name=episode_name)
        except ValueError as err:
            raise ValueError(f"inner.{err}") from None

    def check_system(self, system: Any) -> None:
        """The terminal value's card (as RE-Control's) and the states it reads, and the inner
        controller's checks against the system (`Planner.check_system`)."""
        if self.value is not None:
            self.value.check_for(system)
            config = getattr(system, "config", None)
            if config is not None and not getattr(config, "keep_states", True):
                raise ValueError(
                    "a terminal value of the pre-logit state needs the decode to keep it: set "
                    "lm.keep_states: true (LMDynamics(..., keep_states=True))"
                )
        try:
            self.inner.check_system(system)
        except SettingError as err:
            raise SettingError(f"inner.{err}") from None
        except ValueError as err:
            raise ValueError(f"inner.{err}") from None

    def check_budget(self, episode: int | None, budget: int, unit: BudgetUnit = "samples") -> None:
        """Raise a `ValueError` if a budget cannot give every planning step its minimum: in samples,
        one sample (one iteration of an adaptive inner controller) per plan; in tokens, as many
        samples as long as each plan's rollouts may run (`least_tokens`), so no run overspends."""
        if episode is None:
            return
        if unit == "samples":
            self.per_step_budget(episode, budget)
        elif budget < (least := self.least_tokens(episode)):
            lengths = self._plan_lengths(episode)
            raise ValueError(
                f"a budget of {budget} tokens is smaller than one planning step's minimum at every plan: "
                f"{len(lengths)} plans (commit={self.loop.steps_committed} of {episode} steps) whose "
                f"{self._least_samples()} sample(s) may each run {', '.join(map(str, lengths))} tokens need "
                f"{least}; raise the smallest budget to {least} or commit more steps per plan"
            )

    def least_tokens(self, episode: int) -> int:
        """The fewest tokens per problem an ``episode``-step run can be sure to keep: at every plan, its
        least samples rolled out as long as they may run."""
        return self._least_samples() * sum(self._plan_lengths(episode))

    def _least_samples(self) -> int:
        """Samples a plan needs at least: one iteration of an adaptive inner controller, else one."""
        return self.inner.config.num_samples if self.inner.adaptive else 1

    def _plan_lengths(self, remaining: int) -> list[int]:
        """The most tokens (steps) one candidate rollout of each plan left may run, from ``remaining``
        steps left: the rest of the episode (``score="to_end"``) or the planning horizon."""
        lengths = []
        while remaining > 0:
            lengths.append(remaining if self.loop.score == "to_end" else min(self.loop.horizon, remaining))
            remaining -= self.loop.steps_committed
        return lengths

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
                f"steps (commit={self.loop.steps_committed} of {episode} steps) need at least "
                f"{least} samples each; raise the budget to {steps * least} or commit more steps per plan"
            )
        return per_step

    # ----------------------------------------------------------------- the step
    def begin(self, dynamics: Dynamics, start: Start) -> tuple[list[int], Plan]:
        """One row per problem; the first plan starts from ``start.state`` (an inner state) if given."""
        if start.max_tokens is not None:
            self.check_budget(dynamics.horizon, start.max_tokens, "tokens")
        per_step = (
            None
            if start.max_tokens is not None
            else self.per_step_budget(dynamics.horizon, start.max_samples)
        )
        longest = float(self._rollout_steps(dynamics))
        return list(range(dynamics.batch_size)), Plan(
            start.state, None, 0, per_step, (longest,) * dynamics.batch_size
        )

    def step(self, system: Dynamics, cost: CostFunction, episode: Episode[Plan]) -> Step[Plan]:
        """Plan the next ``horizon`` steps with the inner controller and commit the first ``commit``.

        The inner plan starts from the last plan shifted by the steps it committed (fresh noise:
        the random streams go on); the first plan draws from ``episode.seed``.
        """
        plan = episode.carry
        H = min(self.loop.horizon, system.horizon)
        planner = system.with_horizon(H) if self.loop.score == "horizon" else system
        tau = self._tau(H)
        start = plan.state
        if start is not None and plan.tau is not None:
            start = self._shift(start, plan.tau, plan.committed, tau)
        per_step = plan.per_step
        if per_step is None:  # a token budget: each problem's share of what it has left
            assert episode.max_tokens is not None
            spent = [(episode.tokens[b], plan.per_sample[i]) for i, b in enumerate(episode.owners)]
            per_step = self._token_share(system, episode.max_tokens, spent)
        plan_cost = self._plan_cost(system, cost, episode.length)
        result = self._planner(tau).optimize(
            planner, plan_cost, seed=episode.seed if episode.steps == 0 else None, state=start,
            max_samples=per_step, callback=episode.callback, keep_rollouts=episode.keep_rollouts,
        )  # fmt: skip
        used = result.budget.samples_per_problem
        made = result.budget.tokens_per_problem
        per_sample = tuple(max(1.0, t / n) for t, n in zip(made, used, strict=True))
        committed = min(self.loop.steps_committed, H)
        evaluated = plan_cost.evaluated if isinstance(plan_cost, TerminalValueCost) else None
        compute: dict[str, list[float]] = {}
        if evaluated is not None:
            compute["value_evals"] = evaluated.tolist()
            if plan_cost.twist.needs_states:  # one forward per state read
                compute["state_reads"] = list(compute["value_evals"])
        return Step(
            chosen=result.best_rollout,
            commit=committed,
            costs=result.best_cost.double().cpu(),
            metrics={k: v.double().cpu() for k, v in result.best_metrics.items()},
            samples=used,
            tokens=made,
            carry=Plan(result.state, tau, committed, plan.per_step, per_sample),  # type: ignore[arg-type]
            history=result.history,
            compute=compute,
        )

    # ----------------------------------------------------------------- helpers
    @property
    def _valued(self) -> bool:
        return self.terminal is not None or self.value is not None

    def _plan_cost(self, system: Dynamics, cost: CostFunction, episode: int) -> CostFunction:
        """The cost plans are scored by: with a terminal value, `TerminalValueCost`."""
        if not self._valued:
            return cost
        if self.terminal is not None:
            return TerminalValueCost(cost, self.terminal, episode)
        assert self.value is not None
        return TerminalValueCost(cost, ValueTwist(self.value.for_system(system)), episode)

    def _rollout_steps(self, system: Dynamics) -> int:
        """The most steps one candidate rollout runs: the planning horizon, or the episode's rest."""
        return min(self.loop.horizon, system.horizon) if self.loop.score == "horizon" else system.horizon

    def _token_share(self, system: Dynamics, max_tokens: int, spent: list[tuple[int, float]]) -> int:
        """Samples for this planning step under a token budget (``spent``: ``(tokens spent, tokens per
        sample)`` of each active problem): each problem's even share of its tokens left over the
        planning steps left, divided by its tokens per sample, but never more than leaves every later
        plan its least samples at their longest rollouts (`least_tokens`), so a run never overspends;
        at least one sample (one iteration for an adaptive inner controller)."""
        lengths = self._plan_lengths(system.horizon)
        least = self._least_samples()
        reserve = least * sum(lengths[1:])
        allowed = min(
            min((max_tokens - used) / len(lengths) / per, (max_tokens - used - reserve) // lengths[0])
            for used, per in spent
        )
        return max(least, int(allowed))

    def _tau(self, H: int) -> int:
        """Controlled steps of a plan over ``H`` steps: the inner controller's ``tau``, at most ``H``."""
        return min(self.inner.config.tau or H, H)

    def _hold(self, tau: int) -> ZeroOrderHold:
        """The inner controller's knots over a plan of ``tau`` controlled steps (at most ``tau``)."""
        knots = self.inner.config.num_knots
        return ZeroOrderHold(tau, min(knots, tau) if knots else tau)

    def _planner(self, tau: int) -> Controller:
        """The inner controller controlling ``tau`` steps (its knots capped at ``tau``)."""
        knots = self.inner.config.num_knots
        return self.inner.with_config(tau=tau, num_knots=None if knots is None else min(knots, tau))

    def _shift(self, state: PlannerState, tau: int, steps: int, next_tau: int) -> PlannerState:
        """The next plan: the last plan's proposal moved ``steps`` forward (random streams go on)."""
        return state.shift(self._hold(tau), steps, self.loop.fill, to=self._hold(next_tau))
