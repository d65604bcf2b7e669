"""Twisted SMC against the exact tilted model of the enumerable toy (issue 34, items 2 and 5).

The soft value ``V(y_<=t) = beta log E_p[exp(r / beta) | y_<=t]`` of `ToyLM.example()` is computed by
enumerating its 31 complete sequences, so the ideal twist is exact here. Each property is paired with
the wrong weight that breaks it: a twist whose final value is not the reward, a steered proposal
whose log-ratio is left out of the weights.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from soft_values import REWARD, soft_values

from mpc_llm.controllers import SMC
from mpc_llm.controllers.twisted_smc import TwistedSMC
from mpc_llm.core import Policy
from mpc_llm.dynamics import ToyLM, exact_tilted
from mpc_llm.values.twist import FunctionTwist, ValueTwist

BETA = 1.0


def prefix_twist(values: dict[tuple[int, ...], float], scale: float = 1.0) -> FunctionTwist:
    def psi(rollout) -> torch.Tensor:  # type: ignore[no-untyped-def]
        return torch.tensor([scale * values[rollout.sequence(r, 0)] for r in range(rollout.batch_size)])

    return FunctionTwist(psi)


def z_hats(controller, runs: int = 400) -> torch.Tensor:  # type: ignore[no-untyped-def]
    result = controller.optimize(ToyLM.example(runs), REWARD, seed=list(range(runs)))
    return result.population.estimate.log_z.exp()


def exact_z() -> float:
    return math.exp(exact_tilted(ToyLM.example(), REWARD, BETA)[2])


def within_four_se(z: torch.Tensor) -> bool:
    return abs(float(z.mean()) - exact_z()) < 4 * float(z.std()) / math.sqrt(len(z))


def population_tv(result, runs: int) -> float:  # type: ignore[no-untyped-def]
    """TV between the tilted model and the mean over runs of each run's weighted population."""
    seqs, p, _ = exact_tilted(ToyLM.example(), REWARD, BETA)
    pop = result.population
    mean: Counter[tuple[int, ...]] = Counter()
    for b in range(runs):
        for n in range(pop.rollout.num_samples):
            mean[pop.rollout.sequence(b, n)] += float(pop.estimate.weights[b, n]) / runs
    return 0.5 * sum(abs(mean[s] - float(q)) for s, q in zip(seqs, p, strict=True))


def test_the_soft_value_is_the_reward_on_complete_sequences() -> None:
    values = soft_values(BETA)
    seqs, _ = ToyLM.example().sequences()
    assert all(values[s] == pytest.approx(REWARD.fn(s)) for s in seqs)
    assert values[(1,)] != pytest.approx(REWARD.fn((1,)))  # on a prefix it is not the partial reward


def test_the_exact_soft_value_twist_is_unbiased_with_less_variance_than_the_reward_twist() -> None:
    """400 runs of 8 particles, block 1, resampled when ESS < 0.9: the mean Z-hat within 4 standard
    errors of the exact Z, and its spread well below plain SMC's (the partial reward as twist)."""
    exact = z_hats(TwistedSMC(num_particles=8, block=1, beta=BETA, resample_threshold=0.9,
                              twist=prefix_twist(soft_values(BETA))))  # fmt: skip
    plain = z_hats(SMC(num_particles=8, block=1, beta=BETA, resample_threshold=0.9))
    assert within_four_se(exact) and within_four_se(plain)
    assert float(exact.std()) < 0.75 * float(plain.std()), (
        float(exact.std()),
        float(plain.std()),
    )  # 0.55 seen


def test_a_poor_twist_stays_unbiased_because_the_reward_ends_every_weight() -> None:
    """Twice the soft value is a poor twist but still a twist: the final weight telescopes to
    exp(r / beta) because a finished particle's value is its reward. A controller that kept the twist
    at the end would estimate E_p[exp(2 V / beta)] instead, far from Z."""
    poor = z_hats(TwistedSMC(num_particles=8, block=1, beta=BETA, resample_threshold=0.9,
                             twist=prefix_twist(soft_values(BETA), scale=2.0)))  # fmt: skip
    assert within_four_se(poor)
    seqs, logp = ToyLM.example().sequences()
    kept = sum(math.exp(lp + 2 * REWARD.fn(s) / BETA) for s, lp in zip(seqs, logp.tolist(), strict=True))
    assert abs(kept - exact_z()) > 10 * float(poor.std()) / math.sqrt(len(poor))  # the test can tell


