"""Membership inference and model extraction (chapter 11, textbook section 12.6).

**Membership inference** asks: was this example in the training set? A model usually has a
lower loss on the examples it was trained on, so

* the **loss-threshold attack** (Yeom et al. 2018) says "member" when ``L(x, y) <= tau``
  (:func:`loss_threshold_attack`);
* **shadow models** (Shokri et al. 2017) train look-alike models on data the attacker owns,
  where membership is known, and learn from their outputs what a member's output looks like
  (:class:`ShadowModelAttack`, a logistic regression on ``[log p_y, max log p, entropy]``).

An attack is scored by its ROC AUC and its **advantage** ``TPR - FPR`` (best threshold).
Differential privacy bounds it: an ``eps``-DP training algorithm gives an advantage at most
``e^eps - 1`` (Yeom et al., Theorem 1); for ``(eps, delta)``-DP the hypothesis-testing view
(Kairouz et al. 2015) gives the tighter ``(e^eps - 1 + 2 delta) / (e^eps + 1)``
(:func:`dp_advantage_bound`). The chapter measures both beside a DP-SGD model (chapter 10).

**Model extraction** (Tramer et al. 2016): query the victim on inputs the attacker chooses,
train a copy on its answers, and measure the copy's *agreement* with the victim on fresh
inputs (:func:`extract_model`, :func:`agreement`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.stats import rankdata

from tinyodl.attacks.estimator import BlackBox, as_classifier
from tinyodl.nn import log_softmax

# ----------------------------------------------------------------------------- scoring


def roc_auc(scores_members: np.ndarray, scores_nonmembers: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a member > score of a non-member), ties 1/2.

    Computed from ranks (Mann-Whitney U), so it is exact and O(n log n).
    """
    a, b = np.asarray(scores_members, np.float64), np.asarray(scores_nonmembers, np.float64)
    if len(a) == 0 or len(b) == 0:
        raise ValueError("roc_auc: need at least one member and one non-member score")
    ranks = rankdata(np.concatenate([a, b]))  # ties get their average rank
    u = ranks[: len(a)].sum() - len(a) * (len(a) + 1) / 2.0
    return float(u / (len(a) * len(b)))


def max_advantage(scores_members: np.ndarray, scores_nonmembers: np.ndarray) -> tuple[float, float]:
    """``max_tau TPR(tau) - FPR(tau)`` for "member if score >= tau", and the best ``tau``."""
    a, b = np.asarray(scores_members, np.float64), np.asarray(scores_nonmembers, np.float64)
    taus = np.unique(np.concatenate([a, b, [np.inf]]))
    tpr = 1.0 - np.searchsorted(np.sort(a), taus, side="left") / len(a)
    fpr = 1.0 - np.searchsorted(np.sort(b), taus, side="left") / len(b)
    i = int(np.argmax(tpr - fpr))
    return float(tpr[i] - fpr[i]), float(taus[i])


def advantage_at(scores_members, scores_nonmembers, tau: float) -> float:
    """``TPR - FPR`` of the rule "member if score >= tau"."""
    a, b = np.asarray(scores_members), np.asarray(scores_nonmembers)
    return float(np.mean(a >= tau) - np.mean(b >= tau))


def dp_advantage_bound(epsilon: float, delta: float = 0.0) -> dict[str, float]:
    """Upper bounds on a membership attack's advantage against an (eps, delta)-DP model.

    Returns ``{"yeom": min(1, e^eps - 1), "tight": min(1, (e^eps - 1 + 2 delta) / (e^eps +
    1))}``. The first is Yeom et al.'s bound for pure eps-DP; the second follows from the
    hypothesis-testing characterisation ``TPR <= e^eps FPR + delta`` and ``1 - FPR <= e^eps
    (1 - TPR) + delta``.
    """
    e = float(np.exp(epsilon))
    return {"yeom": min(1.0, e - 1.0), "tight": min(1.0, (e - 1.0 + 2.0 * delta) / (e + 1.0))}


# ----------------------------------------------------------------------------- loss threshold


