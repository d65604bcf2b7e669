"""compare on many processes: the job rule, shards, merge and resume across world sizes, real ranks.

Most tests run the ranks as threads of this process (`ThreadWorld`: the same `World` with its three
primitives on a shared barrier), so the whole of `compare` runs on 1, 2 or 3 ranks in a
fraction of a second. Two tests start real processes: ranks on gloo over TCP, one killed mid-run,
and ``torchrun`` running the command on a tiny model.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fake_text import COST, PROMPTS, FakeText, controllers

from mpc_llm.evaluation.compare import compare, pending_jobs, run_settings
from mpc_llm.evaluation.compare.distributed import (
    DistributedError,
    Place,
    World,
    assign,
    localise,
    owned_gpus,
    place_from_env,
    rank_device,
    rank_gpus,
    settings_difference,
)
from mpc_llm.evaluation.compare.store import RunStore, shard_name

HERE = Path(__file__).resolve().parent
TOTAL = len(PROMPTS) * 3 * 2 * 3  # prompts x controllers x seeds x budgets


# ------------------------------------------------------------------------------------ ranks as threads
class Meeting:
    """A barrier for thread ranks; once a rank has died, waiting for it fails (as gloo's does), while
    ranks already released from a meeting go on."""

    def __init__(self, size: int) -> None:
        self.size, self.count, self.generation, self.dead = size, 0, 0, False
        self.cond = threading.Condition()

    def wait(self, timeout: float = 60) -> None:
        with self.cond:
            generation = self.generation
            self.count += 1
            if self.count == self.size:
                self.count, self.generation = 0, generation + 1
                self.cond.notify_all()
                return
            while generation == self.generation:
                if self.dead or not self.cond.wait(timeout):
                    raise RuntimeError("Connection closed by peer (a rank died)")

    def kill(self) -> None:
        with self.cond:
            self.dead = True
            self.cond.notify_all()


class ThreadWorld(World):
    """A rank of a world whose ranks are threads (for tests): gather and broadcast through shared slots."""

    def __init__(self, rank: int, size: int, hub: dict[str, Any]) -> None:
        super().__init__(Place(rank, size, rank), "cpu", group=None)
        self.hub = hub

    def barrier(self) -> None:
        self.hub["barrier"].wait(timeout=60)

    def gather(self, value: Any) -> list[Any]:
        self.hub["slots"][self.rank] = value
        self.barrier()
        out = list(self.hub["slots"])
        self.barrier()
        return out

    def broadcast(self, value: Any) -> Any:
        if self.is_main:
            self.hub["slots"][0] = value
        self.barrier()
        out = self.hub["slots"][0]
        self.barrier()
        return out


def run_ranks(size: int, out: Path, *, make=FakeText, resume: bool = False, per_rank=None, **options) -> list:
    """``compare`` on ``size`` thread ranks; returns each rank's result or exception."""
    hub = {"barrier": Meeting(size), "slots": [None] * size}
    results: list[Any] = [None] * size

    def rank(r: int) -> None:
        try:
            kwargs = {**options, **(per_rank(r) if per_rank else {})}
            results[r] = compare(PROMPTS, controllers(), make, COST, budgets=[4, 8, 12], seeds=[0, 1],
                                 out_dir=out, resume=resume, prompts_per_batch=2, settings={"system": "fake"},
                                 progress=False, world=ThreadWorld(r, size, hub), **kwargs)  # fmt: skip
        except BaseException as err:
            results[r] = err
            hub["barrier"].kill()  # as a dead process breaks the others' next collective

    threads = [threading.Thread(target=rank, args=(r,), name=f"rank {r}") for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def key(r: dict) -> tuple:
    return (r["prompt_index"], r["controller"], r["seed"], r["budget"])


def without_time(rs: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in sorted(rs, key=key)]


@pytest.fixture(scope="module")
def alone(tmp_path_factory) -> list[dict]:
    """The records of a one-process run (no world), the reference."""
    out = tmp_path_factory.mktemp("alone") / "run"
    compare(PROMPTS, controllers(), FakeText, COST, budgets=[4, 8, 12], seeds=[0, 1], out_dir=out,
            prompts_per_batch=2, settings={"system": "fake"}, progress=False)  # fmt: skip
    return records(out / "records.jsonl")


# ------------------------------------------------------------------------------------ the job rule
@pytest.mark.parametrize("size", [1, 2, 3, 5, 40])
def test_every_job_goes_to_exactly_one_rank(size: int) -> None:
    jobs = pending_jobs(len(PROMPTS), ["best_of_n", "aisp"], [0, 1], 2, done={(0, "aisp", 1), (4, "aisp", 0)})
    shares = [assign(jobs, r, size) for r in range(size)]
    assert sorted(j for share in shares for j in share) == sorted(jobs)
    assert max(map(len, shares)) - min(map(len, shares)) <= 1  # balanced to within one job
    assert shares == [assign(jobs, r, size) for r in range(size)]  # deterministic
    assert (0, "aisp", 4, [4]) not in jobs  # a chunk whose prompts are all done is no job
    assert (1, "aisp", 0, [1]) in jobs  # a chunk partly done: its missing prompts
    assert jobs[0] == (0, "best_of_n", 0, [0, 1]) and jobs[-1] == (1, "aisp", 4, [4])


def test_a_partly_done_chunk_is_a_job_for_its_missing_prompts() -> None:
    jobs = pending_jobs(3, ["a"], [0], 2, done={(0, "a", 0)})
    assert [tuple(j) for j in jobs] == [(0, "a", 0, [1]), (0, "a", 2, [2])]


# ------------------------------------------------------------------------------------ merge and resume
@pytest.mark.parametrize("size", [2, 3])
def test_merged_records_equal_a_one_process_run(tmp_path, alone, size: int) -> None:
    results = run_ranks(size, tmp_path / "run")
    assert all(isinstance(r, list) for r in results), results
    assert results[0] == results[-1]  # every rank returns the summary rows
    merged = records(tmp_path / "run" / "records.jsonl")
    assert without_time(merged) == without_time(alone)
    assert merged == sorted(merged, key=key)  # canonical order, whatever the world size
    # no frontier.png: a system without a base model records no steering figure
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "records.jsonl", "reward_vs_samples.png", "settings.json", "summary.json", "summary.md",
    ]  # fmt: skip


SETTINGS = run_settings(PROMPTS, controllers(), [4, 8, 12], [0, 1], {"system": "fake"})
JOBS = pending_jobs(len(PROMPTS), list(controllers()), [0, 1], 2, done=set())  # 30 jobs


def job_records(all_records: list[dict], job) -> list[dict]:
    """The records of ``job``, in the order the job writes them."""
    mine = [r for r in all_records if (r["seed"], r["controller"]) == job[:2] and r["prompt_index"] in job[3]]
    return sorted(mine, key=lambda r: (r["budget"], r["prompt_index"]))


def dumps(rs: list[dict]) -> str:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rs)


