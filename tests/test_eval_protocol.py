"""The comparison protocol: closeness to the base model in every record, held-out rewards scored on
the returned responses only, paired bootstrap intervals, and the bad inputs."""

from __future__ import annotations

import json
import math
import warnings

import pytest

from mpc_llm.controllers import AISP, BestOfN
from mpc_llm.dynamics import LMDynamics
from mpc_llm.evaluation.compare import compare
from mpc_llm.evaluation.compare.closeness import selection_bound
from mpc_llm.evaluation.compare.heldout import eval_labels, load_eval_rewards
from mpc_llm.evaluation.summary import markdown_table, summarize
from mpc_llm.evaluation.summary.metrics import paired_bootstrap
from mpc_llm.rewards import CallableReward, KeywordReward

PROMPTS = ["Hello there!", "A", "Optimal control steers", "Tell me"]


def tiny(tiny_lm) -> LMDynamics:
    model, tok = tiny_lm("llama")
    return LMDynamics(model, tok, ["x"], max_new_tokens=6, chat_template=False)


def run(tmp_path, tiny_lm, eval_rewards=None, name="run"):
    lm = tiny(tiny_lm)
    controllers = {
        "aisp": AISP(sigma_relative=0.5, ess_target=0.5, num_samples=4, num_knots=1),
        "best_of_n": BestOfN(num_samples=4),
    }
    proxy = CallableReward(lambda p, r: float(len(set(r))), name="chars").as_cost()
    return compare(
        PROMPTS, controllers, lm.with_prompts, proxy, budgets=[4, 8],
        out_dir=tmp_path / name, seeds=[0, 1], prompts_per_batch=2, progress=False, eval_rewards=eval_rewards,
    )  # fmt: skip


def records_of(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]


def test_every_record_holds_closeness_and_the_held_out_reward_never_steers(tmp_path, tiny_lm) -> None:
    held_out = {"length": KeywordReward(["a", "e"])}
    rows = run(tmp_path, tiny_lm, held_out, "with")
    run(tmp_path, tiny_lm, None, "without")
    with_eval, without = records_of(tmp_path / "with"), records_of(tmp_path / "without")
    for a, b in zip(with_eval, without, strict=True):  # the held-out reward changes nothing else
        assert {k: v for k, v in a.items() if k not in ("eval", "seconds")} == {
            k: v for k, v in b.items() if k != "seconds"
        }
        assert set(a["eval"]) == {"length"} and "eval" not in b
    for r in with_eval:
        assert r["base_logp_mean"] < 0 and r["base_ppl"] == pytest.approx(math.exp(-r["base_logp_mean"]))
        assert r["selection_bound"] == pytest.approx(selection_bound(r["budget"]))
        if r["controller"] == "best_of_n":
            assert r["kl_estimate"] == 0.0 and r["sigma"] == 0.0
        else:
            assert r["kl_estimate"] != 0.0 and r["sigma"] > 0 and r["lambda_mean"] > 0
    row = next(r for r in rows if r["controller"] == "aisp" and r["budget"] == 8)
    assert row["eval"]["length"]["n"] == len(PROMPTS) and row["eval"]["length"]["missing"] == 0
    assert row["diff_low"] <= row["diff"] <= row["diff_high"]
    assert row["win_low"] <= row["win_rate"] <= row["win_high"]
    table = markdown_table(rows)
    assert "Δ reward vs baseline [95% bootstrap]" in table and "held-out length [95% t-CI]" in table
    assert "selection bound" in table and "3.17" not in table  # n = 8: log 8 - 7/8 = 1.20
    assert f"{selection_bound(8):.2f}" in table


def test_an_eval_reward_that_returns_nan_warns_per_sample_and_is_never_a_nan_mean(tmp_path, tiny_lm) -> None:
    nan_for_a = CallableReward(lambda p, r: float("nan") if p == "A" else 1.0, name="flaky")
    with pytest.warns(RuntimeWarning, match="eval reward 'flaky' gave nan for prompt 1"):
        rows = run(tmp_path, tiny_lm, {"flaky": nan_for_a})
    flaky = [r["eval"]["flaky"] for r in records_of(tmp_path / "run")]
    assert flaky.count(None) == 2 * 2 * 2 and all(v in (None, 1.0) for v in flaky)  # 2 ctrl x 2 seeds x 2 k
    for row in rows:
        e = row["eval"]["flaky"]
        assert (e["mean"], e["n"], e["missing"]) == (1.0, 3, 2)
    assert "(2 unscored, excluded)" in markdown_table(rows)


def test_an_eval_reward_that_fails_to_load_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match=r"eval reward 'callable' could not be loaded: .*fn"):
        load_eval_rewards(["callable"])
    with pytest.raises(ValueError, match="eval reward 'nope' could not be loaded: unknown reward"):
        load_eval_rewards(["nope"])
    assert eval_labels(["vader", "vader", {"name": "hf", "model": "m"}]) == ["vader", "vader#2", "hf:m"]


def test_paired_bootstrap_is_seeded_and_averages_seeds_per_prompt() -> None:
    ours, base, groups = [1.0, 3.0, 0.0, 2.0, 5.0, 5.0], [0.0, 0.0, 1.0, 1.0, 5.0, 4.0], [0, 0, 1, 1, 2, 2]
    a, b = paired_bootstrap(ours, base, groups), paired_bootstrap(ours, base, groups)
    assert a == b and a.n == 3
    assert a.diff == pytest.approx((2.0 + 0.0 + 0.5) / 3)
    assert a.win == pytest.approx((1.0 + 0.5 + 0.75) / 3)
    assert a.diff_low <= a.diff <= a.diff_high and a.win_low <= a.win <= a.win_high
    same = paired_bootstrap([1.0] * 4, [1.0] * 4, [0, 1, 2, 3])
    assert (same.diff_low, same.diff_high, same.win_low, same.win_high) == (0.0, 0.0, 0.5, 0.5)


def test_summary_rows_without_closeness_or_eval_keep_the_old_table() -> None:
    base = {"controller": "aisp", "seed": 0, "budget": 4, "samples": 4, "tokens": 8, "seconds": 1.0}
    rows = summarize([{**base, "prompt_index": 0, "reward": 1.0, "cost": -1.0}], baseline=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = markdown_table(rows)
    assert "Closeness" not in table and rows[0]["diff"] is None


def test_the_frontier_plot_and_the_scale_free_grid(tmp_path, tiny_lm) -> None:
    from mpc_llm.controllers.sweep import aisp_scale_free_grid
    from mpc_llm.evaluation.summary.frontier import kl_figure

    grid = aisp_scale_free_grid([0.1, 0.3], [0.5], num_samples=4, num_knots=1)
    assert all(c.config.sigma_relative in (0.1, 0.3) and c.config.lambda_ is None for c in grid.values())
    lm = tiny(tiny_lm)
    rows = compare(
        PROMPTS[:2], {**grid, "best_of_n": BestOfN(num_samples=4)}, lm.with_prompts,
        CallableReward(lambda p, r: float(len(set(r))), name="chars").as_cost(), budgets=[4, 8],
        out_dir=tmp_path / "sweep", progress=False, eval_rewards={"kw": KeywordReward(["a"])},
    )  # fmt: skip
    assert (tmp_path / "sweep" / "frontier.png").stat().st_size > 0
    best = [r for r in rows if r["controller"] == "best_of_n"]
    assert [kl_figure(r) for r in best] == pytest.approx([selection_bound(4), selection_bound(8)])
