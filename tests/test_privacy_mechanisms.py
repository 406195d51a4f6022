"""Chapter 10: Laplace, Gaussian (classic and analytic) and randomized response.

The empirical noise is checked against the calibration with tolerances of about five
standard errors of the estimate (seeded, so the tests are deterministic).
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from tinyodl import privacy


def test_laplace_noise_has_the_calibrated_scale():
    b = privacy.laplace_scale(sensitivity=2.0, epsilon=0.5)
    assert b == 4.0
    out = privacy.laplace_mechanism(np.zeros(200_000), 2.0, 0.5, rng=0)
    # E|X| = b for Laplace(0, b); std of |X| is b, so the standard error is b / sqrt(n)
    assert abs(np.mean(np.abs(out)) - b) < 5 * b / math.sqrt(out.size)
    assert abs(np.mean(out)) < 5 * math.sqrt(2) * b / math.sqrt(out.size)
    assert stats.kstest(out, "laplace", args=(0, b)).pvalue > 1e-3


def test_laplace_mechanism_is_epsilon_dp_on_a_counting_query():
    # neighbouring counts 10 and 11: the density ratio of any output is at most e^eps
    eps, b = 0.7, privacy.laplace_scale(1.0, 0.7)
    z = np.linspace(-20, 40, 1001)
    ratio = stats.laplace.pdf(z, 10, b) / stats.laplace.pdf(z, 11, b)
    assert ratio.max() <= math.exp(eps) * (1 + 1e-12)
    assert ratio.max() >= math.exp(eps) * (1 - 1e-9)  # and the bound is attained


def test_classic_gaussian_formula_and_its_validity_range():
    sigma = privacy.gaussian_sigma_classic(1.0, 0.5, 1e-5)
    assert sigma == pytest.approx(math.sqrt(2 * math.log(1.25e5)) / 0.5)
    with pytest.raises(ValueError, match="epsilon < 1"):
        privacy.gaussian_sigma_classic(1.0, 2.0, 1e-5)
    with pytest.raises(ValueError, match="delta"):
        privacy.gaussian_sigma_classic(1.0, 0.5, 0.0)


@settings(max_examples=30, deadline=None)
@given(
    eps=st.floats(0.05, 8.0),
    log10_delta=st.floats(-10, -2),
    sensitivity=st.floats(0.1, 10.0),
)
def test_analytic_gaussian_solves_the_exact_profile(eps, log10_delta, sensitivity):
    delta = 10.0**log10_delta
    sigma = privacy.gaussian_sigma_analytic(sensitivity, eps, delta)
    assert privacy.gaussian_delta(sigma, sensitivity, eps) == pytest.approx(delta, rel=1e-6)
    # a little less noise is no longer enough: sigma is the smallest
    assert privacy.gaussian_delta(sigma * 0.999, sensitivity, eps) > delta
    if eps < 1:  # where the classic bound holds it is never tighter
        assert sigma <= privacy.gaussian_sigma_classic(sensitivity, eps, delta)


def test_analytic_gaussian_is_much_tighter_for_large_epsilon_and_scales_with_sensitivity():
    s1 = privacy.gaussian_sigma_analytic(1.0, 0.9, 1e-5)
    assert s1 < 0.85 * privacy.gaussian_sigma_classic(1.0, 0.9, 1e-5)
    assert privacy.gaussian_sigma_analytic(3.0, 0.9, 1e-5) == pytest.approx(3 * s1, rel=1e-8)


def test_gaussian_delta_matches_the_privacy_loss_distribution_by_monte_carlo():
    # the privacy loss of N(0, s^2) vs N(D, s^2) at output z is L = (D^2 - 2 D z) / (2 s^2);
    # delta(eps) = P[L > eps] - e^eps P[L' > eps] with z ~ N(0, s^2), resp. z ~ N(D, s^2)
    rng = np.random.default_rng(1)
    sens, sigma, eps = 1.0, 1.3, 0.8
    z0 = rng.normal(0.0, sigma, 2_000_000)
    z1 = rng.normal(sens, sigma, 2_000_000)
    loss0 = (sens**2 - 2 * sens * z0) / (2 * sigma**2)
    loss1 = (sens**2 - 2 * sens * z1) / (2 * sigma**2)
    empirical = np.mean(loss0 > eps) - math.exp(eps) * np.mean(loss1 > eps)
    assert empirical == pytest.approx(privacy.gaussian_delta(sigma, sens, eps), abs=2e-3)


def test_gaussian_mechanism_noise_has_the_calibrated_std():
    sigma = privacy.gaussian_sigma_analytic(2.0, 1.5, 1e-6)
    out = privacy.gaussian_mechanism(np.full(100_000, 3.0), 2.0, 1.5, 1e-6, rng=2)
    noise = out - 3.0
    # the sample std has standard error sigma / sqrt(2n)
    assert abs(noise.std() - sigma) < 5 * sigma / math.sqrt(2 * noise.size)
    assert stats.kstest(noise / sigma, "norm").pvalue > 1e-3
    classic = privacy.gaussian_mechanism(np.zeros(50_000), 2.0, 0.5, 1e-6, 2, "classic")
    expected = privacy.gaussian_sigma_classic(2.0, 0.5, 1e-6)
    assert abs(classic.std() - expected) < 5 * expected / math.sqrt(2 * classic.size)
    with pytest.raises(ValueError, match="calibration"):
        privacy.gaussian_mechanism(0.0, 1.0, 1.0, 1e-5, calibration="fancy")


@pytest.mark.parametrize("k", [2, 5])
def test_randomized_response_keeps_with_the_calibrated_probability(k):
    eps = 1.2
    p = privacy.randomized_response_keep_probability(eps, k)
    assert p == pytest.approx(math.exp(eps) / (math.exp(eps) + k - 1))
    rng = np.random.default_rng(3)
    truth = rng.integers(0, k, 200_000)
    reports = privacy.randomized_response(truth, eps, k, rng=4)
    kept = np.mean(reports == truth)
    assert abs(kept - p) < 5 * math.sqrt(p * (1 - p) / truth.size)
    # every other answer is equally likely: the ratio of any two report probabilities <= e^eps
    for true_value in range(k):
        counts = np.bincount(reports[truth == true_value], minlength=k)
        others = np.delete(counts, true_value)
        assert others.max() / max(others.min(), 1) < 1.1
    # the unbiased estimator recovers the true frequencies
    est = privacy.estimate_frequencies(reports, eps, k)
    np.testing.assert_allclose(est, np.bincount(truth, minlength=k) / truth.size, atol=0.01)


def test_randomized_response_rejects_bad_input():
    with pytest.raises(ValueError, match="integers in"):
        privacy.randomized_response(np.array([0, 3]), 1.0, 2)
    with pytest.raises(ValueError, match="integers in"):
        privacy.randomized_response(np.array([0.5]), 1.0, 2)
    with pytest.raises(ValueError, match="epsilon"):
        privacy.randomized_response(np.array([0]), -1.0)
    with pytest.raises(ValueError, match="sensitivity"):
        privacy.laplace_scale(0.0, 1.0)
