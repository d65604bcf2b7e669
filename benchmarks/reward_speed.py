"""Reward speed: scored responses per second for VADER, the LLM judge and an HF reward model.

The model rewards run twice on the same pairs in the same process: **before** (the plain path:
every input whole, in the given order, ``batch_size`` at a time) and **after** (the judge computes
each prompt's common prefix once and batches the rest by length; the reward model batches by
length). The pairs are ``--prompts`` prompts x ``-N`` responses, flattened prompt by prompt as
`Reward.score_rollout` passes them; each response is a window of ``--tokens`` +- ``--spread``
tokens (uniform, seeded) of a fixed English text, so every run scores the same pairs.

Judge: the embedded SmolLM2-135M-Instruct with the default rubric. Reward model: a small randomly
initialised Llama sequence classifier with SmolLM2's tokenizer and chat template (the shape of
the work, not a real reward). VADER has no switch and runs once.

The repeats of before and after alternate, so that both see the same load on a shared machine.
Prints, per run, the median, min and max seconds of ``--repeats`` calls, responses per second (from
the median), and the token positions the model ran per call (padding included: the work, free of
timing noise); then the after/before ratio of responses per second (medians; the range from the
extreme pairs of repeats; ``best``: fastest against fastest), the ratio of positions, and the
largest score difference between the two paths.

Examples::

    python benchmarks/reward_speed.py                      # CPU, 4 prompts x 16 responses of ~64 tokens
    python benchmarks/reward_speed.py --prompts 4 -N 64 --repeats 3 --json reward_speed.json
    python benchmarks/reward_speed.py --device cuda -N 64 --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from typing import Any

import torch
from timing import spread

from mpc_llm.lm.loading import load_default_model, load_default_tokenizer
from mpc_llm.rewards import HFRewardModel, JudgeReward, Reward, VaderReward

PROMPTS = [
    "Write a short, cheerful story about a robot who learns to paint.",
    "Explain why the sky is blue to a ten-year-old.",
    "Give me three tips for staying focused while studying.",
    "What should I pack for a weekend hiking trip in the mountains?",
]
TEXT = (
    "The little robot had never held a brush before, but the colours in the window of the old shop "
    "called to it every morning. It saved the coins it earned sweeping the square and, one rainy "
    "Tuesday, it bought a small set of paints. Sunlight is made of many colours mixed together. When "
    "it passes through the air, the tiny molecules scatter the short blue waves far more than the long "
    "red ones, so blue light reaches your eyes from every part of the sky. Put your phone in another "
    "room, work in short blocks of twenty-five minutes with a five-minute break, and write down the one "
    "thing you want to finish before you start. Pack layers you can take off and put back on, a rain "
    "jacket, a warm hat, sturdy boots that are already broken in, a map, more water than you think you "
    "need, and snacks that will not melt. I am not sure that is right; honestly, it depends on many "
    "things, and I would rather not guess. Thank you for asking! Here is a simple plan that should "
    "help, and if anything is unclear, just ask again and we can go through it step by step."
)


def make_pairs(
    tokenizer: Any, prompts: int, n: int, tokens: int, spread: int, seed: int
) -> tuple[list, list]:
    """``prompts * n`` (prompt, response) pairs, prompt-major; responses are token windows of TEXT."""
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    rng = random.Random(seed)
    flat_prompts, responses = [], []
    for b in range(prompts):
        for _ in range(n):
            length = rng.randint(max(1, tokens - spread), tokens + spread)
            start = rng.randrange(max(1, len(ids) - length))
            window = (ids * (1 + length // len(ids) + 1))[start : start + length]
            flat_prompts.append(PROMPTS[b % len(PROMPTS)])
            responses.append(tokenizer.decode(window).strip())
    return flat_prompts, responses


def random_classifier(tokenizer: Any, device: str) -> Any:
    """A small random Llama sequence classifier (hidden 256, 4 layers) for ``tokenizer``'s vocabulary."""
    from transformers import AutoModelForSequenceClassification, LlamaConfig

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_config(config)
    return model.to(device).eval()


class Positions:
    """Counts the token positions (rows x length, padding included) a model's forward passes run."""

    def __init__(self, model: torch.nn.Module | None) -> None:
        self.count = 0
        if model is not None:
            model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if isinstance(ids, torch.Tensor):
            self.count += ids.numel()


