"""QAlign: Metropolis-Hastings over whole responses, toward the tilted model.

Follows Faria and Smith, "Sample, Don't Search: Rethinking Test-Time Alignment for Language Models"
(2025; code: goncalorafaria/qalign, deep-spin/quest-decoding): a chain per problem starts from a
response ``y`` of the base model; each step keeps a prefix of ``y`` of uniformly random length
``k in {0, ..., |y| - 1}``, regenerates the rest from the base model at temperature 1 on that
prefix (zero control), and accepts the proposal ``y'`` with probability

    min(1, exp((r(y') - r(y)) / beta) |y| / |y'|),

the Metropolis-Hastings ratio of the tilted model ``p exp(r / beta) / Z`` under this proposal (the
base probabilities of the two suffixes cancel). The chain's state after the budget is the answer.
It needs only a reward on finished text.

Departures: the kept prefix is committed onto the prompt's cached prefill (`Dynamics.advance` with
one count per row where the system supports it, as the toy model does; a language model commits
each group of chains with equal prefix lengths in one batch, so a proposal step runs up to one
decode per distinct length), and a step runs the kept prefix through the model once
(``DecodeEngine.extend``) rather than truncating the response's own cache; ``beta`` must be given
(there are no weights to aim an ESS at); no chains are restarted or thinned. The whole chain is one
step of the episode loop (`SequentialController`): its answer is the chain's last state.

Budgets: the first response and every proposal are scored samples (one chain step = one sample),
and every regenerated token counts. Under a budget in tokens a proposal is started only while its
worst case (a whole response regenerated: ``episode`` tokens) fits in what is left, so no chain
spends more than its budget; a budget below the first response and one proposal (``2 * episode``
tokens, as 2 samples in the samples unit) is refused.

Example:
    >>> from mpc_llm.dynamics import ToyLM, ToyReward
    >>> result = QAlign(beta=1.0).optimize(ToyLM.example(), ToyReward.example(), max_samples=20, seed=0)
    >>> result.budget.samples
    20
"""

from __future__ import annotations

import math
import sys
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor

from mpc_llm.controllers.sequential import Episode, SequentialController, Start, Step
from mpc_llm.controllers.state import Settings
from mpc_llm.core import BudgetUnit, CostFunction, Dynamics, Metrics, Rollout, draw_seeds, make_generators
from mpc_llm.core.rollout import stack_problems

Streams = list[torch.Generator]


class QAlignConfig(Settings):
    """QAlign settings.

    Attributes:
        beta: the tilted model's temperature, ``> 0`` and finite, in reward units.
        num_steps: proposals per chain when no budget is given.
    """

    beta: float = Field(1.0, gt=0.0, allow_inf_nan=False)
    num_steps: int = Field(32, ge=1)


def acceptance(cost: Tensor, new_cost: Tensor, length: Tensor, new_length: Tensor, beta: float) -> Tensor:
    """``min(1, exp((r' - r) / beta) |y| / |y'|)`` with ``r = -cost``, ``(R,)`` float64 (0 where the
    proposal's cost is not finite)."""
    log_a = (cost - new_cost) / beta + length.double().log() - new_length.double().log()
    return log_a.clamp(max=0.0).exp().nan_to_num(0.0).masked_fill(~torch.isfinite(new_cost), 0.0)


def regenerate(system: Dynamics, current: Rollout, keep: list[int], generators: Streams) -> Rollout:
    """``(R, 1)`` responses that keep the first ``keep[i]`` steps of ``current``'s row ``i`` and
    continue from the base model (zero control), row ``i`` drawing from ``generators[i]``.

    One rollout with per-row commits where the system declares them (`Dynamics.commits_per_row`);
    otherwise one per distinct prefix length (`Dynamics.select` the rows, `Dynamics.advance` them by
    their common count).
    """
    R = system.batch_size
    if not any(keep):
        return system.rollout(system.zero_controls(), generators)
    if system.commits_per_row:
        return system.advance(current, keep).rollout(system.zero_controls(), generators)
    pieces: dict[int, Rollout] = {}
    for k in sorted(set(keep)):
        rows = [i for i in range(R) if keep[i] == k]
        part = system.select(rows)
        if k > 0:
            part = part.advance(current.problems(rows), k)
        out = part.rollout(part.zero_controls(), [generators[i] for i in rows])
        pieces.update({i: out.problems([j]) for j, i in enumerate(rows)})
    return stack_problems([pieces[i] for i in range(R)])


def _pick(current: Rollout, proposal: Rollout, accept: Tensor) -> Rollout:
    """Per row, ``proposal`` where ``accept`` else ``current`` (``(R, 1)`` rollouts)."""
    return type(current).cat([current, proposal]).take(accept.long().unsqueeze(1))


