"""Closeness to the base model: the teacher-forced scoring pass (`LMDynamics.closeness_to_base`),
the pre-logit scale (`prelogit_rms`) and a relative sigma on a language model."""

from __future__ import annotations

import math

import pytest
import torch

from mpc_llm.controllers import AISP, BestOfN
from mpc_llm.core import make_generators
from mpc_llm.dynamics import LMDynamics
from mpc_llm.lm.testing import TINY_ARCHITECTURES
from mpc_llm.rewards import KeywordReward

PROMPTS = ["Hello there! How are you today?", "A", "Optimal control steers"]


def lm_for(tiny_lm, arch: str, **options) -> LMDynamics:
    model, tok = tiny_lm(arch)
    options.setdefault("chat_template", False)
    return LMDynamics(model, tok, PROMPTS, **options)


def mean_logp(logp: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return logp.sum(-1).double() / lengths.double()


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_teacher_forced_scores_equal_the_decodes_log_probs(tiny_lm, arch: str) -> None:
    """At temperature 1 the base log-likelihood is the decode's base log-prob of each token; with the
    controls, the steering log-ratio is the decode's ``kl_to_base`` (at the sampling temperature)."""
    g = torch.Generator().manual_seed(0)
    for temperature in (1.0, 0.7):
        lm = lm_for(tiny_lm, arch, max_new_tokens=8, temperature=temperature, return_logprobs=True)
        controls = 2.0 * torch.randn(3, 2, 5, lm.control_dim, generator=g)  # tau = 5 of 8 tokens
        rollout = lm.rollout(controls, make_generators(1, 3))
        got = lm.closeness_to_base(rollout, controls)
        assert got["kl_estimate"].shape == (3, 2)
        torch.testing.assert_close(got["kl_estimate"], rollout.kl_to_base().double(), atol=2e-4, rtol=1e-4)
        if temperature == 1.0:
            want = mean_logp(rollout.base_logprobs, rollout.lengths)
            torch.testing.assert_close(got["base_logp_mean"], want, atol=2e-4, rtol=1e-4)
        else:  # base log-likelihood at temperature 1, whatever the sampling temperature
            hot = lm_for(tiny_lm, arch, max_new_tokens=8, temperature=1.0)
            at_one = hot.closeness_to_base(rollout)["base_logp_mean"]
            torch.testing.assert_close(at_one, got["base_logp_mean"])


def test_zero_control_has_zero_steering_log_ratio_and_batches_do_not_matter(tiny_lm) -> None:
    lm = lm_for(tiny_lm, "llama", max_new_tokens=10)
    rollout = lm.sample(4, make_generators(0, 3))
    zeros = torch.zeros(3, 4, 10, lm.control_dim)
    got = lm.closeness_to_base(rollout, zeros)
    assert torch.equal(got["kl_estimate"], torch.zeros(3, 4, dtype=torch.float64))
    assert bool((got["base_logp_mean"] < 0).all())
    one = lm.with_prompts([PROMPTS[2]]).closeness_to_base(rollout.problems([2]))
    torch.testing.assert_close(one["base_logp_mean"][0], got["base_logp_mean"][2], atol=1e-5, rtol=1e-5)


def test_prelogit_rms_is_the_head_inputs_scale_and_sets_a_relative_sigma(tiny_lm) -> None:
    lm = lm_for(tiny_lm, "qwen2", max_new_tokens=6)
    rms = lm.prelogit_rms()
    assert rms.shape == (3,) and bool((rms > 0).all()) and rms.dtype == torch.float64
    result = AISP(sigma_relative=0.5, lambda_=1.0, num_samples=4, num_knots=1).optimize(
        lm, KeywordReward(["the"]).as_cost(), seed=0, num_iterations=1
    )
    torch.testing.assert_close(result.settings["control_scale"], rms)
    torch.testing.assert_close(result.settings["sigma"], 0.5 * rms.to(lm.dtype).double())
    plain = BestOfN(num_samples=2).optimize(lm, KeywordReward(["the"]).as_cost(), seed=0, num_iterations=1)
    assert torch.equal(plain.settings["sigma"], torch.zeros(3, dtype=torch.float64))
    assert math.isfinite(float(result.best_cost[0]))
