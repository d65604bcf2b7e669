"""Best-of-N's whole curve as the reference (issue 33): the monotone curve, where a point falls on
it, the paired difference at equal closeness against hand-computed values, the anytime reading of
one long run, the compute each record carries, and summaries of records from before compute."""

from __future__ import annotations

import json
import math

import pytest
from fake_text import COST, PROMPTS, FakeText

from mpc_llm.controllers import AISP, BestOfN
from mpc_llm.controllers.receding_horizon import RecedingHorizon
from mpc_llm.evaluation.compare import compare
from mpc_llm.evaluation.summary import summarize
from mpc_llm.evaluation.summary.curve import CurvePoint, against_curve, envelope, locate
from mpc_llm.evaluation.summary.verdicts import curve_cell, plain_answer


def bound(n: int) -> float:
    return math.log(n) - (n - 1) / n


def test_envelope_keeps_the_better_of_tied_points_and_drops_a_worse_farther_one() -> None:
    points = [CurvePoint(0.0, 0.5, 1), CurvePoint(1.0, 0.7, 2), CurvePoint(1.0, 0.8, 4),
              CurvePoint(2.0, 0.75, 8), CurvePoint(3.0, 0.9, 16)]  # fmt: skip
    assert [p.n for p in envelope(points)] == [1, 4, 16]
    assert [p.n for p in envelope(list(reversed(points)))] == [1, 4, 16]  # order of input irrelevant


def test_locate_between_two_budgets_at_a_point_and_out_of_range() -> None:
    curve = [CurvePoint(0.0, 0.5, 1), CurvePoint(1.0, 0.8, 4), CurvePoint(3.0, 0.9, 16)]
    place = locate(curve, 2.5)
    assert (place.status, place.lo, place.hi) == ("within", 1, 2) and place.w == pytest.approx(0.75)
    assert locate(curve, 1.0).w == 0.0 and locate(curve, 1.0).lo == locate(curve, 1.0).hi == 1
    assert locate(curve, 3.5).status == "beyond" and locate(curve, 3.5).hi == 2
    assert locate(curve, -0.1).status == "before"
    log_place = locate([CurvePoint(10.0, 0, 1), CurvePoint(1000.0, 1, 2)], 100.0, log=True)
    assert log_place.w == pytest.approx(0.5)  # half-way in log x, not 0.0909 in x


COPIES = 4  # each hand-computed prompt four times: 12 prompts, enough for a verdict (MIN_PROMPTS)


def records_of(controller: str, budget: int, rewards: list[float], **fields) -> dict:
    """Records of ``len(rewards) * COPIES`` prompts: prompt ``p`` has ``rewards[p % len(rewards)]``."""
    many = rewards * COPIES
    return {(p, 0): {"controller": controller, "budget": budget, "prompt_index": p, "seed": 0,
                     "reward": r, **fields} for p, r in enumerate(many)}  # fmt: skip


def baseline_curve() -> dict:
    """Best-of-N at 1, 2, 4 on three prompts: means 0.2, 0.5, 0.6 at bounds 0, 0.307, 0.636."""
    rewards = {1: [0.0, 0.3, 0.3], 2: [0.3, 0.6, 0.6], 4: [0.3, 0.6, 0.9]}
    return {
        n: records_of("best_of_n", n, r, kl_estimate=0.0, selection_bound=bound(n))
        for n, r in rewards.items()
    }


def test_a_point_between_two_budgets_is_compared_with_the_interpolated_curve_prompt_by_prompt() -> None:
    x = bound(2) + 0.25 * (bound(4) - bound(2))  # a quarter of the way from n = 2 to n = 4
    ours = records_of("aisp", 8, [0.5, 0.2, 1.1], kl_estimate=x - bound(2), selection_bound=bound(2))
    c = against_curve(ours, baseline_curve(), "kl")
    assert c is not None and c["status"] == "within" and (c["n_lo"], c["n_hi"]) == (2, 4)
    assert c["w"] == pytest.approx(0.25)
    # references per prompt: 0.75 r(2) + 0.25 r(4) = 0.3, 0.6, 0.675; ours 0.5, 0.2, 1.1
    assert c["ref"] == pytest.approx(0.525)
    assert c["diff"] == pytest.approx((0.2 - 0.4 + 0.425) / 3)
    assert c["diff_low"] <= c["diff"] <= c["diff_high"] and c["verdict"] == "level"
    assert c["prompts"] == 12


def test_too_few_prompts_give_numbers_and_no_verdict() -> None:
    many = records_of("cem", 8, [0.9, 1.0, 1.1], kl_estimate=0.0, selection_bound=bound(2))
    few = {k: v for k, v in many.items() if k[0] < 3}
    c = against_curve(few, baseline_curve(), "kl")
    assert c["prompts"] == 3 and c["verdict"] == "unknown" and c["diff"] > 0