def example_losses(model: Any, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-example cross-entropy (N,) float64 of ``model`` (evaluation mode)."""
    return as_classifier(model, clip_values=None).loss(x, y)


def loss_threshold_attack(
    model: Any,
    x_members: np.ndarray,
    y_members: np.ndarray,
    x_nonmembers: np.ndarray,
    y_nonmembers: np.ndarray,
    tau: float | None = None,
) -> dict[str, float]:
    """Yeom et al.'s attack: "member" when the loss is at most ``tau``.

    Parameters
    ----------
    tau : float, optional
        The threshold of the fixed-threshold advantage (default: the mean loss on the
        members, which Yeom et al. assume the attacker knows).

    Returns
    -------
    dict with ``auc``, ``advantage`` (best threshold, an optimistic estimate on these
    sets), ``advantage_at_tau`` and ``tau``.
    """
    lm = example_losses(model, x_members, y_members)
    ln = example_losses(model, x_nonmembers, y_nonmembers)
    tau = float(lm.mean()) if tau is None else float(tau)
    best, _ = max_advantage(-lm, -ln)
    return {
        "auc": roc_auc(-lm, -ln),
        "advantage": best,
        "advantage_at_tau": advantage_at(-lm, -ln, -tau),
        "tau": tau,
    }


# ----------------------------------------------------------------------------- shadow models


def attack_features(model: Any, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``[log p_y, max_j log p_j, entropy]`` (N, 3): what a shadow attack model sees."""
    logp = log_softmax(as_classifier(model, clip_values=None).predict(x).astype(np.float64))
    p = np.exp(logp)
    return np.stack([logp[np.arange(len(y)), y], logp.max(axis=1), -(p * logp).sum(axis=1)], axis=1)


class ShadowModelAttack:
    """Shokri et al.'s membership attack with ``num_shadows`` shadow models.

    Parameters
    ----------
    train_fn : callable
        ``train_fn(x, y, seed) -> model``: trains a model the way the victim was trained
        (same architecture and recipe, as the attack assumes).
    num_shadows : int, default 4
    seed : int, default 0

    Each shadow model gets a random half of the attacker's data as members; the other half
    are its non-members. A logistic regression on :func:`attack_features` learns to tell
    them apart (``coef_``, ``intercept_``; features standardised with ``mean_``, ``scale_``).
    """

    def __init__(self, train_fn: Callable[..., Any], num_shadows: int = 4, seed: int = 0) -> None:
        self.train_fn, self.num_shadows, self.seed = train_fn, int(num_shadows), int(seed)

    def fit(self, x: np.ndarray, y: np.ndarray) -> ShadowModelAttack:
        """Train the shadow models on halves of ``(x, y)`` and the attack model; returns self."""
        feats, labels = [], []
        for k in range(self.num_shadows):
            rng = np.random.default_rng([self.seed, k])
            inside = np.zeros(len(x), dtype=bool)
            inside[rng.permutation(len(x))[: len(x) // 2]] = True
            shadow = self.train_fn(x[inside], y[inside], int(rng.integers(2**31)))
            for mask, label in ((inside, 1.0), (~inside, 0.0)):
                feats.append(attack_features(shadow, x[mask], y[mask]))
                labels.append(np.full(mask.sum(), label))
        f, t = np.concatenate(feats), np.concatenate(labels)
        self.mean_, self.scale_ = f.mean(axis=0), f.std(axis=0) + 1e-12
        self.coef_, self.intercept_ = _logistic_regression((f - self.mean_) / self.scale_, t)
        return self

    def score(self, model: Any, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Membership scores (N,): the attack model's log-odds of "member"."""
        f = (attack_features(model, x, y) - self.mean_) / self.scale_
        return f @ self.coef_ + self.intercept_

    def evaluate(self, model, x_members, y_members, x_nonmembers, y_nonmembers) -> dict:
        """``{"auc", "advantage", "advantage_at_0"}`` against ``model`` (0 = log-odds 0)."""
        sm = self.score(model, x_members, y_members)
        sn = self.score(model, x_nonmembers, y_nonmembers)
        return {
            "auc": roc_auc(sm, sn),
            "advantage": max_advantage(sm, sn)[0],
            "advantage_at_0": advantage_at(sm, sn, 0.0),
        }


def _logistic_regression(f: np.ndarray, t: np.ndarray, l2: float = 1e-4, iters: int = 50):
    """Newton's method for L2-regularised logistic regression; returns (coef, intercept)."""
    a = np.hstack([f, np.ones((len(f), 1))])
    w = np.zeros(a.shape[1])
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(a @ w, -50, 50)))
        grad = a.T @ (p - t) / len(t) + l2 * w
        hess = (a * (p * (1 - p))[:, None]).T @ a / len(t) + l2 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return w[:-1], float(w[-1])


# ----------------------------------------------------------------------------- extraction


def extract_model(
    victim: Any,
    student: Any,
    x_queries: np.ndarray,
    train_fn: Callable[[Any, np.ndarray, np.ndarray], Any],
    output: str = "labels",
) -> tuple[Any, int]:
    """Steal a model: label ``x_queries`` with the victim and train ``student`` on them.

    Parameters
    ----------
    victim : BlackBox or model
    student : tinyodl model
        The attacker's architecture (need not match the victim's).
    x_queries : ndarray (Q, ...)
        Inputs the attacker chooses (unlabelled).
    train_fn : callable
        ``train_fn(student, x, targets)`` trains the student in place (targets are int
        labels, or probabilities (Q, C) with ``output="scores"``).
    output : {"labels", "scores"}
        What the victim reveals.

    Returns
    -------
    student, queries : the trained student and the number of victim queries used
    """
    box = victim if isinstance(victim, BlackBox) else BlackBox(victim, output)
    before = box.queries_
    targets = (
        box.labels(x_queries) if output == "labels" else box.scores(x_queries).astype(np.float32)
    )
    train_fn(student, x_queries, targets)
    return student, box.queries_ - before


def agreement(model_a: Any, model_b: Any, x: np.ndarray) -> float:
    """Fraction of inputs on which two models predict the same class."""
    pa = as_classifier(model_a, None).predict_labels(x)
    pb = as_classifier(model_b, None).predict_labels(x)
    return float(np.mean(pa == pb))


__all__ = [
    "ShadowModelAttack",
    "advantage_at",
    "agreement",
    "attack_features",
    "dp_advantage_bound",
    "example_losses",
    "extract_model",
    "loss_threshold_attack",
    "max_advantage",
    "roc_auc",
]
