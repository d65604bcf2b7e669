"""Importance weights: normalisation, shift invariance, the lambda -> 0 limit, invalid costs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mpc_llm.core import effective_sample_size, importance_weights, likelihood_log_ratio

finite = st.floats(min_value=-50.0, max_value=50.0, allow_nan=False)
cost_rows = st.lists(finite, min_size=1, max_size=12)
lambdas = st.floats(min_value=0.05, max_value=20.0)


def as_costs(rows: list[float]) -> torch.Tensor:
    return torch.tensor([rows], dtype=torch.float64)


@given(cost_rows, lambdas)
def test_weights_are_a_distribution(rows: list[float], lambda_: float) -> None:
    w = importance_weights(as_costs(rows), lambda_)
    assert bool((w >= 0).all())
    assert w.sum().item() == pytest.approx(1.0, abs=1e-9)


@given(cost_rows, lambdas, finite)
def test_weights_are_invariant_to_a_constant_shift(rows: list[float], lambda_: float, shift: float) -> None:
    costs = as_costs(rows)
    torch.testing.assert_close(
        importance_weights(costs + shift, lambda_), importance_weights(costs, lambda_), atol=1e-9, rtol=1e-7
    )


@given(st.lists(st.integers(min_value=-1000, max_value=1000), min_size=2, max_size=10, unique=True))
def test_weights_tend_to_one_hot_on_the_best_as_lambda_vanishes(values: list[int]) -> None:
    costs = as_costs([v / 10 for v in values])  # distinct costs, gaps >= 0.1
    w = importance_weights(costs, lambda_=1e-3)
    best = int(costs.argmin())
    assert w[0, best].item() == pytest.approx(1.0, abs=1e-12)


@given(cost_rows, lambdas)
def test_weights_grow_flatter_as_lambda_grows(rows: list[float], lambda_: float) -> None:
    costs = as_costs(rows)
    ess_small = effective_sample_size(importance_weights(costs, lambda_))
    ess_large = effective_sample_size(importance_weights(costs, 10 * lambda_))
    assert ess_large.item() >= ess_small.item() - 1e-9


def test_invalid_costs_get_zero_weight() -> None:
    costs = torch.tensor([[1.0, float("nan"), 0.5, float("inf"), float("-inf")]])
    w = importance_weights(costs, 1.0)
    assert w[0, 1] == 0 and w[0, 3] == 0 and w[0, 4] == 0
    assert w.sum().item() == pytest.approx(1.0)


def test_a_problem_without_any_finite_cost_raises() -> None:
    costs = torch.tensor([[0.0, 1.0], [float("nan"), float("inf")]])
    with pytest.raises(ValueError, match=r"problem\(s\) \[1\]"):
        importance_weights(costs, 1.0)


@pytest.mark.parametrize("lambda_", [0.0, -1.0])
def test_lambda_must_be_positive(lambda_: float) -> None:
    with pytest.raises(ValueError, match="lambda_ must be > 0"):
        importance_weights(torch.zeros(1, 2), lambda_)


@settings(max_examples=30)
@given(st.floats(0.1, 3.0), st.integers(0, 2**16))
def test_log_ratio_is_the_gaussian_density_ratio_up_to_a_constant(sigma: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    U = torch.randn(1, 3, 2, generator=g, dtype=torch.float64)
    V = torch.randn(1, 5, 3, 2, generator=g, dtype=torch.float64)
    p = torch.distributions.Normal(0.0, sigma)
    q = torch.distributions.Normal(U.unsqueeze(1), sigma)
    exact = p.log_prob(V).sum((-1, -2)) - q.log_prob(V).sum((-1, -2))
    ours = likelihood_log_ratio(U, V, torch.tensor(sigma))
    diff = exact - ours
    torch.testing.assert_close(diff, diff[:, :1].expand_as(diff), atol=1e-6, rtol=1e-6)
