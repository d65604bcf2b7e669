"""The value folder `mpc-llm train-value` writes: which files are its own, whether a run may use it,
and emptying only those.

::

    OUT/
      value.safetensors    the weights, the card in their metadata (`mpc_llm.values.io`)
      card.json            a readable copy of the card
      data/                the collection (`mpc_llm.values.data`): collection.json, chunk-NNNNN.safetensors

A folder is this command's when it holds its marker: a value file (``value.safetensors`` with a
card) or a collection (``data/collection.json``). `check_value_folder` says, without writing or
deleting anything, whether a run may use a folder; `clear_value_folder` deletes only this command's
own files, and is called only once every check has passed.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from mpc_llm.core import require
from mpc_llm.values.data import SETTINGS
from mpc_llm.values.io import CARD, FORMAT, WEIGHTS

DATA = "data"
_CHUNK = re.compile(r"chunk-\d{5,}\.safetensors")
_OWN_FILES = {WEIGHTS, CARD}  # and their temporaries (.tmp), and the folder data/

FolderState = Literal["new", "resume", "replace"]


def _listed(names: list[str]) -> str:  # the first three, then ...
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")


def _is_value_file(path: Path) -> bool:
    """Whether ``path`` is a value file: safetensors whose metadata holds a card of this format."""
    st = require("safetensors", extra="hf", feature="to read value files")
    try:
        with st.safe_open(str(path), framework="pt") as f:
            card = json.loads((f.metadata() or {})["card"])
    except Exception:  # safetensors raises its own types on a file that is not one
        return False
    return isinstance(card, dict) and card.get("format") == FORMAT


def own_files(root: Path) -> tuple[list[Path], list[str]]:
    """``(this command's files, every other entry)`` of the folder ``root`` (entries of ``data/`` are
    named ``data/NAME``). Without a marker (a value file or ``data/collection.json``) nothing in it
    is this command's."""
    data = root / DATA
    marked = (data / SETTINGS).is_file() or _is_value_file(root / WEIGHTS)
    own: list[Path] = []
    other: list[str] = []
    for entry in sorted(root.iterdir()):
        if marked and entry.is_file() and entry.name.removesuffix(".tmp") in _OWN_FILES:
            own.append(entry)
        elif not (marked and entry.name == DATA and entry.is_dir()):
            other.append(entry.name)
    if marked and data.is_dir():
        for entry in sorted(data.iterdir()):
            base = entry.name.removesuffix(".tmp")
            if entry.is_file() and (base == SETTINGS or _CHUNK.fullmatch(base)):
                own.append(entry)
            else:
                other.append(f"{DATA}/{entry.name}")
    return own, other


def _check_writable(folder: Path) -> None:
    """Refuse a folder that could not be created: its nearest existing parent is a file or is not
    writable."""
    parent = folder
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"--out {folder}: {parent} is a file, not a folder; pass a folder for the value")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--out {folder}: cannot write there ({parent} is not writable); choose another one")


def check_value_folder(
    out: str | os.PathLike[str], settings: Mapping[str, Any], *, overwrite: bool = False
) -> FolderState:
    """Whether ``train-value`` may use ``out``, writing and deleting nothing.

    Args:
        out: the value folder.
        settings: the collection's settings known before the model loads (a subset of what
            ``data/collection.json`` holds); a collection with other settings is refused.
        overwrite: replace what this command wrote there.

    Returns:
        ``"new"`` (missing or empty), ``"resume"`` (a collection with these settings and no value
        yet) or ``"replace"`` (this command's files, to delete first: ``overwrite``, or a collection
        with no chunk yet, which holds nothing to protect).

    Raises:
        ValueError: a file; an unwritable place; a folder holding anything this command does not
            write (with or without ``overwrite``); a finished value or a collection with other settings
            (without ``overwrite``). The message says which flag or folder to use.
    """
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise ValueError(f"--out {root} is a file, not a folder; pass a folder for the value")
    _check_writable(root)
    if not root.exists() or not any(root.iterdir()):
        return "new"
    own, other = own_files(root)
    if other and overwrite:
        raise ValueError(
            f"{root} holds files that train-value does not write ({_listed(other)}); --overwrite deletes "
            "only its own (value.safetensors, card.json, data/) and never empties a folder holding others: "
            "move them out or choose another folder"
        )
    if other:
        raise ValueError(
            f"{root} is not empty ({_listed(other)}) and holds no value or collection of train-value's; "
            "choose an empty or new folder for --out"
        )
    if overwrite:
        return "replace"
    if (root / WEIGHTS).is_file():
        raise ValueError(
            f"{root} already holds a trained value ({WEIGHTS}); pass --overwrite to replace it (its data "
            "are collected again), or choose another folder for --out"
        )
    chunks = [p for p in own if _CHUNK.fullmatch(p.name)]
    if not chunks:
        return "replace"  # a collection that never finished a chunk: nothing to protect
    _compare(root / DATA / SETTINGS, settings)
    return "resume"


def _compare(path: Path, settings: Mapping[str, Any]) -> None:
    """Refuse a collection whose settings differ from ``settings`` in any key ``settings`` has."""
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:
        raise ValueError(f"{path} cannot be read ({err}); pass --overwrite to collect afresh") from None
    given = json.loads(json.dumps(dict(settings)))
    diff = sorted(k for k in given if old.get(k) != given[k])
    if diff:
        k = diff[0]
        raise ValueError(
            f"{path.parent.parent} holds value data collected with other settings ({k}: {old.get(k)!r} "
            f"there, {given[k]!r} now); pass --overwrite to collect afresh, or choose another --out"
        )


def clear_value_folder(out: str | os.PathLike[str]) -> None:
    """Delete this command's own files in ``out`` (`own_files`) and nothing else; ``data/`` goes once
    empty. Call it only after `check_value_folder` (which refuses a folder holding anything else)."""
    root = Path(out)
    if not root.is_dir():
        return
    own, _ = own_files(root)
    for path in own:
        path.unlink(missing_ok=True)
    data = root / DATA
    if data.is_dir() and not any(data.iterdir()):
        data.rmdir()
