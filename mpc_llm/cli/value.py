"""``mpc-llm train-value``: collect base-model states, train a value on them, save it.

    mpc-llm train-value --reward vader --prompts sharegpt:train --samples-per-prompt 8 \\
        --out values/smollm2-vader

An interrupted run resumes when run again with the same flags (``OUT/data`` keeps finished chunks);
``--overwrite`` starts the collection afresh and replaces a finished value, deleting only the files
this command writes (a folder holding any other file is refused). ``OUT/value.safetensors`` is
written only once training has finished (renamed into place: never half a file). Every check that
needs no weights runs before the model loads (`mpc_llm.evaluation.value_training.check_training`).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from mpc_llm.cli.flag_types import positive_int


def add_parser(sub: Any) -> None:
    """The ``train-value`` sub-command and its flags."""
    p: argparse.ArgumentParser = sub.add_parser(
        "train-value",
        help="learn a value of the pre-logit state from base-model samples (re_control, value_blockwise)",
    )
    g = p.add_argument_group("data")
    g.add_argument("--model", help="HF id, local folder or .gguf file (default: embedded SmolLM2)")
    g.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: cpu)")
    g.add_argument(
        "--dtype",
        default="auto",
        help="auto, float32, bfloat16, float16 (default auto: bfloat16 where the "
        "device computes it natively, else float32)",
    )
    g.add_argument("--max-new-tokens", type=int, dest="max_new_tokens", default=48)
    g.add_argument("--temperature", type=float, default=0.7)
    g.add_argument("--reward", default="vader", help="built-in name or a reward model's path (default vader)")
    g.add_argument("--prompts", default="sharegpt:train",
                   help="a training split or prompt file, never the prompts results are reported on "
                   "(default: sharegpt:train, extra mpc_llm[data])")  # fmt: skip
    g.add_argument("--allow-test-split", action="store_true", dest="allow_test_split",
                   help="train on a split results are reported on (sharegpt:test, hh-rlhf, shp): refused "
                   "without it; the card records the source and comparisons on it warn")  # fmt: skip
    g.add_argument("--num-prompts", type=positive_int, dest="num_prompts",
                   help="the first N prompts (at least 2; a source holding fewer is refused)")  # fmt: skip
    g.add_argument("--samples-per-prompt", type=positive_int, default=8, dest="samples_per_prompt")
    g.add_argument("--chunk-size", type=positive_int, default=8, dest="chunk_size",
                   help="prompts per saved chunk")  # fmt: skip
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("training")
    g.add_argument("--target", choices=["mc", "td"], default="mc",
                   help="Monte Carlo (final reward) or RE-Control's temporal-difference targets")  # fmt: skip
    g.add_argument("--width", type=int, default=256)
    g.add_argument("--depth", type=int, default=2)
    g.add_argument("--epochs", type=int, default=50)
    g.add_argument("--patience", type=int, default=5)
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--batch-size", type=int, default=512, dest="batch_size")
    g.add_argument("--heldout-fraction", type=float, default=0.2, dest="heldout_fraction")
    p.add_argument("--out", type=Path, required=True, help="the value folder")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the value or data this command wrote in --out (no other file)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the card as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_train_value(args: argparse.Namespace) -> int:
    """Run ``train-value``; prints the held-out figures (or the card with ``--json``)."""
    from mpc_llm.evaluation.value_training import train_value_function
    from mpc_llm.lm import LMConfig
    from mpc_llm.rewards import spec_from_flag
    from mpc_llm.values import TrainConfig

    lm = LMConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    train = TrainConfig(
        target=args.target, width=args.width, depth=args.depth, epochs=args.epochs, patience=args.patience,
        lr=args.lr, batch_size=args.batch_size, heldout_fraction=args.heldout_fraction,
    )  # fmt: skip
    card = train_value_function(
        args.out, model=args.model, reward=spec_from_flag(args.reward), prompts=args.prompts,
        num_prompts=args.num_prompts, samples_per_prompt=args.samples_per_prompt, lm=lm, device=args.device,
        dtype=args.dtype, seed=args.seed, chunk_size=args.chunk_size, train=train, quiet=args.quiet,
        overwrite=args.overwrite, allow_test_split=args.allow_test_split,
    )  # fmt: skip
    if args.json:  # strict JSON: a figure that is not a number (NaN) is null
        print(json.dumps(card, indent=2, allow_nan=False))
        return 0
    held, cost = card["report"]["heldout"], card["learning_cost"]
    print(f"value: {args.out}/value.safetensors (d={card['d']}, {card['report']['target']} targets, "
          f"best epoch {card['report']['best_epoch']} of {card['report']['epochs_run']})")  # fmt: skip
    print(f"held out ({held['prompts']} prompts, {held['responses']} responses): mse "
          f"{_num(held['mse'], '.4g')} (predicting the mean: {_num(held['baseline_mse'], '.4g')}), spearman "
          f"{_num(held['spearman'], '.3f')}")  # fmt: skip
    seconds = cost["seconds_collect"] + cost["seconds_train"]
    print(f"learning cost: {cost['responses_scored']} responses scored ({card['samples']['skipped_nan']} "
          f"NaN skipped), {cost['tokens']} tokens, {seconds:.0f} s")  # fmt: skip
    return 0


def _num(value: float | None, spec: str) -> str:
    """A figure, or ``n/a`` where it is not a number (a rank correlation of constant rewards)."""
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)
