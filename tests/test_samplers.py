"""Samplers toward the tilted model, checked exactly on a toy autoregressive model.

`ToyLM.example()` has 31 complete sequences (three tokens, one of them end-of-sequence, at most
four steps), so the tilted model ``p(y) exp(r(y) / beta) / Z`` and ``Z`` are computed by
enumeration (`exact_tilted`). Tolerances: with 2000 independent draws from the exact distribution
the total-variation distance of their empirical distribution is below 0.061 in 999 of 1000 trials
(measured by simulation for both beta = 1 and the base model), so a sampler passes at 2000 draws
when its TV is below 0.08: the sampling noise plus at most ~0.02 of bias (finite n, finite
chains). Every run is seeded, so the tests are deterministic.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from mpc_llm.cli import main
from mpc_llm.controllers import SMC, AISPSampler, BestOfN, QAlign, SoftBestOfN, build
from mpc_llm.controllers.qalign import acceptance
from mpc_llm.core import make_generators, tilted_estimate
from mpc_llm.dynamics import ToyLM, ToyReward, exact_tilted
from mpc_llm.evaluation.compare import compare
from mpc_llm.evaluation.compare.records import anytime_records
from mpc_llm.rewards.rules import CallableReward

DRAWS = 2000
TV_TOLERANCE = 0.08  # at DRAWS draws (see the module docstring)
REWARD = ToyReward.example()


def tv_of_draws(draws: list[tuple[int, ...]], beta: float) -> float:
    """Total variation between the empirical distribution of ``draws`` and the exact tilted model."""
    seqs, p, _ = exact_tilted(ToyLM.example(), REWARD, beta)
    counts = Counter(draws)
    assert set(counts) <= set(seqs), "a draw that is not a complete sequence"
    return 0.5 * sum(abs(counts[s] / len(draws) - float(q)) for s, q in zip(seqs, p, strict=True))


def tv_of_weights(population: list[dict[tuple[int, ...], float]], beta: float) -> float:
    """TV between the mean over runs of each run's weighted population and the tilted model."""
    seqs, p, _ = exact_tilted(ToyLM.example(), REWARD, beta)
    mean: Counter[tuple[int, ...]] = Counter()
    for weights in population:
        for s, w in weights.items():
            mean[s] += w / len(population)
    return 0.5 * sum(abs(mean[s] - float(q)) for s, q in zip(seqs, p, strict=True))


def returned(result, B: int) -> list[tuple[int, ...]]:
    return [result.best_rollout.sequence(b, 0) for b in range(B)]


# ------------------------------------------------------------------------------------------ the toy model
def test_the_toy_model_samples_its_enumerated_distribution() -> None:
    system = ToyLM.example(batch_size=1)
    rollout = system.rollout(torch.zeros(1, DRAWS, 1, 3, dtype=torch.float64), make_generators(0, 1))
    draws = [rollout.sequence(0, n) for n in range(DRAWS)]
    assert tv_of_draws(draws, math.inf) < TV_TOLERANCE
    seqs, p, log_z = exact_tilted(system, REWARD, math.inf)
    assert len(seqs) == 31 and abs(float(p.sum()) - 1) < 1e-12 and log_z == pytest.approx(0.0, abs=1e-12)


def test_per_row_commits_and_partial_rollouts() -> None:
    system = ToyLM.example(batch_size=2)
    rollout = system.rollout(torch.zeros(2, 1, 1, 3, dtype=torch.float64), make_generators([3, 4], 2))
    later = system.advance(rollout, [0, 2])
    assert later.committed.tolist() == [0, min(2, int(rollout.lengths[1, 0]))]
    part = later.with_horizon(1).rollout(torch.zeros(2, 5, 1, 3, dtype=torch.float64), make_generators(0, 2))
    assert (part.token_counts() <= 1).all() and torch.equal(
        part.tokens[1, :, :2], rollout.tokens[1, :, :2].expand(5, 2)
    )
    same = system.advance(rollout, 1)  # one count for every row, as before
    assert same.committed.tolist() == [1, 1]
    with pytest.raises(ValueError, match="one count >= 0 per row"):
        system.advance(rollout, [1])


