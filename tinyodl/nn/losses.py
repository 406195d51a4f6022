"""Loss functions returning ``(loss, dloss/dinput)`` (chapter 00).

* :func:`softmax_cross_entropy` -- stable through the log-sum-exp trick:
  ``log softmax(z)_c = z_c - m - log sum_j exp(z_j - m)`` with ``m = max_j z_j``, and the
  gradient ``(softmax(z) - onehot(y)) / N`` (mean) -- every row sums to zero.
* :func:`mse_loss` -- mean of squared errors over all elements (PyTorch's default).

``reduction="sum"`` gives per-example gradients unscaled by the batch size, as DP-SGD
(chapter 10) wants for clipping.
"""

from __future__ import annotations

import numpy as np


def _check_reduction(fn: str, reduction: str) -> None:
    if reduction not in ("mean", "sum"):
        raise ValueError(f"{fn}: reduction must be 'mean' or 'sum', got {reduction!r}")


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise ``log softmax`` of ``(N, C)`` logits, computed stably."""
    z = logits - logits.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(N, C)`` logits."""
    return np.exp(log_softmax(logits))


def _targets(fn: str, labels: np.ndarray, n: int, c: int, dtype) -> np.ndarray:
    """Validate labels and return them as (N, C) target probabilities."""
    labels = np.asarray(labels)
    if labels.dtype.kind in "iu":
        if labels.shape != (n,):
            raise ValueError(f"{fn}: integer labels must have shape ({n},), got {labels.shape}")
        if n and (labels.min() < 0 or labels.max() >= c):
            raise ValueError(
                f"{fn}: labels must lie in [0, {c}) for {c} classes, got values in "
                f"[{labels.min()}, {labels.max()}]"
            )
        onehot = np.zeros((n, c), dtype=dtype)
        onehot[np.arange(n), labels] = 1
        return onehot
    if labels.dtype.kind == "f":
        if labels.shape != (n, c):
            raise ValueError(
                f"{fn}: soft labels must have shape ({n}, {c}) like the logits, got {labels.shape}"
            )
        return labels.astype(dtype, copy=False)
    raise TypeError(
        f"{fn}: labels must be integers (N,) or probabilities (N, C), got {labels.dtype}"
    )


def softmax_cross_entropy(
    logits: np.ndarray, labels: np.ndarray, reduction: str = "mean"
) -> tuple[float, np.ndarray]:
    """Cross-entropy of softmax(logits) against the labels.

    Parameters
    ----------
    logits : ndarray, shape (N, C), float
    labels : ndarray, shape (N,) of int class indices, or (N, C) float target probabilities
    reduction : {"mean", "sum"}

    Returns
    -------
    loss : float
    dlogits : ndarray, shape (N, C), dtype of ``logits``
        ``(softmax(logits) - targets) / N`` for the mean.
    """
    fn = "softmax_cross_entropy"
    _check_reduction(fn, reduction)
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.dtype.kind != "f":
        raise ValueError(
            f"{fn}: logits must be a 2-D float array (N, C), got shape {logits.shape} "
            f"and dtype {logits.dtype}"
        )
    n, c = logits.shape
    targets = _targets(fn, labels, n, c, logits.dtype)
    logp = log_softmax(logits)
    scale = 1.0 / n if reduction == "mean" and n else 1.0
    loss = float(-(targets * logp).sum() * scale)
    dlogits = (np.exp(logp) * targets.sum(axis=1, keepdims=True) - targets) * scale
    return loss, dlogits.astype(logits.dtype, copy=False)


def mse_loss(
    pred: np.ndarray, target: np.ndarray, reduction: str = "mean"
) -> tuple[float, np.ndarray]:
    """Mean (or sum) of ``(pred - target)**2`` over all elements, and its gradient.

    Returns
    -------
    loss : float
    dpred : ndarray, shape of ``pred``: ``2 * (pred - target) / pred.size`` for the mean
    """
    fn = "mse_loss"
    _check_reduction(fn, reduction)
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"{fn}: pred shape {pred.shape} != target shape {target.shape}")
    diff = pred - target
    scale = 1.0 / max(diff.size, 1) if reduction == "mean" else 1.0
    return float((diff**2).sum() * scale), (2.0 * scale * diff).astype(pred.dtype, copy=False)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose largest logit is at the label."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(
            f"accuracy: expected logits (N, C) and labels (N,), got {logits.shape} and "
            f"{labels.shape}"
        )
    return float((logits.argmax(axis=1) == labels).mean()) if len(labels) else 0.0
