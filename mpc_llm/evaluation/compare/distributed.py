"""`compare` on many processes with torch.distributed: ``torchrun``, ``accelerate launch``, ``srun``.

A launcher starts one process per rank and tells it where it stands through the standard
environment: ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` (the index on its node) and the rendezvous
``MASTER_ADDR`` / ``MASTER_PORT``. Inside a Slurm step (``srun``), ``SLURM_NTASKS``,
``SLURM_PROCID`` and ``SLURM_LOCALID`` stand in for the first three when they are absent (the
rendezvous address is still ours to export). With none of them a process runs alone, as before.

What the ranks share is small: the run's settings (gathered and compared, so ranks that were given
different settings stop with one error naming the difference), rank 0's list of the jobs still to
do (broadcast), and a barrier at the end. No tensor crosses processes: each rank runs its jobs
alone (`assign`), appends its records to its own shard of the run folder, and rank 0 merges them
once every rank has finished (`mpc_llm.evaluation.compare`). The coordination runs on a gloo group
(it notices a rank that died instead of waiting for it); the default group is nccl where the ranks
run on GPUs, gloo otherwise, for whoever wants tensors.

Devices. The rank with local rank ``l`` and ``k`` GPUs per rank (``--gpus-per-rank``,
``MPC_LLM_GPUS_PER_RANK``) holds CUDA devices ``l*k .. l*k+k-1`` of its node (`rank_gpus`). Its
model is spread over all ``k`` (``"cuda:2,cuda:3"``, which `mpc_llm.lm.load_model` turns into a
``device_map``), or on one of them with ``--device local:J`` (its ``J``-th GPU); a reward spec
places its model with ``device: local:J`` too (`localise`), so the settings read the same on every
rank. Without GPUs every rank runs on the CPU.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")

#: GPUs each rank holds (its model spread over them); default one.
GPUS_PER_RANK_ENV = "MPC_LLM_GPUS_PER_RANK"
#: ``gloo`` or ``nccl`` for the default group (default: nccl on GPUs, gloo otherwise).
BACKEND_ENV = "MPC_LLM_DIST_BACKEND"
#: Seconds a rank waits for the others (at the end: for the slowest rank's last job); default 7 days.
TIMEOUT_ENV = "MPC_LLM_DIST_TIMEOUT"
DEFAULT_TIMEOUT = 7 * 24 * 3600
LOCAL_PREFIX = "local:"


class DistributedError(ValueError):
    """A launch that cannot work (missing or inconsistent environment, ranks that disagree)."""


@dataclass(frozen=True)
class Place:
    """Where a process stands: its ``rank`` of ``size``, and ``local_rank`` on its node."""

    rank: int
    size: int
    local_rank: int


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise DistributedError(f"{name}={env[name]!r} is not an integer") from None


def place_from_env(env: Mapping[str, str] | None = None) -> Place | None:
    """This process's place from the launcher's environment; None when it runs alone.

    ``WORLD_SIZE`` set (torchrun, accelerate launch, or by hand): ``RANK`` and ``LOCAL_RANK`` must be
    set too (``SLURM_LOCALID`` may stand in for the latter). Otherwise inside an ``srun`` step with
    more than one task (``SLURM_STEP_ID`` set, ``SLURM_NTASKS`` > 1): ``SLURM_PROCID`` and
    ``SLURM_LOCALID``. The rendezvous needs ``MASTER_ADDR`` and ``MASTER_PORT`` (`init`).

    Example:
        >>> place_from_env({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"})
        Place(rank=1, size=2, local_rank=1)
        >>> place_from_env({}) is None
        True
        >>> srun = {"SLURM_STEP_ID": "0", "SLURM_NTASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1"}
        >>> place_from_env(srun)
        Place(rank=5, size=8, local_rank=1)
    """
    env = os.environ if env is None else env
    if "WORLD_SIZE" in env:
        if "RANK" not in env:
            raise DistributedError(
                "WORLD_SIZE is set but RANK is not: start the processes with torchrun, accelerate "
                "launch or srun, or set RANK (0 .. WORLD_SIZE-1) and LOCAL_RANK for each"
            )
        local = "LOCAL_RANK" if "LOCAL_RANK" in env else "SLURM_LOCALID" if "SLURM_LOCALID" in env else None
        if local is None:
            raise DistributedError(
                "WORLD_SIZE is set but LOCAL_RANK is not: set the process's index on its node"
            )
        size, rank, local_rank = _int(env, "WORLD_SIZE"), _int(env, "RANK"), _int(env, local)
        names = ("WORLD_SIZE", "RANK", local)
    elif "SLURM_STEP_ID" in env and "SLURM_NTASKS" in env and _int(env, "SLURM_NTASKS") > 1:
        for name in ("SLURM_PROCID", "SLURM_LOCALID"):
            if name not in env:
                raise DistributedError(f"SLURM_NTASKS is set but {name} is not: launch the ranks with srun")
        size, rank, local_rank = (_int(env, n) for n in ("SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID"))
        names = ("SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
    else:
        return None
    if size < 1 or not 0 <= rank < size or local_rank < 0:
        raise DistributedError(
            f"{names[0]}={size}, {names[1]}={rank}, {names[2]}={local_rank}: need a world size >= 1, "
            "0 <= rank < world size and a local rank >= 0"
        )
    return Place(rank, size, local_rank)


def gpus_per_rank(value: int | None = None, env: Mapping[str, str] | None = None) -> int:
    """GPUs per rank: ``value`` if given, else ``MPC_LLM_GPUS_PER_RANK``, else 1."""
    env = os.environ if env is None else env
    if value is None:
        raw = env.get(GPUS_PER_RANK_ENV)
        value = 1 if raw is None else _int(env, GPUS_PER_RANK_ENV)
    if value < 1:
        raise DistributedError(f"GPUs per rank must be >= 1, got {value}")
    return value


def rank_gpus(local_rank: int, per_rank: int, available: int) -> list[int]:
    """The CUDA devices (indices on the node) of the rank with ``local_rank``: ``l*k .. l*k+k-1``.

    Example:
        >>> rank_gpus(local_rank=3, per_rank=2, available=8)
        [6, 7]
    """
    first = local_rank * per_rank
    if first + per_rank > available:
        raise DistributedError(
            f"local rank {local_rank} with {per_rank} GPUs per rank needs cuda:{first}..cuda:"
            f"{first + per_rank - 1} but this node has {available} GPUs: start at most "
            f"{max(available // per_rank, 0)} ranks per node or lower the GPUs per rank"
        )
    return list(range(first, first + per_rank))


def owned_gpus(place: Place | None, per_rank: int = 1, available: int | None = None) -> list[int]:
    """The CUDA devices this process may use: its rank's (`rank_gpus`), every GPU when it runs alone
    (``place`` None), none on a machine without GPUs."""
    available = torch.cuda.device_count() if available is None else available
    if available == 0:
        return []
    return list(range(available)) if place is None else rank_gpus(place.local_rank, per_rank, available)


def _local(device: str, gpus: Sequence[int]) -> str:
    """``local:J``: the ``J``-th of ``gpus``."""
    try:
        index = int(device.removeprefix(LOCAL_PREFIX))
        if index < 0:
            raise IndexError(index)
        return f"cuda:{gpus[index]}"
    except (ValueError, IndexError):
        last = f"local:0 .. local:{len(gpus) - 1}" if gpus else "a CPU device (there is no GPU here)"
        raise DistributedError(
            f"device {device!r}: this process holds GPUs {list(gpus)}; use {last}"
        ) from None


def rank_device(requested: str | None, gpus: Sequence[int]) -> str:
    """The device a rank runs its model on, from the requested one and the rank's ``gpus``.

    None or ``"cuda"``: all the rank's GPUs, comma-separated when there are several (the model is
    spread over them), or ``"cpu"`` when there is none (None only); ``"local:J"``: the rank's
    ``J``-th GPU; anything else (``cpu``, ``cuda:3``) as it is.

    Example:
        >>> rank_device(None, gpus=[2, 3]), rank_device("local:1", gpus=[2, 3]), rank_device(None, gpus=[])
        ('cuda:2,cuda:3', 'cuda:3', 'cpu')
    """
    if requested is not None and requested.startswith(LOCAL_PREFIX):
        return _local(requested, gpus)
    if requested not in (None, "cuda"):
        return str(requested)
    if not gpus:
        if requested == "cuda":
            raise DistributedError(
                "device 'cuda' requested but torch sees no CUDA GPU here; use --device cpu"
            )
        return "cpu"
    return ",".join(f"cuda:{i}" for i in gpus)


def localise(spec: Any, gpus: Sequence[int]) -> Any:
    """``spec`` (a reward spec: a name, a mapping or a list) with each ``device: local:J`` made the
    rank's ``J``-th GPU.

    Example:
        >>> localise([{"name": "hf", "model": "rm", "device": "local:1"}, "vader"], gpus=[6, 7])
        [{'name': 'hf', 'model': 'rm', 'device': 'cuda:7'}, 'vader']
    """
    if isinstance(spec, Mapping):
        out = dict(spec)
        device = out.get("device")
        if isinstance(device, str) and device.startswith(LOCAL_PREFIX):
            out["device"] = _local(device, gpus)
        return out
    if isinstance(spec, list):
        return [localise(s, gpus) for s in spec]
    return spec


def assign(jobs: Sequence[T], rank: int, size: int) -> list[T]:
    """Rank ``rank``'s share of ``jobs``: those at positions ``rank, rank + size, ...``.

    Every rank computes the same list from the same ``jobs`` (rank 0's, broadcast), so each job is
    done by exactly one rank; consecutive jobs (a controller's prompt chunks) go to different ranks.

    Example:
        >>> [assign(list("abcde"), r, 2) for r in range(2)]
        [['a', 'c', 'e'], ['b', 'd']]
    """
    if not 0 <= rank < size:
        raise ValueError(f"rank {rank} is outside a world of {size}")
    return list(jobs[rank::size])


def settings_difference(gathered: Sequence[Mapping[str, Any]]) -> str | None:
    """One line naming the first rank whose settings differ from rank 0's and the keys; None if all agree.

    Example:
        >>> settings_difference([{"a": 1, "b": 2}, {"a": 1, "b": 3}])
        "rank 1's settings differ from rank 0's in: b (every rank must run the same command)"
    """
    first = gathered[0]
    for rank, other in enumerate(gathered[1:], start=1):
        if other != first:
            keys = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
            return (
                f"rank {rank}'s settings differ from rank 0's in: {', '.join(keys)} "
                "(every rank must run the same command)"
            )
    return None


class World:
    """This process's rank among the others, and the few things they share.

    Created by `init` (or `launch`); ``device`` is where this rank runs its model.
    """

    def __init__(self, place: Place, device: str, group: Any) -> None:
        self.rank, self.size, self.local_rank = place.rank, place.size, place.local_rank
        self.device = device
        self._group = group  # gloo: the coordination
        #: set when every rank raises at the same collective (settings differ, rank 0 failed)
        self.stopped_together = False

    @property
    def is_main(self) -> bool:
        """Rank 0: it opens the run folder, merges the shards and writes the summary."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank; a rank that died makes this fail rather than wait for it."""
        dist.barrier(group=self._group)

    def gather(self, value: T) -> list[T]:
        """``value`` of every rank, in rank order (picklable values)."""
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, value, group=self._group)
        return out

    def broadcast(self, value: T | None) -> T:
        """Rank 0's ``value`` on every rank (the others pass anything, e.g. None)."""
        box = [value]
        dist.broadcast_object_list(box, src=0, group=self._group)
        return box[0]  # type: ignore[return-value]

    def check_same(self, settings: Mapping[str, Any]) -> None:
        """Stop every rank with one error when the ranks were given different settings."""
        if (difference := settings_difference(self.gather(dict(settings)))) is not None:
            self.stopped_together = True
            raise DistributedError(difference)

    def on_main(self, work: Callable[[], T]) -> T | None:
        """Run ``work`` on rank 0 only; its error stops every rank (the others raise it as a
        `DistributedError` naming rank 0). Returns ``work()`` on rank 0, None elsewhere."""
        value = None
        if self.is_main:
            try:
                value = work()
            except Exception as err:
                self.stopped_together = True
                self.broadcast(str(err) or type(err).__name__)  # one broadcast on every path
                raise
        error = self.broadcast(None)
        if error is not None:
            self.stopped_together = True
            raise DistributedError(f"rank 0 stopped: {error}")
        return value


def init(
    place: Place,
    device: str,
    backend: str | None = None,
    env: Mapping[str, str] | None = None,
) -> World:
    """Join the other ranks (``env://`` rendezvous at ``MASTER_ADDR:MASTER_PORT``).

    Args:
        place: this process's rank (`place_from_env`).
        device: where this rank runs (`rank_device`); decides the default group's backend.
        backend: ``"gloo"`` or ``"nccl"`` (default ``MPC_LLM_DIST_BACKEND``, else by device).
    """
    env = os.environ if env is None else env
    missing = [n for n in ("MASTER_ADDR", "MASTER_PORT") if n not in env]
    if missing:
        raise DistributedError(
            f"{' and '.join(missing)} not set: the ranks meet at MASTER_ADDR:MASTER_PORT (torchrun sets "
            "them; under srun export MASTER_ADDR=<first node's host name> MASTER_PORT=29500)"
        )
    on_gpu = device.startswith("cuda")
    backend = backend or env.get(BACKEND_ENV) or ("nccl" if on_gpu else "gloo")
    if backend not in ("gloo", "nccl"):
        raise DistributedError(f"backend {backend!r}: use gloo or nccl")
    if backend == "nccl" and not on_gpu:
        raise DistributedError(f"nccl needs GPUs but this rank runs on {device}; use gloo or a CUDA device")
    if on_gpu:
        torch.cuda.set_device(torch.device(device.split(",")[0]))
    seconds = float(env[TIMEOUT_ENV]) if TIMEOUT_ENV in env else DEFAULT_TIMEOUT
    timeout = timedelta(seconds=seconds)
    dist.init_process_group(
        backend=backend, init_method="env://", rank=place.rank, world_size=place.size, timeout=timeout
    )
    group = dist.group.WORLD if backend == "gloo" else dist.new_group(backend="gloo", timeout=timeout)
    return World(place, device, group)


def shutdown() -> None:
    """Leave the process group (if this process joined one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def launch(
    place: Place | None = None, device: str | None = None, backend: str | None = None
) -> Iterator[World | None]:
    """``with launch() as world:`` the `World` of a launched process (None when it runs alone).

    ``place`` defaults to `place_from_env`; ``device`` to the rank's GPUs (`rank_device`: one per
    rank, or ``MPC_LLM_GPUS_PER_RANK``), else the CPU. The ranks leave the process group together
    at the end, or when they all stopped on the same error; a rank that fails alone just leaves.
    """
    place = place_from_env() if place is None else place
    if place is None:
        yield None
        return
    world = init(place, device or rank_device(None, owned_gpus(place, gpus_per_rank())), backend)
    try:
        yield world
    except BaseException:
        if world.stopped_together:  # every rank raised at the same point: they can leave together
            with suppress(Exception):
                world.barrier()
            shutdown()
        raise  # a rank failing alone just leaves; the others notice at their next collective
    world.barrier()  # leave together: a rank that leaves first can abort another's gloo
    shutdown()
