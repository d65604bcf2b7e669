"""Pendulum swing-up in closed loop: our receding-horizon MPPI vs ``pytorch_mppi`` (``pip install
'mpc_llm[bench]'``, i.e. ``pytorch-mppi>=0.9``).

Both control the same `Pendulum` (Gym's ``Pendulum-v1``: dt 0.05, torque limit 2, hanging start) for
the same episode, with the same planning horizon ``H``, noise standard deviation ``sigma``,
temperature ``lambda``, samples per control step ``K`` and one MPPI update per step, committing one
step per plan. Both plan with the same running cost (`SwingUpCost`: Gym's cost on the states reached
and the applied torques) and both episodes are scored by it. Printed: the final episode cost (mean,
min, max over seeds), wall time per control step (median, min, max over all steps of all seeds) and
the ratios ours / theirs.

How the updates differ (read from ``pytorch_mppi/mppi.py``, 0.9.1):

- **Weights.** pytorch_mppi adds the control-cost term ``lambda * sum_t u_t^T Sigma^-1 eps_t`` to each
  sample's cost, so ``w_i ∝ exp(-S_i / lambda - sum_t <u_t, eps_{t,i}> / sigma^2)``. That is AISP's
  ``alpha = 0`` weight (``-sum_t <u_t, v_{t,i}> / sigma^2`` differs by ``-||U||^2 / sigma^2``, the same
  for every sample). ``alpha = 1`` (plain MPPI reward softmax) drops the term. Both are run here.
- **Torque bounds.** pytorch_mppi clamps every sample to ``[u_min, u_max]`` before rolling it out and
  updates the mean with the clamped noise, so its mean stays within the bounds. Ours samples
  unclamped controls, the pendulum clamps the torque inside the dynamics (the cost reads the applied
  torque), and the mean is the weighted mean of the unclamped samples (it may leave the bounds).
- **Warm start.** Both shift the plan by one step after each command and fill the tail with zeros
  (pytorch_mppi's ``u_init``; ours ``fill="zeros"``), and draw fresh noise each step. pytorch_mppi
  starts from a random plan unless given ``U_init``: it gets zeros here, as ours starts from.
- **Horizon at the end.** pytorch_mppi always plans ``H`` steps ahead (past the episode's end); ours
  plans ``min(H, steps left)`` (``score="horizon"``).
- **Costs.** pytorch_mppi sums ``running_cost(x_{t+1}, u_t)`` over its plan; ours evaluates
  `SwingUpCost` on rollouts that include the committed history (a constant per step, which the
  softmax ignores).
- **Randomness.** pytorch_mppi draws from torch's global generator (seeded per run); ours from one
  `torch.Generator` per problem. ``u_per_command = 1`` and ``rollout_samples = 1`` (deterministic
  dynamics), no null action, no terminal cost.
- **Timing.** Ours: the time between consecutive planning steps (`RecedingHorizon.optimize`'s
  callback, one inner iteration per step), so it includes committing the step. Theirs: one
  ``command(state)`` plus one step of the true system.

Example::

    python benchmarks/mpc_pendulum.py                  # H 20, K 64, sigma 1, lambda 1, 200 steps, 5 seeds
    python benchmarks/mpc_pendulum.py -K 256 --horizon 30 --alphas 0
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from mpc_llm.controllers import AISP, RecedingHorizon
from mpc_llm.core import require
from mpc_llm.dynamics import Pendulum, SwingUpCost


@dataclass(frozen=True)
class Episode:
    """One closed-loop episode: its cost and the wall time of each control step."""

    cost: float
    step_seconds: list[float]


def run_ours(args: argparse.Namespace, alpha: float, seed: int) -> Episode:
    """Receding-horizon AISP / MPPI, one inner iteration of ``K`` samples per control step."""
    inner = AISP(sigma=args.sigma, lambda_=args.lambda_, alpha=alpha, num_samples=args.K, num_iterations=1)
    mpc = RecedingHorizon(inner, horizon=args.horizon, commit=1, score="horizon", fill="zeros")
    stamps = [time.perf_counter()]
    result = mpc.optimize(
        Pendulum(horizon=args.episode), SwingUpCost(), seed=seed,
        callback=lambda record: stamps.append(time.perf_counter()),
    )  # fmt: skip
    cost = float(SwingUpCost()(result.best_rollout)[0, 0])
    return Episode(cost, [b - a for a, b in itertools.pairwise(stamps)])


def run_theirs(args: argparse.Namespace, seed: int) -> Episode:
    """pytorch_mppi's `MPPI` with ``command(state)`` each step, on the same dynamics and running cost."""
    mppi = require("pytorch_mppi", extra="bench", feature="by this benchmark", package="pytorch-mppi")
    system = Pendulum(horizon=1)
    swing = SwingUpCost()

    def dynamics(state: Tensor, u: Tensor) -> Tensor:
        """``(K, 2)`` states, ``(K, 1)`` torques -> ``(K, 2)``."""
        return system.step(state.unsqueeze(0), u.unsqueeze(0)).squeeze(0)

    def running_cost(state: Tensor, u: Tensor) -> Tensor:
        """``(K, 2)`` states reached, ``(K, 1)`` (already clamped) torques -> ``(K,)``: Gym's cost."""
        return swing.step_cost(state, u)

    torch.manual_seed(seed)  # pytorch_mppi draws its noise from the global generator
    controller = mppi.MPPI(
        dynamics, running_cost, nx=2, noise_sigma=torch.tensor([[args.sigma**2]]), num_samples=args.K,
        horizon=args.horizon, lambda_=args.lambda_, u_min=torch.tensor([-system.max_torque]),
        u_max=torch.tensor([system.max_torque]), U_init=torch.zeros(args.horizon, 1),
    )  # fmt: skip
    state, actions, seconds = system.x0[0].clone(), [], []
    for _ in range(args.episode):
        tic = time.perf_counter()
        u = controller.command(state).reshape(1)
        state = dynamics(state.unsqueeze(0), u.unsqueeze(0)).squeeze(0)
        seconds.append(time.perf_counter() - tic)
        actions.append(u)
    plan = torch.stack(actions).reshape(1, 1, args.episode, 1)
    return Episode(float(swing(Pendulum(horizon=args.episode).rollout(plan, []))[0, 0]), seconds)


