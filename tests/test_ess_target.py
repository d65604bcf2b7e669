"""The temperature chosen for a target effective sample size (`temperature_for_ess`), and AISP with it."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mpc_llm.controllers import AISP, AISPConfig
from mpc_llm.core import effective_sample_size, importance_weights, temperature_for_ess

TOL = 1e-6  # the stated tolerance on the achieved ESS fraction
costs_ = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
entries = st.one_of(costs_, costs_, costs_, st.sampled_from([float("nan"), float("inf"), float("-inf")]))
rows = st.lists(entries, min_size=1, max_size=16).filter(lambda r: any(math.isfinite(x) for x in r))
targets = st.floats(min_value=1e-3, max_value=1.0, exclude_min=False)


def achieved(costs: torch.Tensor, lam: torch.Tensor, log_ratio: torch.Tensor | None = None) -> torch.Tensor:
    w = importance_weights(costs.to(torch.float64), lam, log_ratio)
    return effective_sample_size(w.to(torch.float64)) / costs.shape[1]


@given(rows, targets)
def test_the_achieved_ess_fraction_is_the_target_for_arbitrary_costs(row: list[float], target: float) -> None:
    """Within TOL of the target whenever the target is attainable; else the nearest attainable end."""
    costs = torch.tensor([row], dtype=torch.float64)
    N = len(row)
    valid = [x for x in row if math.isfinite(x)]
    ties, nvalid = valid.count(min(valid)), len(valid)
    lam = temperature_for_ess(costs, target)
    assert lam.shape == (1,) and bool((lam > 0).all())
    got = float(achieved(costs, lam)[0])
    if len(set(valid)) == 1:  # degenerate: every lambda gives the same (uniform) weights
        assert math.isinf(float(lam[0]))
        assert got == pytest.approx(nvalid / N, abs=1e-12)
    elif ties / N + TOL < target < nvalid / N - TOL:
        assert abs(got - target) <= TOL
    elif target <= ties / N + TOL:  # greedier than the ties allow: all but one-hot on the best
        assert got == pytest.approx(ties / N, abs=2 * TOL)
    else:  # flatter than the valid samples allow: nearly uniform over them
        assert got == pytest.approx(nvalid / N, abs=2 * TOL)


@given(st.lists(costs_, min_size=2, max_size=16, unique=True), st.floats(0.01, 0.99), st.integers(0, 4))
def test_an_attainable_target_is_met_within_the_tolerance(row: list[float], u: float, invalid: int) -> None:
    """The main branch of the test above on every example: distinct valid costs (one lowest) plus a
    few invalid ones, and a target strictly between 1/N and (valid samples)/N."""
    row = row + [float("nan"), float("inf")] * (invalid // 2) + [float("-inf")] * (invalid % 2)
    N, nvalid = len(row), len(row) - invalid
    target = 1 / N + u * (nvalid - 1) / N  # between the ends: one-hot on the best .. uniform on the valid
    assume(1 / N + 2 * TOL < target < nvalid / N - 2 * TOL)
    costs = torch.tensor([row], dtype=torch.float64)
    lam = temperature_for_ess(costs, target)
    assert abs(float(achieved(costs, lam)[0]) - target) <= TOL


@given(st.lists(st.lists(costs_, min_size=4, max_size=4, unique=True), min_size=1, max_size=5), targets)
def test_problems_are_solved_independently_and_deterministically(batch: list[list[float]], target: float):
    costs = torch.tensor(batch, dtype=torch.float64)
    together = temperature_for_ess(costs, target)
    alone = torch.cat([temperature_for_ess(costs[b : b + 1], target) for b in range(len(batch))])
    assert torch.equal(together, alone) and torch.equal(together, temperature_for_ess(costs, target))


@settings(max_examples=40)
@given(st.lists(costs_, min_size=2, max_size=12, unique=True), st.floats(0.05, 0.95), st.floats(-5.0, 5.0))
def test_the_temperature_is_in_the_units_of_the_costs(row: list[float], target: float, log_scale: float):
    """Scaling every cost by ``s`` scales lambda by ``s`` (same weights): no cost scale to tune."""
    assume(target > 1 / len(row) + TOL)  # attainable (below it any small lambda is one-hot: not unique)
    costs = torch.tensor([row], dtype=torch.float64)
    s = math.exp(log_scale)
    lam, lam_s = temperature_for_ess(costs, target), temperature_for_ess(s * costs, target)
    assert float(lam_s[0]) == pytest.approx(s * float(lam[0]), rel=1e-6)


@settings(max_examples=40)
@given(st.lists(costs_, min_size=3, max_size=12, unique=True), st.floats(0.05, 0.95), st.integers(0, 2**16))
def test_with_a_log_ratio_the_target_is_met_when_the_ends_straddle_it(
    row: list[float], u: float, seed: int
) -> None:
    costs = torch.tensor([row], dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    log_ratio = 0.5 * torch.randn(costs.shape, generator=g, dtype=torch.float64)
    N = costs.shape[1]
    at_inf = float(effective_sample_size(torch.softmax(log_ratio, dim=1))[0]) / N
    target = 1 / N + u * (at_inf - 1 / N)  # between the ends (one-hot .. the log-ratio's own ESS)
    assume(1 / N + TOL < target < at_inf - TOL)
    lam = temperature_for_ess(costs, target, log_ratio)
    assert abs(float(achieved(costs, lam, log_ratio)[0]) - target) <= TOL


@pytest.mark.parametrize("target", [0.0, -0.1, 1.5, float("nan")])
def test_a_target_outside_zero_one_is_one_clear_error(target: float) -> None:
    with pytest.raises(ValueError, match=r"ess_target\) must be in \(0, 1\]"):
        temperature_for_ess(torch.zeros(1, 3), target)
    with pytest.raises(ValueError, match="ess_target"):
        AISPConfig(ess_target=target)


def test_lambda_or_ess_target_not_both() -> None:
    assert AISPConfig().lambda_ == 1.0 and AISPConfig().ess_target is None
    assert AISPConfig(ess_target=0.5).lambda_ is None
    with pytest.raises(ValueError, match=r"either lambda .* or ess_target"):
        AISPConfig(lambda_=0.1, ess_target=0.5)
    assert AISPConfig.model_validate({"ess_target": 0.25}).ess_target == 0.25


def test_aisp_reports_the_lambda_it_chose_and_reaches_the_target() -> None:
    """With alpha = 1 (reward softmax) the target is met at every iteration; with alpha = 0 the
    likelihood ratio caps the ESS once the mean has moved (at lambda = inf the weights are p / q), so
    only the first iteration (mean zero, ratio one) is sure to meet it."""
    from mpc_llm.dynamics import IdentityDynamics, LinearCost

    system = IdentityDynamics(horizon=1, control_dim=2, batch_size=3)
    target = torch.full((3,), 0.3, dtype=torch.float64)
    for alpha in (1.0, 0.0):
        result = AISP(sigma=1.0, ess_target=0.3, alpha=alpha, num_samples=200).optimize(
            system, LinearCost(a=[1.0, -1.0]), seed=[0, 1, 2], num_iterations=3
        )
        checked = result.history if alpha == 1.0 else result.history[:1]
        for record in checked:
            assert record.stats["lambda"].shape == (3,)
            assert torch.allclose(record.stats["ess"].double() / 200, target, atol=TOL)
        for record in result.history:
            assert bool((record.stats["ess"].double() / 200 <= 0.3 + TOL).all())
    fixed = AISP(sigma=1.0, lambda_=0.5, num_samples=16).optimize(
        system, LinearCost(a=[1.0, -1.0]), seed=0, num_iterations=1
    )
    assert torch.equal(fixed.history[0].stats["lambda"], torch.full((3,), 0.5, dtype=torch.float64))


def test_a_relative_sigma_on_dynamics_without_pre_logits_is_one_clear_error() -> None:
    from mpc_llm.dynamics import GoalCost, PointMass

    with pytest.raises(ValueError, match=r"sigma_relative needs dynamics with pre-logits.*PointMass"):
        AISP(sigma_relative=0.1, num_samples=4).optimize(PointMass(horizon=5), GoalCost(goal=[1.0, 1.0]))
    with pytest.raises(ValueError, match=r"either sigma .* or sigma_relative"):
        AISPConfig(sigma=0.5, sigma_relative=0.1)
    assert AISPConfig().sigma == 1.0 and AISPConfig(sigma_relative=0.1).sigma is None
