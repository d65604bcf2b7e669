"""Entry point of the ``mpc-llm`` command: parse, run the command, report errors on one line.

Every error a user can cause (bad values, unknown names, missing files or devices) prints one line
``mpc-llm: error: ...`` on stderr and exits with status 2.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence

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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; a user error prints one ``mpc-llm: error: ...`` line and returns 2, Ctrl-C
    (even during the first seconds' imports) one ``mpc-llm: interrupted`` line and 130."""
    formatter = warnings.formatwarning
    warnings.formatwarning = one_line_warning
    try:
        args = build_parser().parse_args(argv)
        _quiet_libraries()
        commands = {"align": cmd_align, "compare": cmd_compare, "info": cmd_info}
        commands["train-value"] = cmd_train_value
        commands["merge"] = cmd_merge
        return commands[args.command](args)
    except KeyboardInterrupt:
        print("mpc-llm: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (CLIError, ValueError, OSError, ImportError, TypeError, RuntimeError) as err:
        # ValueError: pydantic's too; RuntimeError: a reward that raised, an unsupported model, CUDA OOM
        print(f"mpc-llm: error: {one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        warnings.formatwarning = formatter
