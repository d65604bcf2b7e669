"""Study throughput against the hardware's own limit, in float32 and bfloat16 (issue 31).

The workload of a study's inner loop: best-of-``N`` on ``P`` ShareGPT dev prompts decoded together
(``P * N`` rows, ``T`` new tokens each, end-of-sequence ignored so that every run does the same
work), every response scored by the reward (VADER, or the 135M judge in the model's dtype), and
the returned responses' closeness to the base model (one teacher-forced pass). A record is one
prompt's answer. Printed per dtype: records per minute, tokens/s, the decode's achieved GFLOP/s
(the model's linear layers and attention, counted from its config), and beside them, measured in
the same run and dtype, the GFLOP/s of a large matrix product (2048^3: the roofline) and of the LM
head's product at the study's batch; median, min and max over ``--repeats``.

``--qalign`` adds QAlign against best-of-N at equal scored samples on the same prompts (one
decode per proposal with per-row commits; before them, one per distinct kept-prefix length).

Examples::

    python benchmarks/study_speed.py                          # VADER, float32 and bfloat16, 3 repeats
    python benchmarks/study_speed.py --reward judge --repeats 3
    python benchmarks/study_speed.py --qalign --dtypes bfloat16
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import torch
from timing import spread

from mpc_llm.controllers import BestOfN, QAlign
from mpc_llm.dynamics import LMDynamics
from mpc_llm.evaluation.prompts import load_prompt_set
from mpc_llm.lm import DEFAULT_MODEL, load_model, resolve_dtype
from mpc_llm.rewards import reward_from_spec


def linear_flops_per_token(model: torch.nn.Module) -> int:
    """``2 * sum(in * out)`` over the model's linear layers (the LM head included)."""
    return 2 * sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))


def attention_flops_per_token(model: Any, context: float) -> float:
    """``QK^T`` and ``AV`` of one new token against ``context`` positions, every layer and head."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    heads = cfg.num_attention_heads
    dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return 4.0 * cfg.num_hidden_layers * heads * dim * context


def matmul_gflops(m: int, k: int, n: int, dtype: torch.dtype, repeats: int) -> dict[str, float]:
    """GFLOP/s of an ``(m, k) @ (k, n)`` product: median, min and max over ``repeats`` (after a warm-up)."""
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    a @ b
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - tic)
    flop = 2.0 * m * k * n
    s = spread(times, 1, "calls")
    return {"gflops": flop / s["seconds"] / 1e9, "gflops_min": flop / s["seconds_max"] / 1e9,
            "gflops_max": flop / s["seconds_min"] / 1e9}  # fmt: skip


def decode_bytes_per_step(model: Any, rows: int, context: float) -> float:
    """Bytes a decoding step must read: the weights once, and every row's keys and values."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    heads = cfg.num_attention_heads
    dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    size = next(model.parameters()).element_size()
    weights = sum(p.numel() for p in model.parameters()) * size
    return weights + 2.0 * cfg.num_hidden_layers * kv_heads * dim * rows * context * size


def copy_gbps(repeats: int, megabytes: int = 512) -> float:
    """GB/s of copying a ``megabytes`` tensor (read + write), the median over ``repeats``."""
    a = torch.empty(megabytes * 2**20, dtype=torch.uint8).fill_(1)
    b = torch.empty_like(a)
    b.copy_(a)
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        b.copy_(a)
        times.append(time.perf_counter() - tic)
    return 2 * a.numel() / spread(times, 1, "calls")["seconds"] / 1e9


