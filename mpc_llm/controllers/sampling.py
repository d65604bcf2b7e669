"""Samplers: open-loop controllers that return a draw from their weighted samples, not the best.

A sampler weights sample ``i`` by ``w_i ∝ exp(-c_i / beta) p(V_i) / q(V_i)`` (the ratio is 1 for
samples of the base model) and returns sample ``i`` with probability ``w_i``: as the samples grow,
what it returns tends to the tilted model ``p exp(r / beta) / Z``. The same weights estimate
``log Z`` and the tilted model's KL (`mpc_llm.core.tilted_estimate`), which the result carries in
its ``population``.

`Sampler` is a mixin for a `Controller`: it implements `Controller.choose` (the weighted draw,
which a comparison calls to read a run at every budget) and wraps `Controller.optimize` so that the
result's answer is that draw over all the run's samples. The draw's uniform comes from one sub-seed
per problem drawn after the run from its stream (kept in ``settings["choice_seed"]``, so that a
comparison reading the run at any budget draws with the same uniform: common random numbers).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator
from torch import Tensor

from mpc_llm.controllers.state import Alternative, ControllerConfig
from mpc_llm.core import (
    CostFunction,
    Dynamics,
    OptimizeResult,
    Population,
    TiltedEstimate,
    draw_index,
    draw_seeds,
    make_generators,
    temperature_for_ess,
    tilted_estimate,
)

#: ``beta`` or ``ess_target``: the two ways of giving a sampler's temperature.
BETA_OR_ESS: Alternative = (
    ("beta",), ("ess_target",), 1.0, "beta (a fixed temperature)",
    "ess_target (the temperature chosen for a target ESS fraction)",
)  # fmt: skip


def check_ess_fraction(value: float | None, name: str = "ess_target") -> float | None:
    """``value`` if None or in ``(0, 1]``, else a `ValueError` naming ``name``."""
    if value is not None and not 0.0 < value <= 1.0:
        raise ValueError(f"{name} is a fraction of the samples and must be in (0, 1]; got {value}")
    return value


class SamplerConfig(ControllerConfig):
    """Settings of an open-loop sampler.

    Attributes:
        beta: the tilted model's temperature, ``> 0`` and finite, in reward units.
        ess_target: instead of ``beta``, the effective sample size of the weights to reach, as a
            fraction of the samples in ``(0, 1]`` (`mpc_llm.core.temperature_for_ess`, on the
            samples the answer is drawn from). Give one of the two (neither: ``beta = 1``).
    """

    alternatives: ClassVar[tuple[Alternative, ...]] = (BETA_OR_ESS,)

    beta: float | None = Field(None, gt=0.0, allow_inf_nan=False)
    ess_target: float | None = None

    @field_validator("ess_target")
    @classmethod
    def _target_in_zero_one(cls, value: float | None) -> float | None:
        return check_ess_fraction(value)


def tilted_weights(
    costs: Tensor, log_ratio: Tensor | None, beta: float | None, ess_target: float | None
) -> tuple[Tensor, TiltedEstimate]:
    """``(B, M)`` log-weights ``-c / beta + log_ratio`` and their `TiltedEstimate`; ``beta`` per
    problem from ``ess_target`` when given (``+inf`` when all costs are equal: uniform weights)."""
    c = costs.to(torch.float64)
    B = c.shape[0]
    if ess_target is not None:
        beta_t = temperature_for_ess(c, ess_target, log_ratio)
    else:
        beta_t = torch.full((B,), float(beta if beta is not None else 1.0), dtype=torch.float64)
    valid = torch.isfinite(c)
    scaled = torch.where(valid, -c / beta_t.unsqueeze(1), torch.zeros_like(c))
    scaled = torch.where(torch.isinf(beta_t).unsqueeze(1), torch.zeros_like(c), scaled)
    if log_ratio is not None:
        scaled = scaled + log_ratio.to(torch.float64).nan_to_num(0.0)
    log_w = scaled.masked_fill(~valid, float("-inf"))
    return log_w, tilted_estimate(log_w, c, beta_t)


class Sampler:
    """Mixin for a `Controller` whose answer is a weighted draw from its samples (put it first:
    ``class SoftBestOfN(Sampler, BestOfN)``)."""

    #: a comparison reads its answer at a budget by `choose` (a weighted draw), not as the best sample
    answer: ClassVar[Literal["best", "draw"]] = "draw"

    def temperature(self) -> tuple[float | None, float | None]:
        """``(beta, ess_target)`` of the draw (one of them None)."""
        cfg: Any = self.config  # type: ignore[attr-defined]
        return cfg.beta, cfg.ess_target

    def choose(
        self, costs: Tensor, log_ratio: Tensor | None, generators: Sequence[torch.Generator]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """A draw by the weights, and the figures they estimate (``beta``, ``log_z``, ``kl_tilted``,
        ``ess``), each ``(B,)``."""
        _, est = tilted_weights(costs, log_ratio, *self.temperature())
        figures = {"beta": est.beta, "log_z": est.log_z, "kl_tilted": est.kl, "ess": est.ess}
        return draw_index(est.weights, generators), figures

    def optimize(  # type: ignore[no-untyped-def]
        self, dynamics: Dynamics, cost: CostFunction, *, keep_rollouts: bool = False, **options
    ) -> OptimizeResult:
        """The controller's own run, with the answer drawn by the weights over all its samples and
        the weighted population in ``result.population``."""
        result: OptimizeResult = super().optimize(  # type: ignore[misc]
            dynamics, cost, keep_rollouts=True, **options
        )
        state: Any = result.state
        streams = [torch.Generator(device=dynamics.device) for _ in state.rng]
        for g, rng in zip(streams, state.rng, strict=True):
            g.set_state(rng)
        seeds = draw_seeds(streams)  # one sub-seed per problem for the draw, after the run's draws
        state = state.replace(rng=tuple(g.get_state() for g in streams))
        history = result.history
        costs = result.all_costs()
        ratios = [r.log_ratio for r in history]
        log_ratio = None if any(x is None for x in ratios) else torch.cat(ratios, dim=1)  # type: ignore[arg-type]
        log_w, est = tilted_weights(costs, log_ratio, *self.temperature())
        index = draw_index(est.weights, make_generators(seeds, len(seeds)))
        everything = type(history[0].rollout).cat([r.rollout for r in history])  # type: ignore[arg-type, union-attr]
        chosen = everything.take(index.unsqueeze(1))
        pick = index.unsqueeze(1)
        metrics = {
            k: torch.cat([r.metrics[k] for r in history], dim=1).gather(1, pick)[:, 0]
            for k in history[0].metrics
        }
        if not keep_rollouts:
            history = [dataclasses.replace(r, rollout=None) for r in history]
        return dataclasses.replace(
            result,
            best_rollout=chosen,
            best_cost=costs.gather(1, pick)[:, 0],
            best_controls=chosen.controls[:, 0],
            best_metrics=metrics,
            history=history,
            state=state,
            settings={**result.settings, "choice_seed": torch.tensor(seeds, dtype=torch.long)},
            population=Population(rollout=everything, costs=costs, log_weights=log_w, estimate=est),
        )
