"""``python -m mpc_llm``: the ``mpc-llm`` command (``torchrun -m mpc_llm compare ...`` runs it per rank)."""

from mpc_llm.cli.app import main

raise SystemExit(main())
