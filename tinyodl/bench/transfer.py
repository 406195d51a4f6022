"""``tinyodl bench transfer``: a TinyTL-style table (Cai et al. 2020, Table 2) on tasks A and B.

Chapter 08. From the shipped pretrained ``mcunet_tiny`` of each task, every method of
:data:`tinyodl.transfer.METHODS` adapts on the device's labelled set (task A: 100 images per
class of 5-9, new head; task B: 20 per class of the new writer). For each method the table
gives the trainable parameters, the peak training memory at batch 1 and 8 -- measured with
tracemalloc and predicted by :func:`tinyodl.memory.analytic_training_memory` -- and the test
accuracy over 3 seeds. Recipe: SGD with momentum 0.9, batch 8, cosine decay, batchnorm
statistics frozen; each method's learning rate is chosen on a 20% validation split of the
seed-0 adaptation set (``--tune``; otherwise :data:`LR`, the values a tuning run chose).
"""

from __future__ import annotations

from typing import Any

from tinyodl import nn, schedules, tasks, transfer
from tinyodl.bench._adapt import format_table, select_lr, summarize, timed
from tinyodl.bench._common import machine_info, write_results
from tinyodl.train import evaluate, fit

HELP = "TinyTL-style table on tasks A and B: trainable params, training memory, accuracy"
METHODS = transfer.METHODS
#: Learning rates chosen by ``--tune`` (validation split of the seed-0 adaptation set).
LR = {
    "A": {m: 0.01 for m in METHODS},
    "B": {m: 0.01 for m in METHODS},
}
GRID = [0.003, 0.01, 0.03, 0.1]
EPOCHS = {"A": 10, "B": 25}
BATCH_SIZE = 8
MEMORY_BATCHES = (1, 8)


def add_arguments(parser) -> None:
    parser.add_argument("--seeds", type=int, default=3, help="adaptation seeds (default 3)")
    parser.add_argument("--tasks", nargs="+", default=["A", "B"], choices=sorted(tasks.TASKS))
    parser.add_argument("--data", default=None, help="full MNIST folder (test split)")
    parser.add_argument("--tune", action="store_true", help="choose each method's lr first")
    parser.add_argument("--k", type=int, default=2, help="stages finetune_last_k updates")


def _optimizer(lr: float):
    return lambda model: nn.SGD(model, lr=lr, momentum=0.9)


def prepared(task: tasks.Task, method: str, k: int) -> nn.Sequential:
    """The task's pretrained model set up for ``method`` (seeded by the task's seed)."""
    return transfer.prepare(
        task.pretrained(), method, k=k, new_head=task.spec.new_head, seed=task.seed
    )


