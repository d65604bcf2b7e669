"""``compare --resume`` grows a run to more prompts (the first ones its own), redoing nothing.

The run of the first 3 of `fake_text.PROMPTS`, grown to all 5, must equal a run of the 5 from the
start (the records but their timing, ``settings.json``, the summary), without running any of the
first 3 prompts' finished jobs again; a list that does not begin with the run's prompts is refused.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from fake_text import COST, PROMPTS, FakeText, controllers
from test_distributed import Meeting, ThreadWorld

from mpc_llm.cli import main
from mpc_llm.evaluation.compare import check_run_folder, compare, comparison_settings
from mpc_llm.evaluation.compare.records_file import RunFolderError

BUDGETS, SEEDS = [4, 8], [0, 1]
OPTIONS = {"system": "fake"}
FIRST = 3  # the prompts of the run that grows


def run(out: Path, prompts: Sequence[str], *, make: Callable = FakeText, **options: Any) -> list[dict]:
    """``compare`` on the fake system; ``options`` go to `compare` (resume, budgets, world, ...)."""
    kwargs = {"budgets": BUDGETS, "seeds": SEEDS, "prompts_per_batch": 2, "settings": OPTIONS, **options}
    return compare(list(prompts), controllers(), make, COST, out_dir=out, progress=False, **kwargs)


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]


def without_time(rs: list[dict]) -> list[dict]:
    """The records in one order, without their timing (the only field two runs may differ in)."""
    keyed = sorted(rs, key=lambda r: (r["prompt_index"], r["controller"], r["seed"], r["budget"]))
    return [{k: v for k, v in r.items() if k != "seconds"} for r in keyed]


def job_of(line: str) -> tuple:
    """The job of a record's line: its controller, seed and prompt."""
    record = json.loads(line)
    return record["controller"], record["seed"], record["prompt_index"]


def settings_of(folder: Path) -> dict:
    return json.loads((folder / "settings.json").read_text())


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


class Spy(FakeText):
    """The fake system, noting the prompts of every rollout (in ``Spy.rolled``)."""

    rolled: ClassVar[list[str]] = []

    def rollout(self, controls, generators):
        Spy.rolled.extend(self.prompts)
        return super().rollout(controls, generators)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of the 5 prompts from the start: the reference."""
    out = tmp_path_factory.mktemp("fresh") / "run"
    run(out, PROMPTS)
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run of the first 3 prompts (tests copy it)."""
    out = tmp_path_factory.mktemp("three") / "run"
    run(out, PROMPTS[:FIRST])
    return out


@pytest.fixture
def three(finished: Path, tmp_path: Path) -> Path:
    """This test's copy of the finished run of the first 3 prompts."""
    return Path(shutil.copytree(finished, tmp_path / "run"))


@pytest.fixture(autouse=True)
def no_rollouts_yet() -> None:
    Spy.rolled = []


# ------------------------------------------------------------------------------------------ growing


def test_growing_3_prompts_to_5_equals_a_fresh_run_and_redoes_none_of_the_first_3(three, fresh) -> None:
    before = (three / "records.jsonl").read_bytes()
    rows = run(three, PROMPTS, make=Spy, resume=True)
    assert set(Spy.rolled) == {"prompt 3", "prompt 4"}  # prompt 2 shares a chunk with 3: done, not redone
    assert (three / "records.jsonl").read_bytes().startswith(before)  # the first records, byte for byte
    assert without_time(records(three)) == without_time(records(fresh))
    assert settings_of(three) == settings_of(fresh)  # num_prompts 5 and the 5 prompts' sha256
    assert settings_of(three)["num_prompts"] == len(PROMPTS)
    summary = json.loads((three / "summary.json").read_text())
    assert {row["n"] for row in rows} == {row["n"] for row in summary} == {len(PROMPTS)}


def test_an_unfinished_run_grows_and_finishes_its_own_jobs_too(three, fresh) -> None:
    lines = (three / "records.jsonl").read_text().splitlines(keepends=True)
    last = job_of(lines[-1])  # the last job: one controller and seed on prompt 2, at every budget
    kept = [line for line in lines if job_of(line) != last]
    assert last[2] == 2 and len(lines) - len(kept) == len(BUDGETS)
    (three / "records.jsonl").write_text("".join(kept))
    run(three, PROMPTS, make=Spy, resume=True)
    assert "prompt 2" in Spy.rolled and not {"prompt 0", "prompt 1"} & set(Spy.rolled)
    assert (three / "records.jsonl").read_text().startswith("".join(kept))
    assert without_time(records(three)) == without_time(records(fresh))


