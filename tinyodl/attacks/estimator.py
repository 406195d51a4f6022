"""The model as an attacker sees it: logits, input gradients and a query counter.

Chapter 11 (security). Every attack in :mod:`tinyodl.attacks` talks to its victim through a
:class:`Classifier`, the role ART's ``PyTorchClassifier`` plays: ``predict(x)`` returns logits,
``loss_gradient(x, y)`` returns ``dL/dx`` (one gradient per example: the loss is summed, so
no example is scaled by the batch size), and ``queries_`` counts how many inputs the victim
was asked about -- the currency of the black-box attacks.

Input gradients come from the foundation: ``model.backward(dloss)`` returns ``dL/dx``
(``docs/architecture.md``). An attack runs the model in evaluation mode
(``forward(x, train=False)``: batchnorm uses its running statistics, dropout is off), and
with every parameter temporarily frozen (:func:`frozen`), so that crafting an adversarial
example neither computes nor accumulates weight gradients -- which matters when it happens
inside a training loop (adversarial training) -- and the layers keep no input for ``dW``.

Decision-only attackers get even less: :class:`BlackBox` exposes only scores or only the
predicted label, and counts every query.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from tinyodl.nn.losses import log_softmax, softmax, softmax_cross_entropy

#: ``fn(logits, rows) -> (values (n,), dvalues/dlogits (n, C))``: a per-example objective of
#: the logits of one batch; ``rows`` is that batch's slice of the whole input (to pick labels).
LogitObjective = Callable[[np.ndarray, slice], tuple[np.ndarray, np.ndarray]]


@contextmanager
def frozen(model: Any) -> Iterator[Any]:
    """Freeze every parameter of ``model`` for the duration, then restore flags and grads.

    Backward through a frozen model still returns ``dL/dx`` but computes no ``dL/dW``, keeps
    no layer input for it, and leaves ``param.grad`` / ``grad_sample`` exactly as they were.
    Objects without ``named_parameters`` (any other model) pass through unchanged.
    """
    if not hasattr(model, "named_parameters"):
        yield model
        return
    kept = [(p, p.trainable, p.grad, p.grad_sample) for _, p in model.named_parameters()]
    for p, *_ in kept:
        p.trainable = False
    try:
        yield model
    finally:
        for p, trainable, grad, grad_sample in kept:
            p.trainable = trainable
            p.grad, p.grad_sample = grad, grad_sample


class Classifier:
    """A differentiable classifier with clip values and a query counter (ART's estimator).

    Parameters
    ----------
    model : tinyodl.nn.Layer or object
        A tinyodl model (``forward(x, train=False)`` and ``backward(dout) -> dx``), or any
        object with ``forward(x)`` returning logits and ``backward(dlogits)`` returning
        ``dL/dx`` (e.g. a fake-quantized on-device model).
    clip_values : (float, float) or None, default (0.0, 1.0)
        The valid input range; attacks clip their outputs into it.
    batch_size : int, default 256
        Examples per forward/backward pass (bounds the memory).

    Attributes
    ----------
    queries_ : int
        Inputs passed through :meth:`predict` (and :meth:`gradient`) so far.
    gradient_calls_ : int
        Inputs whose input gradient was computed.
    """

    def __init__(
        self,
        model: Any,
        clip_values: tuple[float, float] | None = (0.0, 1.0),
        batch_size: int = 256,
    ) -> None:
        if not (hasattr(model, "forward") and hasattr(model, "backward")):
            raise TypeError(
                f"Classifier: model must have forward() and backward(), got {type(model).__name__}"
            )
        if clip_values is not None:
            lo, hi = (float(v) for v in clip_values)
            if not lo < hi:
                raise ValueError(f"Classifier: clip_values must be (low < high), got {clip_values}")
            clip_values = (lo, hi)
        if int(batch_size) < 1:
            raise ValueError(f"Classifier: batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.clip_values = clip_values
        self.batch_size = int(batch_size)
        self.queries_ = 0
        self.gradient_calls_ = 0

    # ------------------------------------------------------------------ helpers
    def _forward(self, x: np.ndarray) -> np.ndarray:
        try:
            return self.model.forward(x, train=False)
        except TypeError:  # a model whose forward takes no mode (always inference)
            return self.model.forward(x)

    def _check_x(self, x: np.ndarray, fn: str) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype.kind != "f" or x.ndim < 2:
            raise ValueError(
                f"Classifier.{fn}: x must be a float array (N, ...), got shape {x.shape} and "
                f"dtype {x.dtype}"
            )
        return x

    def clip(self, x: np.ndarray) -> np.ndarray:
        """``x`` clipped into :attr:`clip_values` (unchanged when there are none)."""
        return x if self.clip_values is None else np.clip(x, *self.clip_values)

    # ------------------------------------------------------------------ queries
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, C) in evaluation mode, ``batch_size`` examples at a time."""
        x = self._check_x(x, "predict")
        self.queries_ += len(x)
        out = [self._forward(x[i : i + self.batch_size]) for i in range(0, len(x), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=x.dtype)

    def gradient(self, x: np.ndarray, objective: LogitObjective) -> tuple[np.ndarray, np.ndarray]:
        """Values and input gradients of a per-example objective of the logits.

        Parameters
        ----------
        x : ndarray, shape (N, ...)
        objective : callable
            ``objective(logits, rows) -> (values (n,), dvalues/dlogits (n, C))``, called once
            per batch of ``n`` examples with that batch's logits and its slice ``rows`` of
            ``x`` (so the objective can pick the batch's labels);
            :func:`cross_entropy_objective` is the usual one.

        Returns
        -------
        values : ndarray (N,)
        grad : ndarray, shape of ``x``, dtype of the model
        """
        x = self._check_x(x, "gradient")
        values, grads = [], []
        with frozen(self.model):
            for i in range(0, len(x), self.batch_size):
                xb = x[i : i + self.batch_size]
                logits = self._forward(xb)
                v, dlogits = objective(logits, slice(i, i + len(xb)))
                dx = self.model.backward(dlogits)
                if dx is None:
                    raise ValueError(
                        f"Classifier: {type(self.model).__name__}.backward returned no input "
                        "gradient (an int8 model: attack its fake-quantized twin instead)"
                    )
                values.append(np.asarray(v, dtype=np.float64))
                grads.append(dx.reshape(xb.shape))
        self.queries_ += len(x)
        self.gradient_calls_ += len(x)
        return np.concatenate(values), np.concatenate(grads)

    def loss_gradient(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``dL_i/dx_i`` of the softmax cross-entropy of each example against ``y``.

        ``y``: int labels (N,) or target probabilities (N, C). The loss is summed over the
        batch, so each row is that example's own gradient (not divided by N).
        """
        y = np.asarray(y)
        if len(y) != len(x):
            raise ValueError(f"Classifier.loss_gradient: {len(x)} inputs but {len(y)} labels")
        return self.gradient(x, cross_entropy_objective(y))[1]

    def loss(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Per-example cross-entropy (N,) float64 (a forward pass only)."""
        return per_example_cross_entropy(self.predict(x), np.asarray(y))

    def predict_labels(self, x: np.ndarray) -> np.ndarray:
        """Arg-max classes, int64 (N,)."""
        return np.argmax(self.predict(x), axis=1).astype(np.int64)

    def reset_queries(self) -> None:
        """Set the query counters back to zero."""
        self.queries_ = 0
        self.gradient_calls_ = 0


def cross_entropy_objective(y: np.ndarray) -> LogitObjective:
    """Per-example softmax cross-entropy against ``y`` (int (N,) or probabilities (N, C)).

    Values are ``-sum_c y_c log softmax(z)_c`` (float64); gradients ``softmax(z) - y``.
    """

    def fn(logits: np.ndarray, rows: slice) -> tuple[np.ndarray, np.ndarray]:
        yb = y[rows]
        _, dlogits = softmax_cross_entropy(logits, yb, reduction="sum")
        return per_example_cross_entropy(logits, yb), dlogits

    return fn


def per_example_cross_entropy(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``-log softmax(z)_y`` (int labels) or ``-sum_c y_c log softmax(z)_c``, float64 (N,)."""
    logp = log_softmax(np.asarray(logits, dtype=np.float64))
    if y.ndim == 1:
        return -logp[np.arange(len(y)), y]
    return -(y * logp).sum(axis=1)


def as_classifier(estimator: Any, clip_values: tuple[float, float] | None = (0.0, 1.0)):
    """``estimator`` itself if it is a :class:`Classifier`, else a new one around the model."""
    if isinstance(estimator, Classifier):
        return estimator
    return Classifier(estimator, clip_values=clip_values)


class BlackBox:
    """Query access only: ``scores(x)`` (probabilities) or ``labels(x)``, each query counted.

    Parameters
    ----------
    model : tinyodl model or Classifier
        The victim; its gradients are never used.
    output : {"scores", "labels"}
        What the victim reveals: softmax scores (score-based attacks: NES, SPSA) or only
        the predicted class (decision-based attacks: HopSkipJump).

    Attributes
    ----------
    queries_ : int
        Inputs submitted so far.
    """

    def __init__(self, model: Any, output: str = "scores") -> None:
        if output not in ("scores", "labels"):
            raise ValueError(f"BlackBox: output must be 'scores' or 'labels', got {output!r}")
        self.classifier = as_classifier(model)
        self.output = output
        self.queries_ = 0

    @property
    def clip_values(self) -> tuple[float, float] | None:
        return self.classifier.clip_values

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Softmax probabilities (N, C); refused when only labels are revealed."""
        if self.output != "scores":
            raise PermissionError("BlackBox: this victim reveals only labels, not scores")
        self.queries_ += len(x)
        return softmax(self.classifier.predict(x).astype(np.float64))

    def labels(self, x: np.ndarray) -> np.ndarray:
        """Predicted classes (N,) int64."""
        self.queries_ += len(x)
        return self.classifier.predict_labels(x)


__all__ = [
    "BlackBox",
    "Classifier",
    "LogitObjective",
    "as_classifier",
    "cross_entropy_objective",
    "frozen",
]
