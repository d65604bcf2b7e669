"""`merge_runs` (``evaluation/compare/merge.py``), the cases its mutation run left untested (issue
36), on run folders written by hand (no comparison is run): what a run folder must hold, the key a
record is matched by, every refusal and its message, which baseline the merge pairs against, what it
writes (settings, records in order, the summary against the baseline) and a value's amortised
training on the compute axis."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest

from mpc_llm.evaluation.compare.merge import check_out, merge_runs, prompt_key, read_run
from mpc_llm.evaluation.compare.records_file import write_records

SETTINGS = {"system": "fake", "prompts": "toy"}


def record(controller: str, p: int, reward: float, budget: int = 4, seed: int = 0) -> dict:
    return {"controller": controller, "budget": budget, "prompt_index": p, "seed": seed, "reward": reward,
            "cost": -reward, "samples": budget, "tokens": 4 * budget, "seconds": 0.1, "kl_estimate": 0.0,
            "selection_bound": 0.1, "forward_tokens": 10.0 * budget}  # fmt: skip


def make_run(folder: Path, controllers: dict, records: list[dict], **settings) -> Path:
    folder.mkdir(parents=True)
    body = {**SETTINGS, "controllers": controllers, "num_prompts": 3, **settings}
    (folder / "settings.json").write_text(json.dumps(body))
    write_records(folder / "records.jsonl", records)
    return folder


def two_runs(root: Path, both: dict | None = None, **b_settings) -> tuple[Path, Path]:
    """Run a: best-of-N (reward p) and AISP (p + 1) on prompts 0-2; run b: random shooting (p + 0.5)
    on prompts 0-1, and best-of-N again (same settings: taken from a). ``both``: settings of both."""
    a_records = [record(c, p, p + (c == "aisp")) for c in ("best_of_n", "aisp") for p in range(3)]
    b_records = [record("best_of_n", p, 9.0) for p in range(2)] + [record("rs", p, p + 0.5) for p in range(2)]
    a = make_run(root / "a", {"best_of_n": {"n": 1}, "aisp": {"s": 1}}, a_records, **(both or {}))
    b = make_run(root / "b", {"best_of_n": {"n": 1}, "rs": {"s": 2}}, b_records, **(both or {}), **b_settings)
    return a, b


def exactly(message: str) -> str:
    return "^" + re.escape(message) + "$"


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --------------------------------------------------------------------------- reading a run


def test_read_run_returns_the_settings_and_records_written(tmp_path) -> None:
    a, _ = two_runs(tmp_path)
    settings, records = read_run(a)
    assert settings == json.loads((a / "settings.json").read_text()) and settings["system"] == "fake"
    assert records == lines(a / "records.jsonl") and len(records) == 6


def test_read_run_refuses_a_folder_without_settings_or_without_records_naming_it(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        ValueError, match=exactly(f"{tmp_path / 'empty'} is not a comparison's folder (no settings.json)")
    ):
        read_run(tmp_path / "empty")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "settings.json").write_text("{}")
    message = (f"{tmp_path / 'half'} has not finished (no records.jsonl, only shards): finish it with the "
               "same command and --resume before merging")  # fmt: skip
    with pytest.raises(ValueError, match=exactly(message)):
        read_run(tmp_path / "half")


def test_read_run_skips_a_torn_last_line_and_leaves_the_file_as_it_was(tmp_path) -> None:
    a, _ = two_runs(tmp_path)
    torn = (a / "records.jsonl").read_text() + '{"controller": "aisp", "bud'
    (a / "records.jsonl").write_text(torn)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "dropping a torn last line": nothing is repaired
        _, records = read_run(a)
    assert len(records) == 6 and (a / "records.jsonl").read_text() == torn  # reading never writes


def test_a_record_is_matched_by_its_sources_prompt_id_where_it_has_one() -> None:
    assert prompt_key({"prompt_id": "abc", "prompt_index": 3, "seed": 1}) == ("abc", 1)
    assert prompt_key({"prompt_index": 3, "seed": 2}) == (3, 2)


# --------------------------------------------------------------------------- the output folder


def test_the_same_run_given_twice_is_refused_naming_both_spellings(tmp_path) -> None:
    a, b = two_runs(tmp_path)
    again = tmp_path / "b" / ".." / "a"
    message = f"{again} is given twice (as {a} too): its records would count twice; give each run once"
    with pytest.raises(ValueError, match=exactly(message)):
        check_out([a, b, again], tmp_path / "m")


def test_an_output_that_is_a_run_or_inside_one_is_refused(tmp_path) -> None:
    a, b = two_runs(tmp_path)
    with pytest.raises(
        ValueError, match=exactly(f"--out {b} is one of the runs being merged; write the merge elsewhere")
    ):
        check_out([a, b], b)
    inside = a / "merged"
    message = (f"--out {inside} is inside the run {a}, where it would be a file no run writes; write the "
               "merge outside every run")  # fmt: skip
    with pytest.raises(ValueError, match=exactly(message)):
        check_out([a, b], inside)


def test_an_output_holding_a_run_is_refused_unless_overwritten(tmp_path) -> None:
    a, b = two_runs(tmp_path)
    done = make_run(tmp_path / "done", {"x": {}}, [record("x", 0, 1.0)])
    message = (f"{done} already holds a run (settings.json and its records); pass --overwrite to replace it, "
               "or choose another folder for --out")  # fmt: skip
    with pytest.raises(ValueError, match=exactly(message)):
        check_out([a, b], done)  # the default: never overwrite
    check_out([a, b], done, overwrite=True)
    torn = tmp_path / "torn"  # a records file of one byte is a run's all the same
    torn.mkdir()
    (torn / "settings.json").write_text("{}")
    (torn / "records.jsonl").write_text("{")
    with pytest.raises(ValueError, match="already holds a run"):
        check_out([a, b], torn)


def test_a_new_folder_or_one_holding_only_a_runs_settings_is_free_for_the_merge(tmp_path) -> None:
    a, b = two_runs(tmp_path)
    check_out([a, b], tmp_path / "new")
    for records in (None, ""):  # settings.json alone, or beside an empty records file: no run yet
        free = tmp_path / f"free{records is None}"
        free.mkdir()
        (free / "settings.json").write_text("{}")
        if records is not None:
            (free / "records.jsonl").write_text(records)
        check_out([a, b], free)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("a user's file")
    with pytest.raises(ValueError, match="holds no run"):
        check_out([a, b], mine, overwrite=True)


# --------------------------------------------------------------------------- merge_runs


def test_merge_needs_two_runs_sharing_a_pair(tmp_path) -> None:
    a, _ = two_runs(tmp_path)
    with pytest.raises(ValueError, match=exactly("merge needs at least two run folders")):
        merge_runs([a], tmp_path / "m")
    far = make_run(tmp_path / "far", {"rs": {"s": 2}}, [record("rs", 7, 1.0)])
    with pytest.raises(
        ValueError, match=exactly("the runs share no (prompt, seed) pair: nothing to compare")
    ):
        merge_runs([a, far], tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_a_baseline_no_run_holds_is_refused_naming_the_labels(tmp_path) -> None:
    a, b = two_runs(tmp_path)
    message = "--baseline nobody: no run holds that controller; the labels are aisp, best_of_n, rs"
    with pytest.raises(ValueError, match=exactly(message)):
        merge_runs([a, b], tmp_path / "m", baseline="nobody")


def test_the_merge_writes_the_first_runs_settings_and_the_shared_records_in_order(tmp_path) -> None:
    a, b = two_runs(tmp_path, dtype=None)  # b records dtype null (float32): comparable with a, which has none
    merge_runs([b, a], tmp_path / "m")
    settings = json.loads((tmp_path / "m" / "settings.json").read_text())
    assert settings == {
        "system": "fake", "prompts": "toy", "dtype": None,
        "controllers": {"best_of_n": {"n": 1}, "rs": {"s": 2}, "aisp": {"s": 1}},
        "budgets": [4], "num_prompts": 2, "seeds": [0],
        "merged_from": {str(b): {"controllers": ["best_of_n", "rs"], "num_prompts": 3},
                        str(a): {"controllers": ["aisp", "best_of_n"], "num_prompts": 3}},
    }  # fmt: skip
    merged = lines(tmp_path / "m" / "records.jsonl")
    # best-of-N from b (the first run holding it: reward 9), each label's records on prompts 0-1 only
    assert [(r["controller"], r["prompt_index"], r["reward"]) for r in merged] == [
        ("aisp", 0, 1.0), ("aisp", 1, 2.0), ("best_of_n", 0, 9.0), ("best_of_n", 1, 9.0),
        ("rs", 0, 0.5), ("rs", 1, 1.5),
    ]  # fmt: skip


def test_records_are_written_sorted_by_controller_budget_seed_and_prompt(tmp_path) -> None:
    shuffled = [record("z", p, 1.0, budget=b, seed=s) for b in (8, 4) for s in (1, 0) for p in (1, 0)]
    a = make_run(tmp_path / "a", {"z": {}}, shuffled)
    b = make_run(
        tmp_path / "b", {"y": {}}, [record("y", p, 0.0, budget=4, seed=s) for s in (1, 0) for p in (1, 0)]
    )
    merge_runs([a, b], tmp_path / "m", baseline="y")
    merged = [
        (r["controller"], r["budget"], r["seed"], r["prompt_index"])
        for r in lines(tmp_path / "m" / "records.jsonl")
    ]
    assert merged == sorted(merged) and len(merged) == 12


def test_the_merge_pairs_against_best_of_n_by_default_another_baseline_if_named_or_none(tmp_path) -> None:
    a, b = two_runs(tmp_path)
    rows = {r["controller"]: r for r in merge_runs([a, b], tmp_path / "m")}
    assert rows["aisp"]["diff"] == pytest.approx(1.0) and rows["rs"]["diff"] == pytest.approx(0.5)
    assert "Against best_of_n's curve" in (tmp_path / "m" / "summary.md").read_text()
    rows = {r["controller"]: r for r in merge_runs([a, b], tmp_path / "rs", baseline="rs")}
    assert rows["aisp"]["diff"] == pytest.approx(0.5) and rows["best_of_n"]["diff"] == pytest.approx(-0.5)
    assert "Against rs's curve" in (tmp_path / "rs" / "summary.md").read_text()
    learned = {"value_learning": {"learning_cost": {"tokens": 4000}}}
    c = make_run(tmp_path / "c", {"re": learned}, [record("re", p, 0.0) for p in range(3)])
    d = make_run(tmp_path / "d", {"rs": {}}, [record("rs", p, 1.0) for p in range(3)])
    rows = merge_runs([c, d], tmp_path / "none")
    assert all(r["diff"] is None for r in rows)  # no best-of-N, none named: nothing to pair against
    summary = (tmp_path / "none" / "summary.md").read_text()
    assert "curve" not in summary and "Compute at equal compute" not in summary  # no curve to compare with


def test_a_merge_replaces_a_finished_merge_only_with_overwrite(tmp_path) -> None:
    a, b = two_runs(tmp_path)
    merge_runs([a, b], tmp_path / "m")
    with pytest.raises(ValueError, match="already holds a run"):
        merge_runs([a, b], tmp_path / "m")
    (tmp_path / "m" / "summary.md").write_text("stale")
    merge_runs([a, b], tmp_path / "m", overwrite=True)
    assert "stale" not in (tmp_path / "m" / "summary.md").read_text()


def test_a_learned_values_training_is_amortised_onto_the_compute_axis(tmp_path) -> None:
    """A label whose settings carry its value's training (4000 tokens) adds 4000 / 1000 = 4 tokens per
    prompt to its compute: 40 forward tokens per prompt at budget 4, 44 on the axis."""
    learned = {"value_learning": {"learning_cost": {"tokens": 4000}}}
    a = make_run(
        tmp_path / "a",
        {"best_of_n": {}},
        [record("best_of_n", p, p, budget=n) for n in (1, 4, 8) for p in range(3)],
    )
    b = make_run(tmp_path / "b", {"re": learned}, [record("re", p, p + 1.0) for p in range(3)])
    rows = merge_runs([a, b], tmp_path / "m")
    re_row = next(r for r in rows if r["controller"] == "re")
    assert re_row["curve"]["compute"]["x"] == pytest.approx(44.0)


def test_runs_without_a_named_prompt_source_must_share_their_prompt_list(tmp_path) -> None:
    unnamed = {"prompts": None, "prompts_sha256": "f00d"}
    a, b = two_runs(tmp_path / "same", both=unnamed)
    merge_runs([a, b], tmp_path / "m1")  # one list, named by its hash
    c = make_run(
        tmp_path / "c",
        {"rs": {}},
        [record("rs", p, 1.0) for p in range(3)],
        **{**unnamed, "prompts_sha256": "beef"},
    )
    message = ("the runs were given different prompt lists and name no prompt source (settings 'prompts'), "
               "so their prompt indices cannot be matched; merge runs of one prompt source")  # fmt: skip
    with pytest.raises(ValueError, match=exactly(message)):
        merge_runs([a, c], tmp_path / "m2")
    named, other = two_runs(tmp_path / "named", prompts_sha256="beef")  # a named source: its indices match
    merge_runs([named, other], tmp_path / "m3")


def test_runs_that_differ_in_a_setting_are_refused_naming_both_values(tmp_path) -> None:
    a, b = two_runs(tmp_path, system="other")
    message = f"{b} and {a} differ in 'system' ('other' against 'fake'): their records are not comparable"
    with pytest.raises(ValueError, match=exactly(message)):
        merge_runs([a, b], tmp_path / "m")


def test_a_run_from_before_the_dtype_was_recorded_merges_with_a_float32_run(tmp_path) -> None:
    a, b = two_runs(tmp_path, dtype="float32")
    merge_runs([a, b], tmp_path / "m")
    a2, b2 = two_runs(tmp_path / "bf16", dtype="bfloat16")
    with pytest.raises(ValueError, match="differ in 'dtype'"):
        merge_runs([a2, b2], tmp_path / "m2")


def test_a_label_with_other_settings_in_a_later_run_is_refused_and_every_other_label_is_kept(
    tmp_path,
) -> None:
    a, _ = two_runs(tmp_path)
    clash = make_run(tmp_path / "clash", {"aisp": {"s": 2}}, [record("aisp", 0, 0.0)])
    message = f"controller 'aisp' has different settings in {a} and {clash}; rename it in one run's config"
    with pytest.raises(ValueError, match=exactly(message)):
        merge_runs([a, clash], tmp_path / "m")
    # a shared label (same settings) listed before a new one: the new one is still merged
    later = make_run(tmp_path / "later", {"best_of_n": {"n": 1}, "cem": {}, "rs": {}},
                     [record(c, p, 0.0) for c in ("best_of_n", "cem", "rs") for p in range(3)])  # fmt: skip
    rows = merge_runs([a, later], tmp_path / "m")
    assert {r["controller"] for r in rows} == {"best_of_n", "aisp", "cem", "rs"}


def test_a_run_that_names_no_controllers_adds_no_records_and_is_listed_with_none(tmp_path) -> None:
    a, _ = two_runs(tmp_path)
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "settings.json").write_text(json.dumps(SETTINGS))
    write_records(bare / "records.jsonl", [record("ghost", p, 5.0) for p in range(3)])
    rows = merge_runs([a, bare], tmp_path / "m")
    assert {r["controller"] for r in rows} == {"best_of_n", "aisp"}
    settings = json.loads((tmp_path / "m" / "settings.json").read_text())
    assert settings["merged_from"][str(bare)] == {"controllers": [], "num_prompts": None}
