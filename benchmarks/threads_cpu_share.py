"""Where the cnn_mcmahan training step keeps its calling thread busy on 1 and 2 threads.

Issue 8, target 5. Two-thread scaling can only be *measured* on an idle machine
(``run_threads.sh``). On a shared one this diagnosis still works: it records, per kernel
call of one step (batch 32) and for the whole step, the CPU seconds of the calling thread
(``time.thread_time``) on one thread and on two. With ``OMP_WAIT_POLICY=passive`` a thread
that waits at a barrier sleeps instead of spinning, so on two threads that figure is the
calling thread's share of the parallel work plus everything serial: one thread's figure
over it bounds the two-thread speedup from above (a kernel that does not split stays near
1.0; a perfect split gives 2.0). Run::

    OMP_WAIT_POLICY=passive nice -n 10 python benchmarks/threads_cpu_share.py
"""

from __future__ import annotations

import collections
import os
import time

import scipy.linalg  # noqa: F401  (loads SciPy's BLAS, so threadpoolctl can limit it)
from threadpoolctl import threadpool_limits

import tinyodl.nn.functional as F
from tinyodl import backend, ops
from tinyodl.bench.train import batch_of, tinyodl_step


class _Timed:
    """Stands in for ``tinyodl.ops`` and records the calling thread's CPU per kernel."""

    def __init__(self, record: dict) -> None:
        self.record, self.threads = record, 1

    def __getattr__(self, name: str):
        fn = getattr(ops, name)
        if not callable(fn):
            return fn

        def timed(*args, **kwargs):
            t0 = time.thread_time()
            out = fn(*args, **kwargs)
            shape = tuple(getattr(args[0], "shape", ()))
            self.record[(name, shape, self.threads)].append(time.thread_time() - t0)
            return out

        return timed


def main(repeats: int = 5) -> None:
    backend.set_backend("cython")
    x, y = batch_of(32, 0)
    step = tinyodl_step("cnn_mcmahan", x, y)
    record: dict = collections.defaultdict(list)
    timed = _Timed(record)
    F.ops = timed
    try:
        for _ in range(repeats):
            for n in (1, 2):
                timed.threads = n
                backend.set_num_threads(n)
                with threadpool_limits(n):
                    step()
    finally:
        F.ops = ops
        backend.set_num_threads(1)
    print(f"{'kernel':28s} {'first argument':22s} {'1 thread':>9s} {'2 threads':>9s} ratio")
    total = {1: 0.0, 2: 0.0}
    for name, shape in sorted({(k[0], k[1]) for k in record}):
        one, two = min(record[(name, shape, 1)]), min(record[(name, shape, 2)])
        total[1], total[2] = total[1] + one, total[2] + two
        print(f"{name:28s} {str(shape):22s} {1e3 * one:7.2f}ms {1e3 * two:7.2f}ms {one / two:.2f}")
    print(f"{'kernels, sum':51s} {1e3 * total[1]:7.2f}ms {1e3 * total[2]:7.2f}ms "
          f"{total[1] / total[2]:.2f}")  # fmt: skip
    steps = {}
    for n in (1, 2):
        backend.set_num_threads(n)
        with threadpool_limits(n):
            best = float("inf")
            for _ in range(repeats):
                t0 = time.thread_time()
                step()
                best = min(best, time.thread_time() - t0)
        steps[n] = best
    backend.set_num_threads(1)
    print(f"{'whole step':51s} {1e3 * steps[1]:7.2f}ms {1e3 * steps[2]:7.2f}ms "
          f"{steps[1] / steps[2]:.2f}")  # fmt: skip
    print(
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
