"""Print the before/after table of the performance targets (issue 8) as Markdown.

Reads the recordings of ``benchmarks/run_before.sh`` (``results/before_*.json``: today's
benchmark code on the kernels of commit 992be85), ``run_kernels.sh`` / ``run_train.sh``
(``results/kernels.json``, ``results/train.json``) and ``run_threads.sh``
(``results/threads2_*.json``)::

    python benchmarks/perf_table.py            # print the table (Markdown)
    python benchmarks/perf_table.py --write    # replace it in README.md and benchmarks/README.md

(``--write`` rewrites what lies between the ``<!-- perf-table ... -->`` and
``<!-- /perf-table -->`` lines of both files.)

Each ratio is "wall / cpu": the median wall-clock ratio and the median thread-CPU-time
ratio of the same interleaved runs (> 1: tinyodl is faster). On a shared machine the CPU
ratio is the steadier of the two (it leaves out the time other processes held the core).
"""

from __future__ import annotations

import contextlib
import io
import json
import statistics
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
DOCS = [RESULTS.parent.parent / "README.md", RESULTS.parent / "README.md"]
BEGIN, END = "<!-- perf-table", "<!-- /perf-table -->"


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def pair(row: dict | None, key: str) -> str:
    if not row or row.get(key) is None:
        return "-"
    cpu = row.get(f"{key}_cpu")
    return f"{row[key]:.2f} / {cpu:.2f}" if cpu is not None else f"{row[key]:.2f}"


def rows_of(doc: dict | None, group: str) -> list[dict]:
    return [r for r in (doc or {}).get("rows", []) if r.get("group") == group]


