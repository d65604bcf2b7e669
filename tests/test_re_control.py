"""RE-Control and value collection on tiny random language models."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mpc_llm.controllers import BestOfN, REControl, build
from mpc_llm.core import draw_seeds, make_generators
from mpc_llm.dynamics import LMDynamics
from mpc_llm.rewards.rules import CallableReward
from mpc_llm.values import (
    GradientAscentPolicy,
    TrainConfig,
    ValueFileError,
    ValueMLP,
    collect,
    load_data,
    save_value,
    train_value,
)

PROMPTS = ["Hello", "Hi there", "Tell me a story", "What is two plus two", "Good morning", "Bye"]


def count_a(prompt, response):
    """A reward any tiny model can move: the share of the letter 'a' in the response."""
    return response.count("a") / max(1, len(response))


@pytest.fixture(scope="module")
def system(tiny_lm):
    model, tok = tiny_lm("llama")
    return LMDynamics(model, tok, PROMPTS[:2], max_new_tokens=8, return_logprobs=True)


@pytest.fixture(scope="module")
def value_dir(system, tmp_path_factory):
    path = tmp_path_factory.mktemp("value") / "v"
    torch.manual_seed(0)
    net = ValueMLP(system.control_dim, width=16, depth=1)
    save_value(net, {"model": "tiny-llama", "model_fingerprint": system.model_fingerprint()}, path)
    return path


def test_zero_steps_decode_exactly_as_the_base_model(system, value_dir):
    re = REControl(value=str(value_dir), num_steps=0, num_samples=3)
    ours = re.optimize(system, CallableReward(count_a).as_cost(), seed=5, keep_rollouts=True)
    base = BestOfN(num_samples=3, num_iterations=1).optimize(
        system, CallableReward(count_a).as_cost(), seed=5, keep_rollouts=True
    )
    assert torch.equal(ours.history[0].rollout.tokens, base.history[0].rollout.tokens)
    assert ours.history[0].rollout.texts == base.history[0].rollout.texts
    assert float(ours.best_controls.abs().max()) == 0.0


def test_gradient_steps_change_the_decode_and_record_the_applied_controls(system, value_dir):
    cost = CallableReward(count_a).as_cost()
    re = REControl(value=str(value_dir), num_steps=3, step_size=50.0, num_samples=2)
    result = re.optimize(system, cost, seed=5, keep_rollouts=True)
    rollout = result.history[0].rollout
    streams = make_generators(draw_seeds(make_generators(5, 2)), 2)  # what the loop hands the system
    base = system.rollout(torch.zeros(2, 2, 1, system.control_dim), streams)
    assert not torch.equal(rollout.tokens, base.tokens)
    B, N, T, d = rollout.controls.shape
    assert (B, N, d) == (2, 2, system.control_dim) and rollout.tokens.shape[-1] == T
    past_end = torch.arange(T).view(1, 1, T) >= rollout.lengths.unsqueeze(-1)
    assert float(rollout.controls[past_end].abs().sum()) == 0.0
    assert float(rollout.controls[~past_end].norm(dim=-1).min()) > 0
    # closeness measured from the recorded controls equals the decode's own log-ratio
    kl = system.closeness_to_base(rollout, rollout.controls)["kl_estimate"]
    assert torch.allclose(kl.float(), rollout.kl_to_base(), atol=1e-4)
    assert result.history[0].stats["grad_steps_per_token"].tolist() == [3.0, 3.0]


def test_the_policy_counts_value_evaluations_per_token(system, value_dir):
    from mpc_llm.values import load_value

    net, _ = load_value(value_dir)
    policy = GradientAscentPolicy(net, num_steps=4, step_size=1.0, max_norm=0.5)
    zeros = torch.zeros(2, 3, system.horizon, system.control_dim)
    rollout = system.rollout_feedback(zeros, make_generators(0, 2), policy)
    assert policy.calls == 2 * 3 * rollout.tokens.shape[-1]
    assert policy.evaluations == policy.gradient_steps == 4 * policy.calls
    assert float(rollout.controls.norm(dim=-1).max()) <= 0.5 + 1e-5


def test_re_control_is_registered_and_validates_its_settings(value_dir):
    assert isinstance(build({"name": "re_control", "value": str(value_dir)}), REControl)
    with pytest.raises(ValueError, match="step_size"):
        build({"name": "re_control", "value": str(value_dir), "step_size": 0})
    with pytest.raises(ValueError, match="step_size"):
        build({"name": "re_control", "value": str(value_dir), "step_size": -0.5})


def test_a_value_for_another_model_or_d_is_refused(system, tiny_lm, tmp_path):
    other_model, tok = tiny_lm("qwen2")
    other = LMDynamics(other_model, tok, PROMPTS[:1], max_new_tokens=4)
    card = {"model": "qwen2", "model_fingerprint": other.model_fingerprint()}
    save_value(ValueMLP(other.control_dim, 8, 1), card, tmp_path / "q")
    with pytest.raises(ValueFileError, match="another model"):
        REControl(value=str(tmp_path / "q")).optimize(system, CallableReward(count_a).as_cost(), seed=0)
    save_value(ValueMLP(system.control_dim + 1, 8, 1), {"model": "x"}, tmp_path / "d")
    with pytest.raises(ValueFileError, match="d="):
        REControl(value=str(tmp_path / "d")).optimize(system, CallableReward(count_a).as_cost(), seed=0)
    with pytest.raises(ValueFileError, match="no value file"):
        REControl(value=str(tmp_path / "none")).check(8)


def test_toy_systems_refuse_state_feedback(value_dir):
    from mpc_llm.dynamics import IdentityDynamics

    system = IdentityDynamics(horizon=2, control_dim=3)
    with pytest.raises(ValueError, match="no state feedback"):
        system.rollout_feedback(
            torch.zeros(1, 1, 2, 3), make_generators(0, 1), GradientAscentPolicy(ValueMLP(3), 1, 1.0)
        )


# ----------------------------------------------------------------------------------- collection
def _collect(lm, folder, reward, prompts=PROMPTS, **kw):
    return collect(lm.with_prompts, prompts, reward.as_cost(), folder, samples_per_prompt=3, seed=1,
                   chunk_size=2, settings={"model": "tiny"}, **kw)  # fmt: skip


def test_collection_records_base_states_and_rewards(system, tmp_path):
    counts = _collect(system, tmp_path / "data", CallableReward(count_a))
    assert counts == {"chunks": 3, "responses": 18, "skipped_nan": 0, "tokens": counts["tokens"]}
    data = load_data(tmp_path / "data")
    assert data.num_responses == 18 and len(data.states) == counts["tokens"]
    # the states are the base model's pre-logits: a fresh base decode of prompt 0 (seed 1 * 1_000_003)
    # gives the same tokens, and its first state is the first stored one (float16 storage)
    lm = system.with_prompts(PROMPTS[:1])
    from mpc_llm.values import RecordStates

    rec = RecordStates()
    out = lm.rollout_feedback(
        torch.zeros(1, 3, lm.horizon, lm.control_dim), make_generators([1_000_003], 1), rec
    )
    plain = lm.rollout(torch.zeros(1, 3, 1, lm.control_dim), make_generators([1_000_003], 1))
    assert torch.equal(out.tokens, plain.tokens)
    assert torch.allclose(rec.states[0][0], data.states[0], atol=1e-2, rtol=1e-2)
    first = data.response == 0
    assert torch.equal(data.step[first], torch.arange(int(first.sum())))
    assert bool(data.last[first][-1]) and int(data.last[first].sum()) == 1


def test_nan_rewards_are_skipped_and_counted(system, tmp_path):
    calls = {"n": 0}

    def sometimes_nan(prompt, response):
        calls["n"] += 1
        return math.nan if calls["n"] % 3 == 0 else count_a(prompt, response)

    counts = _collect(system, tmp_path / "data", CallableReward(sometimes_nan))
    assert counts["skipped_nan"] > 0 and counts["responses"] + counts["skipped_nan"] == 18
    data = load_data(tmp_path / "data")
    assert data.skipped_nan == counts["skipped_nan"] and bool(torch.isfinite(data.reward).all())
    with pytest.raises(ValueError, match="NaN"):
        _collect(system, tmp_path / "all_nan", CallableReward(lambda p, r: math.nan))


def test_an_interrupted_collection_resumes_and_loses_nothing(system, tmp_path):
    whole = load_data_after(_collect(system, tmp_path / "whole", CallableReward(count_a)), tmp_path / "whole")
    calls = {"n": 0}

    def fails_in_chunk_two(prompt, response):
        calls["n"] += 1
        if calls["n"] > 7:
            raise KeyboardInterrupt
        return count_a(prompt, response)

    with pytest.raises(KeyboardInterrupt):
        _collect(system, tmp_path / "part", CallableReward(fails_in_chunk_two))
    assert len(list((tmp_path / "part").glob("chunk-*.safetensors"))) == 1
    _collect(system, tmp_path / "part", CallableReward(count_a))
    part = load_data(tmp_path / "part")
    for name in ("states", "reward", "step", "last", "prompt", "response"):
        assert torch.equal(getattr(whole, name), getattr(part, name)), name
    with pytest.raises(ValueError, match="other settings"):
        collect(system.with_prompts, PROMPTS, CallableReward(count_a).as_cost(), tmp_path / "part",
                samples_per_prompt=4, seed=1, chunk_size=2, settings={"model": "tiny"})  # fmt: skip


def load_data_after(_, folder):
    return load_data(folder)


def test_a_value_trained_on_collected_states_steers_toward_its_reward(system, tmp_path):
    """End to end on a tiny model: collect, train, save, and RE-Control runs with the file."""
    _collect(system, tmp_path / "data", CallableReward(count_a))
    net, report = train_value(load_data(tmp_path / "data"), TrainConfig(width=16, depth=1, epochs=3))
    save_value(net, {"model": "tiny", "model_fingerprint": system.model_fingerprint()}, tmp_path / "v")
    result = REControl(value=str(tmp_path / "v"), num_steps=2, step_size=0.5, num_samples=2).optimize(
        system, CallableReward(count_a).as_cost(), seed=0
    )
    assert result.budget.samples == 2 and math.isfinite(report["heldout"]["mse"])


def test_compare_records_re_control_beside_best_of_n_with_closeness_and_compute(system, value_dir, tmp_path):
    from mpc_llm.evaluation.compare import compare

    controllers = {
        "best_of_n": BestOfN(num_samples=2, num_iterations=1),
        "re_control": REControl(value=str(value_dir), num_steps=2, step_size=20.0, num_samples=2),
    }
    compare(PROMPTS[:2], controllers, system.with_prompts, CallableReward(count_a).as_cost(),
            budgets=[1, 2], out_dir=tmp_path / "run", progress=False)  # fmt: skip
    lines = (tmp_path / "run" / "records.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    ours = [r for r in records if r["controller"] == "re_control"]
    assert len(ours) == 4 and all(r["grad_steps_per_token"] == 2.0 for r in ours)
    assert all(r["kl_estimate"] > 0 for r in ours)  # the recorded edits are what closeness measures
    base = [r for r in records if r["controller"] == "best_of_n"]
    assert all(r["kl_estimate"] == 0 and "grad_steps_per_token" not in r for r in base)
