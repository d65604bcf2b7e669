"""Weighted sums ``sum_k w_k f_k``: one implementation for cost functions and rewards alike."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from torch import Tensor

T = TypeVar("T")


def check_weight(weight: object) -> float:
    """A finite real weight as a float; a `TypeError` / `ValueError` that says why otherwise."""
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
        raise TypeError(f"a weight must be a real number, got {type(weight).__name__}")
    if not math.isfinite(float(weight)):
        raise ValueError(f"a weight must be finite, got {weight}")
    return float(weight)


class WeightedTerms(Generic[T]):
    """The terms of a weighted sum, with nested sums of the same kind flattened.

    Args:
        terms: ``(weight, term)`` pairs; a term that is itself a `WeightedTerms` of the same class
            contributes its own terms, their weights multiplied.
        kind: the class every term must be an instance of (for the error message).

    Example:
        >>> inner = WeightedTerms([(2.0, "a")], str)
        >>> WeightedTerms([(0.5, inner), (1.0, "b")], str).terms
        [(1.0, 'a'), (1.0, 'b')]
    """

    def __init__(self, terms: Sequence[tuple[float, T]], kind: type) -> None:
        flat: list[tuple[float, T]] = []
        for weight, term in terms:
            w = check_weight(weight)
            if isinstance(term, WeightedTerms) and isinstance(term, type(self)):
                flat.extend((w * tw, t) for tw, t in term.terms)
            elif not isinstance(term, kind):
                raise TypeError(
                    f"a sum of {kind.__name__}s takes {kind.__name__} terms, got {type(term).__name__}"
                )
            else:
                flat.append((w, term))
        if not flat:
            raise ValueError(f"a sum of {kind.__name__}s needs at least one term")
        self.terms = flat

    def weighted_sum(self, value: Callable[[T], Tensor]) -> Tensor:
        """``sum_k w_k value(f_k)``."""
        total: Tensor | None = None
        for weight, term in self.terms:
            v = weight * value(term)
            total = v if total is None else total + v
        assert total is not None
        return total

    def __repr__(self) -> str:
        return " + ".join(f"{w:g}*{t!r}" for w, t in self.terms)
