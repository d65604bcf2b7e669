"""Rewards that batch their own work: the judge's shared prompt prefix and length batching, and the
HF reward model's length batching, give the scores of the plain path (every input whole, in order).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from mpc_llm.lm.adapters import ModelAdapter
from mpc_llm.lm.prefix import common_prefix_length, next_token_logits
from mpc_llm.lm.testing import TINY_ARCHITECTURES, tiny_config
from mpc_llm.rewards import HFRewardModel, JudgeReward

PROMPTS = [
    "Hello there! How are you today?",
    "Write a short and kind reply.",
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "The quick brown fox"}],
]
RESPONSES = [
    "I am fine, thank you.",
    "",
    "Optimal control steers a system toward a goal at low cost. " * 3,
    "kind",
    "!?",  # punctuation right after the rubric's "Response: " may merge with its tokens
    "0 1 2 3 4 5 6 7 8 9",
    "Sampling many responses and keeping the best one is a strong baseline.",
]
YES, NO = ["yes", "Yes", "y"], ["no", "No", "n"]  # single tokens of the tiny byte-level BPE
ATOL = 1e-4


def pairs(n: int = 21) -> tuple[list, list[str]]:
    """``n`` pairs: every prompt with several responses, interleaved (as a flattened ``B x N``)."""
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(n)]
    responses = [RESPONSES[i % len(RESPONSES)] + " x" * (i % 4) for i in range(n)]
    return prompts, responses


def judge(model, tok, **options) -> JudgeReward:
    return JudgeReward(model, tok, yes=YES, no=NO, **options)


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_judge_shared_prefix_equals_plain_path(arch: str, tiny_lm) -> None:
    model, tok = tiny_lm(arch)
    prompts, responses = pairs()
    plain = judge(model, tok, share_prefix=False, sort_by_length=False).score(prompts, responses)
    assert plain.std() > 1e-3  # the random judge does tell the inputs apart
    for batch_size in (None, 1, 3, 8):
        shared = judge(model, tok, batch_size=batch_size).score(prompts, responses)
        torch.testing.assert_close(shared, plain, atol=ATOL, rtol=0)
    # alone, one pair is its own group of one (the plain path): the same score
    single = judge(model, tok).score(prompts[:1], responses[:1])
    torch.testing.assert_close(single, plain[:1], atol=ATOL, rtol=0)


def test_judge_truncated_inputs_fall_back_to_the_plain_path(tiny_lm) -> None:
    model, tok = tiny_lm("llama")
    prompts, responses = pairs()
    reference = judge(model, tok)
    lengths = sorted(len(ids) for ids in reference.token_rows(prompts, responses)[0])
    max_length = lengths[len(lengths) // 2]  # about half the inputs are cut (their last tokens kept)
    cut = judge(model, tok, max_length=max_length, batch_size=4)
    rows, truncated = cut.token_rows(prompts, responses)
    assert 0 < sum(truncated) < len(rows) and max(map(len, rows)) == max_length
    plain = judge(model, tok, max_length=max_length, share_prefix=False, sort_by_length=False)
    torch.testing.assert_close(
        cut.score(prompts, responses), plain.score(prompts, responses), atol=ATOL, rtol=0
    )


def test_judge_runs_each_prompt_prefix_once_in_sorted_batches(tiny_lm) -> None:
    model, tok = tiny_lm("qwen2")
    prompts, responses = pairs(21)  # 3 prompts x 7 responses
    calls: list[tuple[int, int]] = []
    handle = model.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    try:
        j = judge(model, tok, batch_size=4)
        j.score(prompts, responses)
    finally:
        handle.remove()
    prefixes = [c for c in calls if c[0] == 1]
    suffixes = [c for c in calls if c[0] > 1]
    assert len(prefixes) == 3  # one prefix pass per prompt
    assert sorted(r for r, _ in suffixes) == [3, 3, 3, 4, 4, 4]  # ceil(7 / 4) batches per prompt
    rows = j.token_rows(prompts, responses)[0]
    expected = []  # (rows, tokens) per pass: the prefix once, then suffixes by length, 4 at a time
    for g in range(3):
        group = rows[g::3]
        P = common_prefix_length(group)
        lengths = sorted(len(r) - P for r in group)
        expected += [(1, P)] + [(len(lengths[i : i + 4]), max(lengths[i : i + 4])) for i in (0, 4)]
    assert sorted(calls) == sorted(expected)
    assert sum(r * s for r, s in calls) < sum(len(r) for r in rows)


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_next_token_logits_equal_whole_sequence_forward(arch: str, tiny_lm) -> None:
    """Random rows with a long common prefix (longer than Gemma-2's 16-token sliding window)."""
    model, _ = tiny_lm(arch)
    adapter = ModelAdapter(model)
    gen = torch.Generator().manual_seed(0)
    prefix = torch.randint(4, 300, (40,), generator=gen).tolist()
    rows = [prefix + torch.randint(4, 300, (n,), generator=gen).tolist() for n in (1, 5, 30, 2, 17)]
    rows.append(prefix[:25])  # a row that ends inside the others' prefix
    assert common_prefix_length(rows) == 25
    expected = torch.stack([model(input_ids=torch.tensor([r])).logits[0, -1] for r in rows]).detach()
    for share, batch_size in ((True, 2), (True, None), (False, 4)):
        got = next_token_logits(adapter, rows, share_prefix=share, batch_size=batch_size)
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    columns = [5, 7, 11]
    torch.testing.assert_close(
        next_token_logits(adapter, rows, columns=columns), expected[:, columns], atol=ATOL, rtol=0
    )
    assert next_token_logits(adapter, [], columns=columns).shape == (0, 3)


def test_judge_bad_and_empty_input_stay_clear(tiny_lm) -> None:
    model, tok = tiny_lm("gpt2")
    j = judge(model, tok)
    assert j.score([], []).shape == (0,)
    assert j.score_batch([], []).shape == (0,)
    with pytest.raises(ValueError, match="pair up"):
        j.score(["a", "b"], ["x"])
    with pytest.raises(TypeError, match="strings"):
        j.score("a", [None])


def test_hf_reward_length_batches_give_the_same_scores(tiny_tokenizer) -> None:
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    config = tiny_config("llama", len(tiny_tokenizer), num_labels=1)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    prompts, responses = pairs()
    plain = HFRewardModel(model, tiny_tokenizer, batch_size=4, sort_by_length=False)
    seen: list[list[int]] = []
    sorted_ = HFRewardModel(model, tiny_tokenizer, batch_size=4)
    forward = sorted_._forward

    def spy(enc: dict, m: int) -> torch.Tensor:
        seen.append(enc["attention_mask"].sum(dim=1).tolist())
        return forward(enc, m)

    sorted_._forward = spy  # type: ignore[method-assign]
    a, b = plain.score(prompts, responses), sorted_.score(prompts, responses)
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)
    assert a.std() > 1e-4
    flat = [n for chunk in seen for n in chunk]
    assert flat == sorted(flat) and all(len(chunk) <= 4 for chunk in seen)
    one = HFRewardModel(model, tiny_tokenizer, batch_size=None).score(prompts, responses)
    torch.testing.assert_close(one, a, atol=1e-5, rtol=1e-4)


@pytest.mark.smollm
def test_judge_shared_prefix_on_embedded_smollm2(smollm: tuple[object, object]) -> None:
    model, tok = smollm
    kind = [{"role": "user", "content": "Say something kind."}]
    prompts = ["What is the capital of France?"] * 5 + [kind] * 3
    responses = [
        "The capital of France is Paris.",
        "Bananas are yellow.",
        "",
        "Paris, of course! It has been the capital for centuries, and it is also its largest city.",
        "Lyon.",
        "You are wonderful!",
        "No.",
        "Every day you make the people around you a little happier, and that matters.",
    ]
    plain = JudgeReward(model, tok, share_prefix=False, sort_by_length=False).score(prompts, responses)
    shared = JudgeReward(model, tok, batch_size=3).score(prompts, responses)
    assert torch.isfinite(plain).all()
    torch.testing.assert_close(shared, plain, atol=ATOL, rtol=0)
