"""The summary tables (`mpc_llm.evaluation.summary.tables`), field by field and cell by cell.

Each test pins one thing a comparison's reader relies on: which records a mean covers (seeds
averaged per prompt first, invalid records out of the reward but in what was spent), what a row is
paired with (the baseline at the same prompt, seed and budget), the exact text of the Markdown
tables, and what the written summary holds. The oracles are the metrics module's own functions,
applied by hand to the records each figure should cover.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from mpc_llm.evaluation.summary import tables
from mpc_llm.evaluation.summary.curve import curve_fields
from mpc_llm.evaluation.summary.metrics import distinct_n, mean_ci, paired_bootstrap, rep_n, win_rate
from mpc_llm.evaluation.summary.tables import (
    AMORTISED_OVER,
    amortised_learning,
    closeness_table,
    learning_costs,
    markdown_table,
    plot_reward_vs_samples,
    summarize,
    write_summary,
)


def rec(controller: str, budget: int, prompt: int, seed: int, reward: float, **extra: Any) -> dict[str, Any]:
    return {"controller": controller, "budget": budget, "prompt_index": prompt, "seed": seed,
            "reward": reward, "seconds": 1.0, **extra}  # fmt: skip


def study() -> list[dict[str, Any]]:
    """AISP first (so it is the first row), best-of-N second, budgets out of order, two seeds of
    prompt 0, an invalid AISP record, held-out scores with one missing, compute on every record."""
    compute = {"prefill_tokens": 10, "grad_steps": 0, "value_evals": 0, "value_tokens": 0}
    out = []
    for budget, lift in ((8, 0.5), (4, 0.0)):
        for prompt, seed, r in ((0, 0, 1.0), (0, 1, 2.0), (1, 0, 4.0), (2, 0, 0.0)):
            out.append(rec("best_of_n", budget, prompt, seed, r + lift, response="a b c",
                           tokens=20 * budget, samples=budget, forward_tokens=20.0 * budget,
                           base_logp_mean=-1.0, selection_bound=1.5, eval={"judge": -r},
                           **compute))  # fmt: skip
    aisp = [
        rec(
            "aisp",
            4,
            0,
            0,
            3.0,
            response="a b a b",
            tokens=100,
            samples=4,
            forward_tokens=90.0,
            base_logp_mean=-1.5,
            kl_estimate=2.0,
            selection_bound=0.5,
            kl_proposal=0.25,
            kl=0.5,
            eval={"judge": 1.0},
            **compute,
        ),
        rec(
            "aisp",
            4,
            0,
            1,
            1.0,
            response="c d",
            tokens=60,
            samples=4,
            forward_tokens=90.0,
            base_logp_mean=-2.5,
            kl_estimate=4.0,
            kl_proposal=0.75,
            eval={"judge": 3.0},
            **compute,
        ),
        rec(
            "aisp",
            4,
            1,
            0,
            4.0,
            response="e f",
            tokens=80,
            samples=4,
            forward_tokens=90.0,
            base_logp_mean=-2.0,
            kl_estimate=3.0,
            selection_bound=0.5,
            eval={"judge": None},
            **compute,
        ),
        rec(
            "aisp",
            4,
            2,
            0,
            float("nan"),
            response="g h",
            tokens=40,
            samples=2,
            forward_tokens=30.0,
            seconds=5.0,
            eval={"judge": 9.0},
            **compute,
        ),
    ]
    return aisp + out


def rows_by_key(rows: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["controller"], r["budget"]): r for r in rows}


def test_rows_follow_the_controllers_first_appearance_then_budget() -> None:
    rows = summarize(study())
    assert [(r["controller"], r["budget"]) for r in rows] == [
        ("aisp", 4), ("best_of_n", 4), ("best_of_n", 8),
    ]  # fmt: skip


def test_row_order_is_first_appearance_not_the_alphabet() -> None:
    records = [rec("zeta", 2, 0, 0, 1.0), rec("alpha", 1, 0, 0, 1.0), rec("zeta", 1, 0, 0, 1.0)]
    rows = summarize(records, baseline=None)
    assert [(r["controller"], r["budget"]) for r in rows] == [("zeta", 1), ("zeta", 2), ("alpha", 1)]


def test_the_reward_averages_seeds_per_prompt_first_and_leaves_invalid_records_out() -> None:
    row = rows_by_key(summarize(study()))[("aisp", 4)]
    ci = mean_ci([(3.0 + 1.0) / 2, 4.0])  # prompt 0's two seeds first; prompt 2 is invalid
    assert (row["reward"], row["reward_low"], row["reward_high"], row["n"]) == pytest.approx(
        (ci.mean, ci.low, ci.high, 2)
    )
    assert row["invalid"] == 1
    base = rows_by_key(summarize(study()))[("best_of_n", 8)]
    ci = mean_ci([2.0, 4.5, 0.5])
    assert (base["reward"], base["n"], base["invalid"]) == pytest.approx((ci.mean, 3, 0))


def test_a_group_of_only_invalid_records_has_no_reward_and_counts_them() -> None:
    records = [rec("aisp", 4, p, 0, float("nan"), tokens=5) for p in range(3)]
    (row,) = summarize(records)
    assert (row["n"], row["reward"], row["reward_low"], row["reward_high"]) == (0, None, None, None)
    assert row["invalid"] == 3 and row["tokens"] == 5.0


def test_win_rate_and_bootstrap_pair_with_the_baseline_at_the_same_prompt_seed_and_budget() -> None:
    rows = rows_by_key(summarize(study()))
    row = rows[("aisp", 4)]
    ours, theirs, groups = [3.0, 1.0, 4.0], [1.0, 2.0, 4.0], [0, 0, 1]  # budget 4's baseline, never 8's
    assert row["win_rate"] == pytest.approx(win_rate(ours, theirs))
    b = paired_bootstrap(ours, theirs, groups)
    got = [row[k] for k in ("diff", "diff_low", "diff_high", "win_low", "win_high")]
    assert got == pytest.approx([b.diff, b.diff_low, b.diff_high, b.win_low, b.win_high])
    assert rows[("best_of_n", 4)]["win_rate"] == pytest.approx(0.5)  # every pair a tie with itself
    assert rows[("best_of_n", 4)]["diff"] == pytest.approx(0.0)


def test_without_a_baseline_there_is_nothing_to_pair_with_and_no_curve() -> None:
    for row in summarize(study(), baseline=None):
        assert row["win_rate"] is None
        assert all(row[k] is None for k in ("diff", "diff_low", "diff_high", "win_low", "win_high"))
        assert "curve" not in row
        assert row["eval"]["judge"]["diff"] is None


def test_text_figures_cover_the_valid_responses_only() -> None:
    row = rows_by_key(summarize(study()))[("aisp", 4)]
    texts = ["a b a b", "c d", "e f"]
    assert row["distinct_2"] == pytest.approx(distinct_n(texts, 2))
    assert row["rep_2"] == pytest.approx(sum(rep_n(t, 2) for t in texts) / 3)
    (bare,) = summarize([rec("aisp", 4, 0, 0, 1.0)])
    assert "distinct_2" not in bare and "rep_2" not in bare


def test_closeness_means_skip_records_without_the_figure() -> None:
    rows = rows_by_key(summarize(study()))
    row = rows[("aisp", 4)]
    assert row["kl"] == pytest.approx(0.5)
    assert row["base_logp_mean"] == pytest.approx(-2.0)
    assert row["base_ppl"] == pytest.approx(math.exp(2.0))
    assert row["kl_estimate"] == pytest.approx(3.0)
    assert row["selection_bound"] == pytest.approx(0.5)
    assert row["kl_proposal"] == pytest.approx(0.5)
    base = rows[("best_of_n", 4)]
    assert base["kl"] is None and base["kl_estimate"] is None and base["kl_proposal"] is None
    assert base["selection_bound"] == pytest.approx(1.5)
    (bare,) = summarize([rec("aisp", 4, 0, 0, 1.0)])
    assert bare["base_logp_mean"] is None and bare["base_ppl"] is None


def test_held_out_scores_average_seeds_first_count_the_missing_and_pair_with_the_baseline() -> None:
    rows = rows_by_key(summarize(study()))
    judge = rows[("aisp", 4)]["eval"]["judge"]
    ci = mean_ci([2.0])  # prompt 0: seeds 1.0 and 3.0; prompt 1 unscored; prompt 2 invalid
    got = (judge["mean"], judge["low"], judge["high"], judge["n"])
    assert got == pytest.approx((ci.mean, ci.low, ci.high, 1))
    assert judge["missing"] == 1
    b = paired_bootstrap([1.0, 3.0], [-1.0, -2.0], [0, 0])  # budget 4's baseline held-out scores
    assert judge["diff"] == pytest.approx(b.diff)
    assert (judge["diff_low"], judge["diff_high"]) == pytest.approx((b.diff_low, b.diff_high))
    assert (judge["win_low"], judge["win_high"]) == pytest.approx((b.win_low, b.win_high))
    base = rows[("best_of_n", 8)]["eval"]["judge"]
    ci = mean_ci([-1.5, -4.0, 0.0])
    assert (base["mean"], base["low"], base["high"], base["n"], base["missing"]) == pytest.approx(
        (ci.mean, ci.low, ci.high, 3, 0)
    )
    (bare,) = summarize([rec("aisp", 4, 0, 0, 1.0)])
    assert "eval" not in bare


def test_an_unscored_group_has_no_held_out_mean() -> None:
    (row,) = summarize([rec("aisp", 4, p, 0, 1.0, eval={"judge": None}) for p in range(2)])
    judge = row["eval"]["judge"]
    got = (judge["mean"], judge["low"], judge["high"], judge["n"], judge["missing"])
    assert got == (None, None, None, 0, 2)


def test_what_was_spent_counts_every_record_invalid_ones_included() -> None:
    row = rows_by_key(summarize(study()))[("aisp", 4)]
    assert row["tokens"] == pytest.approx((100 + 60 + 80 + 40) / 4)
    assert row["samples"] == pytest.approx((4 + 4 + 4 + 2) / 4)
    assert row["seconds"] == pytest.approx((1 + 1 + 1 + 5) / 4)
    assert row["forward_tokens"] == pytest.approx((90 * 3 + 30) / 4)
    spent = (row["prefill_tokens"], row["grad_steps"], row["value_evals"], row["value_tokens"])
    assert spent == (10, 0, 0, 0)
    records = study()
    del records[0]["value_tokens"]  # one record from before the field: unknown, never a smaller mean
    assert rows_by_key(summarize(records))[("aisp", 4)]["value_tokens"] is None
    (bare,) = summarize([rec("aisp", 4, 0, 0, 1.0)])
    assert bare["tokens"] is None and bare["samples"] is None


def test_a_learned_values_amortised_cost_reaches_its_rows_compute_axis_only() -> None:
    records = study()
    plain = rows_by_key(summarize(records))[("aisp", 4)]
    learned = rows_by_key(summarize(records, learning={"aisp": 25.0, "other": 1e6}))[("aisp", 4)]
    assert plain["curve"] == curve_fields(records, "aisp", 4, "best_of_n", 0.0)["curve"]
    assert learned["curve"] == curve_fields(records, "aisp", 4, "best_of_n", 25.0)["curve"]
    assert learned["curve"]["compute"] != plain["curve"]["compute"]
    assert learned["eval_curve"] == curve_fields(records, "aisp", 4, "best_of_n", 25.0)["eval_curve"]
    assert "curve" not in rows_by_key(summarize(records))[("best_of_n", 4)]


ROW = {
    "controller": "aisp", "budget": 8, "n": 3, "reward": 0.5, "reward_low": 0.25, "reward_high": 0.75,
    "invalid": 0, "diff": 0.125, "diff_low": -0.0625, "diff_high": 0.25, "win_rate": 0.625,
    "win_low": 0.5, "win_high": 0.75, "distinct_2": 0.875, "rep_2": 0.0625, "samples": 8.0,
    "tokens": 321.4, "seconds": 1.234,
}  # fmt: skip


def test_the_markdown_table_header_and_row() -> None:
    text = markdown_table([ROW])
    assert text == (
        "| controller | budget | prompts | mean best reward [95% t-CI] "
        "| Δ reward vs baseline [95% bootstrap] | win rate vs baseline [95% bootstrap] "
        "| distinct-2 | rep-2 | scored / prompt | tokens / prompt | s / prompt |\n"
        "|---|---:|---:|---|---|---|---:|---:|---:|---:|---:|\n"
        "| aisp | 8 | 3 | 0.500 [0.250, 0.750] | 0.125 [-0.062, 0.250] | 0.62 [0.50, 0.75] "
        "| 0.875 | 0.062 | 8.0 | 321 | 1.23 |\n"
    )


def test_rows_are_one_line_each_and_whole_counts_print_as_they_are() -> None:
    second = {**ROW, "budget": 16, "tokens": 640}
    lines = markdown_table([ROW, second]).splitlines()
    assert len(lines) == 4 and lines[3].startswith("| aisp | 16 | 3 |")
    assert lines[3].endswith("| 8.0 | 640 | 1.23 |")


def test_reward_cells_count_invalid_records_and_missing_figures_read_as_dashes() -> None:
    some = {**ROW, "invalid": 2, "win_rate": None, "diff": None, "distinct_2": None, "rep_2": None,
            "samples": None, "tokens": None, "seconds": float("nan")}  # fmt: skip
    line = markdown_table([some]).splitlines()[2]
    assert line == "| aisp | 8 | 3 | 0.500 [0.250, 0.750] (2 invalid, excluded) | – | – | – | – | – | – | – |"
    none = {**ROW, "reward": None, "invalid": 4}
    assert "| – (all 4 invalid: no valid sample within the budget) |" in markdown_table([none])
    empty = {**ROW, "reward": None, "invalid": 0, "budget": 16, "n": 0}
    assert "| aisp | 16 | 0 | – | 0.125" in markdown_table([empty])


def test_the_closeness_table_is_empty_without_closeness_or_held_out_scores() -> None:
    assert closeness_table([ROW]) == ""
    assert markdown_table([ROW]).endswith("| 1.23 |\n")


def test_the_closeness_table_cells() -> None:
    row = {**ROW, "base_logp_mean": -1.25, "base_ppl": math.exp(1.25), "kl_estimate": 2.5,
           "selection_bound": 0.75,
           "eval": {"judge": {"mean": -0.5, "low": -0.75, "high": -0.25, "missing": 2,
                              "diff": 0.125, "diff_low": 0.0, "diff_high": 0.25}}}  # fmt: skip
    base = {"controller": "best_of_n", "budget": 8, "base_logp_mean": -1.0, "base_ppl": math.e,
            "selection_bound": 1.5, "eval": {"judge": {"mean": -1.0, "low": -2.0, "high": 0.0}}}  # fmt: skip
    text = closeness_table([row, base])
    assert text.split("\n\n| controller")[0] == (
        "\nCloseness to the base model (base log-likelihood: exact; selection bound: a bound; their sum "
        "with the steering log-ratio, the KL figure: a bound for best-of-N, a bound plus an unbiased "
        "estimate for a deterministic edit such as RE-Control, a heuristic for AISP and CEM, absent "
        "for controllers that select at every step) and held-out rewards:"
    )
    table = text.split(":\n\n", 1)[1]
    assert table == (
        "| controller | budget | base log-lik / token | base ppl | steering log-ratio (estimate) "
        "| selection bound | steering estimate + selection bound | held-out judge [95% t-CI] "
        "| Δ held-out judge vs baseline [95% bootstrap] |\n"
        "|---|---:|---:|---:|---:|---:|---:|---|---|\n"
        "| aisp | 8 | -1.250 | 3.49 | 2.50 | 0.75 | 3.25 | -0.500 [-0.750, -0.250] (2 unscored, excluded) "
        "| 0.125 [0.000, 0.250] |\n"
        "| best_of_n | 8 | -1.000 | 2.72 | – | 1.50 | – | -1.000 [-2.000, 0.000] | – |\n"
    )
    alone = closeness_table([{**row, "selection_bound": None, "eval": {}}])
    assert alone.endswith("| aisp | 8 | -1.250 | 3.49 | 2.50 | – | 2.50 |\n")  # no bound: the estimate
    assert "|---|---:|---:|---:|---:|---:|---:|\n" in alone
    assert closeness_table([{**ROW, "selection_bound": 1.0}]) != ""  # a bound alone is closeness


def test_learning_costs_list_each_learned_value_with_its_card() -> None:
    settings = {"controllers": {
        "re_control": {"value_learning": {
            "reward": "vader", "prompts": {"count": 2000, "source": "sharegpt:train"},
            "learning_cost": {"responses_scored": 8000, "tokens": 372354, "seconds_collect": 500.4,
                              "seconds_train": 30.3}}},
        "a_first": {"value_learning": {"learning_cost": {"seconds_train": 2.6}}},
        "best_of_n": {"class": "BestOfN"},
        "odd": "not a mapping",
    }}  # fmt: skip
    assert learning_costs(settings) == (
        "\nWhat the learned values cost to learn (once, outside the budgets above):\n\n"
        "- a_first: a value learned on ? prompts of ? (?): ? responses sampled and scored, ? tokens, 3 s\n"
        "- re_control: a value learned on 2000 prompts of sharegpt:train (vader): 8000 responses "
        "sampled and scored, 372354 tokens, 531 s\n"
    )
    assert learning_costs({"controllers": {"best_of_n": {"class": "BestOfN"}}}) == ""
    assert learning_costs({}) == ""


def test_amortised_learning_divides_a_cards_tokens_by_the_uses() -> None:
    settings = {"controllers": {
        "re_control": {"value_learning": {"learning_cost": {"tokens": 372354}}},
        "twisted": {"value_learning": {"learning_cost": {"tokens": 5000.0}}},
        "no_tokens": {"value_learning": {"learning_cost": {"tokens": "many"}}},
        "bare": {"value_learning": {}},
        "best_of_n": {"class": "BestOfN"},
        "odd": 3,
    }}  # fmt: skip
    assert amortised_learning(settings) == {"re_control": 372354 / AMORTISED_OVER, "twisted": 5.0}
    assert amortised_learning(settings, uses=4) == {"re_control": 372354 / 4, "twisted": 1250.0}
    assert AMORTISED_OVER == 1000
    assert amortised_learning({}) == {}


def test_write_summary_writes_the_answer_the_tables_the_costs_and_the_settings(tmp_path: Path) -> None:
    records = study()
    settings = {"budget_unit": "tokens", "reward": "vader",
                "controllers": {"aisp": {"value_learning": {"learning_cost": {"tokens": 4000}}}}}  # fmt: skip
    rows = summarize(records, learning=amortised_learning(settings))
    write_summary(rows, tmp_path, settings)
    text = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert text.startswith("# Comparison\n" + tables.plain_answer(rows, "best_of_n"))
    assert markdown_table(rows) in text and learning_costs(settings) in text
    curve = tables.curve_table(rows, "best_of_n")
    assert "whole curve" in curve and curve in text
    assert "over 1000 test prompts: aisp +4 tokens / prompt.\n" in text
    assert text.endswith(
        "\n<details><summary>settings</summary>\n\n```json\n"
        + json.dumps(settings, indent=2, sort_keys=True)
        + "\n```\n</details>\n"
    )
    assert json.loads((tmp_path / "summary.json").read_text(encoding="utf-8")) == json.loads(json.dumps(rows))
    assert (tmp_path / "reward_vs_samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "frontier.png").exists()


def test_write_summary_without_a_baseline_has_no_answer_and_no_curve(tmp_path: Path) -> None:
    rows = summarize(study(), baseline=None)
    settings = {"controllers": {"aisp": {"value_learning": {"learning_cost": {"tokens": 4000}}}}}
    write_summary(rows, tmp_path, settings, baseline=None)
    text = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert text.startswith("# Comparison\n\n| controller | budget |")
    assert "test prompts:" not in text and "whole curve" not in text


def test_the_summary_json_is_strict_json(tmp_path: Path) -> None:
    rows = [{**ROW, "reward": float("nan")}]
    with pytest.raises(ValueError):
        write_summary(rows, tmp_path, {}, baseline=None)


def test_the_reward_plot_draws_each_controllers_curve_and_band_in_budget_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    rows = [
        {"controller": "aisp", "budget": 16, "reward": 2.0, "reward_low": 1.0, "reward_high": 3.0},
        {"controller": "aisp", "budget": 4, "reward": 1.0, "reward_low": 0.5, "reward_high": 1.5},
        {"controller": "aisp", "budget": 8, "reward": None, "reward_low": None, "reward_high": None},
        {"controller": "best_of_n", "budget": 4, "reward": 0.5, "reward_low": 0.0, "reward_high": 1.0},
    ]
    path = plot_reward_vs_samples(rows, tmp_path / "r.png")
    assert path == tmp_path / "r.png" and path.read_bytes()[:4] == b"\x89PNG"
    (fig,) = figures
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["aisp", "best_of_n"]
    assert list(lines[0].get_xdata()) == [4, 16] and list(lines[0].get_ydata()) == [1.0, 2.0]
    assert lines[0].get_marker() == "o"
    band = ax.collections[0].get_paths()[0].vertices
    assert band[:, 1].min() == pytest.approx(0.5) and band[:, 1].max() == pytest.approx(3.0)
    assert ax.collections[0].get_alpha() == pytest.approx(0.2)  # translucent: the curves show through
    assert ax.xaxis.get_gridlines()[0].get_alpha() == pytest.approx(0.3)
    assert tuple(fig.get_size_inches()) == pytest.approx((6.4, 4.2)) and fig.dpi == 120
    assert ax.get_xscale() == "log" and ax.xaxis.get_transform().base == 2
    assert ax.get_xlabel() == "responses scored per prompt (budget)"
    assert ax.get_ylabel() == "mean best reward (95% CI)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["aisp", "best_of_n"]
    plot_reward_vs_samples(rows, tmp_path / "t.png", unit="tokens")
    assert figures[1].axes[0].get_xlabel() == "tokens generated per prompt"


def test_the_reward_plot_without_matplotlib_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError) as err:
        plot_reward_vs_samples([ROW], tmp_path / "r.png")
    assert str(err.value) == "plotting needs matplotlib: pip install 'mpc_llm[plot]'"


def test_write_summary_states_the_verdicts_and_every_learned_values_amortised_cost(tmp_path: Path) -> None:
    records = [{**r, "kl_estimate": 0.0} if r["controller"] == "best_of_n" else r for r in study()]
    records += [{**r, "controller": "twisted"} for r in records if r["controller"] == "aisp"]
    settings = {"controllers": {
        "aisp": {"value_learning": {"learning_cost": {"tokens": 4000}}},
        "twisted": {"value_learning": {"learning_cost": {"tokens": 2000}}},
    }}  # fmt: skip
    rows = summarize(records, learning=amortised_learning(settings))
    write_summary(rows, tmp_path, settings)
    text = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert text.startswith("# Comparison\n\n**Against best_of_n's curve")
    assert "over 1000 test prompts: aisp +4 tokens / prompt, twisted +2 tokens / prompt.\n" in text


def test_the_summary_json_is_indented_for_readable_diffs(tmp_path: Path) -> None:
    rows = summarize(study())
    write_summary(rows, tmp_path, {})
    assert (tmp_path / "summary.json").read_text(encoding="utf-8") == json.dumps(rows, indent=2)


def test_settings_that_are_not_strict_json_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_summary(summarize(study()), tmp_path, {"sigma": float("nan")})


def test_write_summary_plots_in_the_runs_budget_unit_against_its_baseline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(tables, "plot_reward_vs_samples", lambda *args: calls.append(("reward", *args)))
    monkeypatch.setattr(tables, "plot_frontier", lambda *args: calls.append(("frontier", *args)))
    rows = summarize(study())
    write_summary(rows, tmp_path, {"budget_unit": "tokens"})
    write_summary(rows, tmp_path, {}, baseline="aisp")
    assert calls == [
        ("reward", rows, tmp_path / "reward_vs_samples.png", "tokens"),
        ("frontier", rows, tmp_path / "frontier.png", "best_of_n"),
        ("reward", rows, tmp_path / "reward_vs_samples.png", "samples"),
        ("frontier", rows, tmp_path / "frontier.png", "aisp"),
    ]
