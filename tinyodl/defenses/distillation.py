"""Defensive distillation (Papernot et al. 2016; textbook section 12.6.5).

Train a teacher with a softmax at temperature ``T`` (``softmax(z / T)``), label the training
set with its soft probabilities at the same temperature, train the student on those soft
labels at temperature ``T``, and deploy the student at temperature 1. The deployed logits
are about ``T`` times larger than the ones it was trained with, so the softmax saturates and
its input gradients vanish: FGSM and PGD on the cross-entropy lose their signal.

That is **gradient masking**, not robustness: Carlini and Wagner (2016) break distilled
networks with a loss on the logits (the margin of :func:`tinyodl.attacks.margin`), and
black-box or transfer attacks never needed the gradient. The notebook measures both sides.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tinyodl.nn import SGD, softmax, softmax_cross_entropy
from tinyodl.train import fit


def temperature_loss(temperature: float) -> Callable[[np.ndarray, np.ndarray], tuple]:
    """``T^2`` times the cross-entropy of ``softmax(logits / T)``: ``f(logits, y) -> (loss,
    dlogits)``.

    ``y`` may be int labels or soft targets (N, C); ``dlogits = T (softmax(z / T) - y) / N``.
    The factor ``T^2`` (Hinton et al. 2015) keeps the gradient's size independent of ``T``,
    so the same learning rate trains at any temperature.
    """
    t = float(temperature)
    if not t > 0:
        raise ValueError(f"temperature_loss: temperature must be > 0, got {temperature}")

    def loss(logits: np.ndarray, y: np.ndarray):
        value, d = softmax_cross_entropy(logits / np.asarray(t, logits.dtype), y)
        return t * t * value, d * np.asarray(t, d.dtype)

    return loss


def defensive_distillation(
    teacher: Any,
    student: Any,
    x: np.ndarray,
    y: np.ndarray,
    temperature: float = 20.0,
    epochs: int = 2,
    batch_size: int = 64,
    lr: float | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Train ``teacher`` at temperature T, then ``student`` on its soft labels at T.

    Both models are trained in place with SGD (momentum 0.9) through
    :func:`tinyodl.train.fit`; the student is returned in evaluation mode and is used at
    temperature 1 (its plain logits). The logits must grow about ``T`` times larger than
    at temperature 1 and :func:`temperature_loss`'s gradient is ``T`` times larger, so the
    default learning rate is ``0.05 / T`` (measured: 0.05 diverges at T = 10).

    Returns
    -------
    dict with ``teacher``, ``student``, ``soft_labels`` (N, C) float32, ``temperature``.
    """
    loss = temperature_loss(temperature)
    lr = 0.05 / temperature if lr is None else lr
    opts = {"epochs": epochs, "batch_size": batch_size, "seed": seed, "progress": progress}
    fit(teacher, SGD(teacher, lr=lr, momentum=0.9), x, y, loss=loss, **opts)
    teacher.eval()
    logits = np.concatenate(
        [teacher.forward(x[i : i + 1000], train=False) for i in range(0, len(x), 1000)]
    )
    soft = softmax(logits.astype(np.float64) / temperature).astype(np.float32)
    fit(student, SGD(student, lr=lr, momentum=0.9), x, soft, loss=loss, **opts)
    student.eval()
    return {"teacher": teacher, "student": student, "soft_labels": soft, "temperature": temperature}


__all__ = ["defensive_distillation", "temperature_loss"]
