"""Prompt sets: file formats, the bundled set, and errors with line numbers."""

from __future__ import annotations

import json

import pytest

from mpc_llm.evaluation.prompts import PromptFileError, bundled_prompts, load_prompts


def test_bundled_set_has_at_least_40_distinct_prompts() -> None:
    prompts = bundled_prompts()
    assert len(prompts) >= 40 and len(set(prompts)) == len(prompts)
    assert load_prompts("bundled", limit=5) == prompts[:5]


def test_the_three_file_formats(tmp_path) -> None:
    chat = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]
    lines = [json.dumps({"prompt": "one"}), "", json.dumps({"messages": chat})]
    (tmp_path / "p.jsonl").write_text("\n".join(lines) + "\n")
    assert load_prompts(tmp_path / "p.jsonl") == ["one", chat]
    (tmp_path / "p.csv").write_text('id,prompt\n1,"first, with a comma"\n2,second\n')
    assert load_prompts(tmp_path / "p.csv") == ["first, with a comma", "second"]
    (tmp_path / "p.txt").write_text("# a comment\nalpha\n\n  beta  \n")
    assert load_prompts(tmp_path / "p.txt") == ["alpha", "beta"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.txt", "\n\n# only a comment\n", "holds no prompts"),
        ("bad.jsonl", '{"prompt": "ok"}\n{"prompt": \n', r"bad.jsonl:2: not valid JSON"),
        ("shape.jsonl", '{"prompt": "ok"}\n{"text": "no"}\n', r"shape.jsonl:2: expected"),
        ("header.csv", "text\nhello\n", r"header.csv:1: the header must have a 'prompt' column"),
        ("blank.csv", 'prompt\nhello\n""\n', r"blank.csv:3: empty prompt"),
    ],
)
def test_malformed_files_name_the_line(tmp_path, name: str, content: str, message: str) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(PromptFileError, match=message):
        load_prompts(tmp_path / name)


def test_a_missing_file_lists_the_alternatives(tmp_path) -> None:
    with pytest.raises(PromptFileError, match=r"does not exist.*bundled"):
        load_prompts(tmp_path / "nope.txt")


def test_hh_rlhf_without_local_data_says_what_to_do() -> None:
    with pytest.raises((ImportError, PromptFileError), match=r"datasets|not available locally"):
        load_prompts("hh-rlhf")


def test_sweep_builds_named_aisp_candidates() -> None:
    from mpc_llm.controllers.sweep import aisp_grid, aisp_random

    grid = aisp_grid([0.5, 2.0], [0.1, 1.0], alpha=0.5, num_samples=4)
    assert len(grid) == 4 and grid["aisp[sigma=2,lambda=0.1]"].config.alpha == 0.5
    draws = aisp_random(5, (0.1, 10.0), (0.01, 1.0), seed=3, num_samples=4)
    assert draws.keys() == aisp_random(5, (0.1, 10.0), (0.01, 1.0), seed=3, num_samples=4).keys()
    assert all(0.1 <= c.config.sigma <= 10 and 0.01 <= c.config.lambda_ <= 1 for c in draws.values())
    with pytest.raises(ValueError, match="sigma_range"):
        aisp_random(2, (0.0, 1.0), (0.1, 1.0))
