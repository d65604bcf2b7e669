"""Config file and flags merged into one validated `ExperimentConfig`."""

from __future__ import annotations

import argparse
from typing import Any

from mpc_llm.cli.errors import CLIError


def controller_fields(name: str) -> set[str]:
    """The settings (names and aliases) controller ``name`` accepts (`mpc_llm.controllers.settings_of`)."""
    from mpc_llm.controllers import settings_of

    return settings_of(name)


#: The shared controller flags, by the setting each sets (``--lambda`` sets ``lambda``).
_FLAGS = {"sigma": "sigma", "lambda_": "lambda", "alpha": "alpha", "tau": "tau", "num_knots": "num_knots",
          "num_samples": "num_samples", "num_iterations": "num_iterations", "ess_target": "ess_target",
          "sigma_relative": "sigma_relative"}  # fmt: skip


def _controller_overrides(args: argparse.Namespace, name: str, strict: bool) -> dict[str, Any]:
    """Controller settings from the flags. Shared flags (``--sigma``, ``-n``, ...) apply only where
    controller ``name`` has the setting; ``--set`` keys too unless ``strict`` (then pydantic names
    an unknown key)."""
    fields = controller_fields(name)
    out: dict[str, Any] = {}
    for flag, key in _FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None and key in fields:
            out[key] = value
    out.update({k: v for k, v in args.set if strict or k in fields})
    return out


def _with_output_index(spec: Any, index: int) -> Any:
    """``spec`` (one reward model, ``name: hf``) with ``output_index``; refused for anything else, which
    has one output."""
    if isinstance(spec, dict) and spec.get("name") == "hf":
        return {**spec, "output_index": index}
    shown = spec.get("name", spec) if isinstance(spec, dict) else spec
    raise CLIError(
        f"--reward-index {index}: the reward {shown!r} has one output; --reward-index picks an output of a "
        "reward model with several (--reward FOLDER or a hub id): drop it or pass such a model"
    )


def experiment_config(
    args: argparse.Namespace, controller: str | dict[str, Any] | None = None, strict: bool = True
) -> Any:
    """The config file, then the flags (each overriding only its own setting), validated.

    Settings given nowhere take the project's defaults (`ExperimentConfig`'s validators).
    ``controller``: a name (the config file's controller if it has that name, else that controller's
    defaults) or a full spec ``{"name": ..., **settings}``.
    """
    from mpc_llm.controllers import CONTROLLERS, DEFAULT_NAME, controller_class, override
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
    if args.reward_index is not None:
        data["reward"] = _with_output_index(data.get("reward", "vader"), args.reward_index)
    if getattr(args, "eval_reward", None):  # repeated or comma lists, each a name or a model's path
        specs = [x.strip() for flag in args.eval_reward for x in flag.split(",")]
        if "" in specs:
            given = next(flag for flag in args.eval_reward if "" in [x.strip() for x in flag.split(",")])
            raise CLIError(
                f"--eval-reward {given!r} holds an empty name; give reward names or reward models' folders, "
                "e.g. --eval-reward judge or --eval-reward judge,length"
            )
        data["eval_reward"] = [spec_from_flag(x, flag="--eval-reward") for x in specs]
    if trust and "reward" in data:
        data["reward"] = allow_remote_code(data["reward"])
    base = dict(data.get("controller", {}))
    if isinstance(controller, dict):
        base = dict(controller)
    elif controller is not None and controller != base.get("name", DEFAULT_NAME):
        base = {"name": controller}
    name = base.get("name", DEFAULT_NAME)
    wraps = name in CONTROLLERS and controller_class(name).wraps is not None
    overrides = _controller_overrides(args, name, strict and not wraps)
    config_class = CONTROLLERS[name].config_class if name in CONTROLLERS else None
    if wraps:  # flags the wrapper does not have go to its inner controller
        inner = base.get("inner", {"name": DEFAULT_NAME})
        inner = dict(inner) if isinstance(inner, dict) else {"name": inner}
        inner_name = inner.get("name", DEFAULT_NAME)
        own = controller_fields(name)
        to_inner = {k: v for k, v in _controller_overrides(args, inner_name, strict).items() if k not in own}
        inner_class = CONTROLLERS[inner_name].config_class if inner_name in CONTROLLERS else None
        base = {**base, "inner": override(inner, to_inner, inner_class)}
        overrides = {k: v for k, v in overrides.items() if k in own}
    data["controller"] = override(base, overrides, config_class)
    return ExperimentConfig.model_validate(data)