class Favour(Policy):
    """A steered proposal: a fixed edit of the toy model's log-probabilities toward token 1."""

    def __call__(self, z: torch.Tensor, t: int) -> torch.Tensor:
        self.calls += z.shape[0]
        return torch.tensor([0.0, 1.2, -0.8], dtype=z.dtype).expand_as(z)


class DropsTheRatio(TwistedSMC):
    """The wrong weight: the proposal's log-ratio left out."""

    def _log_ratio(self, rollout):  # type: ignore[no-untyped-def]
        return torch.zeros(rollout.batch_size, dtype=torch.float64)


def test_a_steered_proposal_still_targets_the_tilted_model_and_z() -> None:
    runs, N = 100, 128
    settings = dict(num_particles=N, block=1, beta=BETA, resample_threshold=0.5)
    steered = TwistedSMC(**settings, twist=prefix_twist(soft_values(BETA)), proposal=Favour())
    result = steered.optimize(ToyLM.example(runs), REWARD, seed=list(range(runs)))
    assert population_tv(result, runs) < 0.05
    wrong = DropsTheRatio(**settings, twist=prefix_twist(soft_values(BETA)), proposal=Favour())
    broken = wrong.optimize(ToyLM.example(runs), REWARD, seed=list(range(runs)))
    assert population_tv(broken, runs) > 0.15  # the proposal's law leaks into the answer
    z = z_hats(TwistedSMC(num_particles=8, block=1, beta=BETA, resample_threshold=0.9,
                          twist=prefix_twist(soft_values(BETA)), proposal=Favour()))  # fmt: skip
    assert within_four_se(z)
    z_wrong = z_hats(DropsTheRatio(num_particles=8, block=1, beta=BETA, resample_threshold=0.9,
                                   twist=prefix_twist(soft_values(BETA)), proposal=Favour()))  # fmt: skip
    assert not within_four_se(z_wrong)


def test_the_steered_rollout_records_its_exact_log_ratio() -> None:
    toy = ToyLM.example(2)
    gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    rollout = toy.rollout_feedback(toy.zero_controls(samples=3, steps=toy.horizon), gens, Favour())
    edit = torch.tensor([0.0, 1.2, -0.8], dtype=torch.float64)
    for b in range(2):
        for n in range(3):
            seq = rollout.sequence(b, n)
            want = 0.0
            for k, tok in enumerate(seq):
                base = toy.log_initial if k == 0 else toy.log_transition[seq[k - 1]]
                want += float((base + edit).log_softmax(0)[tok] - base.log_softmax(0)[tok])
            assert float(rollout.kl_to_base()[b, n]) == pytest.approx(want)
    plain = toy.rollout(
        toy.zero_controls(samples=3, steps=toy.horizon), [torch.Generator().manual_seed(0)] * 2
    )
    assert float(plain.kl_to_base().abs().max()) == 0.0


