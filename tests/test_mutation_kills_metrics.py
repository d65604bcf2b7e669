"""The summary's statistics (`metrics`) and its reading of best-of-N's curve (`verdicts`), exactly.

Student's t quantiles are checked against SciPy's values (written out here: SciPy is not a
dependency), the bootstrap against properties that hold for any resampling, and the verdict tables
against their exact text.
"""

from __future__ import annotations

import math

import pytest

from mpc_llm.evaluation.summary.metrics import (
    distinct_n,
    is_valid,
    mean_ci,
    ngrams,
    paired_bootstrap,
    rep_n,
    t_quantile,
    win_rate,
)
from mpc_llm.evaluation.summary.verdicts import curve_cell, curve_table, plain_answer

#: (p, df, scipy.stats.t.ppf(p, df))
T_TABLE = [
    (0.975, 3, 3.1824463052837078),
    (0.995, 5, 4.032142983555228),
    (0.9, 30, 1.3104150253913955),
    (0.3, 4, -0.5686490630497053),
    (0.999, 3, 10.214531852407383),
    (0.975, 10, 2.228138851986274),
    (0.95, 100, 1.6602343260853392),
    (0.6, 7, 0.2631668613520229),
    (0.9995, 3, 12.923978636687961),  # far tails: Newton needs more than four steps here
    (0.0005, 4, -8.610301581379275),
]


@pytest.mark.parametrize(("p", "df", "want"), T_TABLE)
def test_t_quantiles_match_scipy_beyond_two_degrees_of_freedom(p: float, df: int, want: float) -> None:
    assert t_quantile(p, df) == pytest.approx(want, rel=1e-9)


def test_the_median_of_t_is_zero() -> None:
    assert t_quantile(0.5, 5) == 0.0 and t_quantile(0.5, 1) == 0.0


@pytest.mark.parametrize(
    ("p", "df", "want"),
    [
        (0.9, 1, 3.0776835371752544),
        (0.25, 1, -1.0),
        (0.975, 2, 4.302652729749462),
        (0.1, 2, -1.8856180831641267),
    ],
)
def test_t_quantiles_with_one_or_two_degrees_of_freedom_are_the_closed_forms(
    p: float, df: int, want: float
) -> None:
    assert t_quantile(p, df) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize(("p", "df"), [(0.0, 3), (1.0, 3), (-0.1, 3), (1.5, 3), (0.5, 0), (0.5, -2)])
def test_a_t_quantile_outside_its_domain_is_refused(p: float, df: int) -> None:
    with pytest.raises(ValueError) as err:
        t_quantile(p, df)
    assert str(err.value) == f"need 0 < p < 1 and df >= 1, got p={p}, df={df}"


def test_mean_ci_at_any_level_is_the_t_interval() -> None:
    values = [1.0, 4.0, 2.0, 7.0, 3.0]
    mean = 17.0 / 5
    sd = math.sqrt(sum((x - mean) ** 2 for x in values) / 4)
    for level, t in ((0.95, 2.7764451051977987), (0.9, 2.131846781683), (0.5, 0.7406970180165)):
        ci = mean_ci(values, level=level)
        half = t * sd / math.sqrt(5)
        assert (ci.mean, ci.low, ci.high, ci.n) == pytest.approx(
            (mean, mean - half, mean + half, 5), rel=1e-6
        )
        assert ci.half_width == pytest.approx(half, rel=1e-6)


def test_mean_ci_of_one_value_has_zero_width_and_of_none_is_refused() -> None:
    ci = mean_ci([2.5])
    assert (ci.mean, ci.low, ci.high, ci.n, ci.half_width) == (2.5, 2.5, 2.5, 1, 0.0)
    with pytest.raises(ValueError, match=r"^mean_ci needs at least one value$"):
        mean_ci([])


def test_win_rate_counts_wins_ties_and_losses() -> None:
    assert win_rate([2.0], [1.0]) == 1.0
    assert win_rate([1.0], [1.0]) == 0.5
    assert win_rate([0.0], [1.0]) == 0.0
    assert win_rate([2.0, 1.0, 0.0, 5.0], [1.0, 1.0, 1.0, 5.0]) == pytest.approx(2.0 / 4)


