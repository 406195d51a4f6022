"""``tinyodl bench kernels``: the kernels beside numpy and PyTorch, measured in one process.

Chapters 00 and 03. Groups of rows (``rows[].group``) and the summary keys they feed:

* ``int8_gemm`` -- the int8 GEMM at 512^3 (``linear_s8``, requantized, and ``gemm_s8``)
  against numpy float32 matmul and PyTorch's FBGEMM int8 ``Linear``, on the best SIMD path
  and on every path the CPU has (``int8_gemm_paths``); summary ``int8_gemm.vs_sgemm``,
  ``int8_gemm.vs_fbgemm``;
* ``int8_pointwise_gemm`` -- the same on the GEMM shapes of ``mcunet_tiny``'s 1x1 layers;
* ``int8_conv`` -- int8 convolutions against PyTorch's quantized Conv2d, with their scratch
  memory; summary ``int8_conv[].vs_torch_qconv``;
* ``int8_backward`` -- dX/dW through int8 layers against the float32 backward;
* ``float_conv`` -- the float Cython kernels against the numpy reference;
* ``gemm_steps`` (``--gemm-steps``) -- the teaching GEMM of ``kernels/gemm_steps.pyx``;
* ``threads2`` (``--threads2``) -- the int8 GEMM on two threads; summary
  ``threads2.int8_gemm_speedup`` (needs both cores idle: the load average is recorded).

Single-threaded unless stated (OpenMP, BLAS via threadpoolctl, PyTorch). Ratios are > 1
when tinyodl is faster; every row keeps wall-clock and thread-CPU seconds.
"""

from __future__ import annotations

import argparse
import os
import warnings
from typing import Any

