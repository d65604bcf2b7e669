"""Prompt sets: files (JSONL, CSV, plain text), the bundled set, ShareGPT's splits, HH-RLHF and SHP.

- ``sharegpt:train`` / ``sharegpt:dev`` / ``sharegpt:test``: ShareGPT user requests
  (`mpc_llm.evaluation.prompts.sharegpt`, extra ``mpc_llm[data]``);

- ``.jsonl``: one object per line with ``"prompt"`` (a string) or ``"messages"`` (chat messages);
- ``.csv``: a header row with a ``prompt`` column;
- anything else: plain text, one prompt per line (blank lines and ``#`` comments are skipped).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from mpc_llm.evaluation.prompts import sharegpt
from mpc_llm.lm import Prompt, is_messages
from mpc_llm.lm.prompts import check_prompt_text

#: Name of the bundled prompt set (48 open-ended prompts whose tone can be steered).
BUNDLED = "bundled"
DATASETS = {"hh-rlhf": "Anthropic/hh-rlhf", "shp": "stanfordnlp/SHP"}
#: The named sources, for messages.
NAMED = [BUNDLED, *(f"{sharegpt.PREFIX}:{split}" for split in sharegpt.SPLITS), *DATASETS]


class PromptFileError(ValueError):
    """A prompt file is empty or malformed; the message names the file and line."""


def bundled_prompts() -> list[str]:
    """The bundled prompts written for the embedded default (SmolLM2 + sentiment)."""
    text = resources.files("mpc_llm.data").joinpath("prompts.txt").read_text(encoding="utf-8")
    return _parse_text(text)


def _parse_text(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _read_text(path: Path) -> str:
    """The file's text (UTF-8, a byte-order mark allowed), or an error naming the file and line."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise PromptFileError(f"cannot read prompt file {path}: {err.strerror or err}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise PromptFileError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x} at byte {err.start}); save the "
            f"file as UTF-8, e.g. `iconv -f LATIN1 -t UTF-8 {path} > prompts-utf8{path.suffix}`"
        ) from None


def _parse_jsonl(path: Path) -> list[Prompt]:
    prompts: list[Prompt] = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise PromptFileError(f"{path}:{number}: not valid JSON ({err.msg})") from err
        if isinstance(item, dict) and isinstance(item.get("prompt"), str) and item["prompt"].strip():
            prompt: Prompt = item["prompt"]
        elif isinstance(item, dict) and is_messages(item.get("messages")):
            prompt = item["messages"]
        else:
            raise PromptFileError(
                f'{path}:{number}: expected {{"prompt": "..."}} or {{"messages": [{{"role": ..., '
                f'"content": ...}}]}}, got {line.strip()[:80]}'
            )
        try:  # e.g. "\\udcff" escapes: text no tokenizer can encode
            check_prompt_text(prompt, where=f"{path}:{number}: the prompt")
        except ValueError as err:
            raise PromptFileError(str(err)) from None
        prompts.append(prompt)
    return prompts


def _parse_csv(path: Path) -> list[Prompt]:
    with io.StringIO(_read_text(path), newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "prompt" not in reader.fieldnames:
            header = reader.fieldnames
            raise PromptFileError(f"{path}:1: the header must have a 'prompt' column, got {header}")
        prompts: list[Prompt] = []
        for row in reader:
            value = (row.get("prompt") or "").strip()
            if not value:
                raise PromptFileError(f"{path}:{reader.line_num}: empty prompt")
            prompts.append(value)
    return prompts


@dataclass(frozen=True)
class PromptSet:
    """Prompts and where each came from (``origins[i]``: ``prompt_source``, and for ShareGPT
    ``prompt_split`` and ``prompt_id``), the fields a comparison's records carry."""

    prompts: list[Prompt]
    origins: list[dict[str, Any]]


def load_prompts(source: str | Path, limit: int | None = None) -> list[Prompt]:
    """Load prompts from a file, ``"bundled"``, ``"sharegpt:<split>"``, or ``"hh-rlhf"`` / ``"shp"``
    (local `datasets` cache). See `load_prompt_set` (which also says where each prompt came from).

    Raises:
        PromptFileError: the file is missing, a folder, unreadable, not UTF-8, empty or malformed (with
            the line number); a ShareGPT split that is unknown or holds fewer than ``limit`` prompts.
        ImportError: the package a named source needs is not installed (the message says which).
    """
    return load_prompt_set(source, limit).prompts


def load_prompt_set(source: str | Path, limit: int | None = None, *, exact: bool = False) -> PromptSet:
    """The first ``limit`` prompts of ``source`` (all if None), each with its origin; with ``exact``, a
    source holding fewer than ``limit`` is refused, as a ShareGPT split always is (the command line's
    rule for every source: ``--num-prompts`` is never cut short in silence).

    Example:
        >>> load_prompt_set("bundled", limit=1).origins
        [{'prompt_source': 'bundled'}]
    """
    name = str(source)
    try:
        split = sharegpt.parse_spec(name)
        if split is not None:
            chosen = sharegpt.sharegpt_prompts(split, limit)
            origins = [
                {"prompt_source": sharegpt.PREFIX, "prompt_split": split, "prompt_id": p.id} for p in chosen
            ]
            return PromptSet([p.text for p in chosen], origins)
    except sharegpt.ShareGPTError as err:
        raise PromptFileError(str(err)) from None
    prompts = _load_other(source)
    if exact and limit is not None and len(prompts) < limit:
        raise PromptFileError(
            f"{name} holds {len(prompts)} prompts, fewer than the {limit} asked (--num-prompts); ask for at "
            f"most {len(prompts)}"
        )
    prompts = prompts[:limit] if limit is not None else prompts
    return PromptSet(prompts, [{"prompt_source": name} for _ in prompts])


def _load_other(source: str | Path) -> list[Prompt]:
    name = str(source)
    if name == BUNDLED:
        return list(bundled_prompts())
    if name in DATASETS:
        return list(load_dataset_prompts(name))
    path = Path(source).expanduser()
    if path.is_dir():
        raise PromptFileError(
            f"{path} is a folder; give a prompt file (.jsonl, .csv or .txt) or one of {NAMED}"
        )
    if not path.is_file():
        raise PromptFileError(
            f"prompt file {path} does not exist; give a .jsonl, .csv or .txt file, or one of {NAMED}"
        )
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        prompts = _parse_jsonl(path)
    elif suffix == ".csv":
        prompts = _parse_csv(path)
    else:
        prompts = list(_parse_text(_read_text(path)))
    if not prompts:
        raise PromptFileError(f"{path} holds no prompts")
    return prompts


def load_dataset_prompts(name: str, split: str = "test") -> list[str]:
    """First-turn prompts of HH-RLHF or SHP from the local `datasets` cache (no download).

    Raises:
        ImportError: `datasets` is not installed.
        PromptFileError: the data set is not available offline.
    """
    try:
        import datasets
    except ImportError as err:
        raise ImportError(f"loading {name} needs the datasets package: pip install datasets") from err
    try:
        data = datasets.load_dataset(DATASETS[name], split=split, download_mode="reuse_cache_if_exists")
    except Exception as err:  # datasets raises many types when offline
        raise PromptFileError(
            f"{name} ({DATASETS[name]}) is not available locally and cannot be downloaded here ({err}); "
            "save its prompts to a .jsonl/.txt file and pass that instead"
        ) from err
    if name == "shp":
        return [row["history"] for row in data]
    prompts = []
    for row in data:
        first = row["chosen"].split("\n\nAssistant:")[0]
        prompts.append(first.replace("\n\nHuman:", "", 1).strip())
    return prompts
