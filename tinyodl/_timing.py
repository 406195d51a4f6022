"""Wall-clock timing shared by the kernel benchmarks (chapters 00 and 03)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


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