def test_a_missing_steering_figure_is_unknown_never_zero() -> None:
    """A steered record without its steering log-ratio (closeness off, a sequential controller)
    must not sit at its selection bound, on best-of-N's own point."""
    ours = records_of("aisp", 8, [0.9, 1.0, 1.1], selection_bound=bound(8))
    assert against_curve(ours, baseline_curve(), "kl") is None


def test_the_perplexity_axis_is_a_distance_from_the_models_own_samples() -> None:
    """Best-of-N at n = 1 sits at 0; a response less likely than the model's samples (ppl up) and a
    degenerate one more likely than them (ppl down) are both that far from the model."""
    base = {n: {k: {**r, "base_logp_mean": -1.4 + 0.05 * math.log2(n)} for k, r in recs.items()}
            for n, recs in baseline_curve().items()}  # fmt: skip
    up = records_of("a", 8, [0.5, 0.5, 0.8], base_logp_mean=-1.5)
    down = records_of("b", 8, [0.5, 0.5, 0.8], base_logp_mean=-1.3)
    cu, cd = against_curve(up, base, "ppl"), against_curve(down, base, "ppl")
    assert cu["x"] == pytest.approx(0.1) and cd["x"] == pytest.approx(0.1)
    assert (cu["n_lo"], cu["n_hi"]) == (cd["n_lo"], cd["n_hi"]) == (2, 4)


def test_a_point_beyond_the_curve_is_compared_with_its_last_point_and_never_extrapolated() -> None:
    far = records_of("cem", 8, [0.1, 0.2, 0.3], kl_estimate=40.0, selection_bound=bound(8))
    c = against_curve(far, baseline_curve(), "kl")
    assert c is not None and c["status"] == "beyond" and c["n_hi"] == 4
    assert c["ref"] == pytest.approx(0.6) and c["verdict"] == "below"  # worse and farther: dominated
    better = records_of("cem", 8, [0.9, 1.0, 1.1], kl_estimate=40.0, selection_bound=bound(8))
    assert against_curve(better, baseline_curve(), "kl")["verdict"] == "beyond"  # no verdict


def test_a_point_above_the_curve_and_its_held_out_score_read_with_the_same_weights() -> None:
    close = records_of("re", 8, [0.9, 1.0, 1.1], kl_estimate=0.0, selection_bound=bound(2))
    for r in close.values():
        r["eval"] = {"judge": 1.0}
    base = baseline_curve()
    for n, recs in base.items():
        for r in recs.values():
            r["eval"] = {"judge": float(n)}  # held-out of best-of-N at n: n
    c = against_curve(close, base, "kl")
    assert c["verdict"] == "above" and (c["n_lo"], c["n_hi"]) == (2, 2)
    held = against_curve(close, base, "kl", lambda r: (r.get("eval") or {}).get("judge"))
    assert held["ref"] == pytest.approx(2.0) and held["diff"] == pytest.approx(-1.0)


def test_unknown_closeness_gives_no_comparison() -> None:
    ours = records_of("aisp", 8, [0.5, 0.5, 0.8])  # no closeness recorded
    assert against_curve(ours, baseline_curve(), "kl") is None
    assert against_curve(ours, baseline_curve(), "compute") is None  # records from before compute


def test_cells_and_the_plain_answer_read_the_verdicts() -> None:
    cell = curve_cell({"x": 0.47, "status": "within", "n_lo": 2, "n_hi": 4, "diff": 0.05,
                       "diff_low": -0.01, "diff_high": 0.1, "verdict": "level"})  # fmt: skip
    assert cell == "+0.050 [-0.010, +0.100] level (x 0.47; n 2-4)"
    rows = [{"controller": "a", "budget": 8, "curve": {"kl": {"verdict": "below"}}},
            {"controller": "b", "budget": 8, "curve": {"kl": {"verdict": "above"}}}]  # fmt: skip
    assert "above: b@8; level: none; below: a@8" in plain_answer(rows, "best_of_n")


def read(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]


def test_one_long_run_read_at_every_budget_equals_a_run_at_each_budget(tmp_path) -> None:
    make = lambda prompts: FakeText(prompts)  # noqa: E731
    curve = [1, 2, 4, 8, 16]
    compare(PROMPTS[:3], {"best_of_n": BestOfN(num_samples=1)}, make, COST, budgets=[4],
            baseline_budgets=curve, out_dir=tmp_path / "long", progress=False)  # fmt: skip
    long = {(r["prompt_index"], r["budget"]): r for r in read(tmp_path / "long")}
    assert sorted({b for _, b in long}) == curve
    for k in curve:
        compare(PROMPTS[:3], {"best_of_n": BestOfN(num_samples=1)}, make, COST, budgets=[k],
                out_dir=tmp_path / f"at{k}", progress=False)  # fmt: skip
        for r in read(tmp_path / f"at{k}"):
            assert long[(r["prompt_index"], k)]["response"] == r["response"], k
            assert long[(r["prompt_index"], k)]["reward"] == r["reward"], k