def adapt(model, x, y, lr: float, epochs: int, seed: int) -> nn.Sequential:
    """Train ``model`` (prepared) in place; returns it in evaluation mode."""
    steps = epochs * -(-len(x) // BATCH_SIZE)
    fit(
        model,
        _optimizer(lr)(model),
        x,
        y,
        epochs=epochs,
        batch_size=BATCH_SIZE,
        seed=seed,
        schedule=schedules.Cosine(lr, steps),
        progress=False,
    )
    return model.eval()


def _accuracy(model, x, y) -> float:
    return float(evaluate(model, x, y, batch_size=500)[1])


def memory_rows(task: tasks.Task, method: str, k: int) -> dict[str, dict[str, int]]:
    """Measured and analytic peak training memory of ``method`` at each batch size."""
    out = {}
    for n in MEMORY_BATCHES:
        model = prepared(task, method, k)
        mem = transfer.training_memory(model, task.x_train[:n], task.y_train[:n], _optimizer(1e-3))
        out[str(n)] = {key: int(v) for key, v in mem.items()}
    return out


def run_task(name: str, args, log) -> tuple[list[dict], dict[str, Any]]:
    """Every method and seed on one task; returns the rows and the task's extra summary."""
    quick = args.quick
    epochs = 1 if quick else EPOCHS[name]
    per_class = (10 if name == "A" else 5) if quick else None
    seeds = [args.seed] if quick else [args.seed + i for i in range(args.seeds)]
    loaded = [tasks.load_task(name, per_class, seed, args.data) for seed in seeds]
    first = loaded[0]
    lrs, tuning = dict(LR[name]), {}
    for method in METHODS if args.tune else ():

        def run(xt, yt, xv, yv, lr, method=method):
            model = adapt(prepared(first, method, args.k), xt, yt, lr, epochs, first.seed)
            return _accuracy(model, xv, yv)

        lrs[method], tuning[method] = select_lr(run, GRID, first.x_train, first.y_train)
        log(f"task {name} {method}: lr {lrs[method]} (validation accuracy {tuning[method]})")
    memory = {m: memory_rows(first, m, args.k) for m in METHODS}
    rows = []
    for task in loaded:
        x_test, y_test = (
            (task.x_test[:300], task.y_test[:300]) if quick else (task.x_test, task.y_test)
        )
        for method in METHODS:
            model = prepared(task, method, args.k)
            trainable = transfer.trainable_parameters(model)
            _, seconds = timed(
                lambda m=model, t=task, lr=lrs[method]: adapt(
                    m, t.x_train, t.y_train, lr, epochs, t.seed
                )
            )
            mem = memory[method]
            rows.append(
                {
                    "method": method,
                    "task": name,
                    "seed": task.seed,
                    "accuracy": _accuracy(model, x_test, y_test),
                    "trainable_params": trainable,
                    "peak_train_bytes_measured": mem[str(BATCH_SIZE)]["measured"],
                    "peak_train_bytes_analytic": mem[str(BATCH_SIZE)]["analytic"],
                    "memory": mem,
                    "seconds": round(seconds, 2),
                    "lr": lrs[method],
                    "epochs": epochs,
                    "batch_size": BATCH_SIZE,
                    "adaptation_images": len(task.y_train),
                    "test_images": len(y_test),
                }
            )
            log(
                f"task {name} seed {task.seed} {method:<22} {100 * rows[-1]['accuracy']:6.2f}%"
                f"  ({seconds:.0f} s)"
            )
    x_test, y_test = (
        (first.x_test[:300], first.y_test[:300]) if quick else (first.x_test, first.y_test)
    )
    before = _accuracy(first.pretrained(), x_test, y_test)
    return rows, {"lr": lrs, "tuning": tuning, "memory": memory, "before_adaptation": before}


def main(args) -> int:
    from threadpoolctl import threadpool_limits

    from tinyodl import backend

    def log(msg: str) -> None:
        print(msg, flush=True)

    backend.set_num_threads(1)
    rows, per_task = [], {}
    with threadpool_limits(1):
        for name in args.tasks:
            task_rows, extra = run_task(name, args, log)
            rows += task_rows
            per_task[name] = extra
    accuracy = summarize(rows, METHODS)
    first_task = per_task[args.tasks[0]]
    params = {m: next(r["trainable_params"] for r in rows if r["method"] == m) for m in METHODS}

    def extra(method: str) -> str:
        mem = first_task["memory"][method]
        cells = [
            f"b{n} {mem[str(n)]['measured'] / 2**20:.2f}/{mem[str(n)]['analytic'] / 2**20:.2f}"
            for n in MEMORY_BATCHES
        ]
        return f"{params[method]:>8,} params  MiB measured/analytic: " + "  ".join(cells)

    print(format_table(accuracy, METHODS, extra))
    summary = {
        "accuracy": {t: {m: v["mean"] for m, v in ms.items()} for t, ms in accuracy.items()},
        "accuracy_std": {t: {m: v["std"] for m, v in ms.items()} for t, ms in accuracy.items()},
        "trainable_params": params,
        "tasks": per_task,
        "seconds": round(sum(r["seconds"] for r in rows), 1),
        "settings": {
            "epochs": EPOCHS,
            "batch_size": BATCH_SIZE,
            "k": args.k,
            "quick": args.quick,
            "tuned": args.tune,
            "memory_batches": list(MEMORY_BATCHES),
        },
    }
    write_results(args.json_path, rows, summary, machine=machine_info(threads=1))
    return 0
