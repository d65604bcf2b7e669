"""Learned values over the pre-logit state: data, training, files, and gradient ascent on them.

- `ValueMLP`: ``V(z)``, an MLP over the pre-logit ``z`` in R^d predicting the final reward;
- `collect` / `load_data` / `ValueData`: states of base-model rollouts labelled by the reward of the
  finished response, stored in resumable chunks;
- `TrainConfig` / `train_value`: Monte Carlo or RE-Control's temporal-difference targets, a held-out
  split by prompt, early stopping, the held-out error and rank correlation;
- `save_value` / `load_value` / `read_card`: safetensors plus a JSON card (the weights file's card is
  authoritative), no pickle; `ValueRef`, a value file a controller names, loaded once per model and
  refused for another, its card checked against the run (`ValueRef.check_for`); `ValueFileError`
  for a missing, corrupt or mismatched file;
- `mpc_llm.values.folder`: the folder ``train-value`` writes, which files are its own;
- `GradientAscentPolicy`: RE-Control's test-time step, a `mpc_llm.core.Policy`.

A layer of its own between ``controllers | lm`` and ``core``: it knows only `mpc_llm.core` (and
torch, safetensors), so the RE-Control controller can load a value by path.
"""

from mpc_llm.values.data import RecordStates, ValueData, collect, load_data, summarize
from mpc_llm.values.io import (
    ValueFileError,
    ValuePath,
    ValueRef,
    check_value_setting,
    load_value,
    read_card,
    save_value,
    weights_path,
)
from mpc_llm.values.network import ValueMLP
from mpc_llm.values.policy import GradientAscentPolicy
from mpc_llm.values.train import TrainConfig, evaluate, spearman, split_by_prompt, train_value

__all__ = [
    "GradientAscentPolicy",
    "RecordStates",
    "TrainConfig",
    "ValueData",
    "ValueFileError",
    "ValueMLP",
    "ValuePath",
    "ValueRef",
    "check_value_setting",
    "collect",
    "evaluate",
    "load_data",
    "load_value",
    "read_card",
    "save_value",
    "spearman",
    "split_by_prompt",
    "summarize",
    "train_value",
    "weights_path",
]
