"""Naive Bayes classifiers that learn from a stream: sufficient statistics, merged exactly.

Naive Bayes assumes the D features independent given the class, so
``log p(y = k | x) = log pi_k + sum_d log p(x_d | k) + const``: a model is a handful of
per-class statistics, and learning is *counting*. Counting can be done one batch at a
time, and the result is exactly that of counting everything at once -- no learning rate,
no epochs, no forgetting.

* :class:`GaussianNB`: ``p(x_d | k) = N(x_d; theta_kd, var_kd)``. Per class, the count
  ``n_k``, the mean ``theta_k`` and the variance ``var_k`` of the examples seen. A batch with
  ``m`` examples of class k, mean ``mu`` and (biased) variance ``s2`` is merged with the
  parallel-variance formula of Chan, Golub & LeVeque (1979, "Updating formulae and a
  pairwise algorithm for computing sample variances")::

      n'     = n + m
      theta' = (n theta + m mu) / n'
      var'   = (n var + m s2 + n m / n' (theta - mu)^2) / n'

  To every variance ``epsilon_ = var_smoothing * max_d var_d`` is added, where ``var_d`` is
  the variance of feature d over *all* examples seen (computed from the per-class
  statistics), so that constant pixels do not give zero variances.
* :class:`MultinomialNB`: ``p(x | k)`` multinomial over the features (pixel intensities as
  counts); the statistics are the per-class feature sums ``feature_count_`` and
  ``feature_log_prob_ = log((N_kd + alpha) / (N_k + alpha D))`` (Laplace/Lidstone smoothing;
  McCallum & Nigam 1998).

Both have the attribute names of scikit-learn's ``GaussianNB`` and ``MultinomialNB``. The
one difference: scikit-learn's ``GaussianNB.partial_fit`` takes ``epsilon_`` from the
*latest batch* only; here it comes from all the data seen, so it does not depend on how
the stream was cut into batches. Chapter 01 (classic on-device learners).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import logsumexp

from tinyodl.classic._base import OnlineClassifier, one_hot


class _NaiveBayes(OnlineClassifier):
    """Shared: class priors, ``predict_log_proba``, ``predict_proba``."""

    def _joint_log_likelihood(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def decision_function(self, X: Any) -> np.ndarray:
        """Joint log-likelihood ``log pi_k + log p(x | k)``, shape (N, K)."""
        X = self._check_predict_X(X, "decision_function")
        return self._joint_log_likelihood(X)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """``log p(y = k | x)``, shape (N, K)."""
        jll = self.decision_function(X)
        return jll - logsumexp(jll, axis=1, keepdims=True)

    def predict_proba(self, X: Any) -> np.ndarray:
        """``p(y = k | x)``, shape (N, K); rows sum to 1."""
        return np.exp(self.predict_log_proba(X))

    def _log_prior(self) -> np.ndarray:
        priors = getattr(self, "priors", None)
        if priors is not None:
            priors = np.asarray(priors, dtype=np.float64)
            if priors.shape != self.class_count_.shape or not np.isclose(priors.sum(), 1.0):
                raise ValueError(
                    f"{type(self).__name__}: priors must be {len(self.class_count_)} numbers "
                    f"summing to 1, got {priors.tolist()}"
                )
            return np.log(priors)
        with np.errstate(divide="ignore"):  # a class not seen yet has prior 0: log 0 = -inf
            return np.log(self.class_count_) - np.log(self.class_count_.sum())


class GaussianNB(_NaiveBayes):
    """Gaussian naive Bayes with exact incremental updates (``partial_fit``).

    Parameters
    ----------
    var_smoothing : float, default 1e-9
        Fraction of the largest feature variance added to every variance.
    priors : array_like (K,), optional
        Fixed class priors; by default the class frequencies of the stream.
    dtype : {"float64", "float32"}, default "float64"

    Attributes
    ----------
    classes_ : ndarray (K,)
    class_count_ : ndarray (K,)
        Examples seen per class.
    theta_ : ndarray (K, D)
        Per-class feature means.
    var_ : ndarray (K, D)
        Per-class feature variances, plus ``epsilon_``.
    epsilon_ : float
    n_features_in_ : int
    """

    _state_attributes = ("class_count_", "theta_", "var_")

    def __init__(
        self, var_smoothing: float = 1e-9, priors: Any = None, dtype: str = "float64"
    ) -> None:
        self.var_smoothing = var_smoothing
        self.priors = priors
        self.dtype = dtype

    def _init_state(self, n_features: int) -> None:
        k = len(self.classes_)
        self.class_count_ = np.zeros(k, dtype=np.float64)
        self.theta_ = np.zeros((k, n_features), dtype=self.dtype)
        self.var_ = np.zeros((k, n_features), dtype=self.dtype)
        self.epsilon_ = 0.0

    def _update(self, X: np.ndarray, y_index: np.ndarray) -> None:
        self.var_ -= self.epsilon_  # merge the raw variances, smoothing is added back below
        for k in np.unique(y_index):
            Xk = X[y_index == k]
            m, n = len(Xk), self.class_count_[k]
            mu, s2 = Xk.mean(axis=0), Xk.var(axis=0)
            total = n + m
            delta = self.theta_[k] - mu
            self.var_[k] = (n * self.var_[k] + m * s2 + (n * m / total) * delta**2) / total
            self.theta_[k] = (n * self.theta_[k] + m * mu) / total
            self.class_count_[k] = total
        self.epsilon_ = float(self.var_smoothing * self._overall_variance().max())
        self.var_ += self.epsilon_

    def _overall_variance(self) -> np.ndarray:
        """Variance of every feature over all examples seen, from the class statistics
        (law of total variance: mean of the variances + variance of the means)."""
        w = self.class_count_ / self.class_count_.sum()
        mean = w @ self.theta_
        return w @ (self.var_ + self.theta_**2) - mean**2

    def _joint_log_likelihood(self, X: np.ndarray) -> np.ndarray:
        # log N(x; theta, var) = -1/2 log(2 pi var) - (x - theta)^2 / (2 var), summed over d;
        # the square is expanded so that no (N, K, D) array is built.
        seen = self.class_count_ > 0
        var = np.where(seen[:, None], self.var_, 1.0)  # classes not seen yet: no statistics
        inv = 1.0 / var
        const = -0.5 * np.sum(np.log(2.0 * np.pi * var), axis=1)
        quad = (X**2) @ inv.T - 2.0 * X @ (self.theta_ * inv).T + np.sum(self.theta_**2 * inv, 1)
        jll = self._log_prior() + const - 0.5 * quad
        jll[:, ~seen] = -np.inf
        return jll


class MultinomialNB(_NaiveBayes):
    """Multinomial naive Bayes for non-negative count-like features.

    Parameters
    ----------
    alpha : float, default 1.0
        Additive (Lidstone) smoothing; 1 is Laplace smoothing.
    fit_prior : bool, default True
        Learn the class priors from the stream (else uniform, unless ``class_prior``).
    class_prior : array_like (K,), optional
    dtype : {"float64", "float32"}, default "float64"

    Attributes
    ----------
    classes_ : ndarray (K,)
    class_count_ : ndarray (K,)
    feature_count_ : ndarray (K, D)
        Sum of each feature over the examples of each class.
    feature_log_prob_ : ndarray (K, D)
    class_log_prior_ : ndarray (K,)
    n_features_in_ : int
    """

    _state_attributes = ("class_count_", "feature_count_")

    def __init__(
        self,
        alpha: float = 1.0,
        fit_prior: bool = True,
        class_prior: Any = None,
        dtype: str = "float64",
    ) -> None:
        self.alpha = alpha
        self.fit_prior = fit_prior
        self.class_prior = class_prior
        self.dtype = dtype

    def _init_state(self, n_features: int) -> None:
        if self.alpha < 0:
            raise ValueError(f"MultinomialNB: alpha must be >= 0, got {self.alpha}")
        k = len(self.classes_)
        self.class_count_ = np.zeros(k, dtype=np.float64)
        self.feature_count_ = np.zeros((k, n_features), dtype=self.dtype)

    def _update(self, X: np.ndarray, y_index: np.ndarray) -> None:
        if (X < 0).any():
            raise ValueError(
                "MultinomialNB.partial_fit: X must be non-negative (counts or intensities), "
                f"got a minimum of {X.min()}"
            )
        Y = one_hot(y_index, len(self.classes_), self.dtype)
        self.feature_count_ += Y.T @ X
        self.class_count_ += Y.sum(axis=0)
        smoothed = self.feature_count_ + self.alpha
        self.feature_log_prob_ = np.log(smoothed) - np.log(smoothed.sum(axis=1, keepdims=True))
        self.class_log_prior_ = self._class_log_prior()

    def _class_log_prior(self) -> np.ndarray:
        k = len(self.classes_)
        if self.class_prior is not None:
            prior = np.asarray(self.class_prior, dtype=np.float64)
            if prior.shape != (k,):
                raise ValueError(f"MultinomialNB: class_prior must have {k} values")
            return np.log(prior)
        if not self.fit_prior:
            return np.full(k, -np.log(k))
        with np.errstate(divide="ignore"):
            return np.log(self.class_count_) - np.log(self.class_count_.sum())

    def _joint_log_likelihood(self, X: np.ndarray) -> np.ndarray:
        return X @ self.feature_log_prob_.T + self.class_log_prior_