def test_a_value_twist_and_a_value_steered_proposal_run_on_a_language_model(tiny_lm) -> None:
    from mpc_llm.dynamics import LMDynamics
    from mpc_llm.rewards.rules import KeywordReward
    from mpc_llm.values import GradientAscentPolicy, ValueMLP

    model, tok = tiny_lm("llama")
    value = ValueMLP(model.config.hidden_size, width=8, depth=1)
    cost = KeywordReward(["the"]).as_cost()
    lm = LMDynamics(model, tok, ["Hi", "Tell me"], max_new_tokens=6, return_logprobs=True, keep_states=True)
    twist = ValueTwist(value)
    smc = TwistedSMC(num_particles=3, block=2, beta=1.0, twist=twist,
                     proposal=GradientAscentPolicy(value, num_steps=2, step_size=0.5))  # fmt: skip
    result = smc.optimize(lm, cost, seed=[0, 1])
    assert torch.isfinite(result.population.estimate.log_z).all()
    assert twist.evaluations > 0
    # each particle still going after a block had its state read (one more forward) for the twist:
    # 3 particles x the 2 blocks before the last at most; the proposal's evaluations are its
    # gradient steps, so value_evals - grad_steps counts the state reads too (how records made
    # before state_reads existed were completed)
    spent = result.budget.compute_per_problem
    assert all(0 < reads <= 6 for reads in spent["state_reads"])
    columns = (spent["state_reads"], spent["value_evals"], spent["grad_steps"])
    for reads, evals, steps in zip(*columns, strict=True):
        assert reads == pytest.approx(evals - steps)
    no_logprobs = LMDynamics(model, tok, ["Hi"], max_new_tokens=4, keep_states=True)
    with pytest.raises(ValueError, match="return_logprobs"):
        smc.optimize(no_logprobs, cost, seed=0)


def test_a_value_folder_gives_the_twist_and_the_steered_proposal(tiny_lm, tmp_path) -> None:
    from pydantic import ValidationError

    from mpc_llm.dynamics import LMDynamics
    from mpc_llm.rewards.rules import KeywordReward
    from mpc_llm.values import ValueMLP, save_value

    model, tok = tiny_lm("llama")
    lm = LMDynamics(model, tok, ["Hi"], max_new_tokens=4, return_logprobs=True, keep_states=True)
    save_value(ValueMLP(lm.control_dim, 8, 1), {"model": "tiny", "model_fingerprint": lm.model_fingerprint()},
               tmp_path / "v")  # fmt: skip
    cost = KeywordReward(["the"]).as_cost()
    steered = TwistedSMC(num_particles=2, block=2, beta=1.0, value=str(tmp_path / "v"), steer_steps=2)
    twist, proposal = steered._parts(lm)
    assert isinstance(twist, ValueTwist) and proposal is not None
    assert "value_learning" in steered.spec()
    result = steered.optimize(lm, cost, seed=0)
    assert float(result.population.rollout.kl_to_base().abs().max()) > 0  # the proposal was steered
    base = TwistedSMC(num_particles=2, block=2, beta=1.0, value=str(tmp_path / "v"))
    assert base._parts(lm)[1] is None
    assert float(base.optimize(lm, cost, seed=0).population.rollout.kl_to_base().abs().max()) == 0.0
    with pytest.raises(ValidationError, match="give value=FOLDER"):
        TwistedSMC(steer_steps=3)
    with pytest.raises(ValueError, match="return_logprobs"):
        steered.check_system(LMDynamics(model, tok, ["Hi"], max_new_tokens=4, keep_states=True))
    with pytest.raises(ValueError, match="keep_states"):
        base.check_system(LMDynamics(model, tok, ["Hi"], max_new_tokens=4))


def test_a_value_twist_takes_a_given_beta_never_one_chosen_on_its_first_block(tmp_path) -> None:
    """A learned value barely varies over the first block: an ESS-chosen beta would be tiny and the
    final weights collapse, so ``ess_target`` beside ``value`` is refused, by name too, and the
    preset gives a beta on the reward's scale."""
    from pydantic import ValidationError

    from mpc_llm.controllers import build, with_preset

    with pytest.raises(ValidationError, match="give beta on the reward's scale"):
        TwistedSMC(value=str(tmp_path / "v"), ess_target=0.3)
    assert with_preset("twisted_smc")["beta"] == 0.1 and "ess_target" not in with_preset("twisted_smc")
    with pytest.raises(ValidationError, match="give beta on the reward's scale"):
        build(with_preset({"name": "twisted_smc", "value": str(tmp_path / "v"), "ess_target": 0.3}))
    assert TwistedSMC(ess_target=0.3).config.ess_target == 0.3  # a twist of the reward's own scale may


