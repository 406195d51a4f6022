"""Sample selection: which training examples to keep when only a few fit on the device.

Every selector returns indices into the pool; the ``*_per_class`` variants split a budget
of ``n`` examples evenly between the classes (a class-balanced buffer, as in iCaRL) and run
the selector inside each class.

* :func:`random_selection` -- the baseline every method must beat at the same budget.
* :func:`herding` (Welling, ICML 2009, "Herding dynamical weights to learn"; the exemplar
  selection of iCaRL, Rebuffi et al. 2017): pick, one at a time, the example that brings
  the mean of the selected features closest to the mean of all features,
  ``i_k = argmin_i || mu - (s_{k-1} + f_i) / k ||``. The mean of the first ``k`` picks
  approaches ``mu`` like ``O(1/k)`` instead of ``O(1/sqrt(k))`` for a random sample.
* :func:`k_center_greedy` (Sener & Savarese, ICLR 2018, "Active learning for convolutional
  neural networks: a core-set approach"): repeatedly add the example farthest from every
  example chosen so far, ``i_k = argmax_i min_{j in S} ||f_i - f_j||``. The covering radius
  it reaches is at most twice the best possible (Gonzalez 1985): a 2-approximation of the
  k-center problem.
* :func:`loss_selection` with :func:`el2n_scores` (Paul et al., NeurIPS 2021, "Deep learning
  on a data diet"): score each example by the error ``|| softmax(f(x)) - onehot(y) ||_2`` of
  a briefly trained model and keep the hardest -- or the easiest: Sorscher et al. (NeurIPS
  2022, "Beyond neural scaling laws") show that with very little data, easy examples are
  the better choice, and hard ones only pay off once the budget is large.

Chapter 07 (data compression).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tinyodl.nn.utils import SeedLike, as_generator


def _check_n(n: int, pool: int, fn: str) -> int:
    if not 1 <= n <= pool:
        raise ValueError(f"{fn}: n must be between 1 and the pool size {pool}, got {n}")
    return int(n)


def random_selection(n_pool: int, n: int, seed: SeedLike = 0) -> np.ndarray:
    """``n`` distinct indices of a pool of ``n_pool``, uniformly at random."""
    n = _check_n(n, n_pool, "random_selection")
    return as_generator(seed).choice(n_pool, size=n, replace=False)


def herding(features: np.ndarray, n: int) -> np.ndarray:
    """Indices of ``n`` examples chosen by herding on ``features`` (N, F), in pick order."""
    features = np.asarray(features, dtype=np.float64)
    n = _check_n(n, len(features), "herding")
    mu = features.mean(axis=0)
    chosen: list[int] = []
    total = np.zeros_like(mu)
    available = np.ones(len(features), dtype=bool)
    for k in range(1, n + 1):
        gap = np.linalg.norm(mu - (total + features) / k, axis=1)
        gap[~available] = np.inf
        i = int(np.argmin(gap))
        chosen.append(i)
        available[i] = False
        total += features[i]
    return np.array(chosen, dtype=np.int64)


def k_center_greedy(features: np.ndarray, n: int, seed: SeedLike = 0) -> np.ndarray:
    """Indices of ``n`` examples chosen by the greedy k-center rule, in pick order.

    The first example is drawn at random (``seed``); each next one is the farthest from
    all chosen so far (Euclidean distance on ``features`` (N, F)).
    """
    features = np.asarray(features, dtype=np.float64)
    n = _check_n(n, len(features), "k_center_greedy")
    first = int(as_generator(seed).integers(len(features)))
    chosen = [first]
    nearest = np.linalg.norm(features - features[first], axis=1)  # distance to the set
    nearest[first] = -np.inf  # chosen: never again (duplicates of it are still at distance 0)
    for _ in range(n - 1):
        i = int(np.argmax(nearest))
        chosen.append(i)
        nearest = np.minimum(nearest, np.linalg.norm(features - features[i], axis=1))
        nearest[i] = -np.inf
    return np.array(chosen, dtype=np.int64)


def covering_radius(features: np.ndarray, chosen: np.ndarray) -> float:
    """``max_i min_{j in chosen} ||f_i - f_j||``: how far the worst example is from the set."""
    features = np.asarray(features, dtype=np.float64)
    d = np.linalg.norm(features[:, None, :] - features[None, np.asarray(chosen), :], axis=2)
    return float(d.min(axis=1).max())


def el2n_scores(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """EL2N score ``|| p - onehot(y) ||_2`` per example (larger = harder).

    Parameters
    ----------
    probabilities : ndarray (N, K)
        Softmax outputs of a (briefly trained) model.
    labels : ndarray of int (N,)
    """
    p = np.array(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    if p.ndim != 2 or labels.shape != (len(p),):
        raise ValueError(
            f"el2n_scores: expected probabilities (N, K) and labels (N,), got {p.shape} and "
            f"{labels.shape}"
        )
    p[np.arange(len(p)), labels] -= 1.0
    return np.linalg.norm(p, axis=1)


def loss_selection(scores: np.ndarray, n: int, keep: str = "hard") -> np.ndarray:
    """Indices of the ``n`` examples with the largest (``keep="hard"``) or smallest
    (``"easy"``) scores, hardest (or easiest) first; ties broken by index."""
    scores = np.asarray(scores, dtype=np.float64)
    n = _check_n(n, len(scores), "loss_selection")
    if keep not in ("hard", "easy"):
        raise ValueError(f"loss_selection: keep must be 'hard' or 'easy', got {keep!r}")
    order = np.argsort(-scores if keep == "hard" else scores, kind="stable")
    return order[:n]


def per_class(
    labels: np.ndarray, n: int, select: Callable[[np.ndarray, int], np.ndarray]
) -> np.ndarray:
    """Split a budget of ``n`` examples evenly over the classes and select in each.

    Parameters
    ----------
    labels : ndarray (N,)
    n : int
        Total number of examples; class ``c`` (in sorted order) gets ``n // K`` plus one of
        the ``n % K`` left over for the first classes (capped at the class size).
    select : callable (indices of the class, count) -> chosen positions in those indices
        E.g. ``lambda idx, m: herding(features[idx], m)``.

    Returns
    -------
    ndarray of int
        Indices into the pool, class by class.
    """
    labels = np.asarray(labels)
    classes = np.unique(labels)
    n = _check_n(n, len(labels), "per_class")
    out = []
    for i, c in enumerate(classes):
        idx = np.flatnonzero(labels == c)
        m = min(len(idx), n // len(classes) + (1 if i < n % len(classes) else 0))
        if m > 0:
            out.append(idx[np.asarray(select(idx, m), dtype=np.int64)])
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
