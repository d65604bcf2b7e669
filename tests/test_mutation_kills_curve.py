"""Best-of-N's curve (``evaluation/summary/curve.py``), the cases its mutation run left untested
(issue 36): each closeness figure against hand-computed means, the ends of the curve, every verdict
branch at its boundary (a point exactly level with the curve), the points before the curve, and
`curve_fields`, which adds a learned value's training to the compute axis only."""

from __future__ import annotations

import math

import pytest

from mpc_llm.evaluation.summary.curve import (
    AXES,
    MIN_PROMPTS,
    CurvePoint,
    Place,
    against_curve,
    curve_fields,
    envelope,
    locate,
)

PROMPTS = 12  # more than MIN_PROMPTS: enough for a verdict


def bound(n: int) -> float:
    return math.log(n) - (n - 1) / n


def run(controller: str, budget: int, rewards: list[float], seeds: int = 1, **fields) -> dict:
    """Records by ``(prompt, seed)``: prompt ``p`` has reward ``rewards[p]`` at every seed."""
    return {(p, s): {"controller": controller, "budget": budget, "prompt_index": p, "seed": s, "reward": r,
                     **fields} for p, r in enumerate(rewards) for s in range(seeds)}  # fmt: skip


def base_reward(n: int, p: int) -> float:
    """Best-of-N's reward on prompt ``p`` at budget ``n``: 0.2 per doubling, 0.05 per prompt."""
    return 0.2 * math.log2(n) + 0.05 * p


def baseline(budgets=(1, 2, 4), prompts: int = PROMPTS, seeds: int = 1) -> dict:
    """Best-of-N at ``budgets``: ``100 n`` forward tokens per prompt, KL figure ``bound(n)``."""
    return {
        n: run("best_of_n", n, [base_reward(n, p) for p in range(prompts)], seeds,
               kl_estimate=0.0, selection_bound=bound(n), forward_tokens=100.0 * n)
        for n in budgets
    }  # fmt: skip


# --------------------------------------------------------------------------- the closeness figures


def test_the_kl_figure_is_the_mean_of_estimate_plus_bound_a_missing_or_zero_bound_adding_nothing() -> None:
    kl, _ = AXES["kl"]
    records = [{"kl_estimate": 0.3, "selection_bound": 0.0}, {"kl_estimate": 0.1, "selection_bound": 0.5},
               {"kl_estimate": 0.2}]  # fmt: skip
    assert kl(records) == pytest.approx((0.3 + 0.6 + 0.2) / 3)
    assert kl([{"kl_estimate": 0.25, "selection_bound": 0.0}]) == pytest.approx(0.25)


def test_the_perplexity_figure_is_minus_the_mean_log_likelihood_per_token() -> None:
    log_ppl, log = AXES["ppl"]
    assert log_ppl([{"base_logp_mean": -1.0}, {"base_logp_mean": -2.0}]) == pytest.approx(1.5)  # ppl e^1.5
    assert not log


def test_the_compute_figure_is_the_mean_of_forward_and_value_tokens() -> None:
    compute, log = AXES["compute"]
    plain = {"forward_tokens": 100}  # no learned value: nothing to add
    trained = {"forward_tokens": 200, "grad_steps": 3, "value_tokens": 50}
    evaluated = {"forward_tokens": 300, "value_evals": 4, "value_tokens": 10}
    assert compute([plain, trained, evaluated]) == pytest.approx((100 + 250 + 310) / 3)
    assert compute([plain]) == pytest.approx(100.0) and compute([trained]) == pytest.approx(250.0)
    assert log  # interpolated in log tokens


def test_compute_is_unknown_when_a_records_value_work_has_no_value_tokens() -> None:
    compute, _ = AXES["compute"]
    assert compute([{"forward_tokens": 100, "grad_steps": 3}]) is None
    assert compute([{"forward_tokens": 100, "value_evals": 2}]) is None
    assert compute([{"forward_tokens": 100}, {"forward_tokens": 100, "value_evals": 2}]) is None
    assert compute([{"value_tokens": 5}]) is None  # no forward tokens: from before compute was recorded


