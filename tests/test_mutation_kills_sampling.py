"""The samplers' weighted draw (``controllers/sampling.py``), the cases its mutation run left
untested (issue 36): the weights and figures in closed form, the temperature's two forms and their
bounds, and a soft best-of-N run whose answer, cost, metrics, seed and population are the draw's."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from mpc_llm.controllers import BestOfN, SoftBestOfN
from mpc_llm.controllers.sampling import SamplerConfig, check_ess_fraction, tilted_weights
from mpc_llm.core import draw_index, draw_seeds, make_generators, temperature_for_ess, tilted_estimate
from mpc_llm.dynamics import ToyLM, ToyReward

NAN, INF, LN3 = math.nan, math.inf, math.log(3.0)


def f64(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


# check_ess_fraction and SamplerConfig


@pytest.mark.parametrize("value", [None, 1e-9, 0.5, 1.0])
def test_an_ess_fraction_in_zero_one_or_none_is_kept(value: float | None) -> None:
    assert check_ess_fraction(value) == value
    assert SamplerConfig(ess_target=value).ess_target == value


def test_an_ess_fraction_outside_zero_one_names_the_setting_and_the_value() -> None:
    message = r"^ess_target is a fraction of the samples and must be in \(0, 1\]; got 1.5$"
    with pytest.raises(ValueError, match=message):
        check_ess_fraction(1.5)
    with pytest.raises(ValueError, match=r"^resample_threshold is a fraction .*; got 0.0$"):
        check_ess_fraction(0.0, "resample_threshold")


@pytest.mark.parametrize("beta", [1e-9, 0.5, 1e300])
def test_any_positive_finite_beta_is_accepted(beta: float) -> None:
    assert SamplerConfig(beta=beta).beta == beta


@pytest.mark.parametrize("beta", [0.0, -1.0, INF, NAN])
def test_a_beta_not_positive_and_finite_is_refused(beta: float) -> None:
    with pytest.raises(ValidationError, match="beta"):
        SamplerConfig(beta=beta)


# tilted_weights


def test_the_log_weights_are_minus_cost_over_beta_plus_the_log_ratio() -> None:
    costs, ratio = f64([[0.0, 1.0, 2.0]]), f64([[0.5, 0.0, -0.5]])
    log_w, est = tilted_weights(costs, ratio, 2.0, None)
    assert log_w[0].tolist() == pytest.approx([0.5, -0.5, -1.5], rel=1e-12)
    assert est.beta.tolist() == [2.0]
    want = tilted_estimate(f64([[0.5, -0.5, -1.5]]), costs, 2.0)
    torch.testing.assert_close(est.weights, want.weights, rtol=1e-12, atol=0)
    torch.testing.assert_close(est.log_z, want.log_z, rtol=1e-12, atol=0)


def test_without_a_temperature_beta_is_one() -> None:
    log_w, est = tilted_weights(f64([[0.0, 1.0]]), None, None, None)
    assert log_w[0].tolist() == [0.0, -1.0] and est.beta.tolist() == [1.0]


def test_an_invalid_cost_gets_log_weight_minus_infinity_and_a_nan_log_ratio_counts_as_zero() -> None:
    log_w, est = tilted_weights(f64([[0.0, NAN, 0.0, INF]]), f64([[0.0, 1.0, NAN, 1.0]]), 1.0, None)
    assert log_w[0].tolist() == [0.0, -INF, 0.0, -INF]
    assert est.weights[0].tolist() == [0.5, 0.0, 0.5, 0.0]


def test_an_ess_target_takes_beta_from_the_costs_and_the_log_ratio() -> None:
    costs, ratio = f64([[0.0, 1.0, 2.0, 3.0], [1.0, 0.0, 4.0, 2.0]]), f64([[0.3, 0.0, -0.2, 0.1]] * 2)
    log_w, est = tilted_weights(costs, ratio, 5.0, 0.5)  # the target wins over a given beta
    beta = temperature_for_ess(costs, 0.5, ratio)
    torch.testing.assert_close(est.beta, beta, rtol=0, atol=0)
    torch.testing.assert_close(log_w, -costs / beta.unsqueeze(1) + ratio, rtol=1e-12, atol=0)


def test_equal_costs_under_an_ess_target_give_an_infinite_beta_and_the_ratio_alone() -> None:
    log_w, est = tilted_weights(f64([[2.0, 2.0, NAN]]), f64([[0.0, LN3, 0.0]]), None, 0.5)
    assert math.isinf(est.beta[0]) and log_w[0].tolist() == [0.0, LN3, -INF]
    assert est.weights[0].tolist() == pytest.approx([0.25, 0.75, 0.0], rel=1e-12)


# Sampler.choose and Sampler.optimize (soft best-of-N on the toy model)


def test_choose_draws_by_the_weights_and_reports_their_figures() -> None:
    costs = f64([[0.0, -LN3], [1.0, 1.0]])
    index, figures = SoftBestOfN(beta=1.0, num_samples=2).choose(costs, None, make_generators([5, 6], 2))
    est = tilted_estimate(-costs, costs, 1.0)
    assert index.tolist() == draw_index(est.weights, make_generators([5, 6], 2)).tolist()
    assert set(figures) == {"beta", "log_z", "kl_tilted", "ess"}
    assert figures["beta"].tolist() == [1.0, 1.0]
    assert figures["log_z"].tolist() == pytest.approx([math.log(2.0), -1.0], rel=1e-12)
    assert figures["kl_tilted"].tolist() == pytest.approx([0.75 * LN3 - math.log(2.0), 0.0], abs=1e-12)
    assert figures["ess"].tolist() == pytest.approx([0.8, 1.0], rel=1e-12)


@pytest.mark.parametrize("keep", [False, True])
def test_a_soft_best_of_n_run_returns_the_draw_by_its_weights_over_all_its_samples(keep: bool) -> None:
    """Two iterations of 4 samples: the answer, its cost, controls and metrics are those of the
    sample drawn by ``softmax(-c / beta)`` over the 8, with the uniform of a seed drawn from each
    problem's stream after the run (the stream plain best-of-N ends with)."""
    B, seeds, reward = 3, [11, 12, 13], ToyReward.example()
    result = SoftBestOfN(beta=0.5, num_samples=4).optimize(
        ToyLM.example(B), reward, max_samples=8, seed=seeds, keep_rollouts=keep
    )
    plain = BestOfN(num_samples=4).optimize(ToyLM.example(B), reward, max_samples=8, seed=seeds)
    streams = [torch.Generator() for _ in plain.state.rng]
    for g, rng in zip(streams, plain.state.rng, strict=True):
        g.set_state(rng)
    choice = draw_seeds(streams)
    assert result.settings["choice_seed"].tolist() == choice
    assert all(torch.equal(a, g.get_state()) for a, g in zip(result.state.rng, streams, strict=True))

    pop = result.population
    costs = result.all_costs()
    assert costs.shape == (B, 8) and torch.equal(pop.costs, costs)
    assert torch.equal(pop.log_weights, -costs / 0.5)
    torch.testing.assert_close(pop.estimate.weights, tilted_estimate(-costs / 0.5, costs, 0.5).weights)
    index = draw_index(pop.estimate.weights, make_generators(choice, B))
    rewards = result.all_metric("reward")
    for b in range(B):
        i = int(index[b])
        assert result.best_rollout.sequence(b, 0) == pop.rollout.sequence(b, i)
        assert float(result.best_cost[b]) == float(costs[b, i])
        assert float(result.best_metrics["reward"][b]) == float(rewards[b, i])
    assert torch.equal(result.best_controls, result.best_rollout.controls[:, 0])
    assert set(result.best_metrics) == set(result.history[0].metrics)
    assert len(result.history) == 2 and all((r.rollout is not None) == keep for r in result.history)


