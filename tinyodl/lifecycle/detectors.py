"""Streaming drift detectors: one number in, "has the stream changed?" out.

A deployed model watches a scalar stream -- its confidence on each input (no label needed:
*data drift*) or its 0/1 error once a label arrives (*concept drift*) -- and raises an
alarm when the stream's mean moves. Every detector here has the same interface::

    det.update(x) -> bool     # True: an alarm at this sample (the detector then resets)
    det.n_alarms, det.n_seen  # counters
    det.reset()               # forget everything (the counters too)

* :class:`PageHinkley` -- a shift of the mean of any real stream, up or down (Page 1954;
  Hinkley 1971);
* :class:`CUSUM` -- a rise above a known target mean, one-sided (Page 1954);
* :class:`DDM` -- the error rate of a classifier, a 0/1 stream (Gama et al., SBIA 2004);
* :class:`ADWIN` -- the mean of any bounded stream, with an adaptive window (Bifet &
  Gavaldà, SDM 2007).

The implementations are the readable ones: :class:`ADWIN` keeps its whole window (ADWIN0 of
the paper, with the variance-aware bound of its ADWIN2 section) instead of the paper's
exponential histogram, so it checks *every* cut point; :mod:`river`'s ADWIN2 checks the
bucket boundaries only, a subset (``tests/test_lifecycle.py`` states precisely what is
compared). Chapter 01 (streaming) and :mod:`tinyodl.lifecycle`.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["ADWIN", "CUSUM", "DDM", "PageHinkley"]

MODES = ("up", "down", "both")


def _finite(x: float, who: str) -> float:
    try:
        value = float(x)
    except (TypeError, ValueError):
        raise TypeError(f"{who}.update: expected a real number, got {type(x).__name__}") from None
    if not math.isfinite(value):
        raise ValueError(f"{who}.update: expected a finite number, got {value}")
    return value


def _positive(value: float, name: str, who: str, strict: bool = True) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0 or (strict and value == 0):
        sign = "> 0" if strict else ">= 0"
        raise ValueError(f"{who}: {name} must be finite and {sign}, got {value}")
    return value


class _Detector:
    """Counters shared by the detectors."""

    def __init__(self) -> None:
        self.n_alarms = 0
        self.n_seen = 0

    def reset(self) -> None:
        """Forget the stream and the counters."""
        self.n_alarms = 0
        self.n_seen = 0
        self._restart()

    def _restart(self) -> None:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def run(self, xs) -> np.ndarray:
        """Feed a whole 1-D sequence; returns the indices (int64) of the alarms."""
        xs = np.asarray(xs, dtype=np.float64)
        if xs.ndim != 1:
            raise ValueError(f"{type(self).__name__}.run: expected a 1-D stream, got {xs.shape}")
        return np.array([i for i, x in enumerate(xs) if self.update(x)], dtype=np.int64)


# ----------------------------------------------------------------------------- Page-Hinkley


class PageHinkley(_Detector):
    r"""Page–Hinkley test for a change in the mean (Page 1954; Hinkley 1971).

    With :math:`\bar x_t` the running mean of the samples since the last reset (the
    sample ``x_t`` included), the cumulative deviations

    .. math::
        m^+_t = \alpha\, m^+_{t-1} + (x_t - \bar x_t - \delta), \qquad
        m^-_t = \alpha\, m^-_{t-1} + (x_t - \bar x_t + \delta)

    drift down when nothing changes (by :math:`\delta` per sample). An increase of the mean
    pushes :math:`m^+` above its running minimum :math:`M^+_t = \min_{s \le t} m^+_s`; an
    alarm is raised when :math:`m^+_t - M^+_t > \lambda` (mode ``"up"``), or
    :math:`M^-_t - m^-_t > \lambda` with :math:`M^-_t = \max_{s \le t} m^-_s` (``"down"``), or
    either (``"both"``), once ``min_instances`` samples have been seen. After an alarm the
    detector restarts from the next sample. :math:`\alpha = 1` is the original test;
    :math:`\alpha < 1` fades old deviations (the variant river implements).

    Parameters
    ----------
    delta : float, default 0.005
        Magnitude of change tolerated (:math:`\delta \ge 0`), in the stream's units.
    threshold : float, default 50
        :math:`\lambda > 0`: larger means fewer false alarms and a longer delay.
    alpha : float, default 1 - 1e-4
        Fading factor in (0, 1].
    min_instances : int, default 30
        No alarm before this many samples since the last reset.
    mode : {"up", "down", "both"}, default "both"
    """

    def __init__(
        self,
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 1 - 1e-4,
        min_instances: int = 30,
        mode: str = "both",
    ) -> None:
        super().__init__()
        self.delta = _positive(delta, "delta", "PageHinkley", strict=False)
        self.threshold = _positive(threshold, "threshold", "PageHinkley")
        if not 0 < alpha <= 1:
            raise ValueError(f"PageHinkley: alpha must be in (0, 1], got {alpha}")
        if int(min_instances) < 1:
            raise ValueError(f"PageHinkley: min_instances must be >= 1, got {min_instances}")
        if mode not in MODES:
            raise ValueError(f"PageHinkley: mode must be one of {MODES}, got {mode!r}")
        self.alpha, self.min_instances, self.mode = float(alpha), int(min_instances), mode
        self._restart()

    def _restart(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.sum_up = 0.0  # m+
        self.min_up = math.inf  # M+
        self.sum_down = 0.0  # m-
        self.max_down = -math.inf  # M-

    @property
    def statistic(self) -> float:
        """The larger of the watched statistics (``m+ - M+``, ``M- - m-``) now."""
        up = self.sum_up - self.min_up if self.n else 0.0
        down = self.max_down - self.sum_down if self.n else 0.0
        return {"up": up, "down": down, "both": max(up, down)}[self.mode]

    def update(self, x: float) -> bool:
        """Feed one sample; ``True`` if it raises an alarm (the test then restarts)."""
        x = _finite(x, "PageHinkley")
        self.n_seen += 1
        self.n += 1
        self.mean += (x - self.mean) / self.n  # the running mean, this sample included
        dev = x - self.mean
        self.sum_up = self.alpha * self.sum_up + dev - self.delta
        self.sum_down = self.alpha * self.sum_down + dev + self.delta
        self.min_up = min(self.min_up, self.sum_up)
        self.max_down = max(self.max_down, self.sum_down)
        alarm = self.n >= self.min_instances and self.statistic > self.threshold
        if alarm:
            self.n_alarms += 1
            self._restart()
        return alarm


class CUSUM(_Detector):
    r"""One-sided CUSUM chart (Page 1954) for an increase above a known target mean.

    :math:`g_t = \max(0,\, g_{t-1} + x_t - \mu_0 - k)`; alarm when :math:`g_t > h`, then
    :math:`g` restarts at 0. ``k`` is the slack (half the shift to detect, in the stream's
    units) and ``h`` the decision interval. For a decrease, feed ``-x`` and ``-mu0``.

    Parameters
    ----------
    target : float
        :math:`\mu_0`, the in-control mean (e.g. measured on the deployment's first window).
    slack : float, default 0.0
        :math:`k \ge 0`.
    threshold : float, default 5.0
        :math:`h > 0`.
    """

    def __init__(self, target: float, slack: float = 0.0, threshold: float = 5.0) -> None:
        super().__init__()
        self.target = _finite(target, "CUSUM")
        self.slack = _positive(slack, "slack", "CUSUM", strict=False)
        self.threshold = _positive(threshold, "threshold", "CUSUM")
        self._restart()

    def _restart(self) -> None:
        self.g = 0.0

    def update(self, x: float) -> bool:
        """Feed one sample; ``True`` if it raises an alarm (``g`` then restarts at 0)."""
        x = _finite(x, "CUSUM")
        self.n_seen += 1
        self.g = max(0.0, self.g + x - self.target - self.slack)
        if self.g > self.threshold:
            self.n_alarms += 1
            self._restart()
            return True
        return False


# ----------------------------------------------------------------------------- DDM


class DDM(_Detector):
    r"""Drift Detection Method on a classifier's 0/1 errors (Gama et al., SBIA 2004).

    After :math:`i` predictions with error rate :math:`p_i` (a binomial proportion), its
    standard deviation is :math:`s_i = \sqrt{p_i (1 - p_i) / i}`. The method remembers the
    point where :math:`p_i + s_i` was smallest (:math:`p_{min}, s_{min}`, updated when
    :math:`p_i + s_i \le p_{min} + s_{min}`) and signals

    * a *warning* when :math:`p_i + s_i > p_{min} + 2 s_{min}` (:attr:`warning`),
    * a *drift* (an alarm) when :math:`p_i + s_i > p_{min} + 3 s_{min}`; then it restarts,

    both only after ``min_instances`` errors have been counted (the paper's 30).

    Parameters
    ----------
    min_instances : int, default 30
    warning_level, drift_level : float, default 2 and 3
        The multiples of :math:`s_{min}` (``0 < warning_level <= drift_level``).
    """

    def __init__(
        self, min_instances: int = 30, warning_level: float = 2.0, drift_level: float = 3.0
    ) -> None:
        super().__init__()
        if int(min_instances) < 1:
            raise ValueError(f"DDM: min_instances must be >= 1, got {min_instances}")
        if not 0 < warning_level <= drift_level:
            raise ValueError(
                f"DDM: need 0 < warning_level <= drift_level, got {warning_level}, {drift_level}"
            )
        self.min_instances = int(min_instances)
        self.warning_level, self.drift_level = float(warning_level), float(drift_level)
        self._restart()

    def _restart(self) -> None:
        self.n = 0
        self.p = 0.0
        self.p_min = math.inf
        self.s_min = math.inf
        self.warning = False

    def update(self, error: float) -> bool:
        """Feed one outcome (1 = the prediction was wrong, 0 = right); ``True`` on drift."""
        e = _finite(error, "DDM")
        if e not in (0.0, 1.0):
            raise ValueError(f"DDM.update: expected a 0/1 error, got {error}")
        self.n_seen += 1
        self.n += 1
        self.p += (e - self.p) / self.n
        s = math.sqrt(self.p * (1 - self.p) / self.n)
        if self.n <= self.min_instances:
            return False
        if self.p + s <= self.p_min + self.s_min:
            self.p_min, self.s_min = self.p, s
        self.warning = self.p + s > self.p_min + self.warning_level * self.s_min
        if self.p + s > self.p_min + self.drift_level * self.s_min:
            self.n_alarms += 1
            self._restart()
            return True
        return False


# ----------------------------------------------------------------------------- ADWIN


class ADWIN(_Detector):
    r"""ADaptive WINdowing (Bifet & Gavaldà, SDM 2007), the exact-window version.

    The window :math:`W` holds every sample since the last change. Every ``clock`` samples
    (once more than ``grace_period`` are held) each split of :math:`W` into an older part
    :math:`W_0` (:math:`n_0` samples, mean :math:`\hat\mu_0`) and a newer :math:`W_1`
    (:math:`n_1`, :math:`\hat\mu_1`), both of at least ``min_window_length`` samples, is
    tested with the paper's variance-aware bound (its Theorem 3 / ADWIN2 section, in the
    form river uses)

    .. math::
        \varepsilon_{cut} = \sqrt{\frac{2}{m}\, \sigma^2_W \ln\frac{2}{\delta'}}
        + \frac{2}{3m} \ln\frac{2}{\delta'}, \qquad
        \frac{1}{m} = \frac{1}{n_0 - \ell + 1} + \frac{1}{n_1 - \ell + 1}, \qquad
        \ln\frac{2}{\delta'} = \ln\frac{2 \ln |W|}{\delta}

    (:math:`\sigma^2_W` the window's variance, :math:`\ell` = ``min_window_length``). If some
    split has :math:`|\hat\mu_0 - \hat\mu_1| > \varepsilon_{cut}`, that sample raises an
    alarm and the oldest samples are dropped, one at a time, until no split does.

    Memory is the whole window (ADWIN2's exponential histogram keeps :math:`O(\log |W|)`
    buckets instead, and checks only the cuts between buckets).

    Parameters
    ----------
    delta : float, default 0.002
        Confidence :math:`\delta` in (0, 1): the false-alarm bound of the test.
    clock : int, default 32
        Check every ``clock`` samples.
    min_window_length : int, default 5
    grace_period : int, default 10
    """

    def __init__(
        self,
        delta: float = 0.002,
        clock: int = 32,
        min_window_length: int = 5,
        grace_period: int = 10,
    ) -> None:
        super().__init__()
        if not 0 < delta < 1:
            raise ValueError(f"ADWIN: delta must be in (0, 1), got {delta}")
        for name, value in (("clock", clock), ("min_window_length", min_window_length)):
            if int(value) < 1:
                raise ValueError(f"ADWIN: {name} must be >= 1, got {value}")
        if int(grace_period) < 0:
            raise ValueError(f"ADWIN: grace_period must be >= 0, got {grace_period}")
        self.delta, self.clock = float(delta), int(clock)
        self.min_window_length, self.grace_period = int(min_window_length), int(grace_period)
        self._restart()

    def _restart(self) -> None:
        self.window: list[float] = []
        self.tick = 0

    @property
    def width(self) -> int:
        """Samples in the window."""
        return len(self.window)

    @property
    def estimation(self) -> float:
        """Mean of the window (0 when empty)."""
        return float(np.mean(self.window)) if self.window else 0.0

    def cut_statistics(self, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """For every admissible split of the window: ``(|mu0 - mu1|, eps_cut)``, oldest first.

        Splits put the first ``n0`` samples in :math:`W_0`, for
        ``n0 = min_window_length .. |W| - min_window_length``.
        """
        w = np.asarray(self.window if w is None else w, dtype=np.float64)
        width, ell = len(w), self.min_window_length
        n0 = np.arange(ell, width - ell + 1, dtype=np.float64)
        if width < 2 or len(n0) == 0:
            return np.zeros(0), np.zeros(0)
        csum = np.cumsum(w)
        total = csum[-1]
        u0 = csum[n0.astype(np.int64) - 1]
        n1 = width - n0
        gap = np.abs(u0 / n0 - (total - u0) / n1)
        variance = float(np.var(w))  # the window's (population) variance
        log_term = math.log(2.0 * math.log(width) / self.delta)
        m_recip = 1.0 / (n0 - ell + 1) + 1.0 / (n1 - ell + 1)
        eps = np.sqrt(2.0 * m_recip * variance * log_term) + 2.0 / 3.0 * log_term * m_recip
        return gap, eps

    def update(self, x: float) -> bool:
        """Feed one sample; ``True`` if the window was cut at this sample."""
        self.window.append(_finite(x, "ADWIN"))
        self.n_seen += 1
        self.tick += 1
        if self.tick % self.clock or self.width <= self.grace_period:
            return False
        changed = False
        while True:
            gap, eps = self.cut_statistics()
            if not np.any(gap > eps):
                break
            changed = True
            del self.window[0]
        if changed:
            self.n_alarms += 1
        return changed