@pytest.mark.parametrize(("ours", "theirs"), [([], []), ([1.0], [1.0, 2.0]), ([1.0, 2.0], [1.0])])
def test_win_rate_refuses_empty_or_unpaired_sequences(ours: list[float], theirs: list[float]) -> None:
    with pytest.raises(ValueError, match=r"^win_rate needs two non-empty sequences of the same length$"):
        win_rate(ours, theirs)


def test_ngrams_and_the_diversity_figures_for_any_n() -> None:
    assert ngrams(["a", "b", "c"], 2) == [("a", "b"), ("b", "c")]
    assert ngrams(["a", "b", "c"], 3) == [("a", "b", "c")]
    assert ngrams(["a", "b"], 3) == []
    assert distinct_n(["a b a", "a c"], n=1) == pytest.approx(3 / 5)
    assert distinct_n(["a b c a b c"], n=3) == pytest.approx(3 / 4)
    assert distinct_n(["a", "b"], n=2) == 0.0  # no bigram at all
    assert distinct_n(["a b c", "a b d"]) == pytest.approx(3 / 4)  # n = 2 by default
    assert rep_n("a a a", n=1) == pytest.approx(1 - 1 / 3)
    assert rep_n("a b c a b c", n=3) == pytest.approx(1 - 3 / 4)
    assert rep_n("word", n=2) == 0.0
    assert rep_n("the cat the cat") == pytest.approx(1 - 2 / 3)


def test_a_record_is_valid_only_with_a_finite_numeric_reward_and_no_invalid_flag() -> None:
    assert (
        is_valid({"reward": 1.0}) and is_valid({"reward": 0}) and is_valid({"reward": -3.5, "invalid": False})
    )
    assert not is_valid({"reward": 1.0, "invalid": True})
    assert not is_valid({"reward": float("nan")}) and not is_valid({"reward": float("inf")})
    assert not is_valid({"reward": None}) and not is_valid({}) and not is_valid({"reward": "1.0"})


def test_the_bootstrap_averages_each_groups_pairs_before_resampling() -> None:
    # group "p" has a win and a loss (win 0.5, diff 0), group "q" one win by 2
    b = paired_bootstrap([3.0, 0.0, 5.0], [1.0, 2.0, 3.0], ["p", "p", "q"])
    assert (b.diff, b.win, b.n) == pytest.approx((1.0, 0.75, 2))
    assert 0.0 <= b.diff_low <= b.diff <= b.diff_high <= 2.0
    assert 0.5 <= b.win_low <= b.win <= b.win_high <= 1.0
    assert b.diff_low == 0.0 and b.diff_high == 2.0  # 2000 resamples of two groups hit both ends
    assert b.win_low == 0.5 and b.win_high == 1.0


def test_a_tie_counts_one_half_in_the_bootstrap() -> None:
    b = paired_bootstrap([1.0, 2.0, 0.0], [1.0, 1.0, 1.0], ["tie", "win", "loss"])
    assert b.win == pytest.approx(0.5)
    assert paired_bootstrap([1.0], [1.0], [0]).win == 0.5


def test_the_bootstrap_sums_in_float64() -> None:
    b = paired_bootstrap([0.1, 0.0, 0.0], [0.0, 1.0, 1.0], [0, 0, 0])
    assert b.diff == (0.1 - 1.0 - 1.0) / 3  # float32 accumulators would round both
    assert b.win == 1.0 / 3


def test_the_bootstrap_interval_is_the_seeded_percentile_of_2000_resampled_means() -> None:
    import torch

    ours, theirs = [0.3, 1.2, -0.4, 0.9, 0.0, 2.0, -1.1], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    diffs = torch.tensor([a - b for a, b in zip(ours, theirs, strict=True)], dtype=torch.float64)
    draws = torch.randint(0, 7, (2000, 7), generator=torch.Generator().manual_seed(0))
    q = torch.tensor([0.025, 0.975], dtype=torch.float64)
    low, high = torch.quantile(diffs[draws].mean(dim=1), q).tolist()
    b = paired_bootstrap(ours, theirs, list(range(7)))
    assert (b.diff_low, b.diff_high) == pytest.approx((low, high), rel=1e-12)


