"""Benchmarks of the int8 kernels (chapter 03), as ratios measured in one process.

* :func:`bench_gemm` -- the int8 GEMM at 512^3: ``linear_s8`` (int8 in, requantized int8
  out) and ``gemm_s8`` (int32 out) against numpy's float32 matmul (BLAS sgemm) and, with
  torch installed, PyTorch's FBGEMM quantized ``Linear``; also every SIMD path the CPU has.
* :func:`bench_pointwise_gemms` -- the same on the GEMM shapes of ``mcunet_tiny``'s 1x1
  convolutions (M = batch x pixels, K = in channels, N = out channels).
* :func:`bench_conv_int8` -- int8 convolutions (3x3, 1x1, depthwise, and a batch-1 7x7
  layer where call overhead dominates) against PyTorch's quantized ``Conv2d``, with the
  scratch memory each call takes (tracemalloc peak beyond the output).
* :func:`bench_int8_backward` -- dX and dW through int8 layers against the float32
  backward of the same layer.
* :func:`bench_gemm_steps` -- the teaching GEMM of ``kernels/gemm_steps.pyx``, step by step.
* :func:`bench_threads` -- the int8 GEMM on two threads against one.

Every timing is the median of interleaved repeats (:func:`tinyodl._timing.interleaved_times`)
after a warm-up, single-threaded (OpenMP, BLAS and PyTorch set to one thread) unless stated.
Each row keeps wall-clock seconds and thread CPU seconds (``*_cpu_s``); ratios are from the
wall clock (``vs_*``) and from CPU time (``vs_*_cpu``, steadier on a shared machine).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import tracemalloc
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import numpy as np
import scipy.linalg  # noqa: F401  (loads SciPy's BLAS, so threadpoolctl can limit it)
from threadpoolctl import threadpool_limits

from tinyodl import backend, quant
from tinyodl._timing import interleaved_times
from tinyodl.bench import _torch
from tinyodl.reference import int8 as ref_int8

#: The int8 convolution layers of the issue (NCHW input shape without the batch).
INT8_CONV_LAYERS: list[dict[str, Any]] = [
    dict(name="3x3 conv 16->32 @28x28", x=(16, 28, 28), w=(32, 16, 3, 3), stride=1, padding=1,
         batch=8),
    dict(name="1x1 pointwise 48->16 @28x28", x=(48, 28, 28), w=(16, 48, 1, 1), stride=1,
         padding=0, batch=8),
    dict(name="3x3 depthwise 48 @28x28", x=(48, 28, 28), w=(48, 1, 3, 3), stride=1, padding=1,
         batch=8),
    dict(name="1x1 pointwise 96->24 @7x7 (batch 1)", x=(96, 7, 7), w=(24, 96, 1, 1), stride=1,
         padding=0, batch=1),
]  # fmt: skip

#: Layers of the backward benchmark (batch 8): conv, depthwise, linear.
BACKWARD_LAYERS: list[dict[str, Any]] = [
    dict(name="3x3 conv 16->32 @28x28", x=(8, 16, 28, 28), w=(32, 16, 3, 3), stride=1,
         padding=1, groups=1),
    dict(name="3x3 depthwise 96 @14x14", x=(8, 96, 14, 14), w=(96, 1, 3, 3), stride=1,
         padding=1, groups=96),
    dict(name="3x3 depthwise 96 s2 @14x14", x=(8, 96, 14, 14), w=(96, 1, 3, 3), stride=2,
         padding=1, groups=96),
    dict(name="1x1 pointwise 96->24 @7x7", x=(8, 96, 7, 7), w=(24, 96, 1, 1), stride=1,
         padding=0, groups=1),
    dict(name="linear 512->256", x=(64, 512), w=(256, 512)),
]  # fmt: skip


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """One thread for tinyodl's OpenMP kernels, for BLAS (threadpoolctl) and for PyTorch."""
    backend.set_num_threads(1)
    with threadpool_limits(limits=1), _torch.torch_threads(1):
        yield


def int8_kernels() -> tuple[str, ModuleType]:
    """The compiled int8 module if it is built, else the numpy reference."""
    try:
        return "cython", importlib.import_module("tinyodl._kernels.int8")
    except ImportError:
        return "numpy", ref_int8


@contextlib.contextmanager
def simd_path(kernels: ModuleType, name: str | None) -> Iterator[None]:
    """Force one SIMD path of the compiled int8 module inside the block (None: the best)."""
    if name is None or not hasattr(kernels, "set_simd_path"):
        yield
        return
    kernels.set_simd_path(name)
    try:
        yield
    finally:
        kernels.set_simd_path(None)


