"""Rewards (higher is better) and the cost functions built from them.

- `Reward`: scores a batch of (prompt, response) pairs -> ``(M,)``; rewards add and scale
  (``r1 + 0.5 * r2``, ``-r``) into a `RewardSum`.
- Built-in rewards: `VaderReward` (sentiment, offline), `HFRewardModel` (any sequence-classification
  reward model), `JudgeReward` (LLM-as-judge, log-odds of "yes"), `EmbeddingSimilarityReward`
  (sentence-transformers, optional), `CallableReward`, `LengthReward`, `RegexReward`, `KeywordReward`.
- Cost functions: `RewardCost` (``-scale * reward``, also ``reward.as_cost(scale)``), `ControlCost`
  (``(1/(2 sigma^2)) sum_t ||u_t||^2``), `KLCost` (``beta * KL(controlled || base)``); they compose
  with ``+``, ``-`` and ``*`` like any `mpc_llm.core.CostFunction`.
- `REWARDS`, `register_reward`, `make_reward` / `reward_from_spec` (`registry.py`): rewards by name
  (for the CLI and config files); `check_reward_spec` validates a spec without building it.
- `spec_from_flag` and `remote_code_requests` (`flags.py`): flag values into specs, and the reward
  models a spec asks to run their own code (``trust_remote_code``), which the CLI and
  `ExperimentConfig.from_file` refuse from a config file unless the caller allows it.

Heavy dependencies (transformers, vaderSentiment, sentence-transformers) are imported only when a
reward that needs them is built.

Example:
    >>> from mpc_llm.rewards import ControlCost, make_reward
    >>> reward = make_reward("vader") + 0.1 * make_reward("length", unit="words", target=20)
    >>> cost = reward.as_cost() + ControlCost(sigma=1.0)
"""

from __future__ import annotations

from mpc_llm.core import MissingDependencyError
from mpc_llm.lm.prompts import Prompt, is_messages, render_prompt, to_messages
from mpc_llm.rewards.base import Reward, RewardCost, RewardError, RewardSum
from mpc_llm.rewards.costs import ControlCost, KLCost
from mpc_llm.rewards.embedding import EmbeddingSimilarityReward
from mpc_llm.rewards.flags import allow_remote_code, refuse_remote_code, remote_code_requests, spec_from_flag
from mpc_llm.rewards.hf_classifier import HFRewardModel
from mpc_llm.rewards.judge import DEFAULT_RUBRIC, JudgeReward
from mpc_llm.rewards.registry import (
    REWARDS,
    check_reward_arguments,
    check_reward_spec,
    make_reward,
    register_reward,
    reward_class_of,
    reward_from_spec,
)
from mpc_llm.rewards.rules import CallableReward, KeywordReward, LengthReward, RegexReward
from mpc_llm.rewards.vader import VaderReward

__all__ = [
    "DEFAULT_RUBRIC",
    "REWARDS",
    "CallableReward",
    "ControlCost",
    "EmbeddingSimilarityReward",
    "HFRewardModel",
    "JudgeReward",
    "KLCost",
    "KeywordReward",
    "LengthReward",
    "MissingDependencyError",
    "Prompt",
    "RegexReward",
    "Reward",
    "RewardCost",
    "RewardError",
    "RewardSum",
    "VaderReward",
    "allow_remote_code",
    "check_reward_arguments",
    "check_reward_spec",
    "is_messages",
    "make_reward",
    "refuse_remote_code",
    "register_reward",
    "remote_code_requests",
    "render_prompt",
    "reward_class_of",
    "reward_from_spec",
    "spec_from_flag",
    "to_messages",
]