# ------------------------------------------------------------------------------------------ distributions
def test_soft_best_of_n_returns_the_tilted_model_for_large_n() -> None:
    B = DRAWS
    result = SoftBestOfN(beta=1.0, num_samples=64).optimize(
        ToyLM.example(B), REWARD, max_samples=64, seed=list(range(B))
    )
    assert tv_of_draws(returned(result, B), 1.0) < TV_TOLERANCE


def test_best_of_n_does_not_pass_the_same_test() -> None:
    """The test can fail: best-of-64 is far from the beta = 1 tilted model."""
    B = DRAWS
    result = BestOfN(num_samples=64).optimize(ToyLM.example(B), REWARD, max_samples=64, seed=list(range(B)))
    assert tv_of_draws(returned(result, B), 1.0) > 0.3


def test_smc_returns_the_tilted_model_with_many_particles() -> None:
    """The law of what SMC returns is its final weighted population (the answer is drawn by the
    weights), averaged over runs: 100 runs x 128 particles, resampled when ESS < 0.5, within 0.05
    in TV. (SMC's returned law is biased at O(1/N): measured here 0.15 at 16 particles, 0.04 at 64.)"""
    runs, N = 100, 128
    smc = SMC(num_particles=N, block=1, beta=1.0, resample_threshold=0.5)
    result = smc.optimize(ToyLM.example(runs), REWARD, seed=list(range(runs)))
    pop = result.population
    assert pop is not None and pop.rollout.num_samples == N
    population = []
    for b in range(runs):
        weights: Counter[tuple[int, ...]] = Counter()
        for n in range(N):
            weights[pop.rollout.sequence(b, n)] += float(pop.estimate.weights[b, n])
        population.append(weights)
    assert tv_of_weights(population, 1.0) < 0.05
    assert tv_of_draws(returned(result, runs), 1.0) < 0.3  # 100 actual draws: noisier, same law


def test_smc_z_estimate_is_unbiased() -> None:
    """Mean over 400 runs of Z-hat (8 particles each, resampled whenever ESS < 0.9) within 4 standard
    errors of the exact Z."""
    runs = 400
    smc = SMC(num_particles=8, block=1, beta=1.0, resample_threshold=0.9)
    result = smc.optimize(ToyLM.example(runs), REWARD, seed=list(range(runs)))
    z_hat = result.population.estimate.log_z.exp()
    _, _, log_z = exact_tilted(ToyLM.example(), REWARD, 1.0)
    se = float(z_hat.std()) / math.sqrt(runs)
    assert abs(float(z_hat.mean()) - math.exp(log_z)) < 4 * se, (float(z_hat.mean()), math.exp(log_z), se)


def test_qalign_chains_reach_the_tilted_model() -> None:
    B = DRAWS
    result = QAlign(beta=1.0).optimize(ToyLM.example(B), REWARD, max_samples=16, seed=list(range(B)))
    assert result.budget.samples_per_problem == (16,) * B
    assert tv_of_draws(returned(result, B), 1.0) < TV_TOLERANCE


def test_qalign_reads_whether_a_system_commits_per_row() -> None:
    """Per-row commits are a declared capability (`Dynamics.commits_per_row`), never found out by
    calling ``advance`` and catching an error: a system that does not declare them is never asked
    for per-row counts (here it raises another error, which a probe would let through), and QAlign's
    grouped regeneration gives the very same chains."""

    class GroupsOnly(ToyLM):
        commits_per_row = False

        def advance(self, rollout, steps):  # type: ignore[no-untyped-def]
            if not isinstance(steps, int):
                raise TypeError("one count for all rows only")
            return super().advance(rollout, steps)

    B, seed = 6, list(range(6))
    toy = ToyLM.example(B)
    grouped = GroupsOnly(toy.log_initial.exp(), toy.log_transition.exp(), toy.length, batch_size=B)
    one = QAlign(beta=1.0).optimize(toy, REWARD, max_samples=8, seed=seed)
    other = QAlign(beta=1.0).optimize(grouped, REWARD, max_samples=8, seed=seed)
    assert ToyLM.commits_per_row and not GroupsOnly.commits_per_row
    assert torch.equal(one.best_rollout.tokens, other.best_rollout.tokens)
    assert torch.equal(one.best_cost, other.best_cost)


