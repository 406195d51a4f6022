"""Benchmarks of the float kernels: Cython against the numpy reference (chapter 00).

Each function returns plain dicts (easy to print as a table or save as JSON) with the
median wall-clock time of several repeats, measured with :func:`time.perf_counter` after a
warm-up call. ``tinyodl bench kernels`` prints them; the shapes are small layers in the
style of MCUNet (3x3 convolutions, pointwise 1x1 and depthwise convolutions).

The compiled kernels are loaded module by module, so these benchmarks only need the float
kernels (conv, linear, pool) to be built. BLAS runs on ``blas_threads`` threads (default 1)
via threadpoolctl, for numpy's OpenBLAS and for SciPy's (which the Cython kernels call).
threadpoolctl only limits libraries that are already loaded, so both are loaded first.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np
import scipy.linalg  # noqa: F401  (loads SciPy's BLAS, so threadpoolctl can limit it)
from threadpoolctl import threadpool_limits

from tinyodl._timing import median_time
from tinyodl.reference import conv as ref_conv
from tinyodl.reference import linear as ref_linear
from tinyodl.reference import pool as ref_pool

#: MCUNet-like convolution layers, batch 8 (NCHW input, weights (F, C/groups, KH, KW)).
MCUNET_CONV_SHAPES: list[dict[str, Any]] = [
    dict(name="stem 3x3 s2", x=(8, 3, 64, 64), w=(16, 3, 3, 3), stride=2, padding=1, groups=1),
    dict(name="3x3 s1", x=(8, 16, 32, 32), w=(32, 16, 3, 3), stride=1, padding=1, groups=1),
    dict(name="pointwise 1x1", x=(8, 48, 16, 16), w=(16, 48, 1, 1), stride=1, padding=0, groups=1),
    dict(name="depthwise 3x3", x=(8, 48, 16, 16), w=(48, 1, 3, 3), stride=1, padding=1, groups=48),
    dict(
        name="depthwise 5x5 s2", x=(8, 96, 16, 16), w=(96, 1, 5, 5), stride=2, padding=2, groups=96
    ),
    dict(name="grouped 3x3 g2", x=(8, 32, 16, 16), w=(32, 16, 3, 3), stride=1, padding=1, groups=2),
]

#: (name, N, in, out) of small fully connected layers.
LINEAR_SHAPES = [("mlp 784-200", 64, 784, 200), ("classifier 512-10", 64, 512, 10)]

#: (name, x shape, kernel_size, stride, padding) of pooling layers.
POOL_SHAPES = [
    ("max/avg 2x2", (8, 32, 32, 32), 2, 2, 0),
    ("max/avg 3x3 s2 p1", (8, 32, 32, 32), 3, 2, 1),
]


def _blas_limit(threads: int | None) -> contextlib.AbstractContextManager:
    """Limit numpy's and SciPy's BLAS to ``threads`` threads (None: no limit)."""
    return contextlib.nullcontext() if threads is None else threadpool_limits(limits=threads)


def _compiled(module_name: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"tinyodl._kernels.{module_name}")
    except ImportError:
        return None


def _compare(
    name: str,
    op: str,
    ref: ModuleType,
    cy: ModuleType | None,
    fn: str,
    args: tuple,
    kwargs: dict[str, Any],
    repeats: int,
    info: dict[str, Any],
) -> dict[str, Any]:
    """Time kernel ``fn(*args, **kwargs)`` on both backends and check they agree."""
    row: dict[str, Any] = {"name": name, "op": op, **info}
    ref_fn = functools.partial(getattr(ref, fn), *args, **kwargs)
    cy_fn = None if cy is None else functools.partial(getattr(cy, fn), *args, **kwargs)
    row["numpy_s"] = median_time(ref_fn, repeats)
    if cy_fn is None:
        row.update(cython_s=None, speedup=None, max_abs_diff=None)
        return row
    row["cython_s"] = median_time(cy_fn, repeats)
    row["speedup"] = row["numpy_s"] / row["cython_s"]
    a, b = ref_fn(), cy_fn()
    a, b = (a[0], b[0]) if isinstance(a, tuple) else (a, b)
    row["max_abs_diff"] = float(np.max(np.abs(a - b)))
    return row


def bench_conv_float(
    shapes: Sequence[dict[str, Any]] | None = None,
    repeats: int = 5,
    dtype: str | np.dtype = "float32",
    seed: int = 0,
    blas_threads: int | None = 1,
) -> list[dict[str, Any]]:
    """Time conv2d forward, backward-input and backward-weight on both backends.

    Parameters
    ----------
    shapes : list of dict, optional
        Each with ``name``, ``x`` (N, C, H, W), ``w`` (F, C/groups, KH, KW), ``stride``,
        ``padding``, ``groups``. Default :data:`MCUNET_CONV_SHAPES`.
    repeats : int
        Timed calls per kernel (the median is reported), after one warm-up call.
    dtype : float32 or float64
    seed : int
        Seed of the random inputs.
    blas_threads : int or None
        BLAS threads during the timing (None: leave OpenBLAS's choice).

    Returns
    -------
    list of dict
        One row per (shape, op): ``name``, ``op``, ``numpy_s``, ``cython_s``,
        ``speedup`` (numpy / cython), ``max_abs_diff``, ``gflop`` (multiply-adds * 2 / 1e9).
        ``cython_s`` and ``speedup`` are None when the kernels are not built.
    """
    rng = np.random.default_rng(seed)
    cy = _compiled("conv")
    rows = []
    with _blas_limit(blas_threads):
        for s in shapes or MCUNET_CONV_SHAPES:
            x = rng.standard_normal(s["x"]).astype(dtype)
            w = rng.standard_normal(s["w"]).astype(dtype)
            kw = dict(stride=s["stride"], padding=s["padding"], groups=s["groups"])
            out = ref_conv.conv2d_forward(x, w, **kw)
            dout = rng.standard_normal(out.shape).astype(dtype)
            gflop = 2 * out.size * int(np.prod(s["w"][1:])) / 1e9
            info = dict(x_shape=tuple(s["x"]), w_shape=tuple(s["w"]), gflop=gflop, **kw)
            cases = [
                ("forward", "conv2d_forward", (x, w)),
                ("backward_input", "conv2d_backward_input", (dout, w, x.shape)),
                ("backward_weight", "conv2d_backward_weight", (dout, x, w.shape)),
            ]
            for op, fn, args in cases:
                rows.append(_compare(s["name"], op, ref_conv, cy, fn, args, kw, repeats, info))
    return rows


def bench_linear_float(
    shapes: Sequence[tuple[str, int, int, int]] | None = None,
    repeats: int = 5,
    dtype: str | np.dtype = "float32",
    seed: int = 0,
    blas_threads: int | None = 1,
) -> list[dict[str, Any]]:
    """Time linear forward and both backward kernels; rows as in :func:`bench_conv_float`."""
    rng = np.random.default_rng(seed)
    cy = _compiled("linear")
    rows = []
    with _blas_limit(blas_threads):
        for name, n, n_in, n_out in shapes or LINEAR_SHAPES:
            x = rng.standard_normal((n, n_in)).astype(dtype)
            w = rng.standard_normal((n_out, n_in)).astype(dtype)
            b = rng.standard_normal(n_out).astype(dtype)
            dout = rng.standard_normal((n, n_out)).astype(dtype)
            cases = [
                ("forward", "linear_forward", (x, w, b)),
                ("backward_input", "linear_backward_input", (dout, w)),
                ("backward_weight", "linear_backward_weight", (dout, x)),
            ]
            info = dict(shape=(n, n_in, n_out))
            for op, fn, args in cases:
                rows.append(_compare(name, op, ref_linear, cy, fn, args, {}, repeats, info))
    return rows


def bench_pool_float(
    shapes: Sequence[tuple] | None = None,
    repeats: int = 5,
    dtype: str | np.dtype = "float32",
    seed: int = 0,
    blas_threads: int | None = 1,
) -> list[dict[str, Any]]:
    """Time max/avg pooling forward and backward; rows as in :func:`bench_conv_float`."""
    rng = np.random.default_rng(seed)
    cy = _compiled("pool")
    rows = []
    with _blas_limit(blas_threads):
        for name, shape, k, s, p in shapes or POOL_SHAPES:
            x = rng.standard_normal(shape).astype(dtype)
            out, argmax = ref_pool.maxpool2d_forward(x, k, s, p)
            dout = rng.standard_normal(out.shape).astype(dtype)
            cases = [
                ("maxpool_forward", "maxpool2d_forward", (x, k, s, p)),
                ("maxpool_backward", "maxpool2d_backward", (dout, argmax, shape)),
                ("avgpool_forward", "avgpool2d_forward", (x, k, s, p)),
                ("avgpool_backward", "avgpool2d_backward", (dout, shape, k, s, p)),
            ]
            for op, fn, args in cases:
                rows.append(
                    _compare(name, op, ref_pool, cy, fn, args, {}, repeats, dict(x_shape=shape))
                )
    return rows


def float_im2col_matmul_conv_time(
    x: np.ndarray,
    w: np.ndarray,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    repeats: int = 5,
    blas_threads: int | None = 1,
) -> float:
    """Median seconds of a float32 conv (groups=1) as numpy im2col + one ``np.matmul``.

    The baseline the int8 kernels are compared with: the same data layout and the same
    im2col, with numpy's (multi-threaded, vectorised) float32 GEMM doing the arithmetic.
    ``x`` (N, C, H, W) and ``w`` (F, C, KH, KW) are cast to float32 first; BLAS runs on
    ``blas_threads`` threads (None: OpenBLAS's choice).
    """
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    w_mat = np.ascontiguousarray(w, dtype=np.float32).reshape(w.shape[0], -1)

    def run() -> np.ndarray:
        cols = ref_conv.im2col(x32, w.shape[2:], stride, padding)  # (N, K, P)
        return np.matmul(w_mat, cols)  # (N, F, P)

    with _blas_limit(blas_threads):
        return median_time(run, repeats)


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of benchmark rows (times in ms)."""
    lines = [f"{'layer':<22}{'op':<18}{'numpy ms':>10}{'cython ms':>11}{'speedup':>9}"]
    for r in rows:
        cy = "-" if r["cython_s"] is None else f"{1e3 * r['cython_s']:.3f}"
        sp = "-" if r["speedup"] is None else f"{r['speedup']:.1f}x"
        lines.append(f"{r['name']:<22}{r['op']:<18}{1e3 * r['numpy_s']:>10.3f}{cy:>11}{sp:>9}")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m tinyodl.bench_float
    for bench in (bench_conv_float, bench_linear_float, bench_pool_float):
        print(format_rows(bench()))
        print()
