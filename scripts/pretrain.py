"""Pretrain the shipped ``mcunet_tiny`` models "in the cloud" (tinyodl.tasks, chapters 03/08).

The cloud is the full MNIST training split minus the 12,000 images shipped with tinyodl
(those belong to the device; see :func:`tinyodl.tasks.cloud_data`): 48,000 images, of
digits 0-4 only for task A (24,596 images), all ten digits for task B (48,000). The
commands that made the shipped files, from the project root (``--data`` is the folder of the
full MNIST; on this project's machine ``/work/shared/data/mnist``), one thread::

    OMP_NUM_THREADS=1 python scripts/pretrain.py --data /work/shared/data/mnist --task A B
        (task A's file: 6 epochs; this run's task B was stopped for the shorter one below)
    OMP_NUM_THREADS=1 python scripts/pretrain.py --data /work/shared/data/mnist --task B --epochs 2

Each file stores its own command, recipe and results (``tinyodl.tasks.pretrained_info``).

Recipe (fixed, no tuning on test data): ``mcunet_tiny(seed=0)``, SGD with Nesterov momentum
0.9, weight decay 5e-5, batch 64, learning rate 0.1 after a linear warm-up of 200 steps,
cosine decay to 0 over ``--epochs`` (default 6; 2 for task B) epochs, shuffles from seed 0,
inputs in [0, 1] (``tinyodl.data.to_float``). It writes ``tinyodl/datasets/pretrained/
mcunet_tiny_task{A,B}.npz`` with the weights, batchnorm statistics and a JSON metadata block
(command, recipe, data sizes, seconds, the cloud's clean test accuracy and each task's
accuracy before adaptation), loaded by :func:`tinyodl.tasks.pretrained` without pickle.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from threadpoolctl import threadpool_limits  # noqa: E402

from tinyodl import backend, models, nn, schedules, tasks  # noqa: E402
from tinyodl.checkpoint import save_checkpoint  # noqa: E402
from tinyodl.train import evaluate, fit  # noqa: E402

RECIPE = {
    "architecture": "mcunet_tiny",
    "architecture_kwargs": {"seed": 0, "input_size": 28, "in_channels": 1, "num_classes": 10},
    "optimizer": "SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-5)",
    "batch_size": 64,
    "warmup_steps": 200,
    "lr": 0.1,
    "shuffle_seed": 0,
}


def pretrain(task: str, data: Path, epochs: int, out_dir: Path, command: str) -> dict:
    """Train one model on the cloud data of ``task`` and write it; returns the metadata."""
    x, y = tasks.cloud_data(task, data, "train")
    x_test, y_test = tasks.cloud_data(task, data, "test")
    model = models.mcunet_tiny(**RECIPE["architecture_kwargs"])
    opt = nn.SGD(model, lr=RECIPE["lr"], momentum=0.9, nesterov=True, weight_decay=5e-5)
    steps = epochs * -(-len(x) // RECIPE["batch_size"])
    schedule = schedules.LinearWarmup(schedules.Cosine(RECIPE["lr"], steps), RECIPE["warmup_steps"])
    start = time.perf_counter()
    history = fit(
        model, opt, x, y, epochs=epochs, batch_size=RECIPE["batch_size"],
        seed=RECIPE["shuffle_seed"], schedule=schedule, progress=True,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    model.eval()
    cloud_acc = evaluate(model, x_test, y_test, 500)[1]
    before = {
        name: {
            "shipped": tasks.load_task(name).accuracy(model),
            "full": tasks.load_task(name, path=data).accuracy(model),
        }
        for name in tasks.TASKS
    }
    metadata = {
        **RECIPE,
        "task": task,
        "source_classes": list(tasks.TASKS[task].source_classes),
        "epochs": epochs,
        "train_images": len(x),
        "command": command,
        "seconds": round(seconds, 1),
        "backend": backend.get_backend(),
        "final_train_loss": history.train_loss[-1],
        "cloud_test_accuracy": cloud_acc,
        "cloud_test_images": len(x_test),
        "accuracy_before_adaptation": before,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / tasks.pretrained_path(task).name
    save_checkpoint(path, model.state_dict(), metadata)
    print(f"task {task}: {len(x)} cloud images, {epochs} epochs, {seconds:.0f} s")
    print(f"  clean test accuracy on its classes: {cloud_acc:.4f}")
    for name, acc in before.items():
        print(f"  task {name} before adaptation: {acc['shipped']:.4f} (shipped test), "
              f"{acc['full']:.4f} (full test)")  # fmt: skip
    print(f"  wrote {path} ({path.stat().st_size:,} bytes)")
    return metadata


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="folder of the full MNIST")
    parser.add_argument("--task", nargs="+", default=["A", "B"], choices=sorted(tasks.TASKS))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--out", type=Path, default=tasks.PRETRAINED_DIR)
    args = parser.parse_args(argv)
    command = "python scripts/pretrain.py " + " ".join(sys.argv[1:] if argv is None else argv)
    backend.set_num_threads(1)
    with threadpool_limits(1):
        for task in args.task:
            pretrain(task, args.data, args.epochs, args.out, command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