def test_the_final_weights_telescope_to_the_whole_responses_ratio_and_reward(tiny_lm, tmp_path) -> None:
    """On a language model, with blocks after committed tokens: each particle's final log-weight is
    ``log p(y) - log q(y) + r(y) / beta`` of its whole response (never resampled here), so each
    block's ratio counts only that block's tokens. With ``ess_target`` and a twist that is the same
    for every particle at the first block, beta is chosen later and the ratios of the blocks before
    wait in the weights: the same identity holds with the chosen beta."""
    from mpc_llm.dynamics import LMDynamics
    from mpc_llm.rewards.rules import KeywordReward
    from mpc_llm.values import GradientAscentPolicy, ValueMLP

    model, tok = tiny_lm("llama")
    value = ValueMLP(model.config.hidden_size, width=8, depth=1)
    torch.manual_seed(0)
    for p in value.parameters():
        torch.nn.init.normal_(p, std=1.0)
    cost = KeywordReward(["e", "a"]).as_cost()
    lm = LMDynamics(model, tok, ["Hi", "Tell me"], max_new_tokens=6, return_logprobs=True)

    def late(rollout) -> torch.Tensor:  # type: ignore[no-untyped-def]
        """0 for every particle after the first block (2 tokens), their token ids' spread later."""
        ids = rollout.tokens.reshape(-1, rollout.tokens.shape[-1]).double()
        spread = (ids % 7).mean(dim=1) / 7
        return torch.where(rollout.lengths.reshape(-1).cpu() > 2, spread, torch.zeros_like(spread))

    for settings in ({"beta": 0.7}, {"ess_target": 0.5}):
        ascent = GradientAscentPolicy(value, num_steps=2, step_size=0.5)
        smc = TwistedSMC(num_particles=3, block=2, resample_threshold=1e-6, twist=FunctionTwist(late),
                         proposal=ascent, **settings)  # fmt: skip
        pop = smc.optimize(lm, cost, seed=[0, 1]).population
        beta = pop.estimate.beta.unsqueeze(1)
        ratio = -pop.rollout.kl_to_base().double()  # log p - log q over each whole response
        assert float(ratio.abs().max()) > 0  # the proposal was steered
        want = ratio + (-pop.costs) / beta
        assert torch.allclose(pop.log_weights, want, atol=1e-6), (settings, pop.log_weights, want)


class CountingCost:
    """A cost that records every sequence it scores (delegating the rest to the wrapped cost)."""

    def __init__(self, cost) -> None:  # type: ignore[no-untyped-def]
        self.cost, self.scored = cost, []

    def evaluate(self, rollout):  # type: ignore[no-untyped-def]
        rows = range(rollout.batch_size)
        self.scored += [rollout.sequence(b, n) for b in rows for n in range(rollout.num_samples)]
        return self.cost.evaluate(rollout)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.cost, name)


def test_a_twist_calls_the_reward_once_per_particle_on_complete_responses_only() -> None:
    """With a twist the reward never scores partial text: a budget of n scored samples runs n
    particles, each scored once, when its response ends, and the budget counts exactly those calls
    (plain SMC scores every particle after every block, so the same budget buys it fewer)."""
    complete = set(exact_tilted(ToyLM.example(), REWARD, BETA)[0])
    twist = prefix_twist(soft_values(BETA))
    counting = CountingCost(REWARD)
    result = TwistedSMC(block=1, beta=BETA, twist=twist).optimize(
        ToyLM.example(3), counting, seed=[0, 1, 2], max_samples=6
    )
    assert result.population.rollout.num_samples == 6
    assert list(result.budget.samples_per_problem) == [6, 6, 6]
    assert len(counting.scored) == 18 and set(counting.scored) <= complete
    plain = CountingCost(REWARD)
    smc = SMC(block=1, beta=BETA).optimize(ToyLM.example(3), plain, seed=[0, 1, 2], max_samples=6)
    assert smc.population.rollout.num_samples < 6
    assert not set(plain.scored) <= complete  # partial texts scored: what the twist saves