def test_qalign_without_the_length_factor_would_fail() -> None:
    """The test can fail: dropping ``|y| / |y'|`` from the acceptance moves the chain's law."""

    class NoLengthFactor(QAlign):
        def propose(self, system, cost, current, current_cost, streams, length=None):
            proposal, new_cost, metrics, _, keep = super().propose(
                system, cost, current, current_cost, streams, length
            )
            prob = ((current_cost - new_cost) / self.config.beta).clamp(max=0).exp()
            return proposal, new_cost, metrics, prob, keep

    B = DRAWS
    result = NoLengthFactor(beta=1.0).optimize(ToyLM.example(B), REWARD, max_samples=16, seed=list(range(B)))
    assert tv_of_draws(returned(result, B), 1.0) > TV_TOLERANCE


def test_one_qalign_step_accepts_with_the_formula() -> None:
    """Each proposal's acceptance probability is min(1, exp((r' - r) / beta) |y| / |y'|), and the
    chance of accepting from a fixed y matches its exact expectation under the proposal (prefix
    length uniform in 0..|y|-1, suffix from the base model), enumerated."""
    beta, B = 0.7, 4000
    system = ToyLM.example(B)
    y = (2, 1, 2, 1)  # no end-of-sequence: |y| = 4
    fixed = ToyLM.example(1)
    start = fixed.rollout(torch.zeros(1, 1, 1, 3, dtype=torch.float64), make_generators(0, 1))
    tokens = torch.tensor(y).view(1, 1, 4).expand(B, 1, 4).clone()
    current = type(start)(
        controls=torch.zeros(B, 1, 1, 3, dtype=torch.float64), tokens=tokens,
        lengths=torch.full((B, 1), 4), finished=torch.ones(B, 1, dtype=torch.bool),
        prefix_lengths=torch.zeros(B, 1, dtype=torch.long),
    )  # fmt: skip
    cost = torch.full((B,), -REWARD.fn(y), dtype=torch.float64)
    qalign = QAlign(beta=beta)
    proposal, new_cost, _, prob, keep = qalign.propose(
        system, REWARD, current, cost, make_generators(list(range(B)), B)
    )
    new_len = proposal.lengths[:, 0]
    expected = ((-new_cost + cost) / beta).exp() * 4 / new_len.double()
    assert torch.allclose(prob, expected.clamp(max=1.0))
    assert torch.allclose(acceptance(cost, new_cost, torch.full((B,), 4), new_len, beta), prob)
    # the exact expected acceptance from y
    seqs, logp = ToyLM.example().sequences()
    p = dict(zip(seqs, logp.exp().tolist(), strict=True))
    exact = 0.0
    for k in range(4):
        prefix_p = sum(p[s] for s in seqs if s[:k] == y[:k])  # p(y_<k) as a prefix
        for s in seqs:
            if len(s) > k and s[:k] == y[:k]:
                q = p[s] / prefix_p  # p(suffix | prefix)
                exact += 0.25 * q * min(1.0, math.exp((REWARD.fn(s) - REWARD.fn(y)) / beta) * 4 / len(s))
    assert float(prob.mean()) == pytest.approx(exact, abs=4 * 0.5 / math.sqrt(B))
    assert sorted(set(keep)) == [0, 1, 2, 3]


@pytest.mark.parametrize("name", ["soft_best_of_n", "smc", "qalign"])
def test_an_infinite_beta_returns_base_samples(name: str) -> None:
    B, beta = DRAWS, 1e12
    system = ToyLM.example(B)
    if name == "soft_best_of_n":
        result = SoftBestOfN(beta=beta, num_samples=8).optimize(
            system, REWARD, max_samples=8, seed=list(range(B))
        )
    elif name == "smc":
        result = SMC(num_particles=8, block=1, beta=beta).optimize(system, REWARD, seed=list(range(B)))
    else:
        result = QAlign(beta=beta).optimize(system, REWARD, max_samples=8, seed=list(range(B)))
    assert tv_of_draws(returned(result, B), math.inf) < TV_TOLERANCE


