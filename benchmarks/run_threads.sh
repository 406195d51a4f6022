#!/usr/bin/env bash
# Record the two-thread scaling of the int8 GEMM and of the cnn_mcmahan training step into
# benchmarks/results/threads2_kernels.json and threads2_train.json. Both cores must be idle:
# the script waits (up to MAX_WAIT seconds, default 1800) for the 1-minute load average to
# drop below MAX_LOAD (default 0.5), and the JSON records the load before and after.
set -euo pipefail
cd "$(dirname "$0")/.."
max_load=${MAX_LOAD:-0.5}
deadline=$(( $(date +%s) + ${MAX_WAIT:-1800} ))
while :; do
  load=$(cut -d' ' -f1 /proc/loadavg)
  if awk -v l="$load" -v m="$max_load" 'BEGIN{exit !(l < m)}'; then break; fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "load average still $load (>= $max_load): measuring anyway; the JSON records it" >&2
    break
  fi
  sleep 20
done
uptime
tinyodl bench kernels --only threads2 --repeats "${REPEATS:-15}" \
  --json benchmarks/results/threads2_kernels.json
tinyodl bench train --models cnn_mcmahan:32 --threads2 --repeats "${REPEATS:-9}" \
  --json benchmarks/results/threads2_train.json
