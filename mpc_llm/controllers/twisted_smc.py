"""Twisted SMC: particles weighted by a twist (a learned value) and grown by a proposal that may be
steered, with the target kept exactly the tilted model.

Zhao et al., "Probabilistic Inference in Language Models via Twisted Sequential Monte Carlo"
(2024). As `mpc_llm.controllers.SMC`, ``N`` particles per problem grow ``block`` tokens at a time
and are resampled when their ESS falls; what changes is the weight. After block ``t`` a particle's
weight is multiplied by

    exp((psi_t - psi_{t-1}) / beta) * prod_{s in block t} p(y_s | y_<s) / q(y_s | y_<s)

with ``psi_0 = 0``, ``psi_t`` the twist (`mpc_llm.values.twist.Twist`) of the particle's text after
block ``t`` (its true reward once it has ended) and ``q`` the proposal: the base model (ratio 1), or
the base model under a state-feedback `mpc_llm.core.Policy` (e.g. RE-Control's value ascent on the
pre-logit), whose exact per-token log-ratio the decode records (``return_logprobs``). The weights telescope to
``p(y) / q(y) * exp(r(y) / beta)``, so their mean is unbiased for ``Z = E_p[exp(r / beta)]`` and
the weighted particles target ``p(y) exp(r(y) / beta) / Z`` whatever the twist and the proposal; the
twist and the proposal only decide the variance. The ideal twist is the soft value ``beta log
E_p[exp(r / beta) | y_<=t]``; a value learned on the pre-logit state (`ValueTwist`) approximates
the expected reward, the soft value's ``beta -> inf`` limit.

What a twist reads: `Twist` sees each particle's partial rollout and, when it asks for them
(``needs_states``, `ValueTwist`), the pre-logit state after the block's last token
(`mpc_llm.lm.LMRollout.last_states`, kept by the decode with ``keep_states``: the state a value of
the whole text so far reads). The twist is evaluated on every unfinished particle after every block;
the reward only on the particles whose response has ended (a scored sample each: a budget of ``n``
scored samples runs ``n`` particles).

Example:
    >>> from mpc_llm.dynamics import ToyLM, ToyReward
    >>> reward = ToyReward.example()
    >>> from mpc_llm.values.twist import FunctionTwist
    >>> twist = FunctionTwist(lambda rollout: -reward(rollout)[:, 0])  # the partial reward: SMC's
    >>> result = TwistedSMC(num_particles=16, block=1, beta=1.0, twist=twist).optimize(
    ...     ToyLM.example(), reward, seed=0)
    >>> result.population.rollout.num_samples
    16
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from pydantic import Field, model_validator
from torch import Tensor

from mpc_llm.controllers.re_control import MAX_STEPS
from mpc_llm.controllers.sequential import Episode, Step
from mpc_llm.controllers.smc import SMC, Particle, SMCConfig, reweigh
from mpc_llm.core import CostFunction, Dynamics, Policy, Rollout, draw_seeds, make_generators
from mpc_llm.values import GradientAscentPolicy, ValuePath, ValueRef
from mpc_llm.values.twist import Twist, ValueTwist

LOGPROBS = (
    "a steered proposal needs the decode's log-probs to weight its particles exactly; create the system "
    "with return_logprobs=True (config: lm.return_logprobs: true)"
)


VALUE_ESS = (
    "ess_target chooses beta on the first block's twist values, and a learned value varies little over "
    "a response's first tokens: the beta it picks is tiny and the final weights, where the reward enters "
    "divided by it, collapse on one particle; give beta on the reward's scale instead (e.g. beta: 0.1)"
)


STATES = (
    "a value twist reads the pre-logit state after each block; create the system with keep_states=True "
    "(config: lm.keep_states: true)"
)


class TwistedSMCConfig(SMCConfig):
    """Twisted SMC's settings: SMC's, and a learned value as the twist and the proposal's guide.

    Attributes:
        value: a value folder (`mpc-llm train-value --out ...`) or its ``.safetensors`` file: the
            twist `ValueTwist` (None: the twist given to the constructor, else the partial reward).
        steer_steps: gradient steps of the value per token steering the proposal (RE-Control's edit,
            `mpc_llm.values.GradientAscentPolicy`; 0: the base model proposes). Needs ``value`` and
            a decode that keeps log-probs (``lm.return_logprobs: true``).
        step_size: ``> 0``, the steering ascent's step.
    """

    value: ValuePath | None = None
    steer_steps: int = Field(0, ge=0, le=MAX_STEPS)
    step_size: float = Field(0.5, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _steering_needs_a_value(self) -> TwistedSMCConfig:
        if self.steer_steps and self.value is None:
            raise ValueError("steer_steps steers the proposal up a learned value; give value=FOLDER too")
        if self.value is not None and self.ess_target is not None:
            raise ValueError(VALUE_ESS)
        return self


class TwistedSMC(SMC):
    """SMC with a `Twist` in place of the partial reward and an optional steered proposal.

    Args:
        config / overrides: `TwistedSMCConfig` settings (SMC's, and ``value``, ``steer_steps``).
        twist: the twist (default: the ``value``'s `ValueTwist`, else the partial reward: SMC).
        proposal: a state-feedback policy steering the particles (default: the ``value``'s ascent
            when ``steer_steps > 0``, else the base model); the system's rollouts must carry
            log-probs (``return_logprobs``) for its exact ratio.
    """

    config_class = TwistedSMCConfig
    preset: ClassVar[dict[str, Any]] = {"num_particles": 8, "beta": 0.1}

    def __init__(
        self,
        config: TwistedSMCConfig | Mapping[str, object] | None = None,
        *,
        twist: Twist | None = None,
        proposal: Policy | None = None,
        **overrides: object,
    ) -> None:
        super().__init__(config, **overrides)
        self.value = None if self.config.value is None else ValueRef(self.config.value)
        self.twist, self.proposal = twist, proposal

    def check(self, episode: int, cost: Any = None, *, episode_name: str = "the episode length") -> None:
        """With a twist the reward never scores partial text into a weight (else SMC's check); the
        value file is one (before any model loads)."""
        if not self._twisted:
            super().check(episode, cost, episode_name=episode_name)
        if self.value is not None:
            self.value.check()

    def particles(self, episode: int, max_samples: int | None = None, max_tokens: int | None = None) -> int:
        """``N``: with a twist each particle's reward is called once, when its response ends, so a
        budget of ``n`` scored samples runs ``N = n`` particles (tokens as SMC); else SMC's."""
        if self._twisted and max_samples is not None:
            return max_samples
        return super().particles(episode, max_samples, max_tokens)

    @property
    def _twisted(self) -> bool:
        return self.twist is not None or self.value is not None

    def check_system(self, system: Any) -> None:
        """The value's card against the model and the run (as RE-Control's), and the log-probs a
        steered proposal's weights need, before the weights load."""
        super().check_system(system)
        if self.value is not None:
            self.value.check_for(system)
        config = getattr(system, "config", None)  # the decoding options (LMConfig), when known
        if self._steered and config is not None and not getattr(config, "return_logprobs", True):
            raise ValueError(LOGPROBS)
        reads_states = self.value is not None or (self.twist is not None and self.twist.needs_states)
        if reads_states and config is not None and not getattr(config, "keep_states", True):
            raise ValueError(STATES)

    def value_params(self) -> int | None:
        """The value network's parameters (from its card), when a value is named."""
        return None if self.value is None else self.value.params()

    def spec(self) -> dict[str, Any]:
        """Class and config, and what the value cost to learn (from its card)."""
        return {**super().spec(), **({} if self.value is None else {"value_learning": self.value.learning()})}

    @property
    def _steered(self) -> bool:
        return self.proposal is not None or self.config.steer_steps > 0

    def _parts(self, system: Dynamics) -> tuple[Twist | None, Policy | None]:
        """The twist and the proposal for ``system``: the constructor's, or the value's."""
        if self.value is None:
            return self.twist, self.proposal
        net = self.value.for_system(system)
        twist = self.twist or ValueTwist(net)
        steps, size = self.config.steer_steps, self.config.step_size
        proposal = self.proposal or (GradientAscentPolicy(net, steps, size) if steps else None)
        return twist, proposal

    def step(
        self, system: Dynamics, cost: CostFunction, episode: Episode[list[Particle]]
    ) -> Step[list[Particle]]:
        """Grow every unfinished particle by one block under the proposal and reweight it."""
        plan = system.with_horizon(min(self.config.block, system.horizon))
        R, carry = system.batch_size, episode.carry
        streams = make_generators(draw_seeds([p.stream for p in carry]), R, system.device)
        twist, proposal = self._parts(system)
        zero = system.zero_controls(steps=plan.horizon)
        before = (0, 0) if proposal is None else (proposal.evaluations, proposal.gradient_steps)
        if proposal is None:
            rollout = plan.rollout(zero, streams)
        else:
            rollout = plan.rollout_feedback(zero, streams, proposal)
        # without a twist (SMC) the reward of every particle's partial text is its twist; with one,
        # the reward scores only the particles whose response is complete and the twist the rest
        if twist is None:
            ended = torch.ones(R, dtype=torch.bool)
        else:
            ended = system.advance(rollout, plan.horizon).finished().cpu()
        c, metrics = self._score(cost, rollout, ended)
        psi = -c
        if twist is not None:
            states = self._states(rollout) if twist.needs_states else None
            psi = torch.where(ended, psi, twist(rollout, states))
        betas = self._choose_betas(-psi, episode.owners, [p.beta for p in carry])
        out = reweigh(carry, psi, betas, None if proposal is None else self._log_ratio(rollout))
        return Step(
            chosen=rollout,
            commit=plan.horizon,
            costs=c,
            metrics=metrics,
            samples=[int(e) for e in ended.tolist()],
            tokens=[int(n) for n in rollout.token_counts()[:, 0].tolist()],
            carry=out,
            compute=self._compute(R, twist, ended if twist is not None else None, proposal, before),
        )

    @staticmethod
    def _score(cost: CostFunction, rollout: Rollout, rows: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The reward of rows ``rows`` (``(R,)`` bool) only: the costs (a NaN reward: cost ``+inf``,
        a zero weight) and metrics, each ``(R,)`` float64, NaN on the other rows (never read: a row's
        cost is its answer's only once it has ended)."""
        R = rows.shape[0]
        index = rows.nonzero().flatten().tolist()
        c = torch.full((R,), math.nan, dtype=torch.float64)
        metrics: dict[str, Tensor] = {}
        if index:
            costs, scored = cost.evaluate(rollout if len(index) == R else rollout.problems(index))
            c[index] = costs[:, 0].double().cpu().nan_to_num(nan=math.inf)
            for k, v in scored.items():
                metrics[k] = torch.full((R,), math.nan, dtype=torch.float64)
                metrics[k][index] = v[:, 0].double().cpu()
        return c, metrics

    @staticmethod
    def _compute(
        R: int, twist: Twist | None, ended: Tensor | None, proposal: Policy | None, before: tuple[int, int]
    ) -> dict[str, list[float]]:
        """Per row: one evaluation of a value twist (unfinished rows), with the state it read (one more
        forward of the block's last token: ``state_reads``), and a steered proposal's evaluations and
        gradient steps in this block (its counters' growth, shared evenly: the decode runs the policy
        on every row at every step)."""
        out: dict[str, list[float]] = {}
        if twist is not None and ended is not None:
            unfinished = [0.0 if bool(e) else 1.0 for e in ended.tolist()]
            if isinstance(twist, ValueTwist):
                out["value_evals"] = unfinished
            if twist.needs_states:
                out["state_reads"] = list(unfinished)
        if proposal is not None:
            evals = (proposal.evaluations - before[0]) / R
            out["value_evals"] = [e + evals for e in out.get("value_evals", [0.0] * R)]
            out["grad_steps"] = [(proposal.gradient_steps - before[1]) / R] * R
        return out

    @staticmethod
    def _states(rollout: Rollout) -> Tensor:
        """``(R, d)`` each row's state after its last token (`LMRollout.last_states`)."""
        states = getattr(rollout, "last_states", None)
        if states is None:
            raise ValueError(STATES)
        return states.reshape(rollout.batch_size * rollout.num_samples, -1)

    def _log_ratio(self, rollout: Rollout) -> Tensor:
        """``(R,)`` ``sum_s log p(y_s) - log q(y_s)`` over the tokens this block generated."""
        q, p = getattr(rollout, "logprobs", None), getattr(rollout, "base_logprobs", None)
        if q is None or p is None:
            raise ValueError(LOGPROBS)
        start = rollout.prefix_lengths[:, 0].cpu()  # type: ignore[attr-defined]
        end = rollout.lengths[:, 0].cpu()  # type: ignore[attr-defined]
        position = torch.arange(q.shape[-1])
        new = (position >= start.unsqueeze(1)) & (position < end.unsqueeze(1))
        return ((p[:, 0] - q[:, 0]).double().cpu() * new).sum(dim=1)
