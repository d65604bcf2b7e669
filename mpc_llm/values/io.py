"""Value files: the weights in one safetensors file whose metadata holds the card, and a JSON copy.

``FOLDER/value.safetensors`` holds the network's tensors and, in its metadata under ``card``, the
card (JSON): the architecture, the model it was trained on (name, fingerprint, ``d``), the reward,
the prompts and their split, sample counts, losses and held-out figures. It is written to a
temporary file and renamed into place, so a reader never sees half a file; ``FOLDER/card.json`` is a
readable copy written after it. No pickle anywhere: loading runs no code from the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mpc_llm.core import Dynamics, require
from mpc_llm.values.network import ValueMLP

WEIGHTS = "value.safetensors"
CARD = "card.json"
FORMAT = "mpc_llm.value/1"


class ValueFileError(ValueError):
    """A value file that is missing, corrupt, or made for another model."""


def weights_path(path: str | os.PathLike[str]) -> Path:
    """``path`` itself if it is a file, else ``path / value.safetensors``."""
    p = Path(path)
    return p if p.suffix == ".safetensors" else p / WEIGHTS


def save_value(net: ValueMLP, card: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``net`` and its ``card`` to the folder ``path`` (created); returns the weights file."""
    st = require("safetensors.torch", extra="hf", feature="to save value functions", package="safetensors")
    target = weights_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    full = {"format": FORMAT, **dict(card), "architecture": net.architecture()}
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    tmp = target.with_name(target.name + ".tmp")
    st.save_file(tensors, str(tmp), metadata={"card": json.dumps(full)})
    os.replace(tmp, target)
    card_tmp = target.with_name(CARD + ".tmp")
    card_tmp.write_text(json.dumps(full, indent=2) + "\n")
    os.replace(card_tmp, target.with_name(CARD))
    return target


def read_card(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The card of the value file at ``path`` (a folder or the ``.safetensors`` file).

    Raises:
        ValueFileError: no such file, or not a readable value file.
    """
    st = require("safetensors", extra="hf", feature="to load value functions")
    target = weights_path(path)
    if not target.is_file():
        raise ValueFileError(
            f"no value file at {target}; train one with `mpc-llm train-value --out {Path(path)}`"
        )
    try:
        with st.safe_open(str(target), framework="pt") as f:
            meta = f.metadata() or {}
        card = json.loads(meta["card"])
    except Exception as err:  # safetensors raises its own error types on a corrupt header
        raise ValueFileError(
            f"{target} is corrupt or not a value file ({type(err).__name__}: {err})"
        ) from None
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise ValueFileError(f"{target} is not a value file of this format ({FORMAT})")
    return card


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

    def check(self) -> None:
        """Raise `ValueFileError` unless ``path`` holds a readable value file (no weights read)."""
        read_card(self.path)

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
