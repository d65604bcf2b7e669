"""RunStore: refuses other runs, resumes without losing or redoing records, survives torn writes."""

from __future__ import annotations

import pytest

from mpc_llm.evaluation.compare.records_file import RunFolderError
from mpc_llm.evaluation.compare.store import RunStore
from mpc_llm.evaluation.summary.metrics import distinct_n, mean_ci, rep_n, t_quantile, win_rate

SETTINGS = {"model": "tiny", "budgets": [4, 8], "seeds": [0]}


def test_records_survive_a_restart_with_resume(tmp_path) -> None:
    store = RunStore(tmp_path / "run", SETTINGS)
    store.append([{"prompt": 0, "seed": 0, "reward": 1.5}])
    again = RunStore(tmp_path / "run", SETTINGS, resume=True)
    assert again.records == [{"prompt": 0, "seed": 0, "reward": 1.5}]
    assert again.done(["prompt", "seed"]) == {(0, 0)}


def test_a_torn_last_line_is_dropped(tmp_path) -> None:
    store = RunStore(tmp_path / "run", SETTINGS)
    store.append([{"prompt": 0}, {"prompt": 1}])
    with store.records_path.open("a") as handle:
        handle.write('{"prompt": 2, "rew')
    with pytest.warns(RuntimeWarning, match="torn last line"):
        again = RunStore(tmp_path / "run", SETTINGS, resume=True)
    assert [r["prompt"] for r in again.records] == [0, 1]
    again.append([{"prompt": 2}])
    assert [r["prompt"] for r in RunStore(tmp_path / "run", SETTINGS, resume=True).records] == [0, 1, 2]


def test_a_complete_last_line_without_newline_is_kept(tmp_path) -> None:
    store = RunStore(tmp_path / "run", SETTINGS)
    store.records_path.write_text('{"prompt": 0}')
    again = RunStore(tmp_path / "run", SETTINGS, resume=True)
    again.append([{"prompt": 1}])
    assert [r["prompt"] for r in RunStore(tmp_path / "run", SETTINGS, resume=True).records] == [0, 1]


def test_done_needs_every_record_of_a_key_and_discard_removes_partial_ones(tmp_path) -> None:
    store = RunStore(tmp_path / "run", SETTINGS)
    store.append([{"p": 0, "budget": 4}, {"p": 0, "budget": 8}, {"p": 1, "budget": 4}])
    assert store.done(["p"], per_key=2) == {(0,)}
    store.discard(["p"], {(1,)})
    assert (
        RunStore(tmp_path / "run", SETTINGS, resume=True).records
        == store.records
        == [
            {"p": 0, "budget": 4},
            {"p": 0, "budget": 8},
        ]
    )


def test_a_folder_with_another_run_is_refused(tmp_path) -> None:
    RunStore(tmp_path / "run", SETTINGS).append([{"prompt": 0}])
    with pytest.raises(RunFolderError, match="differs in: budgets"):
        RunStore(tmp_path / "run", {**SETTINGS, "budgets": [4]}, resume=True)
    with pytest.raises(RunFolderError, match="again with --resume to continue it or --overwrite"):
        RunStore(tmp_path / "run", SETTINGS)
    fresh = RunStore(tmp_path / "run", {**SETTINGS, "budgets": [4]}, overwrite=True)
    assert fresh.records == []


def test_a_non_empty_folder_without_a_run_is_refused(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="not empty"):
        RunStore(tmp_path, SETTINGS)


def test_settings_without_records_are_no_run_to_protect(tmp_path) -> None:
    """A run that failed before its first record left settings.json: the corrected run replaces it."""
    RunStore(tmp_path / "run", SETTINGS)
    fresh = RunStore(tmp_path / "run", {**SETTINGS, "budgets": [4]})
    assert fresh.records == [] and fresh._existing_settings()["budgets"] == [4]


def test_a_lazy_store_writes_nothing_before_its_first_records(tmp_path) -> None:
    store = RunStore(tmp_path / "run", SETTINGS, lazy=True)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="non-finite"):
        store.append([{"reward": float("nan")}])
    assert not (tmp_path / "run").exists()
    store.append([{"prompt": 0}])
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["records.jsonl", "settings.json"]


