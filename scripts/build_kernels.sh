#!/usr/bin/env bash
# Rebuild some compiled kernels in place while developing, e.g.
#   scripts/build_kernels.sh conv pool
# Each kernel gets its own build directory so parallel builds do not collide.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
for name in "$@"; do
  TINYODL_ONLY="$name" "$PY" setup.py -q build_ext --inplace --build-temp "build/tmp-$name"
done