def interrupted(out: Path, size: int, alone: list[dict]) -> int:
    """The run folder of a run on ``size`` processes killed part-way: each rank had written its first
    two jobs, two records of its third, and half a line. Returns the number of complete jobs."""
    RunStore(out, SETTINGS)  # settings.json, as rank 0 writes it
    # one process writes records.jsonl, rank r its shard
    shares = {None: JOBS} if size == 1 else {r: assign(JOBS, r, size) for r in range(size)}
    for rank, share in shares.items():
        path = out / ("records.jsonl" if rank is None else shard_name(rank))
        written = [r for job in share[:2] for r in job_records(alone, job)] + job_records(alone, share[2])[:2]
        path.write_text(dumps(written) + '{"prompt_index": 3, "contr')
    return 2 * len(shares)


@pytest.mark.parametrize(("before", "after"), [(1, 2), (2, 1), (2, 3), (3, 2)])
def test_resume_on_another_world_size_redoes_only_the_missing_jobs(tmp_path, alone, before, after) -> None:
    out = tmp_path / "run"
    complete = interrupted(out, before, alone)
    made: list[tuple] = []

    class Counting(FakeText):
        def __init__(self, prompts, *args, **kwargs):
            made.append(tuple(prompts))
            super().__init__(prompts, *args, **kwargs)

    with pytest.warns(RuntimeWarning, match="torn"):
        if after > 1:
            results = run_ranks(after, out, make=Counting, resume=True)
        else:
            results = [compare(PROMPTS, controllers(), Counting, COST, budgets=[4, 8, 12], seeds=[0, 1],
                               out_dir=out, resume=True, prompts_per_batch=2, settings={"system": "fake"},
                               progress=False)]  # fmt: skip
    assert all(isinstance(r, list) for r in results), results
    merged = records(out / "records.jsonl")
    assert len(merged) == len({key(r) for r in merged}) == TOTAL  # nothing missing, nothing twice
    assert without_time(merged) == without_time(alone)
    assert merged == sorted(merged, key=key) and not list(out.glob("records.rank-*"))
    assert len(made) == after + len(JOBS) - complete  # one horizon probe per rank, then the missing jobs