def test_baseline_budgets_read_the_baseline_alone_and_the_summary_places_every_point(tmp_path) -> None:
    make = lambda prompts: FakeText(prompts)  # noqa: E731
    controllers = {"best_of_n": BestOfN(num_samples=4), "aisp": AISP(sigma=1.0, lambda_=0.5, num_samples=4)}
    compare(PROMPTS, controllers, make, COST, budgets=[4, 8], baseline_budgets=[1, 2, 16, 32],
            out_dir=tmp_path / "run", progress=False)  # fmt: skip
    records = read(tmp_path / "run")
    assert sorted({r["budget"] for r in records if r["controller"] == "aisp"}) == [4, 8]
    assert sorted({r["budget"] for r in records if r["controller"] == "best_of_n"}) == [1, 2, 4, 8, 16, 32]
    settings = json.loads((tmp_path / "run" / "settings.json").read_text())
    assert settings["baseline_budgets"] == [1, 2, 16, 32] and settings["budgets"] == [4, 8]
    # resuming finds every job done (the baseline's extra budgets count as its own)
    compare(PROMPTS, controllers, make, COST, budgets=[4, 8], baseline_budgets=[1, 2, 16, 32],
            out_dir=tmp_path / "run", progress=False, resume=True)  # fmt: skip
    assert read(tmp_path / "run") == records


def test_baseline_budgets_need_an_open_loop_baseline(tmp_path) -> None:
    planner = RecedingHorizon(BestOfN(num_samples=2), horizon=2, commit=2)
    with pytest.raises(ValueError, match="open-loop"):
        compare(PROMPTS[:1], {"best_of_n": planner}, lambda p: FakeText(p), COST, budgets=[4],
                baseline_budgets=[1, 2], out_dir=tmp_path / "x", progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="no controller is labelled"):
        compare(PROMPTS[:1], {"aisp": AISP(sigma=1.0, num_samples=2)}, lambda p: FakeText(p), COST,
                budgets=[4], baseline_budgets=[1, 2], out_dir=tmp_path / "y", progress=False)  # fmt: skip
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_compute_fields_add_up_on_a_language_model(tmp_path, tiny_lm) -> None:
    from mpc_llm.dynamics import LMDynamics
    from mpc_llm.rewards.rules import KeywordReward

    model, tok = tiny_lm("llama")
    prompts = ["Hello there", "A much longer prompt with many more words in it"]
    lm = LMDynamics(model, tok, prompts, max_new_tokens=6, stop_at_eos=False)
    context = lm.context_tokens().tolist()
    assert context[1] > context[0] > 0
    cost = KeywordReward(["the"]).as_cost()
    compare(prompts, {"best_of_n": BestOfN(num_samples=2)}, lm.with_prompts, cost, budgets=[2, 4],
            out_dir=tmp_path / "lm", progress=False, closeness=False)  # fmt: skip
    for r in read(tmp_path / "lm"):
        assert r["prefill_tokens"] == context[r["prompt_index"]]  # the prompt, read once
        assert r["tokens"] == 6 * r["budget"]
        assert r["forward_tokens"] == r["prefill_tokens"] + r["tokens"]


def test_records_from_before_compute_still_summarise_with_compute_unknown() -> None:
    old = [{"controller": c, "budget": 4, "prompt_index": p, "seed": 0, "reward": float(p + (c == "aisp")),
            "cost": 0.0, "samples": 4, "tokens": 24, "seconds": 1.0, "kl_estimate": 0.5 * (c == "aisp"),
            "selection_bound": bound(4)} for c in ("best_of_n", "aisp") for p in range(3)]  # fmt: skip
    rows = {r["controller"]: r for r in summarize(old)}
    assert rows["aisp"]["forward_tokens"] is None and rows["aisp"]["grad_steps"] is None
    assert "compute" not in rows["aisp"]["curve"] and rows["aisp"]["curve"]["kl"]["status"] == "beyond"
    assert rows["aisp"]["curve"]["kl"]["diff"] == pytest.approx(1.0)


