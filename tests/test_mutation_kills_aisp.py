"""AISP (``controllers/aisp.py``), what its mutation run left untested (issue 36): a fixed
temperature is used and reported in float64, not rounded to float32 on the way."""

from __future__ import annotations

import torch

from mpc_llm.controllers import AISP
from mpc_llm.core import importance_weights, likelihood_log_ratio
from mpc_llm.dynamics import IdentityDynamics, LinearCost


def test_a_fixed_lambda_is_used_and_reported_in_float64() -> None:
    """lambda = 0.1 is not a float32 number (float32 reads 0.10000000149): the weights and the
    reported temperature must be the float64 ones."""
    lambda_ = 0.1
    system = IdentityDynamics(horizon=2, control_dim=3, batch_size=2)
    aisp = AISP(sigma=0.7, lambda_=lambda_, num_samples=64)
    result = aisp.optimize(system, LinearCost(a=[1.0, -2.0, 0.5]), seed=[0, 1], num_iterations=1)
    reported = result.history[0].stats["lambda"]
    assert reported.dtype == torch.float64 and reported.tolist() == [lambda_, lambda_]

    state = aisp.init_state(system)
    knots = torch.randn(2, 64, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    costs = torch.randn(2, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    mean = aisp.update(state, knots, costs).mean
    log_ratio = likelihood_log_ratio(state.mean, knots, state.sigma)
    want = importance_weights(costs, torch.full((2,), lambda_, dtype=torch.float64), log_ratio)
    torch.testing.assert_close(mean, (want[:, :, None, None] * knots).sum(dim=1), rtol=1e-13, atol=1e-15)
