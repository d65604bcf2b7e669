"""What `Controller.optimize` returns: the best rollout, the history and the budget spent."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from mpc_llm.core.rollout import Rollout
from mpc_llm.core.tilted import Population

#: What a budget counts: responses scored by the cost (``"samples"``) or tokens generated.
BudgetUnit = Literal["samples", "tokens"]


@dataclass(frozen=True)
class Budget:
    """Resources spent by one optimisation.

    Attributes:
        samples: rollouts scored by the cost, per problem (the most any problem used; a partial
            rollout scored to choose among candidates counts).
        iterations: sample -> rollout -> cost -> update rounds.
        seconds: wall-clock seconds.
        tokens: tokens generated over all problems and samples (0 for non-LLM dynamics).
        samples_per_problem: ``B`` counts of scored rollouts (they differ when episodes end early).
        tokens_per_problem: ``B`` counts of generated tokens.
        compute_per_problem: other work per problem, by name, each ``B`` totals: ``rereads``
            (committed tokens a closed-loop run reads again), ``state_reads`` (states a learned
            value read after a decode: one more forward of its last token each), ``value_evals``
            and ``grad_steps`` (a learned value's evaluations and gradient steps); empty when none
            was counted.
    """

    samples: int = 0
    iterations: int = 0
    seconds: float = 0.0
    tokens: int = 0
    samples_per_problem: tuple[int, ...] = ()
    tokens_per_problem: tuple[int, ...] = ()
    compute_per_problem: dict[str, tuple[float, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class IterationRecord:
    """One iteration of the loop.

    Attributes:
        iteration: 0-based index.
        costs: ``(B, n)`` costs of this iteration's samples (``+inf`` for invalid ones), on the CPU.
        best_cost: ``(B,)`` best cost seen so far, after this iteration.
        best_metrics: the metrics of that best sample (e.g. its ``"reward"``), each ``(B,)``, CPU.
        seconds: wall-clock seconds of this iteration.
        tokens: tokens generated in this iteration.
        stats: controller diagnostics, e.g. AISP's effective sample size ``ess`` ``(B,)``.
        metrics: what the cost function scored on the way, each ``(B, n)`` on the CPU, e.g. the
            reward ``"reward"`` as the reward scored it (see `CostFunction.evaluate`).
        token_counts: ``(B, n)`` tokens generated for each sample (zeros for non-LM dynamics).
        rollout: this iteration's rollout, kept only when ``optimize(..., keep_rollouts=True)``.
        log_ratio: ``(B, n)`` ``log p(V_i) - log q(V_i)`` of each sample's controls under the prior
            and the proposal that drew them (samplers weight by it), or None (controllers that do
            not report it).
    """

    iteration: int
    costs: Tensor
    best_cost: Tensor
    seconds: float
    tokens: int
    stats: dict[str, Tensor] = field(default_factory=dict)
    metrics: dict[str, Tensor] = field(default_factory=dict)
    best_metrics: dict[str, Tensor] = field(default_factory=dict)
    token_counts: Tensor | None = None
    rollout: Rollout | None = None
    log_ratio: Tensor | None = None


@dataclass(frozen=True)
class OptimizeResult:
    """The outcome of `Controller.optimize` for ``B`` problems.

    Attributes:
        best_rollout: the best sample seen for each problem, a rollout with ``N = 1``.
        best_cost: ``(B,)`` its cost.
        best_metrics: what the cost function scored for it (e.g. ``"reward"``), each ``(B,)``.
        best_controls: ``(B, tau, d)`` the controls that produced it.
        mean: ``(B, K, d)`` the final mean ``U`` of a Gaussian controller (in knot space); None
            for controllers without a control mean.
        history: one record per iteration.
        budget: resources spent.
        state: the final controller state, to warm-start a later call.
        settings: per-problem settings resolved when the run started, each ``(B,)`` on the CPU:
            ``sigma``, the absolute initial standard deviation of the proposal (resolved from
            ``sigma_relative`` when given), and then ``control_scale``, the measured scale it is a
            fraction of (a language model's pre-logit RMS on each prompt).
        population: for samplers (soft best-of-N, AISP's sampling mode, SMC), the weighted samples
            the returned response was drawn from, with ``log Z`` and the tilted model's KL
            estimated from their weights (`mpc_llm.core.Population`); None for other controllers.
    """

    best_rollout: Rollout
    best_cost: Tensor
    best_controls: Tensor
    history: list[IterationRecord]
    budget: Budget
    state: object
    mean: Tensor | None = None
    best_metrics: dict[str, Tensor] = field(default_factory=dict)
    settings: dict[str, Tensor] = field(default_factory=dict)
    population: Population | None = None

    def all_metric(self, name: str) -> Tensor:
        """``(B, M)`` the metric ``name`` (e.g. ``"reward"``) of every scored sample, in draw order.

        Raises:
            KeyError: if the cost function did not report ``name`` (the message lists what it did).
        """
        have = self.history[0].metrics if self.history else {}
        if name not in have:
            raise KeyError(f"the cost function reported no {name!r}; it reported {sorted(have)}")
        return torch.cat([record.metrics[name] for record in self.history], dim=1)

    def all_costs(self) -> Tensor:
        """``(B, M)`` the cost of every scored sample, in the order they were drawn (CPU, float64)."""
        return torch.cat([record.costs for record in self.history], dim=1)

    def best_cost_curve(self) -> tuple[Tensor, Tensor]:
        """The anytime curve: best cost after each scored sample.

        Returns:
            ``samples`` ``(M,)`` = 1..M and ``best`` ``(B, M)`` = min cost over the first m samples,
            with ``M`` the total samples per problem, in the order they were drawn.
        """
        costs = self.all_costs()
        best = torch.cummin(costs, dim=1).values
        return torch.arange(1, costs.shape[1] + 1), best
