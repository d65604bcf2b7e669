"""Rollout speed on a realistic workload: real prompts of mixed lengths, engine vs `model.generate`.

`rollout_speed.py` times one fixed prompt. Here ``B`` prompts are the first ``B`` of ShareGPT's
``test`` split (`mpc_llm.evaluation.prompts.sharegpt`: 4-128 tokens of user text, in the split's fixed
shuffled order), so the batch has their natural length spread and is left-padded to the longest,
as a comparison batch is. Each prompt gets ``N`` samples of exactly ``T`` new tokens (end-of-sequence
ignored unless ``--eos``), full-vocabulary sampling at temperature 1, in:

- ``generate``: one `model.generate` call on the left-padded batch (``num_return_sequences=N``);
- ``engine, zero control`` / ``engine, random control``: `LMDynamics` bound to the ``B`` prompts
  (its own prefill timed too), controls ``(B, N, T, d)``;
- the same two with ``B`` copies of one fixed prompt (no padding, rollout_speed.py's prompt), the
  fixed-prompt figures at the same batch shape.

Prints the prompts' length spread (tokens with the chat template, padding share), tokens/s for
each run (median of ``--repeats``, min and max beside), and the ratios engine/generate (real prompts)
and real/fixed (engine). Timings on a shared machine are not figures to report.

Examples::

    python benchmarks/rollout_speed_sharegpt.py                     # SmolLM2, CPU, B=8, N=8, T=64
    python benchmarks/rollout_speed_sharegpt.py -B 2 -N 2 -T 8 --repeats 1   # a quick check that it runs
    python benchmarks/rollout_speed_sharegpt.py --save-prompts test64.jsonl -B 64      # export, then on
    python benchmarks/rollout_speed_sharegpt.py --prompts test64.jsonl -B 64 \\          # a GPU machine
        --model random-llama-1b --device cuda --dtype bfloat16 -N 16 -T 128
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any

import torch
from rollout_speed import PROMPT, RANDOM_LLAMA_1B, load, timed
from timing import spread

from mpc_llm.dynamics import LMDynamics, make_generators
from mpc_llm.evaluation.prompts import load_prompt_set
from mpc_llm.lm.loading import DEFAULT_MODEL, resolve_dtype


def left_padded(rows: list[list[int]], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, L)`` input ids left-padded with ``pad`` to the longest row, and the ``(B, L)`` mask.

    Example:
        >>> ids, mask = left_padded([[5, 6, 7], [8]], 0, torch.device("cpu"))
        >>> ids.tolist(), mask.tolist()
        ([[5, 6, 7], [0, 0, 8]], [[1, 1, 1], [0, 0, 1]])
    """
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    return ids, mask


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"{DEFAULT_MODEL}, {RANDOM_LLAMA_1B}, a path or id"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="auto", help="auto (default), float32, bfloat16, float16")
    parser.add_argument("--prompts", default="sharegpt:test", help="prompt source (default sharegpt:test)")
    parser.add_argument("-B", type=int, default=8, help="prompts in the batch (the first B of the source)")
    parser.add_argument("-N", type=int, default=8, help="samples per prompt")
    parser.add_argument("-T", type=int, default=64, help="new tokens per sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sigma", type=float, default=1.0, help="std of the random controls")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each; the median time counts")
    parser.add_argument("--eos", action="store_true", help="stop at end-of-sequence (lengths then differ)")
    parser.add_argument("--save-prompts", default=None, help="write the B prompts as JSONL and stop")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    chosen = load_prompt_set(args.prompts, limit=args.B)
    if args.save_prompts:
        with open(args.save_prompts, "w", encoding="utf-8") as f:
            for prompt in chosen.prompts:
                f.write(json.dumps({"prompt": prompt}, ensure_ascii=False) + "\n")
        print(f"wrote {len(chosen.prompts)} prompts of {args.prompts} to {args.save_prompts}")
        return {}
    device = torch.device(args.device)
    model, tokenizer = load(args.model, args.device, resolve_dtype(args.dtype, args.device))
    B, N, T = len(chosen.prompts), args.N, args.T
    real = LMDynamics(model, tokenizer, chosen.prompts, max_new_tokens=T, stop_at_eos=args.eos)
    fixed = real.with_prompts([PROMPT] * B)
    lengths = [len(r) for r in real.encode_prompts()]
    ids, mask = left_padded(real.encode_prompts(), real.pad_token_id, device)
    padding = 1 - sum(lengths) / ids.numel()
    print(
        f"\nmodel={args.model} ({type(model).__name__}, d={real.control_dim}, dtype={real.model_dtype}) "
        f"device={device} threads={torch.get_num_threads()} B={B} N={N} T={T} repeats={args.repeats}\n"
        f"prompts: {args.prompts}, tokens with the chat template min {min(lengths)} / median "
        f"{statistics.median(lengths):g} / max {max(lengths)}; padding {100 * padding:.0f}% of the batch; "
        f"fixed prompt: {len(fixed.encode_prompts()[0])} tokens"
    )

    def run_generate() -> int:
        torch.manual_seed(args.seed)
        out = model.generate(
            input_ids=ids, attention_mask=mask, do_sample=True, num_return_sequences=N, max_new_tokens=T,
            min_new_tokens=None if args.eos else T, top_k=0, top_p=1.0, temperature=1.0,
            pad_token_id=real.pad_token_id,
        )  # fmt: skip
        new = out[:, ids.shape[1] :]
        if not args.eos:
            return int(new.numel())
        hit = torch.isin(new, torch.tensor(real.eos_token_ids, device=new.device))
        return int(((hit.cumsum(-1) - hit.long()) == 0).sum())

    gen = torch.Generator(device=device).manual_seed(args.seed)
    zeros = torch.zeros((B, N, T, real.control_dim), device=device, dtype=real.dtype)
    controls = args.sigma * torch.randn(zeros.shape, generator=gen, device=device, dtype=real.dtype)

    def run_engine(dyn: LMDynamics, c: torch.Tensor) -> int:
        fresh = dyn.with_prompts(dyn.prompts)  # a fresh binding: the prefill is timed too
        return fresh.rollout(c, make_generators(args.seed, B, device)).tokens_generated

    run_engine(real.with_options(max_new_tokens=2), zeros[:, :, :2])  # warm-up
    rows = {
        "generate": run_generate,
        "engine, zero control": lambda: run_engine(real, zeros),
        "engine, random control": lambda: run_engine(real, controls),
        "fixed: engine, zero": lambda: run_engine(fixed, zeros),
        "fixed: engine, random": lambda: run_engine(fixed, controls),
    }
    results: dict[str, Any] = {"model": args.model, "device": str(device), "B": B, "N": N, "T": T,
                               "prompt_tokens": lengths, "padding": padding}  # fmt: skip
    print(f"{'run':<24}{'median s':>9}{'min s':>8}{'max s':>8}{'tokens':>8}{'tokens/s':>10}{'peak MiB':>10}")
    for name, fn in rows.items():
        times, tokens, peak = timed(fn, device, args.repeats)
        results[name] = {**spread(times, tokens, "tokens"), "peak_bytes": peak}
        print(f"{name:<24}{results[name]['seconds']:>9.2f}{min(times):>8.2f}{max(times):>8.2f}{tokens:>8d}"
              f"{results[name]['tokens_per_s']:>10.1f}{peak / 2**20:>10.1f}")  # fmt: skip
    for label, a, b in [
        ("engine/generate", "engine, zero control", "generate"),
        ("controlled/zero", "engine, random control", "engine, zero control"),
        ("real/fixed (engine)", "engine, zero control", "fixed: engine, zero"),
    ]:
        results[label] = results[a]["tokens_per_s"] / results[b]["tokens_per_s"]
        print(f"{label:<20} = {results[label]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
