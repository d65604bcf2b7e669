"""Which token ids end a response and which pad it: read from the config, tokenizer and generation config."""

from __future__ import annotations

from typing import Any

from mpc_llm.lm.config import LMConfig


def eos_token_ids(model: Any, tokenizer: Any, config: LMConfig) -> tuple[int, ...]:
    """The ids that end a response: ``config.eos_token_id`` if set, else the tokenizer's and the
    generation config's (each once, in that order)."""
    if config.eos_token_id is not None:
        value = config.eos_token_id
        return (value,) if isinstance(value, int) else tuple(value)
    ids: list[int] = []
    gen = getattr(model, "generation_config", None)
    for value in (getattr(tokenizer, "eos_token_id", None), getattr(gen, "eos_token_id", None)):
        for i in [value] if isinstance(value, int) else (value or []):
            if i not in ids:
                ids.append(int(i))
    return tuple(ids)


def pad_token_id(model: Any, tokenizer: Any, eos_ids: tuple[int, ...]) -> int:
    """The id written past each response's end: the tokenizer's pad, else the generation config's,
    else the first end-of-sequence id, else 0."""
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        gen = getattr(model, "generation_config", None)
        pad = getattr(gen, "pad_token_id", None) if gen is not None else None
    if pad is None:
        pad = eos_ids[0] if eos_ids else 0
    return int(pad)
