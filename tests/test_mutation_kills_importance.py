"""Importance weights and the ESS temperature (``core/importance.py``), the cases its mutation run
left untested (issue 36): the ends of `temperature_for_ess`'s bracket in closed form, the gap and
spread read from the valid costs only, the log ratio's range, per-problem temperatures, messages,
precision and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from mpc_llm.core.importance import (
    effective_sample_size,
    importance_weights,
    likelihood_log_ratio,
    temperature_for_ess,
)

NAN, INF = math.nan, math.inf
#: the temperature at which two samples whose costs differ by 1 reach ESS 1.5 (a fraction 3/4): the
#: weight p of the best solves 1 / (p^2 + (1 - p)^2) = 3/2, p = 1/2 + 1/sqrt(12), and
#: p / (1 - p) = e^(1/lambda) = 2 + sqrt(3)
LAMBDA_TWO = 1.0 / math.log(2.0 + math.sqrt(3.0))


def f64(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


# likelihood_log_ratio


def test_the_log_ratio_is_minus_the_mean_dot_the_sample_over_sigma_squared_in_float64() -> None:
    """``-sum <u, v> / sigma^2`` with sigma 0.1 given as a Python float, which float32 would round
    (float32(0.1)^2 is off by about 3e-9 relative): the samples' float64 is kept."""
    mean = f64([[[1.0, 2.0]]])  # (B=1, K=1, d=2)
    samples = f64([[[[3.0, -1.0]], [[0.5, 0.5]]]])  # (B=1, N=2, K=1, d=2)
    ratio = likelihood_log_ratio(mean, samples, 0.1)
    assert ratio.dtype == torch.float64
    expected = [-(3.0 - 2.0) / 0.1**2, -(0.5 + 1.0) / 0.1**2]
    assert ratio[0].tolist() == pytest.approx(expected, rel=1e-13)


# importance_weights and effective_sample_size


def test_the_weights_are_a_softmax_of_minus_cost_over_lambda() -> None:
    w = importance_weights(f64([[0.0, 1.0]]), 2.0)
    p = 1.0 / (1.0 + math.exp(-0.5))
    assert w[0].tolist() == pytest.approx([p, 1.0 - p], rel=1e-12)


def test_a_temperature_per_problem_weights_each_problem_with_its_own() -> None:
    w = importance_weights(f64([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]), torch.tensor([1.0, 2.0, INF]))
    for row, lam in zip(w.tolist(), (1.0, 2.0, INF), strict=True):
        p = 1.0 / (1.0 + math.exp(-1.0 / lam))
        assert row == pytest.approx([p, 1.0 - p], rel=1e-12)


def test_an_infinite_lambda_weights_the_valid_samples_uniformly_and_an_infinite_cost_zero() -> None:
    w = importance_weights(f64([[0.0, 5.0, INF, -INF, NAN]]), INF)
    assert w[0].tolist() == [0.5, 0.5, 0.0, 0.0, 0.0]


def test_a_nan_log_ratio_zeroes_its_sample_and_the_others_take_their_ratio() -> None:
    """Equal costs, log ratios (0, NaN, ln 3): weights (1/4, 0, 3/4)."""
    w = importance_weights(f64([[1.0, 1.0, 1.0]]), 1.0, f64([[0.0, NAN, math.log(3.0)]]))
    assert w[0].tolist() == pytest.approx([0.25, 0.0, 0.75], rel=1e-12)


def test_the_weights_come_back_in_the_costs_dtype() -> None:
    w = importance_weights(torch.tensor([[0.0, 1.0]], dtype=torch.float32), 1.0)
    assert w.dtype == torch.float32


def test_float32_costs_are_weighted_in_float64_and_rounded_once() -> None:
    """Costs (0, 30) in float32 at lambda 0.7: the small weight e^(-30/0.7) / (1 + e^(-30/0.7)) is
    the float32 rounding of its float64 value (float32 logits would be off by about 5e-7)."""
    w = importance_weights(torch.tensor([[0.0, 30.0]], dtype=torch.float32), 0.7)
    small = math.exp(-30.0 / 0.7) / (1.0 + math.exp(-30.0 / 0.7))
    assert w[0, 1].item() == torch.tensor(small, dtype=torch.float32).item()


def test_a_temperature_that_is_not_positive_is_named_in_the_message() -> None:
    with pytest.raises(ValueError, match=r"^lambda_ must be > 0, got \[1.0, 0.0\]$"):
        importance_weights(torch.zeros(2, 2), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"^lambda_ must be > 0, got -1.5$"):
        importance_weights(torch.zeros(1, 2), -1.5)


def test_a_problem_without_a_finite_cost_is_named_in_the_message() -> None:
    message = r"^no sample has a finite cost for problem\(s\) \[0, 2\]; cannot weight samples$"
    costs = f64([[NAN, INF], [0.0, 1.0], [-INF, NAN]])
    with pytest.raises(ValueError, match=message):
        importance_weights(costs, 1.0)
    with pytest.raises(ValueError, match=message):
        temperature_for_ess(costs, 0.5)


def test_the_ess_is_one_over_the_sum_of_squared_weights_per_problem() -> None:
    ess = effective_sample_size(f64([[0.5, 0.25, 0.25], [1.0, 0.0, 0.0]]))
    assert ess.tolist() == pytest.approx([1.0 / 0.375, 1.0], rel=1e-12)


# temperature_for_ess: the ends of the bracket


