"""Value files: the weights in one safetensors file whose metadata holds the card, and a JSON copy.

``FOLDER/value.safetensors`` holds the network's tensors and, in its metadata under ``card``, the
card (JSON): the architecture, the model it was trained on (name, fingerprint, ``d``), the reward,
the prompts and their split, sample counts, losses and held-out figures. It is written to a
temporary file and renamed into place, so a reader never sees half a file; ``FOLDER/card.json`` is a
readable copy written after it. No pickle anywhere: loading runs no code from the file.

**The weights file's card is authoritative**: it travels with the tensors it describes (a
``.safetensors`` file may be named on its own). ``card.json`` is only a copy to read; a folder whose
``card.json`` says something else (an edit, a copy from another value) is refused, naming the first
setting that differs, rather than one of the two being silently ignored. A card holds strict JSON: a
figure that is not a number (NaN, e.g. a rank correlation of constant rewards) is ``null``.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator

from mpc_llm.core import Dynamics, require
from mpc_llm.values.network import ValueMLP

WEIGHTS = "value.safetensors"
CARD = "card.json"
FORMAT = "mpc_llm.value/1"


class ValueFileError(ValueError):
    """A value file that is missing, corrupt, or made for another model."""


def check_value_setting(value: str) -> str:
    """A controller's ``value`` setting, refused when empty (which would name the current folder).

    Raises:
        ValueError: an empty or blank ``value``.
    """
    if not str(value).strip():
        raise ValueError(
            "value is empty; give the folder a value was trained into (`mpc-llm train-value --out "
            "values/NAME`, then --set value=values/NAME) or its .safetensors file"
        )
    return value


#: A controller's ``value`` setting: a value folder or ``.safetensors`` file, refused when empty
#: (`check_value_setting`).
ValuePath = Annotated[str, AfterValidator(check_value_setting)]


def weights_path(path: str | os.PathLike[str]) -> Path:
    """``path`` itself if it is a file, else ``path / value.safetensors``."""
    p = Path(path)
    return p if p.suffix == ".safetensors" else p / WEIGHTS


def save_value(net: ValueMLP, card: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``net`` and its ``card`` to the folder ``path`` (created); returns the weights file."""
    st = require("safetensors.torch", extra="hf", feature="to save value functions", package="safetensors")
    target = weights_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    full = finite({"format": FORMAT, **dict(card), "architecture": net.architecture()})
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    tmp = target.with_name(target.name + ".tmp")
    st.save_file(tensors, str(tmp), metadata={"card": json.dumps(full, allow_nan=False)})
    os.replace(tmp, target)
    card_tmp = target.with_name(CARD + ".tmp")
    card_tmp.write_text(json.dumps(full, indent=2, allow_nan=False) + "\n")
    os.replace(card_tmp, target.with_name(CARD))
    return target


