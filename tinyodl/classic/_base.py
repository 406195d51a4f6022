"""What every streaming classifier of chapter 01 shares: input checks, classes, predict.

scikit-learn's conventions (Pedregosa et al. 2011; ``docs/contributing.md``):

* ``__init__`` only stores the hyper-parameters; nothing is learned there.
* ``partial_fit(X, y, classes=None)`` learns from one batch of a stream and returns
  ``self``. The first call must name every class the stream will ever contain
  (``classes=``), because a streaming learner cannot know them in advance; later calls may
  repeat the same classes or leave them out.
* ``fit(X, y)`` forgets everything learned so far and learns from ``(X, y)``; returns
  ``self``.
* Learned attributes end in ``_`` (``classes_``, ``coef_``, ...). They have a size fixed by
  the number of classes and features, never by the number of examples seen: that is what
  makes the memory of an update constant (measured in :mod:`tinyodl.classic.measure`).
"""

from __future__ import annotations

from typing import Any

import numpy as np


class NotFittedError(ValueError, AttributeError):
    """``predict`` (or another method that needs learned state) before any ``partial_fit``."""


class OnlineClassifier:
    """Base class: class bookkeeping, input validation, ``fit``/``predict``/``score``.

    Subclasses implement ``_init_state(n_features)``, ``_update(X, y_index)`` (``y_index``
    holds positions in ``classes_``) and ``decision_function(X)`` (N, n_classes), and list
    their learned array attributes in ``_state_attributes``.
    """

    _state_attributes: tuple[str, ...] = ()
    #: The dtype of the learned arrays (subclasses take a ``dtype`` parameter).
    dtype: str = "float64"

    # ------------------------------------------------------------------ public API
    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> OnlineClassifier:
        """Learn from one batch of the stream.

        Parameters
        ----------
        X : array_like, shape (N, D)
            One example per row. Images must be flattened first (``x.reshape(len(x), -1)``).
        y : array_like, shape (N,)
            Labels; each must be one of ``classes``.
        classes : array_like, optional
            Every label the stream can contain. Required on the first call, optional later
            (then it must equal ``classes_``).

        Returns
        -------
        self
        """
        name = f"{type(self).__name__}.partial_fit"
        first = not hasattr(self, "classes_")
        if first:
            if classes is None:
                raise ValueError(
                    f"{name}: the first call needs classes= (every label the stream will "
                    "contain), as in scikit-learn"
                )
            classes_ = np.unique(np.asarray(classes))
            if classes_.size < 2:
                raise ValueError(f"{name}: need at least 2 classes, got {classes_.tolist()}")
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(
                f"{name}: classes={np.unique(classes).tolist()} differs from the classes of "
                f"the first call {self.classes_.tolist()}"
            )
        X = self._check_X(self._prepare(X), name, None if first else self.n_features_in_)
        y_index = self._encode(y, len(X), name, classes_ if first else self.classes_)
        if first:
            self.classes_ = classes_
            self.n_features_in_ = X.shape[1]
            self._init_state(X.shape[1])
        self._update(X, y_index)
        return self

    def fit(self, X: Any, y: Any) -> OnlineClassifier:
        """Forget what was learned, then learn from ``(X, y)`` (classes = ``unique(y)``).

        Returns
        -------
        self
        """
        self.reset()
        return self.partial_fit(X, y, classes=np.unique(np.asarray(y)))

    def reset(self) -> OnlineClassifier:
        """Delete every learned attribute (the estimator is as after ``__init__``)."""
        for key in [k for k in vars(self) if k.endswith("_") and not k.startswith("_")]:
            delattr(self, key)
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """Scores (N, n_classes); the predicted class has the largest."""
        raise NotImplementedError

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels (N,), taken from ``classes_``."""
        scores = self.decision_function(X)
        return self.classes_[np.argmax(scores, axis=1)]

    def score(self, X: Any, y: Any) -> float:
        """Accuracy on ``(X, y)``, a fraction in [0, 1]."""
        return float(np.mean(self.predict(X) == np.asarray(y)))

    def get_params(self) -> dict[str, Any]:
        """The constructor arguments (``type(est)(**est.get_params())`` is a fresh copy)."""
        return {k: v for k, v in vars(self).items() if not k.endswith("_") and k[0] != "_"}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ subclass hooks
    def _init_state(self, n_features: int) -> None:
        raise NotImplementedError

    def _update(self, X: np.ndarray, y_index: np.ndarray) -> None:
        raise NotImplementedError

    def _prepare(self, X: Any) -> Any:
        """Turn raw inputs into the (N, D) features the learner sees (identity here)."""
        return X

    # ------------------------------------------------------------------ helpers
    def _check_fitted(self, name: str) -> None:
        if not hasattr(self, "classes_"):
            raise NotFittedError(
                f"{type(self).__name__}.{name}: not fitted yet; call partial_fit(X, y, "
                "classes=...) or fit(X, y) first"
            )

    def _check_X(self, X: Any, name: str, n_features: int | None) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(
                f"{name}: expected X of shape (n_samples, n_features), got shape {X.shape}"
                + ("; flatten images with x.reshape(len(x), -1)" if X.ndim > 2 else "")
            )
        if X.dtype.kind not in "fiub":
            raise TypeError(f"{name}: expected a numeric X, got dtype {X.dtype}")
        if n_features is not None and X.shape[1] != n_features:
            raise ValueError(
                f"{name}: X has {X.shape[1]} features, but the estimator was fitted with "
                f"{n_features} features"
            )
        X = X.astype(self.dtype, copy=False)
        if not np.isfinite(X).all():
            raise ValueError(f"{name}: X contains NaN or infinity")
        return X

    def _check_predict_X(self, X: Any, name: str) -> np.ndarray:
        self._check_fitted(name)
        return self._check_X(self._prepare(X), f"{type(self).__name__}.{name}", self.n_features_in_)

    @staticmethod
    def _encode(y: Any, n: int, name: str, classes: np.ndarray) -> np.ndarray:
        """Positions of the labels ``y`` in ``classes`` (int64), with a clear error."""
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != n:
            raise ValueError(f"{name}: expected y of shape ({n},), got {y.shape}")
        index = np.searchsorted(classes, y)
        index = np.clip(index, 0, len(classes) - 1)
        unknown = classes[index] != y
        if unknown.any():
            raise ValueError(
                f"{name}: labels {np.unique(y[unknown]).tolist()} are not in classes "
                f"{classes.tolist()}"
            )
        return index.astype(np.int64)


def one_hot(y_index: np.ndarray, n_classes: int, dtype: Any = np.float64) -> np.ndarray:
    """(N,) class positions -> (N, n_classes) one-hot rows."""
    out = np.zeros((len(y_index), n_classes), dtype=dtype)
    out[np.arange(len(y_index)), y_index] = 1
    return out
