"""Sweep AISP's sigma and lambda on the embedded default against best-of-N at one budget.

    python benchmarks/sweep_aisp.py --out runs/sweep --prompts 8 --budget 32 \
        --sigmas 0.5,1,2,4 --lambdas 0.05,0.2 --knots 1

Prints the summary table (mean best reward with 95% CI, win rate against best-of-N). The run folder
is resumable (same command again continues). On many processes, each rank on its own GPU (or the
CPU), the (sigma, lambda) candidates and prompt chunks are shared out as in ``mpc-llm compare``
(docs/distributed.md), and a resume may use another number of processes:

    torchrun --nproc_per_node=4 benchmarks/sweep_aisp.py --out runs/sweep --prompts 32 --batch 8

The scale-free grid (sigma as a fraction of the pre-logit RMS, the temperature chosen for a target
ESS fraction), with a held-out reward, fills the frontier plot (frontier.png); the sweep that chose
the project's defaults (docs/results/defaults-sweep.md, outputs in docs/results/defaults_sweep/):

    torchrun --nproc_per_node=2 benchmarks/sweep_aisp.py --out runs/sweep_rel --prompts 20 --seeds 0,1 \
        --budgets 16 --sigma-relatives 0.02,0.05,0.1,0.23 --ess-targets 0.1,0.3,0.6 \
        --eval-reward judge --batch 10

On ShareGPT's dev split (`--prompt-source sharegpt:dev`, extra mpc_llm[data]; the first N prompts
of the split's fixed order), the same grid re-checks the defaults on real requests (README):

    torchrun --nproc_per_node=2 benchmarks/sweep_aisp.py --out runs/sweep_dev --prompt-source sharegpt:dev \
        --prompts 100 --budgets 16 --sigma-relatives 0.02,0.05,0.1,0.23 --ess-targets 0.1,0.3,0.6 \
        --eval-reward judge --batch 10
"""

from __future__ import annotations

import argparse

from mpc_llm.controllers import BestOfN
from mpc_llm.controllers.sweep import aisp_grid, aisp_scale_free_grid
from mpc_llm.dynamics import LMDynamics
from mpc_llm.evaluation.compare import compare
from mpc_llm.evaluation.compare.distributed import World, launch
from mpc_llm.evaluation.compare.heldout import load_eval_rewards
from mpc_llm.evaluation.prompts import load_prompt_set
from mpc_llm.evaluation.summary import markdown_table
from mpc_llm.rewards import reward_from_spec


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--prompts", type=int, default=8, help="the first N prompts of --prompt-source")
    p.add_argument("--prompt-source", default="bundled", help="bundled, sharegpt:dev, a prompt file, ...")
    p.add_argument("--budget", type=int, default=32)
    p.add_argument("--samples", type=int, default=8, help="AISP samples per iteration")
    p.add_argument("--sigmas", type=floats, default=[0.5, 1.0, 2.0, 4.0])
    p.add_argument("--lambdas", type=floats, default=[0.05, 0.2])
    p.add_argument(
        "--sigma-relatives",
        type=floats,
        default=None,
        help="scale-free grid: sigma as a "
        "fraction of the pre-logit RMS (with --ess-targets; replaces --sigmas / --lambdas)",
    )
    p.add_argument("--ess-targets", type=floats, default=None, help="scale-free grid: target ESS fractions")
    p.add_argument(
        "--budgets",
        type=lambda t: [int(x) for x in t.split(",")],
        default=None,
        help="several budgets (default: --budget)",
    )
    p.add_argument("--eval-reward", action="append", default=[], help="held-out reward (repeatable)")
    p.add_argument("--alpha", type=float, default=0.0)
    p.add_argument("--knots", type=int, default=1)
    p.add_argument("--tau", type=int, default=None)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--reward", default="vader")
    p.add_argument("--seeds", type=lambda t: [int(x) for x in t.split(",")], default=[0])
    p.add_argument("--batch", type=int, default=None, help="prompts per batch (default: all; lower it to "
                   "share a sweep over more processes)")  # fmt: skip
    args = p.parse_args()
    # a bad source fails here, before the model loads
    args.prompt_set = load_prompt_set(args.prompt_source, limit=args.prompts)
    with launch() as world:  # alone: None, as before; under torchrun / srun: this process's rank
        sweep(args, world)


def sweep(args: argparse.Namespace, world: World | None) -> None:
    device = world.device if world is not None else None
    lm = LMDynamics("SmolLM2-135M-Instruct", device=device, max_new_tokens=args.max_new_tokens,
                    temperature=args.temperature)  # fmt: skip
    controllers = {"best_of_n": BestOfN(num_samples=args.samples)}
    common = {"alpha": args.alpha, "num_samples": args.samples, "num_knots": args.knots, "tau": args.tau}
    if args.sigma_relatives or args.ess_targets:
        grid = aisp_scale_free_grid(args.sigma_relatives or [0.05], args.ess_targets or [0.3], **common)
    else:
        grid = aisp_grid(args.sigmas, args.lambdas, **common)
    controllers.update(grid)
    budgets = args.budgets or [args.budget]
    rows = compare(
        args.prompt_set.prompts, controllers, lm.with_prompts,
        reward_from_spec(args.reward).as_cost(), budgets=budgets, seeds=args.seeds, out_dir=args.out,
        resume=True, prompts_per_batch=args.batch or args.prompts,
        settings={"model": "SmolLM2", "reward": args.reward, "lm": lm.config.model_dump(mode="json"),
                  **({} if args.prompt_source == "bundled" else {"prompts": args.prompt_source})},
        world=world, progress=world is None or world.is_main,
        eval_rewards=load_eval_rewards(args.eval_reward), origins=args.prompt_set.origins,
    )  # fmt: skip
    if world is None or world.is_main:
        print(markdown_table(rows))


if __name__ == "__main__":
    main()
