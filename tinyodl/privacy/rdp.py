"""Renyi differential privacy (RDP) of the mechanisms DP training is made of.

Chapter 10, section "accounting". A mechanism is (alpha, R)-RDP (Mironov 2017) if the Renyi
divergence of order alpha between its output distributions on neighbouring datasets is at most
R. RDP composes by addition, order by order, which is why accountants keep a whole curve
``R(alpha)`` over a grid of orders and convert to (epsilon, delta) only at the end
(:mod:`tinyodl.privacy.accountant`).

* Gaussian, noise multiplier sigma: ``alpha / (2 sigma^2)`` -- :func:`rdp_gaussian`.
* Poisson-subsampled Gaussian (sampling rate q), integer alpha (Mironov et al. 2019, Thm 4):
  ``1/(alpha-1) log sum_k C(alpha,k) (1-q)^(alpha-k) q^k exp((k^2 - k) / (2 sigma^2))``;
  fractional alpha (their Sec. 3.3): two convergent series, below --
  :func:`rdp_subsampled_gaussian`.
* Laplace with scale b per unit of sensitivity (Mironov 2017):
  ``1/(alpha-1) log(alpha/(2alpha-1) e^((alpha-1)/b) + (alpha-1)/(2alpha-1) e^(-alpha/b))``
  -- :func:`rdp_laplace`.
* Binary randomized response keeping the answer with probability p:
  ``1/(alpha-1) log(p^alpha (1-p)^(1-alpha) + (1-p)^alpha p^(1-alpha))`` --
  :func:`rdp_randomized_response`.
* Tree aggregation over T steps, one epoch (Kairouz et al. 2021):
  ``alpha ceil(log2(T + 1)) / (2 sigma^2)`` -- :func:`rdp_tree_aggregation`.

The subsampled Gaussian for a *fractional* order. Write mu0 = N(0, sigma^2), mu1 = N(1,
sigma^2), and ``r(z) = mu1(z)/mu0(z) = exp((2z - 1)/(2 sigma^2))``. Then
``A_alpha = E_{z~mu0}[((1 - q) + q r(z))^alpha]`` and ``R(alpha) = log(A_alpha) / (alpha - 1)``.
Split the line at z0 where ``q r(z0) = 1 - q``, i.e. ``z0 = sigma^2 log(1/q - 1) + 1/2``. Left of
z0 the binomial series in ``q r / (1 - q)`` converges, right of it the one in
``(1 - q) / (q r)`` does; each term integrates in closed form because
``mu0(z) r(z)^j = exp((j^2 - j)/(2 sigma^2)) N(j, sigma^2)(z)``:

    A_alpha = sum_j C(alpha, j) (1-q)^(alpha-j) q^j  e^((j^2-j)/(2s^2))  Phi((z0 - j)/s)
            + sum_j C(alpha, j) q^(alpha-j) (1-q)^j  e^((m^2-m)/(2s^2))  Phi((m - z0)/s)

with ``m = alpha - j`` and ``s = sigma``.

The generalised binomial coefficients change sign for j > alpha, so the sums are taken in the
log domain with signs; the terms fall off polynomially, so they are summed in blocks until a
block no longer changes the result. The tests hold this series to numerical quadrature of the
integral and to the integer formula at integer orders.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
from scipy import special

__all__ = [
    "DEFAULT_ORDERS",
    "rdp_gaussian",
    "rdp_laplace",
    "rdp_randomized_response",
    "rdp_subsampled_gaussian",
    "rdp_tree_aggregation",
]

#: Orders used when none are given: dense near 1 (small epsilon), integers up to 64, and a few
#: large ones (strong privacy regimes). The same grid as Opacus and dp-accounting use.
DEFAULT_ORDERS: tuple[float, ...] = tuple(
    [1.0 + x / 10.0 for x in range(1, 100)]
    + [float(a) for a in range(11, 64)]
    + [128.0, 256.0]
    + [512.0, 1024.0]
)


def _orders(orders: Sequence[float] | float | None, caller: str) -> np.ndarray:
    a = np.atleast_1d(np.asarray(DEFAULT_ORDERS if orders is None else orders, dtype=np.float64))
    if a.ndim != 1 or a.size == 0 or not np.all(np.isfinite(a)) or np.any(a <= 1.0):
        raise ValueError(f"{caller}: orders must be finite numbers > 1, got {orders!r}")
    return a


def _noise(caller: str, noise_multiplier: float) -> None:
    if not noise_multiplier >= 0 or not math.isfinite(noise_multiplier):
        raise ValueError(f"{caller}: noise_multiplier must be >= 0, got {noise_multiplier!r}")


def rdp_gaussian(noise_multiplier: float, orders: Sequence[float] | None = None) -> np.ndarray:
    """``alpha / (2 sigma^2)``: the Gaussian mechanism with noise std sigma x sensitivity.

    Returns
    -------
    ndarray, shape (len(orders),); ``inf`` everywhere when ``noise_multiplier == 0``.
    """
    _noise("rdp_gaussian", noise_multiplier)
    a = _orders(orders, "rdp_gaussian")
    if noise_multiplier == 0:
        return np.full_like(a, np.inf)
    return a / (2.0 * noise_multiplier**2)


def _log_a_integer(q: float, sigma: float, alpha: int) -> float:
    """``log A_alpha`` by the finite binomial sum (Mironov et al. 2019, Theorem 4)."""
    k = np.arange(alpha + 1, dtype=np.float64)
    log_binom = special.gammaln(alpha + 1) - special.gammaln(k + 1) - special.gammaln(alpha - k + 1)
    log_terms = log_binom + k * math.log(q) + (k * k - k) / (2.0 * sigma**2)
    if q < 1.0:
        log_terms += (alpha - k) * math.log1p(-q)
    else:  # q == 1: only k == alpha survives
        log_terms = np.where(k == alpha, log_terms, -np.inf)
    return float(special.logsumexp(log_terms))


def _log_abs_binom(alpha: float, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``log |C(alpha, j)|`` and its sign for real alpha and integer j >= 0."""
    log_mag = special.gammaln(alpha + 1) - special.gammaln(j + 1) - special.gammaln(alpha - j + 1)
    return log_mag, special.gammasgn(alpha - j + 1)


