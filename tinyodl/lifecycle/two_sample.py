"""Two-sample tests for data drift: is this window of inputs from the reference distribution?

No labels are needed: the device keeps a *reference* sample of features (or activations)
from the deployment's first, trusted window and compares every new window with it.

* :func:`mmd_test` -- the kernel maximum mean discrepancy (Gretton, Borgwardt, Rasch,
  Schölkopf & Smola, JMLR 2012, "A kernel two-sample test"): the unbiased estimate of
  MMD² (their Lemma 6, eq. 3) with a Gaussian kernel, its p-value from a permutation test
  (seeded).
* :func:`ks_test` -- one Kolmogorov–Smirnov test per feature (``scipy.stats.ks_2samp``),
  corrected for testing many features at once by Holm's step-down method (Holm 1979) or
  Bonferroni's.
* :class:`WindowDetector` -- either test run on consecutive windows of a stream, with the
  same ``update -> bool`` interface as the streaming detectors.

Chapter 01 and :mod:`tinyodl.lifecycle`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "TestResult",
    "WindowDetector",
    "bonferroni",
    "gaussian_kernel",
    "holm",
    "ks_test",
    "median_bandwidth",
    "mmd2_unbiased",
    "mmd_test",
]


@dataclass(frozen=True)
class TestResult:
    """Outcome of a two-sample test: ``statistic``, ``p_value`` and ``drift`` (p < alpha).

    ``details`` holds test-specific arrays (per-feature p-values for KS, the bandwidth for
    MMD).
    """

    statistic: float
    p_value: float
    drift: bool
    details: dict


def _samples(X, Y, who: str) -> tuple[np.ndarray, np.ndarray]:
    X, Y = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if Y.ndim == 1:
        Y = Y[:, None]
    if X.ndim != 2 or Y.ndim != 2 or X.shape[1] != Y.shape[1]:
        raise ValueError(
            f"{who}: expected two samples (N, D) and (M, D) with the same D, "
            f"got {X.shape} and {Y.shape}"
        )
    if len(X) < 2 or len(Y) < 2:
        raise ValueError(f"{who}: each sample needs >= 2 rows, got {len(X)} and {len(Y)}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(Y))):
        raise ValueError(f"{who}: the samples contain nan or inf")
    return X, Y


def _check_alpha(alpha: float, who: str) -> float:
    if not 0 < alpha < 1:
        raise ValueError(f"{who}: alpha must be in (0, 1), got {alpha}")
    return float(alpha)


# ----------------------------------------------------------------------------- MMD


def _sq_dists(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    d = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * A @ B.T
    return np.maximum(d, 0.0)


def median_bandwidth(Z: np.ndarray) -> float:
    """The median heuristic: the median pairwise distance of the rows of ``Z`` (> 0)."""
    d = _sq_dists(Z, Z)[np.triu_indices(len(Z), k=1)]
    med = float(np.sqrt(np.median(d))) if len(d) else 0.0
    return med if med > 0 else 1.0


def gaussian_kernel(A: np.ndarray, B: np.ndarray, bandwidth: float) -> np.ndarray:
    r""":math:`k(a, b) = \exp(-\|a - b\|^2 / (2\sigma^2))`, (N, D), (M, D) -> (N, M)."""
    return np.exp(-_sq_dists(A, B) / (2.0 * bandwidth**2))


def _mmd2_from_kernel(K: np.ndarray, n: int) -> float:
    """Unbiased MMD² of the first ``n`` rows against the rest, from the pooled kernel."""
    m = len(K) - n
    Kxx, Kyy, Kxy = K[:n, :n], K[n:, n:], K[:n, n:]
    xx = (Kxx.sum() - np.trace(Kxx)) / (n * (n - 1))
    yy = (Kyy.sum() - np.trace(Kyy)) / (m * (m - 1))
    return float(xx + yy - 2.0 * Kxy.mean())


def mmd2_unbiased(X, Y, bandwidth: float | None = None) -> float:
    r"""Unbiased MMD² (Gretton et al. 2012, eq. 3) with a Gaussian kernel.

    .. math::
        \widehat{\mathrm{MMD}}^2_u = \frac{1}{n(n-1)}\sum_{i \ne j} k(x_i, x_j)
        + \frac{1}{m(m-1)}\sum_{i \ne j} k(y_i, y_j) - \frac{2}{nm}\sum_{i,j} k(x_i, y_j)

    Parameters
    ----------
    X, Y : array (N, D), (M, D)
    bandwidth : float, optional
        :math:`\sigma`; default: :func:`median_bandwidth` of the pooled sample.
    """
    X, Y = _samples(X, Y, "mmd2_unbiased")
    Z = np.concatenate([X, Y])
    sigma = median_bandwidth(Z) if bandwidth is None else float(bandwidth)
    if not sigma > 0:
        raise ValueError(f"mmd2_unbiased: bandwidth must be > 0, got {bandwidth}")
    return _mmd2_from_kernel(gaussian_kernel(Z, Z, sigma), len(X))


def mmd_test(
    X,
    Y,
    alpha: float = 0.01,
    n_permutations: int = 200,
    bandwidth: float | None = None,
    seed: int | np.random.Generator = 0,
) -> TestResult:
    """Permutation test of "X and Y come from the same distribution" with MMD².

    The pooled sample is split at random ``n_permutations`` times (``numpy.random.
    default_rng(seed)``); the p-value is ``(1 + #{permuted MMD² >= observed}) / (1 + B)``,
    valid for any sample size. The kernel matrix is computed once.

    Returns
    -------
    TestResult
        ``statistic`` = MMD², ``details = {"bandwidth": sigma}``.
    """
    alpha = _check_alpha(alpha, "mmd_test")
    if int(n_permutations) < 1:
        raise ValueError(f"mmd_test: n_permutations must be >= 1, got {n_permutations}")
    X, Y = _samples(X, Y, "mmd_test")
    Z = np.concatenate([X, Y])
    sigma = median_bandwidth(Z) if bandwidth is None else float(bandwidth)
    K = gaussian_kernel(Z, Z, sigma)
    n = len(X)
    observed = _mmd2_from_kernel(K, n)
    rng = np.random.default_rng(seed)
    exceed = 0
    for _ in range(int(n_permutations)):
        p = rng.permutation(len(Z))
        exceed += _mmd2_from_kernel(K[np.ix_(p, p)], n) >= observed
    p_value = (1 + exceed) / (1 + int(n_permutations))
    return TestResult(observed, p_value, p_value < alpha, {"bandwidth": sigma})


# ----------------------------------------------------------------------------- KS


def holm(p_values, alpha: float) -> np.ndarray:
    """Holm's step-down correction: which hypotheses are rejected at family-wise ``alpha``.

    Sort the ``m`` p-values increasingly; reject the k-th smallest while
    ``p_(k) <= alpha / (m - k + 1)`` (k = 1, 2, ...), stop at the first that is not.
    Returns a boolean mask in the input order.
    """
    p = np.asarray(p_values, dtype=np.float64).ravel()
    alpha = _check_alpha(alpha, "holm")
    order = np.argsort(p, kind="stable")
    m = len(p)
    ok = p[order] <= alpha / (m - np.arange(m))
    n_rejected = m if ok.all() else int(np.argmin(ok))
    out = np.zeros(m, dtype=bool)
    out[order[:n_rejected]] = True
    return out


def bonferroni(p_values, alpha: float) -> np.ndarray:
    """Bonferroni's correction: reject where ``p <= alpha / m``."""
    p = np.asarray(p_values, dtype=np.float64).ravel()
    return p <= _check_alpha(alpha, "bonferroni") / max(len(p), 1)


def ks_test(X, Y, alpha: float = 0.01, correction: str = "holm") -> TestResult:
    """One two-sample KS test per feature, corrected for the D tests.

    Drift is declared when the correction rejects at least one feature, so the probability
    of a false alarm on a window is at most ``alpha`` (family-wise). ``statistic`` is the
    largest KS distance, ``p_value`` the smallest per-feature p-value times D (capped at 1,
    Bonferroni's adjusted p-value; Holm rejects whenever Bonferroni does).

    Returns
    -------
    TestResult
        ``details = {"statistics": (D,), "p_values": (D,), "rejected": (D,) bool}``.
    """
    from scipy.stats import ks_2samp

    alpha = _check_alpha(alpha, "ks_test")
    if correction not in ("holm", "bonferroni"):
        raise ValueError(f"ks_test: correction must be 'holm' or 'bonferroni', got {correction!r}")
    X, Y = _samples(X, Y, "ks_test")
    res = ks_2samp(X, Y, axis=0)
    stats = np.atleast_1d(np.asarray(res.statistic, dtype=np.float64))
    p = np.atleast_1d(np.asarray(res.pvalue, dtype=np.float64))
    rejected = holm(p, alpha) if correction == "holm" else bonferroni(p, alpha)
    details = {"statistics": stats, "p_values": p, "rejected": rejected}
    adjusted = float(min(1.0, p.min() * len(p)))
    return TestResult(float(stats.max()), adjusted, bool(rejected.any()), details)


# ----------------------------------------------------------------------------- windows


class WindowDetector:
    """A two-sample test on consecutive windows of a stream of feature vectors.

    Samples are collected into windows of ``window`` rows; when a window is full it is
    tested against ``reference`` and :meth:`update` returns the test's decision (otherwise
    ``False``). Windows do not overlap. After an alarm the window that drifted becomes the
    reference (``rebase_on_alarm``), so a shift that persists raises one alarm, not one per
    window -- as the streaming detectors restart after theirs; :meth:`rebase` sets another.

    Parameters
    ----------
    reference : array (N, D)
        Features of the deployment's trusted first window.
    test : {"mmd", "ks"}
    window : int, default 100
    alpha : float, default 0.01
        Per-window false-alarm level.
    seed : int, default 0
        Seeds the permutations of the MMD test (window k uses ``seed + k``).
    rebase_on_alarm : bool, default True
    **options
        Passed to :func:`mmd_test` (``n_permutations``, ``bandwidth``) or :func:`ks_test`
        (``correction``).
    """

    def __init__(
        self,
        reference,
        test: str = "mmd",
        window: int = 100,
        alpha: float = 0.01,
        seed: int = 0,
        rebase_on_alarm: bool = True,
        **options,
    ) -> None:
        if test not in ("mmd", "ks"):
            raise ValueError(f"WindowDetector: test must be 'mmd' or 'ks', got {test!r}")
        if int(window) < 2:
            raise ValueError(f"WindowDetector: window must be >= 2, got {window}")
        self.test, self.window, self.alpha = (
            test,
            int(window),
            _check_alpha(alpha, "WindowDetector"),
        )
        self.seed, self.options = int(seed), options
        self.rebase_on_alarm = bool(rebase_on_alarm)
        self.rebase(reference)
        self.n_alarms = 0
        self.n_seen = 0
        self.n_windows = 0
        self.last: TestResult | None = None

    def rebase(self, reference) -> None:
        """Use a new reference (e.g. after adaptation) and drop the current window."""
        ref = np.asarray(reference, dtype=np.float64)
        if ref.ndim != 2 or len(ref) < 2:
            raise ValueError(f"WindowDetector: reference must be (N >= 2, D), got {ref.shape}")
        if not hasattr(self, "_own_bandwidth"):
            self._own_bandwidth = "bandwidth" not in self.options
        if self.test == "mmd" and self._own_bandwidth:
            self.options = {**self.options, "bandwidth": median_bandwidth(ref)}
        self.reference = ref
        self._buf: list[np.ndarray] = []

    def update(self, x) -> bool:
        """Add one feature vector (D,); ``True`` if it completes a window that drifted."""
        x = np.asarray(x, dtype=np.float64).ravel()
        if x.shape != self.reference.shape[1:]:
            raise ValueError(
                f"WindowDetector.update: expected a vector of {self.reference.shape[1]} "
                f"features, got {x.shape}"
            )
        self._buf.append(x)
        self.n_seen += 1
        if len(self._buf) < self.window:
            return False
        current = np.stack(self._buf)
        self._buf = []
        if self.test == "mmd":
            self.last = mmd_test(
                self.reference, current, self.alpha, seed=self.seed + self.n_windows, **self.options
            )
        else:
            self.last = ks_test(self.reference, current, self.alpha, **self.options)
        self.n_windows += 1
        self.n_alarms += self.last.drift
        if self.last.drift and self.rebase_on_alarm:
            self.rebase(current)
        return self.last.drift
