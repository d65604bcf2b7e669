"""Config file and flags merged into one validated `ExperimentConfig`."""

from __future__ import annotations

import argparse
from typing import Any

from mpc_llm.cli.errors import CLIError

#: The shared controller flags, by the setting each sets (``--lambda`` sets ``lambda``).
_FLAGS = {"sigma": "sigma", "lambda_": "lambda", "alpha": "alpha", "tau": "tau", "num_knots": "num_knots",
          "num_samples": "num_samples", "num_iterations": "num_iterations", "ess_target": "ess_target",
          "sigma_relative": "sigma_relative"}  # fmt: skip


#: How messages name each shared flag.
_FLAG_NAMES = {"sigma": "--sigma", "lambda_": "--lambda", "alpha": "--alpha", "tau": "--tau",
               "num_knots": "--num-knots", "num_samples": "-n/--num-samples",
               "num_iterations": "--iterations", "ess_target": "--ess-target",
               "sigma_relative": "--sigma-relative"}  # fmt: skip


def given_settings(args: argparse.Namespace) -> list[tuple[str, str]]:
    """``(setting, how it was given)`` for every controller setting on the command line: the shared
    flags given (``("ess_target", "--ess-target")``) and each ``--set`` key (``("beta", "--set beta")``)."""
    given = [flag for flag in _FLAGS if getattr(args, flag, None) is not None]
    flags = [(_FLAGS[flag], _FLAG_NAMES[flag]) for flag in given]
    return flags + [(key, f"--set {key}") for key, _ in getattr(args, "set", None) or []]


def refuse_untaken(given: list[tuple[str, str]], accepted: set[str], whom: str | None = None) -> None:
    """Refuse the first setting in ``given`` that is not in ``accepted``, what the controller ``whom``
    takes (None: what the selected controllers take together): a flag is never dropped in silence.

    Raises:
        CLIError: naming the flag, the setting and the settings there are.
    """
    for key, how in given:
        if key not in accepted:
            shown = sorted(k for k in accepted if not (k.endswith("_") and k.rstrip("_") in accepted))
            who = (
                f"controller {whom!r} has no setting {key} (its"
                if whom
                else (f"no selected controller has the setting {key} (their")
            )
            raise CLIError(f"{how}: {who} settings: {', '.join(shown) or 'none'}); drop it, or give one of "
                           "these with --set KEY=VALUE")  # fmt: skip


def _check_taken(args: argparse.Namespace, spec: dict[str, Any]) -> None:
    """For ``align``: every flag and ``--set`` key is one the controller (or its inner one) takes."""
    from mpc_llm.controllers import DEFAULT_NAME, accepted_settings, controller_class, with_preset

    name = spec.get("name", DEFAULT_NAME)
    try:
        controller_class(name)
    except ValueError:
        return  # an unknown controller: building it says so
    refuse_untaken(given_settings(args), accepted_settings(with_preset(spec)), name)


def _with_flags(args: argparse.Namespace, spec: Any, strict: bool) -> dict[str, Any]:
    """A controller spec with the flags' settings (`mpc_llm.controllers.with_settings`): the shared
    flags (``--sigma``, ``-n``, ...) where the controller has the setting, ``--set`` keys too unless
    ``strict`` (then pydantic names an unknown key); a wrapper places what it lacks in its inner
    controller."""
    from mpc_llm.controllers import with_settings

    shared = {key: getattr(args, flag, None) for flag, key in _FLAGS.items()}
    return with_settings(spec, shared, dict(getattr(args, "set", None) or []), strict=strict)


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
    args: argparse.Namespace,
    controller: str | dict[str, Any] | None = None,
    strict: bool = True,
    controllers: dict[str, Any] | None = None,
) -> Any:
    """The config file, then the flags (each overriding only its own setting), validated once (which
    builds its controllers: `ExperimentConfig.planner`, `planners`).

    Settings given nowhere take the project's defaults (`ExperimentConfig`'s validators).
    ``controller``: a name (the config file's controller if it has that name, else that controller's
    defaults) or a full spec ``{"name": ..., **settings}``. ``controllers``: label -> such a name or
    spec, for ``compare``: each gets the flags (never strictly: a flag one controller lacks may be
    another's) and replaces the config file's ``controllers``.
    """
    from mpc_llm.controllers import DEFAULT_NAME
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
    file_controller = dict(data.get("controller", {}))

    def spec_of(given: str | dict[str, Any] | None) -> dict[str, Any]:
        """A name or spec as ``controller`` takes it: the file's controller when it has that name."""
        if isinstance(given, dict):
            return dict(given)
        if given is not None and given != file_controller.get("name", DEFAULT_NAME):
            return {"name": given}
        return dict(file_controller)

    if strict and controllers is None:
        _check_taken(args, spec_of(controller))
    data["controller"] = _with_flags(args, spec_of(controller), strict)
    if controllers is not None:
        data["controllers"] = {
            label: _with_flags(args, spec_of(spec), False) for label, spec in controllers.items()
        }
    return ExperimentConfig.model_validate(data)
