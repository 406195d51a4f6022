"""Chapter 10: the RDP accountant against closed forms, quadrature and dp-accounting.

dp-accounting (test-only dependency) is exact at integer orders; at fractional orders below
about 3 its series adds the absolute values of the terms, an upper bound that is loose when
the sampling rate is large (measured in ``benchmarks/dp_accounting_grid.py``). So the oracle
comparisons are: integer orders exactly, the default grid within 1% wherever the optimum is
not at such an order (epsilon <= 10 on the grid below), never larger than dp-accounting, and
fractional orders against numerical quadrature of the defining integral.
"""

import itertools
import logging
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate

from tinyodl import privacy

INTEGER_ORDERS = [float(a) for a in range(2, 65)] + [128.0, 256.0]
GRID_QS = [0.001, 0.01, 0.06, 0.3]
GRID_SIGMAS = [0.7, 1.1, 2.0, 6.0]
GRID_STEPS = [1, 300, 30_000]
GRID_DELTAS = [1e-5, 1e-8]


def _rdp_by_quadrature(q, sigma, alpha):
    """R(alpha) = log E_{z~N(0,s^2)}[(1 - q + q exp((2z-1)/(2s^2)))^alpha] / (alpha - 1),
    integrating (.)^alpha - 1 so that the tiny excess over 1 keeps its precision."""

    def integrand(z):
        log_ratio = (2 * z - 1) / (2 * sigma**2)
        if log_ratio < 30:
            inner = alpha * math.log1p(q * math.expm1(log_ratio))
        else:  # q e^r dominates 1 - q: log(1 - q + q e^r) = log q + r + log1p((1 - q) e^-r / q)
            inner = alpha * (
                math.log(q) + log_ratio + math.log1p((1 - q) * math.exp(-log_ratio) / q)
            )
        log_density = -(z**2) / (2 * sigma**2) - math.log(math.sqrt(2 * math.pi) * sigma)
        if inner < 30:
            return math.exp(log_density) * math.expm1(inner)
        return math.exp(log_density + inner) - math.exp(log_density)

    z0 = sigma**2 * math.log(1 / q - 1) + 0.5
    value, _ = integrate.quad(
        integrand,
        -40 * sigma,
        40 * sigma + alpha + 10,
        points=[0.5, z0],
        limit=500,
        epsabs=0,
        epsrel=1e-11,
    )
    return math.log1p(value) / (alpha - 1)


# ----------------------------------------------------------------------------- closed forms


