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
  files); `check_reward_spec` validates a spec without building it, and `remote_code_requests`
  lists the reward models a spec asks to run their own code (``trust_remote_code``), which the CLI
  and `ExperimentConfig.from_file` refuse from a config file unless the caller allows it.

Heavy dependencies (transformers, vaderSentiment, sentence-transformers) are imported only when a
reward that needs them is built.

Example:
    >>> from mpc_llm.rewards import ControlCost, make_reward
    >>> reward = make_reward("vader") + 0.1 * make_reward("length", unit="words", target=20)
    >>> cost = reward.as_cost() + ControlCost(sigma=1.0)
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mpc_llm.core import MissingDependencyError
from mpc_llm.lm.hub import looks_like_a_path
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


def _spec_items(spec: object) -> list[tuple[str, dict[str, Any]]]:
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
        return [item for s in spec for item in _spec_items(s)]
    raise ValueError(
        f"a reward spec is a name, a mapping with a 'name', or a non-empty list of them; got {spec!r}"
    )


def check_reward_spec(spec: object) -> None:
    """Validate a reward spec (names, weights, settings) without building anything.

    Raises:
        ValueError: what is wrong and what to write instead.
    """
    for name, options in _spec_items(spec):
        check_reward_arguments(name, options)


def remote_code_requests(spec: object) -> list[str]:
    """The rewards in ``spec`` that ask to run code shipped with their model (``trust_remote_code``).

    Example:
        >>> remote_code_requests([{"name": "hf", "model": "org/rm", "trust_remote_code": True}, "vader"])
        ['org/rm']
    """
    try:
        items = _spec_items(spec)
    except ValueError:
        return []
    return [str(o.get("model", name)) for name, o in items if o.get("trust_remote_code")]


def refuse_remote_code(spec: object, source: object, allow: str) -> None:
    """Refuse a reward spec read from ``source`` (a config file) that asks for a reward model's remote
    code; ``allow`` says how the caller would allow it.

    Raises:
        ValueError: naming the file, the model and ``allow``.
    """
    if asks := remote_code_requests(spec):
        raise ValueError(
            f"config file {source} sets trust_remote_code for the reward model {asks[0]!r}, which would run "
            f"Python code shipped with that model; {allow} to allow it (only for models you trust)"
        )


def spec_from_flag(text: str, output_index: int | None = None) -> str | dict[str, Any]:
    """The reward spec of a command-line value: a built-in name, or a reward model's folder or hub id.

    A path is checked here, before anything loads: one that does not exist is refused without
    asking a hub.

    Raises:
        ValueError: a path that does not exist, or a file where a folder is needed.
    """
    path = Path(text).expanduser()
    if not (path.exists() or "/" in text or "\\" in text):
        return text
    if path.is_file():
        raise ValueError(
            f"--reward {text}: is a file; pass the folder that holds the reward model (config.json and "
            "weights), a hub id 'org/name', or a built-in name"
        )
    if not path.exists() and looks_like_a_path(text):
        raise ValueError(
            f"--reward {text}: no such folder; pass an existing folder holding a sequence-classification "
            f"reward model (config.json and weights), a hub id 'org/name', or a built-in reward "
            f"({', '.join(sorted(REWARDS))})"
        )
    spec: dict[str, Any] = {"name": "hf", "model": text}
    if output_index is not None:
        spec["output_index"] = output_index
    return spec


def allow_remote_code(spec: Any) -> Any:
    """``spec`` with ``trust_remote_code: true`` on every Hugging Face reward model (``name: hf``)."""
    if isinstance(spec, Mapping):
        return {**spec, "trust_remote_code": True} if spec.get("name") == "hf" else dict(spec)
    if isinstance(spec, Sequence) and not isinstance(spec, str):
        return [allow_remote_code(s) for s in spec]
    return spec


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
    "allow_remote_code",
    "check_reward_arguments",
    "check_reward_spec",
    "is_messages",
    "make_reward",
    "refuse_remote_code",
    "remote_code_requests",
    "render_prompt",
    "reward_class_of",
    "reward_from_spec",
    "spec_from_flag",
    "to_messages",
]
