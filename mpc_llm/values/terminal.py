"""A terminal value: the cost of a plan that stops before its response ends.

Model predictive control scores each plan on a short horizon (8-16 tokens) instead of rolling it out
to the end of the response; a learned value stands for the rest (POLO, Lowrey et al. 2019; TD-MPC,
Hansen et al. 2022). `TerminalValueCost` wraps the run's cost: a candidate whose response is
complete (ended, or at the episode's last step) costs what the cost says, its true reward; one that
is not costs ``-psi``, the `mpc_llm.values.twist.Twist` of its text (for a learned value, ``V`` of
the pre-logit state at its last generated token: `mpc_llm.lm.LMRollout.last_states`, kept with
``LMConfig(keep_states=True)``). The reward is terminal here (it scores the whole text), so the
value does not add to a reward of the text so far: it replaces it.

Example:
    >>> import torch
    >>> from mpc_llm.dynamics import ToyLM, ToyReward
    >>> from mpc_llm.values.twist import FunctionTwist
    >>> toy, reward = ToyLM.example(), ToyReward.example()  # token 0 ends a sequence
    >>> plans = toy.with_horizon(1).rollout(toy.zero_controls(samples=4), [torch.Generator().manual_seed(1)])
    >>> cost = TerminalValueCost(reward, FunctionTwist(lambda r: torch.full((4,), 7.0)), episode=4)
    >>> plans.tokens[0, :, 0].tolist(), cost(plans)[0].tolist()  # ended: the reward, 0; else -V
    ([0, 1, 1, 0], [-0.0, -7.0, -7.0, -0.0])
"""

from __future__ import annotations

import torch
from torch import Tensor

from mpc_llm.core import CostFunction, Metrics, Rollout
from mpc_llm.values.twist import Twist


class TerminalValueCost(CostFunction):
    """``cost(y)`` for complete responses, ``-psi(y)`` for the others.

    Args:
        cost: the run's cost (its metrics, e.g. the reward of the text so far, are passed on).
        twist: the value of an incomplete response (`Twist`).
        episode: the most steps (tokens) a response has: one that has this many, counted with its
            committed prefix, is complete even without an end-of-sequence token (None: only ended
            responses are).
    """

    def __init__(self, cost: CostFunction, twist: Twist, episode: int | None = None) -> None:
        self.cost, self.twist, self.episode = cost, twist, episode
        #: ``(B,)`` value evaluations so far per problem (the incomplete responses scored)
        self.evaluated: Tensor | None = None

    @property
    def accepts_partial(self) -> bool:
        """True: a partial response is never scored by the reward into the cost, only by the value."""
        return True

    def __call__(self, rollout: Rollout) -> Tensor:
        return self.evaluate(rollout)[0]

    def complete(self, rollout: Rollout) -> Tensor:
        """``(B, N)`` bool: responses that ended, or reached ``episode`` steps."""
        lengths = getattr(rollout, "lengths", None)
        ended = getattr(rollout, "finished", None)
        if lengths is None:
            raise ValueError("a terminal value needs rollouts with lengths and ends (a language model's)")
        done = torch.zeros_like(lengths, dtype=torch.bool) if ended is None else ended.bool()
        if self.episode is not None:
            done = done | (lengths >= self.episode)
        return done.cpu()

    def evaluate(self, rollout: Rollout) -> tuple[Tensor, Metrics]:
        costs, metrics = self.cost.evaluate(rollout)
        B, N = costs.shape
        done = self.complete(rollout)
        if bool(done.all()):
            return costs, metrics
        states = None
        if self.twist.needs_states:
            kept = getattr(rollout, "last_states", None)
            if kept is None:
                raise ValueError(
                    "a terminal value of the pre-logit state needs the decode to keep it: create the "
                    "system with keep_states=True (config: lm.keep_states: true)"
                )
            states = kept.reshape(B * N, -1)
        psi = self.twist(rollout, states).reshape(B, N).to(costs.device, costs.dtype)
        counted = (~done).sum(dim=1).double()
        self.evaluated = counted if self.evaluated is None else self.evaluated + counted
        return torch.where(done.to(costs.device), costs, -psi), metrics

    def __repr__(self) -> str:
        return f"TerminalValueCost({self.cost!r}, episode={self.episode})"