def test_aisp_sampling_mode_draws_by_its_weights_and_estimates_log_z() -> None:
    """With sigma -> 0 the noise-smoothed base is the base model: AISP's sampling mode then
    estimates the exact log Z and returns draws of the tilted model."""
    B = 500
    result = AISPSampler(sigma=1e-3, lambda_=1.0, num_samples=32).optimize(
        ToyLM.example(B), REWARD, max_samples=64, seed=list(range(B))
    )
    _, _, log_z = exact_tilted(ToyLM.example(), REWARD, 1.0)
    assert float(result.population.estimate.log_z.exp().mean().log()) == pytest.approx(log_z, abs=0.05)
    assert result.history[0].log_ratio is not None and result.population.log_weights.shape == (B, 64)
    assert tv_of_draws(returned(result, B), 1.0) < 0.15  # 500 draws


# ------------------------------------------------------------------------------------------ estimates
@settings(max_examples=60, deadline=None)
@given(
    costs=st.lists(st.floats(-5, 5), min_size=1, max_size=12),
    beta=st.floats(0.05, 20.0),
    shift=st.floats(-3, 3),
)
def test_the_kl_figure_is_the_kl_of_the_weights_to_the_sample(costs, beta, shift) -> None:
    """On M base samples: 0 <= KL-hat <= log M, KL-hat = sum w log(M w), and shifting every cost
    shifts log Z by -shift / beta and leaves the KL unchanged."""
    c = torch.tensor([costs], dtype=torch.float64)
    est = tilted_estimate(-c / beta, c, beta)
    M = len(costs)
    w = est.weights[0]
    direct = float((w * (M * w).clamp(min=1e-300).log()).sum())
    assert -1e-9 <= float(est.kl[0]) <= math.log(M) + 1e-9
    assert float(est.kl[0]) == pytest.approx(direct, abs=1e-7)
    moved = tilted_estimate(-(c + shift) / beta, c + shift, beta)
    assert float(moved.log_z[0]) == pytest.approx(float(est.log_z[0]) - shift / beta, abs=1e-9)
    assert float(moved.kl[0]) == pytest.approx(float(est.kl[0]), abs=1e-7)


def test_the_kl_figure_reads_log_n_as_beta_goes_to_zero() -> None:
    c = torch.tensor([[0.0, 1.0, 2.0, 3.0]], dtype=torch.float64)
    est = tilted_estimate(-c / 1e-3, c, 1e-3)
    assert float(est.kl[0]) == pytest.approx(math.log(4), abs=1e-9)


# ------------------------------------------------------------------------------------------ records
def test_anytime_records_draw_with_the_runs_own_uniform() -> None:
    """At the run's full budget the record is the run's answer; at every budget it carries log Z,
    the tilted KL and the log n bound; best-of-N's records are unchanged (argmin)."""
    B, seeds = 6, list(range(6))
    sampler = SoftBestOfN(ess_target=0.3, num_samples=8)
    result = sampler.optimize(ToyLM.example(B), REWARD, max_samples=16, seed=seeds, keep_rollouts=True)
    records = anytime_records(result, list(range(B)), "soft", 0, [4, 16], "samples", None, sampler)
    for b in range(B):
        last = next(r for r in records if r["prompt_index"] == b and r["budget"] == 16)
        assert last["response"] == result.best_rollout.describe(b, 0)["response"]
        assert last["reward"] == pytest.approx(float(result.best_metrics["reward"][b]))
        assert last["log_z"] == pytest.approx(float(result.population.estimate.log_z[b]))
        assert last["selection_bound"] == pytest.approx(math.log(16))
        assert {"beta", "kl_tilted", "ess"} <= set(last) and last["ess"] == pytest.approx(0.3, abs=1e-5)
    plain = BestOfN(num_samples=8).optimize(
        ToyLM.example(B), REWARD, max_samples=16, seed=seeds, keep_rollouts=True
    )
    assert anytime_records(plain, list(range(B)), "b", 0, [4, 16], "samples") == anytime_records(
        plain, list(range(B)), "b", 0, [4, 16], "samples", None, BestOfN(num_samples=8)
    )


