"""The command line's grammar: ``align``, ``compare``, ``info``, ``train-value`` (`value`) and flags."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, NoReturn

from mpc_llm.cli import merge, value
from mpc_llm.cli.flag_types import positive_int as _positive_int


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one ``mpc-llm: error: ...`` line (exit 2) like every other
    error of the command: it names the flag and where the flags are listed, without the usage block."""

    def error(self, message: str) -> NoReturn:
        from mpc_llm.cli.errors import CLIError

        raise CLIError(f"{message} (`{self.prog} --help` lists the flags)")


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _key_value(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def _add_shared(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("model and decoding")
    g.add_argument("--config", type=Path, help="YAML/JSON config file (flags override it)")
    g.add_argument("--model", help="HF id, local folder or .gguf file (default: embedded SmolLM2)")
    g.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: cpu)")
    g.add_argument(
        "--dtype",
        help="auto, float32, bfloat16, float16 (default auto: bfloat16 where the "
        "device computes it natively, else float32)",
    )
    g.add_argument("--max-new-tokens", type=int, dest="max_new_tokens")
    g.add_argument("--temperature", type=float)
    g.add_argument("--top-p", type=float, dest="top_p")
    g.add_argument("--greedy", action="store_true", default=None, help="argmax decoding")
    g = parser.add_argument_group("reward")
    g.add_argument(
        "--reward",
        help="built-in name (vader, judge, length, ...) or a path to an HF sequence-classification "
        "reward model (default: vader)",
    )
    g.add_argument(
        "--reward-index", type=int, dest="reward_index", help="output index of a multi-label model"
    )
    g.add_argument(
        "--eval-reward",
        action="append",
        dest="eval_reward",
        metavar="SPEC",
        help="held-out reward scored on the returned responses, never optimised (repeat it or give a "
        "comma list: --eval-reward judge,vader)",
    )
    g.add_argument("--trust-remote-code", action="store_true", dest="trust_remote_code",
                   help="let an HF reward model run its own code (a config file alone cannot)")  # fmt: skip
    g = parser.add_argument_group("controller")
    g.add_argument("--seed", type=int)
    g.add_argument("--sigma", type=float)
    g.add_argument("--lambda", type=float, dest="lambda_")
    g.add_argument("--alpha", type=float)
    g.add_argument(
        "--ess-target",
        type=float,
        dest="ess_target",
        help="instead of --lambda: the ESS fraction in (0, 1] each iteration's temperature reaches",
    )
    g.add_argument(
        "--sigma-relative",
        type=float,
        dest="sigma_relative",
        help="instead of --sigma: a fraction of the model's pre-logit RMS (measured per prompt)",
    )
    g.add_argument("--tau", type=int, help="controlled tokens (default: all max_new_tokens)")
    g.add_argument("--num-knots", type=int, dest="num_knots", help="control knots held over the tau tokens")
    g.add_argument(
        "--set",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other controller setting, e.g. --set elite_fraction=0.2",
    )
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    from mpc_llm.controllers import COMPARE_DEFAULT, DEFAULT_NAME, names

    parser = _Parser(
        prog="mpc-llm", description="Test-time alignment of LLMs as sampling-based optimal control."
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="{align,compare,info,train-value,merge}"
    )

    align = sub.add_parser("align", help="steer one response toward the reward")
    align.add_argument("prompt", help="the prompt to respond to")
    _add_shared(align)
    align.add_argument(
        "--controller",
        help=f"a registered controller: {', '.join(names())} (default: {DEFAULT_NAME})",
    )
    align.add_argument("-n", "--num-samples", type=int, dest="num_samples", help="samples per iteration")
    align.add_argument("--iterations", type=int, dest="num_iterations")
    align.add_argument("--json", action="store_true", help="print the result as JSON on stdout")

    compare = sub.add_parser(
        "compare", help="compare controllers at equal budgets (scored responses or generated tokens)"
    )
    _add_shared(compare)
    compare.add_argument(
        "--prompts",
        help=".jsonl/.csv/.txt file, bundled, sharegpt:train|dev|test (extra mpc_llm[data]), hh-rlhf, shp "
        "(default: the config file's `prompts`, else bundled)",
    )
    compare.add_argument("--num-prompts", type=_positive_int, help="use the first N prompts")
    compare.add_argument(
        "--controllers",
        help="comma-separated names, each with its defaults plus the shared flags (default: the config "
        f"file's `controllers` mapping of label -> settings, else {','.join(COMPARE_DEFAULT)})",
    )
    compare.add_argument("--budgets", type=_int_list, default=[8, 16, 32], help="e.g. 8,16,32,64")
    compare.add_argument(
        "--baseline-budgets",
        type=_int_list,
        default=[],
        dest="baseline_budgets",
        help="more budgets for best_of_n alone, e.g. 1,2,4,...,256: its whole curve, which the summary "
        "places every other point against (read off one run, with common random numbers)",
    )
    compare.add_argument(
        "--budget-unit",
        choices=["samples", "tokens"],
        default="samples",
        dest="budget_unit",
        help="budgets count scored responses (default) or generated tokens per prompt",
    )
    compare.add_argument("--seeds", type=_int_list, default=[0], help="distinct run seeds, e.g. 0,1,2")
    compare.add_argument("-n", "--num-samples", type=int, dest="num_samples", help="samples per iteration")
    compare.add_argument(
        "--prompts-per-batch", type=_positive_int, default=8, help="prompts optimised together (default 8)"
    )
    compare.add_argument("--out", type=Path, required=True, help="run folder")
    compare.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run, or grow it to more prompts whose first ones are its own",
    )
    compare.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    compare.add_argument(
        "--gpus-per-rank",
        type=int,
        dest="gpus_per_rank",
        help="under torchrun / srun: CUDA devices each rank holds, l*k .. l*k+k-1 for local rank l "
        "(default 1, or $MPC_LLM_GPUS_PER_RANK); its model is spread over them (--device local:J: one)",
    )

    sub.add_parser("info", help="versions, devices and the embedded model's cache")
    value.add_parser(sub)
    merge.add_parser(sub)
    return parser