def main() -> None:
    before_k, after_k = load("before_kernels"), load("kernels")
    before_t, after_t = load("before_train"), load("train")
    out = [
        "| target | layer / shape | goal | before | after | after, absolute |",
        "|---|---|---|---|---|---|",
    ]

    def gemm(doc):
        rows = rows_of(doc, "int8_gemm")
        return rows[0] if rows else None

    b, a = gemm(before_k), gemm(after_k)
    if a:
        shape = f"{a['m']}x{a['k']}x{a['n']}, linear_s8 (requantized)"
        out.append(f"| 1. int8 GEMM vs numpy sgemm | {shape} | >= 1.0 | {pair(b, 'vs_sgemm')} | "
                   f"{pair(a, 'vs_sgemm')} | {a['linear_s8_gops']:.0f} GOP/s vs "
                   f"{a['sgemm_gflops']:.0f} GFLOP/s |")  # fmt: skip
        fb = a.get("fbgemm_gops", 0)
        out.append(f"| 1. int8 GEMM vs FBGEMM | {shape} | >= 0.5 (0.8) | {pair(b, 'vs_fbgemm')} | "
                   f"{pair(a, 'vs_fbgemm')} | FBGEMM {fb:.0f} GOP/s |")  # fmt: skip
        for p in rows_of(after_k, "int8_gemm_paths"):
            out.append(f"| 1. ... SIMD path `{p['simd_path']}` | same | | | "
                       f"{pair(p, 'vs_sgemm')} (sgemm), {pair(p, 'vs_fbgemm')} (FBGEMM) | "
                       f"{p['linear_s8_gops']:.0f} GOP/s |")  # fmt: skip
    pw_b = {r["layer"]: r for r in rows_of(before_k, "int8_pointwise_gemm")}
    for r in rows_of(after_k, "int8_pointwise_gemm"):
        rb = pw_b.get(r["layer"])
        out.append(f"| 1. int8 GEMM, mcunet_tiny pointwise (batch {r['batch']}) | {r['layer']}: "
                   f"{r['m']}x{r['k']}x{r['n']} | >= 1.0 sgemm, >= 0.5 FBGEMM | "
                   f"{pair(rb, 'vs_sgemm')}, {pair(rb, 'vs_fbgemm')} | "
                   f"{pair(r, 'vs_sgemm')}, {pair(r, 'vs_fbgemm')} | "
                   f"{r['linear_s8_gops']:.0f} GOP/s |")  # fmt: skip
    conv_b = {r["layer"]: r for r in rows_of(before_k, "int8_conv")}
    for r in rows_of(after_k, "int8_conv"):
        rb = conv_b.get(r["layer"])
        goal = ">= 0.5 (call overhead)" if r["batch"] == 1 else ">= 0.5"
        scratch = f"{r['scratch_bytes']:,} B scratch" + (
            f" (before {rb['scratch_bytes']:,} B)" if rb else ""
        )
        out.append(f"| 2. int8 conv vs torch quantized Conv2d | {r['layer']}, batch {r['batch']} | "
                   f"{goal} | {pair(rb, 'vs_torch_qconv')} | {pair(r, 'vs_torch_qconv')} | "
                   f"{1e3 * r['int8_s']:.3f} ms, {scratch} |")  # fmt: skip
    train_b = {(r["model"], r["batch"]): r for r in rows_of(before_t, "train")}
    for r in rows_of(after_t, "train"):
        rb = train_b.get((r["model"], r["batch"]))
        goal = ">= 0.8" if r["model"] != "lenet5" else "(not a target)"
        out.append(f"| 3. training step vs PyTorch | {r['model']}, batch {r['batch']} | {goal} | "
                   f"{pair(rb, 'vs_torch')} | {pair(r, 'vs_torch')} | "
                   f"{r['samples_per_s']:.0f} samples/s |")  # fmt: skip
    back_b = {(r["layer"], r["op"]): r for r in rows_of(before_k, "int8_backward")}
    for r in rows_of(after_k, "int8_backward"):
        rb = back_b.get((r["layer"], r["op"]))
        out.append(f"| 4. int8 backward vs float32 backward | {r['layer']}, {r['op']} | >= 1.0 | "
                   f"{pair(rb, 'vs_float32')} | {pair(r, 'vs_float32')} | "
                   f"{1e3 * r['int8_s']:.3f} ms |")  # fmt: skip
    t2k, t2t = load("threads2_kernels"), load("threads2_train")
    for doc, key, name in ((t2k, "int8_gemm_speedup", "int8 GEMM 512^3"),
                           (t2t, "train_speedup", "cnn_mcmahan step, batch 32")):  # fmt: skip
        if doc:
            s = doc["summary"]["threads2"]
            out.append(
                f"| 5. two threads over one (wall clock) | {name} | >= 1.7 | - | "
                f"{s[key]:.2f} | load average {s['load_average_before']:.2f} |"
            )
        else:  # only meaningful with both cores idle (benchmarks/run_threads.sh waits for it)
            out.append(
                f"| 5. two threads over one (wall clock) | {name} | >= 1.7 | - | "
                "not measured: no idle machine | `benchmarks/run_threads.sh` |"
            )
    print("\n".join(out))
    steps = rows_of(after_k, "gemm_steps")
    if steps:
        print()
        print("| step (`kernels/gemm_steps.pyx`) | GOP/s (wall / cpu) | x previous | threads |")
        print("|---|---|---|---|")
        for r in steps:
            print(
                f"| {r['step']}. {r['name']} | {r['gops']:.1f} / {r['gops_cpu']:.1f} | "
                f"{r['vs_previous']:.1f} | {r['threads']} |"
            )
    for doc, label in ((after_k, "kernels"), (after_t, "train")):
        if doc:
            m = doc["machine"]
            print(
                f"\n{label}: `{doc['command']}` on {m['cpu']} ({', '.join(m['cpu_flags'])}), "
                f"{m['cores']} cores, load average {m.get('load_average_1min', 0):.1f}, "
                f"numpy {m['numpy']}, torch {m.get('torch', '-')}"
            )
    if after_t:
        ratios = [r["vs_torch_cpu"] for r in rows_of(after_t, "train") if r.get("vs_torch_cpu")]
        if ratios:
            print(f"(median training ratio, CPU time: {statistics.median(ratios):.2f})")


def write(table: str) -> None:
    """Put ``table`` between the perf-table markers of README.md and benchmarks/README.md."""
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        begin = next(i for i, line in enumerate(lines) if line.startswith(BEGIN))
        end = next(i for i, line in enumerate(lines) if line.startswith(END))
        lines[begin + 1 : end] = ["", *table.strip().splitlines(), ""]
        doc.write_text("\n".join(lines) + "\n")
        print(f"wrote the table into {doc}")


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            main()
        write(buffer.getvalue())
    else:
        main()