def finite(value: Any) -> Any:
    """``value`` with every float that is not finite (NaN, infinities) replaced by None, in nested
    mappings and lists: what strict JSON can hold."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def read_card(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The card of the value file at ``path`` (a folder or the ``.safetensors`` file): the one in the
    weights file's metadata, which is authoritative (module docstring).

    Raises:
        ValueFileError: no such file, not a readable value file, a file without a card, or a folder
            whose ``card.json`` disagrees with the weights file's card.
    """
    st = require("safetensors", extra="hf", feature="to load value functions")
    target = weights_path(path)
    if not target.is_file():
        raise ValueFileError(f"no value file at {target}; train one with `mpc-llm train-value --out "
                             f"{Path(path) if str(path).strip() else 'FOLDER'}`")  # fmt: skip
    try:
        with st.safe_open(str(target), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as err:  # safetensors raises its own error types on a corrupt header
        raise ValueFileError(
            f"{target} is corrupt or not a value file ({type(err).__name__}: {err})"
        ) from None
    if "card" not in meta:
        raise ValueFileError(
            f"{target} holds tensors but no card (the metadata 'card' that `mpc-llm train-value` writes): "
            "without it the network cannot be rebuilt or checked against the model; train the value "
            "with `mpc-llm train-value`"
        )
    try:
        card = json.loads(meta["card"])
    except ValueError as err:
        raise ValueFileError(f"{target} has a card that is not JSON ({err}); train the value again") from None
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise ValueFileError(f"{target} is not a value file of this format ({FORMAT})")
    _check_copy(target, card)
    return card


def _check_copy(target: Path, card: Mapping[str, Any]) -> None:
    """Refuse a ``card.json`` beside ``target`` (its folder's) that says something else than the card
    in ``target``'s metadata."""
    copy_path = target.with_name(CARD)
    if target.name != WEIGHTS or not copy_path.is_file():
        return
    try:
        copy = json.loads(copy_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        copy = f"not JSON ({err})"
    if copy == card:
        return
    where = _first_difference(card, copy)
    raise ValueFileError(
        f"{copy_path} differs from the card in {target.name} ({where}); the weights file's card is "
        "authoritative and card.json only a readable copy, so an edit there changes nothing: delete "
        "card.json or restore it, or train another value"
    )


def _first_difference(card: Any, copy: Any, where: str = "") -> str:
    """Where two cards first differ, e.g. ``reward: 'vader' in the weights, 'judge' in card.json``."""
    if isinstance(card, Mapping) and isinstance(copy, Mapping):
        for key in sorted(set(card) | set(copy), key=str):
            if card.get(key) != copy.get(key):
                return _first_difference(card.get(key), copy.get(key), f"{where}{key}.")
    name = where.rstrip(".") or "the card"
    return f"{name}: {_short(card)} in the weights, {_short(copy)} in card.json"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_value(
    path: str | os.PathLike[str], *, d: int | None = None, fingerprint: str | None = None
) -> tuple[ValueMLP, dict[str, Any]]:
    """The value network saved at ``path`` and its card, in eval mode on the CPU.

    Args:
        path: a folder written by `save_value` (or its ``.safetensors`` file).
        d: the state size it must take (the model's pre-logit size), if known.
        fingerprint: the model it must have been trained on (`mpc_llm.lm.head_fingerprint`), if known.

    Raises:
        ValueFileError: missing, corrupt, or trained for another ``d`` or another model.
    """
    st = require("safetensors.torch", extra="hf", feature="to load value functions", package="safetensors")
    card = read_card(path)
    target = weights_path(path)
    arch = card.get("architecture", {})
    if d is not None and arch.get("d") != d:
        raise ValueFileError(
            f"{target} was trained on states of size d={arch.get('d')} (model {card.get('model')}), but this "
            f"model's pre-logit has d={d}; train a value for this model"
        )
    trained_on = card.get("model_fingerprint")
    if fingerprint is not None and trained_on is not None and trained_on != fingerprint:
        raise ValueFileError(
            f"{target} was trained on another model ({card.get('model')}, fingerprint {trained_on}; this "
            f"model's is {fingerprint}); train a value for this model"
        )
    try:
        net = ValueMLP(int(arch["d"]), int(arch["width"]), int(arch["depth"]), arch["activation"])
        net.load_state_dict(st.load_file(str(target)))
    except Exception as err:
        raise ValueFileError(
            f"{target} is corrupt or not a value file ({type(err).__name__}: {err})"
        ) from None
    return net.eval(), card


class ValueRef:
    """A value file named by a controller's settings, loaded on first use for a system.

    The network is loaded once per (model fingerprint, ``d``) and refused for a model it was not
    trained on (`load_value`); `learning` summarises the card: what the value cost to learn.

    Args:
        path: the value folder or its ``.safetensors`` file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = path
        self._loaded: tuple[tuple[str | None, int], ValueMLP] | None = None
        self._warned: set[str] = set()

    def check(self) -> None:
        """Raise `ValueFileError` unless ``path`` holds a readable value file (no weights read)."""
        read_card(self.path)

    def check_for(self, system: Any) -> None:
        """Check the card against what is known of the model and the run, before the weights load.

        ``system`` is read for the attributes it has (`mpc_llm.controllers.Planner.check_system`):
        ``control_dim`` (the model's ``d``), ``dtype``, ``reward`` (the reward spec optimised) and
        ``prompt_source`` (where the run's prompts come from).

        Raises:
            ValueFileError: a value for another ``d`` (it cannot read this model's states).

        Warns (one line each, once per value; the run may intend it): a value trained for another
        reward than the one optimised (its twist may point elsewhere); a value trained on the prompt
        source the run answers (its results are not held out); a value collected in another dtype.
        """
        card = read_card(self.path)
        d = getattr(system, "control_dim", None)
        trained_d = (card.get("architecture") or {}).get("d", card.get("d"))
        if d is not None and trained_d is not None and trained_d != d:
            raise ValueFileError(
                f"{weights_path(self.path)} was trained on states of size d={trained_d} (model "
                f"{card.get('model')}), but this model's pre-logit has d={d}; train a value for this model "
                f"(`mpc-llm train-value --model ...`)"
            )
        for message in self._mismatches(card, system):
            if message not in self._warned:
                self._warned.add(message)
                warnings.warn(message, stacklevel=2)

    def _mismatches(self, card: Mapping[str, Any], system: Any) -> list[str]:
        """What the card says that the run may not intend (`check_for`)."""
        out, name = [], weights_path(self.path).parent if str(self.path).strip() else self.path
        reward, trained = getattr(system, "reward", None), card.get("reward")
        if reward is not None and trained is not None and _spec(reward) != _spec(trained):
            out.append(
                f"the value {name} was trained for the reward {_spec_text(trained)}, and this run optimises "
                f"{_spec_text(reward)}: its steering follows the reward it was trained for (train one for "
                "this reward with `mpc-llm train-value --reward ...` unless that is the point)"
            )
        source, seen = getattr(system, "prompt_source", None), (card.get("prompts") or {}).get("source")
        if source is not None and seen is not None and _same_source(str(source), str(seen)):
            out.append(
                f"the value {name} was trained on {seen}, the prompts this run answers: its results are "
                "not held out (settings.json records the value's prompts under value_learning); train it "
                "on sharegpt:train and report on sharegpt:dev or sharegpt:test"
            )
        dtype, collected = getattr(system, "dtype", None), card.get("dtype")
        here = None if dtype is None else str(dtype).removeprefix("torch.")
        if here is not None and collected is not None and collected != here:
            out.append(
                f"the value {name} was collected with the model in {collected} and this run's model is in "
                f"{here}: its states differ by the dtype's rounding (usually harmless); pass --dtype "
                f"{collected} to match it exactly"
            )
        return out

    def for_system(self, dynamics: Dynamics) -> ValueMLP:
        """The network, checked against ``dynamics``' model fingerprint and pre-logit size."""
        key = (dynamics.model_fingerprint(), dynamics.control_dim)
        if self._loaded is None or self._loaded[0] != key:
            net, _ = load_value(self.path, d=key[1], fingerprint=key[0])
            self._loaded = (key, net)
        return self._loaded[1]

    @property
    def loaded(self) -> ValueMLP:
        """The network the last `for_system` loaded."""
        if self._loaded is None:
            raise RuntimeError(f"the value {self.path} is not loaded yet: call for_system(dynamics) first")
        return self._loaded[1]

    def params(self) -> int:
        """The value network's parameter count, from its card's architecture (no weights read)."""
        arch = read_card(self.path).get("architecture") or {}
        return sum(p.numel() for p in ValueMLP(**arch).parameters())

    def learning(self) -> dict[str, Any]:
        """What a comparison reports beside the test-time budget: the card's model, reward, prompts
        (source, count) and ``learning_cost`` (responses sampled and scored, tokens, seconds)."""
        card = read_card(self.path)
        prompts = card.get("prompts") or {}
        return {
            "model": card.get("model"),
            "reward": card.get("reward"),
            "prompts": {k: prompts.get(k) for k in ("source", "count")},
            "learning_cost": card.get("learning_cost"),
        }


def _spec(spec: Any) -> str:
    """A reward spec in one canonical form (a bare name is ``{"name": name}``), for comparison."""

    def canonical(x: Any) -> Any:
        return {"name": x} if isinstance(x, str) else x

    value = [canonical(x) for x in spec] if isinstance(spec, list) else canonical(spec)
    return json.dumps(value, sort_keys=True, default=str)


def _spec_text(spec: Any) -> str:
    return repr(spec) if not isinstance(spec, str) else spec


def _same_source(a: str, b: str) -> bool:
    """Whether two prompt sources are the same: the same name (``sharegpt:test``) or the same file."""
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.is_file() and pb.is_file() and pa.resolve() == pb.resolve()
