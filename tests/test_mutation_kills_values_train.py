"""Value training (``values/train.py``), the cases its mutation run left untested (issue 36): the
held-out split's bounds, Spearman's correlation with ties and constant input, and what `train_value`
promises about its epochs, early stopping, kept weights, optimiser settings, reproducibility and
report."""

from __future__ import annotations

import math
import time

import pytest
import torch
from value_episodes import episodes

from mpc_llm.values import TrainConfig, ValueData, train_value
from mpc_llm.values.train import spearman, split_by_prompt


def held_prompts(data: ValueData, fraction: float) -> int:
    _, held = split_by_prompt(data, fraction, seed=0)
    return len(torch.unique(data.prompt[held]))


# --------------------------------------------------------------------------- the split


def test_two_prompts_split_one_and_one_and_fewer_are_refused_with_the_reason() -> None:
    data = episodes(prompts=2)
    train, held = split_by_prompt(data, 0.2, seed=0)
    assert len(torch.unique(data.prompt[train])) == len(torch.unique(data.prompt[held])) == 1
    with pytest.raises(
        ValueError, match=r"^a held-out split by prompt needs value data on at least 2 prompts$"
    ):
        split_by_prompt(episodes(prompts=1), 0.2, seed=0)


def test_the_held_out_prompts_are_at_least_one_and_at_most_all_but_one() -> None:
    assert held_prompts(episodes(prompts=3), 0.9) == 2  # round(2.7) = 3, capped at all but one
    assert held_prompts(episodes(prompts=5), 0.05) == 1  # round(0.25) = 0, raised to one
    assert held_prompts(episodes(prompts=10), 0.3) == 3  # in between: the rounded fraction


# --------------------------------------------------------------------------- Spearman


def test_spearman_of_a_constant_is_nan_and_of_two_points_plus_or_minus_one() -> None:
    assert math.isnan(spearman(torch.ones(4), torch.arange(4.0)))
    assert math.isnan(spearman(torch.arange(4.0), torch.full((4,), 2.0)))
    assert spearman(torch.tensor([0.0, 1.0]), torch.tensor([3.0, 5.0])) == pytest.approx(1.0)
    assert spearman(torch.tensor([0.0, 1.0]), torch.tensor([5.0, 3.0])) == pytest.approx(-1.0)