# --------------------------------------------------------------------------- the curve and its ends


def test_a_farther_budget_that_is_no_better_is_not_on_the_curve() -> None:
    points = [CurvePoint(0.0, 0.5, 1), CurvePoint(1.0, 0.5, 2), CurvePoint(2.0, 0.7, 4),
              CurvePoint(2.0, 0.7, 8)]  # fmt: skip
    assert [p.n for p in envelope(points)] == [1, 4]


def test_the_curves_own_points_are_within_it_and_points_outside_sit_on_the_end_with_weight_zero() -> None:
    curve = [CurvePoint(1.0, 0.5, 1), CurvePoint(2.0, 0.8, 4), CurvePoint(4.0, 0.9, 16)]
    assert locate(curve, 1.0) == Place("within", 0, 0, 0.0)
    assert locate(curve, 2.0) == Place("within", 1, 1, 0.0)
    assert locate(curve, 4.0) == Place("within", 2, 2, 0.0)
    assert locate(curve, 5.0) == Place("beyond", 2, 2, 0.0)
    assert locate(curve, 0.5) == Place("before", 0, 0, 0.0)


def test_an_empty_curve_is_refused_with_its_reason() -> None:
    with pytest.raises(ValueError, match=r"^an empty curve has no place$"):
        locate([], 1.0)


def test_a_nan_closeness_is_never_placed_on_the_curve() -> None:
    curve = [CurvePoint(1.0, 0.5, 1), CurvePoint(2.0, 0.8, 4)]
    with pytest.raises(AssertionError, match=r"^unreachable: x is within the curve's range$"):
        locate(curve, math.nan)


# --------------------------------------------------------------------------- against the curve


def test_no_shared_pair_or_no_baseline_gives_no_comparison() -> None:
    ours = run("aisp", 8, [1.0] * PROMPTS, kl_estimate=0.0, selection_bound=0.1)
    elsewhere = {n: {(p + 100, s): r for (p, s), r in recs.items()} for n, recs in baseline().items()}
    assert against_curve(ours, elsewhere, "kl") is None
    assert against_curve(ours, {}, "kl") is None


def test_extra_closeness_is_added_to_ours() -> None:
    ours = run("re", 8, [base_reward(2, p) for p in range(PROMPTS)], forward_tokens=150.0)
    c = against_curve(ours, baseline(), "compute", extra=50.0)
    assert c["x"] == pytest.approx(200.0) and c["status"] == "within" and (c["n_lo"], c["n_hi"]) == (2, 2)


def test_compute_is_interpolated_in_log_tokens() -> None:
    """Between 100 and 400 tokens, 200 is half-way in log tokens (a third of the way in tokens)."""
    ours = run("re", 8, [1.0] * PROMPTS, forward_tokens=200.0)
    c = against_curve(ours, baseline((1, 4)), "compute")
    assert (c["n_lo"], c["n_hi"]) == (1, 4) and c["w"] == pytest.approx(0.5)
    mean = lambda n: sum(base_reward(n, p) for p in range(PROMPTS)) / PROMPTS  # noqa: E731
    assert c["ref"] == pytest.approx(0.5 * mean(1) + 0.5 * mean(4))


def test_exactly_min_prompts_give_a_verdict() -> None:
    better = run("aisp", 8, [base_reward(2, p) + 0.3 for p in range(MIN_PROMPTS)], forward_tokens=200.0)
    c = against_curve(better, baseline(prompts=MIN_PROMPTS), "compute")
    assert c["prompts"] == MIN_PROMPTS and c["verdict"] == "above"


def test_pairs_count_prompt_and_seed_and_prompts_count_prompts() -> None:
    ours = run("aisp", 8, [1.0] * PROMPTS, seeds=2, forward_tokens=200.0)
    c = against_curve(ours, baseline(seeds=2), "compute")
    assert (c["pairs"], c["prompts"]) == (2 * PROMPTS, PROMPTS)


def on_budget(n: int, shift: float, **fields) -> dict:
    """Our records: best-of-N's reward at budget ``n`` plus ``shift`` on every prompt."""
    return run("aisp", 8, [base_reward(n, p) + shift for p in range(PROMPTS)], **fields)


