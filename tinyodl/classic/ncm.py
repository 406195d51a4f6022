"""Nearest class mean on frozen features: the cheapest learner that uses a deep network.

A network trained elsewhere (or on other classes) is kept frozen as a feature extractor
``f``; the device stores one mean feature vector per class and classifies by the nearest
mean (Mensink et al., TPAMI 2013, "Distance-based image classification"; the classifier of
iCaRL, Rebuffi et al. 2017, and a strong baseline for streaming learning, Hayes & Kanan
2020, "Lifelong machine learning with deep streaming linear discriminant analysis")::

    mu_k <- mu_k + (f(x) - mu_k) / n_k        (after n_k <- n_k + 1; batched below)
    predict(x) = argmin_k ||f(x) - mu_k||^2

Learning is a running mean per class: no gradients, no backward pass through ``f``, and
exactly the same result whatever the batch sizes of the stream. The model is K x F numbers
(plus the frozen extractor, which is shared with inference). The oracle is
scikit-learn's ``NearestCentroid`` (a batch ``fit``), whose ``centroids_`` these means equal.
Chapter 01 (classic on-device learners).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tinyodl.classic._base import OnlineClassifier, one_hot


class FrozenFeatures:
    """A frozen tinyodl model (or one of its parts) as a feature extractor ``x -> (N, F)``.

    Parameters
    ----------
    model : tinyodl.nn.Layer
        Run in evaluation mode (``forward(x, train=False)``); never updated.
    part : str, optional
        A child to use instead of the whole model, e.g. ``"features"`` (the body of every
        model of :mod:`tinyodl.models`).
    batch_size : int, default 500
        Examples per forward pass (bounds the memory).

    Calling it on ``x`` of shape (N, ...) returns float features of shape (N, F)
    (flattened); images are converted with :func:`tinyodl.data.to_float` first if they are
    integers.
    """

    def __init__(self, model: Any, part: str | None = None, batch_size: int = 500) -> None:
        self.model = model
        self.part = part
        self.batch_size = batch_size
        self._net = model if part is None else model[part]

    def __call__(self, x: Any) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype.kind in "iu":
            from tinyodl.data import to_float

            x = to_float(x)
        out = [
            self._net.forward(x[i : i + self.batch_size], train=False).reshape(
                min(self.batch_size, len(x) - i), -1
            )
            for i in range(0, len(x), self.batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)

    def __repr__(self) -> str:
        return f"FrozenFeatures({type(self.model).__name__}, part={self.part!r})"


class NearestClassMean(OnlineClassifier):
    """Nearest class mean classifier with running per-class means.

    Parameters
    ----------
    feature_extractor : callable, optional
        ``f(X) -> (N, F)`` applied to every input (e.g. :class:`FrozenFeatures`); the
        identity when None (then X must be (N, F)).
    dtype : {"float64", "float32"}, default "float64"

    Attributes
    ----------
    classes_ : ndarray (K,)
    class_count_ : ndarray (K,)
    centroids_ : ndarray (K, F)
        Mean feature vector of each class (zeros for a class not seen yet, which is never
        predicted).
    n_features_in_ : int
        F, the feature dimension.
    """

    _state_attributes = ("class_count_", "centroids_")

    def __init__(
        self,
        feature_extractor: Callable[[Any], np.ndarray] | None = None,
        dtype: str = "float64",
    ) -> None:
        self.feature_extractor = feature_extractor
        self.dtype = dtype

    def _prepare(self, X: Any) -> Any:
        return X if self.feature_extractor is None else self.feature_extractor(X)

    def _init_state(self, n_features: int) -> None:
        k = len(self.classes_)
        self.class_count_ = np.zeros(k, dtype=np.float64)
        self.centroids_ = np.zeros((k, n_features), dtype=self.dtype)

    def _update(self, X: np.ndarray, y_index: np.ndarray) -> None:
        Y = one_hot(y_index, len(self.classes_), self.dtype)
        counts = Y.sum(axis=0)
        batch_mean = (Y.T @ X) / np.maximum(counts, 1)[:, None]
        total = self.class_count_ + counts
        rate = counts / np.maximum(total, 1)  # m / (n + m); 0 for a class not in the batch
        # mu' = mu + m / (n + m) (batch mean - mu): the running mean of n + m examples
        self.centroids_ += rate[:, None].astype(self.dtype) * (batch_mean - self.centroids_)
        self.class_count_[:] = total

    def decision_function(self, X: Any) -> np.ndarray:
        """Negative squared distances to the class means, shape (N, K)."""
        F = self._check_predict_X(X, "decision_function")
        c = self.centroids_
        d2 = (F**2).sum(1, keepdims=True) - 2.0 * F @ c.T + (c**2).sum(1)
        d2[:, self.class_count_ == 0] = np.inf
        return -d2
