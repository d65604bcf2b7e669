"""Rewards (higher is better) and the cost functions built from them.

- `Reward`: scores a batch of (prompt, response) pairs -> ``(M,)``; rewards add and scale
  (``r1 + 0.5 * r2``, ``-r``) into a `RewardSum`.
- Built-in rewards: `VaderReward` (sentiment, offline), `HFRewardModel` (any sequence-classification
  reward model), `JudgeReward` (LLM-as-judge, log-odds of "yes"), `EmbeddingSimilarityReward`
  (sentence-transformers, optional), `CallableReward`, `LengthReward`, `RegexReward`, `KeywordReward`.
- Cost functions: `RewardCost` (``-scale * reward``, also ``reward.as_cost(scale)``), `ControlCost`
  (``(1/(2 sigma^2)) sum_t ||u_t||^2``), `KLCost` (``beta * KL(controlled || base)``); they compose
  with ``+``, ``-`` and ``*`` like any `mpc_llm.core.CostFunction`.
- `REWARDS` and `make_reward` / `reward_from_spec`: built-in rewards by name (for the CLI and config
  files).

Heavy dependencies (transformers, vaderSentiment, sentence-transformers) are imported only when a
reward that needs them is built.

Example:
    >>> from mpc_llm.rewards import ControlCost, make_reward
    >>> reward = make_reward("vader") + 0.1 * make_reward("length", unit="words", target=20)
    >>> cost = reward.as_cost() + ControlCost(sigma=1.0)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mpc_llm.core import MissingDependencyError
from mpc_llm.lm.prompts import Prompt, is_messages, render_prompt, to_messages
from mpc_llm.rewards.base import Reward, RewardCost, RewardError, RewardSum
from mpc_llm.rewards.costs import ControlCost, KLCost
from mpc_llm.rewards.embedding import EmbeddingSimilarityReward
from mpc_llm.rewards.hf_classifier import HFRewardModel
from mpc_llm.rewards.judge import DEFAULT_RUBRIC, JudgeReward
from mpc_llm.rewards.rules import CallableReward, KeywordReward, LengthReward, RegexReward
from mpc_llm.rewards.vader import VaderReward

#: Built-in rewards by name, as the CLI and config files spell them.
REWARDS: dict[str, type[Reward]] = {
    "vader": VaderReward,
    "hf": HFRewardModel,
    "judge": JudgeReward,
    "embedding": EmbeddingSimilarityReward,
    "length": LengthReward,
    "regex": RegexReward,
    "keyword": KeywordReward,
    "callable": CallableReward,
}


def make_reward(name: str, **kwargs: Any) -> Reward:
    """Build the built-in reward ``name`` with keyword arguments for its constructor.

    Example:
        >>> make_reward("keyword", keywords=["thanks"]).score("hi", ["thanks!"]).tolist()
        [1.0]

    Raises:
        ValueError: for an unknown name (the message lists the valid names).
    """
    try:
        cls = REWARDS[name]
    except KeyError:
        raise ValueError(f"unknown reward {name!r}; valid names: {', '.join(sorted(REWARDS))}") from None
    return cls(**kwargs)


class _SpecTraits:
    """What a reward spec promises before it is built (for checks that must not load a model)."""

    def __init__(self, traits: list[bool], spec: object) -> None:
        self.accepts_partial = all(traits)
        self.spec = spec

    def __repr__(self) -> str:
        return f"reward {self.spec!r}"


def reward_class_of(spec: str | Mapping[str, Any] | Sequence[Mapping[str, Any] | str]) -> _SpecTraits:
    """The traits (``accepts_partial``) of the reward a spec builds, without building it.

    Example:
        >>> reward_class_of("judge").accepts_partial, reward_class_of(["vader", "length"]).accepts_partial
        (False, True)
    """
    items = [spec] if isinstance(spec, str | Mapping) else list(spec)
    traits = []
    for item in items:
        name = item if isinstance(item, str) else item.get("name")
        vouched = None if isinstance(item, str) else item.get("accepts_partial")
        if name in REWARDS:
            traits.append(REWARDS[name].accepts_partial if vouched is None else bool(vouched))
    return _SpecTraits(traits, spec)


def reward_from_spec(spec: str | Mapping[str, Any] | Sequence[Mapping[str, Any] | str]) -> Reward:
    """Build a reward from a config value.

    Args:
        spec: a name (``"vader"``); a mapping ``{"name": ..., "weight": 1.0, **kwargs}`` (with
            ``accepts_partial: true`` to vouch that it can score unfinished text); or a list of
            those, whose weighted sum is the reward.

    Example:
        >>> spec = [{"name": "keyword", "keywords": ["thanks"]}, {"name": "length", "weight": 0.5}]
        >>> reward_from_spec(spec).score("hi", ["thanks a lot"]).tolist()
        [2.5]
    """
    if isinstance(spec, str):
        return make_reward(spec)
    if isinstance(spec, Mapping):
        options = dict(spec)
        if "name" not in options:
            raise ValueError(
                f"a reward spec needs a 'name' (one of {', '.join(sorted(REWARDS))}), got {spec!r}"
            )
        name = options.pop("name")
        weight = options.pop("weight", 1.0)
        partial = options.pop("accepts_partial", None)
        reward = make_reward(name, **options)
        if partial is not None:  # the user vouches (or not) that it scores unfinished text
            reward.accepts_partial = bool(partial)
        return reward if weight == 1.0 else weight * reward
    if isinstance(spec, Sequence) and spec:
        terms = [reward_from_spec(s) for s in spec]
        return terms[0] if len(terms) == 1 else RewardSum([(1.0, t) for t in terms])
    raise ValueError(
        f"a reward spec is a name, a mapping with a 'name', or a non-empty list of them; got {spec!r}"
    )


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
    "is_messages",
    "make_reward",
    "render_prompt",
    "reward_class_of",
    "reward_from_spec",
    "to_messages",
]
