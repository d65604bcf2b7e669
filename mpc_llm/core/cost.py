"""Cost functions: rollout -> ``(B, N)`` costs, lower is better.

Cost functions form a vector space: ``c1 + c2``, ``2.0 * c``, ``-c`` and ``c1 - c2`` are cost
functions (`SumCost`). A reward becomes a cost by negation (``reward.as_cost()``).

A cost function may also report named quantities it computed on the way, through `evaluate`: a
reward term reports ``"reward"`` (the reward as the reward scored it), a KL term ``"kl"``. Sums
merge them (quantities of the same name add up), so results and records carry the reward and the
cost separately: adding a KL or control penalty to the objective changes the cost, never the
recorded reward of a response.

Example:
    >>> import torch
    >>> from mpc_llm.core import Rollout
    >>> effort = CostFunction.from_fn(lambda r: r.controls.pow(2).sum(dim=(-1, -2)), "effort")
    >>> total = 0.5 * effort + effort
    >>> total(Rollout(controls=torch.ones(1, 2, 3, 4))).tolist()
    [[18.0, 18.0]]
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from torch import Tensor

from mpc_llm.core.rollout import Rollout
from mpc_llm.core.weighted import WeightedTerms

#: Named ``(B, N)`` quantities a cost function reports beside its costs (e.g. ``{"reward": ...}``).
Metrics = dict[str, Tensor]


class CostFunction(ABC):
    """Maps a rollout to a ``(B, N)`` tensor of costs (lower is better)."""

    @property
    def accepts_partial(self) -> bool:
        """Whether it can score partial trajectories (e.g. unfinished text), as receding-horizon
        control with ``score="horizon"`` asks. True unless a term says otherwise."""
        return True

    @abstractmethod
    def __call__(self, rollout: Rollout) -> Tensor:
        """Return the ``(B, N)`` costs of ``rollout``."""

    def evaluate(self, rollout: Rollout) -> tuple[Tensor, Metrics]:
        """The ``(B, N)`` costs and the named ``(B, N)`` quantities scored on the way (default none).

        Terms that score something worth recording (a reward, a KL estimate) override this and
        `__call__` returns ``evaluate(rollout)[0]``.
        """
        return self(rollout), {}

    @staticmethod
    def from_fn(fn: Callable[[Rollout], Tensor], name: str | None = None) -> CostFunction:
        """Wrap a plain function ``rollout -> (B, N)`` as a cost function."""
        return FunctionCost(fn, name)

    def __add__(self, other: CostFunction) -> CostFunction:
        if not isinstance(other, CostFunction):
            return NotImplemented
        return SumCost([(1.0, self), (1.0, other)])

    def __sub__(self, other: CostFunction) -> CostFunction:
        if not isinstance(other, CostFunction):
            return NotImplemented
        return SumCost([(1.0, self), (-1.0, other)])

    def __mul__(self, weight: float) -> CostFunction:
        if not isinstance(weight, (int, float)):
            return NotImplemented
        return SumCost([(float(weight), self)])

    __rmul__ = __mul__

    def __neg__(self) -> CostFunction:
        return SumCost([(-1.0, self)])


class FunctionCost(CostFunction):
    """A cost given by a function ``rollout -> (B, N)``."""

    def __init__(self, fn: Callable[[Rollout], Tensor], name: str | None = None) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "fn")

    def __call__(self, rollout: Rollout) -> Tensor:
        return self.fn(rollout)

    def __repr__(self) -> str:
        return f"FunctionCost({self.name})"


class SumCost(WeightedTerms[CostFunction], CostFunction):
    """A weighted sum ``sum_k w_k c_k`` of cost functions (nested sums are flattened).

    `evaluate` merges the terms' metrics, unweighted: quantities of the same name add up.
    """

    def __init__(self, terms: Sequence[tuple[float, CostFunction]]) -> None:
        super().__init__(terms, CostFunction)

    @property
    def accepts_partial(self) -> bool:
        return all(term.accepts_partial for _, term in self.terms)

    def __call__(self, rollout: Rollout) -> Tensor:
        return self.evaluate(rollout)[0]

    def evaluate(self, rollout: Rollout) -> tuple[Tensor, Metrics]:
        metrics: Metrics = {}
        evaluated = {id(term): term.evaluate(rollout) for _, term in self.terms}
        for _, term in self.terms:
            for name, value in evaluated[id(term)][1].items():
                metrics[name] = metrics[name] + value if name in metrics else value
        return self.weighted_sum(lambda term: evaluated[id(term)][0]), metrics
