"""Sequential Monte Carlo toward the tilted model: particles grow block by block, reweighted and
resampled on the way.

Follows Lew et al., "Sequential Monte Carlo Steering of Large Language Models using Probabilistic
Programs" (2023) and genlm-control, with the twist of Zhao et al. (2024) taken to be the reward on
partial text: ``N`` particles per problem (responses of the base model, zero control) grow
``block`` tokens at a time; after each block a particle's weight is multiplied by
``exp((psi_t - psi_{t-1}) / beta)``, ``psi_t`` the reward of its text so far (``psi_0 = 0``; for a
finished particle, the true reward of its whole text, so the weights telescope to ``exp(r /
beta)``); when the effective sample size of a problem's unfinished particles falls below
``resample_threshold`` of their number, they are resampled (multinomial, by their weights; every
copy gets their mean weight, so the total weight and the ``Z`` estimate stay unbiased). Finished
particles wait with their weights. At the end the answer is drawn by the final weights, whose mean
estimates ``Z`` (`OptimizeResult.population`: ``log Z`` and the tilted model's KL).

Departures: resampling acts on the unfinished particles only (finished ones keep their weights
rather than being copied); the twist is the reward itself (no learned value yet), so the reward
must score partial text unless one block covers the whole episode (then SMC is importance
sampling: soft best-of-N with its ``Z`` estimate); with ``ess_target``, ``beta`` is chosen per
problem on the twist values of the first block where they are not all equal
(`mpc_llm.core.temperature_for_ess`) and then fixed: until then every weight is equal whatever
``beta`` is (a partial text that a reward scores neutral, e.g. VADER's 0 for 16 tokens of a code
answer, would otherwise fix ``beta = +inf``: base samples, never reweighted).

Budgets: each block scores every unfinished particle once (a scored sample) and generates its
tokens; under a total budget ``N`` is the largest whose worst case (every particle running the whole
episode) fits.

Example:
    >>> from mpc_llm.dynamics import ToyLM, ToyReward
    >>> result = SMC(num_particles=32, block=1, beta=1.0).optimize(
    ...     ToyLM.example(), ToyReward.example(), seed=0)
    >>> result.population.rollout.num_samples
    32
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

import torch
from pydantic import Field, field_validator
from torch import Tensor

from mpc_llm.controllers.sampling import BETA_OR_ESS, check_ess_fraction
from mpc_llm.controllers.sequential import Episode, Final, SequentialController, Start, Step, require_partial
from mpc_llm.controllers.state import Alternative, Settings
from mpc_llm.core import (
    BudgetUnit,
    CostFunction,
    Dynamics,
    Population,
    draw_index,
    draw_seeds,
    make_generators,
    temperature_for_ess,
    tilted_estimate,
)
from mpc_llm.core.rollout import stack_problems


class SMCConfig(Settings):
    """SMC settings.

    Attributes:
        num_particles: particles per problem (``N``) when no total budget is given.
        block: tokens (steps) a particle grows between two reweightings.
        beta: the tilted model's temperature, ``> 0`` and finite (or ``ess_target``: the ESS
            fraction the first block's weights reach; neither: ``beta = 1``).
        resample_threshold: resample a problem's unfinished particles when their ESS falls below
            this fraction of their number, in ``(0, 1]`` (1: after every block whose weights
            differ; the test is strict, so equal weights, ESS fraction 1, are not resampled).
    """

    alternatives: ClassVar[tuple[Alternative, ...]] = (BETA_OR_ESS,)

    num_particles: int = Field(16, ge=1)
    block: int = Field(16, ge=1)
    beta: float | None = Field(None, gt=0.0, allow_inf_nan=False)
    ess_target: float | None = None
    resample_threshold: float = 0.5

    @field_validator("ess_target")
    @classmethod
    def _target_in_zero_one(cls, value: float | None) -> float | None:
        return check_ess_fraction(value)

    @field_validator("resample_threshold")
    @classmethod
    def _threshold_in_zero_one(cls, value: float) -> float:
        check_ess_fraction(value, "resample_threshold (the ESS fraction below which SMC resamples)")
        return value


class Particle(NamedTuple):
    """One particle's carry: its problem's random stream (shared by the problem's particles), its
    log-weight, its last twist value ``psi`` taken into the weight, the temperature (NaN while
    ``ess_target`` has not chosen it yet) and, while it has not, the latest twist value (``pending``)
    that the weight will take once it has."""

    stream: torch.Generator
    log_w: float
    psi: float
    beta: float
    pending: float = math.nan


class SMC(SequentialController[SMCConfig, list[Particle]]):
    """Particles of the base model, reweighted by the partial reward and resampled, block by block."""

    config_class = SMCConfig
    preset: ClassVar[dict[str, Any]] = {"num_particles": 8, "ess_target": 0.3}

    def blocks(self, episode: int) -> int:
        """Blocks in an ``episode``-step episode (the most samples one particle scores)."""
        return math.ceil(episode / min(self.config.block, episode))

    def particles(self, episode: int, max_samples: int | None = None, max_tokens: int | None = None) -> int:
        """``N``: ``num_particles``, or the most whose worst case fits the budget."""
        if max_samples is None and max_tokens is None:
            return self.config.num_particles
        need, limit, unit = (
            (self.blocks(episode), max_samples, "samples") if max_samples is not None
            else (episode, max_tokens, "tokens")
        )  # fmt: skip
        assert limit is not None
        if limit < need and unit == "samples":
            raise ValueError(
                f"a budget of {limit} samples is below one SMC particle through the episode ({need} samples: "
                f"{self.blocks(episode)} blocks of {self.config.block}, one scored sample each); raise the "
                f"budget to at least {need} or the block"
            )
        if limit < need:
            raise ValueError(
                f"a budget of {limit} tokens is below one SMC particle through the episode (up to {need} "
                f"tokens, whatever the block); raise the budget to at least {need}"
            )
        return limit // need

    def check_budget(self, episode: int | None, budget: int, unit: BudgetUnit = "samples") -> None:
        """Refuse a budget below one particle's worst case (every block of the episode)."""
        if episode is not None:
            self.particles(episode, **{"max_samples" if unit == "samples" else "max_tokens": budget})

    def check(self, episode: int, cost: Any = None, *, episode_name: str = "the episode length") -> None:
        """Refuse a cost that cannot score partial text when blocks are shorter than the episode."""
        if self.config.block < episode:
            require_partial(
                cost,
                "SMC weights its particles by the reward of their partial text after every block (its "
                "twist), and no value twist is available",
                instead=f"set block >= {episode_name} (one block: importance sampling)",
            )

    def begin(self, dynamics: Dynamics, start: Start) -> tuple[list[int], list[Particle]]:
        """``N`` particles per problem, weight 1, sharing their problem's stream."""
        N = self.particles(dynamics.horizon, start.max_samples, start.max_tokens)
        streams = start.streams(dynamics)
        beta = math.nan if self.config.beta is None else self.config.beta
        owners = [b for b in range(dynamics.batch_size) for _ in range(N)]
        return owners, [Particle(streams[b], 0.0, 0.0, beta) for b in owners]

    def step(
        self, system: Dynamics, cost: CostFunction, episode: Episode[list[Particle]]
    ) -> Step[list[Particle]]:
        """Grow every unfinished particle by one block (zero control) and reweight it."""
        plan = system.with_horizon(min(self.config.block, system.horizon))
        R, carry = system.batch_size, episode.carry
        streams = make_generators(draw_seeds([p.stream for p in carry]), R, system.device)
        rollout = plan.rollout(system.zero_controls(), streams)
        costs, metrics = cost.evaluate(rollout)
        c = costs[:, 0].double().cpu().nan_to_num(nan=math.inf)
        betas = self._choose_betas(c, episode.owners, [p.beta for p in carry])
        out = reweigh(carry, -c, betas)
        return Step(
            chosen=rollout,
            commit=plan.horizon,
            costs=c,
            metrics={k: v[:, 0].double().cpu() for k, v in metrics.items()},
            samples=[1] * R,
            tokens=[int(n) for n in rollout.token_counts()[:, 0].tolist()],
            carry=out,
        )

    def _choose_betas(self, c: Tensor, owners: Sequence[int], betas: list[float]) -> list[float]:
        """``beta`` per row: the given one, or (``ess_target``) per problem on its rows' twist values
        ``-c`` at the first block where they are not all equal; NaN until then."""
        if not any(math.isnan(x) for x in betas):
            return betas
        assert self.config.ess_target is not None
        out = list(betas)
        groups: dict[int, list[int]] = {}
        for i, b in enumerate(owners):
            if math.isnan(betas[i]):
                groups.setdefault(b, []).append(i)
        for rows in groups.values():
            finite = [i for i in rows if math.isfinite(float(c[i]))]
            if not finite:
                continue
            beta_b = float(temperature_for_ess(c[finite].unsqueeze(0), self.config.ess_target)[0])
            if math.isfinite(beta_b):  # +inf: the values are all equal, so no weight moves yet
                for i in rows:
                    out[i] = beta_b
        return out

    def keep(
        self, episode: Episode[list[Particle]], step: Step[list[Particle]], done: list[bool]
    ) -> tuple[list[int], list[Particle]]:
        """Per problem, its unfinished particles, resampled when their ESS fraction is below the
        threshold (each copy with their mean weight)."""
        carry, rows, out = step.carry, [], []
        groups: dict[int, list[int]] = {}
        for i, b in enumerate(episode.owners):
            if not done[i]:
                groups.setdefault(b, []).append(i)
        for alive in groups.values():
            log_w = torch.tensor([carry[i].log_w for i in alive], dtype=torch.float64)
            w = torch.softmax(log_w, dim=0)
            ess = float(1.0 / w.pow(2).sum()) / len(alive) if bool(torch.isfinite(log_w).any()) else 1.0
            if len(alive) > 1 and ess < self.config.resample_threshold:
                stream = carry[alive[0]].stream
                picks = torch.multinomial(w, len(alive), replacement=True, generator=stream).sort().values
                mean = float(torch.logsumexp(log_w, 0)) - math.log(len(alive))
                for j in picks.tolist():
                    rows.append(alive[j])
                    out.append(carry[alive[j]]._replace(log_w=mean))
            else:
                rows.extend(alive)
                out.extend(carry[i] for i in alive)
        return rows, out

    def answer(self, finished: Sequence[Sequence[Final]]) -> tuple[list[Final], Population]:
        """Each problem's answer drawn by its particles' final weights, and the population."""
        particles = [_settled([f.carry[f.row] for f in rows]) for rows in finished]
        log_w = torch.tensor([[p.log_w for p in ps] for ps in particles], dtype=torch.float64)
        costs = torch.tensor([[f.cost for f in rows] for rows in finished], dtype=torch.float64)
        beta = torch.tensor([ps[0].beta for ps in particles], dtype=torch.float64)
        estimate = tilted_estimate(log_w, costs, beta)
        index = draw_index(estimate.weights, [ps[0].stream for ps in particles]).tolist()
        rollout = stack_problems([type(rows[0].rollout).cat([f.rollout for f in rows]) for rows in finished])
        population = Population(rollout=rollout, costs=costs, log_weights=log_w, estimate=estimate)
        return [rows[j] for rows, j in zip(finished, index, strict=True)], population


def reweigh(
    carry: Sequence[Particle], psi: Tensor, betas: Sequence[float], log_ratio: Tensor | None = None
) -> list[Particle]:
    """The particles after a block with twist values ``psi`` ``(R,)``: each log-weight plus
    ``log_ratio`` (a proposal's ``log p - log q`` over the block; None: the base model proposed) and
    ``(psi - its last psi) / beta``. A non-finite ``psi`` zeroes the weight; while ``beta`` is unknown
    (NaN: every twist so far equal) the twist's part waits in ``pending``."""
    out = []
    for i, p in enumerate(carry):
        value = float(psi[i])
        w = p.log_w if log_ratio is None else p.log_w + float(log_ratio[i])
        if not math.isfinite(value):
            out.append(Particle(p.stream, -math.inf, p.psi, betas[i]))
        elif math.isnan(betas[i]):
            out.append(p._replace(log_w=w, pending=value))
        else:
            increment = 0.0 if math.isinf(betas[i]) else (value - p.psi) / betas[i]
            out.append(Particle(p.stream, w + increment, value, betas[i]))
    return out


def _settled(particles: list[Particle]) -> list[Particle]:
    """A problem's finished particles with one temperature: the one ``ess_target`` chose (+inf when
    every value stayed equal), and the weights that waited for it completed by their ``pending``."""
    chosen = [p.beta for p in particles if not math.isnan(p.beta)]
    beta = chosen[0] if chosen else math.inf
    out = []
    for p in particles:
        if math.isnan(p.beta):
            step = 0.0 if math.isinf(beta) or math.isnan(p.pending) else (p.pending - p.psi) / beta
            p = Particle(p.stream, p.log_w + step, p.psi if math.isnan(p.pending) else p.pending, beta)
        out.append(p)
    return out