def _log_a_fractional(q: float, sigma: float, alpha: float) -> float:
    """``log A_alpha`` for real alpha by the two series of the module docstring."""
    z0 = sigma**2 * math.log(1.0 / q - 1.0) + 0.5
    s2 = 2.0 * sigma**2
    log_q, log_1mq = math.log(q), math.log1p(-q)
    total_log, total_sign = -np.inf, 1.0
    block, start = 1024, 0
    while start < 10_000_000:
        j = np.arange(start, start + block, dtype=np.float64)
        log_c, sign = _log_abs_binom(alpha, j)
        m = alpha - j
        left = (
            log_c
            + (alpha - j) * log_1mq
            + j * log_q
            + (j * j - j) / s2
            + special.log_ndtr((z0 - j) / sigma)
        )
        right = (
            log_c + m * log_q + j * log_1mq + (m * m - m) / s2 + special.log_ndtr((m - z0) / sigma)
        )
        terms = np.concatenate([left, right, [total_log]])
        signs = np.concatenate([sign, sign, [total_sign]])
        new_log, new_sign = special.logsumexp(terms, b=signs, return_sign=True)
        largest = max(left.max(), right.max())
        total_log, total_sign = float(new_log), float(new_sign)
        if start > alpha and largest < total_log - 37.0:  # the block changed nothing (1e-16)
            break
        start += block
        block *= 2
    if total_sign <= 0:
        raise FloatingPointError(
            f"rdp_subsampled_gaussian: the series for alpha={alpha}, q={q}, sigma={sigma} "
            "lost its precision; use integer orders"
        )
    return total_log