def summarize(label: str, episodes: list[Episode]) -> tuple[float, float]:
    """Print one row; return the mean cost and the median step time."""
    costs = [e.cost for e in episodes]
    steps = [s for e in episodes for s in e.step_seconds]
    mean, median = statistics.fmean(costs), statistics.median(steps)
    print(
        f"{label:<22} {mean:>10.1f} {min(costs):>9.1f} {max(costs):>9.1f}   "
        f"{1e3 * median:>8.2f} {1e3 * min(steps):>8.2f} {1e3 * max(steps):>8.2f}"
    )
    return mean, median


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--horizon", type=int, default=20, help="planning horizon H (steps)")
    parser.add_argument("-K", type=int, default=64, help="samples per control step")
    parser.add_argument("--sigma", type=float, default=1.0, help="noise standard deviation (torque units)")
    parser.add_argument("--lambda", dest="lambda_", type=float, default=1.0, help="temperature")
    parser.add_argument("--episode", type=int, default=200, help="control steps per episode")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.0, 1.0], help="our AISP alpha(s)")
    args = parser.parse_args(argv)
    print(
        f"pendulum swing-up: H={args.horizon} K={args.K} sigma={args.sigma} lambda={args.lambda_} "
        f"episode={args.episode} steps, seeds 0..{args.seeds - 1}, torch threads {torch.get_num_threads()}"
    )
    print(f"{'':<22} {'cost mean':>10} {'min':>9} {'max':>9}   {'ms/step':>8} {'min':>8} {'max':>8}")
    runs: dict[str, Callable[[int], Episode]] = {"pytorch_mppi": lambda s: run_theirs(args, s)}
    for alpha in args.alphas:
        runs[f"ours (alpha={alpha:g})"] = lambda s, a=alpha: run_ours(args, a, s)
    episodes: dict[str, list[Episode]] = {label: [] for label in runs}
    for seed in range(args.seeds):  # interleaved, so that any background load hits every method alike
        for label, run in runs.items():
            episodes[label].append(run(seed))
    rows = {label: summarize(label, found) for label, found in episodes.items()}
    theirs = rows.pop("pytorch_mppi")
    for label, (cost, step) in rows.items():
        ratios = f"cost {cost / theirs[0]:.3f}, median time per step {step / theirs[1]:.3f}"
        print(f"{label} / pytorch_mppi: {ratios}")


if __name__ == "__main__":
    main()