def alternate(
    fns: list[Callable[[], Any]], device: torch.device, repeats: int
) -> list[tuple[list[float], Any]]:
    """Wall times of ``repeats`` calls of each of ``fns``, taken in turn (before, after, before, ...)
    so that every one sees the same load on a shared machine; and each one's last result."""
    times: list[list[float]] = [[] for _ in fns]
    results: list[Any] = [None] * len(fns)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            tic = time.perf_counter()
            results[k] = fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[k].append(time.perf_counter() - tic)
    return list(zip(times, results, strict=True))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--prompts", type=int, default=4, help="prompts (at most 4 distinct)")
    parser.add_argument("-N", type=int, default=16, help="responses per prompt")
    parser.add_argument("--tokens", type=int, default=64, help="mean response length in tokens")
    parser.add_argument("--spread", type=int, default=16, help="lengths are uniform in tokens +- spread")
    parser.add_argument("--batch-size", type=int, default=8, help="inputs per forward pass (both paths)")
    parser.add_argument("--repeats", type=int, default=5, help="calls of each; the median time counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--only", default="vader,judge,hf", help="which rewards, comma-separated")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    only = set(args.only.split(","))

    tokenizer = load_default_tokenizer()
    prompts, responses = make_pairs(tokenizer, args.prompts, args.N, args.tokens, args.spread, args.seed)
    M = len(responses)
    print(
        f"device={device} threads={torch.get_num_threads()} pairs={M} ({args.prompts} prompts x {args.N}) "
        f"response tokens={args.tokens}+-{args.spread} batch_size={args.batch_size} repeats={args.repeats}"
    )
    groups: list[tuple[str, list[tuple[str, Reward]], Any]] = []  # (kind, [(label, reward)], model)
    bs = args.batch_size
    if "vader" in only:
        groups.append(("vader", [("vader", VaderReward())], None))
    if "judge" in only:
        model, tok = load_default_model(device=args.device)
        before = JudgeReward(model, tok, batch_size=bs, share_prefix=False, sort_by_length=False)
        groups.append(
            (
                "judge",
                [("judge, before", before), ("judge, after", JudgeReward(model, tok, batch_size=bs))],
                model,
            )
        )
    if "hf" in only:
        tok = load_default_tokenizer()  # its own copy: the reward model may set a pad token
        model = random_classifier(tok, args.device)
        name = "random-llama-classifier"
        before = HFRewardModel(model, tok, batch_size=bs, sort_by_length=False, name=name)
        groups.append(
            (
                "hf",
                [("hf, before", before), ("hf, after", HFRewardModel(model, tok, batch_size=bs, name=name))],
                model,
            )
        )

    results: dict[str, Any] = {
        "device": str(device),
        "pairs": M,
        "tokens": args.tokens,
        "spread": args.spread,
    }
    scores: dict[str, torch.Tensor] = {}
    print(
        f"{'run':<16}{'median s':>9}{'min s':>8}{'max s':>8}{'responses':>10}{'resp/s':>9}{'positions':>10}"
    )
    for _, runs, model in groups:
        counter = Positions(model)

        def call(reward: Reward, counter: Positions = counter) -> tuple[torch.Tensor, int]:
            start = counter.count
            return reward.score(prompts, responses), counter.count - start

        for _, reward in runs:
            reward.score(prompts[:2], responses[:2])  # warm-up (kernels, allocator, lazy init)
        timings = alternate([lambda r=r: call(r) for _, r in runs], device, args.repeats)
        for (label, _), (times, (result, count)) in zip(runs, timings, strict=True):
            scores[label] = result
            results[label] = {
                **spread(times, M, "responses"),
                "positions": count if model is not None else None,
            }
            median = results[label]["seconds"]
            shown = count if model is not None else ""
            print(
                f"{label:<16}{median:>9.2f}{min(times):>8.2f}{max(times):>8.2f}{M:>10d}{M / median:>9.1f}"
                f"{shown:>10}"
            )
    for kind, target in (("judge", 3.0), ("hf", None)):
        if f"{kind}, after" not in results:
            continue
        b, a = results[f"{kind}, before"], results[f"{kind}, after"]
        ratio = a["responses_per_s"] / b["responses_per_s"]
        lo, hi = b["seconds_min"] / a["seconds_max"], b["seconds_max"] / a["seconds_min"]
        best = b["seconds_min"] / a["seconds_min"]
        work = b["positions"] / max(a["positions"], 1)
        diff = float((scores[f"{kind}, after"] - scores[f"{kind}, before"]).abs().max())
        results[f"{kind} after/before"] = {
            "speed": ratio,
            "speed_range": [lo, hi],
            "speed_best": best,
            "positions": work,
            "max_abs_score_diff": diff,
        }
        goal = f"   (target >= {target:g})" if target else ""
        print(
            f"{kind + ' after/before':<18}= {ratio:.2f} (range {lo:.2f}-{hi:.2f}, best {best:.2f}){goal}\n"
            f"{'':<18}  positions before/after = {work:.2f}, max |score difference| = {diff:.1e}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
