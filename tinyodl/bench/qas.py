"""``tinyodl bench qas``: the shape of Table 1 of Lin et al. (NeurIPS'22) on tasks A and B.

Chapter 03. The pretrained ``mcunet_tiny`` of each task (``tinyodl.tasks.pretrained``) is
quantized post-training (batchnorm folded, min/max calibration on 256 clean images of the
source classes) and then adapted on the device's small labelled set four ways:

* ``fp32_sgdm``     -- the folded float model, SGD with momentum 0.9;
* ``int8_sgdm``     -- the int8 graph, SGD-M on the integer weights (no scaling);
* ``int8_adam``     -- the int8 graph, Adam;
* ``int8_sgdm_qas`` -- the int8 graph, SGD-M with quantization-aware scaling.

Same batches (seeded), same epochs, cosine decay; each method's learning rate is chosen on a
20% validation split of the seed-0 adaptation set (``--tune``; otherwise :data:`LR`, the
values a tuning run chose). ``summary.tasks.<task>.at_fp32_lr`` repeats the two int8 SGD-M
methods at the fp32 learning rate -- the paper's setting, where the float recipe is carried
over unchanged. The int8 graphs keep an fp32 shadow of their weights; one more
run per task stores them in int8 only and reports the fraction of weights that never moved.
``summary.ptq`` is the integer-only accuracy of the pretrained models on the MNIST test
split next to their float accuracy.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from tinyodl import nn, qas, schedules, tasks
from tinyodl.bench._adapt import format_table, select_lr, summarize, timed
from tinyodl.bench._common import machine_info, write_results
from tinyodl.data import load_mnist, to_float
from tinyodl.quantization import QuantizedModel, float_nbytes, fold_model, quantize_model
from tinyodl.quantization.memory import (
    analytic_int8_training_memory,
    measure_int8_training_step,
)
from tinyodl.train import evaluate, fit

HELP = "Table 1 of the 256KB paper on tasks A and B: fp32 vs int8 training, with/without QAS"
METHODS = ("fp32_sgdm", "int8_sgdm", "int8_adam", "int8_sgdm_qas")
#: Learning rates chosen by ``--tune`` (validation split of the seed-0 adaptation set).
LR = {
    "A": {"fp32_sgdm": 0.01, "int8_sgdm": 100.0, "int8_adam": 0.1, "int8_sgdm_qas": 0.01},
    "B": {"fp32_sgdm": 0.01, "int8_sgdm": 100.0, "int8_adam": 0.1, "int8_sgdm_qas": 0.01},
}
#: The grids ``--tune`` searches. Without QAS the int8 graph's effective learning rate is
#: ``lr * s_W^2`` (s_W ~ 1e-2), hence its much larger values; Adam's steps are in integer
#: units (about ``lr`` per step whatever the gradient's scale).
GRID = {
    "fp32_sgdm": [0.003, 0.01, 0.03],
    "int8_sgdm": [10.0, 100.0, 1000.0, 10000.0],
    "int8_adam": [0.03, 0.1, 0.3, 1.0],
    "int8_sgdm_qas": [0.003, 0.01, 0.03],
}
EPOCHS = {"A": 10, "B": 20}
BATCH_SIZE = 16
CALIBRATION_IMAGES = 256


def add_arguments(parser) -> None:
    parser.add_argument("--seeds", type=int, default=3, help="adaptation seeds (default 3)")
    parser.add_argument("--tasks", nargs="+", default=["A", "B"], choices=sorted(tasks.TASKS))
    parser.add_argument("--data", default=None, help="full MNIST folder (test split)")
    parser.add_argument("--tune", action="store_true", help="choose each method's lr first")


# ----------------------------------------------------------------------------- one run


def _adapt(method: str, base: Any, x, y, lr: float, epochs: int, seed: int, store="shadow"):
    """Train a copy of ``base`` (folded float model or QuantizedModel); returns (model, opt)."""
    model = copy.deepcopy(base)
    steps = epochs * -(-len(x) // BATCH_SIZE)
    schedule = schedules.Cosine(lr, steps)
    if method == "fp32_sgdm":
        opt = nn.SGD(model, lr=lr, momentum=0.9)
        fit(
            model,
            opt,
            x,
            y,
            epochs=epochs,
            batch_size=BATCH_SIZE,
            seed=seed,
            schedule=schedule,
            progress=False,
        )
        return model.eval(), opt
    kind = "adam" if method == "int8_adam" else "sgd"
    opt = qas.Int8Optimizer(model, kind, lr=lr, qas=method == "int8_sgdm_qas", store=store)
    qas.fit_int8(
        model, opt, x, y, epochs=epochs, batch_size=BATCH_SIZE, seed=seed, schedule=schedule
    )
    return model, opt


def _accuracy(model, x, y) -> float:
    return float(evaluate(model, x, y, batch_size=500)[1])


def _memory(method: str, base: Any, x, y) -> dict[str, int]:
    """Peak training memory of one step at the training batch size (steady state)."""
    from tinyodl.memory import analytic_training_memory, measure_training_step

    model = copy.deepcopy(base)
    xb, yb = x[:BATCH_SIZE], y[:BATCH_SIZE]
    if method == "fp32_sgdm":
        opt = nn.SGD(model, lr=1e-3, momentum=0.9)
        measure_training_step(model, opt, xb, yb)  # warm-up
        measured = measure_training_step(model, opt, xb, yb).total_peak_bytes
        analytic = analytic_training_memory(model, xb.shape[1:], len(xb), optimizer=opt)
        return {"measured": measured, "analytic": analytic.total_peak_bytes}
    kind = "adam" if method == "int8_adam" else "sgd"
    opt = qas.Int8Optimizer(model, kind, lr=1e-3, qas=method == "int8_sgdm_qas")
    qas.int8_train_step(model, opt, xb, yb)  # warm-up: the optimizer state exists
    measured = measure_int8_training_step(model, opt, xb, yb).total_peak_bytes
    analytic = analytic_int8_training_memory(model, len(xb), xb.shape[1:], kind)
    return {"measured": measured, "analytic": analytic.total_peak_bytes}


def _trainable(base: Any) -> int:
    if isinstance(base, QuantizedModel):
        return qas.trainable_parameters(base)
    return base.num_params(trainable_only=True)


# ----------------------------------------------------------------------------- the benchmark


def _ptq_summary(data, quick: bool) -> dict[str, Any]:
    """Float vs integer-only accuracy of the pretrained models on the clean test split."""
    x_test, y_test = load_mnist("test", path=data)
    if quick:
        x_test, y_test = x_test[:300], y_test[:300]
    out: dict[str, Any] = {}
    for name in ("B", "A"):
        keep = np.isin(y_test, tasks.TASKS[name].source_classes)
        x, y = to_float(x_test[keep]), y_test[keep].astype(np.int64)
        model = tasks.pretrained(name)
        n_calib = 64 if quick else CALIBRATION_IMAGES
        qmodel = quantize_model(model, tasks.calibration_images(name, n_calib))
        out[name] = {
            "float_accuracy": _accuracy(model, x, y),
            "int8_accuracy": _accuracy(qmodel, x, y),
            "test_images": int(len(y)),
            "float_bytes": float_nbytes(model),
            "int8_bytes": qmodel.nbytes(),
        }
    # the headline: the ten-digit model of task B on the whole test split
    headline = {k: out["B"][k] for k in ("float_accuracy", "int8_accuracy")}
    return {**headline, "models": out}


def _test_set(task, quick: bool):
    """The task's test images (the first 300 in the quick configuration)."""
    return (task.x_test[:300], task.y_test[:300]) if quick else (task.x_test, task.y_test)


