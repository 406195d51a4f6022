"""One vs two OpenMP threads in one process: the int8 GEMM (linear_s8, 512^3) and the
cnn_mcmahan training step (batch 32), issue 8 target 5.

Prints, for each, the median wall-clock time on 1 and 2 threads (calls interleaved), their
ratio, and the same ratio of the *calling thread's* CPU time. Run it with
``OMP_WAIT_POLICY=passive`` and the CPU-time ratio estimates the two-thread critical path
(a waiting thread sleeps instead of spinning, so its CPU time is its own share of the work
plus the serial parts) -- useful when other processes share the cores and wall-clock
ratios say more about the scheduler than about the kernels. ``work`` is the process CPU
time on two threads over one (1.00: no extra work from threading). Not a test; the
reference figures are ``tinyodl bench kernels --only threads2`` and ``tinyodl bench train
--threads2`` on an idle machine (``benchmarks/run_threads.sh``).

    OMP_WAIT_POLICY=passive python benchmarks/threads_probe.py [repeats]
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from tinyodl import backend
from tinyodl.bench._int8 import _linear_args
from tinyodl.bench.train import _on_backend, batch_of, tinyodl_step


def one_vs_two(fn: Callable[[], object], repeats: int) -> dict[str, float]:
    """Median wall / thread-CPU / process-CPU seconds of ``fn`` on 1 and 2 threads."""

    def run(threads: int) -> tuple[float, float, float]:
        backend.set_num_threads(threads)
        with threadpool_limits(limits=threads):
            w, c, p = time.perf_counter(), time.thread_time(), time.process_time()
            fn()
            return time.perf_counter() - w, time.thread_time() - c, time.process_time() - p

    for _ in range(3):
        run(1), run(2)
    times: dict[int, list[tuple[float, float, float]]] = {1: [], 2: []}
    for _ in range(repeats):
        times[1].append(run(1))
        times[2].append(run(2))
    backend.set_num_threads(1)
    med = {t: [statistics.median(v[i] for v in times[t]) for i in range(3)] for t in times}
    return {
        "one_ms": med[1][0] * 1e3,
        "two_ms": med[2][0] * 1e3,
        "wall": med[1][0] / med[2][0],
        "cpu": med[1][1] / med[2][1],
        "work": med[2][2] / med[1][2],
    }


def main(repeats: int) -> None:
    import tinyodl._kernels.int8 as k8

    args = _linear_args(np.random.default_rng(0), 512, 512, 512)
    x, y = batch_of(32, 0)
    cases = {
        f"int8 GEMM 512^3 ({k8.get_simd_path()})": lambda: k8.linear_s8(*args),
        "cnn_mcmahan step, batch 32": _on_backend("cython", tinyodl_step("cnn_mcmahan", x, y)),
    }
    print(f"load average {os.getloadavg()[0]:.2f}, OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', '(unset)')}")  # fmt: skip
    for name, fn in cases.items():
        r = one_vs_two(fn, repeats if "GEMM" not in name else 10 * repeats)
        print(f"{name:32s} 1 thread {r['one_ms']:7.2f} ms  2 threads {r['two_ms']:7.2f} ms  "
              f"wall {r['wall']:.2f}x  calling-thread CPU {r['cpu']:.2f}x  "
              f"work {r['work']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 21)
