"""The mpc-llm command: end to end on a tiny model, and one clear line for every bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from mpc_llm.cli import CLIError, main
from mpc_llm.experiment import DEFAULT_CONTROLLER

JSON_FIELDS = {
    "prompt",
    "response",
    "reward",
    "baseline_response",
    "baseline_reward",
    "baseline",
    "held_out",
    "baseline_held_out",
    "base_logp_mean",
    "baseline_base_logp_mean",
    "kl_estimate",
    "budget",
    "history",
    "model",
    "controller",
    "seed",
}


@pytest.fixture(scope="module")
def llama_dir(tiny_model_dir) -> str:
    return str(tiny_model_dir("llama"))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mpc_llm.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_align_end_to_end_prints_the_documented_json(llama_dir: str) -> None:
    args = ["--reward", "length", "--max-new-tokens", "8", "-n", "4", "--iterations", "2", "--seed", "3"]
    args += ["--json", "--quiet"]
    proc = run_cli("align", "Hello there", "--model", llama_dir, *args)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) == JSON_FIELDS
    assert out["budget"]["samples"] == 8 and out["budget"]["iterations"] == 2
    assert len(out["history"]) == 2 and out["controller"]["name"] == "aisp"
    assert out["reward"] == max(h["best_reward"] for h in out["history"])
    assert isinstance(out["response"], str) and isinstance(out["baseline_response"], str)
    again = json.loads(run_cli("align", "Hello there", "--model", llama_dir, *args).stdout)
    del again["budget"], out["budget"]  # wall-clock seconds differ
    assert again == out  # same seed, same answer


def test_align_reads_a_config_file_and_flags_override_it(llama_dir: str, tmp_path, capsys) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model: {llama_dir}\nlm: {{max_new_tokens: 6}}\nreward: length\n"
        "controller: {name: cem, sigma: 1.0, elite_fraction: 0.5, num_samples: 4, num_iterations: 3}\n"
    )
    assert main(["align", "Hi", "--config", str(config), "--iterations", "1", "--json", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["controller"] == {
        "name": "cem",
        "sigma": 1.0,
        "elite_fraction": 0.5,
        "num_samples": 4,
        "num_iterations": 1,
        "num_knots": 1,  # the project default, which the file did not override
    }
    assert out["budget"]["samples"] == 4


def test_compare_end_to_end(llama_dir: str, tmp_path, capsys) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Hello\nHow are you?\nTell me a story.\n")
    args = [
        "compare",
        "--model",
        llama_dir,
        "--reward",
        "length",
        "--prompts",
        str(prompts),
        "--controllers",
        "aisp,best_of_n",
        "--budgets",
        "4,8",
        "-n",
        "4",
        "--max-new-tokens",
        "6",
        "--out",
        str(tmp_path / "run"),
        "--quiet",
    ]
    assert main(args) == 0
    assert "| aisp | 8 |" in capsys.readouterr().out
    records = (tmp_path / "run" / "records.jsonl").read_text().splitlines()
    assert len(records) == 3 * 2 * 2
    assert main(args) == 2  # the folder holds this run: refuse without --resume
    assert "again with --resume" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["align", "   "], "the prompt is empty"),
        (
            ["align", "Hi", "--controller", "nope"],
            "unknown controller 'nope'; valid names: aisp, aisp_sample, args, best_of_n, blockwise_best_of_n",
        ),
        (["align", "Hi", "--reward", "nope"], "unknown reward 'nope'; valid names:"),
        (["align", "Hi", "--sigma", "-1"], "controller"),
        (["align", "Hi", "--lambda", "0"], "lambda"),
        (["align", "Hi", "--max-new-tokens", "0"], "lm.max_new_tokens"),
        (["align", "Hi", "--config", "/nonexistent/run.yaml"], "cannot read config file"),
        (
            ["compare", "--out", "x", "--controllers", "aisp", "--budgets", "2", "-n", "8"],
            "smaller than one iteration",
        ),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(argv: list[str], message: str, capsys, llama_dir: str) -> None:
    if argv[0] == "compare":
        argv = [*argv, "--model", llama_dir, "--reward", "length"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("mpc-llm: error: ") and err.count("\n") == 1
    assert message in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_cuda_device_without_a_gpu_is_refused(capsys) -> None:
    assert main(["align", "Hi", "--device", "cuda"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_info_runs(capsys) -> None:
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "embedded model" in out


def test_compare_takes_labelled_controllers_from_the_config_file(llama_dir: str, tmp_path, capsys) -> None:
    config = tmp_path / "compare.yaml"
    config.write_text(
        f"model: {llama_dir}\nlm: {{max_new_tokens: 4}}\nreward: length\ncontrollers:\n"
        "  bon: {name: best_of_n, num_samples: 4}\n"
        "  cem-wide: {name: cem, sigma: 2.0, elite_fraction: 0.5, num_samples: 4}\n"
    )
    args = ["compare", "--config", str(config), "--prompts", "bundled", "--num-prompts", "2",
            "--budgets", "4", "--sigma", "0.5", "--out", str(tmp_path / "run"), "--quiet"]  # fmt: skip
    with pytest.warns(UserWarning, match="no controller is labelled 'best_of_n'"):  # it is labelled "bon"
        assert main(args) == 0  # --sigma applies to cem only: best_of_n has no sigma
    settings = json.loads((tmp_path / "run" / "settings.json").read_text())
    assert settings["controllers"]["cem-wide"]["config"]["sigma"] == 0.5
    assert settings["controllers"]["bon"]["class"] == "BestOfN"
    assert "| cem-wide | 4 |" in capsys.readouterr().out


def test_compare_runs_the_config_files_labels_named_by_controllers(llama_dir: str, tmp_path) -> None:
    """``--controllers`` picks labels of the config file (the first label is no controller's name)."""
    config = tmp_path / "compare.yaml"
    config.write_text(
        f"model: {llama_dir}\nlm: {{max_new_tokens: 4}}\nreward: length\ncontrollers:\n"
        "  best_of_n: {name: best_of_n, num_samples: 4}\n"
        "  cem-wide: {name: cem, sigma: 2.0, num_samples: 4}\n"
        "  cem-narrow: {name: cem, sigma: 0.1, num_samples: 4}\n"
    )
    args = ["compare", "--config", str(config), "--controllers", "cem-narrow,best_of_n",
            "--prompts", "bundled", "--num-prompts", "2", "--budgets", "4",
            "--out", str(tmp_path / "run"), "--quiet"]  # fmt: skip
    assert main(args) == 0
    settings = json.loads((tmp_path / "run" / "settings.json").read_text())
    assert sorted(settings["controllers"]) == ["best_of_n", "cem-narrow"]
    assert settings["controllers"]["cem-narrow"]["config"]["sigma"] == 0.1


@pytest.mark.smollm
def test_align_on_the_embedded_default() -> None:
    """The README's first command, shortened: SmolLM2 + VADER + AISP with the default settings."""
    proc = run_cli("align", "Describe your Monday morning.", "--max-new-tokens", "12", "--iterations", "1",
                   "--json", "--quiet")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["model"] == "SmolLM2-135M-Instruct" and out["controller"]["name"] == "aisp"
    assert out["budget"]["samples"] == 8 and -1.0 <= out["reward"] <= 1.0
    assert out["reward"] >= max(h["best_reward"] for h in out["history"])


def test_flags_override_only_their_own_settings(tmp_path) -> None:
    from mpc_llm.cli import build_parser, experiment_config

    config = tmp_path / "run.yaml"
    config.write_text("lm: {max_new_tokens: 6}\ncontroller: {name: aisp, sigma: 1.0}\n")
    plain = experiment_config(build_parser().parse_args(["align", "Hi", "--config", str(config)]))
    with_tau = experiment_config(
        build_parser().parse_args(["align", "Hi", "--config", str(config), "--tau", "3"])
    )
    for cfg in (plain, with_tau):
        assert (cfg.lm.max_new_tokens, cfg.lm.temperature) == (6, 0.7)  # project defaults fill the rest
        assert {k: v for k, v in cfg.controller.items() if k != "tau"} == {
            "name": "aisp", "sigma": 1.0, "ess_target": DEFAULT_CONTROLLER["ess_target"], "alpha": 0.0,
            "num_samples": 8, "num_iterations": 4, "num_knots": 1}  # fmt: skip
    assert ("tau" in plain.controller, with_tau.controller.get("tau")) == (False, 3)  # tau: the controller's
    args = build_parser().parse_args(["align", "Hi", "--controller", "cem", "--lambda", "2"])
    with pytest.raises(CLIError, match="--lambda: controller 'cem' has no setting lambda"):
        experiment_config(args, args.controller)  # a flag is never dropped in silence (issue 35)
    args = build_parser().parse_args(["align", "Hi", "--controller", "cem"])
    cem = experiment_config(args, args.controller)
    assert cem.controller == {
        "name": "cem",
        "sigma_relative": DEFAULT_CONTROLLER["sigma_relative"],
        "num_knots": 1,
        "num_samples": 8,
        "num_iterations": 4,
    }


def test_compare_set_applies_where_a_controller_has_the_setting(llama_dir: str, tmp_path, capsys) -> None:
    base = ["compare", "--model", llama_dir, "--reward", "length", "--num-prompts", "1", "--budgets", "8",
            "--max-new-tokens", "3", "--quiet", "--controllers", "cem,best_of_n"]  # fmt: skip
    assert main([*base, "--set", "elite_fraction=0.5", "--out", str(tmp_path / "a")]) == 0
    settings = json.loads((tmp_path / "a" / "settings.json").read_text())["controllers"]
    assert settings["cem"]["config"]["elite_fraction"] == 0.5
    capsys.readouterr()
    assert main([*base, "--set", "bogus=1", "--out", str(tmp_path / "b")]) == 2
    assert "--set bogus: no selected controller has this setting" in capsys.readouterr().err


def test_compare_names_look_up_the_config_files_controllers_first(llama_dir: str, tmp_path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"model: {llama_dir}\nreward: length\nlm: {{max_new_tokens: 3}}\n"
                      "controllers:\n  best_of_n: {name: best_of_n, num_samples: 16}\n")  # fmt: skip
    args = ["compare", "--config", str(config), "--controllers", "best_of_n", "--num-prompts", "1",
            "--budgets", "16", "--out", str(tmp_path / "run"), "--quiet"]  # fmt: skip
    assert main(args) == 0
    settings = json.loads((tmp_path / "run" / "settings.json").read_text())["controllers"]
    assert settings["best_of_n"]["config"]["num_samples"] == 16


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "horizon=8", "--set", "commit=9"], "commit=9 exceeds horizon=8"),
        (["--set", "horizon=100"], "planning horizon 100 is longer than the episode (48 steps"),
        (["--reward", "judge", "--set", "horizon=8", "--set", "score=horizon"], "cannot score partial"),
    ],
)
def test_bad_receding_horizon_settings_fail_before_any_model_loads(argv, message, capsys) -> None:
    # the model does not exist: an error about it would mean the settings were checked too late
    base = ["align", "Hi", "--model", "/nonexistent/model", "--controller", "receding_horizon"]
    assert main([*base, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mpc-llm: error: ") and message in err


def test_sequential_budgets_and_partial_scoring_fail_before_any_model_loads(capsys) -> None:
    base = ["compare", "--out", "x", "--model", "/nonexistent/model", "--max-new-tokens", "48"]
    assert main([*base, "--controllers", "blockwise_best_of_n", "--budgets", "2"]) == 2
    assert "smaller than one planning step" in capsys.readouterr().err
    assert main([*base, "--controllers", "speculative_rejection", "--reward", "judge"]) == 2
    assert "cannot score partial" in capsys.readouterr().err


def test_shared_flags_reach_the_inner_controller_of_receding_horizon() -> None:
    from mpc_llm.cli import build_parser, experiment_config

    argv = ["align", "Hi", "--controller", "receding_horizon", "--sigma", "0.3", "--tau", "6",
            "--set", "horizon=8", "--set", "commit=4"]  # fmt: skip
    spec = experiment_config(build_parser().parse_args(argv), "receding_horizon").controller
    assert (spec["horizon"], spec["commit"]) == (8, 4)
    assert (spec["inner"]["name"], spec["inner"]["sigma"], spec["inner"]["tau"]) == ("aisp", 0.3, 6)


OUTSIDE_CONTROLLER = '''
"""A controller defined outside mpc_llm: the mean moves to the average of the k best samples."""
import torch
from pydantic import Field

from mpc_llm.controllers import GaussianConfig, GaussianController, register


class TopKConfig(GaussianConfig):
    k: int = Field(2, ge=1)


class TopKMean(GaussianController[TopKConfig]):
    config_class = TopKConfig

    def sample(self, state, num_samples, generators):
        return self.gaussian(state, num_samples, generators)

    def update(self, state, knots, costs):
        best = costs.topk(min(self.config.k, costs.shape[1]), dim=1, largest=False).indices
        elites = knots[torch.arange(knots.shape[0])[:, None], best]
        return state.replace(mean=elites.mean(dim=1))


register("top_k_mean", TopKMean)
'''


def test_a_controller_defined_outside_the_package_runs_through_compare_from_a_config_file(
    llama_dir: str, tmp_path, capsys, monkeypatch
) -> None:
    """Adding a controller touches nothing in mpc_llm: a module of the user's registers it (or the
    config names it by ``module:Class``), and a config file runs it beside the built-in baseline."""
    from mpc_llm.controllers import CONTROLLERS, unregister

    (tmp_path / "my_controllers.py").write_text(OUTSIDE_CONTROLLER)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "compare.yaml"
    config.write_text(
        f"model: {llama_dir}\nlm: {{max_new_tokens: 6}}\nreward: length\n"
        "controllers:\n"
        "  mine: {name: 'my_controllers:TopKMean', sigma: 1.0, k: 2, num_samples: 4}\n"
        "  best_of_n: {name: best_of_n, num_samples: 4}\n"
    )
    try:
        args = ["compare", "--config", str(config), "--prompts", "bundled", "--num-prompts", "2",
                "--budgets", "4,8", "--out", str(tmp_path / "run"), "--quiet"]  # fmt: skip
        assert main(args) == 0
        assert "| mine | 8 |" in capsys.readouterr().out
        records = [json.loads(line) for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
        assert {r["controller"] for r in records} == {"mine", "best_of_n"} and len(records) == 2 * 2 * 2
        settings = json.loads((tmp_path / "run" / "settings.json").read_text())
        mine = settings["controllers"]["mine"]  # the settings record its spec
        assert mine["class"] == "TopKMean" and mine["config"]["k"] == 2 and mine["config"]["sigma"] == 1.0
        assert "top_k_mean" in CONTROLLERS  # the module registered its own name on import, too
    finally:
        unregister("top_k_mean")
        unregister("my_controllers:TopKMean")


@pytest.mark.parametrize("then", ["finishes", "fails to import"])
def test_ctrl_c_that_a_library_swallowed_still_ends_the_command_as_interrupted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], then: str
) -> None:
    """Ctrl-C during a library's import can be caught by the library: the command then finishes, or
    a half-imported module fails its next import. Either way the user pressed Ctrl-C: one
    ``mpc-llm: interrupted`` line and status 130, not a success or an unrelated error."""
    import signal

    import mpc_llm.cli.app as app

    def swallowing(args: object) -> int:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10_000):  # the handler runs between bytecodes
                pass
        except BaseException:  # what the library did
            pass
        if then == "fails to import":
            raise ImportError("cannot import name 'x' from partially initialized module 'accelerate'")
        return 0

    monkeypatch.setattr(app, "cmd_info", swallowing)
    # as in a terminal: a test run started in the background inherits SIGINT ignored, which the
    # command keeps (see the last lines)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert main(["info"]) == 130
        assert capsys.readouterr().err.strip() == "mpc-llm: interrupted"
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back as it was
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # started in the background: Ctrl-C is not for it
        code, err = main(["info"]), capsys.readouterr().err
        assert code == (2 if then == "fails to import" else 0) and "interrupted" not in err
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
