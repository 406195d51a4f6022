"""``tinyodl bench checkpointing``: measured peak memory against extra forward compute.

Chapter 06's headline figures, all memory measured with tracemalloc
(:func:`tinyodl.checkpointing.measure_backprop`) beside the planner's prediction
(:func:`tinyodl.checkpointing.simulate_plan` on a :func:`~tinyodl.checkpointing.profile_chain`):

* ``chain16``: 16 equal ``Linear(64, 64)`` layers (each keeps one activation) cut into
  k = 1, 2, 4, 8, 16 segments -- the textbook count, in activations; ``summary.chain16_k4``;
  the same with a ReLU after each layer (``chain16_relu``);
* ``deep_cnn``: a 16-block CNN (conv + batchnorm + ReLU, 19 links) on MNIST-sized input:
  sqrt-style plans with k equal segments, the dynamic-programming plans for a range of
  budgets, and Chen's greedy at the same budgets. Extra compute is in MACs (recomputed
  forward work over one forward pass); time is a ratio against plain backprop measured in
  the same process, alternating the two and keeping the fastest of ``--repeats`` runs of
  each (on a shared machine, treat it as indicative).

``--plot FILE`` draws measured peak memory against extra forward compute for the deep CNN.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

HELP = "checkpointing: measured peak memory vs recomputation (chain of 16, deep CNN)"


def _time_ratio(model: Any, plain: Any, x: np.ndarray, dout: np.ndarray, repeats: int) -> float:
    """Time of forward + backward of ``model`` over that of ``plain``, same process.

    The two are timed alternately (so that a busy spell of a shared machine hits both) and
    the fastest of ``repeats`` runs of each is kept: the least disturbed measurement.
    """

    def seconds(m: Any) -> float:
        start = time.perf_counter()
        m.forward(x)
        m.backward(dout)
        return time.perf_counter() - start

    seconds(plain), seconds(model)  # warm-up
    times = [(seconds(plain), seconds(model)) for _ in range(repeats)]
    return min(t for _, t in times) / min(t for t, _ in times)


def _row(name: str, method: str, plan: Any, measured: Any, unit: int | None, **extra: Any):
    row = {
        "network": name,
        "method": method,
        "segments": plan.num_segments,
        "boundaries": list(plan.boundaries),
        "peak_bytes_measured": measured.peak_bytes,
        "peak_bytes_predicted": plan.peak_bytes,
        "kept_bytes_measured": measured.kept_bytes,
        "recompute_fraction": plan.recompute_fraction,
        **extra,
    }
    if unit:
        row["live_activations_measured"] = measured.peak_bytes / unit
        row["live_activations_predicted"] = plan.peak_bytes / unit
    return row


def bench_chain(
    relu: bool, batch: int, width: int, segments: list[int], repeats: int, seed: int
) -> list[dict[str, Any]]:
    """Equal-layer chain of 16 cut into ``segments``; memory in bytes and in activations."""
    from tinyodl.checkpointing import (
        CheckpointedSequential,
        equal_linear_chain,
        evaluate_plan,
        measure_backprop,
        profile_chain,
        sqrt_segments,
    )

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, width)).astype(np.float32)
    dout = rng.standard_normal((batch, width)).astype(np.float32)
    plain = equal_linear_chain(16, width, relu, seed)
    profile = profile_chain(plain, x)
    unit = x.nbytes  # one activation: an (N, width) float32 array
    name = "chain16_relu" if relu else "chain16"
    rows = []
    for k in segments:
        model = CheckpointedSequential.wrap(equal_linear_chain(16, width, relu, seed), segments=k)
        plan = evaluate_plan(profile, sqrt_segments(16, k), method=f"{k} equal segments")
        measured = measure_backprop(model, x, dout)
        ratio = _time_ratio(model, plain, x, dout, repeats) if repeats else None
        rows.append(_row(name, plan.method, plan, measured, unit, time_ratio_vs_plain=ratio))
    return rows


def bench_deep_cnn(
    depth: int,
    batch: int,
    fractions: list[float],
    repeats: int,
    seed: int,
    segment_counts: range = range(1, 9),
    frontier_points: int = 60,
) -> tuple[list[dict[str, Any]], list[tuple[float, int]]]:
    """Plans for the deep CNN: k equal segments, DP plans and greedy plans for budgets.

    Returns the rows and the predicted frontier of the DP planner: ``(recompute fraction,
    peak bytes)`` of its plans for ``frontier_points`` budgets between the lowest and the
    plain peak.
    """
    from tinyodl.checkpointing import (
        CheckpointedSequential,
        deep_cnn,
        evaluate_plan,
        measure_backprop,
        min_peak_bytes,
        plan_checkpoints,
        plan_greedy,
        profile_chain,
        simulate_plan,
        sqrt_segments,
    )

    rng = np.random.default_rng(seed)
    x = rng.random((batch, 1, 28, 28), dtype=np.float32)
    dout = rng.standard_normal((batch, 10)).astype(np.float32)
    plain = deep_cnn(depth, seed=seed)
    profile = profile_chain(plain, x)
    n = profile.n
    plans = [evaluate_plan(profile, sqrt_segments(n, k), method="equal") for k in segment_counts]
    lowest, highest = min_peak_bytes(profile), simulate_plan(profile)
    for f in fractions:
        budget = int(lowest + f * (highest - lowest))
        plans.append(plan_checkpoints(profile, budget))
        try:
            plans.append(plan_greedy(profile, budget))
        except ValueError:
            pass  # no greedy plan within this budget; the DP row says one exists
    frontier = []
    for budget in np.linspace(lowest, highest, frontier_points).astype(int):
        plan = plan_checkpoints(profile, int(budget))
        frontier.append((plan.recompute_fraction, plan.peak_bytes))
    rows = []
    for plan in plans:
        model = CheckpointedSequential.wrap(deep_cnn(depth, seed=seed), boundaries=plan.boundaries)
        measured = measure_backprop(model, x, dout)
        ratio = _time_ratio(model, plain, x, dout, repeats) if repeats else None
        rows.append(
            _row(
                f"deep_cnn{depth}",
                plan.method,
                plan,
                measured,
                None,
                budget_bytes=plan.budget_bytes,
                time_ratio_vs_plain=ratio,
            )
        )
    return rows, sorted(set(frontier))


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures quoted in the README and the notebook."""

    def pick(network: str, segments: int) -> dict[str, Any]:
        return next(r for r in rows if r["network"] == network and r["segments"] == segments)

    k4, plain = pick("chain16", 4), pick("chain16", 1)
    relu4, relu1 = pick("chain16_relu", 4), pick("chain16_relu", 1)
    cnn = [r for r in rows if r["network"].startswith("deep_cnn")]
    cnn_plain = next(r for r in cnn if r["segments"] == 1 and r["method"] == "equal")
    cnn_low = min(cnn, key=lambda r: r["peak_bytes_measured"])
    errors = [
        abs(r["peak_bytes_predicted"] - r["peak_bytes_measured"]) / r["peak_bytes_measured"]
        for r in rows
    ]
    return {
        "chain16_k4": {
            "live_activations_measured": k4["live_activations_measured"],
            "live_activations_plain": plain["live_activations_measured"],
            "live_activations_predicted": k4["live_activations_predicted"],
            "live_activations_textbook": 16 / 4 + 4,
            "peak_bytes_measured": k4["peak_bytes_measured"],
            "peak_bytes_plain": plain["peak_bytes_measured"],
            "recompute_fraction": k4["recompute_fraction"],
            "time_ratio_vs_plain": k4["time_ratio_vs_plain"],
        },
        "chain16_relu_k4": {
            "peak_bytes_measured": relu4["peak_bytes_measured"],
            "peak_bytes_plain": relu1["peak_bytes_measured"],
            "memory_ratio": relu4["peak_bytes_measured"] / relu1["peak_bytes_measured"],
        },
        "deep_cnn": {
            "network": cnn_plain["network"],
            "plain_peak_bytes": cnn_plain["peak_bytes_measured"],
            "lowest_peak_bytes": cnn_low["peak_bytes_measured"],
            "lowest_peak_recompute_fraction": cnn_low["recompute_fraction"],
            "memory_ratio": cnn_low["peak_bytes_measured"] / cnn_plain["peak_bytes_measured"],
        },
        "prediction_max_relative_error": max(errors),
    }


