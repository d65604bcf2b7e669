"""Cost functions: rollout -> ``(B, N)`` costs, lower is better.

Cost functions form a vector space: ``c1 + c2``, ``2.0 * c``, ``-c`` and ``c1 - c2`` are cost
functions. A reward becomes a cost by negation.

Example:
    >>> import torch
    >>> from mpc_llm.rollout import Rollout
    >>> effort = CostFunction.from_fn(lambda r: r.controls.pow(2).sum(dim=(-1, -2)), "effort")
    >>> total = 0.5 * effort + effort
    >>> total(Rollout(controls=torch.ones(1, 2, 3, 4))).tolist()
    [[18.0, 18.0]]
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from torch import Tensor

from mpc_llm.rollout import Rollout


class CostFunction(ABC):
    """Maps a rollout to a ``(B, N)`` tensor of costs (lower is better)."""

    @abstractmethod
    def __call__(self, rollout: Rollout) -> Tensor:
        """Return the ``(B, N)`` costs of ``rollout``."""

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


class SumCost(CostFunction):
    """A weighted sum ``sum_k w_k c_k`` of cost functions (nested sums are flattened)."""

    def __init__(self, terms: Sequence[tuple[float, CostFunction]]) -> None:
        flat: list[tuple[float, CostFunction]] = []
        for weight, term in terms:
            if isinstance(term, SumCost):
                flat.extend((weight * w, t) for w, t in term.terms)
            else:
                flat.append((float(weight), term))
        if not flat:
            raise ValueError("a sum of cost functions needs at least one term")
        self.terms = flat

    def __call__(self, rollout: Rollout) -> Tensor:
        total: Tensor | None = None
        for weight, term in self.terms:
            value = weight * term(rollout)
            total = value if total is None else total + value
        assert total is not None
        return total

    def __repr__(self) -> str:
        return " + ".join(f"{w:g}*{t!r}" for w, t in self.terms)
