#!/usr/bin/env bash
# Set up the environment if needed, then run lint, the import-layer contracts and the whole test suite
# (which runs the README's and the docs' code blocks and builds the docs site with warnings as errors).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check .
lint-imports --no-cache
MPC_LLM_REQUIRE_DOCS=1 python -m pytest -q "$@"
