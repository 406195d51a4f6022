"""Choose the learning rate of each ``tinyodl demo`` method on a validation split.

For every method and learning rate of a small grid, train on 80% of the seed-0 adaptation
set of task A (the demo's recipe otherwise: batch 1, cosine decay, its epochs) and score on
the other 20% (stratified); the best learning rate per method is what ``tinyodl.demo.LR``
holds. The test images are never used. Usage::

    OMP_NUM_THREADS=1 python scripts/tune_demo.py [--epochs 2] [--jobs 2] [--methods ...]
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor

import numpy as np

GRID = {
    "fp32_full": [0.001, 0.003, 0.01],
    "fp32_last_layer": [0.01, 0.03, 0.1],
    "tinytl_bias": [0.003, 0.01, 0.03],
    "tinytl_lite_residual": [0.003, 0.01, 0.03],
    "int8_full": [10.0, 30.0, 100.0],
    "int8_full_qas": [0.001, 0.003, 0.01],
    "sparse_update": [0.003, 0.01, 0.03],
}


def _score(job):
    import dataclasses

    from tinyodl import demo
    from tinyodl.data import train_val_split

    method, lr, epochs = job
    cfg = demo.DemoConfig(epochs=epochs, seeds=(0,), lr={**demo.LR, method: lr})
    task, model, qmodel, _, _ = demo._setup(0, cfg.per_class, cfg.calibration_images, None)
    xt, yt, xv, yv = train_val_split(task.x_train, task.y_train, 0.2, np.random.default_rng(0))
    small = dataclasses.replace(task, x_train=xt, y_train=yt, x_test=xv, y_test=yv)
    key = (0, cfg.per_class, cfg.calibration_images, None)
    original = demo._setup  # this worker process only: serve the split instead of the task

    def patched(*args):
        return (small, model, qmodel, xv, yv) if args == key else original(*args)

    demo._setup = patched
    try:
        return method, lr, demo.run_method(method, 0, cfg, measure=False)["accuracy"]
    finally:
        demo._setup = original


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--methods", nargs="+", default=list(GRID))
    args = p.parse_args()
    jobs = [(m, lr, args.epochs) for m in args.methods for lr in GRID[m]]
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(_score, jobs))
    table: dict = {}
    for method, lr, acc in results:
        table.setdefault(method, {})[lr] = acc
    best = {m: max(sorted(d), key=lambda lr, d=d: (d[lr], -lr)) for m, d in table.items()}
    print(json.dumps({"epochs": args.epochs, "validation": table, "best": best}, indent=1))


if __name__ == "__main__":
    main()