def rdp_subsampled_gaussian(
    q: float, noise_multiplier: float, orders: Sequence[float] | None = None
) -> np.ndarray:
    """RDP of one step of the Poisson-subsampled Gaussian mechanism (DP-SGD's step).

    Parameters
    ----------
    q : float in [0, 1]
        Sampling rate: each example joins the lot independently with probability q.
    noise_multiplier : float
        sigma: the noise std divided by the L2 sensitivity (the clipping norm).
    orders : sequence of float > 1, optional
        Renyi orders (default :data:`DEFAULT_ORDERS`); integers use the exact finite sum,
        other values the series of the module docstring.

    Returns
    -------
    ndarray, shape (len(orders),)
    """
    _noise("rdp_subsampled_gaussian", noise_multiplier)
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"rdp_subsampled_gaussian: q must be in [0, 1], got {q!r}")
    a = _orders(orders, "rdp_subsampled_gaussian")
    if q == 0:
        return np.zeros_like(a)
    if noise_multiplier == 0:
        return np.full_like(a, np.inf)
    if q == 1.0:
        return rdp_gaussian(noise_multiplier, a)
    return np.array(
        [_log_a(float(q), float(noise_multiplier), float(alpha)) / (alpha - 1.0) for alpha in a]
    )


@functools.lru_cache(maxsize=1 << 16)
def _log_a(q: float, sigma: float, alpha: float) -> float:
    """``log A_alpha``, cached: training loops ask for the same curve after every epoch."""
    if alpha.is_integer():
        return _log_a_integer(q, sigma, int(alpha))
    return _log_a_fractional(q, sigma, alpha)


def rdp_laplace(scale: float, orders: Sequence[float] | None = None) -> np.ndarray:
    """RDP of the Laplace mechanism with scale ``b`` per unit of L1 sensitivity (Mironov 2017).

    ``1/(alpha-1) log(alpha/(2alpha-1) exp((alpha-1)/b) + (alpha-1)/(2alpha-1) exp(-alpha/b))``;
    it never exceeds the pure-DP bound ``1/b``.
    """
    if not scale > 0:
        raise ValueError(f"rdp_laplace: scale must be > 0, got {scale!r}")
    a = _orders(orders, "rdp_laplace")
    log_terms = np.stack(
        [
            np.log(a / (2 * a - 1)) + (a - 1) / scale,
            np.log((a - 1) / (2 * a - 1)) - a / scale,
        ]
    )
    return special.logsumexp(log_terms, axis=0) / (a - 1)


def rdp_randomized_response(keep_probability: float, orders: Sequence[float] | None = None):
    """RDP of binary randomized response that keeps the answer with probability ``p > 1/2``.

    The Renyi divergence between Bernoulli(p) and Bernoulli(1 - p):
    ``1/(alpha-1) log(p^alpha (1-p)^(1-alpha) + (1-p)^alpha p^(1-alpha))``.
    """
    p = float(keep_probability)
    if not 0.5 < p < 1.0:
        raise ValueError(f"rdp_randomized_response: keep_probability must be in (1/2, 1), got {p}")
    a = _orders(orders, "rdp_randomized_response")
    log_terms = np.stack(
        [a * math.log(p) + (1 - a) * math.log1p(-p), a * math.log1p(-p) + (1 - a) * math.log(p)]
    )
    return special.logsumexp(log_terms, axis=0) / (a - 1)


def rdp_tree_aggregation(
    noise_multiplier: float, steps: int, orders: Sequence[float] | None = None
) -> np.ndarray:
    """One pass of tree aggregation over ``steps`` leaves, each record in one leaf.

    A record changes one leaf by at most the clipping norm C and so one node per level,
    ``ceil(log2(steps + 1))`` nodes, each with noise N(0, sigma^2 C^2): a Gaussian mechanism
    with sensitivity ``sqrt(depth) C``, i.e. ``alpha depth / (2 sigma^2)`` (Kairouz et al. 2021).
    """
    _noise("rdp_tree_aggregation", noise_multiplier)
    if int(steps) != steps or steps < 1:
        raise ValueError(f"rdp_tree_aggregation: steps must be an int >= 1, got {steps!r}")
    depth = math.ceil(math.log2(int(steps) + 1))
    return depth * rdp_gaussian(noise_multiplier, orders)
