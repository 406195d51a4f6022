"""``tinyodl bench kernels``: speed figures as ratios against baselines run in the same process.

Three groups of numbers (chapter 00; GUIDE section 3 gives the expected orders of magnitude):

* int8 GEMM at 512^3 in GOP/s, as a ratio to numpy float32 and int32 matmul;
* int8 convolution on MCUNet-like layers (3x3, 1x1, depthwise) against float32
  im2col + numpy matmul, and the float Cython kernels against the numpy reference;
* float training throughput (samples/s) of ``cnn_mcmahan`` at batch 32 on each backend.

Everything runs single-threaded: the OpenMP kernels are set to one thread and numpy's BLAS is
limited to one thread with ``threadpoolctl``.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from tinyodl import backend


def training_throughput(
    model_name: str = "cnn_mcmahan", batch_size: int = 32, steps: int = 5, seed: int = 0
) -> list[dict[str, Any]]:
    """Samples per second of full SGD training steps, on every available backend.

    Parameters
    ----------
    model_name : str
        A model builder of :mod:`tinyodl.models`.
    batch_size, steps : int
        Batch size and number of timed steps (after one warm-up step).
    seed : int
        Seed of the model and of the random batch.

    Returns
    -------
    list of dict
        One row per backend with ``samples_per_s`` and the ratio to the numpy backend.
    """
    from tinyodl import models
    from tinyodl.nn import SGD, softmax_cross_entropy

    rng = np.random.default_rng(seed)
    x = rng.random((batch_size, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, size=batch_size)
    rows = []
    for name in backend.available_backends():
        with backend.use_backend(name):
            model = getattr(models, model_name)(seed=seed)
            opt = SGD(model.parameters(), lr=0.01, momentum=0.9)

            def step() -> None:
                opt.zero_grad()
                _, dlogits = softmax_cross_entropy(model.forward(x, train=True), y)
                model.backward(dlogits)
                opt.step()

            step()
            start = time.perf_counter()
            for _ in range(steps):
                step()
            elapsed = time.perf_counter() - start
        rows.append(
            dict(
                model=model_name,
                backend=name,
                batch_size=batch_size,
                samples_per_s=batch_size * steps / elapsed,
            )
        )
    base = next(r["samples_per_s"] for r in rows if r["backend"] == "numpy")
    for r in rows:
        r["ratio_vs_numpy_backend"] = r["samples_per_s"] / base
    return rows


def run_kernel_benchmarks(repeats: int = 5, quick: bool = False) -> dict[str, Any]:
    """Run every kernel benchmark and return the results as one JSON-ready dict."""
    from tinyodl import bench_float, bench_int8

    backend.set_num_threads(1)
    gemm_n = 128 if quick else 512
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "processor": platform.processor() or platform.machine(),
            "backends": backend.available_backends(),
            "threads": 1,
        },
        "int8_gemm": bench_int8.bench_gemm(n=gemm_n, repeats=repeats),
        "int8_conv": bench_int8.bench_conv_int8(repeats=repeats),
        "float_conv": bench_float.bench_conv_float(repeats=repeats),
        "training": training_throughput(steps=2 if quick else 5),
    }
    return results


def _print_summary(results: dict[str, Any]) -> None:
    g = results["int8_gemm"]
    print("int8 GEMM:", json.dumps(g, default=float))
    print("int8 conv (ratio to float32 im2col + numpy matmul):")
    for row in results["int8_conv"]:
        print("  ", json.dumps(row, default=float))
    print("float conv, Cython vs numpy reference:")
    for row in results["float_conv"]:
        print("  ", json.dumps(row, default=float))
    print("training throughput:")
    for row in results["training"]:
        print("  ", json.dumps(row, default=float))


def bench_main(args: Any) -> int:
    """CLI entry of ``tinyodl bench kernels``."""
    import scipy.linalg  # noqa: F401  (loads SciPy's BLAS, used by the kernels, so it is limited too)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        results = run_kernel_benchmarks(repeats=args.repeats, quick=args.quick)
    _print_summary(results)
    if args.json_path:
        path = Path(args.json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2, default=float) + "\n")
        print(f"wrote {path}")
    return 0
