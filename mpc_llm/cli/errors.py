"""User errors of the ``mpc-llm`` command, and how errors and warnings are shown: one line each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CLIError(Exception):
    """An error to report on one line."""


def one_line(err: BaseException) -> str:
    from pydantic import ValidationError

    if isinstance(err, ValidationError):
        parts = []
        for e in err.errors():
            where = ".".join(str(x) for x in e["loc"])
            msg = str(e["msg"]).removeprefix("Value error, ")
            parts.append(f"{where}: {msg}" if where else msg)
        return "invalid settings: " + "; ".join(parts)
    text = str(err).strip().replace("\n", " ")
    return text or type(err).__name__


def one_line_warning(message: Warning | str, *_: Any, **__: Any) -> str:
    """A warning as one ``mpc-llm: warning: ...`` line (not Python's two lines with the source)."""
    return f"mpc-llm: warning: {str(message).strip().replace(chr(10), ' ')}\n"


def out_of_memory(err: BaseException, out: Path, prompts_per_batch: int) -> str | None:
    """The one line for a comparison that ran out of memory (a GPU's, or the host's where the
    allocation failed rather than the kernel killing the process), or None for any other error.

    Example:
        >>> out_of_memory(MemoryError(), Path("runs/a"), 8)[:62]
        'out of memory with --prompts-per-batch 8: a batch decodes the '
    """
    text = str(err).strip()
    if not (
        isinstance(err, MemoryError)
        or type(err).__name__ == "OutOfMemoryError"  # torch's, a RuntimeError
        or (isinstance(err, RuntimeError) and "can't allocate memory" in text)
    ):
        return None
    what = ". ".join(text.split("\n")[0].split(". ")[:2])[:120]  # e.g. what it tried to allocate
    head = f"out of memory{f' ({what})' if what else ''} with --prompts-per-batch {prompts_per_batch}: "
    head += (
        "a batch decodes the samples of its prompts together, each with its own copy of its prompt's "
        f"cache; the records written in {out} are kept: run the same command with --resume and "
    )
    if prompts_per_batch > 1:
        return head + f"--prompts-per-batch {max(1, prompts_per_batch // 2)}"
    return head + "smaller --budgets, or on a device with more memory"
