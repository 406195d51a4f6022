"""Benchmarks of the int8 kernels against float baselines in the same process (chapter 03).

Two questions, answered as ratios so that they mean the same on any machine:

* :func:`bench_gemm` -- how fast is the int8 GEMM (``gemm_s8``) next to numpy's float32
  matmul (BLAS sgemm) and numpy's int32 matmul (no BLAS: a plain loop)?
* :func:`bench_conv_int8` -- how fast are the int8 convolutions on MCUNet-like layers
  (3x3, pointwise 1x1, depthwise 3x3) next to a float32 im2col + numpy matmul, the
  textbook float implementation (written below with numpy only)?

Every figure is the median of ``repeats`` timed calls (:func:`time.perf_counter`) after a
warm-up call, single-threaded: the OpenMP kernels are set to one thread and, when
``threadpoolctl`` is installed, BLAS too. Expected orders of magnitude are in GUIDE
section 3 (numpy float32 sgemm 67-86 GFLOP/s, int32 matmul about 1 GOP/s).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np

from tinyodl import backend, quant
from tinyodl._timing import median_time
from tinyodl.reference import int8 as ref_int8

#: MCUNet-like layers (NCHW input, weights (F, C/groups, KH, KW)); batch set by the caller.
MCUNET_INT8_LAYERS: list[dict[str, Any]] = [
    dict(name="3x3 conv 16->32 @28x28", x=(16, 28, 28), w=(32, 16, 3, 3), stride=1, padding=1),
    dict(name="1x1 pointwise 48->16 @28x28", x=(48, 28, 28), w=(16, 48, 1, 1), stride=1, padding=0),
    dict(name="3x3 depthwise 48 @28x28", x=(48, 28, 28), w=(48, 1, 3, 3), stride=1, padding=1),
]


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """One OpenMP thread for tinyodl's kernels and, if threadpoolctl is there, for BLAS."""
    backend.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - numbers then use BLAS's default threads
        yield
        return
    with threadpool_limits(limits=1):
        yield


def int8_kernels() -> tuple[str, ModuleType]:
    """The compiled int8 module if it is built, else the numpy reference."""
    try:
        return "cython", importlib.import_module("tinyodl._kernels.int8")
    except ImportError:
        return "numpy", ref_int8


def bench_gemm(n: int = 512, repeats: int = 5, seed: int = 0) -> dict[str, Any]:
    """GOP/s of an n x n x n int8 GEMM and of numpy float32 / int32 matmul (2 n^3 ops each).

    Returns
    -------
    dict
        ``int8_gops``, ``float32_gflops``, ``int32_gops``, ``int8_vs_float32`` and
        ``int8_vs_int32`` (ratios of throughput, > 1 means int8 is faster), and which
        int8 backend was timed.
    """
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (n, n)).astype(np.int8)
    b = rng.integers(-128, 128, (n, n)).astype(np.int8)
    a32, b32 = a.astype(np.int32), b.astype(np.int32)
    af, bf = a.astype(np.float32), b.astype(np.float32)
    name, kernels = int8_kernels()
    ops = 2.0 * n**3
    with single_thread():
        t_int8 = median_time(lambda: kernels.gemm_s8(a, b, 3, -5), repeats)
        t_f32 = median_time(lambda: af @ bf, repeats)
        t_i32 = median_time(lambda: a32 @ b32, max(1, min(repeats, 3)))
    return dict(
        n=n,
        int8_backend=name,
        int8_gops=ops / t_int8 / 1e9,
        float32_gflops=ops / t_f32 / 1e9,
        int32_gops=ops / t_i32 / 1e9,
        int8_vs_float32=t_f32 / t_int8,
        int8_vs_int32=t_i32 / t_int8,
    )


def im2col_float32(x: np.ndarray, kh: int, kw: int, stride: int, padding: int) -> np.ndarray:
    """Float32 baseline im2col: (N, C, H, W) -> (N, C, KH*KW, OH*OW) by one slice per tap."""
    n, c, h, w = x.shape
    oh, ow = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    cols = np.empty((n, c, kh * kw, oh, ow), dtype=np.float32)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i * kw + j] = xp[
                :, :, i : i + stride * oh : stride, j : j + stride * ow : stride
            ]
    return cols.reshape(n, c, kh * kw, oh * ow)


def conv_float32_baseline(
    x: np.ndarray, w: np.ndarray, stride: int, padding: int, depthwise: bool
) -> np.ndarray:
    """Float32 convolution as im2col + numpy matmul (batched per channel when depthwise)."""
    f, _, kh, kw = w.shape
    cols = im2col_float32(x, kh, kw, stride, padding)  # (N, C, KH*KW, P)
    if depthwise:  # (1, C, 1, KH*KW) @ (N, C, KH*KW, P) -> (N, C, 1, P)
        return np.matmul(w.reshape(1, f, 1, kh * kw), cols)[:, :, 0]
    n = x.shape[0]
    return np.matmul(w.reshape(f, -1), cols.reshape(n, -1, cols.shape[-1]))


def bench_conv_int8(
    repeats: int = 5, batch: int = 8, layers: list[dict[str, Any]] | None = None, seed: int = 0
) -> list[dict[str, Any]]:
    """Time int8 convolutions on MCUNet-like layers against float32 im2col + matmul.

    Returns
    -------
    list of dict
        One row per layer: MACs, milliseconds of the int8 kernel (compiled if built) and
        of the float32 baseline, ``speedup_vs_float32`` (> 1 means int8 is faster) and
        the int8 kernel's GOP/s (2 ops per MAC).
    """
    rng = np.random.default_rng(seed)
    name, kernels = int8_kernels()
    rows = []
    for layer in layers or MCUNET_INT8_LAYERS:
        x = rng.integers(-128, 128, (batch, *layer["x"])).astype(np.int8)
        w = rng.integers(-127, 128, layer["w"]).astype(np.int8)
        f, cg, kh, kw = w.shape
        depthwise = cg == 1 and f == x.shape[1] and f > 1
        bias = rng.integers(-1000, 1000, f).astype(np.int32)
        m0, shift = quant.quantize_multiplier(rng.uniform(1e-4, 1e-2, f))
        s, p = layer["stride"], layer["padding"]
        conv = kernels.depthwise_conv2d_s8 if depthwise else kernels.conv2d_s8
        run = functools.partial(conv, x, w, bias, -3, 5, m0, shift, s, p)
        baseline = functools.partial(
            conv_float32_baseline, x.astype(np.float32), w.astype(np.float32), s, p, depthwise
        )
        with single_thread():
            t_int8 = median_time(run, repeats)
            t_f32 = median_time(baseline, repeats)
        out_shape = run().shape
        macs = int(np.prod(out_shape)) * cg * kh * kw
        rows.append(
            dict(
                layer=layer["name"],
                batch=batch,
                int8_backend=name,
                macs=macs,
                int8_ms=1e3 * t_int8,
                float32_im2col_matmul_ms=1e3 * t_f32,
                speedup_vs_float32=t_f32 / t_int8,
                int8_gops=2 * macs / t_int8 / 1e9,
            )
        )
    return rows
