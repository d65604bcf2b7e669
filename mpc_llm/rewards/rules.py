"""Rewards from Python callables and simple rules: length, regular expressions, keywords.

Rule rewards read only the response; the prompt is ignored.

Example:
    >>> from mpc_llm.rewards import CallableReward, RegexReward
    >>> exclaims = CallableReward(lambda prompt, response: response.count("!"))
    >>> (exclaims + RegexReward(r"\\bhello\\b")).score("Greet me", ["hello!!", "hi"]).tolist()
    [3.0, 0.0]
"""

from __future__ import annotations

import importlib
import math
import numbers
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import torch
from torch import Tensor

from mpc_llm.rewards.base import Prompt, Reward, RewardError

__all__ = ["CallableReward", "KeywordReward", "LengthReward", "RegexReward"]


def _import_callable(path: str) -> Callable[..., object]:
    """``"package.module:function"`` -> the function."""
    module, sep, attr = path.partition(":")
    if not sep or not module or not attr:
        raise ValueError(
            f"a reward function given by name must look like 'package.module:function', got {path!r}"
        )
    try:
        obj: object = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import the reward function {path!r}: {exc}") from exc
    if not callable(obj):
        raise TypeError(f"{path!r} is not callable")
    return obj


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


class CallableReward(Reward):
    """A reward given by a Python function.

    Args:
        fn: ``fn(prompt, response) -> float`` (or, with ``batched=True``,
            ``fn(prompts, responses) -> (m,)`` numbers), or its import path ``"package.module:fn"``.
            Prompts reach it as given (a string or chat messages).
        batched: whether ``fn`` takes lists of prompts and responses.
        batch_size: pairs per call of a batched ``fn`` (None: all at once).
        name: the reward's name in messages (default: the function's name).

    An import path imports that module (running its top-level code) and calls the function on every
    response: a config file that names one runs that code, so a config file is code (README,
    "Configuration").

    An exception inside ``fn`` is re-raised as a `RewardError` naming the reward and the index of
    the offending input (or the range of the offending batch). A non-numeric result raises a
    `TypeError`. A NaN result is passed through as NaN: the controller gives that sample zero weight
    and warns, and raises if every sample of a problem is NaN.
    """

    def __init__(
        self,
        fn: Callable[..., object] | str,
        *,
        batched: bool = False,
        batch_size: int | None = None,
        name: str | None = None,
    ) -> None:
        func = _import_callable(fn) if isinstance(fn, str) else fn
        if not callable(func):
            raise TypeError(f"CallableReward needs a callable, got {type(func).__name__}")
        super().__init__(batch_size=batch_size, name=name or getattr(func, "__name__", "callable"))
        self.fn = func
        self.batched = bool(batched)

    def _one(self, prompt: Prompt, response: str, index: int) -> float:
        try:
            value = self.fn(prompt, response)
        except Exception as exc:
            raise RewardError(
                f"reward {self.name!r} raised {type(exc).__name__} on input {index} "
                f"(response {_short(response)}): {exc}"
            ) from exc
        if isinstance(value, Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(
                f"reward {self.name!r} returned {type(value).__name__} for input {index}; "
                "it must return a real number (float('nan') if it cannot score the input)"
            )
        return float(value)

    def score_batch(self, prompts: list[Prompt], responses: list[str]) -> Tensor:
        return self._score_chunk(prompts, responses, 0)

    def _score_chunk(self, prompts: list[Prompt], responses: list[str], start: int) -> Tensor:
        if not self.batched:
            values = [
                self._one(p, r, start + i) for i, (p, r) in enumerate(zip(prompts, responses, strict=True))
            ]
            return torch.tensor(values, dtype=torch.float64)
        try:
            out = self.fn(prompts, responses)
        except Exception as exc:
            raise RewardError(
                f"reward {self.name!r} raised {type(exc).__name__} on the batch of inputs "
                f"{start}..{start + len(responses) - 1}: {exc}"
            ) from exc
        return out  # type: ignore[return-value]  # shape and type are checked by Reward.score

    def __repr__(self) -> str:
        return f"CallableReward({self.name})"


class LengthReward(Reward):
    """The response's length, or ``-|length - target|`` when a target is given.

    Args:
        unit: ``"words"`` (whitespace-separated) or ``"chars"``.
        target: a target length; the reward is then the negative distance to it.
    """

    def __init__(
        self,
        unit: Literal["words", "chars"] = "words",
        target: float | None = None,
        *,
        name: str | None = None,
    ) -> None:
        if unit not in ("words", "chars"):
            raise ValueError(f"unit must be 'words' or 'chars', got {unit!r}")
        if target is not None and (not isinstance(target, numbers.Real) or not math.isfinite(target)):
            raise ValueError(f"target must be a finite number or None, got {target!r}")
        super().__init__(batch_size=None, name=name)
        self.unit = unit
        self.target = None if target is None else float(target)

    def score_batch(self, prompts: list[Prompt], responses: list[str]) -> Tensor:
        lengths = torch.tensor(
            [len(r.split()) if self.unit == "words" else len(r) for r in responses], dtype=torch.float32
        )
        return lengths if self.target is None else -(lengths - self.target).abs()

    def __repr__(self) -> str:
        target = "" if self.target is None else f", target={self.target:g}"
        return f"LengthReward({self.unit!r}{target})"


class RegexReward(Reward):
    """1.0 if the regular expression matches the response (``re.search``), else 0.0.

    Args:
        pattern: a regular expression (string or compiled).
        flags: ``re`` flags when ``pattern`` is a string.
        count: score the number of non-overlapping matches instead.
    """

    def __init__(
        self, pattern: str | re.Pattern[str], *, flags: int = 0, count: bool = False, name: str | None = None
    ) -> None:
        try:
            self.pattern = re.compile(pattern, flags) if isinstance(pattern, str) else pattern
        except re.error as exc:
            raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from exc
        super().__init__(batch_size=None, name=name)
        self.count = bool(count)

    def score_batch(self, prompts: list[Prompt], responses: list[str]) -> Tensor:
        if self.count:
            values = [sum(1 for _ in self.pattern.finditer(r)) for r in responses]
        else:
            values = [self.pattern.search(r) is not None for r in responses]
        return torch.tensor(values, dtype=torch.float32)

    def __repr__(self) -> str:
        return f"RegexReward({self.pattern.pattern!r})"


class KeywordReward(Reward):
    """Keywords in the response.

    Args:
        keywords: the words or phrases to look for.
        mode: ``"fraction"`` of the keywords present (in ``[0, 1]``), ``"any"`` (1.0 if one is
            present) or ``"count"`` (total occurrences).
        case_sensitive: match case.
        whole_words: match only whole words (``\\b`` boundaries).
    """

    def __init__(
        self,
        keywords: Iterable[str] | str,
        *,
        mode: Literal["fraction", "any", "count"] = "fraction",
        case_sensitive: bool = False,
        whole_words: bool = True,
        name: str | None = None,
    ) -> None:
        words: Sequence[str] = [keywords] if isinstance(keywords, str) else list(keywords)
        if not words or not all(isinstance(w, str) and w for w in words):
            raise ValueError(f"keywords must be a non-empty list of non-empty strings, got {keywords!r}")
        if mode not in ("fraction", "any", "count"):
            raise ValueError(f"mode must be 'fraction', 'any' or 'count', got {mode!r}")
        super().__init__(batch_size=None, name=name)
        flags = 0 if case_sensitive else re.IGNORECASE
        edge = r"\b" if whole_words else ""
        self.keywords = list(words)
        self.mode = mode
        self._patterns = [re.compile(f"{edge}{re.escape(w)}{edge}", flags) for w in words]

    def score_batch(self, prompts: list[Prompt], responses: list[str]) -> Tensor:
        values = []
        for r in responses:
            if self.mode == "count":
                values.append(float(sum(len(p.findall(r)) for p in self._patterns)))
                continue
            hits = sum(p.search(r) is not None for p in self._patterns)
            values.append(hits / len(self._patterns) if self.mode == "fraction" else float(hits > 0))
        return torch.tensor(values, dtype=torch.float32)

    def __repr__(self) -> str:
        return f"KeywordReward({self.keywords!r}, mode={self.mode!r})"
