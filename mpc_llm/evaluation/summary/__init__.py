"""Reading records into summaries, metrics and plots: the tables of ``summary.md``, the paired
statistics behind them (`metrics`) and the frontier plot (`frontier`)."""

from mpc_llm.evaluation.summary.tables import (
    AMORTISED_OVER,
    BOOTSTRAP_KEYS,
    amortised_learning,
    closeness_table,
    is_valid,
    learning_costs,
    markdown_table,
    plot_reward_vs_samples,
    summarize,
    write_summary,
)

__all__ = [
    "AMORTISED_OVER",
    "BOOTSTRAP_KEYS",
    "amortised_learning",
    "closeness_table",
    "is_valid",
    "learning_costs",
    "markdown_table",
    "plot_reward_vs_samples",
    "summarize",
    "write_summary",
]
