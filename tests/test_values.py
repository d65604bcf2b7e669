"""Learned values over the pre-logit state: training, targets, files, gradient ascent, collection."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mpc_llm.core import make_generators
from mpc_llm.dynamics import IdentityDynamics, LinearCost
from mpc_llm.values import (
    GradientAscentPolicy,
    TrainConfig,
    ValueData,
    ValueFileError,
    ValueMLP,
    load_value,
    read_card,
    save_value,
    spearman,
    split_by_prompt,
    train_value,
)


def identity_linear_data(
    E: int = 1200, d: int = 4, T: int = 2, seed: int = 0
) -> tuple[ValueData, torch.Tensor]:
    """Identity dynamics with a linear reward: the outcome is the control sequence ``V`` itself and the
    reward ``<a, sum_t v_t>`` (`LinearCost` with ``a`` at every step). Take the state at step ``t`` to
    be the sum of the controls so far, ``z_t = sum_{s <= t} v_s``; the controls still to come have mean
    zero, so the value is ``V(z) = E[r | z_t = z] = <a, z>`` at every step (closed form)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.tensor([1.0, -2.0, 0.5, 0.0][:d], dtype=torch.float64)
    system = IdentityDynamics(horizon=T, control_dim=d, batch_size=1)
    controls = torch.randn(1, E, T, d, generator=g, dtype=torch.float64)
    reward = -LinearCost(a)(system.rollout(controls, make_generators(0, 1)))[0]  # (E,)
    states = controls[0].cumsum(dim=1)
    lengths = torch.full((E,), T)
    prompts = torch.arange(E) // 4  # 4 responses per "prompt"
    return ValueData.from_episodes(states, lengths, reward, prompts), a


def test_trained_value_matches_the_closed_form_on_held_out_states():
    """Stated error: on the held-out prompts' states, the RMS error of the trained value against the
    closed form ``<a, z>`` is below 15% of the closed form's standard deviation (Monte Carlo
    targets, so the training labels themselves are noisy where steps remain)."""
    data, a = identity_linear_data()
    net, report = train_value(
        data, TrainConfig(width=64, depth=2, epochs=60, patience=10, lr=3e-3, batch_size=128)
    )
    held = torch.isin(data.prompt, torch.tensor(report["heldout_prompts"]))
    z = data.states[held]
    exact = z.double() @ a
    with torch.no_grad():
        err = (net(z).double() - exact).pow(2).mean().sqrt()
    assert float(err) < 0.15 * float(exact.std()), (float(err), float(exact.std()))
    assert report["heldout"]["spearman"] > 0.7
    assert report["heldout"]["mse"] < report["heldout"]["baseline_mse"]


def test_td_and_mc_targets_agree_on_a_one_step_system():
    data, _ = identity_linear_data(E=200, T=1)
    cfg = TrainConfig(width=16, depth=1, epochs=5)
    mc, r_mc = train_value(data, cfg.model_copy(update={"target": "mc"}))
    td, r_td = train_value(data, cfg.model_copy(update={"target": "td"}))
    with torch.no_grad():
        assert torch.equal(mc(data.states), td(data.states))
    assert r_mc["heldout_mse"] == r_td["heldout_mse"]


def test_td_targets_differ_from_mc_on_longer_responses():
    """The TD path is not MC in disguise: on three-step responses the two train different networks."""
    data, _ = identity_linear_data(E=200, T=3)
    cfg = TrainConfig(width=16, depth=1, epochs=3)
    mc, _ = train_value(data, cfg.model_copy(update={"target": "mc"}))
    td, _ = train_value(data, cfg.model_copy(update={"target": "td"}))
    with torch.no_grad():
        assert not torch.equal(mc(data.states), td(data.states))


def test_split_is_by_prompt_and_never_shares_a_prompt():
    data, _ = identity_linear_data(E=100, T=2)
    train, held = split_by_prompt(data, 0.2, seed=3)
    assert not set(data.prompt[train].tolist()) & set(data.prompt[held].tolist())
    assert len(train) + len(held) == len(data.states)
    one = ValueData.from_episodes(
        torch.zeros(2, 1, 3), torch.ones(2, dtype=torch.long), torch.zeros(2), torch.zeros(2)
    )
    with pytest.raises(ValueError, match="at least 2 prompts"):
        split_by_prompt(one, 0.2, 0)


