"""Value-guided blockwise decoding on tiny random language models, and RE-Control's exact edit."""

from __future__ import annotations

import pytest
import torch
from test_lm_dynamics import teacher_forced_prelogits

from mpc_llm.controllers import BestOfN, REControl, ValueBlockwise, build
from mpc_llm.core import draw_seeds, make_generators
from mpc_llm.dynamics import LMDynamics
from mpc_llm.rewards.rules import CallableReward
from mpc_llm.values import ValueFileError, ValueMLP, save_value

PROMPTS = ["Hello", "Tell me a story"]
LEARNING = {"responses_sampled": 64, "responses_scored": 64, "tokens": 512, "seconds_collect": 3.0}


def count_a(prompt, response):
    return response.count("a") / max(1, len(response))


class Recording:
    """A reward that remembers every (prompt, response) it scored."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, prompt, response):
        self.seen.append((prompt, response))
        return count_a(prompt, response)


@pytest.fixture(scope="module")
def system(tiny_lm):
    model, tok = tiny_lm("llama")
    return LMDynamics(model, tok, PROMPTS, max_new_tokens=9)


@pytest.fixture(scope="module")
def value_dir(system, tmp_path_factory):
    path = tmp_path_factory.mktemp("value") / "v"
    torch.manual_seed(1)
    card = {"model": "tiny-llama", "model_fingerprint": system.model_fingerprint(), "learning_cost": LEARNING}
    save_value(ValueMLP(system.control_dim, width=16, depth=1), card, path)
    return path


def test_each_candidate_is_scored_by_the_value_at_the_state_after_its_block(system, value_dir):
    """Block 4 of 9 tokens: the first block's candidates run 5 tokens (one look-ahead); each score is
    -V of the teacher-forced pre-logit that produced its last token, and the best block is kept."""
    from mpc_llm.values import load_value

    net, _ = load_value(value_dir)
    cd = ValueBlockwise(value=str(value_dir), num_samples=3, block=4)
    result = cd.optimize(system, CallableReward(count_a).as_cost(), seed=3, keep_rollouts=True)
    first = result.history[0]
    rollout = first.rollout
    assert rollout.num_samples == 3 and int(rollout.token_counts().max()) == 5
    for b in range(2):
        for k in range(3):
            L = int(rollout.lengths[b, k])
            z = teacher_forced_prelogits(system, b, rollout.tokens[b, k, :L])[L - 1]
            assert float(first.costs[b, k]) == pytest.approx(-float(net(z.float()).detach()), abs=1e-4)
        best = int(first.costs[b].argmin())
        answer = result.best_rollout.tokens[b, 0]
        assert torch.equal(answer[:4], rollout.tokens[b, best, :4])  # the kept block, look-ahead dropped
    assert first.stats["value_evals"].tolist() == [3.0, 3.0]


def test_the_reward_is_called_only_on_finished_responses_and_picks_the_last_block(system, value_dir):
    reward = Recording()
    cd = ValueBlockwise(value=str(value_dir), block=4)
    result = cd.optimize(system, CallableReward(reward).as_cost(), seed=0, max_samples=3, keep_rollouts=True)
    calls = len(reward.seen)
    assert calls == sum(result.budget.samples_per_problem) and max(result.budget.samples_per_problem) <= 3
    last = result.history[-1]
    assert last.stats["value_evals"].tolist() == [0.0] * last.costs.shape[0]  # the last block: reward only
    for b, prompt in enumerate(PROMPTS):
        scored = [r for p, r in reward.seen if p == prompt]
        answer = result.best_rollout.texts[b][0]
        assert answer in scored
        assert float(result.best_cost[b]) == pytest.approx(-max(count_a(prompt, r) for r in scored))
    tokens = sum(int(rec.token_counts.sum()) for rec in result.history)
    assert tokens == result.budget.tokens


def test_one_block_over_the_whole_episode_is_best_of_k(system, value_dir):
    cost = CallableReward(count_a).as_cost()
    cd = ValueBlockwise(value=str(value_dir), num_samples=4, block=16).optimize(system, cost, seed=5)
    bon = BestOfN(num_samples=4, num_iterations=1).optimize(system, cost, seed=5)
    assert cd.best_rollout.texts == bon.best_rollout.texts
    assert torch.equal(cd.best_cost, bon.best_cost.double())
    assert cd.budget.samples_per_problem == (4, 4)


def test_budgets_in_reward_calls_and_in_tokens(system, value_dir):
    cd = ValueBlockwise(value=str(value_dir), num_samples=2, block=4)
    assert cd.plan_lengths(9) == [5, 5] and cd.plan_lengths(8) == [5, 4]
    assert cd.with_config(block=16).plan_lengths(48) == [17, 17, 16]
    assert cd.candidates(9, max_samples=6) == 6 and cd.candidates(9) == 2
    assert cd.candidates(9, max_tokens=35) == 3
    with pytest.raises(ValueError, match="below one candidate per block"):
        cd.check_budget(9, 9, "tokens")
    result = cd.optimize(system, CallableReward(count_a).as_cost(), seed=0, max_tokens=35)
    assert max(result.budget.tokens_per_problem) <= 35


def test_the_settings_say_what_the_value_cost_to_learn(value_dir):
    for name in ("value_blockwise", "re_control"):
        spec = build({"name": name, "value": str(value_dir)}).spec()
        assert spec["value_learning"]["learning_cost"] == LEARNING
        assert spec["value_learning"]["model"] == "tiny-llama"


def test_a_missing_or_mismatched_value_is_refused(system, tmp_path):
    with pytest.raises(ValueFileError, match="no value file"):
        build({"name": "value_blockwise", "value": str(tmp_path / "none")}).check(9)
    save_value(ValueMLP(system.control_dim + 1, 8, 1), {"model": "x"}, tmp_path / "d")
    with pytest.raises(ValueFileError, match="d="):
        ValueBlockwise(value=str(tmp_path / "d")).optimize(system, CallableReward(count_a).as_cost(), seed=0)
    with pytest.raises(ValueError, match="block"):
        build({"name": "value_blockwise", "value": str(tmp_path / "d"), "block": 0})


def test_re_control_with_a_linear_value_applies_the_closed_form_edit(system, tmp_path):
    """V(z) = w.z: K steps of size s edit every controlled state by K s w, so the decode equals the
    open-loop decode with that constant control, token for token."""
    torch.manual_seed(0)
    net = ValueMLP(system.control_dim, depth=0)
    save_value(net, {"model": "tiny", "model_fingerprint": system.model_fingerprint()}, tmp_path / "lin")
    w = net.net[0].weight.detach()[0]
    K, s = 3, 2.0
    re = REControl(value=str(tmp_path / "lin"), num_steps=K, step_size=s, num_samples=2)
    result = re.optimize(system, CallableReward(count_a).as_cost(), seed=7, keep_rollouts=True)
    rollout = result.history[0].rollout
    on = torch.arange(rollout.tokens.shape[-1]).view(1, 1, -1) < rollout.lengths.unsqueeze(-1)
    expected = (K * s * w).expand_as(rollout.controls[on])
    assert torch.allclose(rollout.controls[on].float(), expected, atol=1e-5)
    streams = make_generators(draw_seeds(make_generators(7, 2)), 2)  # what the loop hands the system
    open_loop = system.rollout((K * s * w).expand(2, 2, system.horizon, -1).contiguous(), streams)
    assert torch.equal(open_loop.tokens, rollout.tokens)


def test_the_summary_says_what_the_value_cost_to_learn(value_dir):
    from mpc_llm.evaluation.summary import learning_costs

    controllers = {"cd": build({"name": "value_blockwise", "value": str(value_dir)}).spec(),
                   "bon": BestOfN(num_samples=4).spec()}  # fmt: skip
    text = learning_costs({"controllers": controllers})
    assert "- cd: a value learned on" in text and "64 responses sampled and scored, 512 tokens, 3 s" in text
    assert "bon" not in text and learning_costs({"controllers": {"bon": controllers["bon"]}}) == ""
