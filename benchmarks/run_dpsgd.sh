#!/usr/bin/env bash
# Record chapter 10's Abadi et al. reproduction: benchmarks/results/dpsgd.json (the paper's
# grid: baseline, DP-SGD and DP-FTRL at epsilon 0.5 / 2 / 8) and dpsgd_seeds.json (DP-SGD at
# epsilon 2 and 8, seeds 0-3), then the plot. Two streams of one-thread runs side by side
# (a 2-core machine); about 20 minutes. D: the full MNIST (default $TINYODL_MNIST_DIR);
# RUNS: where the per-run JSONs go (kept; default /tmp/dpsgd_runs).
set -euo pipefail
cd "$(dirname "$0")/.."
D=${D:-${TINYODL_MNIST_DIR:?set D or TINYODL_MNIST_DIR to the full MNIST}}
RUNS=${RUNS:-/tmp/dpsgd_runs}
mkdir -p "$RUNS"
uptime
run() { OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 tinyodl bench dpsgd --data "$D" "$@"; }
seeds() { run --runs 8:100,2:45 --seed "$1" --no-ftrl --no-baseline --json "$RUNS/seed$1.json"; }
(run --runs 8:100 --json "$RUNS/A.json"  # baseline, epsilon 8 and DP-FTRL at 8
 run --runs 0.5:60 --no-baseline --json "$RUNS/C.json"
 seeds 2) > "$RUNS/stream1.log" 2>&1 &
first=$!
(run --runs 2:45 --no-baseline --json "$RUNS/B.json"
 seeds 1
 seeds 3) > "$RUNS/stream2.log" 2>&1 &
wait "$first"  # a failed run stops its stream and, here, the script
wait $!
python benchmarks/assemble_dpsgd.py "$RUNS"
tinyodl bench dpsgd --replot benchmarks/results/dpsgd.json --plot benchmarks/results/dpsgd.png
