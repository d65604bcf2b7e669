"""The ``mpc-llm`` command: ``align`` one prompt, ``compare`` controllers, ``info`` about the set-up.

Every error a user can cause (bad values, unknown names, missing files or devices) prints one line
``mpc-llm: error: ...`` on stderr and exits with status 2. ``python -m mpc_llm`` and
``python -m mpc_llm.cli`` run the same command (the former is what ``torchrun -m mpc_llm`` needs).

Modules: `parser` (the flags), `options` (config file and flags into one `ExperimentConfig`),
`commands` (``align``, ``info``), `compare` (``compare``, on one process or many), `errors`
(one-line errors), `app` (`main`).
"""

from __future__ import annotations

from mpc_llm.cli.app import main
from mpc_llm.cli.errors import EXIT_INTERRUPTED, EXIT_USAGE, CLIError
from mpc_llm.cli.options import experiment_config
from mpc_llm.cli.parser import build_parser

__all__ = ["EXIT_INTERRUPTED", "EXIT_USAGE", "CLIError", "build_parser", "experiment_config", "main"]
