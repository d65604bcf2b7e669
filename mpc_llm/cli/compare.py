"""``mpc-llm compare``: controllers at equal budgets, on one process or on many.

Launched by torchrun, ``accelerate launch`` or srun (``WORLD_SIZE`` or a Slurm step with several
tasks), each process is one rank: it takes its device from its local rank (`--gpus-per-rank`),
joins the others, and runs its share of the jobs (`mpc_llm.evaluation.compare.distributed`); only rank 0
prints the table. Alone, it runs every job, as it always did.
"""

from __future__ import annotations

import argparse
from typing import Any

from mpc_llm.cli.errors import CLIError, out_of_memory
from mpc_llm.cli.options import experiment_config, given_settings, refuse_untaken


def _file_device(args: argparse.Namespace) -> str | None:
    """The ``device`` the config file asks for, if any."""
    if not args.config:
        return None
    from mpc_llm.core import read_mapping

    device = read_mapping(args.config).get("device")
    return None if device is None else str(device)


def _file_controllers(args: argparse.Namespace) -> dict[str, Any]:
    """The config file's ``controllers`` mapping (label -> name or spec), if any."""
    if not args.config:
        return {}
    from mpc_llm.core import read_mapping

    found = read_mapping(args.config).get("controllers") or {}
    return dict(found) if isinstance(found, dict) else {}


def cmd_compare(args: argparse.Namespace) -> int:
    """Check everything that can be checked without the model's weights (flags, settings, budgets,
    prompts, the run folder, the model's config and tokenizer), then load it and compare."""
    from mpc_llm.controllers import BASELINE, COMPARE_DEFAULT, accepted_settings
    from mpc_llm.evaluation.compare import (
        check_baseline_budgets,
        check_budgets,
        check_run_folder,
        check_seeds,
        compare,
        comparison_settings,
        distributed,
    )
    from mpc_llm.evaluation.compare.heldout import eval_labels
    from mpc_llm.evaluation.prompts import load_prompt_set
    from mpc_llm.evaluation.summary import markdown_table
    from mpc_llm.experiment import Experiment, preflight

    place = distributed.place_from_env()  # None: this process runs alone, as it always did
    if place is None and args.gpus_per_rank is not None:
        raise CLIError(
            "--gpus-per-rank is for the ranks of a launched run (torchrun, accelerate launch, srun); "
            "to spread one process's model over GPUs pass --device cuda:0,cuda:1"
        )
    if args.resume and args.overwrite:
        raise CLIError("--resume continues the run in --out and --overwrite replaces it; give one of them")
    check_seeds(args.seeds)
    gpus = distributed.owned_gpus(place, distributed.gpus_per_rank(args.gpus_per_rank))
    requested = args.device or _file_device(args)
    if place is not None or (requested or "").startswith(distributed.LOCAL_PREFIX):
        args.device = distributed.rank_device(requested, gpus)
    names = [n.strip() for n in (args.controllers or ",".join(COMPARE_DEFAULT)).split(",") if n.strip()]
    if not names:
        raise CLIError("--controllers needs at least one name")
    file_specs = _file_controllers(args)
    if args.controllers is None and file_specs:
        specs = file_specs
    else:
        specs = {name: file_specs.get(name, name) for name in names}  # labels from the file first
    # validated once, which builds every controller; the flags' errors name the first controller asked
    # for (not a default one the run does not use)
    first = specs[names[0]] if args.controllers else None  # a label of the config file: its spec
    config = experiment_config(args, first, strict=False, controllers=specs)
    controllers = config.planners  # label -> controller, each checked against the run in its config
    accepted = set().union(*(accepted_settings(spec) for spec in config.controllers.values()))
    if unknown := sorted({k for k, _ in args.set} - accepted):
        raise CLIError(f"--set {', '.join(unknown)}: no selected controller has this setting")
    refuse_untaken(given_settings(args), accepted)  # a flag no selected controller takes
    check_budgets(controllers, args.budgets, args.budget_unit, config.lm.max_new_tokens)
    check_baseline_budgets(
        controllers, BASELINE, args.baseline_budgets, args.budget_unit, config.lm.max_new_tokens
    )
    source = args.prompts if args.prompts is not None else config.prompts
    prompt_set = load_prompt_set(source, limit=args.num_prompts, exact=True)
    from mpc_llm.lm.precision import dtype_name, resolve_dtype

    settings = {
        "model": config.model,
        "lm": config.lm.model_dump(mode="json"),
        "reward": config.reward,
        "eval_reward": config.eval_reward,
        "prompts": str(source),
        "dtype": dtype_name(resolve_dtype(config.dtype, config.device)),  # the dtype that runs
    }
    if place is None:  # the run folder, before the model loads (many ranks: rank 0 checks it, later)
        check_run_folder(
            args.out,
            comparison_settings(prompt_set.prompts, controllers, args.budgets, args.seeds, settings,
                                eval_labels(config.eval_reward), args.budget_unit, args.baseline_budgets),
            resume=args.resume,
            overwrite=args.overwrite,
            prompts=prompt_set.prompts,  # --resume grows a run whose prompts are the first of these
        )  # fmt: skip
    planners = {f"controllers.{label}": c for label, c in controllers.items()}
    preflight(config, prompt_set.prompts, planners, prompt_source=str(source))
    with distributed.launch(place, config.device) as world:
        # settings record the reward spec as given (device: local:J), the same on every rank
        experiment = Experiment(
            config.model_copy(update={"reward": distributed.localise(config.reward, gpus)})
        )
        try:
            rows = compare(
                prompt_set.prompts,
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
                settings=settings,
                progress=not args.quiet,
                world=world,
                eval_rewards=experiment.eval_rewards,
                origins=prompt_set.origins,
                baseline_budgets=args.baseline_budgets,
            )
        except (MemoryError, RuntimeError) as err:
            if (hint := out_of_memory(err, args.out, args.prompts_per_batch)) is None:
                raise
            raise CLIError(hint) from err
    if world is None or world.is_main:
        print(markdown_table(rows))
        print(f"records, summary.md and reward_vs_samples.png are in {args.out}")
    return 0
