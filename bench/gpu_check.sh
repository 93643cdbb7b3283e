#!/usr/bin/env bash
# One short GPU check (<= 5 minutes) for a session that holds an accelerator.
# Run from the repository root on the GPU machine:  bash bench/gpu_check.sh [ARGS]
# (ARGS: see python -m bench.gpu_check --help; give paths as absolute paths.)
# It needs python3 with onnxruntime (with the CUDA provider), torch, transformers,
# tokenizers and numpy -- all present there; nothing is downloaded. If onnxruntime there
# lacks CUDAExecutionProvider, install the onnxruntime-gpu wheel first (see ../shared/gpu.md)
# and put it on PYTHONPATH.
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
# bertrec without pip: the three code folders are its subpackages.
mkdir -p "$STAGE/bertrec"
cp -r bertrec/. "$STAGE/bertrec/"
cp -r runtime "$STAGE/bertrec/runtime"
cp -r export "$STAGE/bertrec/export"
cp -r quantize "$STAGE/bertrec/quantize"
cp -r bench examples "$STAGE/"
export PYTHONPATH="$STAGE${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1
cd "$STAGE"
timeout 300 python3 -m bench.gpu_check "$@"