def plot(rows: list[dict[str, Any]], path: str, frontier: list | None = None) -> None:
    """Measured (filled) and predicted (hollow) peak memory against extra forward compute."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cnn = [r for r in rows if r["network"].startswith("deep_cnn")]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"equal": ("o", "k equal segments"), "dp": ("s", "DP plan for a budget")}
    styles["greedy"] = ("^", "Chen's greedy for the same budgets")
    if frontier:
        ax.step(
            [100 * f for f, _ in frontier],
            [b / 2**20 for _, b in frontier],
            where="post",
            color="0.6",
            lw=1,
            label="DP frontier (predicted)",
        )
    for method, (marker, label) in styles.items():
        sel = [r for r in cnn if r["method"] == method]
        sel.sort(key=lambda r: r["recompute_fraction"])
        if not sel:
            continue
        xs = [100 * r["recompute_fraction"] for r in sel]
        line = ax.plot(xs, [r["peak_bytes_measured"] / 2**20 for r in sel], marker, label=label)
        ax.plot(
            xs,
            [r["peak_bytes_predicted"] / 2**20 for r in sel],
            marker,
            mfc="none",
            color=line[0].get_color(),
            ms=11,
        )
    ax.set_xlabel("extra forward compute (% of one forward pass, MACs)")
    ax.set_ylabel("peak memory of forward + backward (MiB)")
    ax.set_title(f"{cnn[0]['network']}: measured (filled) and predicted (hollow)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def add_arguments(parser: Any) -> None:
    """Options of ``tinyodl bench checkpointing``."""
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (0: no timing)")
    parser.add_argument("--plot", default=None, help="write the figure (PNG) here")


def main(args: Any) -> int:
    """CLI entry of ``tinyodl bench checkpointing``."""
    from threadpoolctl import threadpool_limits

    from tinyodl import backend
    from tinyodl.bench._common import machine_info, write_results

    backend.set_num_threads(1)
    quick = args.quick
    repeats = 0 if quick else args.repeats  # quick: no timing (too short to mean anything)
    with threadpool_limits(limits=1):
        rows = bench_chain(False, 256 if quick else 1024, 64, [1, 2, 4, 8, 16], repeats, args.seed)
        rows += bench_chain(True, 256 if quick else 1024, 64, [1, 4], repeats, args.seed)
        fractions = [0.0, 0.5, 1.0] if quick else [0.0, 0.1, 0.2, 0.35, 0.5, 0.7, 0.85, 1.0]
        if quick:
            cnn_rows, frontier = bench_deep_cnn(16, 8, fractions, 0, args.seed, range(1, 5), 15)
        else:
            cnn_rows, frontier = bench_deep_cnn(16, 32, fractions, repeats, args.seed)
        rows += cnn_rows
    summary = summarize(rows)
    k4 = summary["chain16_k4"]
    print(
        f"chain of 16 equal layers, 4 segments: {k4['live_activations_measured']:.2f} "
        f"activations alive (measured) instead of {k4['live_activations_plain']:.2f}; "
        f"predicted {k4['live_activations_predicted']:.2f}; recomputes "
        f"{k4['recompute_fraction']:.0%} of a forward pass"
    )
    print(
        f"{'network':<14}{'plan':<20}{'segments':>9}{'measured':>12}{'predicted':>12}"
        f"{'recompute':>10}{'time':>7}"
    )
    for r in rows:
        t = r["time_ratio_vs_plain"]
        print(
            f"{r['network']:<14}{r['method']:<20}{r['segments']:>9}"
            f"{r['peak_bytes_measured'] / 2**20:>10.2f}Mi"
            f"{r['peak_bytes_predicted'] / 2**20:>10.2f}Mi"
            f"{r['recompute_fraction']:>10.0%}{'' if t is None else f'{t:>6.2f}x'}"
        )
    print(f"largest prediction error: {summary['prediction_max_relative_error']:.1%}")
    if args.plot:
        plot(rows, args.plot, frontier)
    write_results(
        args.json_path, rows, summary, machine=machine_info(threads=1), dp_frontier=frontier
    )
    return 0
