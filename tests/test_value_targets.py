"""What value training learns from: TD targets read the next state, and held-out prompts are never
trained on (`mpc_llm.values.train`)."""

from __future__ import annotations

import torch
from value_episodes import episodes

from mpc_llm.values import TrainConfig, ValueMLP, train_value
from mpc_llm.values import train as train_module


def test_td_targets_are_the_next_states_value_and_the_reward_at_the_last_state():
    data = episodes()
    torch.manual_seed(0)
    net = ValueMLP(data.states.shape[1], width=8, depth=1).eval()
    rows = torch.arange(len(data.reward))
    targets = train_module._targets(net, data, rows, "td")
    with torch.no_grad():
        values = net(data.states)
    last = data.last
    torch.testing.assert_close(targets[last], data.reward[last].float())
    torch.testing.assert_close(targets[~last], values[rows[~last] + 1])
    assert not torch.allclose(targets[~last], values[~last])  # the same state's value is not the target
    torch.testing.assert_close(train_module._targets(net, data, rows, "mc"), data.reward.float())


def test_train_value_never_trains_on_a_held_out_prompt(monkeypatch):
    data = episodes(prompts=6)
    seen: list[torch.Tensor] = []
    real = train_module._targets

    def spy(net, data_, rows, target):
        seen.append(rows.clone())
        return real(net, data_, rows, target)

    monkeypatch.setattr(train_module, "_targets", spy)
    _, report = train_value(data, TrainConfig(epochs=3, batch_size=4, heldout_fraction=0.34, target="td"))
    held = set(report["heldout_prompts"])
    trained = {int(p) for rows in seen for p in data.prompt[rows].tolist()}
    assert held and trained and not (held & trained)
    assert len(held) + report["train"]["prompts"] == len(torch.unique(data.prompt))
    assert report["train"]["states"] + report["heldout"]["states"] == len(data.reward)
