#!/usr/bin/env bash
# The "before" column of the performance table: the same benchmark modules run against the
# kernels of commit 992be85 (main before the performance work, issue 8), built in a
# temporary clone, on this machine. Writes benchmarks/results/before_{kernels,train}.json.
# (The old int8 module has one SIMD path, so the per-path rows are missing there.)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BASE=${BASE:-992be85}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
git clone --quiet "$ROOT" "$TMP/src"
git -C "$TMP/src" checkout --quiet "$BASE"
(cd "$TMP/src" && python setup.py -q build_ext --inplace > "$TMP/build.log" 2>&1)
cp "$ROOT"/tinyodl/bench/*.py "$TMP/src/tinyodl/bench/"   # today's benchmark code ...
cp "$ROOT/tinyodl/_timing.py" "$TMP/src/tinyodl/_timing.py"  # ... on yesterday's kernels
uptime
cd "$TMP/src"
OMP_NUM_THREADS=1 PYTHONPATH="$TMP/src" python -m tinyodl bench kernels \
  --repeats "${REPEATS:-9}" --gemm-steps --json "$ROOT/benchmarks/results/before_kernels.json"
OMP_NUM_THREADS=1 PYTHONPATH="$TMP/src" python -m tinyodl bench train \
  --repeats "${REPEATS:-15}" --json "$ROOT/benchmarks/results/before_train.json"