def test_a_rank_that_fails_leaves_the_others_to_finish_and_resume_completes(tmp_path, alone) -> None:
    rolled: list[int] = []

    class Failing(FakeText):  # rank 1 fails in its fifth rollout (its second or third job)
        def rollout(self, controls, generators):
            if threading.current_thread().name == "rank 1":
                rolled.append(1)
                if len(rolled) == 5:
                    raise RuntimeError("out of memory, say")
            return super().rollout(controls, generators)

    results = run_ranks(2, tmp_path / "run", make=Failing)
    assert isinstance(results[1], RuntimeError) and "out of memory" in str(results[1])
    assert isinstance(results[0], DistributedError) and "--resume" in str(results[0])
    share = [r for job in assign(JOBS, 0, 2) for r in job_records(alone, job)]
    assert without_time(records(tmp_path / "run" / shard_name(0))) == without_time(share)  # all of it
    assert not (tmp_path / "run" / "records.jsonl").exists()  # nothing merged while jobs are missing
    results = run_ranks(2, tmp_path / "run", resume=True)
    assert all(isinstance(r, list) for r in results), results
    assert without_time(records(tmp_path / "run" / "records.jsonl")) == without_time(alone)


def test_ranks_with_different_settings_stop_with_one_error(tmp_path) -> None:
    # rank 1 counts its budgets in tokens (which a controller may refuse: the ranks compare first)
    results = run_ranks(2, tmp_path / "run", per_rank=lambda r: {"budget_unit": "tokens"} if r else {})
    for err in results:
        assert isinstance(err, DistributedError)
        assert str(err) == (
            "rank 1's settings differ from rank 0's in: budget_unit (every rank must run the same command)"
        )
    assert not (tmp_path / "run").exists()  # stopped before anything was written


def test_ranks_with_different_held_out_rewards_stop_with_one_error(tmp_path) -> None:
    # rank 1 scores a held-out reward that rank 0 does not (never scored: the ranks stop first)
    results = run_ranks(2, tmp_path / "run", per_rank=lambda r: {"eval_rewards": {"held": None}} if r else {})
    for err in results:
        assert isinstance(err, DistributedError)
        assert str(err) == (
            "rank 1's settings differ from rank 0's in: eval_rewards (every rank must run the same command)"
        )
    assert not (tmp_path / "run").exists()  # stopped before anything was written


