"""``tinyodl bench engine``: chapter 12's numbers -- the engine's memory breakdown, TinyTrain.

Two parts, both on task A's int8 ``mcunet_tiny`` (the shipped pretrained model, new head,
post-training quantization as in chapter 03's benchmark):

1. **Memory breakdown** (Lin et al. 2022, Fig. 10: MCUNet 3650 / 560 / 173 KB for full /
   sparse / sparse + reordered, batch 1). One compiled training step per configuration --
   full update or chapter 04's sparse scheme, updates at the end or reordered -- with the
   planned peak of :class:`tinyodl.engine.MemoryPlan` and the peak measured by tracemalloc
   while the step runs, plus the resident training state (updated int8/int32 tensors, fp32
   shadow). Ratios give the reordering's own saving (paper: 2.4-3.2x).
2. **TinyTrain vs contribution analysis** on the same memory budget (chapter 04's
   accounting): the scheme each selects, the seconds the *selection* takes, and the test
   accuracy after training each scheme the same way (the engine, SGD-M + QAS, one epoch).

Run: ``tinyodl bench engine --json benchmarks/results/engine.json`` (``--quick`` for the
smoke test). Memory is deterministic; seconds are wall-clock on a shared machine (compare
them only with each other).
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np

from tinyodl.bench._common import command_line, machine_info, write_results

HELP = "chapter 12: engine memory breakdown (full/sparse/reordered), TinyTrain vs contribution"

#: Chapter 04's scheme (its exact search on task A's contribution table under 64 KB, paper
#: accounting; the scheme ``tinyodl demo`` trains).
SPARSE_SCHEME = {
    "bias_depth": 10,
    "weights": {
        "classifier.0": 1.0,
        "features.10": 0.5,
        "features.9.project": 0.25,
        "features.9.expand": 0.125,
    },
}
#: The selection budget (paper accounting, bytes), the demo's.
BUDGET_BYTES = 64 * 1024
#: The paper's MCUNet figures (KB, STM32F746, batch 1): full, sparse, sparse + reordered.
PAPER_KB = {"full": 3650, "sparse": 560, "sparse_reordered": 173}


def add_arguments(parser) -> None:
    parser.add_argument("--batch-size", type=int, default=1, help="batch of the step (default 1)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the selection part")
    parser.add_argument("--per-class", type=int, default=40, help="adaptation images per class")
    parser.add_argument("--budget", type=int, default=BUDGET_BYTES, help="selection budget (bytes)")
    parser.add_argument("--lr", type=float, default=0.01, help="learning rate (SGD-M + QAS)")
    parser.add_argument("--skip-selection", action="store_true", help="memory part only")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def starting_qmodel(seed: int = 0, per_class: int | None = None, n_calib: int = 128):
    """Task A (seeded sample) and the int8 ``mcunet_tiny`` chapter 03's benchmark starts from."""
    from tinyodl import tasks
    from tinyodl.bench.qas import starting_points

    task = tasks.load_task("A", per_class=per_class, seed=seed)
    return task, starting_points(task, tasks.calibration_images("A", n_calib))["int8_sgdm"]


def _full_scheme(qmodel):
    from tinyodl.sparse_update import UpdateScheme, layer_names

    names = layer_names(qmodel)
    return UpdateScheme(len(names), {n: 1.0 for n in names})


def memory_breakdown(qmodel, x, y, store: str = "shadow") -> list[dict[str, Any]]:
    """Planned and measured memory of one step: full / sparse, at the end / reordered."""
    from tinyodl.engine import compile_training
    from tinyodl.sparse_update import UpdateScheme, memory_cost

    schemes = {"full": _full_scheme(qmodel), "sparse": UpdateScheme.from_dict(SPARSE_SCHEME)}
    rows = []
    for name, scheme in schemes.items():
        for reorder in (False, True):
            work = copy.deepcopy(qmodel)
            plan = compile_training(
                work, x.shape, scheme=scheme, reorder=reorder, lr=0.0, store=store
            )
            plan.step(x, y)  # warm-up
            measured = plan.measure(x, y).peak_bytes
            mp = plan.memory_plan
            rows.append(
                {
                    "part": "memory",
                    "config": f"{name}_reordered" if reorder else name,
                    "scheme": scheme.to_dict(),
                    "reorder": reorder,
                    "store": store,
                    "batch_size": int(x.shape[0]),
                    "planned_step_peak_bytes": mp.peak_bytes,
                    "planned_buffer_peak_bytes": mp.buffer_peak_bytes,
                    "measured_step_peak_bytes": int(measured),
                    "plan_error": (mp.peak_bytes - measured) / measured,
                    "peak_step": mp.steps[mp.peak_step].label(),
                    "at_peak_bytes": mp.by_kind(),
                    "state_bytes": mp.state_bytes,
                    "trainable_bytes": mp.trainable_bytes,
                    "measured_training_bytes": int(measured) + plan.resident_train_bytes,
                    "paper_accounting_bytes": memory_cost(qmodel, scheme, x.shape[1:], x.shape[0])[
                        "total"
                    ],
                    "steps": len(plan.steps),
                }
            )
    return rows