def starting_points(task: tasks.Task, calib: np.ndarray) -> dict[str, Any]:
    """What each method starts from: the folded float model and its int8 PTQ.

    Task A gets a new head (seeded by the task's seed); its logits have no data to be
    calibrated on, so they get the range the pretrained head's logits had on ``calib``.
    """
    model = task.starting_model(seed=task.seed)
    output_range = None
    if task.spec.new_head:
        q = quantize_model(task.pretrained(), calib).output
        output_range = (q.scale * (-128 - q.zero_point), q.scale * (127 - q.zero_point))
    qmodel = quantize_model(model, calib, output_range=output_range)
    return {"fp32_sgdm": fold_model(model).train(), **{m: qmodel for m in METHODS[1:]}}


def _tune(name, task, bases, epochs, log) -> tuple[dict[str, float], dict[str, Any]]:
    """Each method's learning rate from :data:`GRID`, on a validation split of ``task``."""
    lrs, tuning = {}, {}
    for method in METHODS:

        def run(xt, yt, xv, yv, lr, method=method):
            model, _ = _adapt(method, bases[method], xt, yt, lr, epochs, task.seed)
            return _accuracy(model, xv, yv)

        lrs[method], tuning[method] = select_lr(run, GRID[method], task.x_train, task.y_train)
        log(f"task {name} {method}: lr {lrs[method]} (validation accuracy {tuning[method]})")
    return lrs, tuning


