"""Running and storing comparisons: controllers at equal budgets, their records and run folders.

`compare` (`run`) runs every controller on every prompt and seed; `records` reads each answer off a
result at each budget, with its closeness to the base model (`closeness`) and held-out rewards
(`heldout`); `store` keeps the run folder and `records_file` its records files; `distributed` shares
the jobs among many processes; `merge` joins finished runs.
"""

from mpc_llm.evaluation.compare.run import (
    KEY,
    ORDER,
    SEED_STRIDE,
    Job,
    check_baseline_budgets,
    check_budgets,
    check_run_folder,
    check_seeds,
    compare,
    comparison_settings,
    pending_jobs,
    run_settings,
)

__all__ = [
    "KEY",
    "ORDER",
    "SEED_STRIDE",
    "Job",
    "check_baseline_budgets",
    "check_budgets",
    "check_run_folder",
    "check_seeds",
    "compare",
    "comparison_settings",
    "pending_jobs",
    "run_settings",
]
