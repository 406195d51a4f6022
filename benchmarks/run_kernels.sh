#!/usr/bin/env bash
# Record the kernel benchmarks of this machine into benchmarks/results/kernels.json.
# Single thread, every figure a ratio against a baseline run in the same process.
set -euo pipefail
cd "$(dirname "$0")/.."
tinyodl info
tinyodl bench kernels --repeats "${REPEATS:-7}" --json benchmarks/results/kernels.json