def _row(method, task, model, opt, seconds, bases, memory, lr, epochs, quick) -> dict[str, Any]:
    x_test, y_test = _test_set(task, quick)
    row = {
        "method": method,
        "task": task.name,
        "seed": task.seed,
        "accuracy": _accuracy(model, x_test, y_test),
        "trainable_params": _trainable(bases[method]),
        "peak_train_bytes_measured": memory["measured"],
        "peak_train_bytes_analytic": memory["analytic"],
        "seconds": round(seconds, 2),
        "lr": lr,
        "epochs": epochs,
        "batch_size": BATCH_SIZE,
        "adaptation_images": len(task.y_train),
        "test_images": len(y_test),
    }
    if method != "fp32_sgdm":
        row["frozen_fraction"] = opt.frozen_fraction()
    return row


def run_task(name: str, args, log) -> tuple[list[dict], dict[str, Any]]:
    """Every method and seed on one task; returns the rows and the task's extra summary."""
    quick = args.quick
    calib = tasks.calibration_images(name, 64 if quick else CALIBRATION_IMAGES)
    epochs = 1 if quick else EPOCHS[name]
    per_class = (10 if name == "A" else 5) if quick else None
    seeds = [args.seed] if quick else [args.seed + i for i in range(args.seeds)]
    loaded = [tasks.load_task(name, per_class, seed, args.data) for seed in seeds]
    first_bases = starting_points(loaded[0], calib)
    lrs, tuning = dict(LR[name]), {}
    if args.tune:
        lrs, tuning = _tune(name, loaded[0], first_bases, epochs, log)
    memory = {m: _memory(m, first_bases[m], loaded[0].x_train, loaded[0].y_train) for m in METHODS}
    rows = []
    for task in loaded:
        bases = first_bases if task is loaded[0] else starting_points(task, calib)
        for method in METHODS:
            spec = (method, bases[method], task.x_train, task.y_train, lrs[method], epochs)
            (model, opt), seconds = timed(lambda s=spec, t=task: _adapt(*s, t.seed))
            rows.append(
                _row(
                    method,
                    task,
                    model,
                    opt,
                    seconds,
                    bases,
                    memory[method],
                    lrs[method],
                    epochs,
                    quick,
                )
            )
            log(
                f"task {name} seed {task.seed} {method:<14} {100 * rows[-1]['accuracy']:6.2f}%"
                f"  ({seconds:.0f} s)"
            )
    return rows, {
        "lr": lrs,
        "tuning": tuning,
        "at_fp32_lr": _at_fp32_lr(loaded, first_bases, calib, rows, lrs, epochs, quick, log),
        **_weight_store(loaded[0], first_bases, rows, lrs, epochs, quick),
    }