HELP = "int8 GEMM/conv/backward and float conv vs numpy and PyTorch (ratios, same process)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``tinyodl bench kernels`` (besides ``--json``, ``--quick``, ``--seed``)."""
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per case")
    parser.add_argument(
        "--gemm-steps", action="store_true",
        help="also time the teaching GEMM step by step (kernels/gemm_steps.pyx)",
    )  # fmt: skip
    parser.add_argument(
        "--threads2", action="store_true",
        help="also time the int8 GEMM on two threads (run on an idle machine)",
    )  # fmt: skip
    parser.add_argument(
        "--only", default=None,
        help="comma-separated groups to run (int8_gemm, int8_pointwise_gemm, int8_conv, "
        "int8_backward, float_conv, gemm_steps, threads2)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run the selected groups; return (rows, summary)."""
    from tinyodl.bench import _float as bench_float
    from tinyodl.bench import _int8 as bench_int8

    quick, repeats, seed = args.quick, max(1, args.repeats), args.seed
    groups = {"int8_gemm", "int8_pointwise_gemm", "int8_conv", "int8_backward", "float_conv"}
    if args.gemm_steps:
        groups.add("gemm_steps")
    if args.threads2:
        groups.add("threads2")
    if args.only:
        groups = {g.strip() for g in args.only.split(",") if g.strip()}
    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    if "int8_gemm" in groups:
        n = 128 if quick else 512
        gemm = bench_int8.bench_gemm(n=n, repeats=repeats, seed=seed)
        best = gemm["best"]
        rows.append({"group": "int8_gemm", **best})
        rows += [{"group": "int8_gemm_paths", **r} for r in gemm["paths"]]
        summary["int8_gemm"] = {
            key: best.get(key)
            for key in (
                "m",
                "k",
                "n",
                "simd_path",
                "vs_sgemm",
                "vs_fbgemm",
                "vs_sgemm_cpu",
                "vs_fbgemm_cpu",
                "linear_s8_gops",
                "gemm_s8_gops",
                "sgemm_gflops",
                "fbgemm_gops",
            )  # fmt: skip
        }
        summary["int8_gemm"]["paths"] = {
            r["simd_path"]: {"vs_sgemm": r["vs_sgemm"], "vs_fbgemm": r.get("vs_fbgemm")}
            for r in gemm["paths"]
        }
    if "int8_pointwise_gemm" in groups:
        pw = bench_int8.bench_pointwise_gemms(batch=2 if quick else 8, repeats=repeats, seed=seed)
        rows += [{"group": "int8_pointwise_gemm", **r} for r in pw]
        summary["int8_pointwise_gemm"] = [
            {"layer": r["layer"], "m": r["m"], "k": r["k"], "n": r["n"],
             "vs_sgemm": r["vs_sgemm"], "vs_fbgemm": r.get("vs_fbgemm")}
            for r in pw
        ]  # fmt: skip
    if "int8_conv" in groups:
        layers = bench_int8.INT8_CONV_LAYERS
        if quick:
            layers = [{**layer, "batch": 1} for layer in layers]
        conv = bench_int8.bench_conv_int8(repeats=repeats, layers=layers, seed=seed)
        rows += [{"group": "int8_conv", **r} for r in conv]
        summary["int8_conv"] = [
            {"layer": r["layer"], "batch": r["batch"], "vs_torch_qconv": r.get("vs_torch_qconv"),
             "vs_torch_qconv_cpu": r.get("vs_torch_qconv_cpu"), "int8_s": r["int8_s"],
             "scratch_bytes": r["scratch_bytes"], "input_bytes": r["input_bytes"]}
            for r in conv
        ]  # fmt: skip
    if "int8_backward" in groups:
        layers = bench_int8.BACKWARD_LAYERS
        if quick:
            layers = [{**layer, "x": (1, *layer["x"][1:])} for layer in layers]
        # sub-millisecond calls whose ratios sit near 1: a median of at least 25 rounds
        back_repeats = repeats if quick else max(repeats, 25)
        back = bench_int8.bench_int8_backward(repeats=back_repeats, layers=layers, seed=seed)
        rows += [{"group": "int8_backward", **r} for r in back]
        summary["int8_backward"] = [
            {"layer": r["layer"], "op": r["op"], "vs_float32": r["vs_float32"],
             "vs_float32_cpu": r["vs_float32_cpu"]}
            for r in back
        ]  # fmt: skip
    if "float_conv" in groups:
        shapes = bench_float.MCUNET_CONV_SHAPES[:2] if quick else None
        fc = bench_float.bench_conv_float(shapes, repeats=repeats, seed=seed)
        rows += [{"group": "float_conv", **r} for r in fc]
    if "gemm_steps" in groups:
        steps = bench_int8.bench_gemm_steps(n=128 if quick else 512, repeats=max(1, repeats // 2),
                                            seed=seed)  # fmt: skip
        rows += [{"group": "gemm_steps", **r} for r in steps]
        summary["gemm_steps"] = [
            {"step": r["name"], "gops": r["gops"], "gops_cpu": r["gops_cpu"],
             "vs_previous": r["vs_previous"], "threads": r["threads"]}
            for r in steps
        ]  # fmt: skip
    if "threads2" in groups:
        t2 = bench_int8.bench_threads(n=128 if quick else 512, repeats=repeats, seed=seed)
        rows.append({"group": "threads2", **t2})
        summary["threads2"] = {
            k: t2[k] for k in ("int8_gemm_speedup", "load_average_before", "load_average_after")
        }
    return rows, summary


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def print_summary(rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """A short human-readable report of the summary."""
    g = summary.get("int8_gemm")
    if g:
        print(
            f"int8 GEMM {g['m']}x{g['k']}x{g['n']} ({g['simd_path']}, 1 thread): "
            f"linear_s8 {g['linear_s8_gops']:.1f} GOP/s, numpy sgemm {g['sgemm_gflops']:.1f} "
            f"GFLOP/s, FBGEMM {_fmt(g.get('fbgemm_gops'), '.1f')} GOP/s"
        )
        print(f"  vs_sgemm {g['vs_sgemm']:.2f}  vs_fbgemm {_fmt(g.get('vs_fbgemm'))}")
        for path, r in g.get("paths", {}).items():
            print(
                f"  path {path:<12} vs_sgemm {r['vs_sgemm']:.2f}  vs_fbgemm {_fmt(r['vs_fbgemm'])}"
            )
    for r in summary.get("int8_pointwise_gemm", []):
        print(f"int8 GEMM {r['layer']:<18} M={r['m']:<5} vs_sgemm {r['vs_sgemm']:.2f}  "
              f"vs_fbgemm {_fmt(r['vs_fbgemm'])}")  # fmt: skip
    for r in summary.get("int8_conv", []):
        print(f"int8 conv {r['layer']:<38} batch {r['batch']}: vs_torch_qconv "
              f"{_fmt(r['vs_torch_qconv'])}  scratch {r['scratch_bytes']:,} B")  # fmt: skip
    for r in summary.get("int8_backward", []):
        print(f"int8 backward {r['layer']:<28} {r['op']}: vs_float32 {r['vs_float32']:.2f}")
    for r in rows:
        if r["group"] == "float_conv":
            print(f"float conv {r['name']:<18} {r['op']:<16} cython vs numpy "
                  f"{_fmt(r['speedup'], '.1f')}x")  # fmt: skip
    for r in summary.get("gemm_steps", []):
        print(f"gemm step {r['step']:<16} {r['gops']:8.1f} GOP/s  ({r['vs_previous']:.1f}x)")
    t2 = summary.get("threads2")
    if t2:
        print(f"two threads: int8 GEMM speedup {t2['int8_gemm_speedup']:.2f}x "
              f"(load average {t2['load_average_before']:.2f})")  # fmt: skip


def main(args: argparse.Namespace) -> int:
    """CLI entry of ``tinyodl bench kernels``."""
    from tinyodl.bench._common import machine_info, write_results

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's quantized-API deprecation
        load = os.getloadavg()[0]
        rows, summary = run(args)
    print_summary(rows, summary)
    machine = {**machine_info(threads=1), "load_average_1min": load}
    write_results(args.json_path, rows, summary, machine=machine)
    return 0
