#!/usr/bin/env bash
# The estimator matrix on a CUDA machine that has torch, transformers, peft and accelerate but no
# network: installs the carried wheels in .whl/ (pydantic for peftstudio's schema, trl for the
# chunked loss, a bitsandbytes slimmed to its CPU and CUDA 13.0 libraries for QLoRA) into
# /tmp/site, then runs benchmarks/gpu_matrix.py, writing gpu_matrix.{json,md} to $OUT (or ./gpu-out).
set -u
cd "$(dirname "$0")/.."
out="${OUT:-gpu-out}"
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || echo "wheel install failed: the cases that need a missing package are reported as skipped"
  export PYTHONPATH="$PWD/src:/tmp/site"
else
  export PYTHONPATH="$PWD/src"
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
timeout "${MATRIX_TIMEOUT_S:-450}" python3 benchmarks/gpu_matrix.py --out "$out" --budget-s "${MATRIX_BUDGET_S:-360}" 2>&1 \
  | tee "$out/gpu_matrix.log"
