"""Mutation testing of the paths every result flows through (not part of CI: it is slow).

    python scripts/mutation.py                                   # every module below
    python scripts/mutation.py core/importance.py evaluation/compare/records.py
    python scripts/mutation.py --in-process evaluation/compare/records.py   # faster: see below

Each module runs in its own copy of the project under ``.mutation/<module>/`` (git-ignored), with
``[tool.mutmut]`` of pyproject.toml narrowed to that module and to the tests listed for it below
(mutmut 3 then runs, per mutant, only those of them that reach the mutated function), at the
lowest CPU priority, ``MUTMUT_CHILDREN`` workers (default: the number of cores). Prints the kill
rate per module and the time taken; ``docs/mutation.md`` lists the surviving mutants that are
equivalent, with the reason. ``cd .mutation/<module> && mutmut show NAME`` prints a mutant's diff.
Needs the ``mutation`` extra (``pip install -e ".[mutation]"``).

``--in-process``: mutmut still generates the mutants, collects which tests reach which function
and runs the first mutant of every function, and `scripts/mutation_driver.py` runs the rest, each
worker in one Python process (mutmut starts pytest, torch and transformers anew for every mutant:
seconds each, where the targeted tests take a fraction of one).
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: module (under mpc_llm/) -> the fast tests that target it
TESTS: dict[str, list[str]] = {
    "core/importance.py": [  # test_ess_target's determinism test left out: 12 s alone (checked by hand)
        "tests/test_importance.py", "tests/test_closed_forms.py",
        "tests/test_properties_controllers.py::test_one_aisp_step_moves_the_mean_to_the_closed_form_for_any_alpha",
    ] + [
        f"tests/test_ess_target.py::{name}" for name in (
            "test_the_achieved_ess_fraction_is_the_target_for_arbitrary_costs",
            "test_an_attainable_target_is_met_within_the_tolerance",
            "test_the_temperature_is_in_the_units_of_the_costs",
            "test_with_a_log_ratio_the_target_is_met_when_the_ends_straddle_it",
            "test_a_target_outside_zero_one_is_one_clear_error",
            "test_lambda_or_ess_target_not_both",
            "test_aisp_reports_the_lambda_it_chose_and_reaches_the_target",
        )
    ] + ["tests/test_mutation_kills_importance.py"],
    "controllers": [
        "tests/test_controllers.py", "tests/test_receding_horizon.py", "tests/test_properties_controllers.py",
        "tests/test_closed_forms.py",
    ],
    "evaluation/compare/records.py": [
        "tests/test_properties_records.py",
        # final_records (sequential peers) and invalid records (NaN rewards):
        "tests/test_receding_horizon.py::test_compare_runs_sequential_peers_at_equal_budgets",
        "tests/test_bad_input.py::test_records_hold_only_finite_numbers_or_null",
        "tests/test_compare.py::test_records_at_each_budget_are_the_best_of_the_first_samples",
        "tests/test_compare.py::test_seconds_are_prorated_within_a_partly_used_iteration",
    ] + [  # compute, the steering figure and a value's work, on the tiny language model
        f"tests/test_curve.py::{name}" for name in (
            "test_compute_fields_add_up_on_a_language_model",
            "test_kl_proposal_averages_every_sample_within_the_budget",
            "test_sequential_records_count_what_they_re_read_and_their_value_work",
            "test_a_values_work_counts_in_model_token_equivalents_on_the_compute_axis",
        )
    ] + [  # samplers, AISP's sigma and lambda, RE-Control's records through compare
        "tests/test_samplers.py::test_anytime_records_draw_with_the_runs_own_uniform",
        "tests/test_samplers.py::test_samplers_run_by_name_through_compare",
        "tests/test_eval_protocol.py::test_every_record_holds_closeness_and_the_held_out_reward_never_steers",
        "tests/test_re_control.py::test_compare_records_re_control_beside_best_of_n_with_closeness_and_compute",
        "tests/test_mutation_kills_records.py",
    ],
    "evaluation/summary/tables.py": [
        "tests/test_properties_records.py",
        "tests/test_compare.py::test_summary_against_hand_computed_values",
        "tests/test_mutation_kills_tables.py",
    ],
    "evaluation/summary/metrics.py": [
        "tests/test_mutation_kills_metrics.py", "tests/test_properties_records.py",
        "tests/test_mutation_kills_tables.py",
    ],
    "evaluation/summary/verdicts.py": [
        "tests/test_mutation_kills_metrics.py", "tests/test_mutation_kills_tables.py",
    ],
    "core/tilted.py": [
        "tests/test_samplers.py", "tests/test_importance.py", "tests/test_mutation_kills_tilted.py",
    ],
    "values/train.py": [
        "tests/test_value_targets.py", "tests/test_values.py", "tests/test_mutation_kills_values_train.py",
    ],
    "evaluation/compare/merge.py": [
        "tests/test_merge.py", "tests/test_mutation_kills_merge.py",
    ],
    "evaluation/summary/curve.py": [  # the hand-computed tests (the LM ones are slow and add nothing here)
        f"tests/test_curve.py::{name}" for name in (
            "test_envelope_keeps_the_better_of_tied_points_and_drops_a_worse_farther_one",
            "test_locate_between_two_budgets_at_a_point_and_out_of_range",
            "test_a_point_between_two_budgets_is_compared_with_the_interpolated_curve_prompt_by_prompt",
            "test_too_few_prompts_give_numbers_and_no_verdict",
            "test_a_missing_steering_figure_is_unknown_never_zero",
            "test_the_perplexity_axis_is_a_distance_from_the_models_own_samples",
            "test_a_point_beyond_the_curve_is_compared_with_its_last_point_and_never_extrapolated",
            "test_a_point_above_the_curve_and_its_held_out_score_read_with_the_same_weights",
            "test_unknown_closeness_gives_no_comparison",
            "test_records_from_before_compute_still_summarise_with_compute_unknown",
        )
    ] + ["tests/test_mutation_kills_curve.py"],
    "controllers/sampling.py": [  # the samplers' tests without QAlign's (QAlign is not a Sampler)
        f"tests/test_samplers.py::{name}" for name in (
            "test_soft_best_of_n_returns_the_tilted_model_for_large_n",
            "test_an_infinite_beta_returns_base_samples",
            "test_aisp_sampling_mode_draws_by_its_weights_and_estimates_log_z",
            "test_the_kl_figure_is_the_kl_of_the_weights_to_the_sample",
            "test_the_kl_figure_reads_log_n_as_beta_goes_to_zero",
            "test_anytime_records_draw_with_the_runs_own_uniform",
            "test_samplers_run_by_name_through_compare",
            "test_a_bad_beta_is_refused",
            "test_an_ess_fraction_outside_zero_one_is_refused",
            "test_bad_sampler_input_fails_in_one_line_before_any_model_loads",
            "test_aisp_sampling_mode_targets_the_tilted_noise_smoothed_model_at_a_sizeable_sigma",
        )
    ] + ["tests/test_mutation_kills_sampling.py"],
    "controllers/smc.py": [
        f"tests/test_samplers.py::{name}" for name in (
            "test_smc_returns_the_tilted_model_with_many_particles",
            "test_smc_z_estimate_is_unbiased",
            "test_an_infinite_beta_returns_base_samples",
            "test_a_bad_beta_is_refused",
            "test_an_ess_fraction_outside_zero_one_is_refused",
            "test_smc_refuses_a_reward_without_partial_scores_unless_one_block",
            "test_budgets_below_one_step_are_refused",
            "test_bad_sampler_input_fails_in_one_line_before_any_model_loads",
            "test_smc_chooses_beta_at_the_first_block_whose_twists_differ",
        )
    ] + [
        "tests/test_value_provenance.py::test_smc_says_what_to_raise_in_each_unit",
        "tests/test_mutation_kills_smc.py",
    ],
    "controllers/aisp.py": [
        "tests/test_closed_forms.py", "tests/test_config.py",
        "tests/test_properties_controllers.py::test_one_aisp_step_moves_the_mean_to_the_closed_form_for_any_alpha",
        "tests/test_ess_target.py::test_aisp_reports_the_lambda_it_chose_and_reaches_the_target",
        "tests/test_ess_target.py::test_lambda_or_ess_target_not_both",
        "tests/test_controllers.py::test_aisp_drives_the_point_mass_to_its_goal",
        "tests/test_mutation_kills_aisp.py",
    ],
    "controllers/qalign.py": [
        f"tests/test_samplers.py::{name}" for name in (
            "test_qalign_chains_reach_the_tilted_model",
            "test_qalign_reads_whether_a_system_commits_per_row",
            "test_qalign_without_the_length_factor_would_fail",
            "test_one_qalign_step_accepts_with_the_formula",
            "test_qalign_regenerates_rows_of_different_prefix_lengths_on_a_language_model",
            "test_an_infinite_beta_returns_base_samples",
            "test_a_bad_beta_is_refused",
        )
    ] + [
        "tests/test_value_provenance.py::test_qalign_never_spends_more_tokens_than_its_budget",
        "tests/test_dtype_and_per_row.py::test_qalign_on_a_language_model_decodes_once_per_proposal_and_equals_the_grouped_path",
        "tests/test_contracts.py", "tests/test_mutation_kills_qalign.py",
    ],
    "controllers/twisted_smc.py": ["tests/test_twisted_smc.py"],
    "values/terminal.py": ["tests/test_terminal_value.py"],
    "dynamics/lm_closeness.py": [
        "tests/test_closeness.py", "tests/test_properties_records.py",
        "tests/test_properties_controllers.py::test_the_prelogit_scale_is_the_rms_of_teacher_forced_prelogits",
    ],
}  # fmt: skip


def toml_list(values: list[str]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def prepare(module: str) -> Path:
    """A fresh copy of the project (tracked and untracked files, not ignored ones) for ``module``."""
    work = ROOT / ".mutation" / module.replace("/", "_").removesuffix(".py")
    if work.exists():
        shutil.rmtree(work)
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, work / name)
    pyproject = (work / "pyproject.toml").read_text()
    target = f"mpc_llm/{module}" if module.endswith(".py") else f"mpc_llm/{module}/*"
    only = f"only_mutate = {toml_list([target])}"
    pyproject = re.sub(r"only_mutate = \[.*?\]", only, pyproject, flags=re.S)
    pyproject = re.sub(
        r"pytest_add_cli_args_test_selection = \[.*?\]",
        f"pytest_add_cli_args_test_selection = {toml_list(TESTS[module])}",
        pyproject,
        flags=re.S,
    )
    (work / "pyproject.toml").write_text(pyproject)
    return work


def lowest_priority(pid: int) -> None:
    """Give process ``pid``'s session (its own, ``start_new_session``) the lowest CPU share. Under
    Linux's autogroup scheduling (``/proc/sys/kernel/sched_autogroup_enabled``) a task's nice value
    ranks it only within its session: a ``nice -n 19`` mutmut still takes a whole core from another
    session's studies and stalls their multi-threaded kernels. The session's own nice fixes that."""
    with contextlib.suppress(OSError):  # not Linux, or no autogroup: nice alone
        Path(f"/proc/{pid}/autogroup").write_text("19")


def _lowest(command: list[str], **kwargs: object) -> subprocess.Popen:
    """Start ``command`` niced, in a session of its own at the lowest priority (`lowest_priority`)."""
    proc = subprocess.Popen(["nice", "-n", "19", *command], start_new_session=True, **kwargs)  # type: ignore[call-overload]
    lowest_priority(proc.pid)
    return proc


def statuses(work: Path, mutmut: str, env: dict[str, str]) -> dict[str, str]:
    """Each mutant's status in mutmut's results (killed, survived, timeout, not checked, ...)."""
    out = subprocess.run(
        [mutmut, "results", "--all", "true"], cwd=work, env=env, capture_output=True, text=True, check=False
    ).stdout
    found = (line.strip().rpartition(": ") for line in out.splitlines())
    return {name: status for name, _, status in found if "__mutmut_" in name}


def drive(work: Path, names: list[str], children: int, env: dict[str, str]) -> dict[str, str]:
    """The verdicts of ``names`` by `scripts/mutation_driver.py`, ``children`` processes each
    running every ``children``-th mutant in one Python process (their output in ``driver-K.log``)."""
    mutants = work / "mutants"
    env = {**env, "PYTHONPATH": str(mutants)}  # the trampolined copy, before the installed package
    procs = []
    for k in range(children):
        log = (work / f"driver-{k}.log").open("w")
        command = [sys.executable, str(ROOT / "scripts" / "mutation_driver.py"), *names[k::children]]
        procs.append((_lowest(command, cwd=mutants, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    verdicts: dict[str, str] = {}
    for k, (proc, log) in enumerate(procs):
        proc.wait()
        log.close()
        for line in (work / f"driver-{k}.log").read_text().splitlines():
            if line.startswith("MUTANT "):
                name, _, verdict = line.removeprefix("MUTANT ").rpartition(": ")
                verdicts[name] = verdict
    return verdicts


def run(module: str, mutmut: str, in_process: bool = False) -> tuple[collections.Counter, float]:
    """Mutate ``module`` in a fresh copy; its mutants' counts by status and the seconds taken.

    ``in_process``: mutmut generates the mutants, collects its stats and runs the first mutant of
    every function; `scripts/mutation_driver.py` runs the others, each in one Python process per
    worker (the same verdicts, without a pytest start per mutant)."""
    work = prepare(module)
    env = {**os.environ, "PYTHONPATH": str(work)}
    children = os.environ.get("MUTMUT_CHILDREN", str(os.cpu_count() or 1))
    start = time.perf_counter()
    only_first = ["*__mutmut_1"] if in_process else []
    _lowest([mutmut, "run", "--max-children", children, *only_first], cwd=work, env=env).wait()
    status = statuses(work, mutmut, env)
    if in_process:
        todo = [name for name, s in status.items() if s == "not checked"]
        status.update(drive(work, todo, int(children), env))
    seconds = time.perf_counter() - start
    survivors = sorted(name for name, s in status.items() if s == "survived")
    (work / "survivors.txt").write_text("\n".join(survivors) + "\n")
    return collections.Counter(status.values()), seconds


def main(modules: list[str]) -> None:
    in_process = "--in-process" in modules
    modules = [m for m in modules if m != "--in-process"]
    mutmut = str(Path(sys.executable).parent / "mutmut")
    if not Path(mutmut).exists():
        mutmut = "mutmut"
    unknown = [m for m in modules if m not in TESTS]
    if unknown:
        raise SystemExit(f"unknown module(s) {unknown}; choose from {list(TESTS)}")
    rows = []
    for module in modules or list(TESTS):
        counts, seconds = run(module, mutmut, in_process)
        killed = counts["killed"] + counts["timeout"] + counts["caught by type check"]
        total = sum(counts.values())
        rows.append((module, killed, counts["survived"], total - killed - counts["survived"], total, seconds))
    print(f"\n{'module':28} {'killed':>7} {'survived':>8} {'other':>6} {'rate':>7} {'seconds':>8}")
    for module, killed, survived, other, total, seconds in rows:
        rate = f"{killed / total:.1%}" if total else "-"
        print(f"{module:28} {killed:7d} {survived:8d} {other:6d} {rate:>7} {seconds:8.0f}")
    print("survivors: .mutation/<module>/survivors.txt; equivalent ones: docs/mutation.md")


if __name__ == "__main__":
    main(sys.argv[1:])