def test_a_grown_run_resumes_as_itself_and_grows_again(three, fresh) -> None:
    run(three, PROMPTS[:4], resume=True)
    assert settings_of(three)["num_prompts"] == 4
    run(three, PROMPTS, make=Spy, resume=True)
    assert set(Spy.rolled) == {"prompt 4"}
    run(three, PROMPTS, make=Spy, resume=True)  # finished: nothing to do
    assert set(Spy.rolled) == {"prompt 4"}
    assert without_time(records(three)) == without_time(records(fresh))


def test_growing_on_two_ranks_equals_a_fresh_run(three, fresh) -> None:
    """Rank 0 decides and rewrites ``settings.json``; rank 1 joins the grown run."""
    hub: dict[str, Any] = {"barrier": Meeting(2), "slots": [None, None]}
    results: list[Any] = [None, None]

    def rank(r: int) -> None:
        try:
            results[r] = run(three, PROMPTS, make=Spy, resume=True, world=ThreadWorld(r, 2, hub))
        except BaseException as err:  # reported below
            results[r] = err
            hub["barrier"].kill()

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert set(Spy.rolled) == {"prompt 3", "prompt 4"}
    assert without_time(records(three)) == without_time(records(fresh))
    assert settings_of(three) == settings_of(fresh)
    assert not list(three.glob("records.rank-*.jsonl"))  # merged


# ------------------------------------------------------------------------------------------ refused


@pytest.mark.parametrize(
    ("prompts", "message"),
    [
        (
            [PROMPTS[1], PROMPTS[0], *PROMPTS[2:]],
            "are not the first 3 of these 5 prompts (another source or order)",
        ),
        ([*PROMPTS[:2], "prompt X", *PROMPTS[3:]], "are not the first 3 of these 5 prompts"),
        (PROMPTS[:2], "holds a run of 3 prompts, more than these 2, and a run never shrinks"),
        (["prompt X", *PROMPTS[1:3]], "holds a run of 3 other prompts (another source or order)"),
    ],
    ids=["reordered", "one-other-prompt", "shorter", "as-many-others"],
)
def test_prompts_that_do_not_begin_with_the_runs_are_refused(three, prompts, message) -> None:
    before = snapshot(three)
    with pytest.raises(RunFolderError, match="choose another folder for --out, or pass --overwrite") as err:
        run(three, prompts, make=Spy, resume=True)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert Spy.rolled == [] and snapshot(three) == before


def test_growing_without_resume_is_refused_with_the_hint(three) -> None:
    before = snapshot(three)
    with pytest.raises(RunFolderError, match="holds a run of the first 3 of these 5 prompts; run again with "
                       "--resume to grow it"):  # fmt: skip
        run(three, PROMPTS, make=Spy)
    assert Spy.rolled == [] and snapshot(three) == before


def test_another_setting_still_refuses_a_longer_list(three) -> None:
    with pytest.raises(RunFolderError, match=r"differs in: budgets, num_prompts, prompts_sha256\)"):
        run(three, PROMPTS, make=Spy, resume=True, budgets=[4])
    assert Spy.rolled == []


def test_the_folder_check_grows_a_run_given_its_prompts(three) -> None:
    """`check_run_folder` (what the command calls before loading a model) grows as `compare` does."""
    settings = comparison_settings(PROMPTS, controllers(), BUDGETS, SEEDS, OPTIONS)
    before = snapshot(three)
    check_run_folder(three, settings, resume=True, prompts=PROMPTS)
    with pytest.raises(RunFolderError, match=r"differs in: num_prompts, prompts_sha256\)"):
        check_run_folder(three, settings, resume=True)  # without the prompts it cannot tell
    assert snapshot(three) == before


def test_the_command_grows_a_run_with_resume(tiny_model_dir, tmp_path, capsys) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Hello\nHow are you?\nTell me a story.\n")
    out = tmp_path / "run"
    args = ["compare", "--model", str(tiny_model_dir("llama")), "--reward", "length", "--prompts",
            str(prompts), "--controllers", "best_of_n", "--budgets", "2", "-n", "2", "--max-new-tokens", "4",
            "--out", str(out), "--quiet"]  # fmt: skip
    assert main([*args, "--num-prompts", "2"]) == 0
    before = (out / "records.jsonl").read_bytes()
    capsys.readouterr()
    assert main([*args, "--num-prompts", "3"]) == 2
    assert "run again with --resume to grow it" in capsys.readouterr().err
    assert main([*args, "--num-prompts", "3", "--resume"]) == 0
    assert (out / "records.jsonl").read_bytes().startswith(before)
    assert sorted(r["prompt_index"] for r in records(out)) == [0, 1, 2]
    assert settings_of(out)["num_prompts"] == 3