def test_an_error_of_rank_0_stops_every_rank(tmp_path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    results = run_ranks(2, tmp_path / "run")
    assert "not empty" in str(results[0])
    assert isinstance(results[1], DistributedError) and str(results[1]).startswith("rank 0 stopped: ")


def test_overwrite_is_done_by_rank_0_only(tmp_path, alone) -> None:
    run_ranks(2, tmp_path / "run")
    results = run_ranks(3, tmp_path / "run", overwrite=True)
    assert all(isinstance(r, list) for r in results), results
    assert without_time(records(tmp_path / "run" / "records.jsonl")) == without_time(alone)


def test_a_merge_cut_short_leaves_duplicates_that_are_read_once(tmp_path, alone) -> None:
    """Rank 0 renamed the merged file but died before deleting the shards: the shards' records are
    exact copies of merged ones; a resume reads them once, redoes nothing and deletes the shards."""
    out = tmp_path / "run"
    run_ranks(2, out)
    merged = records(out / "records.jsonl")
    (out / shard_name(0)).write_text(dumps(merged[:10]))
    (out / shard_name(1)).write_text(dumps(merged[10:15]))
    assert len(RunStore(out, SETTINGS, resume=True).records) == TOTAL

    class Spy(FakeText):
        def rollout(self, controls, generators):
            raise AssertionError("nothing is left to do")

    compare(PROMPTS, controllers(), Spy, COST, budgets=[4, 8, 12], seeds=[0, 1], out_dir=out, resume=True,
            prompts_per_batch=2, settings={"system": "fake"}, progress=False)  # fmt: skip
    assert records(out / "records.jsonl") == merged and not list(out.glob("records.rank-*"))


# ------------------------------------------------------------------------------------ the environment
def test_the_place_comes_from_torchrun_or_slurm() -> None:
    assert place_from_env({}) is None
    assert place_from_env({"SLURM_NTASKS": "4", "SLURM_PROCID": "0"}) is None  # sbatch script, not srun
    assert place_from_env({"SLURM_STEP_ID": "0", "SLURM_NTASKS": "1", "SLURM_PROCID": "0"}) is None
    torchrun = {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "SLURM_NTASKS": "9", "SLURM_STEP_ID": "0"}
    assert place_from_env(torchrun) == Place(rank=3, size=4, local_rank=1)  # torchrun's variables win
    assert place_from_env({"WORLD_SIZE": "2", "RANK": "1", "SLURM_LOCALID": "0"}) == Place(1, 2, 0)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WORLD_SIZE": "2"}, "WORLD_SIZE is set but RANK is not"),
        ({"WORLD_SIZE": "2", "RANK": "0"}, "LOCAL_RANK is not"),
        ({"WORLD_SIZE": "two", "RANK": "0", "LOCAL_RANK": "0"}, "WORLD_SIZE='two' is not an integer"),
        ({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0"}, "0 <= rank < world size"),
        ({"SLURM_STEP_ID": "0", "SLURM_NTASKS": "2", "SLURM_PROCID": "1"}, "SLURM_LOCALID is not"),
    ],
)
def test_a_broken_environment_is_one_clear_error(env: dict, message: str) -> None:
    with pytest.raises(DistributedError, match=message):
        place_from_env(env)


def test_devices_of_a_rank() -> None:
    assert rank_gpus(local_rank=1, per_rank=2, available=8) == [2, 3]
    with pytest.raises(DistributedError, match=r"needs cuda:6\.\.cuda:7 but this node has 4 GPUs"):
        rank_gpus(local_rank=3, per_rank=2, available=4)
    assert owned_gpus(Place(5, 8, 1), per_rank=2, available=8) == [2, 3]
    assert owned_gpus(None, available=2) == [0, 1] and owned_gpus(Place(1, 2, 1), available=0) == []
    assert rank_device(None, [2, 3]) == "cuda:2,cuda:3" and rank_device("cuda", [4]) == "cuda:4"
    assert rank_device("local:1", [2, 3]) == "cuda:3" and rank_device("cpu", [2]) == "cpu"
    assert rank_device(None, []) == "cpu"
    with pytest.raises(DistributedError, match="no CUDA GPU"):
        rank_device("cuda", [])
    with pytest.raises(DistributedError, match=r"local:0 \.\. local:1"):
        localise({"name": "hf", "device": "local:2"}, [2, 3])
    assert localise("vader", [0]) == "vader"


def test_the_difference_of_settings_is_named() -> None:
    assert settings_difference([{"a": 1}, {"a": 1}]) is None
    assert "rank 2's settings differ from rank 0's in: a, b" in settings_difference(
        [{"a": 1, "b": 1}, {"a": 1, "b": 1}, {"a": 2}]
    )


def test_the_command_refuses_a_half_set_environment(monkeypatch, capsys) -> None:
    from mpc_llm.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    assert main(["compare", "--out", "x", "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == (
        "mpc-llm: error: WORLD_SIZE is set but RANK is not: start the processes with torchrun, accelerate "
        "launch or srun, or set RANK (0 .. WORLD_SIZE-1) and LOCAL_RANK for each"
    )


def test_gpus_per_rank_without_a_launcher_is_refused(monkeypatch, capsys) -> None:
    from mpc_llm.cli import main

    for name in ("WORLD_SIZE", "SLURM_STEP_ID"):
        monkeypatch.delenv(name, raising=False)
    assert main(["compare", "--out", "x", "--gpus-per-rank", "2", "--quiet"]) == 2
    assert "--gpus-per-rank is for the ranks of a launched run" in capsys.readouterr().err


def test_nccl_without_gpus_is_refused(monkeypatch) -> None:
    from mpc_llm.evaluation.compare.distributed import init

    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1", "MPC_LLM_DIST_BACKEND": "nccl"}
    with pytest.raises(DistributedError, match="nccl needs GPUs but this rank runs on cpu"):
        init(Place(0, 2, 0), "cpu", env=env)
    with pytest.raises(DistributedError, match="MASTER_ADDR and MASTER_PORT not set"):
        init(Place(0, 2, 0), "cpu", env={})


# ------------------------------------------------------------------------------------ real processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_killed_rank_leaves_the_other_to_finish_and_resume_completes(tmp_path, alone) -> None:
    """Two processes on gloo; rank 1 is killed mid-run: rank 0 finishes its share and stops with the
    resume advice; a resume on one process redoes only rank 1's missing jobs."""
    out, port = tmp_path / "run", free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
               "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "MPC_LLM_DIST_TIMEOUT": "60"}  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, str(HERE / "fake_text.py"), str(out), "0.05"], env=env,
                                      stderr=subprocess.PIPE, text=True))  # fmt: skip
    shard = out / shard_name(1)
    deadline = time.time() + 60
    while time.time() < deadline and not (shard.exists() and shard.read_text().count("\n") >= 6):
        time.sleep(0.02)
    procs[1].send_signal(signal.SIGKILL)
    _, err = procs[0].communicate(timeout=60)
    procs[1].wait()
    assert procs[0].returncode != 0 and "another rank stopped before finishing its jobs" in err
    assert len(records(out / shard_name(0))) == TOTAL // 2  # rank 0's whole share
    assert 6 <= len([x for x in shard.read_text().splitlines() if x.endswith("}")]) < TOTAL // 2

    rolled: list[int] = []

    class Counting(FakeText):
        def rollout(self, controls, generators):
            rolled.append(1)
            return super().rollout(controls, generators)

    compare(PROMPTS, controllers(), Counting, COST, budgets=[4, 8, 12], seeds=[0, 1], out_dir=out,
            resume=True, prompts_per_batch=2, settings={"system": "fake"}, progress=False)  # fmt: skip
    merged = records(out / "records.jsonl")
    assert len(merged) == len({key(r) for r in merged}) == TOTAL  # nothing lost, nothing doubled
    assert without_time(merged) == without_time(alone)
    assert 0 < len(rolled) < 3 * 15  # only rank 1's missing jobs (fewer than half of all rollouts)