def test_spearman_gives_tied_values_their_average_rank() -> None:
    """Ranks of (1, 2, 2, 3) are (1, 2.5, 2.5, 4); against (1, 2, 3, 4), centred: (-1.5, 0, 0, 1.5)
    and (-1.5, -0.5, 0.5, 1.5), so rho = 4.5 / sqrt(4.5 * 5) = 3 / sqrt(10)."""
    x, y = torch.tensor([1.0, 2.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert spearman(x, y) == pytest.approx(3 / math.sqrt(10))
    assert spearman(y, x) == pytest.approx(3 / math.sqrt(10))


# --------------------------------------------------------------------------- train_value


def test_a_run_that_cannot_move_keeps_its_first_epoch_and_stops_after_patience_more() -> None:
    """At a learning rate of 1e-30 no float32 weight changes: every epoch's held-out error equals the
    first's, an equal error is no improvement, and the run stops ``patience`` epochs after epoch 1."""
    _, report = train_value(
        episodes(6), TrainConfig(width=8, depth=1, epochs=20, patience=3, lr=1e-30, batch_size=5)
    )
    assert len(set(report["heldout_mse"])) == 1
    assert report["best_epoch"] == 1 and report["epochs_run"] == 4 == len(report["heldout_mse"])


def test_an_epochs_train_loss_is_the_mean_squared_error_over_every_training_state() -> None:
    """With weights that never move, each epoch's train loss is the network's MSE over all the training
    states (batches of 6 over an uneven count: each batch weighted by its size)."""
    data = episodes(6)
    net, report = train_value(data, TrainConfig(width=8, depth=1, epochs=2, lr=1e-30, batch_size=6))
    train = ~torch.isin(data.prompt, torch.tensor(report["heldout_prompts"]))
    assert int(train.sum()) % 6 != 0
    with torch.no_grad():
        mse = float((net(data.states[train]).double() - data.reward[train]).pow(2).mean())
    assert report["train_loss"] == pytest.approx([mse, mse], rel=1e-5)


def test_without_early_stopping_a_run_trains_exactly_its_epochs_and_reports_each_to_progress() -> None:
    calls: list[tuple] = []
    _, report = train_value(
        episodes(6), TrainConfig(width=8, depth=1, epochs=3, patience=10, lr=1e-2, batch_size=8),
        progress=lambda *args: calls.append(args),
    )  # fmt: skip
    assert report["epochs_run"] == 3 == len(report["train_loss"]) == len(report["heldout_mse"])
    assert calls == list(zip([1, 2, 3], report["train_loss"], report["heldout_mse"], strict=True))


def test_the_returned_network_is_the_best_epochs_not_the_last() -> None:
    """A large step on random states overfits: the held-out error falls then rises, and the network
    returned (and reported) is the one of the lowest held-out error."""
    _, report = train_value(
        episodes(6), TrainConfig(width=16, depth=1, epochs=6, patience=20, lr=0.05, batch_size=4)
    )
    errors = report["heldout_mse"]
    assert report["best_epoch"] < len(errors) and min(errors) < errors[-1]
    assert errors[report["best_epoch"] - 1] == min(errors)
    assert report["heldout"]["mse"] == pytest.approx(min(errors), rel=1e-6)


def test_a_run_that_never_improves_keeps_the_initial_network_and_stops_after_patience() -> None:
    """At a learning rate of 1e30 the first step overflows: every held-out error is NaN, so no epoch
    beats the initial network (best epoch 0), which is returned, finite."""
    data = episodes(6)
    net, report = train_value(
        data, TrainConfig(width=8, depth=2, epochs=20, patience=2, lr=1e30, batch_size=5)
    )
    assert all(math.isnan(e) for e in report["heldout_mse"])
    assert report["best_epoch"] == 0 and report["epochs_run"] == 2
    with torch.no_grad():
        assert torch.isfinite(net(data.states)).all()


def test_the_activation_and_weight_decay_reach_the_network_and_the_optimiser() -> None:
    data = episodes(6)
    net, _ = train_value(data, TrainConfig(width=8, depth=1, epochs=1, activation="tanh"))
    assert net.activation == "tanh" and any(isinstance(m, torch.nn.Tanh) for m in net.modules())

    def weight_norm(weight_decay: float) -> float:
        cfg = TrainConfig(width=16, depth=1, epochs=1, lr=0.05, batch_size=2, weight_decay=weight_decay)
        net, _ = train_value(data, cfg)
        return float(sum(p.detach().pow(2).sum() for p in net.parameters()).sqrt())

    assert weight_norm(100.0) < 0.5 * weight_norm(0.0)  # strong decay pulls the weights to zero


def test_training_is_reproducible_whatever_else_draws_from_torchs_global_generator() -> None:
    """The minibatch order comes from the run's own seeded generator: a progress callback that draws
    random numbers between epochs changes nothing."""
    data = episodes(6)
    cfg = TrainConfig(width=8, depth=1, epochs=3, patience=10, lr=1e-2, batch_size=4)
    quiet, _ = train_value(data, cfg)
    noisy, _ = train_value(data, cfg, progress=lambda *_: torch.rand(100))
    with torch.no_grad():
        assert torch.equal(quiet(data.states), noisy(data.states))


def test_the_report_names_its_target_epochs_training_responses_and_seconds() -> None:
    data = episodes(prompts=5, responses=3)
    tic = time.perf_counter()
    _, report = train_value(data, TrainConfig(width=8, depth=1, epochs=2, patience=10, target="td"))
    wall = time.perf_counter() - tic
    assert report["target"] == "td" and report["epochs_run"] == 2 and report["best_epoch"] in (1, 2)
    trained_prompts = 5 - len(report["heldout_prompts"])
    assert (
        report["train"]["responses"] == 3 * trained_prompts and report["train"]["prompts"] == trained_prompts
    )
    assert 0 < report["seconds"] <= wall
