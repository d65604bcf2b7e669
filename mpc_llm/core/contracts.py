"""Contract checks for your own `Dynamics` and `CostFunction`: what the controllers rely on.

Point them at a system (and a cost) you wrote, in a test of your own; each raises an
``AssertionError`` that says which promise is broken and what the framework expected. The project
runs them on its own systems (language model, toy language model, point mass, pendulum, identity).
`mpc_llm.controllers.contracts.check_planner` does the same for a controller.

Example:
    >>> from mpc_llm.dynamics import GoalCost, PointMass
    >>> check_dynamics(PointMass(horizon=5, dt=0.1))
    >>> check_cost(GoalCost(goal=[1.0, 1.0]), PointMass(horizon=5, dt=0.1))

What is checked:

- sizes: ``batch_size``, ``horizon``, ``control_dim`` positive ints; ``controls`` of the documented
  shape ``(B, N, tau, d)`` give a rollout of ``B`` problems and ``N`` samples, and a wrong shape is
  refused with a `ValueError`;
- randomness: the same generators give the same rollout, and problem ``b`` draws only from
  ``generators[b]`` (the other problems' seeds do not change its rollout);
- `zero_controls` has the system's ``control_dim``, dtype and device;
- closed loop, for systems that implement it: ``advance`` shortens the horizon, ``finished`` is a
  ``(B,)`` bool tensor, ``select`` keeps the problems asked for, ``with_horizon`` sets the horizon;
  per-row commits exactly as ``commits_per_row`` declares (a list of counts works when it is True);
- a cost: ``(B, N)`` float costs and ``(B, N)`` metrics, the same for the same rollout.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from mpc_llm.core.cost import CostFunction
from mpc_llm.core.dynamics import Dynamics
from mpc_llm.core.random import make_generators
from mpc_llm.core.rollout import Rollout

__all__ = ["check_cost", "check_dynamics", "same_rollout"]


def _fail(what: str) -> AssertionError:
    return AssertionError(f"Dynamics contract: {what} (see mpc_llm.core.Dynamics)")


def same_rollout(a: Rollout, b: Rollout) -> bool:
    """Whether two rollouts hold the same values in every field (tensors exactly, others by ``==``)."""
    if type(a) is not type(b):
        return False
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, Tensor) and isinstance(y, Tensor):
            if x.shape != y.shape or not torch.equal(x, y):
                return False
        elif x != y:
            return False
    return True


def _generators(system: Dynamics, seeds: Sequence[int]) -> list[torch.Generator]:
    return make_generators(list(seeds), len(seeds), system.device)


def _closed_loop(system: Dynamics) -> bool:
    """Whether the system implements `Dynamics.advance` (the base class raises NotImplementedError)."""
    return type(system).advance is not Dynamics.advance


def check_dynamics(system: Dynamics, num_samples: int = 2, seed: int = 0) -> None:
    """Check ``system`` against the `Dynamics` contract (module docstring); raise on the first break.

    Args:
        system: a system with at least one problem (two or more also check that problems draw
            only from their own generator).
        num_samples: ``N`` per rollout.
        seed: the first of the problems' seeds.
    """
    B, H, d = system.batch_size, system.horizon, system.control_dim
    for name, value in (("batch_size", B), ("horizon", H), ("control_dim", d)):
        if not isinstance(value, int) or value < 1:
            raise _fail(f"{name} must be a positive int, got {value!r}")
    zero = system.zero_controls(num_samples, H)
    if (
        tuple(zero.shape) != (B, num_samples, H, d)
        or zero.dtype != system.dtype
        or zero.device.type != system.device.type
    ):
        raise _fail(
            f"zero_controls({num_samples}, {H}) must be ({B}, {num_samples}, {H}, {d}) of dtype "
            f"{system.dtype} on {system.device}, got {tuple(zero.shape)} {zero.dtype} {zero.device}"
        )
    g = torch.Generator().manual_seed(seed)
    controls = torch.randn((B, num_samples, H, d), generator=g, dtype=torch.float64).to(system.dtype)
    controls = controls.to(system.device)
    seeds = list(range(seed, seed + B))
    first = system.rollout(controls, _generators(system, seeds))
    if not isinstance(first, Rollout) or (first.batch_size, first.num_samples) != (B, num_samples):
        raise _fail(
            f"rollout of ({B}, {num_samples}, tau, d) controls must be a Rollout with B={B}, "
            f"N={num_samples}, got {type(first).__name__}"
        )
    if not same_rollout(first, system.rollout(controls, _generators(system, seeds))):
        raise _fail("the same controls and generators must give the same rollout (draw only from them)")
    if B > 1:
        other = system.rollout(controls, _generators(system, [seeds[0]] + [s + 1000 for s in seeds[1:]]))
        if not same_rollout(first.problems([0]), other.problems([0])):
            raise _fail(
                "problem 0's rollout changed when only the other problems' generators did: "
                "problem b must draw from generators[b] only"
            )
    try:
        system.rollout(
            controls[..., : max(1, d - 1)] if d > 1 else controls[:, :, :, :0], _generators(system, seeds)
        )
    except ValueError:
        pass
    else:
        raise _fail("controls of the wrong size d must be refused with a ValueError (check_controls)")
    if _closed_loop(system):
        _check_closed_loop(system, controls[:, :1], seeds)


def _check_closed_loop(system: Dynamics, controls: Tensor, seeds: list[int]) -> None:
    B, H = system.batch_size, system.horizon
    one = system.rollout(controls, _generators(system, seeds))
    later = system.advance(one, 1)
    if later.horizon > H or later.batch_size != B:
        raise _fail(
            f"advance(rollout, 1) must keep B={B} and not lengthen the horizon {H}, got "
            f"B={later.batch_size}, horizon {later.horizon}"
        )
    done = later.finished()
    if not isinstance(done, Tensor) or done.dtype != torch.bool or tuple(done.shape) != (B,):
        raise _fail(f"finished() must be a ({B},) bool tensor, got {done!r}")
    picked = later.select([B - 1])
    if picked.batch_size != 1:
        raise _fail(f"select([b]) must keep one problem, got batch_size {picked.batch_size}")
    if H > 1:
        try:
            short = system.with_horizon(1)
        except NotImplementedError:
            short = None
        if short is not None and short.horizon != 1:
            raise _fail(f"with_horizon(1) must have horizon 1, got {short.horizon}")
    counts = [1] * B
    if system.commits_per_row:
        try:
            rows = system.advance(one, counts)
        except Exception as err:  # the declaration is what callers (QAlign) trust
            raise _fail(
                f"commits_per_row is True but advance(rollout, {counts}) raised "
                f"{type(err).__name__}: {err}; take one count per row or declare False"
            ) from err
        if rows.batch_size != B:
            raise _fail("advance with one count per row must keep every problem")


def check_cost(cost: CostFunction, system: Dynamics, num_samples: int = 2, seed: int = 0) -> None:
    """Check ``cost`` on rollouts of ``system``: ``(B, N)`` floating costs and ``(B, N)`` metrics, the
    same when evaluated twice.

    Raises:
        AssertionError: naming the broken promise.
    """
    B = system.batch_size
    g = torch.Generator().manual_seed(seed)
    controls = torch.randn(
        (B, num_samples, system.horizon, system.control_dim), generator=g, dtype=torch.float64
    )
    rollout = system.rollout(
        controls.to(system.dtype).to(system.device), _generators(system, range(seed, seed + B))
    )
    costs, metrics = cost.evaluate(rollout)
    again, _ = cost.evaluate(rollout)
    if (
        not isinstance(costs, Tensor)
        or tuple(costs.shape) != (B, num_samples)
        or not costs.is_floating_point()
    ):
        raise AssertionError(
            f"CostFunction contract: evaluate must return ({B}, {num_samples}) floating costs, "
            f"got {getattr(costs, 'shape', costs)!r}"
        )
    if not torch.equal(costs.nan_to_num(0.0), again.nan_to_num(0.0)):
        raise AssertionError("CostFunction contract: the same rollout must get the same costs")
    for name, value in _items(metrics):
        if tuple(value.shape) != (B, num_samples):
            raise AssertionError(
                f"CostFunction contract: metric {name!r} must be ({B}, {num_samples}), "
                f"got {tuple(value.shape)}"
            )


def _items(metrics: Any) -> list[tuple[str, Tensor]]:
    return [(str(k), v) for k, v in dict(metrics).items()]