def test_overwrite_is_lazy_too_and_deletes_only_a_runs_files(tmp_path) -> None:
    run = tmp_path / "run"
    RunStore(run, SETTINGS).append([{"prompt": 0}])
    (run / "summary.md").write_text("old")
    store = RunStore(run, {**SETTINGS, "budgets": [4]}, overwrite=True, lazy=True)
    assert (run / "summary.md").exists() and (run / "records.jsonl").read_text()  # nothing deleted yet
    store.append([{"prompt": 1}])
    assert sorted(p.name for p in run.iterdir()) == ["records.jsonl", "settings.json"]
    assert RunStore(run, {**SETTINGS, "budgets": [4]}, resume=True).records == [{"prompt": 1}]


def test_overwrite_refuses_a_folder_with_a_foreign_file_before_deleting_anything(tmp_path) -> None:
    run = tmp_path / "run"
    RunStore(run, SETTINGS).append([{"prompt": 0}])
    (run / "my_notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    for lazy in (False, True):
        with pytest.raises(RunFolderError, match=r"holds files that no run writes \(my_notes.txt\)"):
            RunStore(run, {**SETTINGS, "budgets": [4]}, overwrite=True, lazy=lazy)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_a_file_as_the_run_folder_is_refused(tmp_path) -> None:
    (tmp_path / "afile.txt").write_text("x")
    with pytest.raises(RunFolderError, match="is a file, not a folder"):
        RunStore(tmp_path / "afile.txt", SETTINGS)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("name", ["records.jsonl", "records.rank-00001.jsonl"])
def test_a_non_finite_number_in_records_names_file_and_line(tmp_path, name: str, constant: str) -> None:
    RunStore(tmp_path / "run", SETTINGS).append([{"a": 1}])
    (tmp_path / "run" / name).write_text(f'{{"a": 1}}\n{{"a": {constant}}}\n', encoding="utf-8")
    expected = rf"{name}:2 holds {constant} .*delete that line and run again with --resume"
    with pytest.raises(RunFolderError, match=expected):
        RunStore.check(tmp_path / "run", SETTINGS, resume=True)


def test_corruption_before_the_last_line_is_an_error(tmp_path) -> None:
    store = RunStore(tmp_path / "run", SETTINGS)
    store.records_path.write_text('{"a": 1}\nnot json\n{"a": 2}\n')
    with pytest.raises(RunFolderError, match=r"records.jsonl:2 is not valid JSON"):
        RunStore(tmp_path / "run", SETTINGS, resume=True)


def test_mean_ci_against_hand_computed_values() -> None:
    # values 2, 4, 4, 4, 5, 5, 7, 9: mean 5, sample sd sqrt(32/7), t(0.975, 7) = 2.364624
    ci = mean_ci([2, 4, 4, 4, 5, 5, 7, 9])
    half = 2.364624 * (32 / 7) ** 0.5 / 8**0.5
    assert ci.mean == pytest.approx(5.0)
    assert (ci.low, ci.high) == pytest.approx((5 - half, 5 + half), abs=1e-5)
    assert mean_ci([3.0]).half_width == 0.0
    with pytest.raises(ValueError):
        mean_ci([])


@pytest.mark.parametrize(
    ("df", "expected"), [(1, 12.7062), (4, 2.7764), (7, 2.3646), (20, 2.0860), (120, 1.9799)]
)
def test_t_quantiles_match_the_table(df: int, expected: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)


def test_win_rate_and_diversity() -> None:
    assert win_rate([1, 1, 0, 2], [0, 1, 1, 2]) == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)
    assert distinct_n(["a a a a"], n=1) == 0.25
    assert distinct_n(["a b", "c d"], n=2) == 1.0
    assert rep_n("a b a b a b", n=2) == pytest.approx(1 - 2 / 5)
    assert rep_n("one", n=2) == 0.0
