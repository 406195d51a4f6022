"""``tinyodl bench lifecycle``: drift -> trigger -> adapt on task B's writer shift.

Issue 15, chapters 01 and 04. The scenario of :mod:`tinyodl.lifecycle.scenario`, one
stream per seed (the switch step is drawn from the seed): for each policy -- never adapt, a
fixed schedule, an oracle alarm at the switch, and each detector (Page–Hinkley on the
confidence, MMD and KS on penultimate features, DDM and ADWIN on late-labelled errors)
arming the trigger policy -- the detection delay, false alarms per 10,000 steps before the
switch, adaptations, the accuracy on the stream before/after the switch and on its last
quarter, and the final model's accuracy on held-out images of the new writer and of clean
digits. Mean over seeds; ``--plot`` draws the stream accuracy of each policy over time
(seed 0). The method is the most accurate of the demo's float methods (``--methods all``:
of all its methods, int8 ones included) whose measured peak
(``benchmarks/results/demo.json``) fits ``--memory-budget``. Energy per adaptation and over
the stream from :mod:`tinyodl.energy` (the steps actually run, MACs from ``describe()``).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

HELP = "drift detectors trigger on-device adaptation: delay, false alarms, accuracy recovery"


def add_arguments(parser: Any) -> None:
    """Options of ``tinyodl bench lifecycle``."""
    parser.add_argument("--seeds", type=int, default=3, help="streams (default 3; quick: 1)")
    parser.add_argument(
        "--memory-budget", type=int, default=256 * 1024, help="training memory, bytes"
    )
    parser.add_argument(
        "--storage", type=int, default=64 * 1024, help="adaptation buffer budget, bytes"
    )
    parser.add_argument(
        "--methods",
        choices=("float", "all"),
        default="float",
        help="candidate methods: the demo's float ones (default) or all, int8 included",
    )
    parser.add_argument("--plot", default=None, help="write the accuracy-over-time figure")


def config(quick: bool, seed: int, args: Any = None):
    """The scenario's configuration (``quick``: a short stream, a few policies)."""
    from tinyodl.lifecycle.scenario import ScenarioConfig

    cfg = ScenarioConfig(seed=seed)
    if quick:
        cfg = replace(
            cfg,
            n_stream=500,
            reference=100,
            window=50,
            min_examples=30,
            schedule_every=200,
            epochs=1,
            n_test=200,
            label_delay=20,
            policies=("never", "schedule", "page_hinkley", "ddm"),
        )
    if args is not None:
        from tinyodl.lifecycle.scenario import FLOAT_METHODS, LOOP_METHODS

        methods = LOOP_METHODS if getattr(args, "methods", "float") == "all" else FLOAT_METHODS
        cfg = replace(
            cfg, memory_budget=args.memory_budget, storage_bytes=args.storage, methods=methods
        )
    return cfg


def plot(doc: dict[str, Any], path: str | Path, window: int = 100) -> None:
    """Running accuracy on the stream (moving average) of each policy, seed 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = doc["runs"][0]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for row in run["rows"]:
        right = np.asarray(row["correct"], dtype=float)
        smooth = np.convolve(right, np.ones(window) / window, mode="valid")
        (line,) = ax.plot(np.arange(window - 1, len(right)), 100 * smooth, lw=1.2,
                          label=row["policy"])  # fmt: skip
        for a in row["adaptations"]:
            ax.plot(a, 100 * smooth[min(max(a - window + 1, 0), len(smooth) - 1)], "v",
                    color=line.get_color(), ms=6)  # fmt: skip
    ax.axvline(run["info"]["switch"], color="black", ls=":", label="new writer")
    title = f"drift -> trigger -> adapt ({run['info']['method']}; v = adaptation)"
    ax.set(xlabel="stream step", ylabel=f"accuracy, moving average of {window} (%)", title=title)
    ax.legend(fontsize="small", ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(args: Any) -> int:
    """Run the scenario for every seed, print the table, write JSON / figure."""
    from tinyodl.bench._common import machine_info, write_results
    from tinyodl.lifecycle.scenario import format_rows, run_scenario, summarise

    seeds = 1 if args.quick else args.seeds
    start = time.perf_counter()
    runs = []
    for s in range(seeds):
        cfg = config(args.quick, args.seed + s, args)
        runs.append(run_scenario(cfg, progress=True, keep_correct=args.plot is not None))
    rows = summarise(runs)
    print(format_rows(rows))
    info = runs[0]["info"]
    summary = {
        "method": info["method"],
        "method_peak_bytes": info["method_peak_bytes"],
        "best_fitting_any_method": info["best_fitting_any_method"],
        "buffer_capacity": info["buffer_capacity"],
        "switches": [r["info"]["switch"] for r in runs],
        "accuracy_before_adaptation_new_writer": float(
            np.mean([r["info"]["accuracy_before_adaptation_new_writer"] for r in runs])
        ),
        "accuracy_before_adaptation_clean": float(
            np.mean([r["info"]["accuracy_before_adaptation_clean"] for r in runs])
        ),
        "seconds": time.perf_counter() - start,
        "quick": bool(args.quick),
        "seeds": seeds,
        "energy_joules": {r["policy"]: r["energy_joules"] for r in rows},  # mean over seeds
        "radio": runs[0]["info"]["radio"],
    }
    print(
        f"method {summary['method']} (peak {summary['method_peak_bytes'] / 1024:.0f} KB <= "
        f"budget {args.memory_budget / 1024:.0f} KB; best of any demo method that fits: "
        f"{summary['best_fitting_any_method']}), buffer {summary['buffer_capacity']} examples"
    )
    if args.plot:
        plot({"runs": runs}, args.plot)
        print(f"wrote {args.plot}")
    for run in runs:
        for row in run["rows"]:
            row.pop("correct", None)
    write_results(args.json_path, rows, summary, machine_info(threads=1), runs=runs)
    return 0
