"""One planner interface: controllers defined outside the package run from Python, config files and
the command line through the registry, and the sequential base class keeps the episode's books."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import torch
from pydantic import Field

from mpc_llm.cli import main
from mpc_llm.controllers import (
    AISP,
    CEM,
    CONTROLLERS,
    BestOfN,
    Episode,
    GaussianState,
    PlannerState,
    RecedingHorizon,
    SequentialController,
    Settings,
    Step,
    build,
    register,
    settings_of,
    unregister,
    with_preset,
)
from mpc_llm.core import CostFunction, Dynamics, make_generators
from mpc_llm.dynamics import GoalCost, PointMass


class GreedyConfig(Settings):
    """Settings of its own only: no num_samples, no num_iterations."""

    width: int = Field(2, ge=1)


class GreedyCandidates(SequentialController[GreedyConfig, None]):
    """Commits, token by token, the lowest-cost of the ``width`` most likely next tokens."""

    config_class = GreedyConfig

    def check_budget(self, episode: int | None, budget: int, unit: str = "samples") -> None:
        if unit == "samples" and episode is not None and budget < self.config.width * episode:
            raise ValueError(f"needs {self.config.width * episode} samples, got {budget}")

    def step(self, system: Dynamics, cost: CostFunction, episode: Episode[None]) -> Step[None]:
        rollout, _ = system.candidates(self.config.width)
        costs, metrics = cost.evaluate(rollout)
        pick = costs.argmin(dim=1, keepdim=True)
        return Step(
            chosen=rollout.take(pick),
            commit=1,
            costs=costs.gather(1, pick).squeeze(1).double().cpu(),
            metrics={k: v.gather(1, pick).squeeze(1).double().cpu() for k, v in metrics.items()},
            samples=[self.config.width] * system.batch_size,
            tokens=[1] * system.batch_size,
        )


@pytest.fixture
def greedy() -> Iterator[None]:
    register("greedy_candidates", GreedyCandidates)
    yield
    unregister("greedy_candidates")


def test_a_controller_defined_here_runs_through_compare_from_a_config_file(
    greedy: None, tiny_model_dir, tmp_path, capsys
) -> None:
    config = tmp_path / "mine.yaml"
    config.write_text(
        f"model: {tiny_model_dir('llama')}\nlm: {{max_new_tokens: 4}}\nreward: length\ncontrollers:\n"
        "  mine: {name: greedy_candidates, width: 3}\n"
        "  best_of_n: {name: best_of_n, num_samples: 4}\n"
    )
    out = tmp_path / "run"
    args = ["compare", "--config", str(config), "--num-prompts", "2", "--budgets", "12", "--out", str(out)]
    assert main([*args, "--quiet"]) == 0
    settings = json.loads((out / "settings.json").read_text())
    assert settings["controllers"]["mine"] == {"class": "GreedyCandidates", "config": {"width": 3}}
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    mine = [r for r in records if r["controller"] == "mine"]
    assert len(mine) == 2
    for record in mine:  # width samples per committed token, one token per step
        assert record["samples"] == 3 * record["tokens"] and 1 <= record["tokens"] <= 4
    assert "| mine | 12 |" in capsys.readouterr().out


def test_a_budget_the_new_controller_cannot_keep_is_refused_by_its_own_check(
    greedy: None, tiny_model_dir, tmp_path, capsys
) -> None:
    model = str(tiny_model_dir("llama"))
    args = ["compare", "--model", model, "--max-new-tokens", "4", "--reward", "length", "--controllers",
            "greedy_candidates", "--budgets", "5", "--out", str(tmp_path / "run"), "--quiet"]  # fmt: skip
    assert main(args) == 2
    assert "controller 'greedy_candidates': needs 8 samples, got 5" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_registry_names_presets_and_settings() -> None:
    assert set(CONTROLLERS) >= {"aisp", "cem", "best_of_n", "receding_horizon", "args"}
    assert with_preset({"name": "cem", "sigma": 0.5}) == {
        "name": "cem",
        "sigma": 0.5,
        "num_knots": 1,
        "num_samples": 8,
        "num_iterations": 4,
    }  # fmt: skip  (a given sigma drops the preset's sigma_relative)
    assert with_preset("args") == {"name": "args"}  # no preset: the config's own defaults
    spec = with_preset({"name": "receding_horizon", "inner": {"name": "cem", "elite_fraction": 0.5}})
    assert spec["horizon"] == 16 and spec["inner"]["elite_fraction"] == 0.5
    assert spec["inner"]["sigma_relative"] == CEM.preset["sigma_relative"]
    assert "inner" in settings_of("receding_horizon") and "lambda" in settings_of("aisp")
    with pytest.raises(ValueError, match="the inner controller of receding_horizon must be a Controller"):
        build({"name": "receding_horizon", "horizon": 4, "inner": {"name": "args"}})
    with pytest.raises(ValueError, match="already registered"):
        register("aisp", CEM)
    with pytest.raises(ValueError, match="Planner subclass"):
        register("nope", dict)  # type: ignore[arg-type]


class Branches(SequentialController[GreedyConfig, list[torch.Generator]]):
    """``width`` random-shooting branches per problem, each run to the end in one step."""

    config_class = GreedyConfig

    def begin(self, dynamics, start):  # type: ignore[no-untyped-def]
        owners = [b for b in range(dynamics.batch_size) for _ in range(self.config.width)]
        return owners, make_generators(list(range(len(owners))), len(owners))

    def step(self, system, cost, episode):  # type: ignore[no-untyped-def]
        noise = torch.stack(
            [torch.randn((1, system.horizon, system.control_dim), generator=g, dtype=system.dtype)
             for g in episode.carry]
        )  # fmt: skip
        rollout = system.rollout(noise, episode.carry)
        costs, _ = cost.evaluate(rollout)
        B = system.batch_size
        return Step(rollout, system.horizon, costs[:, 0].double(), {}, [1] * B, [0] * B, episode.carry)


def test_each_problem_keeps_its_best_finished_row() -> None:
    """Several rows per problem finishing in the same step: the answer is the lowest-cost row's."""
    system = PointMass(horizon=5).select([0, 0])  # two problems (the same start)
    cost = GoalCost(goal=[1.0, 1.0])
    result = Branches(width=5).optimize(system, cost)
    rows = make_generators(list(range(10)), 10)
    noise = torch.stack([torch.randn((1, 5, 2), generator=g, dtype=system.dtype) for g in rows])
    costs = cost(system.select([0] * 5 + [1] * 5).rollout(noise, rows))[:, 0].view(2, 5).double()
    assert torch.equal(result.best_cost, costs.min(dim=1).values)
    assert result.budget.samples_per_problem == (5, 5)
    assert not torch.equal(costs.min(dim=1).values, costs[:, 0])  # the first row is not the best