def test_one_group_gives_a_point_interval() -> None:
    b = paired_bootstrap([2.0, 4.0], [1.0, 1.0], [0, 0])
    assert (b.diff, b.diff_low, b.diff_high) == pytest.approx((2.0, 2.0, 2.0))
    assert (b.win, b.win_low, b.win_high, b.n) == pytest.approx((1.0, 1.0, 1.0, 1))


def test_the_bootstrap_is_seeded_and_its_interval_has_its_level() -> None:
    ours = [float(i % 7) for i in range(40)]
    theirs = [float((3 * i) % 5) for i in range(40)]
    groups = list(range(40))
    first, again = paired_bootstrap(ours, theirs, groups), paired_bootstrap(ours, theirs, groups)
    assert first == again
    other = paired_bootstrap(ours, theirs, groups, seed=1)
    assert (other.diff_low, other.diff_high) != (first.diff_low, first.diff_high)
    narrow = paired_bootstrap(ours, theirs, groups, level=0.5)
    assert first.diff_low < narrow.diff_low < narrow.diff_high < first.diff_high
    # the 95% interval of a mean over 40 prompts is about 2 x 1.96 standard errors wide
    diffs = [a - b for a, b in zip(ours, theirs, strict=True)]
    mean = sum(diffs) / 40
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 40 / 40)
    assert first.diff_high - first.diff_low == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert narrow.diff_high - narrow.diff_low == pytest.approx(2 * 0.674 * se, rel=0.2)
    few = paired_bootstrap(ours, theirs, groups, num_resamples=1)
    assert few.diff_low == few.diff_high  # one resample: one mean


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (([], [], []), {}),
        (([1.0], [1.0, 2.0], [0, 1]), {}),
        (([1.0, 2.0], [1.0, 2.0], [0]), {}),
    ],
)
def test_the_bootstrap_refuses_unpaired_or_empty_input(args: tuple, kwargs: dict) -> None:
    with pytest.raises(
        ValueError, match=r"^paired_bootstrap needs three non-empty sequences of the same length$"
    ):
        paired_bootstrap(*args, **kwargs)


@pytest.mark.parametrize(("level", "num_resamples"), [(0.0, 10), (1.0, 10), (1.5, 10), (0.9, 0)])
def test_the_bootstrap_refuses_a_level_or_count_out_of_range(level: float, num_resamples: int) -> None:
    with pytest.raises(ValueError) as err:
        paired_bootstrap([1.0], [0.0], [0], num_resamples=num_resamples, level=level)
    assert str(err.value) == f"need 0 < level < 1 and num_resamples >= 1, got {level}, {num_resamples}"


def cell(**over: object) -> dict:
    return {"x": 2.5, "status": "within", "n_lo": 32, "n_hi": 64, "diff": 0.012, "diff_low": -0.01,
            "diff_high": 0.034, "verdict": "level", **over}  # fmt: skip


def test_a_curve_cell_names_where_on_the_curve_it_was_read() -> None:
    assert curve_cell(None) == "–" and curve_cell({}) == "–"
    assert curve_cell(cell()) == "+0.012 [-0.010, +0.034] level (x 2.50; n 32-64)"
    assert curve_cell(cell(n_lo=64)) == "+0.012 [-0.010, +0.034] level (x 2.50; n 64)"
    assert curve_cell(cell(status="beyond", verdict="below", n_lo=128, n_hi=128)).endswith(
        "below (x 2.50; beyond n 128)"
    )
    assert curve_cell(cell(status="before", verdict="above", n_lo=1, n_hi=1)).endswith(
        "above (x 2.50; before n 1)"
    )
    assert curve_cell(cell(x=12345.6)).endswith("(x 1.23e+04; n 32-64)")
    assert curve_cell(cell(x=9999.0)).endswith("(x 9999.00; n 32-64)")
    assert curve_cell(cell(x=10000.0)).endswith("(x 1e+04; n 32-64)")
    assert curve_cell(cell(x=10000.5)).endswith("(x 1e+04; n 32-64)")
    assert curve_cell(cell(x=-12345.6)).endswith("(x -1.23e+04; n 32-64)")
    assert curve_cell(cell(prompts=50)).endswith("(x 2.50; n 32-64; 50 prompts)")