def test_kl_proposal_averages_every_sample_within_the_budget(tmp_path, tiny_lm) -> None:
    from mpc_llm.dynamics import LMDynamics
    from mpc_llm.rewards.rules import KeywordReward

    model, tok = tiny_lm("llama")
    lm = LMDynamics(model, tok, ["Hello there"], max_new_tokens=5, return_logprobs=True)
    cost = KeywordReward(["the"]).as_cost()
    controllers = {"best_of_n": BestOfN(num_samples=1), "aisp": AISP(sigma=2.0, lambda_=1.0, num_samples=1)}
    compare(["Hello there"], controllers, lm.with_prompts, cost, budgets=[1, 3], out_dir=tmp_path / "r",
            progress=False, closeness=False)  # fmt: skip
    records = {(r["controller"], r["budget"]): r for r in read(tmp_path / "r")}
    assert records[("best_of_n", 1)]["kl_proposal"] == records[("best_of_n", 3)]["kl_proposal"] == 0.0
    one = records[("aisp", 1)]
    assert one["kl_proposal"] == pytest.approx(one["kl"]) and one["kl_proposal"] > 0  # the only sample
    assert records[("aisp", 3)]["kl_proposal"] > 0


def test_sequential_records_count_what_they_re_read_and_their_value_work(tmp_path, tiny_lm) -> None:
    """A sequential run's records add the committed tokens it read again (every row that went on)
    and its value evaluations: receding horizon commits 2 of 6 tokens per plan, so a response that
    runs the whole episode re-reads 2 + 2 (the last commit ends it); a terminal value is evaluated
    once per incomplete candidate, each time on a state the decode read with one more forward."""
    from mpc_llm.dynamics import LMDynamics
    from mpc_llm.rewards.rules import KeywordReward
    from mpc_llm.values import ValueMLP, save_value

    model, tok = tiny_lm("llama")
    lm = LMDynamics(model, tok, ["Hi", "Tell me"], max_new_tokens=6, stop_at_eos=False, keep_states=True)
    save_value(ValueMLP(lm.control_dim, 8, 1), {"model": "tiny", "model_fingerprint": lm.model_fingerprint()},
               tmp_path / "v")  # fmt: skip
    from mpc_llm.controllers.receding_horizon import RecedingHorizon

    mpc = RecedingHorizon(BestOfN(num_samples=2, num_iterations=1), horizon=2, commit=2, score="horizon",
                          value=str(tmp_path / "v"))  # fmt: skip
    compare(["Hi", "Tell me"], {"mpc": mpc}, lm.with_prompts, KeywordReward(["the"]).as_cost(), budgets=[6],
            out_dir=tmp_path / "r", progress=False, closeness=False, baseline=None)  # fmt: skip
    context = lm.context_tokens().tolist()
    for r in read(tmp_path / "r"):
        assert r["prefill_tokens"] == context[r["prompt_index"]] + 4  # two commits read again
        assert r["value_evals"] == 4  # 2 candidates x the 2 plans that stop before the end
        assert r["state_reads"] == 4  # the state each of those evaluations read
        assert r["forward_tokens"] == r["prefill_tokens"] + r["state_reads"] + r["tokens"]
        assert r["tokens"] == 12


def test_a_values_work_counts_in_model_token_equivalents_on_the_compute_axis(tmp_path, tiny_lm) -> None:
    """RE-Control's records carry value_tokens = (value params / model params) x 3 x grad_steps, and
    the compute axis adds them (a controller with value work but no value_tokens is unknown)."""
    from mpc_llm.controllers import REControl
    from mpc_llm.dynamics import LMDynamics
    from mpc_llm.evaluation.compare.records import value_tokens
    from mpc_llm.rewards.rules import KeywordReward
    from mpc_llm.values import ValueMLP, save_value

    model, tok = tiny_lm("llama")
    lm = LMDynamics(model, tok, ["Hi"], max_new_tokens=4, stop_at_eos=False)
    net = ValueMLP(lm.control_dim, 8, 1)
    save_value(net, {"model": "tiny", "model_fingerprint": lm.model_fingerprint()}, tmp_path / "v")
    ratio = sum(p.numel() for p in net.parameters()) / sum(p.numel() for p in model.parameters())
    re = REControl(value=str(tmp_path / "v"), num_steps=3, num_samples=2)
    compare(["Hi"], {"best_of_n": BestOfN(num_samples=2), "re": re}, lm.with_prompts,
            KeywordReward(["the"]).as_cost(), budgets=[2], out_dir=tmp_path / "r", progress=False,
            closeness=False)  # fmt: skip
    record = next(r for r in read(tmp_path / "r") if r["controller"] == "re")
    assert record["grad_steps"] == 3 * record["tokens"] == 24
    assert record["value_tokens"] == pytest.approx(value_tokens(24, 24, ratio)) == pytest.approx(72 * ratio)
    from mpc_llm.evaluation.summary.curve import AXES

    closeness, _ = AXES["compute"]
    assert closeness([record]) == pytest.approx(record["forward_tokens"] + record["value_tokens"])
    assert closeness([{k: v for k, v in record.items() if k != "value_tokens"}]) is None
