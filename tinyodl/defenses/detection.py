"""Checking the data before the device learns from it (chapter 11, textbook section 12.6.6).

Two checks from the textbook, both calibrated on a small *trusted* set (data the vendor
verified, shipped with the model):

* **Input validation** (:class:`InputValidator`): the cosine distance of an input's features
  to the trusted mean features of its class, ``1 - <f, mu_c> / (||f|| ||mu_c||)``. Inputs
  farther than the trusted set's 99th percentile are rejected and *quarantined*
  (``quarantine_``), never trained on -- noise, garbage frames, off-distribution inserts.
* **Anomaly detection on the training stream**: a class-conditional PCA
  (:class:`PCADetector`) fitted on trusted features; an example labelled ``c`` is scored by
  its reconstruction error in class ``c``'s principal subspace (relative to the trusted
  error of that class), so a "7" labelled "1" scores high even though the image is clean.
  A batch's statistic is the fraction of its examples scoring above the trusted 95th
  percentile (about 5% on clean data whatever the batch, near 100% on a flipped batch;
  a fraction is robust to the one odd clean example that would dominate a mean).
  :class:`CUSUM` (Page 1954) accumulates small shifts of that statistic,
  ``S_t = max(0, S_{t-1} + z_t - k)`` on the standardised ``z_t``, and raises an alarm
  while ``S_t > h``. :class:`StreamGuard` drops a batch before the update when its
  statistic exceeds the trusted threshold or the CUSUM is in alarm;
  :func:`train_on_stream` is the guarded on-device training loop.

The benchmark measures the accuracy these recover under label flipping
(``tinyodl bench security``, experiment ``label_flipping``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

FeatureFn = Callable[[np.ndarray], np.ndarray]


def flatten_features(x: np.ndarray) -> np.ndarray:
    """The default features: the raw input, flattened to (N, D) float64."""
    return np.asarray(x, np.float64).reshape(len(x), -1)


def model_features(model: Any, part: str = "features", batch_size: int = 500) -> FeatureFn:
    """Features from ``model[part]`` in evaluation mode (e.g. the body before the head)."""
    body = model[part]

    def fn(x: np.ndarray) -> np.ndarray:
        out = [
            body.forward(x[i : i + batch_size], train=False) for i in range(0, len(x), batch_size)
        ]
        return np.concatenate(out).reshape(len(x), -1).astype(np.float64)

    return fn


def _labels_check(who: str, y: np.ndarray | None, n: int) -> np.ndarray | None:
    if y is None:
        return None
    y = np.asarray(y)
    if y.shape != (n,) or y.dtype.kind not in "iu":
        raise ValueError(f"{who}: labels must be int of shape ({n},), got {y.shape} {y.dtype}")
    return y


# ----------------------------------------------------------------------------- input validation


class InputValidator:
    """Reject inputs far (cosine distance) from the trusted data; quarantine them.

    The score of an input is its mean cosine distance ``1 - cos(f, t)`` to its ``k``
    nearest trusted examples ``t`` (of the claimed class when labels are given), in the
    feature space of ``features``. ``reference="centroids"`` uses the distance to the
    trusted class means instead: cheaper (K vectors instead of the trusted set), but one
    mean per class is a coarse summary and lets more off-distribution inputs through.

    Parameters
    ----------
    features : callable, optional
        ``x -> (N, F)`` features (default :func:`flatten_features`, the raw pixels).
    quantile : float, default 0.99
        Rejection threshold: this quantile of the trusted examples' own scores (each
        scored against the *other* trusted examples, leave-one-out).
    k : int, default 5
        Neighbours averaged (``reference="neighbours"``).
    reference : {"neighbours", "centroids"}

    Attributes
    ----------
    reference_ : ndarray (M, F)
        Unit-length trusted features (or class means); ``reference_labels_`` their classes.
    threshold_ : float
    quarantine_ : list of (x, y) pairs of rejected inputs, in arrival order
    """

    def __init__(
        self,
        features: FeatureFn | None = None,
        quantile: float = 0.99,
        k: int = 5,
        reference: str = "neighbours",
    ) -> None:
        if not 0 < quantile <= 1:
            raise ValueError(f"InputValidator: quantile must be in (0, 1], got {quantile}")
        if reference not in ("neighbours", "centroids") or k < 1:
            raise ValueError(
                f"InputValidator: reference must be 'neighbours' or 'centroids' and k >= 1, "
                f"got {reference!r}, {k}"
            )
        self.features = features or flatten_features
        self.quantile, self.k, self.reference = float(quantile), int(k), reference

    def fit(self, x: np.ndarray, y: np.ndarray) -> InputValidator:
        """Trusted features (or class means) and the threshold; returns self."""
        y = _labels_check("InputValidator.fit", y, len(x))
        f = self.features(x)
        if self.reference == "centroids":
            classes = np.unique(y)
            means = np.stack([f[y == c].mean(axis=0) for c in classes])
            self.reference_, self.reference_labels_ = _unit(means), classes
            trusted = self._scores(f, y)
        else:
            self.reference_, self.reference_labels_ = _unit(f), y
            trusted = self._scores(f, y, leave_one_out=True)
        self.threshold_ = float(np.quantile(trusted, self.quantile))
        self.quarantine_: list[tuple[np.ndarray, np.ndarray | None]] = []
        return self

    def _scores(self, f: np.ndarray, y: np.ndarray | None, leave_one_out: bool = False):
        dist = 1.0 - _unit(f) @ self.reference_.T  # (N, M) cosine distances
        if leave_one_out:
            np.fill_diagonal(dist, np.inf)
        if y is not None:  # only the claimed class's references count
            dist = np.where(y[:, None] == self.reference_labels_[None, :], dist, np.inf)
        k = 1 if self.reference == "centroids" else self.k
        nearest = np.sort(dist, axis=1)[:, :k]
        nearest = np.where(np.isfinite(nearest), nearest, 2.0)  # unknown class: farthest
        return nearest.mean(axis=1)

    def score(self, x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        """Cosine distance score (N,): higher is farther from the trusted data."""
        return self._scores(self.features(x), _labels_check("InputValidator", y, len(x)))

    def validate(self, x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        """Accepted (bool (N,)): score at most ``threshold_``."""
        return self.score(x, y) <= self.threshold_

    def filter(self, x: np.ndarray, y: np.ndarray | None = None):
        """``(x, y)`` of the accepted inputs; the rejected ones go to ``quarantine_``."""
        ok = self.validate(x, y)
        if not ok.all():
            self.quarantine_.append((x[~ok], None if y is None else y[~ok]))
        return x[ok], (None if y is None else y[ok])

    @property
    def quarantined(self) -> int:
        """How many inputs have been quarantined."""
        return int(sum(len(q[0]) for q in self.quarantine_))


def _unit(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, np.float64)
    return f / (np.linalg.norm(f, axis=1, keepdims=True) + 1e-12)


# ----------------------------------------------------------------------------- PCA


class PCADetector:
    """Class-conditional PCA: reconstruction error in the claimed class's subspace.

    Parameters
    ----------
    n_components : int, default 10
        Principal directions kept per class (at most the class's trusted count - 1).

    Attributes
    ----------
    means_, components_ : dict class -> (F,), (k, F)
    scale_ : dict class -> float
        Median trusted reconstruction error of the class (scores are relative to it).
    """

    def __init__(self, n_components: int = 10) -> None:
        if n_components < 1:
            raise ValueError(f"PCADetector: n_components must be >= 1, got {n_components}")
        self.n_components = int(n_components)

    def fit(
        self,
        f: np.ndarray,
        y: np.ndarray,
        f_cal: np.ndarray | None = None,
        y_cal: np.ndarray | None = None,
    ) -> PCADetector:
        """Fit on trusted features (N, F) and labels (N,); returns self.

        ``scale_`` (each class's typical error) is the median error of held-out trusted
        examples ``f_cal, y_cal`` when given -- in-sample errors are too small, since the
        subspace was fitted to them -- else of the fitting examples.
        """
        y = _labels_check("PCADetector.fit", y, len(f))
        self.means_, self.components_, self.scale_ = {}, {}, {}
        for c in np.unique(y):
            fc = np.asarray(f[y == c], np.float64)
            if len(fc) < 2:
                raise ValueError(f"PCADetector.fit: class {c} has {len(fc)} trusted example(s)")
            mu = fc.mean(axis=0)
            _, _, vt = np.linalg.svd(fc - mu, full_matrices=False)
            self.means_[int(c)] = mu
            self.components_[int(c)] = vt[: min(self.n_components, len(fc) - 1)]
            self.scale_[int(c)] = 1.0
        if f_cal is None:
            f_cal, y_cal = f, y
        y_cal = _labels_check("PCADetector.fit", y_cal, len(f_cal))
        raw = self.score(f_cal, y_cal)
        for c in self.means_:
            errors = raw[y_cal == c]
            self.scale_[c] = float(np.median(errors)) if len(errors) else 1.0
            self.scale_[c] = self.scale_[c] or 1.0
        return self

    def score(self, f: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Relative squared reconstruction error (N,) of each example in its class subspace.

        Labels never seen in the trusted set score ``inf``.
        """
        y = _labels_check("PCADetector.score", y, len(f))
        out = np.full(len(f), np.inf)
        for c in np.unique(y):
            if int(c) not in self.means_:
                continue
            rows = y == c
            centred = np.asarray(f[rows], np.float64) - self.means_[int(c)]
            v = self.components_[int(c)]
            resid = centred - (centred @ v.T) @ v
            out[rows] = (resid**2).sum(axis=1) / self.scale_[int(c)]
        return out


# ----------------------------------------------------------------------------- CUSUM


class CUSUM:
    """One-sided CUSUM chart on a standardised statistic (detects upward shifts).

    ``z_t = (s_t - mean) / std``; ``S_t = max(0, S_{t-1} + z_t - k)``; alarm while
    ``S_t > h``. ``k`` is half the shift (in standard deviations) worth detecting, ``h``
    trades false alarms against delay (k = 0.5, h = 5 is the textbook choice).
    """

    def __init__(self, k: float = 0.5, h: float = 5.0, mean: float = 0.0, std: float = 1.0) -> None:
        if not (k >= 0 and h > 0 and std > 0):
            raise ValueError(f"CUSUM: need k >= 0, h > 0, std > 0; got {k}, {h}, {std}")
        self.k, self.h, self.mean, self.std = float(k), float(h), float(mean), float(std)
        self.reset()

    def fit(self, statistics: np.ndarray) -> CUSUM:
        """In-control mean and standard deviation from trusted statistics; returns self."""
        s = np.asarray(statistics, np.float64)
        self.mean, self.std = float(s.mean()), float(s.std()) or 1.0
        return self.reset()

    def reset(self) -> CUSUM:
        self.value_, self.history_ = 0.0, []
        return self

    def update(self, statistic: float) -> bool:
        """Add one observation; returns whether the chart is in alarm."""
        z = (float(statistic) - self.mean) / self.std
        self.value_ = max(0.0, self.value_ + z - self.k)
        self.history_.append(self.value_)
        return self.value_ > self.h


# ----------------------------------------------------------------------------- stream guard


class StreamGuard:
    """Drop suspected poisoned batches before they reach the optimizer.

    Parameters
    ----------
    features : callable, optional
        ``x -> (N, F)`` (default :func:`flatten_features`; a frozen body also works).
    n_components : int, default 10
        Of the :class:`PCADetector`.
    example_quantile : float, default 0.95
        An example is suspicious above this quantile of the trusted scores.
    quantile : float, default 0.99
        Batch threshold: this quantile of the statistic over resampled trusted batches.
    cusum : CUSUM or None, default CUSUM()
        Fitted on the trusted batch statistics; ``None`` disables it.

    Attributes
    ----------
    example_threshold_, threshold_ : float
    log_ : list of dict
        One entry per batch seen: ``statistic``, ``admitted``, ``alarm``.
    """

    def __init__(
        self,
        features: FeatureFn | None = None,
        n_components: int = 10,
        example_quantile: float = 0.95,
        quantile: float = 0.99,
        cusum: CUSUM | None | str = "default",
    ) -> None:
        self.features = features or flatten_features
        self.detector = PCADetector(n_components)
        self.example_quantile, self.quantile = float(example_quantile), float(quantile)
        self.cusum = CUSUM() if cusum == "default" else cusum

    def statistic(self, x: np.ndarray, y: np.ndarray) -> float:
        """The batch statistic: fraction of examples above ``example_threshold_``."""
        return float(np.mean(self.detector.score(self.features(x), y) > self.example_threshold_))

    def fit(
        self, x: np.ndarray, y: np.ndarray, batch_size: int, num_batches: int = 500, seed: int = 0
    ) -> StreamGuard:
        """Fit the detector on trusted data; calibrate on resampled trusted batches.

        The trusted set is split in two halves: the PCA is fitted on one; the example
        threshold and the batch statistics (for the batch threshold and the CUSUM) come
        from the other, so no threshold is set on the data the subspaces were fitted to.
        """
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(x))
        fit_idx, cal_idx = order[: len(x) // 2], order[len(x) // 2 :]
        f = self.features(x)
        self.detector.fit(f[fit_idx], y[fit_idx], f[cal_idx], y[cal_idx])
        scores = self.detector.score(f[cal_idx], y[cal_idx])
        self.example_threshold_ = float(np.quantile(scores, self.example_quantile))
        high = scores > self.example_threshold_
        stats = [
            float(high[rng.choice(len(cal_idx), size=batch_size, replace=True)].mean())
            for _ in range(num_batches)
        ]
        self.threshold_ = float(np.quantile(stats, self.quantile))
        if self.cusum is not None:
            self.cusum.fit(np.array(stats))
        self.log_: list[dict[str, Any]] = []
        return self

    def admit(self, x: np.ndarray, y: np.ndarray) -> bool:
        """Whether to train on this batch (logged in ``log_``).

        A batch above the threshold is dropped outright and does not enter the CUSUM (it
        would keep the chart in alarm long after an isolated poisoned batch); the CUSUM
        accumulates the batches that pass, to catch a drift too small for the threshold.
        """
        s = self.statistic(x, y)
        over = s > self.threshold_
        alarm = self.cusum.update(s) if (self.cusum is not None and not over) else False
        ok = not over and not alarm
        self.log_.append({"statistic": s, "admitted": ok, "alarm": alarm})
        return ok


def train_on_stream(
    model: Any,
    optimizer: Any,
    stream: Iterable[tuple[np.ndarray, np.ndarray]],
    guard: StreamGuard | None = None,
    loss: Callable | None = None,
) -> dict[str, int]:
    """On-device training on a stream of batches, each checked by ``guard`` first.

    One optimizer step per admitted batch (softmax cross-entropy unless ``loss`` is given).
    Returns ``{"used", "dropped"}`` batch counts.
    """
    from tinyodl.nn import softmax_cross_entropy

    loss = loss or softmax_cross_entropy
    used = dropped = 0
    if not getattr(model, "training", True):
        model.train()  # as fit: sub-layers kept in evaluation mode stay so
    for xb, yb in stream:
        if guard is not None and not guard.admit(xb, yb):
            dropped += 1
            continue
        optimizer.zero_grad()
        _, d = loss(model.forward(xb), yb)
        model.backward(d)
        optimizer.step()
        used += 1
    return {"used": used, "dropped": dropped}


__all__ = [
    "CUSUM",
    "InputValidator",
    "PCADetector",
    "StreamGuard",
    "flatten_features",
    "model_features",
    "train_on_stream",
]
