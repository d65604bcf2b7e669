"""``python -m mpc_llm.cli``: the ``mpc-llm`` command."""

from mpc_llm.cli.app import main

raise SystemExit(main())