def test_samplers_run_by_name_through_compare(tmp_path) -> None:
    controllers = {
        "best_of_n": build({"name": "best_of_n", "num_samples": 8}),
        "soft": build({"name": "soft_best_of_n", "beta": 0.5, "num_samples": 8}),
        "aisp_sample": build({"name": "aisp_sample", "sigma": 0.5, "lambda": 0.5, "num_samples": 8}),
        "smc": build({"name": "smc", "block": 1, "beta": 0.5}),
        "qalign": build({"name": "qalign", "beta": 0.5}),
    }
    rows = compare(
        ["a", "b"], controllers, lambda prompts: ToyLM.example(len(prompts)), REWARD, budgets=[8, 16],
        out_dir=tmp_path / "run", progress=False,
    )  # fmt: skip
    assert {r["controller"] for r in rows} == set(controllers)
    import json

    records = [json.loads(line) for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    for r in records:
        has = "log_z" in r and "kl_tilted" in r
        assert has == (r["controller"] in ("soft", "aisp_sample", "smc")), r
        assert r["samples"] <= r["budget"]


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("beta", [0.0, -1.0, math.inf, math.nan])
@pytest.mark.parametrize("cls", [SoftBestOfN, SMC, QAlign])
def test_a_bad_beta_is_refused(cls, beta) -> None:
    with pytest.raises(ValidationError, match="beta"):
        cls(beta=beta)


@pytest.mark.parametrize("value", [0.0, 1.5, -0.1])
def test_an_ess_fraction_outside_zero_one_is_refused(value) -> None:
    with pytest.raises(ValidationError, match=r"resample_threshold.*\(0, 1\]"):
        SMC(resample_threshold=value)
    with pytest.raises(ValidationError, match=r"ess_target.*\(0, 1\]"):
        SoftBestOfN(ess_target=value)


def test_smc_refuses_a_reward_without_partial_scores_unless_one_block() -> None:
    whole_only = ToyReward.example(accepts_partial=False)
    with pytest.raises(ValueError, match="cannot score partial"):
        SMC(block=1).check(4, whole_only)
    SMC(block=4).check(4, whole_only)  # one block: importance sampling on finished text


def test_budgets_below_one_step_are_refused() -> None:
    with pytest.raises(ValueError, match="below one SMC particle"):
        SMC(block=4).check_budget(16, 3)
    with pytest.raises(ValueError, match="below one QAlign step"):
        QAlign().check_budget(16, 1)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--controllers", "soft_best_of_n", "--set", "beta=0"], "beta"),
        (["--controllers", "smc", "--set", "beta=inf"], "beta"),
        (["--controllers", "qalign", "--set", "beta=-1"], "beta"),
        (["--controllers", "smc", "--set", "resample_threshold=1.5"], "resample_threshold"),
        (["--controllers", "smc", "--reward", "judge", "--set", "block=4"], "cannot score partial"),
        (["--controllers", "smc", "--set", "block=4", "--budgets", "8"], "below one SMC particle"),
        (["--controllers", "qalign", "--budgets", "1"], "below one QAlign step"),
    ],
)
def test_bad_sampler_input_fails_in_one_line_before_any_model_loads(argv, message, capsys) -> None:
    base = ["compare", "--out", "x", "--model", "/nonexistent/model", "--max-new-tokens", "48"]
    assert main([*base, *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("mpc-llm: error: ") and message in err, err


def test_qalign_regenerates_rows_of_different_prefix_lengths_on_a_language_model(tiny_lm) -> None:
    """Rows keeping no prefix and rows keeping one are regenerated in separate decodes and stacked:
    each proposal keeps its prefix and counts only its new tokens (a row keeping nothing first used
    to make every row count its kept prefix as new, and a long chain then overran the episode)."""
    from mpc_llm.controllers.qalign import regenerate
    from mpc_llm.dynamics import LMDynamics

    model, tok = tiny_lm("llama")
    lm = LMDynamics(model, tok, ["Hello", "Hi there", "Tell me a story", "Good morning"], max_new_tokens=6)
    zero = torch.zeros(4, 1, 1, lm.control_dim)
    current = lm.rollout(zero, make_generators(0, 4))
    keep = [min(k, int(n) - 1) for k, n in zip([0, 2, 0, 3], current.lengths[:, 0].tolist(), strict=True)]
    proposal = regenerate(lm, current, keep, make_generators(1, 4))
    assert torch.equal(proposal.token_counts()[:, 0] + torch.tensor(keep), proposal.lengths[:, 0].cpu())
    for i, k in enumerate(keep):
        assert torch.equal(proposal.tokens[i, 0, :k], current.tokens[i, 0, :k])
    result = QAlign(beta=0.1).optimize(
        lm, CallableReward(lambda p, r: r.count("a")).as_cost(), max_samples=12, seed=0
    )
    assert int(result.best_rollout.lengths.max()) <= 6


def test_smc_chooses_beta_at_the_first_block_whose_twists_differ() -> None:
    """A twist that scores every partial text 0 (as VADER scores 16 neutral tokens) says nothing at
    the first block: beta is chosen where the values first differ, and the run then equals SMC with
    that beta fixed from the start, draw for draw and weight for weight (choosing at the first block
    fixed beta = +inf: base samples, never reweighted)."""

    def finished_only(seq: tuple[int, ...]) -> float:
        return REWARD.fn(seq) if seq[-1] == 0 or len(seq) == 4 else 0.0

    reward = ToyReward(finished_only)
    seeds = list(range(40))
    adaptive = SMC(num_particles=16, block=1, ess_target=0.3).optimize(ToyLM.example(40), reward, seed=seeds)
    betas = adaptive.population.estimate.beta
    assert bool(torch.isfinite(betas).all())
    for b in (0, 7, 23):
        fixed = SMC(num_particles=16, block=1, beta=float(betas[b])).optimize(
            ToyLM.example(1), reward, seed=[b]
        )
        assert fixed.best_rollout.sequence(0, 0) == adaptive.best_rollout.sequence(b, 0)
        assert torch.allclose(fixed.population.log_weights[0], adaptive.population.log_weights[b], atol=1e-12)
        assert float(fixed.population.estimate.log_z[0]) == pytest.approx(
            float(adaptive.population.estimate.log_z[b])
        )


def smoothed_toy(sigma: float, draws: int = 400_000) -> ToyLM:
    """The noise-smoothed base ``E_v p_v`` of `ToyLM.example` with one independent ``N(0, sigma^2)``
    control per step (``num_knots = tau``): a Markov chain whose rows are ``E_v softmax(log p + v)``
    (the steps' controls are independent, so the expectation factorises over steps)."""
    base = ToyLM.example()
    v = sigma * torch.randn(draws, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)

    def smooth(log_row: torch.Tensor) -> torch.Tensor:
        return torch.softmax(log_row + v, dim=-1).mean(dim=0)

    transition = torch.stack([smooth(row) for row in base.log_transition])
    return ToyLM(smooth(base.log_initial), transition, length=base.length, eos=base.eos)


def test_aisp_sampling_mode_targets_the_tilted_noise_smoothed_model_at_a_sizeable_sigma() -> None:
    """At sigma = 2 the proposal moves away from N(0, sigma^2) after the first iteration, so the draw
    is right only with each sample's ratio p(v) / q(v | U) in its weight: log Z and the draws are
    those of the tilted model over the noise-smoothed base, not over the base."""
    B, sigma = 400, 2.0
    result = AISPSampler(sigma=sigma, lambda_=1.0, num_samples=16, num_knots=4).optimize(
        ToyLM.example(B), REWARD, max_samples=64, seed=list(range(B))
    )
    seqs, p, log_z = exact_tilted(smoothed_toy(sigma), REWARD, 1.0)
    _, _, base_log_z = exact_tilted(ToyLM.example(), REWARD, 1.0)
    assert abs(log_z - base_log_z) > 0.1, (log_z, base_log_z)  # the smoothing matters at this sigma
    estimate = float(result.population.estimate.log_z.exp().mean().log())
    assert estimate == pytest.approx(log_z, abs=0.1), (estimate, log_z, base_log_z)  # dropped ratio: +0.34
    counts = Counter(returned(result, B))
    tv = 0.5 * sum(abs(counts[s] / B - float(q)) for s, q in zip(seqs, p, strict=True))
    assert tv < 0.15, tv  # 400 draws