def test_the_answer_is_the_drawn_sample_with_its_own_cost_controls_and_metrics_not_the_runs_best() -> None:
    """At a large beta the draw is near uniform, so on some problem it is not the lowest-cost sample:
    the answer's cost, controls and metrics are the drawn sample's (AISP's sampling mode, whose
    controls differ per sample), and by default the history keeps no rollouts."""
    from mpc_llm.controllers import AISPSampler

    B, reward = 6, ToyReward.example()
    sampler = AISPSampler(sigma=0.5, lambda_=1e6, num_samples=4)
    result = sampler.optimize(ToyLM.example(B), reward, max_samples=8, seed=list(range(B)))
    pop, costs = result.population, result.all_costs()
    index = draw_index(pop.estimate.weights, make_generators(result.settings["choice_seed"].tolist(), B))
    assert any(float(costs[b, int(index[b])]) > float(costs[b].min()) for b in range(B))  # a non-best draw
    rewards = result.all_metric("reward")
    for b in range(B):
        i = int(index[b])
        assert float(result.best_cost[b]) == float(costs[b, i])
        assert float(result.best_metrics["reward"][b]) == float(rewards[b, i])
        assert torch.equal(result.best_controls[b], pop.rollout.controls[b, i])
    assert float(pop.rollout.controls.abs().max()) > 0  # the samples' controls differ
    assert all(r.rollout is None for r in result.history)


def test_choose_weights_by_the_proposals_log_ratio_too() -> None:
    """Equal costs, a log-ratio of ln 3 on the second sample: weights (1/4, 3/4), ESS fraction 0.8
    (without the ratio: 1)."""
    costs, log_ratio = f64([[0.0, 0.0]]), f64([[0.0, LN3]])
    _, figures = SoftBestOfN(beta=1.0, num_samples=2).choose(costs, log_ratio, make_generators([5], 1))
    assert figures["ess"].tolist() == pytest.approx([0.8], rel=1e-12)


def test_beta_divides_the_costs_in_float64() -> None:
    """``-c / beta`` exactly as float64 arithmetic gives it (a float32 beta is 0.10000000149...)."""
    log_w, est = tilted_weights(f64([[0.3, 0.7]]), None, 0.1, None)
    assert log_w.tolist() == [[-0.3 / 0.1, -0.7 / 0.1]]
    assert est.beta.dtype == torch.float64
