"""The command line of the comparison protocol: best-of-N beside the steered response in ``align``,
``--eval-reward``, ``--ess-target`` and ``--sigma-relative``, and their bad inputs (one line each)."""

from __future__ import annotations

import json

import pytest

from mpc_llm.cli import main


@pytest.fixture(scope="module")
def llama_dir(tiny_model_dir) -> str:
    return str(tiny_model_dir("llama"))


def test_align_prints_the_steered_response_beside_best_of_n_at_the_same_budget(llama_dir, capsys) -> None:
    argv = ["align", "Hello there", "--model", llama_dir, "--reward", "length", "--max-new-tokens", "6",
            "-n", "4", "--iterations", "2", "--eval-reward", "keyword", "--set", "num_knots=1", "--quiet",
            "--ess-target", "0.5", "--sigma-relative", "0.3"]  # fmt: skip
    with pytest.raises(ValueError, match="keywords"):  # keyword needs its settings: refused before loading
        from mpc_llm.cli.options import experiment_config
        from mpc_llm.cli.parser import build_parser

        experiment_config(build_parser().parse_args(argv))
    argv[argv.index("keyword")] = "vader,length"
    assert main(argv) == 2  # length is the optimised reward: it holds nothing out (issue 23)
    assert "eval_reward 'length' is the reward being optimised" in capsys.readouterr().err
    argv[argv.index("vader,length")] = "vader"
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()  # (a tiny random model's responses hold newlines)
    steered = next(x for x in lines if x.startswith("steered   (reward "))
    best_of = next(x for x in lines if x.startswith("best-of-8 (reward "))
    assert "held-out vader " in steered and "held-out vader " in best_of
    assert "base log-lik " in steered and "/token" in best_of
    assert any(x.startswith("8 samples scored in 2 iterations by each") for x in lines)
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["held_out"]) == set(out["baseline_held_out"]) == {"vader"}
    assert out["baseline"] == "best_of_n (8 samples)" and out["base_logp_mean"] < 0
    assert out["controller"]["ess_target"] == 0.5 and "lambda" not in out["controller"]
    assert out["controller"]["sigma_relative"] == 0.3 and "sigma" not in out["controller"]


def test_compare_records_the_held_out_reward_and_closeness(llama_dir, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    argv = ["compare", "--model", llama_dir, "--reward", "length", "--max-new-tokens", "5", "--num-prompts",
            "2", "--budgets", "4,8", "-n", "4", "--controllers", "aisp,best_of_n", "--eval-reward", "vader",
            "--sigma-relative", "0.2", "--ess-target", "0.5", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "held-out vader" in table and "selection bound" in table and "bootstrap" in table
    records = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    assert all("vader" in r["eval"] and r["base_ppl"] > 1 for r in records)
    settings = json.loads((out / "settings.json").read_text())
    assert settings["eval_reward"] == ["vader"] and settings["eval_rewards"] == ["vader"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--ess-target", "1.5"], "ess_target is the effective sample size to reach as a fraction"),
        (["--ess-target", "0"], "must be in (0, 1]"),
        (["--ess-target", "0.5", "--lambda", "0.1"], "give either lambda"),
        (["--sigma-relative", "0.1", "--sigma", "0.5"], "give either sigma"),
        (["--eval-reward", "nope"], "eval reward 'nope'"),
        (["--eval-reward", "/nonexistent/rm"], "--eval-reward /nonexistent/rm: no such folder"),
    ],
)
def test_bad_protocol_input_is_one_clear_error_line(capsys, extra: list[str], message: str) -> None:
    assert main(["align", "Hi", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mpc-llm: error: ") and len(err.splitlines()) == 1 and message in err


def test_the_project_defaults_are_scale_free_and_a_flag_replaces_the_other_form(tmp_path) -> None:
    from mpc_llm.cli.options import experiment_config
    from mpc_llm.cli.parser import build_parser
    from mpc_llm.experiment import DEFAULT_CONTROLLER, ExperimentConfig

    default = ExperimentConfig().controller
    assert default["sigma_relative"] == DEFAULT_CONTROLLER["sigma_relative"] and "sigma" not in default
    assert default["ess_target"] == DEFAULT_CONTROLLER["ess_target"] and "lambda" not in default
    config = tmp_path / "run.yaml"
    config.write_text("controller: {name: aisp, sigma_relative: 0.1, lambda: 0.2}\n")

    def controller(*flags: str) -> dict:
        return experiment_config(build_parser().parse_args(["align", "Hi", "--config", str(config), *flags]))\
            .controller  # fmt: skip

    assert (controller()["sigma_relative"], controller()["lambda"]) == (0.1, 0.2)
    assert "ess_target" not in controller()  # the file's lambda replaces the default ess_target
    flagged = controller("--sigma", "1.5", "--ess-target", "0.6")  # each flag replaces the file's other form
    assert (flagged["sigma"], flagged["ess_target"]) == (1.5, 0.6)
    assert "sigma_relative" not in flagged and "lambda" not in flagged
    args = build_parser().parse_args(["align", "Hi", "--controller", "receding_horizon", "--lambda", "0.3"])
    rh = experiment_config(args, args.controller).controller
    assert rh["inner"]["lambda"] == 0.3 and "ess_target" not in rh["inner"]