@settings(max_examples=40, deadline=None)
@given(sigma=st.floats(0.3, 20), alpha=st.integers(2, 200))
def test_full_batch_is_the_gaussian_mechanism(sigma, alpha):
    got = privacy.rdp_subsampled_gaussian(1.0, sigma, [alpha])[0]
    assert got == pytest.approx(alpha / (2 * sigma**2), rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(q=st.floats(1e-4, 0.99), sigma=st.floats(0.3, 20))
def test_order_two_closed_form(q, sigma):
    got = privacy.rdp_subsampled_gaussian(q, sigma, [2.0])[0]
    assert got == pytest.approx(math.log1p(q**2 * math.expm1(1 / sigma**2)), rel=1e-10)


@pytest.mark.parametrize(
    ("q", "sigma", "alpha"),
    [
        (0.01, 1.1, 1.1),
        (0.1, 4.0, 1.5),
        (0.3, 0.6, 1.1),
        (0.06, 0.6, 1.2),
        (0.01, 1.1, 3.3),
        (0.001, 5.0, 7.5),
        (0.3, 0.6, 7.5),
    ],
)
def test_fractional_orders_match_quadrature(q, sigma, alpha):
    got = privacy.rdp_subsampled_gaussian(q, sigma, [alpha])[0]
    assert got == pytest.approx(_rdp_by_quadrature(q, sigma, alpha), rel=1e-7)


def test_fractional_series_is_continuous_at_integer_orders():
    a = [3.0 - 1e-7, 3.0, 3.0 + 1e-7]
    values = privacy.rdp_subsampled_gaussian(0.02, 1.3, a)
    np.testing.assert_allclose(values, values[1], rtol=1e-5)


def test_rdp_curves_of_other_mechanisms():
    orders = [1.5, 2.0, 10.0]
    np.testing.assert_allclose(privacy.rdp_gaussian(2.0, orders), np.array(orders) / 8)
    np.testing.assert_allclose(
        privacy.rdp_tree_aggregation(2.0, 7, orders), 3 * np.array(orders) / 8
    )
    np.testing.assert_allclose(
        privacy.rdp_tree_aggregation(2.0, 8, orders), 4 * np.array(orders) / 8
    )
    # Laplace: bounded by the pure-DP epsilon 1/b, approaching it for large orders
    lap = privacy.rdp_laplace(0.5, [1.5, 10.0, 1000.0])
    assert np.all(lap <= 2.0) and lap[-1] == pytest.approx(2.0, rel=1e-2)
    rr = privacy.rdp_randomized_response(0.75, [1000.0])[0]
    assert rr == pytest.approx(math.log(3), rel=1e-2)
    assert np.all(privacy.rdp_subsampled_gaussian(0.0, 1.0, orders) == 0)
    assert np.all(np.isinf(privacy.rdp_subsampled_gaussian(0.1, 0.0, orders)))


def test_composition_adds_and_conversions_order():
    acc = privacy.RDPAccountant()
    acc.compose_subsampled_gaussian(0.01, 1.1, 100).compose_subsampled_gaussian(0.01, 1.1, 200)
    single = privacy.RDPAccountant().compose_subsampled_gaussian(0.01, 1.1, 300)
    np.testing.assert_allclose(acc.rdp_, single.rdp_)
    improved, classic = acc.epsilon(1e-5), acc.epsilon(1e-5, "classic")
    assert 0 < improved < classic
    # delta(epsilon) inverts epsilon(delta) on the same curve
    assert acc.delta(improved) == pytest.approx(1e-5, rel=1e-6)
    assert acc.delta(classic, "classic") == pytest.approx(1e-5, rel=1e-6)


def test_epsilon_is_a_float_and_inverses_hit_the_target():
    eps = privacy.epsilon(q=0.01, noise_multiplier=1.1, steps=6000, delta=1e-5)
    assert isinstance(eps, float)
    sigma = privacy.noise_multiplier_for_epsilon(eps, q=0.01, steps=6000, delta=1e-5)
    assert sigma == pytest.approx(1.1, rel=1e-3)
    assert privacy.epsilon(q=0.01, noise_multiplier=sigma, steps=6000, delta=1e-5) <= eps
    steps = privacy.steps_for_budget(eps, q=0.01, noise_multiplier=1.1, delta=1e-5)
    assert steps >= 6000
    assert privacy.epsilon(q=0.01, noise_multiplier=1.1, steps=steps + 1, delta=1e-5) > eps
    assert privacy.steps_for_budget(1e-6, q=0.5, noise_multiplier=0.5, delta=1e-5) == 0


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="delta"):
        privacy.epsilon(q=0.1, noise_multiplier=1.0, steps=10, delta=0.0)
    with pytest.raises(ValueError, match="q must be"):
        privacy.rdp_subsampled_gaussian(1.5, 1.0)
    with pytest.raises(ValueError, match="orders"):
        privacy.RDPAccountant(orders=[0.5, 2.0])
    with pytest.raises(ValueError, match="conversion"):
        privacy.rdp_to_epsilon([2.0], [1.0], 1e-5, "fancy")
    with pytest.raises(ValueError, match="one value per order"):
        privacy.RDPAccountant().compose(np.zeros(3))


# ----------------------------------------------------------------------------- dp-accounting


@pytest.fixture(scope="module")
def dpa():
    pytest.importorskip("dp_accounting")
    from dp_accounting import dp_event
    from dp_accounting.rdp import rdp_privacy_accountant

    logging.getLogger("absl").setLevel(logging.ERROR)  # its fractional-order warnings
    return dp_event, rdp_privacy_accountant


def _theirs(dpa, q, sigma, steps, orders=None):
    dp_event, rdp_acc = dpa
    acc = rdp_acc.RdpAccountant(orders=orders)
    acc.compose(dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma)), steps)
    return acc


@pytest.mark.parametrize(("q", "sigma"), list(itertools.product(GRID_QS, GRID_SIGMAS)))
def test_integer_orders_agree_with_dp_accounting(dpa, q, sigma):
    mine = privacy.RDPAccountant(INTEGER_ORDERS).compose_subsampled_gaussian(q, sigma, 1)
    for steps, delta in itertools.product(GRID_STEPS, GRID_DELTAS):
        theirs = _theirs(dpa, q, sigma, steps, INTEGER_ORDERS)
        ours = privacy.rdp_to_epsilon(INTEGER_ORDERS, steps * mine.rdp_, delta)[0]
        assert ours == pytest.approx(theirs.get_epsilon(delta), rel=1e-8), (q, sigma, steps, delta)