def test_spearman():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert spearman(x, x * 10) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert spearman(torch.tensor([1.0, 1.0, 2.0]), torch.tensor([0.0, 0.0, 5.0])) == pytest.approx(1.0)


@settings(max_examples=40)
@given(
    seed=st.integers(0, 2**16),
    step=st.floats(1e-6, 1e-3),
    scale=st.floats(0.1, 10.0),
    activation=st.sampled_from(["silu", "tanh", "relu"]),
)
def test_a_small_gradient_step_never_lowers_the_value(seed, step, scale, activation):
    torch.manual_seed(seed)
    net = ValueMLP(6, width=16, depth=2, activation=activation).double()
    z = torch.randn(8, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale
    policy = GradientAscentPolicy(net, num_steps=1, step_size=step)
    v = policy(z, 0)
    with torch.no_grad():
        before, after = net(z), net(z + v)
    assert bool((after >= before - 1e-12).all())
    assert policy.gradient_steps == policy.evaluations == 8


def test_gradient_ascent_moves_along_the_gradient_and_respects_the_norm_bound():
    net = ValueMLP(3, width=4, depth=0).double()  # linear: V(z) = <w, z> + b
    with torch.no_grad():
        net.net[0].weight.copy_(torch.tensor([[1.0, 2.0, 2.0]]))
    z = torch.zeros(2, 3, dtype=torch.float64)
    v = GradientAscentPolicy(net, num_steps=4, step_size=0.5)(z, 0)
    assert torch.allclose(v, torch.tensor([[2.0, 4.0, 4.0]] * 2, dtype=torch.float64))
    bounded = GradientAscentPolicy(net, num_steps=4, step_size=0.5, max_norm=1.5)(z, 0)
    assert torch.allclose(bounded.norm(dim=-1), torch.full((2,), 1.5, dtype=torch.float64))
    assert torch.equal(GradientAscentPolicy(net, num_steps=0, step_size=0.5)(z, 0), torch.zeros_like(z))


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_step_size_must_be_positive(bad):
    with pytest.raises(ValueError, match="step_size must be > 0"):
        GradientAscentPolicy(ValueMLP(2), 1, bad)


def test_save_then_load_gives_the_same_predictions(tmp_path):
    data, _ = identity_linear_data(E=80, T=2)
    net, report = train_value(data, TrainConfig(width=8, depth=2, epochs=2))
    save_value(
        net, {"model": "toy", "model_fingerprint": "abc", "losses": report["train_loss"]}, tmp_path / "v"
    )
    loaded, card = load_value(tmp_path / "v", d=4, fingerprint="abc")
    with torch.no_grad():
        assert torch.equal(net(data.states), loaded(data.states))
    assert card["architecture"] == {"d": 4, "width": 8, "depth": 2, "activation": "relu"}
    assert json.loads((tmp_path / "v" / "card.json").read_text())["model"] == "toy"
    assert not list((tmp_path / "v").glob("*.tmp"))


def test_value_files_for_another_model_or_d_missing_or_corrupt_are_refused(tmp_path):
    save_value(ValueMLP(4, 8, 1), {"model": "toy", "model_fingerprint": "abc"}, tmp_path / "v")
    with pytest.raises(ValueFileError, match=r"d=4 .*has d=5"):
        load_value(tmp_path / "v", d=5)
    with pytest.raises(ValueFileError, match="another model"):
        load_value(tmp_path / "v", d=4, fingerprint="xyz")
    with pytest.raises(ValueFileError, match="no value file"):
        read_card(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "value.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ValueFileError, match="corrupt"):
        load_value(tmp_path / "bad")
    path = tmp_path / "v" / "value.safetensors"
    path.write_bytes(path.read_bytes()[:-7])  # truncated
    with pytest.raises(ValueFileError, match="corrupt"):
        load_value(tmp_path / "v")
