"""Sequential Monte Carlo (``controllers/smc.py``), the cases its mutation run left untested
(issue 36): the settings and their bounds, the particle count under each budget, the reweighting
of one block, the temperature chosen per problem, resampling, the settled weights, and a run whose
final weights telescope to ``r / beta``."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from mpc_llm.controllers import SMC
from mpc_llm.controllers.sequential import Episode, Step
from mpc_llm.controllers.smc import Particle, SMCConfig, _settled, reweigh
from mpc_llm.core import temperature_for_ess
from mpc_llm.dynamics import ToyLM, ToyReward

NAN, INF = math.nan, math.inf
G = torch.Generator()


def particle(log_w: float = 0.0, psi: float = 0.0, beta: float = 1.0, pending: float = NAN) -> Particle:
    return Particle(G, log_w, psi, beta, pending)


def same(a: Particle, b: Particle) -> bool:
    """Equal fields, NaN equal to NaN."""
    return a.stream is b.stream and all(
        (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, rel=1e-12)
        for x, y in zip(a[1:], b[1:], strict=True)
    )


# settings


def test_the_defaults_are_16_particles_blocks_of_16_and_resampling_below_half() -> None:
    cfg = SMCConfig()
    assert (cfg.num_particles, cfg.block, cfg.beta, cfg.ess_target, cfg.resample_threshold) == (
        16,
        16,
        1.0,
        None,
        0.5,
    )
    assert SMC.preset == {"num_particles": 8, "ess_target": 0.3}


def test_one_particle_and_blocks_of_one_token_are_allowed_zero_is_not() -> None:
    assert SMCConfig(num_particles=1, block=1).num_particles == 1
    for field in ("num_particles", "block"):
        with pytest.raises(ValidationError, match=field):
            SMCConfig(**{field: 0})


def test_a_resample_threshold_outside_zero_one_is_refused_and_named() -> None:
    assert SMCConfig(resample_threshold=1.0).resample_threshold == 1.0
    assert SMCConfig(resample_threshold=1e-9).resample_threshold == 1e-9
    for bad in (0.0, 1.5):
        with pytest.raises(
            ValidationError, match=r"resample_threshold \(the ESS fraction below which SMC resamples\)"
        ):
            SMCConfig(resample_threshold=bad)


# blocks and particles under a budget


@pytest.mark.parametrize("block,episode,blocks", [(4, 10, 3), (5, 10, 2), (16, 10, 1), (1, 4, 4)])
def test_an_episode_takes_the_ceiling_of_its_length_over_the_block(
    block: int, episode: int, blocks: int
) -> None:
    assert SMC(block=block, beta=1.0).blocks(episode) == blocks


def test_the_particles_are_the_most_whose_worst_case_fits_the_budget() -> None:
    smc = SMC(num_particles=5, block=4, beta=1.0)
    assert smc.particles(10) == 5
    assert smc.particles(10, max_samples=3) == 1 and smc.particles(10, max_samples=8) == 2
    assert smc.particles(10, max_tokens=10) == 1 and smc.particles(10, max_tokens=29) == 2


def test_a_budget_below_one_particle_says_what_to_raise_in_its_unit() -> None:
    smc = SMC(block=4, beta=1.0)
    samples = (
        r"^a budget of 2 samples is below one SMC particle through the episode \(3 samples: 3 blocks of 4, "
        r"one scored sample each\); raise the budget to at least 3 or the block$"
    )
    with pytest.raises(ValueError, match=samples):
        smc.check_budget(10, 2, "samples")
    tokens = (
        r"^a budget of 9 tokens is below one SMC particle through the episode \(up to 10 tokens, whatever "
        r"the block\); raise the budget to at least 10$"
    )
    with pytest.raises(ValueError, match=tokens):
        smc.check_budget(10, 9, "tokens")
    smc.check_budget(10, 3, "samples")
    smc.check_budget(10, 10, "tokens")
    smc.check_budget(None, 1, "samples")  # no episode length: nothing to check


def test_one_block_as_long_as_the_episode_needs_no_partial_reward() -> None:
    whole_only = ToyReward.example(accepts_partial=False)
    SMC(block=4, beta=1.0).check(4, whole_only)
    with pytest.raises(ValueError, match="partial"):
        SMC(block=3, beta=1.0).check(4, whole_only)


# reweigh and _settled


def test_a_block_adds_the_log_ratio_and_the_twists_increment_over_beta() -> None:
    carry = [
        particle(0.5, 1.0, 2.0),
        particle(0.5, 1.0, 2.0),
        particle(0.5, 1.0, INF),
        particle(0.5, 1.0, NAN),
    ]
    out = reweigh(
        carry, torch.tensor([3.0, 3.0, 3.0, 3.0]), [2.0, 2.0, INF, NAN], torch.tensor([0.0, 0.25, 0.25, 0.25])
    )
    assert same(out[0], particle(0.5 + 1.0, 3.0, 2.0))  # (3 - 1) / 2
    assert same(out[1], particle(0.75 + 1.0, 3.0, 2.0))
    assert same(out[2], particle(0.75, 3.0, INF))  # an infinite beta moves no weight
    assert same(out[3], particle(0.75, 1.0, NAN, pending=3.0))  # beta unknown: the value waits
    plain = reweigh([particle(0.5, 1.0, 2.0)], torch.tensor([0.0]), [2.0])
    assert same(plain[0], particle(0.0, 0.0, 2.0))


@pytest.mark.parametrize("value", [INF, -INF, NAN])
def test_a_non_finite_twist_zeroes_the_weight_and_keeps_the_last_value(value: float) -> None:
    out = reweigh([particle(0.5, 1.0, 2.0, pending=4.0)], torch.tensor([value]), [3.0])
    assert same(out[0], particle(-INF, 1.0, 3.0))


def test_settling_completes_the_waiting_weights_with_the_chosen_beta() -> None:
    ps = [particle(0.5, 1.0, NAN, pending=3.0), particle(0.0, 2.0, 4.0), particle(0.25, 1.0, NAN)]
    out = _settled(ps)
    assert same(out[0], particle(0.5 + 0.5, 3.0, 4.0))  # (3 - 1) / 4
    assert same(out[1], ps[1])
    assert same(out[2], particle(0.25, 1.0, 4.0))  # nothing pending: the weight stays


def test_settling_without_a_chosen_beta_gives_infinity_and_moves_no_weight() -> None:
    out = _settled([particle(0.5, 1.0, NAN, pending=3.0), particle(0.0, 0.0, NAN)])
    assert same(out[0], particle(0.5, 3.0, INF)) and same(out[1], particle(0.0, 0.0, INF))


# the temperature chosen per problem, and resampling


def test_beta_is_chosen_per_problem_on_its_finite_twists_and_waits_while_they_are_equal() -> None:
    smc = SMC(ess_target=0.75, block=1)
    c = torch.tensor([0.0, 1.0, INF, 2.0, 2.0, INF, INF, 5.0, 6.0], dtype=torch.float64)
    owners = [0, 0, 0, 1, 1, 2, 2, 3, 3]
    betas = smc._choose_betas(c, owners, [NAN] * 7 + [7.0, 7.0])
    two = float(temperature_for_ess(torch.tensor([[0.0, 1.0]], dtype=torch.float64), 0.75)[0])
    assert betas[:3] == [two, two, two]  # the infinite cost's row gets its problem's beta too
    assert all(math.isnan(b) for b in betas[3:7])  # equal values; no finite value
    assert betas[7:] == [7.0, 7.0]  # chosen already
    known = [1.0, 2.0]
    assert smc._choose_betas(c[:2], [0, 0], known) == known


def episode(owners: list[int], carry: list[Particle]) -> Episode:
    return Episode(owners=tuple(owners), carry=carry, samples=(0,) * 3, tokens=(0,) * 3)


def step(carry: list[Particle]) -> Step:
    return Step(
        chosen=None, commit=1, costs=torch.zeros(len(carry)), metrics={}, samples=[], tokens=[], carry=carry
    )  # type: ignore[arg-type]


def test_a_problem_below_the_threshold_is_resampled_by_its_weights_each_copy_with_their_mean() -> None:
    """Problem 0: weights (1, 0, 0), ESS 1 of 3 < 1/2: three copies of the first, each with log
    weight log((1 + 0 + 0) / 3). Problem 1: equal weights, ESS 2 of 2: kept as it is. Problem 2:
    two zero weights (ESS read as all of them): kept. Finished rows are dropped."""
    gen = torch.Generator().manual_seed(0)
    carry = [
        Particle(gen, 0.0, 1.0, 1.0), Particle(gen, -INF, 2.0, 1.0), Particle(gen, -INF, 3.0, 1.0),
        particle(0.3, 4.0), particle(0.3, 5.0), particle(9.0, 6.0),
        particle(-INF, 7.0), particle(-INF, 8.0),
    ]  # fmt: skip
    owners = [0, 0, 0, 1, 1, 1, 2, 2]
    done = [False] * 5 + [True, False, False]
    rows, out = SMC(beta=1.0).keep(episode(owners, carry), step(carry), done)
    assert rows == [0, 0, 0, 3, 4, 6, 7]
    for p in out[:3]:
        assert same(p, Particle(gen, -math.log(3.0), 1.0, 1.0))
    assert out[3:] == [carry[3], carry[4], carry[6], carry[7]]


def test_a_lone_particle_is_never_resampled() -> None:
    carry = [particle(-INF, 1.0)]
    rows, out = SMC(beta=1.0, resample_threshold=1.0).keep(episode([0], carry), step(carry), [False])
    assert rows == [0] and out == carry


# a run


def test_without_resampling_the_final_weights_telescope_to_the_reward_over_beta() -> None:
    """Blocks of one token, resampling never (threshold below any ESS fraction): each particle's
    log weight is the sum of its twist increments, its whole text's reward over beta; the answer is
    one of the particles, drawn by those weights."""
    B, beta = 3, 0.5
    result = SMC(num_particles=5, block=1, beta=beta, resample_threshold=1e-9).optimize(
        ToyLM.example(B), ToyReward.example(), seed=[1, 2, 3]
    )
    pop = result.population
    assert pop.rollout.num_samples == 5 and pop.costs.shape == (B, 5)
    torch.testing.assert_close(pop.log_weights, -pop.costs / beta, rtol=1e-12, atol=1e-12)
    assert pop.estimate.beta.tolist() == [beta] * B
    for b in range(B):
        i = [pop.rollout.sequence(b, n) for n in range(5)].index(result.best_rollout.sequence(b, 0))
        assert float(result.best_cost[b]) == float(pop.costs[b, i]) and float(pop.estimate.weights[b, i]) > 0


@pytest.mark.parametrize("unit", ["samples", "tokens"])
def test_a_budget_sets_the_particle_count(unit: str) -> None:
    """Four blocks of one token: 9 samples fit 2 particles (each scores up to 4); so do 9 tokens
    (each particle's worst case is the episode's 4 tokens)."""
    result = SMC(num_particles=16, block=1, beta=1.0).optimize(
        ToyLM.example(2), ToyReward.example(), **{f"max_{unit}": 9}, seed=0
    )
    assert result.population.rollout.num_samples == 2
    assert all(spent <= 9 for spent in getattr(result.budget, f"{unit}_per_problem"))


# the survivors of the first full run (issue 36), each test named for what it pins


def test_a_budget_without_a_unit_is_read_in_samples() -> None:
    with pytest.raises(ValueError, match=r"^a budget of 2 samples is below one SMC particle"):
        SMC(block=4, beta=1.0).check_budget(10, 2)


def test_the_partial_reward_refusal_says_what_smc_needs_and_what_to_do_instead() -> None:
    whole_only = ToyReward.example(accepts_partial=False)
    message = (
        "SMC weights its particles by the reward of their partial text after every block (its twist), and no "
        "value twist is available, but the cost ToyReward(accepts_partial=False) cannot score partial text "
        "(a reward model or judge); set block >= the episode length (one block: importance sampling), or set "
        "reward.accepts_partial = True if you know it can"
    )
    with pytest.raises(ValueError) as info:
        SMC(block=3, beta=1.0).check(4, whole_only)
    assert str(info.value) == message
    with pytest.raises(ValueError, match=r"set block >= --max-new-tokens \(one block"):
        SMC(block=3, beta=1.0).check(4, whole_only, episode_name="--max-new-tokens")


def test_each_block_scores_one_sample_per_unfinished_particle() -> None:
    """Without resampling each particle is one lineage, scored once per block it grew in: its
    response's blocks, ``ceil(length / block)``."""
    block, N = 2, 6
    result = SMC(num_particles=N, block=block, beta=1.0, resample_threshold=1e-9).optimize(
        ToyLM.example(3), ToyReward.example(), seed=[4, 5, 6]
    )
    lengths = result.population.rollout.lengths  # whole responses (the toy has no prompt)
    for b in range(3):
        want = sum(math.ceil(int(n) / block) for n in lengths[b].tolist())
        assert result.budget.samples_per_problem[b] == want