class QAlign(SequentialController[QAlignConfig, Streams]):
    """One Metropolis-Hastings chain per problem over responses of the base model."""

    config_class = QAlignConfig
    preset: ClassVar[dict[str, Any]] = {"beta": 0.1}

    def check_budget(self, episode: int | None, budget: int, unit: BudgetUnit = "samples") -> None:
        """Refuse a budget below one chain step, the first response and one proposal: 2 samples, or in
        tokens, two whole responses (a proposal may regenerate the whole response)."""
        if unit == "samples" and budget < 2:
            raise ValueError(
                f"a budget of {budget} sample is below one QAlign step (the first response and one "
                "proposal: 2 samples); raise the budget"
            )
        if unit == "tokens" and episode is not None and budget < 2 * episode:
            raise ValueError(
                f"a budget of {budget} tokens is below one QAlign step (the first response and one "
                f"proposal, each up to {episode} tokens: {2 * episode}); raise the budget to at least "
                f"{2 * episode}"
            )

    def begin(self, dynamics: Dynamics, start: Start) -> tuple[list[int], Streams]:
        """One chain per problem, with its problem's stream."""
        B = dynamics.batch_size
        return list(range(B)), start.streams(dynamics)

    def propose(
        self,
        system: Dynamics,
        cost: CostFunction,
        current: Rollout,
        current_cost: Tensor,
        streams: Streams,
        length: Tensor | None = None,
    ) -> tuple[Rollout, Tensor, Metrics, Tensor, list[int]]:
        """One proposal per chain: a uniform prefix of ``current`` kept, the rest regenerated.

        Args:
            length: ``(R,)`` ``|y|`` of each chain's response (default: ``current.token_counts()``,
                right for a response generated from the prompt).

        Returns:
            The ``(R, 1)`` proposals, their ``(R,)`` costs and metrics, the ``(R,)`` acceptance
            probabilities and the prefix lengths kept (``|y'|`` is the proposal's new tokens plus it).
        """
        R = system.batch_size
        length = current.token_counts()[:, 0] if length is None else length
        u = torch.stack(
            [torch.rand((), generator=g, dtype=torch.float64, device=g.device).cpu() for g in streams]
        )
        keep = (u * length.double()).floor().long().clamp(min=0).tolist()
        generators = make_generators(draw_seeds(streams), R, system.device)
        proposal = regenerate(system, current, keep, generators)
        costs, metrics = cost.evaluate(proposal)
        new_cost = costs[:, 0].double().cpu()
        new_length = proposal.token_counts()[:, 0] + torch.tensor(keep)
        accept = acceptance(current_cost, new_cost, length, new_length, self.config.beta)
        return proposal, new_cost, {k: v[:, 0].double().cpu() for k, v in metrics.items()}, accept, keep

    @staticmethod
    def _room(tokens: list[int], max_tokens: int | None, horizon: int) -> Tensor:
        """``(R,)`` whether each chain may start a proposal: its worst case (``horizon`` new tokens, the
        whole response regenerated) fits in the tokens its budget has left."""
        return torch.tensor([max_tokens is None or t + horizon <= max_tokens for t in tokens])

    def step(self, system: Dynamics, cost: CostFunction, episode: Episode[Streams]) -> Step[Streams]:
        """Run every chain for the budget; commit each chain's last state (the whole response)."""
        R, streams = system.batch_size, episode.carry
        zero = system.zero_controls()
        current = system.rollout(zero, make_generators(draw_seeds(streams), R, system.device))
        costs, raw = cost.evaluate(current)
        cost_now = costs[:, 0].double().cpu().nan_to_num(nan=math.inf)
        metrics = {k: v[:, 0].double().cpu() for k, v in raw.items()}
        samples = [1] * R
        tokens = [int(n) for n in current.token_counts()[:, 0].tolist()]
        rereads = [0] * R  # kept prefix tokens each proposal reads again before it regenerates
        length = current.token_counts()[:, 0]  # |y| of each chain's state
        if episode.max_samples is not None:
            proposals = episode.max_samples - 1
        elif episode.max_tokens is not None:
            proposals = sys.maxsize
        else:
            proposals = self.config.num_steps
        active = self._room(tokens, episode.max_tokens, system.horizon)
        for _ in range(proposals):
            if not bool(active.any()):
                break
            proposal, new_cost, new_metrics, prob, keep = self.propose(
                system, cost, current, cost_now, streams, length
            )
            u = torch.stack(
                [torch.rand((), generator=g, dtype=torch.float64, device=g.device).cpu() for g in streams]
            )
            accept = (u < prob) & active
            current = _pick(current, proposal, accept)
            length = torch.where(accept, proposal.token_counts()[:, 0] + torch.tensor(keep), length)
            cost_now = torch.where(accept, new_cost, cost_now)
            metrics = {k: torch.where(accept, new_metrics[k], v) for k, v in metrics.items()}
            counts = proposal.token_counts()[:, 0].tolist()
            for i in range(R):
                if bool(active[i]):
                    samples[i] += 1
                    tokens[i] += int(counts[i])
                    rereads[i] += keep[i]
            active = active & self._room(tokens, episode.max_tokens, system.horizon)
        return Step(
            chosen=current, commit=system.horizon, costs=cost_now, metrics=metrics, samples=samples,
            tokens=tokens, carry=streams, compute={"rereads": rereads},
        )  # fmt: skip
