"""Rollout.take / Rollout.cat: generic selection over per-sample fields, with padding."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from mpc_llm import Rollout
from mpc_llm.core.rollout import stack_problems


@dataclass(frozen=True)
class TextRollout(Rollout):
    tokens: torch.Tensor
    texts: list[list[str]]
    name: str = "shared"


def make(B: int, N: int, T: int, offset: int = 0) -> TextRollout:
    tokens = torch.arange(B * N * T).view(B, N, T) + offset
    texts = [[f"b{b}n{n + offset}" for n in range(N)] for b in range(B)]
    return TextRollout(controls=torch.randn(B, N, 2, 3), tokens=tokens, texts=texts)


def test_take_selects_per_problem() -> None:
    r = make(2, 3, 4)
    picked = r.take(torch.tensor([[2], [0]]))
    assert picked.num_samples == 1
    assert picked.texts == [["b0n2"], ["b1n0"]]
    assert torch.equal(picked.tokens[0, 0], r.tokens[0, 2])
    assert torch.equal(picked.controls[1, 0], r.controls[1, 0])
    assert picked.name == "shared"


def test_cat_pads_shorter_sequences() -> None:
    a, b = make(2, 1, 3), make(2, 2, 5, offset=100)
    both = TextRollout.cat([a, b])
    assert both.tokens.shape == (2, 3, 5)
    assert both.tokens[0, 0, 3:].tolist() == [0, 0]
    assert both.texts[1] == ["b1n0", "b1n100", "b1n101"]
    picked = both.take(torch.tensor([[1], [2]])).tokens[:, 0]
    assert torch.equal(picked, torch.stack([b.tokens[0, 0], b.tokens[1, 1]]))


def test_chat_prompts_shaped_like_b_by_n_stay_shared() -> None:
    from mpc_llm.lm import LMRollout

    chat = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]  # 2 messages, N = 2
    r = LMRollout(controls=torch.zeros(1, 2, 1, 1), tokens=torch.zeros(1, 2, 3, dtype=torch.long),
                  lengths=torch.ones(1, 2, dtype=torch.long), texts=[["a", "b"]], prompts=[chat])  # fmt: skip
    picked = r.take(torch.tensor([[1]]))
    assert picked.prompts == [chat] and picked.texts == [["b"]]
    assert LMRollout.cat([r, picked]).prompts == [chat]


@dataclass(frozen=True)
class OptionalRollout(Rollout):
    prefix_lengths: torch.Tensor | None = None


def test_joining_rollouts_refuses_a_field_missing_in_some() -> None:
    """A field None in one rollout and set in another would be taken from the first for all."""
    with_field = OptionalRollout(
        controls=torch.zeros(1, 2, 1, 1), prefix_lengths=torch.ones(1, 2, dtype=torch.long)
    )
    without = OptionalRollout(controls=torch.zeros(1, 2, 1, 1))
    for join in (OptionalRollout.cat, stack_problems):
        with pytest.raises(ValueError, match="'prefix_lengths' is None in rollouts \\[0\\]"):
            join([without, with_field])
    # all set or all missing: joined as before
    assert OptionalRollout.cat([without, without]).prefix_lengths is None
    assert stack_problems([with_field, with_field]).prefix_lengths.tolist() == [[1, 1], [1, 1]]
