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

import platform
import time
from typing import Any

import numpy as np

from tinyodl import backend


def _sgd_step(model: Any, opt: Any, x: np.ndarray, y: np.ndarray) -> None:
    from tinyodl.nn import softmax_cross_entropy

    opt.zero_grad()
    _, dlogits = softmax_cross_entropy(model.forward(x, train=True), y)
    model.backward(dlogits)
    opt.step()


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
    from tinyodl.nn import SGD

    rng = np.random.default_rng(seed)
    x = rng.random((batch_size, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, size=batch_size)
    rows = []
    for name in backend.available_backends():
        with backend.use_backend(name):
            model = getattr(models, model_name)(seed=seed)
            opt = SGD(model.parameters(), lr=0.01, momentum=0.9)
            _sgd_step(model, opt, x, y)  # warm-up: allocates gradient and momentum buffers
            start = time.perf_counter()
            for _ in range(steps):
                _sgd_step(model, opt, x, y)
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
    from tinyodl.bench import _float as bench_float
    from tinyodl.bench import _int8 as bench_int8

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
    from tinyodl.bench._float import format_rows

    g = results["int8_gemm"]
    print(f"int8 GEMM {g['n']}^3 ({g['int8_backend']}, 1 thread): {g['int8_gops']:.1f} GOP/s")
    print(f"  numpy float32 matmul {g['float32_gflops']:.1f} GFLOP/s", end=" ")
    print(f"-> ratio {g['int8_vs_float32']:.2f}")
    print(f"  numpy int32 matmul   {g['int32_gops']:.2f} GOP/s   -> ratio {g['int8_vs_int32']:.1f}")
    print("int8 conv vs float32 im2col + numpy matmul:")
    print(f"  {'layer':<30}{'batch':>6}{'int8 ms':>10}{'fp32 ms':>10}{'ratio':>8}")
    for r in results["int8_conv"]:
        print(
            f"  {r['layer']:<30}{r['batch']:>6}{r['int8_ms']:>10.3f}"
            f"{r['float32_im2col_matmul_ms']:>10.3f}{r['speedup_vs_float32']:>7.2f}x"
        )
    print("float conv, Cython vs numpy reference:")
    print(format_rows(results["float_conv"]))
    print("training throughput (SGD step, float32):")
    for r in results["training"]:
        print(
            f"  {r['model']} batch {r['batch_size']} on {r['backend']}: "
            f"{r['samples_per_s']:.0f} samples/s ({r['ratio_vs_numpy_backend']:.2f}x numpy backend)"
        )


HELP = "int8 GEMM/conv, float conv, training throughput (ratios, same process)"


def add_arguments(parser: Any) -> None:
    """Options of ``tinyodl bench kernels`` (besides ``--json``, ``--quick``, ``--seed``)."""
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per case")


def main(args: Any) -> int:
    """CLI entry of ``tinyodl bench kernels``."""
    import scipy.linalg  # noqa: F401  (loads SciPy's BLAS, used by the kernels, so it is limited too)
    from threadpoolctl import threadpool_limits

    from tinyodl.bench._common import machine_info, write_results

    with threadpool_limits(limits=1):
        results = run_kernel_benchmarks(repeats=args.repeats, quick=args.quick)
    _print_summary(results)
    machine = {**machine_info(threads=1), **results.pop("machine")}
    rows = [
        {"group": group, **row}
        for group in ("int8_conv", "float_conv", "training")
        for row in results[group]
    ]
    write_results(
        args.json_path, rows, {"int8_gemm": results["int8_gemm"]}, machine=machine, **results
    )
    return 0
