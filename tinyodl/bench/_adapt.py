"""Shared by ``tinyodl bench qas`` and ``tinyodl bench transfer``: adaptation runs, the
learning-rate selection on a validation split, and the per-method summary.

Every adaptation run uses the same recipe so that methods differ only in *what* they train
and *how*: mini-batches from :class:`tinyodl.data.BatchSampler` (seeded), a cosine learning
rate decay to 0 over the run, and evaluation in evaluation mode on the task's test images.
The learning rate of each method is chosen on a validation split (``select_lr``) -- each
method at its best, as the papers tune theirs -- and recorded in the results.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from tinyodl.data import train_val_split

#: Fraction of the seed-0 adaptation set held out to choose learning rates.
VAL_FRACTION = 0.2


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``(fn(), seconds)``."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def select_lr(
    run: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float], float],
    grid: list[float],
    x: np.ndarray,
    y: np.ndarray,
    seed: int = 0,
) -> tuple[float, dict[str, float]]:
    """Pick the learning rate of ``grid`` with the best validation accuracy.

    ``run(x_train, y_train, x_val, y_val, lr) -> accuracy``. The split is stratified,
    ``VAL_FRACTION`` of each class, drawn with ``default_rng(seed)``. Ties go to the
    smaller learning rate. Returns ``(best_lr, {str(lr): accuracy})``.
    """
    x_tr, y_tr, x_val, y_val = train_val_split(x, y, VAL_FRACTION, np.random.default_rng(seed))
    scores = {lr: float(run(x_tr, y_tr, x_val, y_val, lr)) for lr in grid}
    best = max(sorted(scores), key=lambda lr: (scores[lr], -lr))
    return best, {repr(lr): acc for lr, acc in scores.items()}


def summarize(rows: list[dict[str, Any]], methods: tuple[str, ...]) -> dict[str, Any]:
    """``{task: {method: {"mean", "std", "n"}}}`` of the rows' accuracies (std over seeds,
    ``ddof=0``)."""
    out: dict[str, Any] = {}
    for task in sorted({r["task"] for r in rows}):
        out[task] = {}
        for method in methods:
            acc = [r["accuracy"] for r in rows if r["task"] == task and r["method"] == method]
            if acc:
                out[task][method] = {
                    "mean": float(np.mean(acc)),
                    "std": float(np.std(acc)),
                    "n": len(acc),
                }
    return out


def format_table(summary: dict[str, Any], methods: tuple[str, ...], extra=None) -> str:
    """Plain-text table: one line per method, ``mean ± std`` accuracy (%) per task."""
    task_names = sorted(summary)
    lines = [f"{'method':<24}" + "".join(f"{'task ' + t:>18}" for t in task_names)]
    for method in methods:
        cells = []
        for t in task_names:
            s = summary[t].get(method)
            cells.append(f"{100 * s['mean']:>9.2f} ± {100 * s['std']:<5.2f}" if s else " " * 18)
        tail = f"  {extra(method)}" if extra else ""
        lines.append(f"{method:<24}" + "".join(f"{c:>18}" for c in cells) + tail)
    return "\n".join(lines)
