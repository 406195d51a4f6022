"""Noise mechanisms and their calibration: Laplace, Gaussian (classic and analytic), RR.

Chapter 10 (differential privacy), section "mechanisms". A randomized algorithm M is
(epsilon, delta)-differentially private if for all neighbouring datasets D, D' (one record
added or removed) and every set S of outputs,

    P[M(D) in S] <= exp(epsilon) * P[M(D') in S] + delta.

A numeric query f with sensitivity Delta (the largest change of f between neighbours) is
made private by adding noise of a scale chosen from Delta and (epsilon, delta):

* **Laplace** (Dwork et al. 2006): noise of scale ``b = Delta_1 / epsilon`` gives
  (epsilon, 0)-DP -- :func:`laplace_scale`, :func:`laplace_mechanism`.
* **Gaussian, classic bound** (Dwork & Roth 2014, Thm A.1):
  ``sigma = Delta_2 sqrt(2 ln(1.25 / delta)) / epsilon``, valid only for epsilon < 1 --
  :func:`gaussian_sigma_classic`.
* **Gaussian, analytic** (Balle & Wang 2018): the smallest sigma whose exact privacy profile
  stays below delta, for any epsilon > 0 -- :func:`gaussian_sigma_analytic`,
  :func:`gaussian_mechanism`.
* **Randomized response** (Warner 1965): report the true answer with probability
  ``p = e^eps / (e^eps + k - 1)``, any other one otherwise -- :func:`randomized_response`,
  :func:`estimate_frequencies`.

The exact privacy profile of the Gaussian mechanism (Balle & Wang 2018, Theorem 8) is

    delta(epsilon) = Phi(Delta / (2 sigma) - epsilon sigma / Delta)
                     - e^epsilon Phi(-Delta / (2 sigma) - epsilon sigma / Delta)

(:func:`gaussian_delta`); the analytic calibration solves ``delta(sigma) = delta`` for sigma by
bracketing, which is all Balle & Wang's Algorithm 1 does in a different parametrisation.
The classic bound is never smaller, and for large epsilon it is much larger. The notebook
draws both curves and checks empirically that the noise has the calibrated scale.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, special

from tinyodl.nn.utils import SeedLike, as_generator

__all__ = [
    "estimate_frequencies",
    "gaussian_delta",
    "gaussian_mechanism",
    "gaussian_sigma_analytic",
    "gaussian_sigma_classic",
    "laplace_mechanism",
    "laplace_scale",
    "randomized_response",
    "randomized_response_keep_probability",
]


def _positive(caller: str, **values: float) -> None:
    for name, value in values.items():
        if not (isinstance(value, int | float | np.floating | np.integer) and value > 0):
            raise ValueError(f"{caller}: {name} must be a positive number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{caller}: {name} must be finite, got {value!r}")


def _check_delta(caller: str, delta: float) -> None:
    if not 0.0 < delta < 1.0:
        raise ValueError(f"{caller}: delta must be in (0, 1), got {delta!r}")


# ----------------------------------------------------------------------------- Laplace


def laplace_scale(sensitivity: float, epsilon: float) -> float:
    """Scale ``b = Delta_1 / epsilon`` of the Laplace mechanism ((epsilon, 0)-DP).

    Parameters
    ----------
    sensitivity : float
        L1 sensitivity Delta_1 of the query.
    epsilon : float
    """
    _positive("laplace_scale", sensitivity=sensitivity, epsilon=epsilon)
    return float(sensitivity) / float(epsilon)


def laplace_mechanism(
    value: float | np.ndarray, sensitivity: float, epsilon: float, rng: SeedLike = None
) -> np.ndarray:
    """``value + Laplace(0, Delta_1 / epsilon)`` element-wise (float64, shape of ``value``)."""
    b = laplace_scale(sensitivity, epsilon)
    value = np.asarray(value, dtype=np.float64)
    return value + as_generator(rng).laplace(0.0, b, size=value.shape)


# ----------------------------------------------------------------------------- Gaussian


def gaussian_sigma_classic(sensitivity: float, epsilon: float, delta: float) -> float:
    """``sigma = Delta_2 * sqrt(2 ln(1.25 / delta)) / epsilon`` (Dwork & Roth 2014, Thm A.1).

    The proof of this bound needs ``epsilon < 1``; larger values raise ``ValueError`` (use
    :func:`gaussian_sigma_analytic`, which holds for every epsilon).
    """
    _positive("gaussian_sigma_classic", sensitivity=sensitivity, epsilon=epsilon)
    _check_delta("gaussian_sigma_classic", delta)
    if epsilon >= 1.0:
        raise ValueError(
            f"gaussian_sigma_classic: the classic bound holds only for epsilon < 1, got "
            f"{epsilon}; use gaussian_sigma_analytic"
        )
    return float(sensitivity) * math.sqrt(2.0 * math.log(1.25 / delta)) / float(epsilon)


def gaussian_delta(sigma: float, sensitivity: float, epsilon: float) -> float:
    """Exact delta of the Gaussian mechanism at ``epsilon`` (Balle & Wang 2018, Theorem 8).

    ``Phi(D/(2s) - e s/D) - exp(e) Phi(-D/(2s) - e s/D)`` with ``D`` the L2 sensitivity and
    ``s = sigma``; computed from ``log Phi`` so that it stays accurate for large epsilon.
    """
    _positive("gaussian_delta", sigma=sigma, sensitivity=sensitivity)
    if epsilon < 0:
        raise ValueError(f"gaussian_delta: epsilon must be >= 0, got {epsilon}")
    a = sensitivity / (2.0 * sigma)
    b = epsilon * sigma / sensitivity
    log_first = special.log_ndtr(a - b)
    log_second = epsilon + special.log_ndtr(-a - b)
    if log_second >= log_first:  # only by rounding: the difference is >= 0 mathematically
        return 0.0
    return float(math.exp(log_first) * -math.expm1(log_second - log_first))


def gaussian_sigma_analytic(sensitivity: float, epsilon: float, delta: float) -> float:
    """The smallest sigma for which the Gaussian mechanism is (epsilon, delta)-DP.

    Solves ``gaussian_delta(sigma, sensitivity, epsilon) = delta`` (Balle & Wang 2018): the
    profile decreases in sigma, so a bracket and Brent's method find the root. Valid for
    every ``epsilon > 0`` (the classic bound needs ``epsilon < 1``).
    """
    _positive("gaussian_sigma_analytic", sensitivity=sensitivity, epsilon=epsilon)
    _check_delta("gaussian_sigma_analytic", delta)

    def excess(log_sigma: float) -> float:
        return math.log(gaussian_delta(math.exp(log_sigma), sensitivity, epsilon) + 1e-300) - (
            math.log(delta)
        )

    lo = hi = math.log(sensitivity)
    while excess(lo) < 0:  # too much noise: go down
        lo -= 1.0
    while excess(hi) > 0:  # too little noise: go up
        hi += 1.0
    root = optimize.brentq(excess, lo, hi, xtol=1e-12, rtol=1e-12)
    return float(math.exp(root))


def gaussian_mechanism(
    value: float | np.ndarray,
    sensitivity: float,
    epsilon: float,
    delta: float,
    rng: SeedLike = None,
    calibration: str = "analytic",
) -> np.ndarray:
    """``value + N(0, sigma^2)`` element-wise, sigma from ``calibration``.

    Parameters
    ----------
    value : float or ndarray
    sensitivity : float
        L2 sensitivity of the query.
    epsilon, delta : float
    rng : int or Generator, optional
    calibration : {"analytic", "classic"}
        :func:`gaussian_sigma_analytic` (default) or :func:`gaussian_sigma_classic`.
    """
    calibrations = {"analytic": gaussian_sigma_analytic, "classic": gaussian_sigma_classic}
    if calibration not in calibrations:
        raise ValueError(
            f"gaussian_mechanism: calibration must be one of {sorted(calibrations)}, "
            f"got {calibration!r}"
        )
    sigma = calibrations[calibration](sensitivity, epsilon, delta)
    value = np.asarray(value, dtype=np.float64)
    return value + sigma * as_generator(rng).standard_normal(value.shape)


# ----------------------------------------------------------------------------- randomized response


def randomized_response_keep_probability(epsilon: float, num_classes: int = 2) -> float:
    """``p = e^eps / (e^eps + k - 1)``: the probability of reporting the true answer.

    Every other answer is reported with probability ``(1 - p) / (k - 1)``, so the ratio of
    the probabilities of any report under two different true answers is at most ``e^eps``.
    """
    _positive("randomized_response", epsilon=epsilon)
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"randomized_response: num_classes must be an int >= 2, got {num_classes}")
    return 1.0 / (1.0 + (num_classes - 1) * math.exp(-epsilon))


def randomized_response(
    values: np.ndarray, epsilon: float, num_classes: int = 2, rng: SeedLike = None
) -> np.ndarray:
    """k-ary randomized response, each value privatized locally ((epsilon, 0)-DP).

    Parameters
    ----------
    values : int ndarray, any shape, entries in ``[0, num_classes)``
    epsilon : float
    num_classes : int, default 2 (Warner's yes/no survey)
    rng : int or Generator, optional

    Returns
    -------
    ndarray of int64, same shape: the true value with probability
    :func:`randomized_response_keep_probability`, otherwise one of the other values chosen
    uniformly.
    """
    values = np.asarray(values)
    p = randomized_response_keep_probability(epsilon, num_classes)
    if values.dtype.kind not in "iub" or (
        values.size and (values.min() < 0 or values.max() >= num_classes)
    ):
        raise ValueError(
            f"randomized_response: values must be integers in [0, {num_classes}), got dtype "
            f"{values.dtype}"
            + (f" and range [{values.min()}, {values.max()}]" if values.size else "")
        )
    gen = as_generator(rng)
    keep = gen.random(values.shape) < p
    # another class, uniform among the k - 1 others: shift by 1..k-1 modulo k
    other = (values + gen.integers(1, num_classes, size=values.shape)) % num_classes
    return np.where(keep, values, other).astype(np.int64)


def estimate_frequencies(reports: np.ndarray, epsilon: float, num_classes: int = 2) -> np.ndarray:
    """Unbiased estimate of the true class frequencies from randomized-response reports.

    With ``p`` the keep probability and ``r = (1 - p) / (k - 1)``, the expected fraction of
    reports of class j is ``f_j p + (1 - f_j) r``, so ``f_j = (observed_j - r) / (p - r)``.

    Returns
    -------
    ndarray, shape (num_classes,), float64: may leave [0, 1] by sampling noise.
    """
    reports = np.asarray(reports).ravel()
    p = randomized_response_keep_probability(epsilon, num_classes)
    r = (1.0 - p) / (num_classes - 1)
    observed = np.bincount(reports, minlength=num_classes)[:num_classes] / max(reports.size, 1)
    return (observed - r) / (p - r)