def _at_fp32_lr(loaded, first_bases, calib, rows, lrs, epochs, quick, log) -> dict[str, Any]:
    """The int8 SGD-M methods at the fp32 learning rate: the paper's setting, in which the
    fp32 recipe is carried over unchanged (QAS's promise). Reuses a row when the tuned rate
    is that rate already."""
    lr = lrs["fp32_sgdm"]
    out: dict[str, Any] = {"lr": lr}
    for method in ("int8_sgdm", "int8_sgdm_qas"):
        accuracies = []
        for task in loaded:
            same = [r for r in rows if r["method"] == method and r["seed"] == task.seed]
            if lrs[method] == lr:
                accuracies.append(same[0]["accuracy"])
                continue
            bases = first_bases if task is loaded[0] else starting_points(task, calib)
            model, _ = _adapt(
                method, bases[method], task.x_train, task.y_train, lr, epochs, task.seed
            )
            accuracies.append(_accuracy(model, *_test_set(task, quick)))
            log(
                f"task {task.name} seed {task.seed} {method} at lr {lr}: "
                f"{100 * accuracies[-1]:.2f}%"
            )
        out[method] = {
            "accuracy": accuracies,
            "mean": float(np.mean(accuracies)),
            "std": float(np.std(accuracies)),
        }
    return out


def _weight_store(task, bases, rows, lrs, epochs, quick) -> dict[str, Any]:
    """int8 SGD-M + QAS once more with pure int8 storage: how many weights never move."""
    model, opt = _adapt(
        "int8_sgdm_qas",
        bases["int8_sgdm_qas"],
        task.x_train,
        task.y_train,
        lrs["int8_sgdm_qas"],
        epochs,
        task.seed,
        store="int8",
    )
    x_test, y_test = _test_set(task, quick)
    shadow = next(r for r in rows if r["method"] == "int8_sgdm_qas" and r["seed"] == task.seed)
    start = bases["int8_sgdm"]
    return {
        "weight_store": {
            "method": "int8_sgdm_qas",
            "seed": task.seed,
            "shadow": {k: shadow[k] for k in ("accuracy", "frozen_fraction")},
            "int8": {
                "accuracy": _accuracy(model, x_test, y_test),
                "frozen_fraction": opt.frozen_fraction(),
            },
        },
        "before_adaptation": {
            "float": _accuracy(task.pretrained(), x_test, y_test),
            "int8": _accuracy(start, x_test, y_test),
        },
    }


def main(args) -> int:
    from threadpoolctl import threadpool_limits

    from tinyodl import backend

    def log(msg: str) -> None:
        print(msg, flush=True)

    backend.set_num_threads(1)
    rows, per_task = [], {}
    with threadpool_limits(1):
        (ptq, ptq_seconds) = timed(lambda: _ptq_summary(args.data, args.quick))
        log(
            f"PTQ (task B model, clean test split): float {100 * ptq['float_accuracy']:.2f}%, "
            f"int8 {100 * ptq['int8_accuracy']:.2f}%"
        )
        for name in args.tasks:
            task_rows, extra = run_task(name, args, log)
            rows += task_rows
            per_task[name] = extra
    accuracy = summarize(rows, METHODS)
    summary = {
        "accuracy": {t: {m: v["mean"] for m, v in ms.items()} for t, ms in accuracy.items()},
        "accuracy_std": {t: {m: v["std"] for m, v in ms.items()} for t, ms in accuracy.items()},
        "ptq": ptq,
        "tasks": per_task,
        "seconds": round(sum(r["seconds"] for r in rows) + ptq_seconds, 1),
        "settings": {
            "epochs": EPOCHS,
            "batch_size": BATCH_SIZE,
            "quick": args.quick,
            "calibration_images": CALIBRATION_IMAGES,
            "tuned": args.tune,
        },
    }
    print(format_table(accuracy, METHODS))
    write_results(args.json_path, rows, summary, machine=machine_info(threads=1))
    return 0
