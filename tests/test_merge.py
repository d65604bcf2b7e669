"""`mpc-llm merge`: finished comparisons summarised together, on the prompts and seeds they share."""

from __future__ import annotations

import json

import pytest
from fake_text import COST, PROMPTS, FakeText

from mpc_llm.cli import main
from mpc_llm.controllers import AISP, BestOfN, RandomShooting
from mpc_llm.evaluation.compare import compare
from mpc_llm.evaluation.compare.merge import merge_runs


def run(out, controllers, prompts=PROMPTS, seeds=(0, 1), settings=None):
    return compare(
        prompts, controllers, lambda p: FakeText(p), COST, budgets=[4, 8], seeds=list(seeds),
        out_dir=out, settings=settings or {"system": "fake", "prompts": "toy"}, progress=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    run(
        root / "a", {"best_of_n": BestOfN(num_samples=8), "aisp": AISP(sigma=1.0, lambda_=0.5, num_samples=4)}
    )
    run(root / "b", {"best_of_n": BestOfN(num_samples=8), "rs": RandomShooting(sigma=1.0, num_samples=4)},
        prompts=PROMPTS[:3], seeds=(0,))  # fmt: skip
    return root


def test_the_merge_keeps_the_shared_prompts_and_summarises_every_controller(runs, tmp_path):
    rows = merge_runs([runs / "a", runs / "b"], tmp_path / "m")
    assert {(r["controller"], r["budget"]) for r in rows} == {
        (c, b) for c in ("best_of_n", "aisp", "rs") for b in (4, 8)
    }
    assert {r["n"] for r in rows} == {3}  # prompts 0..2, seed 0: what both runs hold
    records = [json.loads(line) for line in (tmp_path / "m" / "records.jsonl").read_text().splitlines()]
    assert {(r["prompt_index"], r["seed"]) for r in records} == {(i, 0) for i in range(3)}
    # a shared label is taken once, from the first run, and equals that run's own records
    ours = sorted(
        (r["prompt_index"], r["budget"], r["reward"]) for r in records if r["controller"] == "best_of_n"
    )
    first = [json.loads(line) for line in (runs / "a" / "records.jsonl").read_text().splitlines()]
    theirs = sorted(
        (r["prompt_index"], r["budget"], r["reward"])
        for r in first
        if r["controller"] == "best_of_n" and r["seed"] == 0 and r["prompt_index"] < 3
    )
    assert ours == theirs and len(ours) == 6
    aisp = next(r for r in rows if r["controller"] == "aisp" and r["budget"] == 8)
    assert aisp["diff"] is not None  # paired against best-of-N on the shared prompts
    settings = json.loads((tmp_path / "m" / "settings.json").read_text())
    assert settings["num_prompts"] == 3 and settings["seeds"] == [0] and len(settings["merged_from"]) == 2
    assert (tmp_path / "m" / "summary.md").is_file()


def test_a_label_run_at_more_budgets_in_a_later_run_gains_them(runs, tmp_path):
    """The same label with the same settings at other budgets in a later run adds those budgets; a
    budget both runs hold is taken once, from the first (the later run's copy is not added)."""
    compare(
        PROMPTS, {"aisp": AISP(sigma=1.0, lambda_=0.5, num_samples=4)}, lambda p: FakeText(p), COST,
        budgets=[8, 12], seeds=[0, 1], out_dir=tmp_path / "c",
        settings={"system": "fake", "prompts": "toy"}, progress=False,
    )  # fmt: skip
    rows = merge_runs([runs / "a", tmp_path / "c"], tmp_path / "m")
    assert {r["budget"] for r in rows if r["controller"] == "aisp"} == {4, 8, 12}

    def aisp8(folder):  # type: ignore[no-untyped-def]
        records = [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]
        return sorted((r["prompt_index"], r["seed"], r["reward"]) for r in records
                      if r["controller"] == "aisp" and r["budget"] == 8)  # fmt: skip

    assert aisp8(tmp_path / "m") == aisp8(runs / "a") and len(aisp8(runs / "a")) == 2 * len(PROMPTS)


def test_runs_that_are_not_comparable_are_refused(runs, tmp_path):
    run(
        tmp_path / "other",
        {"best_of_n": BestOfN(num_samples=8)},
        settings={"system": "other", "prompts": "toy"},
    )
    with pytest.raises(ValueError, match="differ in 'system'"):
        merge_runs([runs / "a", tmp_path / "other"], tmp_path / "m")
    run(tmp_path / "clash", {"aisp": AISP(sigma=2.0, lambda_=0.5, num_samples=4)})
    with pytest.raises(ValueError, match="'aisp' has different settings"):
        merge_runs([runs / "a", tmp_path / "clash"], tmp_path / "m")
    run(tmp_path / "unnamed", {"rs": RandomShooting(sigma=1.0, num_samples=4)}, prompts=PROMPTS[:2],
        settings={"system": "fake"})  # fmt: skip
    run(tmp_path / "unnamed2", {"best_of_n": BestOfN(num_samples=8)}, settings={"system": "fake"})
    with pytest.raises(ValueError, match="indices cannot be matched"):
        merge_runs([tmp_path / "unnamed2", tmp_path / "unnamed"], tmp_path / "m")
    with pytest.raises(ValueError, match="one of the runs"):
        merge_runs([runs / "a", runs / "b"], runs / "a")


def test_the_command_line_merges_and_refuses_an_unfinished_run(runs, tmp_path, capsys):
    assert main(["merge", str(runs / "a"), str(runs / "b"), "--out", str(tmp_path / "m")]) == 0
    assert "| rs | 8 |" in capsys.readouterr().out
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "settings.json").write_text("{}")
    assert main(["merge", str(runs / "a"), str(tmp_path / "half"), "--out", str(tmp_path / "m2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has not finished" in err and "--resume" in err


def test_the_frontier_legend_names_controllers_with_no_kl_figure(tmp_path, monkeypatch):
    """SMC and QAlign have a base perplexity but no KL figure: they are drawn only on the right
    panels, and the legend must still name them."""
    import matplotlib.figure

    from mpc_llm.evaluation.summary.frontier import plot_frontier

    rows = [
        {"controller": "best_of_n", "budget": 8, "reward": 0.7, "kl_estimate": 0.0, "selection_bound": 1.2,
         "base_ppl": 4.0},
        {"controller": "smc", "budget": 8, "reward": 0.6, "kl_estimate": None, "selection_bound": None,
         "base_ppl": 3.9},
    ]  # fmt: skip
    seen = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: seen.append(fig))
    plot_frontier(rows, tmp_path / "f.png")
    (legend,) = [ax.get_legend() for ax in seen[0].axes if ax.get_legend() is not None]
    assert [t.get_text() for t in legend.get_texts()] == ["best_of_n", "smc"]


#: every setting two merged runs must share; written out here (not read from the module), so that a
#: field dropped from ``COMPARABLE`` fails this test
MUST_SHARE = ("model", "dtype", "lm", "prompts", "reward", "eval_rewards", "budget_unit", "system")


@pytest.mark.parametrize("key", MUST_SHARE)
def test_merge_refuses_two_runs_that_differ_in_any_one_comparable_setting(runs, tmp_path, key):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(runs / "b", other)
    settings = json.loads((other / "settings.json").read_text())
    settings[key] = {"changed": key}  # differs from the run's value, whatever it was (absent too)
    (other / "settings.json").write_text(json.dumps(settings))
    with pytest.raises(ValueError, match=f"differ in '{key}'"):
        merge_runs([runs / "a", other], tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_a_decoding_option_added_later_takes_its_default_in_runs_recorded_before(tmp_path) -> None:
    """A run recorded before ``keep_states`` existed decoded as ``keep_states: false``: it merges with
    and resumes as a run that records the option, and a real difference is still refused."""
    from mpc_llm.evaluation.compare.store import comparable

    old = {"lm": {"max_new_tokens": 48, "temperature": 0.7}, "reward": "vader"}
    new = {"lm": {"max_new_tokens": 48, "temperature": 0.7, "keep_states": False}, "reward": "vader"}
    assert comparable(old) == comparable(new)
    other = {"lm": {"max_new_tokens": 48, "temperature": 1.0, "keep_states": False}, "reward": "vader"}
    assert comparable(old) != comparable(other)