def test_the_curve_table_lists_every_compared_row_and_the_budgets_it_read() -> None:
    rows = [
        {"controller": "best_of_n", "budget": 8},
        {"controller": "aisp", "budget": 8, "curve": {"kl": cell(), "compute": cell(n_lo=4, n_hi=8)},
         "eval_curve": {"judge": {"kl": cell(verdict="below", diff=-0.5)}}},
        {"controller": "cem", "budget": 16, "curve": {"ppl": cell(n_lo=16, n_hi=16)}},
    ]  # fmt: skip
    text = curve_table(rows, "best_of_n")
    intro, table = text.split("\n\n", 1)
    assert intro == (
        "\nAgainst best_of_n's whole curve (its budgets read on the same prompts and seeds; paired "
        "differences, 95% bootstrap over prompts; x: the point's mean on that axis; within the "
        "curve's range the verdict is above / level / below; farther than its last point: below "
        "(worse and farther) or beyond (no verdict); closer than its first: above or unknown). "
        "Curve budgets used: 4, 8, 16, 32, 64."
    )
    level = "+0.012 [-0.010, +0.034] level (x 2.50; n 32-64)"
    assert table == (
        "| controller | budget | Δ reward vs best_of_n's curve at equal closeness (KL figure, nats) "
        "| Δ reward vs best_of_n's curve at equal base perplexity (distance in log ppl from its smallest "
        "budget) | Δ reward vs best_of_n's curve at equal compute (model-token equivalents) "
        "| Δ held-out judge vs its curve at equal closeness |\n"
        "|---|---:|---|---|---|---|\n"
        f"| aisp | 8 | {level} | – | +0.012 [-0.010, +0.034] level (x 2.50; n 4-8) "
        "| -0.500 [-0.010, +0.034] below (x 2.50; n 32-64) |\n"
        "| cem | 16 | – | +0.012 [-0.010, +0.034] level (x 2.50; n 16) | – | – |\n"
    )
    assert curve_table(rows[:1], "best_of_n") == ""
    held_only = [{"controller": "aisp", "budget": 8, "eval_curve": {"judge": {"kl": cell()}}}]
    assert "Curve budgets used: –." in curve_table(held_only, "best_of_n")


def test_the_plain_answer_groups_every_verdict_on_its_axis() -> None:
    rows = [
        {
            "controller": "aisp",
            "budget": 8,
            "curve": {"kl": {"verdict": "above"}, "compute": {"verdict": "below"}},
        },
        {"controller": "cem", "budget": 8, "curve": {"kl": {"verdict": "above"}}},
        {"controller": "cem", "budget": 16, "curve": {"kl": {"verdict": "below"}}},
        {"controller": "smc", "budget": 8, "curve": {"kl": {"verdict": "unknown"}}},
        {"controller": "qalign", "budget": 8, "curve": {"kl": {"verdict": "beyond"}}},
        {"controller": "best_of_n", "budget": 8},
    ]
    assert plain_answer(rows, "best_of_n") == (
        "\n**Against best_of_n's curve at equal closeness (KL figure, nats):** above: aisp@8, cem@8; "
        "level: none; below: cem@16; beyond its measured range (no verdict): qalign@8; no verdict (too "
        "few prompts, or closer than its closest point): smc@8.\n"
    )
    assert plain_answer(rows, "base", axis="compute") == (
        "\n**Against base's curve at equal compute (model-token equivalents):** above: none; level: none; "
        "below: aisp@8.\n"
    )
    assert plain_answer(rows[-1:], "best_of_n") == ""
    assert plain_answer(rows, "best_of_n", axis="ppl") == ""
