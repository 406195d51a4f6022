"""Linear classifiers trained by stochastic gradient descent, one example at a time.

Both learners keep a weight matrix ``coef_`` (K, D) and ``intercept_`` (K,) and, for each
example ``(x, y)`` of the stream, in order (the update of scikit-learn's ``SGDClassifier``,
``sklearn/linear_model/_sgd_fast.pyx``)::

    eta_t = schedule(t)
    p     = W x + b                          scores with the weights *before* the update
    g     = dloss/dp (p, y)                  (K,)
    W    <- max(0, 1 - eta_t * alpha) * W    the L2 penalty alpha/2 ||W||^2 ("weight decay")
    W    <- W - eta_t * outer(g, x)
    b    <- b - eta_t * g                    the intercept is not penalised
    t    <- t + 1

* :class:`OnlineLogisticRegression`: multinomial (softmax) logistic regression,
  ``g = softmax(p) - onehot(y)``; or one-vs-rest binary logistic regressions,
  ``g_k = sigmoid(p_k) - [y == k]`` (``multi_class="ovr"``, what ``SGDClassifier(loss=
  "log_loss")`` does).
* :class:`LinearSVM`: one-vs-rest linear SVMs on the hinge loss ``max(0, 1 - y_k p_k)`` with
  ``y_k = +-1``, so ``g_k = -y_k`` where ``y_k p_k <= 1`` and 0 elsewhere. With the step
  ``eta_t = 1 / (alpha t)`` this is Pegasos (Shalev-Shwartz et al., ICML 2007, "Pegasos:
  Primal Estimated sub-GrAdient SOlver for SVM", Algorithm 1), whose optional projection
  onto the ball ``||w|| <= 1/sqrt(alpha)`` (``project=True``) is also implemented.

Learning-rate schedules (``learning_rate``; ``t`` counts examples from 1):

==============  ============================================  ===========================
name            eta_t                                         note
==============  ============================================  ===========================
"pegasos"       1 / (alpha t)                                 Pegasos; first step 1/alpha
"optimal"       1 / (alpha (t0 + t - 1))                      Pegasos shifted by t0
"invscaling"    eta0 / t^power_t
"constant"      eta0
==============  ============================================  ===========================

"optimal" is scikit-learn's default (L. Bottou's heuristic): ``t0 = 1 / (alpha eta_1)``
with ``eta_1 = alpha^(-1/4)``, the size of a "typical" weight, so the first step is not the
huge ``1/alpha`` of plain Pegasos (which, with an unpenalised intercept, throws the
intercept far away). Memory: ``K * D + K`` numbers, whatever the length of the stream; an
update costs about ``2 K D`` multiply-adds (scores and weight update) and, in this numpy
version, a (K, D) temporary. Chapter 01 (classic on-device learners).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import expit

from tinyodl.classic._base import OnlineClassifier

SCHEDULES = ("pegasos", "optimal", "invscaling", "constant")


def softmax(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """``exp(s) / sum(exp(s))`` along ``axis``, shifted by the maximum so nothing overflows."""
    e = np.exp(scores - scores.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


class _SGDLinearClassifier(OnlineClassifier):
    """Shared SGD machinery; subclasses define the loss gradient ``_dloss(p, k)``."""

    _state_attributes = ("coef_", "intercept_")

    def __init__(
        self,
        alpha: float,
        learning_rate: str,
        eta0: float,
        power_t: float,
        fit_intercept: bool,
        dtype: str,
    ) -> None:
        self.alpha = alpha
        self.learning_rate = learning_rate
        self.eta0 = eta0
        self.power_t = power_t
        self.fit_intercept = fit_intercept
        self.dtype = dtype

    def _check_params(self) -> None:
        name = type(self).__name__
        if self.learning_rate not in SCHEDULES:
            raise ValueError(
                f"{name}: learning_rate must be one of {SCHEDULES}, got {self.learning_rate!r}"
            )
        if self.alpha < 0:
            raise ValueError(f"{name}: alpha must be >= 0, got {self.alpha}")
        if self.learning_rate in ("pegasos", "optimal") and self.alpha <= 0:
            raise ValueError(f"{name}: learning_rate={self.learning_rate!r} needs alpha > 0")
        if self.learning_rate in ("constant", "invscaling") and self.eta0 <= 0:
            raise ValueError(
                f"{name}: learning_rate={self.learning_rate!r} needs eta0 > 0, got {self.eta0}"
            )

    def _init_state(self, n_features: int) -> None:
        self._check_params()
        k = len(self.classes_)
        self.coef_ = np.zeros((k, n_features), dtype=self.dtype)
        self.intercept_ = np.zeros(k, dtype=self.dtype)
        self.t_ = 1.0  # the step counter of the schedule (scikit-learn's t_)

    def eta(self, t: float) -> float:
        """The step size for the ``t``-th example (``t`` counts from 1)."""
        if self.learning_rate == "constant":
            return float(self.eta0)
        if self.learning_rate == "invscaling":
            return float(self.eta0) / t**self.power_t
        if self.learning_rate == "pegasos":
            return 1.0 / (self.alpha * t)
        eta_1 = self.alpha**-0.25  # "optimal": typical weight size (Bottou's heuristic)
        t0 = 1.0 / (eta_1 * self.alpha)
        return 1.0 / (self.alpha * (t0 + t - 1))

    def _dloss(self, p: np.ndarray, k: int) -> np.ndarray:
        raise NotImplementedError

    def _project(self) -> None:
        """After an update (Pegasos' projection step); nothing by default."""

    def _update(self, X: np.ndarray, y_index: np.ndarray) -> None:
        W, b = self.coef_, self.intercept_
        for x, k in zip(X, y_index, strict=True):
            eta = self.eta(self.t_)
            p = W @ x + b  # scores before the update
            update = -eta * self._dloss(p, int(k))
            if self.alpha:
                W *= max(0.0, 1.0 - eta * self.alpha)
            W += update[:, None] * x[None, :]
            if self.fit_intercept:
                b += update
            self._project()
            self.t_ += 1.0

    def decision_function(self, X: Any) -> np.ndarray:
        """Scores ``X @ coef_.T + intercept_``, shape (N, n_classes)."""
        X = self._check_predict_X(X, "decision_function")
        return X @ self.coef_.T + self.intercept_


class OnlineLogisticRegression(_SGDLinearClassifier):
    """Logistic regression learned online by SGD on the (L2-penalised) log loss.

    Parameters
    ----------
    alpha : float, default 1e-4
        L2 penalty ``alpha/2 ||W||^2`` per example (as ``SGDClassifier``'s ``alpha``).
    learning_rate : {"optimal", "pegasos", "invscaling", "constant"}, default "optimal"
        The step-size schedule (module docstring).
    eta0 : float, default 0.01
        Initial step of "constant" and "invscaling".
    power_t : float, default 0.5
        Exponent of "invscaling".
    multi_class : {"multinomial", "ovr"}, default "multinomial"
        One softmax over the K classes, or K independent binary logistic regressions (what
        ``SGDClassifier(loss="log_loss")`` learns).
    fit_intercept : bool, default True
    dtype : {"float64", "float32"}, default "float64"
        Dtype of the learned arrays and of the arithmetic (float32 halves the model bytes).

    Attributes
    ----------
    classes_ : ndarray (K,)
    coef_ : ndarray (K, D)
        One row per class, also for K = 2 (scikit-learn keeps a single row then).
    intercept_ : ndarray (K,)
    t_ : float
        1 + the number of examples seen (the schedule's counter).
    n_features_in_ : int
    """

    def __init__(
        self,
        alpha: float = 1e-4,
        learning_rate: str = "optimal",
        eta0: float = 0.01,
        power_t: float = 0.5,
        multi_class: str = "multinomial",
        fit_intercept: bool = True,
        dtype: str = "float64",
    ) -> None:
        super().__init__(alpha, learning_rate, eta0, power_t, fit_intercept, dtype)
        self.multi_class = multi_class

    def _init_state(self, n_features: int) -> None:
        if self.multi_class not in ("multinomial", "ovr"):
            raise ValueError(
                "OnlineLogisticRegression: multi_class must be 'multinomial' or 'ovr', got "
                f"{self.multi_class!r}"
            )
        super()._init_state(n_features)

    def _dloss(self, p: np.ndarray, k: int) -> np.ndarray:
        # d/dp of -log softmax(p)_k is softmax(p) - e_k; of the binary log loss of class j,
        # log(1 + exp(p_j)) - [j == k] p_j, it is sigmoid(p_j) - [j == k].
        g = softmax(p) if self.multi_class == "multinomial" else expit(p)
        g[k] -= 1.0
        return g

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (N, K): the softmax of the scores (one-vs-rest: the K
        sigmoids, normalised to sum to 1, as scikit-learn does)."""
        scores = self.decision_function(X)
        if self.multi_class == "multinomial":
            return softmax(scores, axis=1)
        prob = expit(scores)
        return prob / prob.sum(axis=1, keepdims=True)


class LinearSVM(_SGDLinearClassifier):
    """One-vs-rest linear SVM trained online with Pegasos-style subgradient steps.

    Parameters
    ----------
    alpha : float, default 1e-4
        The regularisation ``lambda`` of Pegasos (``alpha`` of ``SGDClassifier``).
    learning_rate : {"optimal", "pegasos", "invscaling", "constant"}, default "optimal"
        "pegasos" is ``1 / (alpha t)`` exactly as in the paper; "optimal" shifts it by
        Bottou's ``t0`` (module docstring), which behaves better with an intercept.
    eta0, power_t : float
        For "constant" and "invscaling".
    project : bool, default False
        Pegasos' optional projection of each class's weights onto ``||w|| <= 1/sqrt(alpha)``
        after every step (the ball that contains the optimum).
    fit_intercept : bool, default True
        Pegasos has no bias; set False for the paper's algorithm.
    dtype : {"float64", "float32"}, default "float64"

    Attributes
    ----------
    classes_, coef_ (K, D), intercept_ (K,), t_, n_features_in_ : as
    :class:`OnlineLogisticRegression`.
    """

    def __init__(
        self,
        alpha: float = 1e-4,
        learning_rate: str = "optimal",
        eta0: float = 0.01,
        power_t: float = 0.5,
        project: bool = False,
        fit_intercept: bool = True,
        dtype: str = "float64",
    ) -> None:
        super().__init__(alpha, learning_rate, eta0, power_t, fit_intercept, dtype)
        self.project = project

    def _dloss(self, p: np.ndarray, k: int) -> np.ndarray:
        sign = -np.ones_like(p)
        sign[k] = 1.0  # y_j = +1 for the true class, -1 for the others
        return np.where(sign * p <= 1.0, -sign, 0.0)  # subgradient of max(0, 1 - y_j p_j)

    def _project(self) -> None:
        if self.project and self.alpha > 0:
            norms = np.linalg.norm(self.coef_, axis=1)
            radius = 1.0 / np.sqrt(self.alpha)
            scale = np.minimum(1.0, radius / np.maximum(norms, np.finfo(float).tiny))
            self.coef_ *= scale[:, None].astype(self.coef_.dtype)
