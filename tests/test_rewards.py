"""Reward interface, algebra, rule and callable rewards, VADER, cost terms, and the registry."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mpc_llm.controllers import AISP, BestOfN
from mpc_llm.core import CostFunction, Dynamics, Rollout
from mpc_llm.lm import LMRollout
from mpc_llm.rewards import (
    REWARDS,
    CallableReward,
    ControlCost,
    KeywordReward,
    KLCost,
    LengthReward,
    MissingDependencyError,
    RegexReward,
    Reward,
    RewardCost,
    RewardError,
    RewardSum,
    VaderReward,
    make_reward,
    render_prompt,
    reward_from_spec,
    to_messages,
)


def lm_rollout(texts: list[list[str]], prompts: list, d: int = 3, tau: int = 2) -> LMRollout:
    B, N = len(texts), len(texts[0])
    return LMRollout(
        controls=torch.zeros(B, N, tau, d),
        tokens=torch.zeros(B, N, 1, dtype=torch.long),
        lengths=torch.ones(B, N, dtype=torch.long),
        texts=texts,
        prompts=prompts,
    )


# Simple deterministic rewards for property tests.
RULES: list[Reward] = [
    LengthReward("chars"),
    LengthReward("words", target=3),
    RegexReward(r"[aeiou]", count=True),
    KeywordReward(["ab", "b"], mode="count", whole_words=False),
    CallableReward(lambda p, r: float(len(p)) - r.count("a"), name="prompt_minus_a"),
]
texts = st.lists(st.text(alphabet="ab c!", max_size=12), min_size=1, max_size=6)
weights = st.floats(-100, 100, allow_nan=False)
rule = st.sampled_from(RULES)


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-4)


# --------------------------------------------------------------------------- algebra
@settings(max_examples=60, deadline=None)
@given(r1=rule, r2=rule, a=weights, b=weights, responses=texts)
def test_weighted_sum_is_linear(r1: Reward, r2: Reward, a: float, b: float, responses: list[str]) -> None:
    prompts = [f"p{i}" for i in range(len(responses))]
    s1, s2 = r1.score(prompts, responses), r2.score(prompts, responses)
    close((a * r1 + b * r2).score(prompts, responses), a * s1 + b * s2)
    close((r1 * a - r2 * b).score(prompts, responses), a * s1 - b * s2)
    close((r1 + r2).score(prompts, responses), s1 + s2)
    close((r1 - r2).score(prompts, responses), s1 - s2)
    if abs(a) > 1e-3:
        close((r1 / a).score(prompts, responses), s1 / a)


@settings(max_examples=40, deadline=None)
@given(r=rule, a=weights, responses=texts)
def test_negation_and_scaling(r: Reward, a: float, responses: list[str]) -> None:
    prompts = ["q"] * len(responses)
    s = r.score(prompts, responses)
    close((-r).score(prompts, responses), -s)
    neg = -r
    close((-neg).score(prompts, responses), s)  # -(-r) == r
    close((a * (-r)).score(prompts, responses), -a * s)
    close(sum([r, r, r]).score(prompts, responses), 3 * s)  # type: ignore[union-attr]


@settings(max_examples=40, deadline=None)
@given(r1=rule, r2=rule, a=weights, scale=st.floats(0.01, 10), responses=texts)
def test_reward_cost_is_negated_scaled_reward(
    r1: Reward, r2: Reward, a: float, scale: float, responses: list[str]
) -> None:
    rollout = lm_rollout([responses, list(reversed(responses))], ["x", [{"role": "user", "content": "yz"}]])
    reward = r1 + a * r2
    expected = torch.stack(
        [reward.score(rollout.prompts[b], rollout.texts[b]) for b in range(2)]  # one prompt for all
    )
    close(reward.score_rollout(rollout), expected)
    close(reward.as_cost(scale)(rollout), -scale * expected)
    close(RewardCost(reward, scale)(rollout), -scale * expected)
    close((2.0 * reward.as_cost() - reward.as_cost())(rollout), -expected)


def test_sums_flatten_and_repr() -> None:
    r1, r2 = LengthReward(), RegexReward("a")
    total = 2 * (r1 + 3 * r2) - r1
    assert isinstance(total, RewardSum)
    assert [w for w, _ in total.terms] == [2.0, 6.0, -1.0]
    assert "LengthReward" in repr(total) and "RegexReward" in repr(total)


def test_rewards_and_costs_do_not_mix_silently() -> None:
    reward, control = LengthReward(), ControlCost(sigma=1.0)
    for make in (
        lambda: reward + control,
        lambda: control + reward,
        lambda: reward - control,
        lambda: control - reward,
        lambda: -reward + control,
    ):
        with pytest.raises(TypeError, match="as_cost"):
            make()
    with pytest.raises(TypeError, match=r"as_cost\(\)"):
        reward(lm_rollout([["a"]], ["p"]))  # a reward handed to a controller as its cost
    with pytest.raises(TypeError):
        reward * reward  # type: ignore[operator]
    with pytest.raises(ValueError, match="finite"):
        reward * math.nan
    with pytest.raises(TypeError):
        reward * "2"  # type: ignore[operator]
    assert isinstance(reward.as_cost() + control, CostFunction)


# --------------------------------------------------------------------------- interface
def test_score_inputs() -> None:
    r = LengthReward("chars")
    assert r.score("prompt", ["ab", "abc"]).tolist() == [2.0, 3.0]  # one prompt for all responses
    chat = [{"role": "user", "content": "hi"}]
    assert r.score(chat, ["ab", "abc"]).tolist() == [2.0, 3.0]
    assert r.score([chat, "x"], ["a", "bb"]).tolist() == [1.0, 2.0]
    assert r.score("p", "abcd").tolist() == [4.0]
    assert r.score([], []).shape == (0,)
    with pytest.raises(ValueError, match="2 prompts but 3 responses"):
        r.score(["a", "b"], ["a", "b", "c"])
    with pytest.raises(TypeError, match="strings"):
        r.score(["a"], [3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="batch_size"):
        CallableReward(lambda p, r: 0.0, batch_size=0)


def test_chunks_respect_batch_size() -> None:
    seen: list[int] = []

    def batch_fn(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        seen.append(len(responses))
        return [float(len(r)) for r in responses]

    reward = CallableReward(batch_fn, batched=True, batch_size=3)
    out = reward.score("p", ["a" * i for i in range(8)])
    assert out.tolist() == [float(i) for i in range(8)] and seen == [3, 3, 2]
    assert out.dtype == torch.float32 and out.device.type == "cpu"


def test_score_rollout_dedupes_identical_responses() -> None:
    calls: list[str] = []

    def fn(prompt: str, response: str) -> float:
        calls.append(response)
        return float(len(response) + len(prompt))

    rollout = lm_rollout([["aa", "b", "aa"], ["aa", "aa", "aa"]], ["x", "yy"])
    scores = CallableReward(fn).score_rollout(rollout)
    assert scores.tolist() == [[3.0, 2.0, 3.0], [4.0, 4.0, 4.0]]
    assert sorted(calls) == ["aa", "aa", "b"]  # once per distinct (problem, response)


def test_score_rollout_needs_text() -> None:
    with pytest.raises(TypeError, match="LMRollout"):
        LengthReward().as_cost()(Rollout(controls=torch.zeros(1, 2, 1, 1)))


def test_reward_cost_follows_the_controls_device_and_is_float32() -> None:
    rollout = lm_rollout([["a", "bb"]], ["p"])
    cost = LengthReward("chars").as_cost(2.0)(rollout)
    assert cost.dtype == torch.float32 and cost.device == rollout.controls.device
    assert cost.tolist() == [[-2.0, -4.0]]


def test_prompt_rendering() -> None:
    assert render_prompt("hi") == "hi"
    assert render_prompt([{"role": "user", "content": "hi"}]) == "hi"
    conv = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "how are you?"},
    ]
    assert render_prompt(conv) == "user: hi\n\nassistant: hello\n\nuser: how are you?"
    assert to_messages(conv, "fine")[-1] == {"role": "assistant", "content": "fine"}
    assert len(conv) == 3  # not mutated
    with pytest.raises(TypeError):
        render_prompt(3)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- rules
def test_rule_rewards() -> None:
    responses = ["Hello world!", "hello", "", "say HELLO hello please"]
    assert LengthReward("words").score("p", responses).tolist() == [2.0, 1.0, 0.0, 4.0]
    assert LengthReward("chars", target=5).score("p", responses).tolist() == [-7.0, 0.0, -5.0, -17.0]
    assert RegexReward(r"hello").score("p", responses).tolist() == [0.0, 1.0, 0.0, 1.0]
    assert RegexReward(r"(?i)hello", count=True).score("p", responses).tolist() == [1.0, 1.0, 0.0, 2.0]
    kw = KeywordReward(["hello", "please"])
    assert kw.score("p", responses).tolist() == [0.5, 0.5, 0.0, 1.0]
    assert KeywordReward(["hello"], mode="count").score("p", responses).tolist() == [1.0, 1.0, 0.0, 2.0]
    assert KeywordReward(["hello"], case_sensitive=True, mode="any").score("p", responses).tolist() == [
        0.0,
        1.0,
        0.0,
        1.0,
    ]
    assert KeywordReward("ell", whole_words=False).score("p", responses).tolist() == [1.0, 1.0, 0.0, 1.0]
    assert KeywordReward("ell").score("p", responses).tolist() == [0.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="regular expression"):
        RegexReward("(")
    with pytest.raises(ValueError, match="keywords"):
        KeywordReward([])
    with pytest.raises(ValueError, match="unit"):
        LengthReward("tokens")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- callables
def test_callable_exceptions_name_the_reward_and_input() -> None:
    def picky(prompt: str, response: str) -> float:
        if response == "boom":
            raise KeyError("no such key")
        return 1.0

    reward = CallableReward(picky, batch_size=2)
    with pytest.raises(RewardError, match=r"'picky' raised KeyError on input 3 \(response 'boom'\)") as info:
        reward.score("p", ["a", "b", "c", "boom"])
    assert isinstance(info.value.__cause__, KeyError)

    def batch_boom(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        if "boom" in responses:
            raise ValueError("bad batch")
        return [0.0] * len(responses)

    with pytest.raises(RewardError, match=r"'batch_boom' raised ValueError on the batch of inputs 2\.\.3"):
        CallableReward(batch_boom, batched=True, batch_size=2).score("p", ["a", "b", "c", "boom"])


def test_callable_bad_return_values() -> None:
    with pytest.raises(TypeError, match=r"returned str for input 0"):
        CallableReward(lambda p, r: "high").score("p", ["a"])
    with pytest.raises(TypeError, match=r"returned NoneType"):
        CallableReward(lambda p, r: None).score("p", ["a"])
    with pytest.raises(ValueError, match=r"shape \(1,\) for 2 inputs"):
        CallableReward(lambda ps, rs: [1.0], batched=True).score("p", ["a", "b"])
    with pytest.raises(ValueError, match=r"shape \(2, 1\)"):
        CallableReward(lambda ps, rs: torch.zeros(len(rs), 1), batched=True).score("p", ["a", "b"])
    assert CallableReward(lambda p, r: torch.tensor(2.5)).score("p", ["a"]).tolist() == [2.5]


def test_callable_by_import_path() -> None:
    reward = make_reward("callable", fn="math:fabs")  # any importable function
    assert isinstance(reward, CallableReward)
    with pytest.raises(ValueError, match=r"package\.module:function"):
        CallableReward("math.fabs")
    with pytest.raises(ValueError, match="cannot import"):
        CallableReward("math:no_such_function")


def test_nan_passes_through_as_nan() -> None:
    reward = CallableReward(lambda p, r: math.nan if r == "?" else 1.0)
    scores = reward.score("p", ["a", "?"])
    assert scores[0] == 1.0 and math.isnan(scores[1])
    cost = (0.5 * reward + LengthReward()).as_cost()(lm_rollout([["a", "?"]], ["p"]))
    assert cost[0, 0] == -1.5 and math.isnan(cost[0, 1])


class NumberText(Dynamics):
    """A toy text system: the response is the first control coordinate printed as a number."""

    def __init__(self, batch_size: int = 2) -> None:
        self._b = batch_size

    batch_size = property(lambda self: self._b)  # type: ignore[assignment]
    horizon = property(lambda self: 1)  # type: ignore[assignment]
    control_dim = property(lambda self: 1)  # type: ignore[assignment]

    def rollout(self, controls: torch.Tensor, generators: Sequence[torch.Generator]) -> LMRollout:
        B, N = controls.shape[:2]
        texts = [[f"{float(controls[b, n, 0, 0]):.6f}" for n in range(N)] for b in range(B)]
        return LMRollout(
            controls=controls,
            tokens=torch.zeros(B, N, 1, dtype=torch.long),
            lengths=torch.ones(B, N, dtype=torch.long),
            texts=texts,
            prompts=[f"problem {b}" for b in range(B)],
        )


def test_nan_rewards_get_zero_weight_in_a_controller_run() -> None:
    def closeness_to_one(prompt: str, response: str) -> float:
        x = float(response)
        return math.nan if x < 0 else -((x - 1.0) ** 2)  # cannot score negative numbers

    cost = CallableReward(closeness_to_one).as_cost() + ControlCost(sigma=10.0)
    with pytest.warns(RuntimeWarning, match="NaN or infinite"):
        result = AISP(sigma=1.0, lambda_=0.1, num_samples=16).optimize(NumberText(), cost, num_iterations=3)
    assert torch.isfinite(result.best_cost).all()
    assert all(float(t[0]) >= 0 for t in result.best_rollout.texts)
    assert torch.isfinite(result.mean).all()

    always_nan = CallableReward(lambda p, r: math.nan, name="broken").as_cost()
    with pytest.raises(ValueError, match="every cost is NaN"):
        BestOfN(num_samples=4).optimize(NumberText(), always_nan, num_iterations=1)


# --------------------------------------------------------------------------- VADER
SENTENCES = [
    "VADER is smart, handsome, and funny.",
    "The movie was not good at all :(",
    "It is a table.",
    "I absolutely LOVE this!!!",
    "",
]


def test_vader_matches_the_library() -> None:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    for field in ("compound", "pos", "neg", "neu"):
        expected = torch.tensor([analyzer.polarity_scores(s)[field] for s in SENTENCES])
        got = VaderReward(field, batch_size=2).score("ignored prompt", SENTENCES)
        torch.testing.assert_close(got, expected)
    with pytest.raises(ValueError, match="field"):
        VaderReward("happy")  # type: ignore[arg-type]


def test_vader_missing_dependency_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vaderSentiment.vaderSentiment", None)
    with pytest.raises(MissingDependencyError, match=r"vaderSentiment.*pip install 'mpc_llm\[vader\]'"):
        VaderReward()


# --------------------------------------------------------------------------- cost terms
@settings(max_examples=30, deadline=None)
@given(
    sigma=st.floats(0.1, 10),
    B=st.integers(1, 3),
    N=st.integers(1, 4),
    tau=st.integers(1, 4),
    d=st.integers(1, 5),
    seed=st.integers(0, 1000),
)
def test_control_cost_is_quadratic(sigma: float, B: int, N: int, tau: int, d: int, seed: int) -> None:
    u = torch.randn(B, N, tau, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    rollout = Rollout(controls=u)
    expected = torch.stack(
        [
            torch.stack([sum(u[b, n, t].dot(u[b, n, t]) for t in range(tau)) for n in range(N)])
            for b in range(B)
        ]
    ) / (2 * sigma**2)
    cost = ControlCost(sigma)(rollout)
    assert cost.shape == (B, N)
    torch.testing.assert_close(cost, expected)
    torch.testing.assert_close((3.0 * ControlCost(sigma) - ControlCost(sigma))(rollout), 2 * expected)


def test_control_cost_computes_in_float32_for_half_controls() -> None:
    cost = ControlCost(1.0)(Rollout(controls=torch.full((1, 1, 300, 4), 10.0, dtype=torch.bfloat16)))
    assert cost.dtype == torch.float32 and cost.item() == 60000.0
    with pytest.raises(ValueError, match="sigma"):
        ControlCost(0.0)


def test_kl_cost_reads_the_rollout_log_probs() -> None:
    base = lm_rollout([["a", "b"]], ["p"])
    logprobs = torch.tensor([[[-1.0, -2.0, -9.0], [-0.5, -0.5, -0.5]]])
    base_logprobs = torch.tensor([[[-1.5, -2.5, -1.0], [-1.0, -1.0, -1.0]]])
    rollout = LMRollout(
        controls=base.controls,
        tokens=torch.zeros(1, 2, 3, dtype=torch.long),
        lengths=torch.tensor([[2, 3]]),
        texts=base.texts,
        prompts=base.prompts,
        logprobs=logprobs,
        base_logprobs=base_logprobs,
    )
    torch.testing.assert_close(KLCost()(rollout), torch.tensor([[1.0, 1.5]]))
    combined = LengthReward("chars").as_cost() + KLCost(beta=0.5) + ControlCost(1.0)
    torch.testing.assert_close(combined(rollout), torch.tensor([[-0.5, -0.25]]))
    with pytest.raises(ValueError, match="log-probs"):
        KLCost()(base)
    with pytest.raises(TypeError, match="LMRollout"):
        KLCost()(Rollout(controls=torch.zeros(1, 1, 1, 1)))


# --------------------------------------------------------------------------- registry
def test_registry() -> None:
    assert {"vader", "hf", "judge", "embedding", "length", "regex", "keyword", "callable"} <= set(REWARDS)
    assert isinstance(make_reward("vader"), VaderReward)
    assert make_reward("length", unit="chars").score("p", ["abc"]).tolist() == [3.0]
    with pytest.raises(ValueError, match=r"unknown reward 'sentiment'; valid names: .*vader"):
        make_reward("sentiment")
    spec = [{"name": "regex", "pattern": "a", "weight": 2.0}, "vader"]
    reward = reward_from_spec(spec)
    expected = 2.0 * RegexReward("a").score("p", ["a bad day"]) + VaderReward().score("p", ["a bad day"])
    torch.testing.assert_close(reward.score("p", ["a bad day"]), expected)
    with pytest.raises(ValueError, match="'name'"):
        reward_from_spec({"pattern": "a"})
    with pytest.raises(ValueError):
        reward_from_spec([])


@pytest.mark.parametrize("scale", [0.0, -1.0])
def test_reward_cost_refuses_a_non_positive_scale(scale: float) -> None:
    with pytest.raises(ValueError, match="scale must be > 0"):
        RewardCost(LengthReward(), scale)
