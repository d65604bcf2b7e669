"""Comparisons: exact budgets, resume after a kill, summaries against hand-computed values."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from fake_text import COST, PROMPTS, FakeText, controllers, run

from mpc_llm.controllers import AISP
from mpc_llm.evaluation.compare import check_budgets, compare
from mpc_llm.evaluation.compare.records_file import RunFolderError
from mpc_llm.evaluation.summary import summarize

HERE = Path(__file__).resolve().parent


def without_time(records: list[dict]) -> list[dict]:
    keyed = sorted(records, key=lambda r: (r["controller"], r["seed"], r["prompt_index"], r["budget"]))
    return [{k: v for k, v in r.items() if k != "seconds"} for r in keyed]


def test_every_controller_gets_exactly_the_budget(tmp_path) -> None:
    spent: dict[str, list[int]] = {}

    class Counting(FakeText):
        def rollout(self, controls, generators):
            spent.setdefault(self.tag, []).append(controls.shape[1])
            return super().rollout(controls, generators)

    def make(prompts):
        system = Counting(prompts)
        system.tag = make.current
        return system

    for name, controller in controllers().items():
        make.current = name
        compare(PROMPTS[:2], {name: controller}, make, COST, budgets=[4, 12], out_dir=tmp_path / name,
                progress=False, prompts_per_batch=2, baseline=None)  # fmt: skip
        assert sum(spent[name]) == 12, name
    assert spent == {"best_of_n": [8, 4], "random_shooting": [4, 4, 4], "aisp": [4, 4, 4]}


def test_records_at_each_budget_are_the_best_of_the_first_samples(tmp_path) -> None:
    run(str(tmp_path / "run"))
    records = [json.loads(line) for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    assert len(records) == len(PROMPTS) * 3 * 2 * 3  # prompts x controllers x seeds x budgets
    for r in records:
        assert r["reward"] == r["response"].split().count("good")
        assert r["tokens"] == 6 * r["budget"]
    by_key: dict[tuple, list[float]] = {}
    for r in sorted(records, key=lambda r: r["budget"]):
        by_key.setdefault((r["controller"], r["seed"], r["prompt_index"]), []).append(r["reward"])
    assert all(rewards == sorted(rewards) for rewards in by_key.values())  # anytime best never drops


def test_results_do_not_depend_on_how_prompts_are_batched(tmp_path) -> None:
    run(str(tmp_path / "a"), prompts_per_batch=1)
    run(str(tmp_path / "b"), prompts_per_batch=5)
    a = [json.loads(x) for x in (tmp_path / "a" / "records.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "b" / "records.jsonl").read_text().splitlines()]
    assert without_time(a) == without_time(b)


def wait_for_lines(path: Path, count: int, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not (path.exists() and path.read_text().count("\n") >= count):
        time.sleep(0.05)


def test_resume_after_a_kill_redoes_nothing_and_loses_nothing(tmp_path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(HERE / "fake_text.py"), str(out), "0.05"], env=env)
    records_path = out / "records.jsonl"
    wait_for_lines(records_path, 6)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = [json.loads(x) for x in records_path.read_text().splitlines() if x.endswith("}")]
    total = len(PROMPTS) * 3 * 2 * 3  # prompts x controllers x seeds x budgets
    assert 0 < len(before) < total, "the kill should land mid-run"

    run(str(out), resume=True)
    after = [json.loads(x) for x in records_path.read_text().splitlines()]
    assert after[: len(before)] == before  # nothing lost
    keys = [(r["prompt_index"], r["controller"], r["seed"], r["budget"]) for r in after]
    assert len(keys) == len(set(keys)) == total  # nothing redone, nothing missing
    run(str(tmp_path / "fresh"))
    fresh = [json.loads(x) for x in (tmp_path / "fresh" / "records.jsonl").read_text().splitlines()]
    assert without_time(after) == without_time(fresh)  # identical to an uninterrupted run


def test_a_finished_run_is_not_redone_on_resume(tmp_path) -> None:
    run(str(tmp_path / "run"))
    calls = []

    class Spy(FakeText):
        def rollout(self, controls, generators):
            calls.append(1)
            return super().rollout(controls, generators)

    compare(PROMPTS, controllers(), Spy, COST, budgets=[4, 8, 12], seeds=[0, 1], out_dir=tmp_path / "run",
            resume=True, prompts_per_batch=2, settings={"system": "fake"}, progress=False)  # fmt: skip
    assert calls == []
    for name in ("summary.md", "summary.json", "reward_vs_samples.png"):
        assert (tmp_path / "run" / name).stat().st_size > 0


def test_another_run_in_the_same_folder_is_refused(tmp_path) -> None:
    run(str(tmp_path / "run"))
    with pytest.raises(RunFolderError, match="differs in: budgets"):
        compare(PROMPTS, controllers(), FakeText, COST, budgets=[4, 8], seeds=[0, 1],
                out_dir=tmp_path / "run", resume=True, settings={"system": "fake"},
                progress=False)  # fmt: skip


def test_a_missing_baseline_is_reported(tmp_path) -> None:
    with pytest.warns(UserWarning, match="no controller is labelled 'best_of_n'"):
        compare(PROMPTS[:1], {"aisp": controllers()["aisp"]}, FakeText, COST, budgets=[4], out_dir=tmp_path,
                progress=False)  # fmt: skip


def test_seconds_are_prorated_within_a_partly_used_iteration(tmp_path) -> None:
    run(str(tmp_path / "run"))
    records = [json.loads(x) for x in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    first = [r for r in records if (r["controller"], r["prompt_index"], r["seed"]) == ("best_of_n", 0, 0)]
    bon = {r["budget"]: r["seconds"] for r in first}
    assert bon[4] < bon[8] <= bon[12]  # 8 samples per iteration: budget 4 uses half of the first


def test_overwrite_deletes_only_a_run(tmp_path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(RunFolderError, match="not empty"):
        compare(PROMPTS[:1], controllers(), FakeText, COST, budgets=[4], out_dir=tmp_path, overwrite=True,
                progress=False)  # fmt: skip
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_a_torn_chunk_is_redone_on_resume_without_duplicates(tmp_path) -> None:
    run(str(tmp_path / "run"))
    path = tmp_path / "run" / "records.jsonl"
    text = path.read_text()
    path.write_text(text[: len(text) - len(text.splitlines()[-1]) // 2 - 1])  # tear the last line
    with pytest.warns(RuntimeWarning, match="torn"):
        run(str(tmp_path / "run"), resume=True)
    run(str(tmp_path / "fresh"))
    after = without_time([json.loads(x) for x in path.read_text().splitlines()])
    fresh = without_time(
        [json.loads(x) for x in (tmp_path / "fresh" / "records.jsonl").read_text().splitlines()]
    )
    assert after == fresh  # the partly written job was redone once, its old records replaced


def test_a_budget_smaller_than_one_iteration_is_refused() -> None:
    message = "controller 'aisp': budget 2 is smaller than one iteration \\(4 samples\\)"
    with pytest.raises(ValueError, match=message):
        check_budgets(controllers(), [2, 8])
    assert check_budgets({"b": controllers()["best_of_n"]}, [8, 2, 2]) == [2, 8]  # non-adaptive: any budget


def test_summary_against_hand_computed_values() -> None:
    def rec(controller: str, prompt: int, reward: float, response: str, seconds: float, **extra) -> dict:
        return {"controller": controller, "budget": 4, "prompt_index": prompt, "seed": 0, "reward": reward,
                "response": response, "seconds": seconds, **extra}  # fmt: skip

    records = [
        rec("best_of_n", 0, 1.0, "a b", 1.0),
        rec("best_of_n", 1, 3.0, "a b", 3.0),
        rec("aisp", 0, 2.0, "a b a b", 2.0, kl=0.5),
        rec("aisp", 1, 3.0, "c d", 2.0, kl=1.5),
    ]
    rows = {r["controller"]: r for r in summarize(records)}
    aisp, base = rows["aisp"], rows["best_of_n"]
    assert aisp["reward"] == pytest.approx(2.5)
    half = 12.7062 * (0.5**0.5) / 2**0.5  # t(0.975, 1) * sd / sqrt(n)
    assert (aisp["reward_low"], aisp["reward_high"]) == pytest.approx((2.5 - half, 2.5 + half), abs=1e-3)
    assert aisp["win_rate"] == pytest.approx(0.75)  # a win and a tie
    assert base["win_rate"] == pytest.approx(0.5)
    assert aisp["distinct_2"] == pytest.approx(3 / 4)  # a-b, b-a, a-b, c-d: 3 distinct of 4
    assert aisp["rep_2"] == pytest.approx((1 - 2 / 3 + 0) / 2)
    assert aisp["kl"] == pytest.approx(1.0) and base["kl"] is None
    assert base["seconds"] == pytest.approx(2.0)


def test_controls_reach_the_fake_system() -> None:
    system = FakeText(["p"])
    steer = torch.zeros(1, 1, 6, 4)
    steer[..., 0] = 50.0
    rollout = system.rollout(steer, [torch.Generator().manual_seed(0)])
    assert rollout.texts[0][0] == " ".join(["good"] * 6)
    assert AISP(num_samples=4).adaptive
