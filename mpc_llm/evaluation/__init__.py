"""Evaluation, in three parts by what each does (and model-value training beside them):

- `mpc_llm.evaluation.prompts`: prompt sources and splits (files, the bundled set, datasets,
  ShareGPT's fixed splits);
- `mpc_llm.evaluation.compare`: running and storing comparisons (controllers at equal budgets,
  records, run folders, many processes, merged runs, sweeps);
- `mpc_llm.evaluation.summary`: reading records into summaries, metrics and plots;
- `mpc_llm.evaluation.value_training`: ``mpc-llm train-value``'s pipeline.

The names most callers need are here too (loaded on first use): `load_prompt_set`, `load_prompts`,
`summarize`, `markdown_table`, `merge_runs`, `RunStore` (`compare` is the sub-package; the function
is `mpc_llm.evaluation.compare.compare`).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_prompt_set": "mpc_llm.evaluation.prompts.files",
    "load_prompts": "mpc_llm.evaluation.prompts.files",
    "summarize": "mpc_llm.evaluation.summary.tables",
    "markdown_table": "mpc_llm.evaluation.summary.tables",
    "merge_runs": "mpc_llm.evaluation.compare.merge",
    "RunStore": "mpc_llm.evaluation.compare.store",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