def test_torchrun_on_a_tiny_model_equals_one_process(tiny_model_dir, tmp_path) -> None:
    """``torchrun --nproc_per_node=2 -m mpc_llm compare`` on CPU (gloo): the merged records are the
    one-process run's, tokens and rewards alike."""
    model = str(tiny_model_dir("llama"))
    args = ["compare", "--model", model, "--reward", "length", "--max-new-tokens", "6", "--num-prompts", "4",
            "--prompts-per-batch", "2", "--budgets", "4,8", "-n", "4", "--controllers", "aisp,best_of_n",
            "--seeds", "0,1", "--quiet"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(name, None)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                f"--master_port={free_port()}", "-m", "mpc_llm"]  # fmt: skip
    proc = subprocess.run([*torchrun, *args, "--out", str(tmp_path / "two")], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("| controller | budget | prompts |") == 1  # only rank 0 prints the table

    from mpc_llm.cli import main

    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    one, two = (records(tmp_path / name / "records.jsonl") for name in ("one", "two"))
    assert len(two) == 4 * 2 * 2 * 2
    # The default sigma is relative to the measured pre-logit RMS, whose float reduction order depends
    # on the thread count (two threads here, one per rank there): floats agree to rounding, the rest exactly.
    for a, b in zip(without_time(two), without_time(one), strict=True):
        assert a.keys() == b.keys()
        assert {k: v for k, v in a.items() if not isinstance(v, float)} == {
            k: v for k, v in b.items() if not isinstance(v, float)
        }
        assert {k: v for k, v in a.items() if isinstance(v, float)} == pytest.approx(
            {k: v for k, v in b.items() if isinstance(v, float)}, rel=1e-5, abs=1e-5
        )
    assert two == sorted(two, key=key)