def test_a_point_level_with_the_curve_is_level_and_one_significantly_worse_is_below() -> None:
    level = against_curve(on_budget(2, 0.0, forward_tokens=200.0), baseline(), "compute")
    assert level["status"] == "within" and level["diff_low"] == level["diff_high"] == 0.0
    assert level["verdict"] == "level"
    worse = against_curve(on_budget(2, -0.3, forward_tokens=200.0), baseline(), "compute")
    assert worse["diff"] == pytest.approx(-0.3) and worse["verdict"] == "below"


def test_a_point_beyond_the_curve_and_level_with_its_last_point_has_no_verdict() -> None:
    c = against_curve(on_budget(4, 0.0, forward_tokens=800.0), baseline(), "compute")
    assert c["status"] == "beyond" and c["diff_high"] == 0.0 and c["verdict"] == "beyond"


def test_a_point_before_the_curve_is_above_only_when_significantly_better_than_its_first_point() -> None:
    better = against_curve(on_budget(1, 0.3, forward_tokens=50.0), baseline(), "compute")
    assert better["status"] == "before" and (better["n_lo"], better["n_hi"]) == (1, 1)
    assert better["diff_low"] == pytest.approx(0.3) and better["verdict"] == "above"
    level = against_curve(on_budget(1, 0.0, forward_tokens=50.0), baseline(), "compute")
    assert level["status"] == "before" and level["diff_low"] == 0.0 and level["verdict"] == "unknown"
    worse = against_curve(on_budget(1, -0.3, forward_tokens=50.0), baseline(), "compute")
    assert worse["verdict"] == "unknown"  # closer and worse: not dominated, no verdict


# --------------------------------------------------------------------------- curve_fields


def records(learned: bool = True) -> list[dict]:
    """Best-of-N at 1, 2, 4 and RE-Control at 4 (level with n = 2 in reward and KL, 150 forward
    tokens); held-out score ``judge``: ``n`` for best-of-N, 1.0 for ours."""
    out = [dict(r, eval={"judge": float(n)}) for n, recs in baseline().items() for r in recs.values()]
    ours = on_budget(2, 0.0, kl_estimate=0.0, selection_bound=bound(2), forward_tokens=150.0,
                     **({"eval": {"judge": 1.0}} if learned else {}))  # fmt: skip
    return out + [dict(r, controller="re", budget=4) for r in ours.values()]


def test_curve_fields_add_the_values_training_to_the_compute_axis_only() -> None:
    out = curve_fields(records(), "re", 4, "best_of_n", learning=50.0)
    assert set(out["curve"]) == {"kl", "compute"}  # no perplexity recorded
    assert out["curve"]["compute"]["x"] == pytest.approx(200.0)
    assert out["curve"]["kl"]["x"] == pytest.approx(bound(2))
    judge = out["eval_curve"]["judge"]
    assert judge["compute"]["x"] == pytest.approx(200.0) and judge["kl"]["x"] == pytest.approx(bound(2))
    assert judge["kl"]["ref"] == pytest.approx(2.0) and judge["kl"]["diff"] == pytest.approx(-1.0)
    assert judge["compute"]["ref"] == pytest.approx(2.0)


def test_curve_fields_without_learning_count_no_training() -> None:
    out = curve_fields(records(), "re", 4, "best_of_n")
    assert out["curve"]["compute"]["x"] == pytest.approx(150.0)
    assert out["eval_curve"]["judge"]["compute"]["x"] == pytest.approx(150.0)


def test_curve_fields_without_held_out_scores_have_no_eval_curve() -> None:
    assert "eval_curve" not in curve_fields(records(learned=False), "re", 4, "best_of_n")


def test_curve_fields_are_empty_without_our_records_or_the_baselines() -> None:
    assert curve_fields(records(), "re", 8, "best_of_n") == {}  # we have no records at budget 8
    assert curve_fields(records(), "re", 4, "nobody") == {}
    invalid = [dict(r, reward=math.nan) if r["controller"] == "re" else r for r in records()]
    assert curve_fields(invalid, "re", 4, "best_of_n") == {}
