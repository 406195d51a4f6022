#!/usr/bin/env bash
# Record the kernel benchmarks of this machine into benchmarks/results/kernels.json:
# int8 GEMM (vs numpy sgemm and PyTorch FBGEMM), int8 conv (vs PyTorch quantized Conv2d),
# int8 backward (vs float32), float conv (vs numpy), and the teaching GEMM step by step.
# Single thread; every figure a ratio against a baseline run in the same process.
set -euo pipefail
cd "$(dirname "$0")/.."
uptime
tinyodl info
OMP_NUM_THREADS=1 tinyodl bench kernels --repeats "${REPEATS:-9}" --gemm-steps \
  --json benchmarks/results/kernels.json
