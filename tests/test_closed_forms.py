"""AISP's importance-sampling estimate of the optimal mean against closed forms.

The closed forms are stated in docs/architecture.md, "The control problem".

One AISP iteration from a proposal N(U, s^2 I) returns U' = sum_i w_i V_i, the self-normalised IS
estimate of the mean of q* ∝ exp(r / lambda) N(0, s^2 I). Its error per coordinate is about
std(q*) / sqrt(ESS); the tests allow 6 of those, with ESS read from the controller's own stats.
"""

from __future__ import annotations

import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mpc_llm.controllers import AISP
from mpc_llm.dynamics import IdentityDynamics, LinearCost, QuadraticCost

NUM_SAMPLES = 20_000
coords = st.floats(min_value=-1.0, max_value=1.0)
shapes = st.sampled_from([(1, 1), (1, 2), (3, 1)])


def one_aisp_step(cost, U: torch.Tensor, sigma: float, lambda_: float, alpha: float, seed: int):
    tau, d = U.shape
    system = IdentityDynamics(horizon=tau, control_dim=d)
    aisp = AISP(sigma=sigma, lambda_=lambda_, alpha=alpha, num_samples=NUM_SAMPLES)
    state = aisp.init_state(system, mean=U.unsqueeze(0))
    result = aisp.optimize(system, cost, seed=seed, num_iterations=1, state=state)
    return result.mean[0], float(result.history[0].stats["ess"][0])


def assert_within_ess_tolerance(estimate, target, std, ess) -> None:
    tolerance = 6.0 * std / ess**0.5 + 1e-3
    error = (estimate - target).abs().max().item()
    assert error < tolerance, f"error {error:.4f} > tolerance {tolerance:.4f} (ESS {ess:.0f})"


@settings(max_examples=25)
@given(
    shape=shapes,
    sigma=st.floats(0.3, 2.0),
    lambda_=st.floats(0.5, 5.0),
    data=st.data(),
    seed=st.integers(0, 2**31),
)
def test_linear_reward_optimal_mean(shape, sigma, lambda_, data, seed) -> None:
    """r(V) = <a, V>: q* = N(s^2 a / lambda, s^2 I)."""
    n = shape[0] * shape[1]
    a = torch.tensor(data.draw(st.lists(coords, min_size=n, max_size=n)), dtype=torch.float64).view(shape)
    target = sigma**2 * a / lambda_
    offset = torch.tensor(data.draw(st.lists(coords, min_size=n, max_size=n)), dtype=torch.float64)
    U = target + sigma * offset.view(shape)  # an arbitrary proposal mean within one sigma per coordinate
    estimate, ess = one_aisp_step(LinearCost(a), U, sigma, lambda_, alpha=0.0, seed=seed)
    assume(ess > 50)
    assert_within_ess_tolerance(estimate, target, sigma, ess)


@settings(max_examples=25)
@given(
    shape=shapes,
    sigma=st.floats(0.3, 2.0),
    lambda_=st.floats(0.5, 5.0),
    c=st.floats(0.05, 2.0),
    data=st.data(),
    seed=st.integers(0, 2**31),
)
def test_quadratic_reward_optimal_mean(shape, sigma, lambda_, c, data, seed) -> None:
    """r(V) = -c ||V - g||^2: mean (2c/lambda) g / (1/s^2 + 2c/lambda), precision 1/s^2 + 2c/lambda."""
    n = shape[0] * shape[1]
    g = 2 * torch.tensor(data.draw(st.lists(coords, min_size=n, max_size=n)), dtype=torch.float64).view(shape)
    precision = 1 / sigma**2 + 2 * c / lambda_
    target = (2 * c / lambda_) * g / precision
    U = torch.tensor(data.draw(st.lists(coords, min_size=n, max_size=n)), dtype=torch.float64).view(shape)
    U = target + sigma * U
    estimate, ess = one_aisp_step(QuadraticCost(g, c=c), U, sigma, lambda_, alpha=0.0, seed=seed)
    assume(ess > 50)
    assert_within_ess_tolerance(estimate, target, precision**-0.5, ess)


@settings(max_examples=15)
@given(sigma=st.floats(0.3, 2.0), lambda_=st.floats(0.5, 5.0), data=st.data(), seed=st.integers(0, 2**31))
def test_alpha_one_is_a_reward_softmax_around_the_proposal(sigma, lambda_, data, seed) -> None:
    """alpha = 1 drops the likelihood ratio: for r = <a, V>, U' -> U + s^2 a / lambda (MPPI)."""
    a = torch.tensor(data.draw(st.lists(coords, min_size=2, max_size=2)), dtype=torch.float64).view(1, 2)
    U = 2 * torch.tensor(data.draw(st.lists(coords, min_size=2, max_size=2)), dtype=torch.float64).view(1, 2)
    estimate, ess = one_aisp_step(LinearCost(a), U, sigma, lambda_, alpha=1.0, seed=seed)
    assume(ess > 50)
    assert_within_ess_tolerance(estimate, U + sigma**2 * a / lambda_, sigma, ess)


def test_iterating_aisp_converges_to_the_anchored_optimum() -> None:
    """Repeated alpha = 0 updates stay at the fixed point q* whatever the start."""
    a = torch.tensor([[0.5, -1.0]], dtype=torch.float64)
    system = IdentityDynamics(horizon=1, control_dim=2)
    aisp = AISP(sigma=1.0, lambda_=2.0, alpha=0.0, num_samples=4000)
    state = aisp.init_state(system, mean=torch.tensor([[[3.0, 3.0]]], dtype=torch.float64))
    result = aisp.optimize(system, LinearCost(a), seed=1, num_iterations=8, state=state)
    torch.testing.assert_close(result.mean[0], a / 2.0, atol=0.08, rtol=0)
