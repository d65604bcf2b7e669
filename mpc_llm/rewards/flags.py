"""Reward specs from the command line and config files: flag values, and reward models' own code.

`spec_from_flag` turns ``--reward`` / ``--eval-reward`` values (a built-in name, a reward model's
folder or hub id) into specs; `remote_code_requests`, `refuse_remote_code` and `allow_remote_code`
keep a config file from running a reward model's shipped code (``trust_remote_code``) unless the
caller allows it (``--trust-remote-code``, ``from_file(..., trust_remote_code=True)``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mpc_llm.lm.hub import looks_like_a_path
from mpc_llm.rewards.registry import REWARDS, spec_items


def remote_code_requests(spec: object) -> list[str]:
    """The rewards in ``spec`` that ask to run code shipped with their model (``trust_remote_code``).

    Example:
        >>> remote_code_requests([{"name": "hf", "model": "org/rm", "trust_remote_code": True}, "vader"])
        ['org/rm']
    """
    try:
        items = spec_items(spec)
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


def spec_from_flag(
    text: str, output_index: int | None = None, flag: str = "--reward"
) -> str | dict[str, Any]:
    """The reward spec of a command-line value: a built-in name, or a reward model's folder or hub id.

    A path is checked here, before anything loads: one that does not exist is refused without
    asking a hub. ``flag``: the flag messages name (``--reward``, ``--eval-reward``).

    Raises:
        ValueError: a path that does not exist, or a file where a folder is needed.
    """
    path = Path(text).expanduser()
    if not (path.exists() or "/" in text or "\\" in text):
        return text
    if path.is_file():
        raise ValueError(
            f"{flag} {text}: is a file; pass the folder that holds the reward model (config.json and "
            "weights), a hub id 'org/name', or a built-in name"
        )
    if not path.exists() and looks_like_a_path(text):
        raise ValueError(
            f"{flag} {text}: no such folder; pass an existing folder holding a sequence-classification "
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