def _ratios(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    by = {r["config"]: r[key] for r in rows}
    return {
        "full_over_sparse": by["full"] / by["sparse"],
        "sparse_over_sparse_reordered": by["sparse"] / by["sparse_reordered"],
        "full_over_full_reordered": by["full"] / by["full_reordered"],
        "full_over_sparse_reordered": by["full"] / by["sparse_reordered"],
    }


def selection_comparison(args, seed: int, quick: bool, log) -> list[dict[str, Any]]:
    """TinyTrain and contribution analysis + search on one seed's adaptation set."""
    from tinyodl import sparse_update as su
    from tinyodl import tinytrain
    from tinyodl.data import train_val_split
    from tinyodl.train import evaluate

    task, qmodel = starting_qmodel(seed, per_class=args.per_class)
    x, y = task.x_train, task.y_train
    x_test, y_test = (task.x_test[:200], task.y_test[:200]) if quick else (task.x_test, task.y_test)
    train_kw = dict(epochs=1, batch_size=1, lr=args.lr, seed=seed)
    rows = []

    def finish(method, scheme, seconds, extra=None):
        model, _ = tinytrain.train(qmodel, scheme, x, y, momentum=0.9, **train_kw)
        acc = float(evaluate(model, x_test, y_test, batch_size=500)[1])
        cost = su.memory_cost(qmodel, scheme, x.shape[1:], 1)["total"]
        row = {"part": "selection", "seed": seed, "method": method, "accuracy": acc}
        row.update(selection_seconds=seconds, paper_accounting_bytes=cost, budget=args.budget)
        row.update(
            scheme=scheme.to_dict(), trainable_params=su.trainable_parameters(qmodel, scheme)
        )
        rows.append({**row, **(extra or {})})
        log(f"seed {seed} {method}: accuracy {acc:.3f}, selection {seconds:.1f} s, {cost} B")

    head = su.layer_names(qmodel)[-1]
    finish("classifier_only", su.UpdateScheme(1, {head: 1.0}), 0.0)
    scheme = tinytrain.select(qmodel, x, y, args.budget)
    finish("tinytrain", scheme, scheme.seconds)

    rng = np.random.default_rng([seed, 12])
    xt, yt, xv, yv = train_val_split(x, y, 0.2, rng)
    layers = su.layer_names(qmodel)[:-1]
    depths, ratios = None, su.RATIOS[1:]
    if quick:
        layers, depths, ratios = layers[-3:], [2, 4], (0.25, 1.0)
    start = time.perf_counter()
    table = su.contribution_analysis(
        qmodel, xt, yt, xv, yv, layers=layers, bias_depths=depths, ratios=ratios,
        train_kwargs=dict(train_kw, momentum=0.9), progress=not args.no_progress,
    )  # fmt: skip
    analysis = time.perf_counter() - start
    found = su.evolutionary_search(qmodel, table, args.budget, layers=layers, seed=seed)
    total = analysis + found["seconds"]
    extra = {"analysis_seconds": analysis, "search_seconds": found["seconds"]}
    finish("contribution_analysis", found["scheme"], total, extra)
    return rows


def _mean_by(rows, key):
    out: dict[str, list[float]] = {}
    for r in rows:
        out.setdefault(r["method"], []).append(r[key])
    return {
        m: {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v)} for m, v in out.items()
    }


def main(args) -> int:
    log = print
    task, qmodel = starting_qmodel(args.seed)
    n = args.batch_size
    rows = memory_breakdown(qmodel, task.x_train[:n], task.y_train[:n])
    if not args.quick:  # the pure-int8 store (no fp32 shadow) too
        rows += memory_breakdown(qmodel, task.x_train[:n], task.y_train[:n], store="int8")
    for r in rows:
        log(
            f"{r['config']:18s} store={r['store']:6s} "
            f"step peak planned {r['planned_step_peak_bytes']:>8,} "
            f"measured {r['measured_step_peak_bytes']:>8,} ({100 * r['plan_error']:+.1f}%)  "
            f"training total {r['measured_training_bytes']:>9,} B"
        )
    shadow = [r for r in rows if r["store"] == "shadow"]
    pure = [r for r in rows if r["store"] == "int8"]
    summary: dict[str, Any] = {
        "paper_kb": PAPER_KB,
        "step_peak_kb": {r["config"]: r["measured_step_peak_bytes"] / 1024 for r in shadow},
        "training_kb_shadow": {r["config"]: r["measured_training_bytes"] / 1024 for r in shadow},
        "training_kb_int8": {r["config"]: r["measured_training_bytes"] / 1024 for r in pure},
        "step_peak_ratios": _ratios(shadow, "measured_step_peak_bytes"),
        "training_ratios_shadow": _ratios(shadow, "measured_training_bytes"),
        "training_ratios_int8": _ratios(pure, "measured_training_bytes") if pure else None,
        "max_abs_plan_error": max(abs(r["plan_error"]) for r in rows),
    }
    machine, command = machine_info(threads=1), command_line()
    if not args.skip_selection:
        seeds = [args.seed] if args.quick else [args.seed + i for i in range(args.seeds)]
        sel: list[dict[str, Any]] = []
        for s in seeds:  # the results are written after every seed (a long run)
            sel += selection_comparison(args, s, args.quick, log)
            summary["selection_accuracy"] = _mean_by(sel, "accuracy")
            summary["selection_seconds"] = _mean_by(sel, "selection_seconds")
            summary["budget_bytes"] = args.budget
            summary["seeds_done"] = sorted({r["seed"] for r in sel})
            write_results(args.json_path, rows + sel, summary, machine, command)
        rows += sel
    log(f"summary: {summary}")
    write_results(args.json_path, rows, summary, machine, command)
    return 0