def test_a_nan_reward_of_a_partial_text_zeroes_the_particles_weight() -> None:
    """A twist value the reward cannot give (NaN) must never be read as a reward of 0."""

    def reward(seq: tuple[int, ...]) -> float:
        return math.nan if 2 in seq else float(sum(t == 1 for t in seq))

    result = SMC(num_particles=12, block=1, beta=1.0, resample_threshold=1e-9).optimize(
        ToyLM.example(2), ToyReward(reward), seed=[0, 1]
    )
    pop = result.population
    seen = 0
    for b in range(2):
        for n in range(12):
            if 2 in pop.rollout.sequence(b, n):
                seen += 1
                assert pop.log_weights[b, n] == -INF and float(pop.estimate.weights[b, n]) == 0.0
            else:
                assert math.isfinite(float(pop.log_weights[b, n]))
    assert seen > 0


def test_a_problem_with_no_finite_twist_does_not_stop_the_next_problem_choosing_its_beta() -> None:
    smc = SMC(ess_target=0.5, block=1)
    c = torch.tensor([INF, INF, 0.0, 1.0], dtype=torch.float64)
    betas = smc._choose_betas(c, [0, 0, 1, 1], [NAN] * 4)
    assert all(math.isnan(b) for b in betas[:2])
    want = float(temperature_for_ess(torch.tensor([[0.0, 1.0]], dtype=torch.float64), 0.5)[0])
    assert betas[2:] == [want, want]


