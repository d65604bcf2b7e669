"""Entry point of the ``mpc-llm`` command: parse, run the command, report errors on one line.

Every error a user can cause (bad values, unknown names, missing files or devices) prints one line
``mpc-llm: error: ...`` on stderr and exits with status 2.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from types import FrameType, TracebackType
from typing import Any

from mpc_llm.cli.commands import cmd_align, cmd_info
from mpc_llm.cli.compare import cmd_compare
from mpc_llm.cli.errors import EXIT_INTERRUPTED, EXIT_USAGE, CLIError, one_line, one_line_warning
from mpc_llm.cli.merge import cmd_merge
from mpc_llm.cli.parser import build_parser
from mpc_llm.cli.value import cmd_train_value


def _quiet_libraries() -> None:
    """Keep library progress bars, retry notices and advice off stderr: errors stay one line."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from huggingface_hub.utils import logging as hub_logging
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hub_logging.set_verbosity_error()  # "Retrying in 1s [Retry 1/5]" and the like
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


class Interrupts:
    """Whether Ctrl-C reached this process while the command ran, even where a library swallowed
    the ``KeyboardInterrupt`` it raised (an import that caught it, or left a half-imported module
    whose next import fails with another error). A process that ignores SIGINT (started in the
    background) keeps ignoring it; off the main thread nothing is installed."""

    def __init__(self) -> None:
        self.seen = False
        self._previous: Any = None

    def __enter__(self) -> Interrupts:
        main_thread = threading.current_thread() is threading.main_thread()
        if main_thread and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.seen = True
        raise KeyboardInterrupt

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _interrupted() -> int:
    print("mpc-llm: interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; a user error prints one ``mpc-llm: error: ...`` line and returns 2, Ctrl-C
    (even during the first seconds' imports) one ``mpc-llm: interrupted`` line and 130."""
    formatter = warnings.formatwarning
    warnings.formatwarning = one_line_warning
    with Interrupts() as interrupts:
        try:
            args = build_parser().parse_args(argv)
            _quiet_libraries()
            commands = {"align": cmd_align, "compare": cmd_compare, "info": cmd_info}
            commands["train-value"] = cmd_train_value
            commands["merge"] = cmd_merge
            code = commands[args.command](args)
        except KeyboardInterrupt:
            return _interrupted()
        except (CLIError, ValueError, OSError, ImportError, TypeError, RuntimeError) as err:
            if interrupts.seen:  # e.g. an import that Ctrl-C cut short, failing again
                return _interrupted()
            # ValueError: pydantic's too; RuntimeError: a reward that raised, an unsupported model, CUDA OOM
            print(f"mpc-llm: error: {one_line(err)}", file=sys.stderr)
            return EXIT_USAGE
        finally:
            warnings.formatwarning = formatter
    return _interrupted() if interrupts.seen else code
