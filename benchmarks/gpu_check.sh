#!/usr/bin/env bash
# The GPU speed check, prepared to run as one command on a CUDA machine (about 5 minutes on one GPU):
# the decode engine against HF generate on a randomly initialised 1B Llama-shaped model in bfloat16,
# N = 64 and 8, T = 128, eager and compiled (CUDA graphs), with the per-step profile.
# Figures go to stdout and to ${OUT:-.}/gpu_rollout_speed.json.
#   bash benchmarks/gpu_check.sh            # after scripts/setup.sh (or with torch + transformers installed)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python; fi
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: this check needs a GPU')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" benchmarks/rollout_speed.py --model random-llama-1b --device cuda --dtype auto \
    -N 64 8 -T 128 --repeats 5 --compile --json "${OUT:-.}/gpu_rollout_speed.json"
