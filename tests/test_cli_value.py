"""``mpc-llm train-value`` and RE-Control from the command line, with their bad inputs."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mpc_llm.cli import main
from mpc_llm.rewards import Reward, register_reward
from mpc_llm.rewards.registry import REWARDS
from mpc_llm.values import ValueMLP, load_value, save_value

PROMPTS = ["Hello", "Hi there", "Tell me a story", "What is two plus two", "Good morning"]


class _Counting(Reward):
    """Share of 'a' in the response; NaN on every third call's pairs or everywhere; or Ctrl-C after
    ``stop_after`` calls (an interrupted collection)."""

    calls = 0
    mode = "ok"
    stop_after = 10**9

    def score_batch(self, prompts, responses):
        type(self).calls += 1
        if type(self).calls > type(self).stop_after:
            raise KeyboardInterrupt
        out = [r.count("a") / max(1, len(r)) for r in responses]
        if self.mode == "all_nan":
            return [math.nan] * len(out)
        if self.mode == "some_nan":
            out[0] = math.nan
        return out


@pytest.fixture
def reward():
    register_reward("test_counting", _Counting, replace=True)
    _Counting.calls, _Counting.mode, _Counting.stop_after = 0, "ok", 10**9
    yield _Counting
    REWARDS.pop("test_counting", None)


@pytest.fixture(scope="module")
def llama_dir(tiny_model_dir) -> str:
    return str(tiny_model_dir("llama"))


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "train.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    return str(path)


def train_args(llama_dir, prompt_file, out):
    return ["train-value", "--model", llama_dir, "--reward", "test_counting", "--prompts", prompt_file,
            "--samples-per-prompt", "3", "--chunk-size", "2", "--max-new-tokens", "6", "--width", "16",
            "--depth", "1", "--epochs", "3", "--out", str(out), "--quiet"]  # fmt: skip


def test_train_value_then_re_control(llama_dir, prompt_file, reward, tmp_path, capsys):
    assert main([*train_args(llama_dir, prompt_file, tmp_path / "v"), "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["d"] == 64 and card["samples"]["responses"] == 15 and card["prompts"]["count"] == 5
    assert card["learning_cost"]["responses_scored"] == 15 and card["learning_cost"]["tokens"] > 0
    assert len(card["report"]["train_loss"]) == card["report"]["epochs_run"]
    assert (tmp_path / "v" / "value.safetensors").is_file() and (tmp_path / "v" / "card.json").is_file()
    argv = ["align", "Hi", "--model", llama_dir, "--max-new-tokens", "6", "--reward", "test_counting",
            "--controller", "re_control", "--set", f"value={tmp_path / 'v'}", "--set", "num_steps=2",
            "-n", "2", "--json", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["controller"]["name"] == "re_control" and out["budget"]["samples"] == 2


def test_nan_rewards_are_skipped_and_counted_and_all_nan_writes_no_value(
    llama_dir, prompt_file, reward, tmp_path, capsys
):
    reward.mode = "some_nan"
    assert main([*train_args(llama_dir, prompt_file, tmp_path / "v"), "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["samples"]["skipped_nan"] == 3 and card["samples"]["responses"] == 12
    reward.mode = "all_nan"
    assert main(train_args(llama_dir, prompt_file, tmp_path / "w")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mpc-llm: error: ") and "NaN" in err
    assert not (tmp_path / "w" / "value.safetensors").exists()


def test_an_interrupted_collection_resumes_and_loses_nothing(
    llama_dir, prompt_file, reward, tmp_path, capsys
):
    assert main(train_args(llama_dir, prompt_file, tmp_path / "whole")) == 0
    reward.calls, reward.stop_after = 0, 2  # Ctrl-C while scoring the third chunk
    assert main(train_args(llama_dir, prompt_file, tmp_path / "part")) == 130
    assert not (tmp_path / "part" / "value.safetensors").exists()
    assert len(list((tmp_path / "part" / "data").glob("chunk-*.safetensors"))) == 2
    reward.stop_after = 10**9
    assert main(train_args(llama_dir, prompt_file, tmp_path / "part")) == 0
    a, _ = load_value(tmp_path / "whole")
    b, _ = load_value(tmp_path / "part")
    z = torch.randn(5, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(a(z), b(z))
    capsys.readouterr()
    # a finished value in the folder: refused, unless --overwrite (issue 35)
    assert main([*train_args(llama_dir, prompt_file, tmp_path / "part"), "--samples-per-prompt", "2"]) == 2
    assert "already holds a trained value" in capsys.readouterr().err


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_lm):
    from mpc_llm.dynamics import LMDynamics

    root = tmp_path_factory.mktemp("values")
    model, tok = tiny_lm("llama")
    fingerprint = LMDynamics(model, tok, max_new_tokens=4).model_fingerprint()
    save_value(ValueMLP(64, 8, 1), {"model": "other", "model_fingerprint": "0" * 16}, root / "other_model")
    save_value(ValueMLP(65, 8, 1), {"model": "llama", "model_fingerprint": fingerprint}, root / "other_d")
    save_value(ValueMLP(64, 8, 1), {"model": "llama", "model_fingerprint": fingerprint}, root / "good")
    (root / "corrupt").mkdir()
    (root / "corrupt" / "value.safetensors").write_bytes(b"not a safetensors file")
    return root


@pytest.mark.parametrize(
    ("value", "extra", "message"),
    [
        ("other_model", [], "trained on another model"),
        ("other_d", [], "d=65"),
        ("missing", [], "no value file"),
        ("corrupt", [], "corrupt or not a value file"),
        ("good", ["--set", "step_size=0"], "step_size"),
        ("good", ["--set", "step_size=-1"], "step_size"),
    ],
)
def test_bad_value_files_and_settings_are_one_line_exit_2(llama_dir, files, value, extra, message, capsys):
    argv = ["align", "Hi", "--model", llama_dir, "--max-new-tokens", "4", "--controller", "re_control",
            "--set", f"value={files / value}", *extra, "--quiet"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("mpc-llm: error: ") and err.count("\n") == 1 and message in err, err