def test_a_target_below_one_sample_returns_the_lower_end_the_smallest_gap_over_64() -> None:
    """Costs (0, 1, 2, 3): the smallest gap is 1 and the weights at lambda = 1/64 are one-hot to
    e^-64, so ESS 1 is above a target of 0.4 samples: the lower end, 1/64."""
    lam = temperature_for_ess(f64([[0.0, 1.0, 2.0, 3.0]]), 0.1)
    assert float(lam[0]) == pytest.approx(1.0 / 64.0, rel=1e-12)


def test_the_smallest_gap_skips_ties_and_invalid_costs_and_the_lowest_is_the_lowest_valid() -> None:
    """Costs (5, 5, 5.5, 7, NaN, -inf): the tie and the invalid ones are no gap; the smallest is
    0.5, and ESS 2 at the lower end (the tie) is above 1.2 samples: 0.5 / 64."""
    lam = temperature_for_ess(f64([[5.0, 5.0, 5.5, 7.0, NAN, -INF]]), 0.2)
    assert float(lam[0]) == pytest.approx(0.5 / 64.0, rel=1e-12)


def test_a_target_above_the_valid_samples_returns_the_upper_end_1e8_times_the_spread() -> None:
    """Four valid costs spread over 3 and a NaN: ESS at most 4, below 0.9 * 5 = 4.5 samples."""
    lam = temperature_for_ess(f64([[10.0, 11.0, 12.0, 13.0, NAN]]), 0.9)
    assert float(lam[0]) == pytest.approx(3e8, rel=1e-12)


def test_the_lower_end_leaves_room_for_the_range_of_the_log_ratio_over_valid_samples() -> None:
    """Log ratios (0, 2, -1, 0.5) over the valid samples: range 3, so the lower end is 1/(64 + 3).
    The invalid sample's ratio (100) and a valid sample's non-finite one (inf, read as 0) do not
    count."""
    costs = f64([[0.0, 1.0, 2.0, 3.0, NAN]])
    for ratio in ([0.0, 2.0, -1.0, 0.5, 100.0], [0.0, 2.0, -1.0, INF, 100.0]):
        lam = temperature_for_ess(costs, 0.05, f64([ratio]))
        assert float(lam[0]) == pytest.approx(1.0 / 67.0, rel=1e-12), ratio


def test_a_float32_log_ratios_range_is_taken_in_float64() -> None:
    """Ratios (0, e, -pi/10, 0.5) in float32: their range e + pi/10 in float64 (3.03244102...) sets
    the lower end; float32 subtraction would round it to 3.03244114 (a relative 2e-9 in lambda)."""
    ratio = torch.tensor([[0.0, 2.7182817, -0.31415927, 0.5]], dtype=torch.float32)
    spread = float(ratio.double().max() - ratio.double().min())
    lam = temperature_for_ess(f64([[0.0, 1.0, 2.0, 3.0]]), 0.05, ratio)
    assert float(lam[0]) == pytest.approx(1.0 / (64.0 + spread), rel=1e-13)


# temperature_for_ess: the solution


@pytest.mark.parametrize(
    "row,target",
    [([0.0, 1.0], 0.75), ([1000.0, 1001.0], 0.75), ([NAN, 1000.0, INF, 1001.0], 0.375)],
)
def test_two_samples_a_cost_apart_reach_ess_one_and_a_half_at_the_closed_form(
    row: list[float], target: float
) -> None:
    """Two valid samples (the smallest N that bisects), offset or among invalid ones: ESS 1.5 at
    lambda = 1 / ln(2 + sqrt 3)."""
    lam = temperature_for_ess(f64([row]), target)
    assert float(lam[0]) == pytest.approx(LAMBDA_TWO, rel=1e-9)


def test_the_returned_temperature_reaches_the_target_from_above() -> None:
    """Bisection keeps ESS(lo) < target <= ESS(hi) and returns hi: the ESS reached is at least the
    target, by no more than the bracket's last width."""
    costs = f64([[0.0, 1.0]])
    lam = temperature_for_ess(costs, 0.75, steps=30)
    ess = float(effective_sample_size(importance_weights(costs, float(lam[0])))[0])
    assert 1.5 <= ess < 1.5 + 1e-6


def test_no_bisection_step_returns_the_upper_end() -> None:
    lam = temperature_for_ess(f64([[0.0, 1.0]]), 0.75, steps=0)
    assert float(lam[0]) == pytest.approx(1e8, rel=1e-12)


def test_problems_whose_valid_costs_are_all_equal_get_an_infinite_temperature_alone() -> None:
    lam = temperature_for_ess(f64([[2.0, 2.0, NAN], [NAN, 1.0, INF], [0.0, 1.0, NAN], [3.0, INF, 3.0]]), 0.5)
    assert math.isinf(lam[0]) and math.isinf(lam[1]) and math.isinf(lam[3])
    assert float(lam[2]) == pytest.approx(LAMBDA_TWO, rel=1e-9)  # 0.5 * 3 = 1.5 samples
    assert math.isinf(float(temperature_for_ess(f64([[4.0]]), 1.0)[0]))


def test_float32_costs_are_solved_in_float64() -> None:
    """The float32 values, read exactly into float64: the same temperature as from float64 costs."""
    costs = torch.tensor([[0.1, 0.7, 1.3, 2.9]], dtype=torch.float32)
    lam = temperature_for_ess(costs, 0.5)
    assert lam.dtype == torch.float64 and torch.equal(lam, temperature_for_ess(costs.double(), 0.5))


def test_the_temperature_is_a_constant_no_gradient_flows_through() -> None:
    costs = f64([[0.0, 1.0, 2.0]]).requires_grad_()
    log_ratio = f64([[0.0, 0.1, -0.1]]).requires_grad_()
    lam = temperature_for_ess(costs, 0.5, log_ratio)
    assert lam.dtype == torch.float64 and not lam.requires_grad and lam.grad_fn is None
