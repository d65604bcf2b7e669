#!/usr/bin/env bash
# Set up the environment if needed, then steer one response of the embedded SmolLM2-135M-Instruct
# toward positive sentiment (VADER) with AISP. Extra arguments go to `mpc-llm align`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
prompt=${1:-"Describe your Monday morning in two sentences."}
shift || true
exec .venv/bin/mpc-llm align "$prompt" "$@"