def timed(fn: Callable[[], Any], repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return times


def study(args: argparse.Namespace, dtype: torch.dtype, prompts: list[Any]) -> dict[str, Any]:
    """The best-of-N workload and the rooflines in ``dtype``."""
    model, tok = load_model(DEFAULT_MODEL, dtype=dtype)
    lm = LMDynamics(model, tok, prompts, max_new_tokens=args.T, temperature=0.7, stop_at_eos=False)
    name = str(dtype).removeprefix("torch.")
    spec = {"name": "judge", "dtype": name} if args.reward == "judge" else args.reward
    reward = reward_from_spec(spec)  # the judge in the model's dtype
    cost = reward.as_cost()
    P, N, T, d = len(prompts), args.N, args.T, lm.control_dim

    def run() -> None:
        result = BestOfN(num_samples=N).optimize(lm, cost, seed=0, max_samples=N)
        lm.closeness_to_base(result.best_rollout)

    times = timed(run, args.repeats)
    tokens = P * N * T
    context = sum(len(ids) for ids in lm.encode_prompts()) / P + T / 2
    flop = tokens * (linear_flops_per_token(model) + attention_flops_per_token(model, context))
    s = spread(times, tokens, "tokens")
    out = {
        "dtype": str(dtype).removeprefix("torch."),
        **s,
        "records_per_min": 60.0 * P / s["seconds"],
        "records_per_min_range": [60.0 * P / s["seconds_max"], 60.0 * P / s["seconds_min"]],
        "decode_gflop": flop / 1e9,
        "achieved_gflops": flop / s["seconds"] / 1e9,
        "roofline_2048": matmul_gflops(2048, 2048, 2048, dtype, args.repeats),
        "lm_head_at_batch": matmul_gflops(P * N, d, model.config.vocab_size, dtype, args.repeats),
    }
    out["roofline_ratio"] = out["achieved_gflops"] / out["roofline_2048"]["gflops"]
    out["decode_gbytes"] = T * decode_bytes_per_step(model, P * N, context) / 1e9
    out["achieved_gbps"] = out["decode_gbytes"] / s["seconds"]
    out["copy_gbps"] = copy_gbps(args.repeats)
    if args.qalign:
        out["qalign"] = qalign_vs_best_of_n(args, model, tok, prompts[: args.qalign_prompts], cost)
    return out


def qalign_vs_best_of_n(
    args: argparse.Namespace, model: Any, tok: Any, prompts: list[Any], cost: Any
) -> dict[str, Any]:
    """QAlign and best-of-N at ``--qalign-samples`` scored samples on the same prompts (EOS on)."""
    lm = LMDynamics(model, tok, prompts, max_new_tokens=args.T, temperature=0.7)
    k, seeds = args.qalign_samples, list(range(len(prompts)))
    q = timed(lambda: QAlign(beta=0.1).optimize(lm, cost, seed=seeds, max_samples=k), args.repeats)
    b = timed(lambda: BestOfN(num_samples=k).optimize(lm, cost, seed=seeds, max_samples=k), args.repeats)
    qs, bs = spread(q, k, "samples"), spread(b, k, "samples")
    extremes = [qs["seconds_min"] / bs["seconds_max"], qs["seconds_max"] / bs["seconds_min"]]
    return {"prompts": len(prompts), "samples": k, "qalign": qs, "best_of_n": bs,
            "ratio": qs["seconds"] / bs["seconds"], "ratio_range": extremes}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--reward", default="vader", help="vader or judge")
    parser.add_argument("--prompts", default="sharegpt:dev", help="prompt source (default sharegpt:dev)")
    parser.add_argument("-P", type=int, default=10, help="prompts decoded together")
    parser.add_argument("-N", type=int, default=16, help="samples per prompt")
    parser.add_argument("-T", type=int, default=48, help="new tokens per sample")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--qalign", action="store_true", help="also QAlign vs best-of-N at equal samples")
    parser.add_argument("--qalign-prompts", type=int, default=4)
    parser.add_argument("--qalign-samples", type=int, default=16)
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    prompts = load_prompt_set(args.prompts, limit=args.P).prompts
    print(f"threads={torch.get_num_threads()} prompts={args.P} ({args.prompts}) N={args.N} T={args.T} "
          f"reward={args.reward} repeats={args.repeats}")  # fmt: skip
    results = {}
    for name in args.dtypes:
        dtype = resolve_dtype(name)
        assert dtype is not None
        r = results[r_name := str(dtype).removeprefix("torch.")] = study(args, dtype, prompts)
        print(
            f"\n{r_name}: {r['seconds']:.2f} s (min {r['seconds_min']:.2f}, max {r['seconds_max']:.2f}) per "
            f"{args.P} records -> {r['records_per_min']:.1f} records/min, {r['tokens_per_s']:.0f} tokens/s, "
            f"decode {r['achieved_gflops']:.0f} GFLOP/s ({r['decode_gflop']:.0f} GFLOP per run)\n"
            f"  roofline (2048^3 product): {r['roofline_2048']['gflops']:.0f} GFLOP/s "
            f"(min {r['roofline_2048']['gflops_min']:.0f}, max {r['roofline_2048']['gflops_max']:.0f}); "
            f"LM head at batch {args.P * args.N}: {r['lm_head_at_batch']['gflops']:.0f} GFLOP/s; "
            f"achieved / roofline = {r['roofline_ratio']:.2f}\n"
            f"  memory: the decode reads {r['decode_gbytes']:.0f} GB per run (weights, keys, values every "
            f"step) = {r['achieved_gbps']:.1f} GB/s, against {r['copy_gbps']:.1f} GB/s for a 512 MB copy"
        )
        if "qalign" in r:
            q = r["qalign"]
            print(f"  QAlign vs best-of-N at {q['samples']} samples on {q['prompts']} prompts: "
                  f"{q['qalign']['seconds']:.2f} s vs {q['best_of_n']['seconds']:.2f} s = {q['ratio']:.2f}x "
                  f"(range {q['ratio_range'][0]:.2f}-{q['ratio_range'][1]:.2f})")  # fmt: skip
    if "float32" in results and len(results) > 1:
        base = results["float32"]
        for name, r in results.items():
            if name != "float32":
                lo = r["tokens"] / r["seconds_max"] / (base["tokens"] / base["seconds_min"])
                hi = r["tokens"] / r["seconds_min"] / (base["tokens"] / base["seconds_max"])
                print(f"\n{name} / float32 study tokens/s: {r['tokens_per_s'] / base['tokens_per_s']:.2f}x "
                      f"(range {lo:.2f}-{hi:.2f})")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
