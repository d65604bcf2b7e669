#!/usr/bin/env bash
# Set up the environment if needed, then run lint, the import-layer contracts and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check .
lint-imports --no-cache
python -m pytest -q "$@"