def resampled(log_w: list[float], threshold: float, seed: int = 7) -> tuple[list[int], list[Particle]]:
    gen = torch.Generator().manual_seed(seed)
    carry = [Particle(gen, lw, float(i), 1.0) for i, lw in enumerate(log_w)]
    return SMC(beta=1.0, resample_threshold=threshold).keep(
        episode([0] * len(carry), carry), step(carry), [False] * len(carry)
    )


def test_the_ess_fraction_is_one_over_the_sum_of_squared_weights_over_the_count() -> None:
    """Weights (1/2, 1/4, 1/4): ESS 1 / (1/4 + 1/16 + 1/16) = 8/3 of 3, a fraction 0.889."""
    log_w = [math.log(0.5), math.log(0.25), math.log(0.25)]
    rows, out = resampled(log_w, 0.9)
    assert all(p.log_w == pytest.approx(-math.log(3.0), abs=1e-15) for p in out)  # resampled
    rows, out = resampled(log_w, 0.88)
    assert rows == [0, 1, 2] and [p.log_w for p in out] == log_w  # kept


def test_two_particles_are_resampled_too() -> None:
    rows, out = resampled([0.0, -INF], 0.6)  # ESS 1 of 2
    assert rows == [0, 0] and all(p.log_w == pytest.approx(-math.log(2.0), abs=1e-15) for p in out)