def test_the_gaussian_state_is_split_from_the_loop() -> None:
    """The state holds the proposal, not the best sample; a warm start's best is its own."""
    system = PointMass(horizon=5)
    first = AISP(sigma=1.0, lambda_=1.0, num_samples=16).optimize(
        system, GoalCost(goal=[1.0, 1.0]), num_iterations=2
    )
    state = first.state
    assert isinstance(state, GaussianState) and isinstance(state, PlannerState)
    assert not hasattr(state, "best_cost") and state.iteration == 2
    far = AISP(sigma=1.0, lambda_=1.0, num_samples=16).optimize(
        system, GoalCost(goal=[9.0, 9.0]), state=state
    )
    assert bool(far.best_cost > 10.0)  # measured against its own goal, not the first run's best
    kept = state.select([0, 0])  # repeated indices: resampling
    assert kept.mean.shape[0] == 2 and torch.equal(kept.mean[0], kept.mean[1])


def test_sequential_results_have_no_mean_and_open_loop_ones_do() -> None:
    system = PointMass(horizon=4)
    cost = GoalCost(goal=[1.0, 1.0])
    assert BestOfN(num_samples=2).optimize(system, cost, num_iterations=1).mean is not None
    mpc = RecedingHorizon(AISP(sigma=1.0, num_samples=4, num_iterations=1), horizon=2)
    result = mpc.optimize(system, cost)
    assert result.mean is None and isinstance(result.state.state, GaussianState)


def test_the_command_lines_help_names_every_built_in_controller() -> None:
    from mpc_llm.cli.parser import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    align = sub.choices["align"]  # type: ignore[index]
    text = next(a.help for a in align._actions if a.dest == "controller")
    assert [name for name in CONTROLLERS if name not in text] == []
