#!/usr/bin/env bash
# Record the training-step benchmark (tinyodl vs its PyTorch twins, one thread) into
# benchmarks/results/train.json.
set -euo pipefail
cd "$(dirname "$0")/.."
uptime
OMP_NUM_THREADS=1 tinyodl bench train --repeats "${REPEATS:-15}" --numpy \
  --json benchmarks/results/train.json
