"""Prompt sources and splits: prompt files, the bundled set, datasets and ShareGPT's fixed splits.

`load_prompt_set` / `load_prompts` read any source by its spec (a ``.jsonl`` / ``.csv`` / ``.txt``
file, ``bundled``, ``sharegpt:train|dev|test``, ``hh-rlhf``, ``shp``; `files`); ShareGPT's selection
rules and splits are `sharegpt_select`, its file and cache `sharegpt`.
"""

from mpc_llm.evaluation.prompts.files import (
    BUNDLED,
    DATASETS,
    NAMED,
    PromptFileError,
    PromptSet,
    bundled_prompts,
    load_dataset_prompts,
    load_prompt_set,
    load_prompts,
)

__all__ = [
    "BUNDLED",
    "DATASETS",
    "NAMED",
    "PromptFileError",
    "PromptSet",
    "bundled_prompts",
    "load_dataset_prompts",
    "load_prompt_set",
    "load_prompts",
]