@pytest.mark.slow
def test_default_orders_agree_with_dp_accounting_within_one_percent(dpa):
    worst = 0.0
    for q, sigma in itertools.product(GRID_QS, GRID_SIGMAS):
        one = privacy.RDPAccountant().compose_subsampled_gaussian(q, sigma, 1).rdp_
        theirs_one = _theirs(dpa, q, sigma, 1)._rdp
        for steps, delta in itertools.product(GRID_STEPS, GRID_DELTAS):
            ours = privacy.rdp_to_epsilon(privacy.DEFAULT_ORDERS, steps * one, delta)[0]
            theirs = privacy.rdp_to_epsilon(privacy.DEFAULT_ORDERS, steps * theirs_one, delta)[0]
            # their conversion on their curve, to be sure the curve is what we compare
            assert ours <= theirs * (1 + 1e-9)  # exact series <= their upper bound
            if theirs <= 10:
                worst = max(worst, abs(ours - theirs) / theirs)
    assert worst < 0.01


def test_conversions_agree_with_dp_accounting(dpa):
    _, rdp_acc = dpa
    orders = privacy.DEFAULT_ORDERS
    curve = 5000 * privacy.rdp_subsampled_gaussian(0.01, 1.0, orders)
    for delta in GRID_DELTAS:
        assert privacy.rdp_to_epsilon(orders, curve, delta)[0] == pytest.approx(
            rdp_acc.compute_epsilon(orders, curve, delta)[0], rel=1e-12
        )
    for eps in [0.5, 2.0, 8.0]:
        assert privacy.rdp_to_delta(orders, curve, eps)[0] == pytest.approx(
            rdp_acc.compute_delta(orders, curve, eps)[0], rel=1e-9
        )


def test_heterogeneous_composition_agrees_with_dp_accounting(dpa):
    dp_event, rdp_acc = dpa
    orders = INTEGER_ORDERS
    ours = privacy.RDPAccountant(orders)
    ours.compose_gaussian(8.0)  # a DP-PCA release
    ours.compose_subsampled_gaussian(0.01, 1.2, 2000)
    ours.compose_subsampled_gaussian(0.02, 2.0, 500)
    ours.compose_laplace(4.0, 3)
    ours.compose_tree_aggregation(3.0, 100, epochs=2)
    theirs = rdp_acc.RdpAccountant(orders=orders)
    theirs.compose(dp_event.GaussianDpEvent(8.0))
    theirs.compose(dp_event.PoissonSampledDpEvent(0.01, dp_event.GaussianDpEvent(1.2)), 2000)
    theirs.compose(dp_event.PoissonSampledDpEvent(0.02, dp_event.GaussianDpEvent(2.0)), 500)
    theirs.compose(dp_event.LaplaceDpEvent(4.0), 3)
    # dp-accounting accounts tree aggregation only under "replace with a special record",
    # which for a sum of clipped records is the same sensitivity as add/remove
    tree = rdp_acc.RdpAccountant(
        orders=orders,
        neighboring_relation=rdp_acc.privacy_accountant.NeighboringRelation.REPLACE_SPECIAL,
    )
    tree.compose(dp_event.SingleEpochTreeAggregationDpEvent(3.0, 100), 2)
    total = theirs._rdp + tree._rdp
    np.testing.assert_allclose(ours.rdp_, total, rtol=1e-9)
    expected = rdp_acc.compute_epsilon(orders, total, 1e-6)[0]
    assert ours.epsilon(1e-6) == pytest.approx(expected, rel=1e-9)


def test_fractional_orders_are_never_above_dp_accounting(dpa):
    # their series sums absolute values: an upper bound on the exact value we compute
    orders = [1.1, 1.5, 2.5, 4.5]
    for q, sigma in [(0.01, 1.1), (0.1, 4.0), (0.3, 1.0)]:
        ours = privacy.rdp_subsampled_gaussian(q, sigma, orders)
        theirs = _theirs(dpa, q, sigma, 1, orders)._rdp
        assert np.all(ours <= theirs * (1 + 1e-9))
