"""Rewards by name: building, validating and describing the reward specs of config files and flags.

A spec is a name (``"vader"``), a mapping ``{"name": ..., "weight": 1.0, **settings}`` (with
``accepts_partial: true`` to vouch that it can score unfinished text), or a list of those, whose
weighted sum is the reward. `check_reward_spec` validates one without building anything;
`reward_class_of` tells what it promises (``accepts_partial``) without loading a model.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

from mpc_llm.rewards.base import Reward, RewardSum
from mpc_llm.rewards.embedding import EmbeddingSimilarityReward
from mpc_llm.rewards.hf_classifier import HFRewardModel
from mpc_llm.rewards.judge import JudgeReward
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
    cls = _reward_class(name)
    check_reward_arguments(name, kwargs)
    return cls(**kwargs)


#: What each built-in reward needs, as a config file spells it (for messages).
_EXAMPLES = {
    "callable": "{name: callable, fn: 'package.module:function'}",
    "hf": "{name: hf, model: path/to/reward-model}",
    "regex": "{name: regex, pattern: 'thank(s| you)'}",
    "keyword": "{name: keyword, keywords: [thanks, please]}",
    "embedding": "{name: embedding, targets: ['a calm, kind answer']}",
}


def _reward_class(name: object) -> type[Reward]:
    if not isinstance(name, str) or name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; valid names: {', '.join(sorted(REWARDS))}")
    return REWARDS[name]


def check_reward_arguments(name: str, kwargs: Mapping[str, Any]) -> None:
    """Refuse settings reward ``name``'s constructor does not take, or required ones that are missing,
    without building it (nothing is loaded or imported).

    Example:
        >>> try:
        ...     check_reward_arguments("callable", {})
        ... except ValueError as err:
        ...     print(str(err).split(";")[0])
        reward 'callable' needs the setting fn

    Raises:
        ValueError: naming the unknown or missing settings and, for a missing one, an example spec.
    """
    params = list(inspect.signature(_reward_class(name).__init__).parameters.values())[1:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    named = [p for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    accepted = [p.name for p in named]
    if unknown := sorted(set(kwargs) - set(accepted)):
        raise ValueError(
            f"reward {name!r} has no setting {', '.join(unknown)}; "
            f"its settings: {', '.join(accepted) or 'none'}"
        )
    if missing := [p.name for p in named if p.default is inspect.Parameter.empty and p.name not in kwargs]:
        example = _EXAMPLES.get(name, f"{{name: {name}, {missing[0]}: ...}}")
        raise ValueError(
            f"reward {name!r} needs the setting {', '.join(missing)}; give the reward as a mapping, e.g. "
            f"in a config file: reward: {example}"
        )


def register_reward(name: str, cls: type[Reward], *, replace: bool = False) -> type[Reward]:
    """Make ``cls`` buildable as ``--reward name`` and ``reward: {name: name, ...}`` in config files.

    Raises:
        ValueError: ``name`` is taken by another class (pass ``replace=True``), or ``cls`` is not a
            `Reward` subclass.
    """
    if not (isinstance(cls, type) and issubclass(cls, Reward)):
        raise ValueError(f"register_reward({name!r}, ...) needs a Reward subclass, got {cls!r}")
    if REWARDS.get(name, cls) is not cls and not replace:
        raise ValueError(f"a reward is already registered as {name!r}; pass replace=True to replace it")
    REWARDS[name] = cls
    return cls


def spec_items(spec: object) -> list[tuple[str, dict[str, Any]]]:
    """``(name, settings)`` of each reward in a spec (``weight`` and ``accepts_partial`` removed)."""
    if isinstance(spec, str):
        return [(spec, {})]
    if isinstance(spec, Mapping):
        if "name" not in spec:
            raise ValueError(
                f"a reward spec needs a 'name' (one of {', '.join(sorted(REWARDS))}), got {dict(spec)!r}"
            )
        options = {k: v for k, v in spec.items() if k not in ("name", "weight", "accepts_partial")}
        weight = spec.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
            raise ValueError(f"the weight of reward {spec['name']!r} must be a finite number, got {weight!r}")
        return [(spec["name"], options)]
    if isinstance(spec, Sequence) and spec:
        return [item for s in spec for item in spec_items(s)]
    raise ValueError(
        f"a reward spec is a name, a mapping with a 'name', or a non-empty list of them; got {spec!r}"
    )


def check_reward_spec(spec: object) -> None:
    """Validate a reward spec (names, weights, settings) without building anything.

    Raises:
        ValueError: what is wrong and what to write instead.
    """
    for name, options in spec_items(spec):
        check_reward_arguments(name, options)


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