def test_equal_weights_are_never_resampled_even_at_threshold_one() -> None:
    log_w = [0.25] * 8
    rows, out = resampled(log_w, 1.0)
    assert rows == list(range(8)) and [p.psi for p in out] == [float(i) for i in range(8)]


def test_the_copies_weight_is_the_float64_mean_of_the_weights() -> None:
    log_w = [0.1234567891234567, -3.3, -20.0]
    _, out = resampled(log_w, 0.99)
    mean = math.log(sum(math.exp(x) for x in log_w)) - math.log(3.0)
    assert all(abs(p.log_w - mean) < 1e-14 for p in out)


def test_resampling_draws_from_the_problems_own_stream_whatever_the_global_seed() -> None:
    log_w = [0.0, -0.5, -1.0, -4.0, -INF, 0.2]
    w = torch.softmax(torch.tensor(log_w, dtype=torch.float64), dim=0)
    want = torch.multinomial(w, 6, replacement=True, generator=torch.Generator().manual_seed(7)).sort().values
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        rows, _ = resampled(log_w, 1.0, seed=7)
        assert rows == want.tolist()


def test_the_estimate_keeps_beta_in_float64() -> None:
    result = SMC(num_particles=4, block=1, beta=0.1).optimize(ToyLM.example(2), ToyReward.example(), seed=0)
    assert result.population.estimate.beta.dtype == torch.float64
    assert result.population.estimate.beta.tolist() == [0.1, 0.1]


def test_one_particle_per_problem_runs_and_is_the_answer() -> None:
    result = SMC(num_particles=1, block=2, beta=1.0).optimize(
        ToyLM.example(2), ToyReward.example(), seed=[3, 4]
    )
    pop = result.population
    assert pop.rollout.num_samples == 1
    for b in range(2):
        assert result.best_rollout.sequence(b, 0) == pop.rollout.sequence(b, 0)
        assert float(pop.estimate.weights[b, 0]) == 1.0