def _rng_s8(rng: np.random.Generator, shape: tuple[int, ...], lo: int = -128) -> np.ndarray:
    return rng.integers(lo, 128, shape).astype(np.int8)


def _linear_args(rng: np.random.Generator, m: int, k: int, n: int) -> tuple:
    x, w = _rng_s8(rng, (m, k)), _rng_s8(rng, (n, k), -127)
    bias = rng.integers(-1000, 1000, n).astype(np.int32)
    m0, shift = quant.quantize_multiplier(rng.uniform(1e-4, 1e-3, n))
    return x, w, bias, -3, 5, m0, shift


def _s(t: dict[str, float]) -> tuple[float, float]:
    """(wall, cpu) seconds of one timing."""
    return t["wall"], t["cpu"]


def _ratio_fields(prefix: str, base: dict[str, float], ours: dict[str, float]) -> dict:
    """``{prefix: base_wall / ours_wall, prefix_cpu: base_cpu / ours_cpu}`` (> 1: ours faster)."""
    return {prefix: base["wall"] / ours["wall"], f"{prefix}_cpu": base["cpu"] / ours["cpu"]}


def gemm_row(
    m: int, k: int, n: int, repeats: int, seed: int, path: str | None = None
) -> dict[str, Any]:
    """One GEMM shape: linear_s8 and gemm_s8 against sgemm (and FBGEMM when torch is there)."""
    rng = np.random.default_rng(seed)
    args = _linear_args(rng, m, k, n)
    x, w = args[0], args[1]
    wt = np.ascontiguousarray(w.T)
    xf, wf = x.astype(np.float32), wt.astype(np.float32)
    name, kernels = int8_kernels()
    fns: list[Callable[[], object]] = [
        functools.partial(kernels.linear_s8, *args),
        functools.partial(kernels.gemm_s8, x, wt, -3, 0),
        lambda: xf @ wf,
    ]
    has_torch = _torch.torch_or_none() is not None
    if has_torch:
        fns.append(_torch.fbgemm_linear(x, w))
    with single_thread(), simd_path(kernels, path):
        times = interleaved_times(fns, repeats)
        used = kernels.get_simd_path() if hasattr(kernels, "get_simd_path") else name
    ops = 2.0 * m * k * n
    lin, gem, sg = times[:3]
    row: dict[str, Any] = dict(
        m=m, k=k, n=n, backend=name, simd_path=used,
        linear_s8_s=_s(lin)[0], linear_s8_cpu_s=_s(lin)[1], gemm_s8_s=_s(gem)[0],
        sgemm_s=_s(sg)[0], sgemm_cpu_s=_s(sg)[1],
        linear_s8_gops=ops / lin["wall"] / 1e9, gemm_s8_gops=ops / gem["wall"] / 1e9,
        sgemm_gflops=ops / sg["wall"] / 1e9,
        **_ratio_fields("vs_sgemm", sg, lin), **_ratio_fields("gemm_s8_vs_sgemm", sg, gem),
    )  # fmt: skip
    if has_torch:
        fb = times[3]
        row.update(fbgemm_s=_s(fb)[0], fbgemm_cpu_s=_s(fb)[1], fbgemm_gops=ops / fb["wall"] / 1e9)
        row.update(_ratio_fields("vs_fbgemm", fb, lin))
    return row


