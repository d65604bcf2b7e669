"""User errors of the ``mpc-llm`` command, and how errors and warnings are shown: one line each."""

from __future__ import annotations

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
