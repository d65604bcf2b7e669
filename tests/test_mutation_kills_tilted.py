"""The tilted model's estimates (``core/tilted.py``), the cases its mutation run left untested
(issue 36): the figures a record carries, invalid samples (weight 0, counted in ``M``), a row with
no valid sample, problems estimated independently, and float64 accuracy from low-precision inputs."""

from __future__ import annotations

import math

import pytest
import torch

from mpc_llm.core.tilted import tilted_estimate

LN2, LN3 = math.log(2.0), math.log(3.0)


def test_each_problems_figures_are_its_own_beta_log_z_kl_and_ess() -> None:
    """Soft best-of-N at beta 1 (log-weights = rewards). Problem 0, equal rewards: the tilted model is
    the base model (log Z 0, KL 0, ESS 1). Problem 1, rewards (0, ln 3): weights 1 and 3, log Z =
    ln 2, normalised (1/4, 3/4), KL = 3/4 ln 3 - ln 2, ESS = 1 / (1/16 + 9/16) / 2 = 0.8."""
    costs = torch.tensor([[0.0, 0.0], [0.0, -LN3]])
    est = tilted_estimate(-costs, costs, 1.0)
    assert est.figures(0) == pytest.approx({"beta": 1.0, "log_z": 0.0, "kl_tilted": 0.0, "ess": 1.0})
    assert est.figures(1) == pytest.approx(
        {"beta": 1.0, "log_z": LN2, "kl_tilted": 0.75 * LN3 - LN2, "ess": 0.8}
    )


def test_invalid_samples_get_weight_zero_and_still_count_in_m() -> None:
    """A NaN cost, a NaN log-weight, an infinite cost: each makes its sample invalid, leaving one of
    two samples: weights (1, 0), log Z = ln(1/2), KL = ln 2 (the KL of the weights to the sample),
    ESS 1/2."""
    log_weights = torch.tensor([[0.0, 0.0], [0.0, math.nan], [0.0, 0.0]])
    costs = torch.tensor([[0.0, math.nan], [0.0, 0.0], [0.0, math.inf]])
    est = tilted_estimate(log_weights, costs, 1.0)
    assert torch.equal(est.weights, torch.tensor([[1.0, 0.0]] * 3, dtype=torch.float64))
    for b in range(3):
        assert est.figures(b) == pytest.approx({"beta": 1.0, "log_z": -LN2, "kl_tilted": LN2, "ess": 0.5})


def test_a_problem_with_no_valid_sample_has_zero_weights() -> None:
    est = tilted_estimate(torch.tensor([[math.nan, math.nan], [0.0, 0.0]]), torch.zeros(2, 2), 1.0)
    assert torch.equal(est.weights[0], torch.zeros(2, dtype=torch.float64))
    assert float(est.log_z[0]) == -math.inf
    assert est.weights[1].tolist() == [0.5, 0.5]


def test_a_zero_weight_sample_adds_nothing_to_the_kl_even_when_its_cost_over_beta_overflows() -> None:
    """A sample of log-weight -inf has weight 0; its cost 1e300 over beta 1e-10 overflows to -inf, and
    must not turn the KL into 0 * inf = NaN."""
    est = tilted_estimate(
        torch.tensor([[0.0, -math.inf]]), torch.tensor([[0.0, 1e300]], dtype=torch.float64), 1e-10
    )
    assert est.weights[0].tolist() == [1.0, 0.0]
    assert float(est.kl[0]) == pytest.approx(LN2)


def test_the_estimate_is_float64_accurate_from_bfloat16_inputs() -> None:
    """Log-weights and costs in bfloat16 (three significant digits) are read exactly and the figures
    computed in float64: log Z = ln((1 + e^v) / 2) for the bfloat16 value v of ln 3."""
    log_weights = torch.tensor([[0.0, LN3]], dtype=torch.bfloat16)
    v = float(log_weights[0, 1])
    est = tilted_estimate(log_weights, -log_weights, 1.0)
    log_z = math.log((1 + math.exp(v)) / 2)
    w1 = math.exp(v) / (1 + math.exp(v))
    assert float(est.log_z[0]) == pytest.approx(log_z, rel=1e-12)
    assert float(est.kl[0]) == pytest.approx(w1 * v - log_z, rel=1e-12)
    assert float(est.ess[0]) == pytest.approx(1 / (w1**2 + (1 - w1) ** 2) / 2, rel=1e-12)
