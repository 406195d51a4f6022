"""Smoke tests of tinyodl.bench._float: row structure and backend agreement, no timing asserts."""

from __future__ import annotations

import numpy as np
from gradcheck_utils import cython_float_kernels_built

from tinyodl.bench import _float as bench_float

TINY_CONV = [
    dict(name="3x3", x=(2, 4, 6, 6), w=(4, 4, 3, 3), stride=1, padding=1, groups=1),
    dict(name="dw", x=(2, 4, 6, 6), w=(4, 1, 3, 3), stride=2, padding=1, groups=4),
]


def test_bench_conv_rows():
    rows = bench_float.bench_conv_float(TINY_CONV, repeats=1)
    assert [(r["name"], r["op"]) for r in rows] == [
        (s["name"], op)
        for s in TINY_CONV
        for op in ("forward", "backward_input", "backward_weight")
    ]
    for r in rows:
        assert r["numpy_s"] > 0
        if cython_float_kernels_built():
            assert r["cython_s"] > 0 and r["speedup"] > 0 and r["max_abs_diff"] < 1e-4
        else:
            assert r["cython_s"] is None
    assert "speedup" in bench_float.format_rows(rows)


def test_bench_linear_and_pool_rows():
    lin = bench_float.bench_linear_float([("tiny", 3, 5, 2)], repeats=1, blas_threads=None)
    pool = bench_float.bench_pool_float([("tiny", (1, 2, 4, 4), 2, 2, 0)], repeats=1)
    assert len(lin) == 3 and len(pool) == 4
    if cython_float_kernels_built():
        assert all(r["max_abs_diff"] < 1e-5 for r in lin + pool)


def test_float_im2col_matmul_time_and_median():
    x = np.ones((1, 2, 5, 5), np.float64)
    assert bench_float.float_im2col_matmul_conv_time(x, np.ones((3, 2, 3, 3)), 1, 1, repeats=2) > 0
    calls = []
    assert bench_float.median_time(lambda: calls.append(1), repeats=3, warmup=2) >= 0
    assert len(calls) == 5
