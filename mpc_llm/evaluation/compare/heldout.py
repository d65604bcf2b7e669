"""Held-out evaluation rewards: scored on the returned responses, never used to optimise.

A comparison optimises one reward (the *proxy*) and may score its returned responses with others
(the *gold* rewards of reward over-optimisation studies, Gao et al. 2023): a gain that does not
carry over to a reward the controller never saw is a reward exploit, not a better response. Each
record gets ``"eval": {label: score}``; a score the reward could not give (NaN) is recorded as null
with a warning naming the record, and summaries leave it out of the means and say how many.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from mpc_llm.lm import Prompt
from mpc_llm.rewards import Reward, reward_from_spec


def eval_label(spec: Any) -> str:
    """A short name for a reward spec: the name, or ``name:model`` for a reward model.

    Example:
        >>> eval_label("vader"), eval_label({"name": "hf", "model": "org/rm"})
        ('vader', 'hf:org/rm')
    """
    if isinstance(spec, str):
        return spec
    if isinstance(spec, Mapping):
        name = str(spec.get("name", "?"))
        return f"{name}:{spec['model']}" if "model" in spec else name
    return "+".join(eval_label(s) for s in spec)


def eval_labels(specs: Sequence[Any]) -> list[str]:
    """One distinct label per spec (a repeated one gets ``#2``, ``#3``, ...)."""
    labels: list[str] = []
    for spec in specs:
        label = base = eval_label(spec)
        k = 2
        while label in labels:
            label, k = f"{base}#{k}", k + 1
        labels.append(label)
    return labels


def load_eval_rewards(specs: Sequence[Any]) -> dict[str, Reward]:
    """Build each held-out reward, ``label -> Reward``; one that fails to load says which it was.

    Raises:
        ValueError: naming the eval reward and why it could not be loaded.
    """
    out: dict[str, Reward] = {}
    for label, spec in zip(eval_labels(specs), specs, strict=True):
        try:
            out[label] = reward_from_spec(spec)
        except (ValueError, OSError, ImportError, RuntimeError, TypeError) as err:
            raise ValueError(f"eval reward {label!r} could not be loaded: {err}") from err
    return out


def score_held_out(
    records: list[dict[str, Any]], prompts: Mapping[int, Prompt], rewards: Mapping[str, Reward]
) -> list[dict[str, Any]]:
    """Add ``"eval": {label: score or None}`` to every record with a response (in place, returned).

    Each distinct (prompt, response) is scored once per reward, all in one call.
    """
    if not rewards:
        return records
    scored = [r for r in records if isinstance(r.get("response"), str)]
    pairs = list(dict.fromkeys((r["prompt_index"], r["response"]) for r in scored))
    for label, reward in rewards.items():
        values = reward.score([prompts[i] for i, _ in pairs], [text for _, text in pairs]).tolist()
        by_pair = dict(zip(pairs, values, strict=True))
        for r in scored:
            value = float(by_pair[(r["prompt_index"], r["response"])])
            if not math.isfinite(value):
                warnings.warn(
                    f"eval reward {label!r} gave {value} for prompt {r['prompt_index']} "
                    f"({r['controller']}, seed {r['seed']}, budget {r['budget']}); recorded as null",
                    RuntimeWarning,
                    stacklevel=2,
                )
            r.setdefault("eval", {})[label] = value if math.isfinite(value) else None
    return records
