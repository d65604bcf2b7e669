"""Round four's rules below the command line (issue 35, issue 34's "Bad input"): a value's card is the
weights file's and is checked against the model and the run; train-value's folder holds only its own
files; QAlign and SMC keep token budgets and say what to raise."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from mpc_llm.controllers import SMC, QAlign
from mpc_llm.dynamics import ToyLM, ToyReward
from mpc_llm.values import ValueFileError, ValueMLP, ValueRef, read_card, save_value
from mpc_llm.values.folder import check_value_folder, clear_value_folder, own_files

CARD = {
    "model": "m",
    "model_fingerprint": "f" * 16,
    "reward": "vader",
    "prompts": {"source": "sharegpt:train"},
}


@pytest.fixture
def value(tmp_path: Path) -> Path:
    save_value(ValueMLP(8, 4, 1), CARD, tmp_path / "v")
    return tmp_path / "v"


# ------------------------------------------------------------------------------------------ the card
def test_the_weights_card_is_authoritative_and_a_differing_copy_is_refused(value: Path) -> None:
    assert read_card(value)["reward"] == "vader"
    copy = json.loads((value / "card.json").read_text())
    (value / "card.json").write_text(json.dumps({**copy, "prompts": {"source": "sharegpt:test"}}))
    with pytest.raises(
        ValueFileError, match=r"prompts.source: 'sharegpt:train' in the weights, 'sharegpt:test'"
    ):
        read_card(value)
    with pytest.raises(ValueFileError, match="differs from the card"):
        read_card(value / "value.safetensors")  # named by its file: the copy beside it is still checked
    (value / "card.json").unlink()  # the weights file alone is a whole value
    assert read_card(value)["prompts"]["source"] == "sharegpt:train"


def test_a_card_with_nan_is_written_as_strict_json(tmp_path: Path) -> None:
    save_value(
        ValueMLP(8, 4, 1), {**CARD, "report": {"spearman": math.nan, "curve": [1.0, math.inf]}}, tmp_path
    )

    def refuse(constant: str) -> None:
        raise ValueError(constant)

    saved = json.loads((tmp_path / "card.json").read_text(), parse_constant=refuse)
    assert saved["report"] == {"spearman": None, "curve": [1.0, None]}
    assert read_card(tmp_path)["report"] == saved["report"]


def _warned(ref: ValueRef, system: object) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ref.check_for(system)
    return [str(w.message) for w in caught]


def test_a_value_is_checked_against_the_model_and_the_run(value: Path) -> None:
    ref = ValueRef(value)
    with pytest.raises(ValueFileError, match=r"d=8 .* this model's pre-logit has d=9"):
        ref.check_for(SimpleNamespace(control_dim=9))
    assert (
        _warned(ref, SimpleNamespace(control_dim=8, reward={"name": "vader"}, prompt_source="sharegpt:dev"))
        == []
    )
    run = SimpleNamespace(reward="judge", prompt_source="sharegpt:train")
    first = _warned(ref, run)
    assert len(first) == 2
    assert "trained for the reward vader, and this run optimises judge" in first[0]
    assert "was trained on sharegpt:train, the prompts this run answers" in first[1]
    assert _warned(ref, run) == []  # once per value


def test_a_value_trained_on_the_test_split_warns_a_run_on_it(tmp_path: Path) -> None:
    save_value(
        ValueMLP(8, 4, 1), {**CARD, "prompts": {"source": "sharegpt:test"}, "dtype": "float32"}, tmp_path
    )
    messages = _warned(
        ValueRef(tmp_path), SimpleNamespace(prompt_source="sharegpt:test", dtype="torch.bfloat16")
    )
    assert any("trained on sharegpt:test" in m and "not held out" in m for m in messages)
    assert any(
        "collected with the model in float32 and this run's model is in bfloat16" in m for m in messages
    )


def test_a_value_without_a_card_is_refused_in_one_line(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"w": ValueMLP(8, 4, 1).mean.contiguous()}, str(tmp_path / "value.safetensors"))
    with pytest.raises(ValueFileError, match="holds tensors but no card"):
        read_card(tmp_path)


# ------------------------------------------------------------------------------------------ the folder
def test_only_train_values_own_files_are_its_own(tmp_path: Path, value: Path) -> None:
    (value / "card.json.tmp").write_text("{}")  # an interrupted save's leftovers are its own
    (value / "data").mkdir()
    (value / "data" / "collection.json").write_text("{}")
    (value / "data" / "chunk-00000.safetensors").write_bytes(b"x")
    (value / "data" / "mine.csv").write_text("a")
    own, other = own_files(value)
    assert sorted(p.name for p in own) == ["card.json", "card.json.tmp", "chunk-00000.safetensors",
                                           "collection.json", "value.safetensors"]  # fmt: skip
    assert other == ["data/mine.csv"]
    with pytest.raises(ValueError, match=r"does not write \(data/mine.csv\)"):
        check_value_folder(value, {}, overwrite=True)
    (value / "data" / "mine.csv").unlink()
    assert check_value_folder(value, {}, overwrite=True) == "replace"
    clear_value_folder(value)
    assert not value.exists() or list(value.iterdir()) == []


def test_a_folder_without_a_marker_is_not_train_values(tmp_path: Path) -> None:
    (tmp_path / "card.json").write_text("{}")  # a user's card.json, no value beside it
    (tmp_path / "value.safetensors").write_bytes(b"not a value file")
    assert own_files(tmp_path) == ([], ["card.json", "value.safetensors"])
    with pytest.raises(ValueError, match="holds no value or collection of train-value's"):
        check_value_folder(tmp_path, {})
    clear_value_folder(tmp_path)  # deletes nothing that is not its own
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.json", "value.safetensors"]


def test_a_collection_resumes_only_with_its_settings(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "collection.json").write_text(json.dumps({"seed": 0, "reward": "vader"}))
    assert check_value_folder(tmp_path, {"seed": 1}) == "replace"  # no chunk yet: nothing to protect
    (tmp_path / "data" / "chunk-00000.safetensors").write_bytes(b"x")
    assert check_value_folder(tmp_path, {"seed": 0, "reward": "vader"}) == "resume"
    with pytest.raises(ValueError, match=r"other settings \(seed: 0 there, 1 now\)"):
        check_value_folder(tmp_path, {"seed": 1})


def test_the_splits_results_are_reported_on() -> None:
    from mpc_llm.evaluation.value_training import reported_split

    assert [reported_split(s) for s in ("sharegpt:test", "hh-rlhf", "shp")] == ["test"] * 3
    assert [reported_split(s) for s in ("sharegpt:train", "sharegpt:dev", "bundled", "p.jsonl")] == [None] * 4


# ------------------------------------------------------------------------------------------ budgets
def test_qalign_never_spends_more_tokens_than_its_budget() -> None:
    system, reward = ToyLM.example(), ToyReward.example()
    H = system.horizon
    with pytest.raises(ValueError, match=f"below one QAlign step .* raise the budget to at least {2 * H}"):
        QAlign(beta=1.0).check_budget(H, 2 * H - 1, "tokens")
    QAlign(beta=1.0).check_budget(H, 2 * H, "tokens")
    for budget in range(2 * H, 6 * H):
        result = QAlign(beta=1.0).optimize(system, reward, max_tokens=budget, seed=budget)
        assert max(result.budget.tokens_per_problem) <= budget
        assert min(result.budget.samples_per_problem) >= 2  # a budget it accepts runs a proposal


def test_smc_says_what_to_raise_in_each_unit() -> None:
    smc = SMC(block=4, beta=1.0)
    with pytest.raises(
        ValueError, match="up to 8 tokens, whatever the block\\); raise the budget to at least 8"
    ):
        smc.check_budget(8, 3, "tokens")
    with pytest.raises(
        ValueError, match="2 blocks of 4, one scored sample each\\); raise the budget to at least 2"
    ):
        smc.check_budget(8, 1, "samples")
