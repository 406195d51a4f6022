"""The RDP accountant: compose mechanisms, convert to (epsilon, delta), and invert.

Chapter 10, section "accounting". Every DP-SGD step is a Poisson-subsampled Gaussian
mechanism; T steps compose to ``T * R(alpha)`` at every order (RDP adds up). At the end the
curve is converted to an (epsilon, delta) guarantee by one of two bounds, minimised over the
orders (GUIDE section 5):

* ``"classic"`` (Mironov 2017, Prop. 3): ``epsilon = R(alpha) + log(1/delta) / (alpha - 1)``;
* ``"improved"`` (Canonne, Kamath & Steinke 2020; Asoodeh et al. 2020), the default, as in
  Opacus and dp-accounting: ``epsilon = R(alpha) + log((alpha-1)/alpha)
  - (log delta + log alpha) / (alpha - 1)``.

Both are valid; the improved one is always smaller. The same two bounds, solved for delta,
give :meth:`RDPAccountant.delta`. Inverses -- the noise multiplier that reaches a target
epsilon in a given number of steps, and the number of steps a budget allows -- are found by
bisection, because epsilon is monotone in both.

    >>> from tinyodl import privacy
    >>> round(privacy.epsilon(q=0.01, noise_multiplier=1.1, steps=6000, delta=1e-5), 2)
    4.25

Heterogeneous mechanisms compose in an :class:`RDPAccountant` (e.g. a DP-PCA projection, then
DP-SGD steps at two sampling rates)::

    acc = RDPAccountant()
    acc.compose_gaussian(noise_multiplier=8.0)              # DP-PCA
    acc.compose_subsampled_gaussian(q=0.01, noise_multiplier=4.0, steps=10_000)
    acc.epsilon(delta=1e-5)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize

from tinyodl.privacy import rdp as _rdp

__all__ = [
    "CONVERSIONS",
    "RDPAccountant",
    "epsilon",
    "noise_multiplier_for_epsilon",
    "rdp_to_delta",
    "rdp_to_epsilon",
    "steps_for_budget",
]

#: The two RDP-to-(epsilon, delta) conversions.
CONVERSIONS = ("improved", "classic")


def _check_conversion(caller: str, conversion: str) -> None:
    if conversion not in CONVERSIONS:
        raise ValueError(f"{caller}: conversion must be one of {CONVERSIONS}, got {conversion!r}")


def _check_curve(caller: str, orders, rdp) -> tuple[np.ndarray, np.ndarray]:
    a = np.atleast_1d(np.asarray(orders, dtype=np.float64))
    r = np.atleast_1d(np.asarray(rdp, dtype=np.float64))
    if a.shape != r.shape or a.ndim != 1:
        raise ValueError(
            f"{caller}: orders and rdp must be 1-D of one length, got {a.shape}, {r.shape}"
        )
    if np.any(a <= 1.0):
        raise ValueError(f"{caller}: orders must be > 1, got min {a.min()}")
    if np.any(np.isnan(r)):
        raise ValueError(f"{caller}: rdp contains NaN")
    return a, np.maximum(r, 0.0)  # a negative value can only be rounding


def rdp_to_epsilon(
    orders: Sequence[float], rdp: Sequence[float], delta: float, conversion: str = "improved"
) -> tuple[float, float]:
    """Smallest epsilon over the orders for a given delta.

    Parameters
    ----------
    orders, rdp : sequences of one length
        The RDP curve R(alpha) of the whole composition.
    delta : float in (0, 1)
    conversion : {"improved", "classic"}

    Returns
    -------
    (epsilon, order) : the bound (>= 0, ``inf`` if no order gives a finite one) and the
    order that achieves it.
    """
    _check_conversion("rdp_to_epsilon", conversion)
    if not 0.0 < delta < 1.0:
        raise ValueError(f"rdp_to_epsilon: delta must be in (0, 1), got {delta!r}")
    a, r = _check_curve("rdp_to_epsilon", orders, rdp)
    with np.errstate(invalid="ignore"):  # inf - inf never happens: r is finite or +inf
        if conversion == "classic":
            eps = r + math.log(1.0 / delta) / (a - 1.0)
        else:
            eps = r + np.log1p(-1.0 / a) - (math.log(delta) + np.log(a)) / (a - 1.0)
            # Next to alpha = 1 the bound is numerically poor; Bretagnolle-Huber gives
            # delta(0) <= sqrt(1 - exp(-KL)) <= sqrt(1 - exp(-R)): epsilon 0 when that is < delta.
            eps = np.where(a > 1.01, eps, np.inf)
            eps = np.where(-np.expm1(-r) < delta**2, 0.0, eps)
    i = int(np.argmin(eps))
    return max(0.0, float(eps[i])), float(a[i])


def rdp_to_delta(
    orders: Sequence[float], rdp: Sequence[float], epsilon: float, conversion: str = "improved"
) -> tuple[float, float]:
    """Smallest delta over the orders for a given epsilon (the conversions solved for delta).

    Returns
    -------
    (delta, order), ``delta`` in [0, 1].
    """
    _check_conversion("rdp_to_delta", conversion)
    if not epsilon >= 0:
        raise ValueError(f"rdp_to_delta: epsilon must be >= 0, got {epsilon!r}")
    a, r = _check_curve("rdp_to_delta", orders, rdp)
    with np.errstate(divide="ignore", invalid="ignore"):
        if conversion == "classic":
            log_delta = (a - 1.0) * (r - epsilon)
        else:
            log_delta = (a - 1.0) * (r - epsilon + np.log1p(-1.0 / a)) - np.log(a)
            log_delta = np.where(a > 1.01, log_delta, np.inf)
            log_delta = np.minimum(log_delta, 0.5 * np.log(-np.expm1(-r)))  # Bretagnolle-Huber
    i = int(np.argmin(log_delta))
    return float(min(1.0, math.exp(min(log_delta[i], 0.0)))), float(a[i])


@dataclass
class RDPAccountant:
    """Compose RDP curves of (possibly different) mechanisms; read epsilon or delta.

    Parameters
    ----------
    orders : sequence of float > 1, optional
        The Renyi orders (default :data:`tinyodl.privacy.rdp.DEFAULT_ORDERS`).

    Attributes
    ----------
    rdp_ : ndarray, shape (len(orders),)
        The composed curve (zeros at the start).
    history_ : list of (str, int)
        What was composed: a description of the mechanism and how many times.
    """

    orders: Sequence[float] | None = None
    rdp_: np.ndarray = field(init=False, repr=False)
    history_: list = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.orders = tuple(float(a) for a in _rdp._orders(self.orders, "RDPAccountant"))
        self.rdp_ = np.zeros(len(self.orders))

    def compose(self, rdp: Sequence[float], count: int = 1, name: str = "rdp curve"):
        """Add ``count`` times the curve ``rdp`` (one value per order). Returns ``self``."""
        rdp = np.asarray(rdp, dtype=np.float64)
        if rdp.shape != self.rdp_.shape:
            raise ValueError(
                f"RDPAccountant.compose: expected a curve of shape {self.rdp_.shape} (one "
                f"value per order), got {rdp.shape}"
            )
        if int(count) != count or count < 0:
            raise ValueError(f"RDPAccountant.compose: count must be an int >= 0, got {count!r}")
        if count:
            self.rdp_ = self.rdp_ + count * rdp
            self.history_.append((name, int(count)))
        return self

    def compose_subsampled_gaussian(self, q: float, noise_multiplier: float, steps: int = 1):
        """``steps`` DP-SGD steps: Poisson sampling at rate q, noise multiplier sigma."""
        curve = _rdp.rdp_subsampled_gaussian(q, noise_multiplier, self.orders)
        return self.compose(curve, steps, f"subsampled Gaussian (q={q}, sigma={noise_multiplier})")

    def compose_gaussian(self, noise_multiplier: float, count: int = 1):
        """``count`` releases of the Gaussian mechanism (noise std sigma x L2 sensitivity)."""
        curve = _rdp.rdp_gaussian(noise_multiplier, self.orders)
        return self.compose(curve, count, f"Gaussian (sigma={noise_multiplier})")

    def compose_laplace(self, scale: float, count: int = 1):
        """``count`` releases of the Laplace mechanism (scale b per unit of L1 sensitivity)."""
        curve = _rdp.rdp_laplace(scale, self.orders)
        return self.compose(curve, count, f"Laplace (b={scale})")

    def compose_randomized_response(self, keep_probability: float, count: int = 1):
        """``count`` binary randomized-response answers by one person."""
        curve = _rdp.rdp_randomized_response(keep_probability, self.orders)
        return self.compose(curve, count, f"randomized response (p={keep_probability})")

    def compose_tree_aggregation(self, noise_multiplier: float, steps: int, epochs: int = 1):
        """DP-FTRL: ``epochs`` passes, each a fresh tree over ``steps`` leaves."""
        curve = _rdp.rdp_tree_aggregation(noise_multiplier, steps, self.orders)
        name = f"tree aggregation (sigma={noise_multiplier}, {steps} steps)"
        return self.compose(curve, epochs, name)

    def epsilon(self, delta: float, conversion: str = "improved") -> float:
        """The epsilon of everything composed so far, at ``delta``."""
        return rdp_to_epsilon(self.orders, self.rdp_, delta, conversion)[0]

    def delta(self, epsilon: float, conversion: str = "improved") -> float:
        """The delta of everything composed so far, at ``epsilon``."""
        return rdp_to_delta(self.orders, self.rdp_, epsilon, conversion)[0]


def epsilon(
    *,
    q: float,
    noise_multiplier: float,
    steps: int,
    delta: float,
    orders: Sequence[float] | None = None,
    conversion: str = "improved",
    prior: RDPAccountant | None = None,
) -> float:
    """Epsilon of ``steps`` Poisson-subsampled Gaussian steps (DP-SGD), as a float.

    Parameters
    ----------
    q : float in [0, 1]
        Sampling rate (expected lot size / dataset size).
    noise_multiplier : float
        Noise std / clipping norm.
    steps : int
    delta : float in (0, 1)
    orders : optional, the Renyi orders (ignored when ``prior`` is given: its orders are used)
    conversion : {"improved", "classic"}, default "improved"
    prior : RDPAccountant, optional
        Mechanisms already spent on the same data (e.g. a DP-PCA); composed in, not modified.
    """
    if int(steps) != steps or steps < 0:
        raise ValueError(f"epsilon: steps must be an int >= 0, got {steps!r}")
    acc = RDPAccountant(prior.orders if prior is not None else orders)
    if prior is not None:
        acc.compose(prior.rdp_, 1, "prior")
    acc.compose_subsampled_gaussian(q, noise_multiplier, int(steps))
    return acc.epsilon(delta, conversion)


def noise_multiplier_for_epsilon(
    target_epsilon: float,
    *,
    q: float,
    steps: int,
    delta: float,
    orders: Sequence[float] | None = None,
    conversion: str = "improved",
    tol: float = 1e-4,
    prior: RDPAccountant | None = None,
) -> float:
    """The smallest noise multiplier whose ``steps`` steps at rate q stay within the target.

    Epsilon decreases as sigma grows: bracket the crossing by doubling/halving, then
    Brent's method on log(sigma). The result satisfies ``epsilon(...) <= target_epsilon``
    and is within a relative ``tol`` of the smallest such sigma.
    """
    if not target_epsilon > 0:
        raise ValueError(f"noise_multiplier_for_epsilon: target must be > 0, got {target_epsilon}")

    def eps_of(sigma: float) -> float:
        return epsilon(
            q=q,
            noise_multiplier=sigma,
            steps=steps,
            delta=delta,
            orders=orders,
            conversion=conversion,
            prior=prior,
        )

    # bracket the root of epsilon(sigma) - target in log(sigma), then Brent's method
    lo, hi = 0.5, 1.0
    while eps_of(hi) > target_epsilon:
        lo, hi = hi, hi * 2.0
        if hi > 1e6:
            raise ValueError(
                f"noise_multiplier_for_epsilon: epsilon {target_epsilon} is out of reach "
                f"(q={q}, steps={steps}, delta={delta})"
            )
    while eps_of(lo) <= target_epsilon:
        lo, hi = lo / 2.0, lo
        if lo < 1e-3:
            return hi
    root = optimize.brentq(
        lambda log_sigma: eps_of(math.exp(log_sigma)) - target_epsilon,
        math.log(lo),
        math.log(hi),
        xtol=tol / 4,
    )
    sigma = math.exp(root)
    while eps_of(sigma) > target_epsilon:  # land on the safe side of the root
        sigma *= 1.0 + tol / 4
    return sigma


def steps_for_budget(
    epsilon_budget: float,
    *,
    q: float,
    noise_multiplier: float,
    delta: float,
    orders: Sequence[float] | None = None,
    conversion: str = "improved",
    max_steps: int = 10**8,
    prior: RDPAccountant | None = None,
) -> int:
    """The largest number of steps whose epsilon stays within ``epsilon_budget``.

    The per-step curve is computed once; epsilon(T) = conversion(T * curve) grows with T,
    so an exponential then binary search over integers finds the answer. Returns 0 if not
    even one step fits, ``max_steps`` if all of them do. ``prior``: as in :func:`epsilon`.
    """
    acc = RDPAccountant(prior.orders if prior is not None else orders)
    acc.compose_subsampled_gaussian(q, noise_multiplier, 1)
    orders_, one_step = acc.orders, acc.rdp_
    spent = prior.rdp_ if prior is not None else 0.0

    def fits(t: int) -> bool:
        curve = spent + t * one_step
        return rdp_to_epsilon(orders_, curve, delta, conversion)[0] <= epsilon_budget

    if not fits(1):
        return 0
    lo, hi = 1, 2
    while hi < max_steps and fits(hi):
        lo, hi = hi, min(2 * hi, max_steps)
    if fits(hi):
        return hi
    while hi - lo > 1:  # fits(lo) and not fits(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo
