"""Training data for a value: pre-logit states of base-model rollouts, labelled by the final reward.

`collect` samples ``N`` responses per prompt from the unsteered system, records the state it sees at
every step (through a state-feedback `RecordStates` policy that applies no control: the decode is
the base model's exactly) and the reward of each finished response. It works in chunks of prompts,
each written to ``FOLDER/chunk-NNNNN.safetensors`` (temporary file, then rename) with the
collection's settings in ``FOLDER/collection.json``: an interrupted collection resumes at the first
missing chunk and, as every prompt draws from its own seed (``seed * 1_000_003 + prompt index``),
ends with exactly the data an uninterrupted one has. A response whose reward is NaN or infinite is
skipped and counted (never a NaN target).

`load_data` reads the chunks back as one `ValueData`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mpc_llm.core import CostFunction, Dynamics, Policy, make_generators, require

SETTINGS = "collection.json"


class RecordStates(Policy):
    """A policy that applies no control and keeps the ``(R, d)`` state of every step it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.states: list[Tensor] = []

    def __call__(self, z: Tensor, t: int) -> Tensor:
        self.calls += z.shape[0]
        self.states.append(z.detach().float().cpu())
        return torch.zeros_like(z)


@dataclass(frozen=True)
class ValueData:
    """States and their labels, one row per (response, step), responses' steps in order.

    Attributes:
        states: ``(M, d)`` float32 pre-logit states.
        reward: ``(M,)`` float64 final reward of the state's response.
        step: ``(M,)`` the state's step ``t`` in its response.
        last: ``(M,)`` bool, the response's last step (its next row starts another response).
        prompt: ``(M,)`` the prompt index of the state's response (the held-out split is by prompt).
        response: ``(M,)`` a response index, unique over the data.
        skipped_nan: responses dropped because their reward was NaN or infinite.
        tokens: tokens generated while collecting (skipped responses included).
        seconds: seconds spent collecting (sum over chunks).
    """

    states: Tensor
    reward: Tensor
    step: Tensor
    last: Tensor
    prompt: Tensor
    response: Tensor
    skipped_nan: int = 0
    tokens: int = 0
    seconds: float = 0.0

    @property
    def num_responses(self) -> int:
        """Responses kept."""
        return int(self.last.sum())

    @classmethod
    def from_episodes(cls, states: Tensor, lengths: Tensor, rewards: Tensor, prompts: Tensor) -> ValueData:
        """From ``E`` padded episodes: ``states (E, T, d)``, ``lengths (E,)`` (``>= 1``), ``rewards
        (E,)``, ``prompts (E,)``."""
        E, T, _ = states.shape
        on = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)  # (E, T)
        step = torch.arange(T).expand(E, T)
        return cls(
            states=states[on].float(),
            reward=rewards.double().unsqueeze(1).expand(E, T)[on],
            step=step[on],
            last=(step == (lengths - 1).unsqueeze(1))[on],
            prompt=prompts.long().unsqueeze(1).expand(E, T)[on],
            response=torch.arange(E).unsqueeze(1).expand(E, T)[on],
        )

    def subset(self, rows: Tensor) -> ValueData:
        """The rows ``rows`` (whole responses, in order, keep TD pairs intact)."""
        fields = (self.states, self.reward, self.step, self.last, self.prompt, self.response)
        return ValueData(*(x[rows] for x in fields), self.skipped_nan, self.tokens, self.seconds)


def collect(
    bind: Callable[[list[Any]], Dynamics],
    prompts: Sequence[Any],
    cost: CostFunction,
    folder: str | os.PathLike[str],
    *,
    samples_per_prompt: int,
    seed: int = 0,
    chunk_size: int = 8,
    settings: Mapping[str, Any] | None = None,
    state_dtype: torch.dtype = torch.float16,
    progress: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Collect value-training data for ``prompts`` into ``folder`` (resuming what is there).

    Args:
        bind: the system bound to a list of prompts (e.g. ``lm.with_prompts``); it must support
            `Dynamics.rollout_feedback`.
        prompts: the prompts, in a fixed order.
        cost: a cost whose metrics hold ``"reward"`` (`RewardCost`); else the negated cost is used.
        folder: where the chunks go.
        samples_per_prompt: responses per prompt, ``>= 1``.
        seed: prompt ``i`` draws from ``seed * 1_000_003 + i``.
        chunk_size: prompts per chunk (one decode, one file).
        settings: what identifies the collection (model, reward, prompts, decoding, ...); a resume
            with different settings is refused. ``samples_per_prompt``, ``seed``, ``chunk_size``
            and the number of prompts are added.
        state_dtype: how states are stored (float16 halves the disk; training reads float32).
        progress: called with the number of prompts each finished (or already present) chunk holds.

    Returns:
        ``{"chunks", "responses", "skipped_nan", "tokens"}`` over the whole folder.

    Raises:
        ValueError: bad arguments, a folder holding another collection, or a chunk whose every
            reward was NaN.
    """
    st = require("safetensors.torch", extra="hf", feature="to store value data", package="safetensors")
    if samples_per_prompt < 1 or chunk_size < 1:
        raise ValueError(
            f"samples_per_prompt and chunk_size must be >= 1, got {samples_per_prompt}, {chunk_size}"
        )
    if not prompts:
        raise ValueError("no prompts to collect value data on")
    root = Path(folder)
    full = {**dict(settings or {}), "samples_per_prompt": samples_per_prompt, "seed": seed,
            "chunk_size": chunk_size, "num_prompts": len(prompts)}  # fmt: skip
    _check_settings(root, full)
    for stale in root.glob("*.tmp"):
        stale.unlink()
    chunks = (len(prompts) + chunk_size - 1) // chunk_size
    for c in range(chunks):
        lo, hi = c * chunk_size, min(len(prompts), (c + 1) * chunk_size)
        path = root / f"chunk-{c:05d}.safetensors"
        if not path.exists():
            tensors, meta = _collect_chunk(bind, list(prompts[lo:hi]), range(lo, hi), cost,
                                           samples_per_prompt, seed, state_dtype)  # fmt: skip
            tmp = path.with_name(path.name + ".tmp")
            st.save_file(tensors, str(tmp), metadata=meta)
            os.replace(tmp, path)
        if progress is not None:
            progress(hi - lo)
    return summarize(root)


def _check_settings(root: Path, full: Mapping[str, Any]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    path = root / SETTINGS
    if path.exists():
        old = json.loads(path.read_text())
        diff = sorted(k for k in set(old) | set(full) if old.get(k) != full.get(k))
        if diff:
            k = diff[0]
            raise ValueError(
                f"{root} holds value data collected with other settings ({k}: {old.get(k)!r} there, "
                f"{full.get(k)!r} now); use another folder, or pass --overwrite to collect afresh"
            )
        return
    tmp = path.with_name(SETTINGS + ".tmp")
    tmp.write_text(json.dumps(dict(full), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _collect_chunk(
    bind: Callable[[list[Any]], Dynamics],
    prompts: list[Any],
    indices: range,
    cost: CostFunction,
    N: int,
    seed: int,
    state_dtype: torch.dtype,
) -> tuple[dict[str, Tensor], dict[str, str]]:
    tic = time.perf_counter()
    system = bind(prompts)
    B = len(prompts)
    generators = make_generators([seed * 1_000_003 + i for i in indices], B, system.device)
    recorder = RecordStates()
    zeros = torch.zeros((), dtype=system.dtype, device=system.device).expand(
        B, N, system.horizon, system.control_dim
    )
    rollout = system.rollout_feedback(zeros, generators, recorder)
    costs, metrics = cost.evaluate(rollout)
    reward = metrics.get("reward", -costs).detach().double().cpu().reshape(-1)  # (B * N,)
    lengths = rollout.token_counts().reshape(-1)
    states = torch.stack(recorder.states, dim=1)  # (B * N, T, d)
    keep = torch.isfinite(reward)
    if not bool(keep.any()):
        raise ValueError(f"every reward of prompts {indices.start}..{indices.stop - 1} is NaN or infinite; "
                         "check the reward")  # fmt: skip
    T = states.shape[1]
    on = (torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)) & keep.unsqueeze(1)
    prompt_of = torch.tensor(list(indices)).repeat_interleave(N)
    tensors = {
        "states": states[on].to(state_dtype).contiguous(),
        "step": torch.arange(T).expand(B * N, T)[on].contiguous(),
        "response": torch.arange(B * N).unsqueeze(1).expand(B * N, T)[on].contiguous(),
        "reward": reward[keep].contiguous(),
        "prompt": prompt_of[keep].contiguous(),
        "length": lengths[keep].contiguous(),
    }
    meta = {
        "skipped_nan": str(int((~keep).sum())),
        "tokens": str(int(lengths.sum())),
        "seconds": repr(time.perf_counter() - tic),
    }
    return tensors, meta


def _chunks(root: Path) -> list[Path]:
    return sorted(root.glob("chunk-*.safetensors"))


def summarize(folder: str | os.PathLike[str]) -> dict[str, int]:
    """Counts over the chunks in ``folder``: chunks, responses kept, skipped (NaN reward), tokens."""
    st = require("safetensors", extra="hf", feature="to read value data")
    out = {"chunks": 0, "responses": 0, "skipped_nan": 0, "tokens": 0}
    for path in _chunks(Path(folder)):
        with st.safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            out["responses"] += f.get_slice("reward").get_shape()[0]
        out["chunks"] += 1
        out["skipped_nan"] += int(meta.get("skipped_nan", 0))
        out["tokens"] += int(meta.get("tokens", 0))
    return out


def load_data(folder: str | os.PathLike[str]) -> ValueData:
    """All chunks of ``folder`` as one `ValueData` (responses numbered across chunks).

    Raises:
        ValueError: no chunk in ``folder``, or a chunk that cannot be read.
    """
    st = require("safetensors.torch", extra="hf", feature="to read value data", package="safetensors")
    paths = _chunks(Path(folder))
    if not paths:
        raise ValueError(f"no value data in {folder} (collect some first)")
    parts: list[ValueData] = []
    offset, skipped, tokens, seconds = 0, 0, 0, 0.0
    for path in paths:
        try:
            t = st.load_file(str(path))
            with require("safetensors", extra="hf", feature="").safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
        except Exception as err:
            raise ValueError(
                f"{path} is corrupt ({type(err).__name__}: {err}); remove it and resume"
            ) from None
        local = torch.unique_consecutive(t["response"], return_inverse=True)[1]
        ends = torch.cumsum(t["length"], 0) - 1
        parts.append(ValueData(
            states=t["states"].float(), reward=t["reward"][local], step=t["step"],
            last=torch.zeros(len(local), dtype=torch.bool).index_fill_(0, ends, True),
            prompt=t["prompt"][local], response=local + offset,
        ))  # fmt: skip
        offset += len(t["reward"])
        skipped += int(meta.get("skipped_nan", 0))
        tokens += int(meta.get("tokens", 0))
        seconds += float(meta.get("seconds", 0.0))
    return ValueData(
        states=torch.cat([p.states for p in parts]), reward=torch.cat([p.reward for p in parts]),
        step=torch.cat([p.step for p in parts]), last=torch.cat([p.last for p in parts]),
        prompt=torch.cat([p.prompt for p in parts]), response=torch.cat([p.response for p in parts]),
        skipped_nan=skipped, tokens=tokens, seconds=seconds,
    )  # fmt: skip
