"""Wall-clock timing shared by the kernel benchmarks (chapters 00 and 03)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence


def median_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls, after ``warmup`` calls.

    Each call is timed with :func:`time.perf_counter`; the median is robust to the odd slow
    call (a page fault, another process).
    """
    if repeats < 1:
        raise ValueError(f"median_time: repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_times(
    fns: Sequence[Callable[[], object]], repeats: int = 7, warmup: int = 1
) -> list[dict[str, float]]:
    """Median seconds of several functions timed in turn, for ratios on a busy machine.

    Each round calls every function once, in order, so that all of them see the same
    machine load; after ``warmup`` rounds, ``repeats`` rounds are timed. For each function
    the result holds ``wall`` (median :func:`time.perf_counter` seconds, what a user waits)
    and ``cpu`` (median :func:`time.thread_time` seconds: CPU time of the calling thread,
    which leaves out the time other processes held the core -- meaningful for
    single-threaded code only, since work done on other threads is not counted).
    """
    if repeats < 1:
        raise ValueError(f"interleaved_times: repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        for fn in fns:
            fn()
    wall: list[list[float]] = [[] for _ in fns]
    cpu: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            c0, w0 = time.thread_time(), time.perf_counter()
            fn()
            wall[i].append(time.perf_counter() - w0)
            cpu[i].append(time.thread_time() - c0)
    return [
        {"wall": statistics.median(w), "cpu": statistics.median(c)}
        for w, c in zip(wall, cpu, strict=True)
    ]