def bench_gemm(n: int = 512, repeats: int = 7, seed: int = 0) -> dict[str, Any]:
    """The n x n x n int8 GEMM on the best SIMD path, plus one row per available path."""
    _, kernels = int8_kernels()
    best = gemm_row(n, n, n, repeats, seed)
    paths = kernels.simd_paths() if hasattr(kernels, "simd_paths") else []
    per_path = [gemm_row(n, n, n, max(3, repeats // 2), seed, p) for p in paths]
    return {"best": best, "paths": per_path}


def mcunet_pointwise_shapes(batch: int = 8) -> list[tuple[str, int, int, int]]:
    """(name, M, K, N) of every 1x1 convolution of ``mcunet_tiny`` on 28x28 MNIST."""
    from tinyodl import models

    shapes, seen = [], set()
    for row in models.mcunet_tiny(seed=0).describe((batch, 1, 28, 28)):
        cfg = row["config"]
        if row["type"] == "Conv2d" and tuple(np.atleast_1d(cfg.get("kernel_size"))) in (
            (1,),
            (1, 1),
        ):
            _, c, h, w = row["input_shape"]
            f = row["output_shape"][1]
            key = (batch * h * w, c, f)
            if key not in seen:
                seen.add(key)
                shapes.append((f"1x1 {c}->{f} @{h}x{w}", *key))
    return shapes


def bench_pointwise_gemms(batch: int = 8, repeats: int = 7, seed: int = 0) -> list[dict[str, Any]]:
    """int8 GEMM rows on the pointwise-layer shapes of ``mcunet_tiny`` (batch ``batch``)."""
    rows = []
    for name, m, k, n in mcunet_pointwise_shapes(batch):
        rows.append({"layer": name, "batch": batch, **gemm_row(m, k, n, repeats, seed)})
    return rows


def scratch_bytes(fn: Callable[[], np.ndarray]) -> int:
    """Peak bytes a call allocates beyond its result (tracemalloc sees numpy's buffers)."""
    fn()  # warm-up: first-call allocations (imports, caches) are not scratch
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        out = fn()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return int(peak - out.nbytes)


def bench_conv_int8(
    repeats: int = 7, layers: list[dict[str, Any]] | None = None, seed: int = 0
) -> list[dict[str, Any]]:
    """int8 convolutions against PyTorch's quantized Conv2d (FBGEMM) on the same layer."""
    rng = np.random.default_rng(seed)
    name, kernels = int8_kernels()
    has_torch = _torch.torch_or_none() is not None
    rows = []
    for layer in layers or INT8_CONV_LAYERS:
        x = _rng_s8(rng, (layer["batch"], *layer["x"]))
        w = _rng_s8(rng, layer["w"], -127)
        f, cg, kh, kw = w.shape
        groups = x.shape[1] // cg
        bias = rng.integers(-1000, 1000, f).astype(np.int32)
        m0, shift = quant.quantize_multiplier(rng.uniform(1e-4, 1e-2, f))
        s, p = layer["stride"], layer["padding"]
        if groups > 1:
            run = functools.partial(kernels.depthwise_conv2d_s8, x, w, bias, -3, 5, m0, shift, s, p)
        else:
            run = functools.partial(kernels.conv2d_s8, x, w, bias, -3, 5, m0, shift, s, p)
        fns: list[Callable[[], object]] = [run]
        if has_torch:
            fns.append(_torch.fbgemm_conv(x, w, s, p, groups))
        with single_thread():
            times = interleaved_times(fns, repeats)
        out = run()
        macs = int(out.size) * cg * kh * kw
        row: dict[str, Any] = dict(
            layer=layer["name"], batch=layer["batch"], backend=name,
            simd_path=getattr(kernels, "get_simd_path", lambda: name)(), macs=macs,
            int8_s=_s(times[0])[0], int8_cpu_s=_s(times[0])[1],
            int8_gops=2 * macs / times[0]["wall"] / 1e9,
            input_bytes=int(x.nbytes), output_bytes=int(out.nbytes),
            scratch_bytes=scratch_bytes(run),
        )  # fmt: skip
        if has_torch:
            row.update(torch_qconv_s=_s(times[1])[0], torch_qconv_cpu_s=_s(times[1])[1])
            row.update(_ratio_fields("vs_torch_qconv", times[1], times[0]))
        rows.append(row)
    return rows


def _float_kernels() -> tuple[ModuleType, ModuleType]:
    try:
        return (importlib.import_module("tinyodl._kernels.conv"),
                importlib.import_module("tinyodl._kernels.linear"))  # fmt: skip
    except ImportError:
        from tinyodl.reference import conv, linear

        return conv, linear


def _backward_kernels() -> ModuleType:
    try:
        return importlib.import_module("tinyodl._kernels.int8_backward")
    except ImportError:
        from tinyodl.reference import int8_backward

        return int8_backward


def bench_int8_backward(
    repeats: int = 7, layers: list[dict[str, Any]] | None = None, seed: int = 0
) -> list[dict[str, Any]]:
    """dX and dW of int8 layers (float32 gradients) against the float32 layer's backward."""
    rng = np.random.default_rng(seed)
    conv, linear = _float_kernels()
    qb = _backward_kernels()
    rows = []
    for layer in layers or BACKWARD_LAYERS:
        xq = _rng_s8(rng, layer["x"])
        wq = _rng_s8(rng, layer["w"], -127)
        xf, wf = xq.astype(np.float32), wq.astype(np.float32)
        P = functools.partial
        if len(layer["x"]) == 2:
            dout = rng.standard_normal((xq.shape[0], wq.shape[0]), dtype=np.float32)
            pairs = {
                "dx": (P(qb.linear_s8_backward_input, dout, wq),
                       P(linear.linear_backward_input, dout, wf)),
                "dw": (P(qb.linear_s8_backward_weight, dout, xq, -3),
                       P(linear.linear_backward_weight, dout, xf)),
            }  # fmt: skip
        else:
            geo = (layer["stride"], layer["padding"], layer["groups"])
            dout = rng.standard_normal(conv.conv2d_forward(xf, wf, None, *geo).shape,
                                       dtype=np.float32)  # fmt: skip
            pairs = {
                "dx": (P(qb.conv2d_s8_backward_input, dout, wq, xq.shape, *geo),
                       P(conv.conv2d_backward_input, dout, wf, xf.shape, *geo)),
                "dw": (P(qb.conv2d_s8_backward_weight, dout, xq, -3, wq.shape, *geo),
                       P(conv.conv2d_backward_weight, dout, xf, wf.shape, *geo)),
            }  # fmt: skip
        for op, (q_fn, f_fn) in pairs.items():
            with single_thread():
                tq, tf = interleaved_times([q_fn, f_fn], repeats)
            rows.append(dict(
                layer=layer["name"], op=op, int8_s=_s(tq)[0], int8_cpu_s=_s(tq)[1],
                float32_s=_s(tf)[0], float32_cpu_s=_s(tf)[1],
                **_ratio_fields("vs_float32", tf, tq),
            ))  # fmt: skip
    return rows


def bench_gemm_steps(n: int = 512, repeats: int = 3, seed: int = 0) -> list[dict[str, Any]]:
    """GOP/s of each step of ``kernels/gemm_steps.pyx`` on an n x n x n int8 GEMM."""
    try:
        steps = importlib.import_module("tinyodl._kernels.gemm_steps")
    except ImportError:
        return []
    rng = np.random.default_rng(seed)
    a, b = _rng_s8(rng, (n, n)), _rng_s8(rng, (n, n), -127)
    want = a.astype(np.float64) @ b.astype(np.float64)
    fns = [functools.partial(getattr(steps, name), a, b) for name in steps.STEPS]
    threads = os.cpu_count() or 1  # the last step uses every core; the others one thread
    with single_thread():
        steps.set_num_threads(threads)
        try:
            times = interleaved_times(fns, repeats)
        finally:
            steps.set_num_threads(1)
    rows, ops = [], 2.0 * n**3
    for i, (name, t) in enumerate(zip(steps.STEPS, times, strict=True)):
        rows.append(dict(
            step=i, name=name, n=n, seconds=t["wall"], cpu_seconds=t["cpu"],
            gops=ops / t["wall"] / 1e9, gops_cpu=ops / t["cpu"] / 1e9,
            vs_previous=(times[i - 1]["wall"] / t["wall"]) if i else 1.0,
            vs_reference=times[0]["wall"] / t["wall"],
            exact=bool(np.array_equal(fns[i](), want)),
            simd_path=steps.simd_path() if name in ("widened", "threaded") else None,
            threads=threads if name == "threaded" else 1, load_average=os.getloadavg()[0],
        ))  # fmt: skip
    return rows


def bench_threads(n: int = 512, repeats: int = 9, seed: int = 0) -> dict[str, Any]:
    """Wall-clock speedup of ``linear_s8`` (n^3) on two OpenMP threads over one."""
    rng = np.random.default_rng(seed)
    args = _linear_args(rng, n, n, n)
    name, kernels = int8_kernels()
    run = functools.partial(kernels.linear_s8, *args)

    def with_threads(t: int) -> Callable[[], object]:
        def call() -> object:
            backend.set_num_threads(t)
            try:
                return run()
            finally:
                backend.set_num_threads(1)

        return call

    load_before = os.getloadavg()[0]
    with threadpool_limits(limits=1):
        one, two = interleaved_times([with_threads(1), with_threads(2)], repeats)
    return dict(
        n=n, backend=name, one_thread_s=one["wall"], two_threads_s=two["wall"],
        int8_gemm_speedup=one["wall"] / two["wall"], cores=os.cpu_count(),
        load_average_before=load_before, load_average_after=os.getloadavg()[0],
    )  # fmt: skip
