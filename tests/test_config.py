"""Bad input: invalid configs name the field and the allowed range; shapes that do not match fail."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

from mpc_llm.controllers import AISP, CEM, AISPConfig, BestOfN, CEMConfig, RandomShooting
from mpc_llm.core import ZeroOrderHold
from mpc_llm.dynamics import IdentityDynamics, QuadraticCost


@pytest.mark.parametrize(
    ("make", "field", "message"),
    [
        (lambda: AISP(sigma=-1.0), "sigma", "greater than 0"),
        (lambda: AISP(sigma=0.0), "sigma", "greater than 0"),
        (lambda: AISP(lambda_=0.0), "lambda", "greater than 0"),
        (lambda: AISP(lambda_=-2.0), "lambda", "greater than 0"),
        (lambda: AISP(alpha=1.5), "alpha", "less than or equal to 1"),
        (lambda: AISP(alpha=-0.1), "alpha", "greater than or equal to 0"),
        (lambda: CEM(elite_fraction=0.0), "elite_fraction", "greater than 0"),
        (lambda: CEM(elite_fraction=1.5), "elite_fraction", "less than or equal to 1"),
        (lambda: CEM(smoothing=1.0), "smoothing", "less than 1"),
        (lambda: RandomShooting(sigma=-0.5), "sigma", "greater than or equal to 0"),
        (lambda: BestOfN(num_samples=0), "num_samples", "greater than or equal to 1"),
        (lambda: AISP(num_iterations=0), "num_iterations", "greater than or equal to 1"),
        (lambda: AISP(tau=0), "tau", "greater than or equal to 1"),
        (lambda: AISP(sigma=float("nan")), "sigma", "finite"),
        (lambda: AISP(sigmaa=1.0), "sigmaa", "Extra inputs are not permitted"),
    ],
)
def test_invalid_configs_name_the_field_and_range(make, field: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        make()
    text = str(info.value)
    assert field in text and message in text


def test_best_of_n_has_no_sigma() -> None:
    with pytest.raises(ValidationError, match="sigma"):
        BestOfN(sigma=1.0)


def test_configs_load_from_yaml_and_json(tmp_path) -> None:
    (tmp_path / "aisp.yaml").write_text("sigma: 0.5\nlambda: 0.1\nalpha: 0.25\nnum_samples: 8\n")
    config = AISPConfig.from_file(tmp_path / "aisp.yaml")
    assert (config.sigma, config.lambda_, config.alpha, config.num_samples) == (0.5, 0.1, 0.25, 8)
    (tmp_path / "cem.json").write_text(json.dumps({"elite_fraction": 0.2, "refit_sigma": True}))
    assert CEM(CEMConfig.from_file(tmp_path / "cem.json")).config.refit_sigma
    assert AISP(config, num_samples=4).config.num_samples == 4  # keyword overrides a config


def test_bad_config_files_say_what_is_wrong(tmp_path) -> None:
    with pytest.raises(ValueError, match="cannot read config file"):
        AISPConfig.from_file(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        AISPConfig.from_file(tmp_path / "list.yaml")
    (tmp_path / "broken.json").write_text("{sigma: ")
    with pytest.raises(ValueError, match="cannot parse config file"):
        AISPConfig.from_file(tmp_path / "broken.json")
    (tmp_path / "bad.yaml").write_text("lambda: -1\n")
    with pytest.raises(ValidationError, match="lambda"):
        AISPConfig.from_file(tmp_path / "bad.yaml")


def test_tau_longer_than_the_dynamics_horizon_is_refused() -> None:
    with pytest.raises(ValueError, match="tau=5 exceeds the dynamics' horizon 3"):
        AISP(tau=5).optimize(IdentityDynamics(horizon=3, control_dim=1), QuadraticCost([0.0]))


def test_more_knots_than_steps_is_refused() -> None:
    with pytest.raises(ValueError, match=r"num_knots must be in \[1, tau=3\]"):
        AISP(num_knots=4).optimize(IdentityDynamics(horizon=3, control_dim=1), QuadraticCost([0.0]))


def test_controls_of_the_wrong_shape_are_refused() -> None:
    system = IdentityDynamics(horizon=3, control_dim=2, batch_size=2)
    with pytest.raises(
        ValueError, match=r"controls must have shape \(B, N, tau, d\) = \(2, 'N', 'tau<=3', 2\)"
    ):
        system.check_controls(torch.zeros(2, 4, 3, 5))
    with pytest.raises(ValueError, match="initial mean must have shape"):
        AISP().init_state(system, mean=torch.zeros(1, 3, 2))


def test_budgets_must_be_positive() -> None:
    system = IdentityDynamics(horizon=1, control_dim=1)
    with pytest.raises(ValueError, match="max_samples must be >= 1"):
        AISP().optimize(system, QuadraticCost([0.0]), max_samples=0)
    with pytest.raises(ValueError, match="num_iterations must be >= 1"):
        AISP().optimize(system, QuadraticCost([0.0]), num_iterations=0)


def test_zero_order_hold_chunks() -> None:
    hold = ZeroOrderHold(tau=5, num_knots=2, horizon=7)
    assert hold.knot_of_step.tolist() == [0, 0, 0, 1, 1]
    out = hold.expand(torch.tensor([[1.0], [2.0]]))
    assert out.flatten().tolist() == [1.0, 1.0, 1.0, 2.0, 2.0, 0.0, 0.0]


def test_logprobs_with_truncated_sampling_warn_that_kl_is_not_the_policies() -> None:
    from mpc_llm.lm import LMConfig

    for options in ({"top_k": 5}, {"top_p": 0.9}, {"greedy": True}):
        with pytest.warns(UserWarning, match="unfiltered"):
            LMConfig(return_logprobs=True, **options)
