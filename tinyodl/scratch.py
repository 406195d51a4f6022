"""``tinyodl train``: chapter 00's from-scratch run (the main job before ``tinyodl demo``
became the on-device adaptation headline).

Train the default model (:func:`tinyodl.models.lenet5`) from scratch on the MNIST subset
shipped with the package, report test accuracy, and measure the memory of one training
step (tracemalloc) next to the analytic model's prediction. Writes ``training.png``,
``memory.png`` and ``results.json`` into the output folder.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DemoConfig:
    """The demo's recipe, fixed so that its numbers are reproducible.

    SGD with Nesterov momentum and a cosine schedule after a linear warm-up: without the
    warm-up, LeNet-5's first steps at lr 0.05 (initial loss about 4.8) kill its ReLUs. The
    warm-up lasts ``warmup_steps`` or a quarter of the run, whichever is shorter, so that
    short runs (``--epochs 1``) still reach a useful learning rate.
    """

    model: str = "lenet5"
    epochs: int = 8
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    warmup_steps: int = 200
    val_fraction: float = 0.1
    seed: int = 0


def _train(cfg: DemoConfig, data: str | None, progress: bool) -> dict[str, Any]:
    from tinyodl import data as tdata
    from tinyodl import models, schedules
    from tinyodl.nn import SGD
    from tinyodl.train import evaluate, fit

    images, labels = tdata.load_mnist("train", path=data)
    test_images, test_labels = tdata.load_mnist("test", path=data)
    x = tdata.to_float(images, mean=tdata.MNIST_MEAN, std=tdata.MNIST_STD)
    x_test = tdata.to_float(test_images, mean=tdata.MNIST_MEAN, std=tdata.MNIST_STD)
    rng = np.random.default_rng(cfg.seed)
    x_tr, y_tr, x_val, y_val = tdata.train_val_split(x, labels, cfg.val_fraction, rng)

    model = getattr(models, cfg.model)(seed=cfg.seed)
    opt = SGD(
        model,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
    )
    steps = cfg.epochs * int(np.ceil(len(x_tr) / cfg.batch_size))
    history = fit(
        model,
        opt,
        x_tr,
        y_tr,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        x_val=x_val,
        y_val=y_val,
        schedule=schedules.LinearWarmup(
            schedules.Cosine(cfg.lr, steps), min(cfg.warmup_steps, max(steps // 4, 1))
        ),
        progress=progress,
    )
    test_loss, test_acc = evaluate(model, x_test, test_labels)
    return dict(
        model=model,
        optimizer=opt,
        history=history,
        x_batch=x_tr[: cfg.batch_size],
        y_batch=y_tr[: cfg.batch_size],
        n_train=len(x_tr),
        n_val=len(x_val),
        n_test=len(x_test),
        test_loss=float(test_loss),
        test_accuracy=float(test_acc),
    )


def _memory(run: dict[str, Any], cfg: DemoConfig) -> dict[str, Any]:
    from tinyodl.memory import analytic_training_memory, measure_training_step

    model, opt = run["model"], run["optimizer"]
    measured = measure_training_step(model, opt, run["x_batch"], run["y_batch"])
    predicted = analytic_training_memory(
        model, run["x_batch"].shape[1:], cfg.batch_size, optimizer=opt
    )
    return dict(measured=measured, predicted=predicted)


def run_train(args: Any) -> int:
    """CLI entry of ``tinyodl train``; returns the exit code."""
    from tinyodl import backend

    if args.backend:
        backend.set_backend(args.backend)
    cfg = DemoConfig(seed=args.seed, **({"epochs": args.epochs} if args.epochs else {}))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"tinyodl train: {cfg.model} on MNIST ({args.data or 'the subset shipped with tinyodl'})")
    print(f"backend: {backend.get_backend()}, seed {cfg.seed}, {cfg.epochs} epochs")

    start = time.perf_counter()
    run = _train(cfg, args.data, progress=not args.no_progress)
    train_time = time.perf_counter() - start
    mem = _memory(run, cfg)
    measured, predicted = mem["measured"], mem["predicted"]
    wall = time.perf_counter() - start

    run["history"].plot(out / "training.png")
    measured.plot(out / "memory.png", analytic=predicted)
    results = dict(
        config=cfg.__dict__,
        backend=backend.get_backend(),
        n_train=run["n_train"],
        n_val=run["n_val"],
        n_test=run["n_test"],
        test_accuracy=run["test_accuracy"],
        test_loss=run["test_loss"],
        train_seconds=train_time,
        wall_seconds=wall,
        memory_measured_peak_bytes=int(measured.peak),
        memory_analytic_peak_bytes=int(predicted.peak),
        memory_relative_error=float(measured.peak / predicted.peak - 1.0),
    )
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")

    print(f"test accuracy: {100 * run['test_accuracy']:.2f}% on {run['n_test']} test images")
    print(measured.to_table(analytic=predicted))
    print(f"wall time: {wall:.1f} s (training {train_time:.1f} s)")
    print(f"wrote {out / 'training.png'}, {out / 'memory.png'}, {out / 'results.json'}")
    return 0
