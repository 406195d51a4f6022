"""Chapter 10: tree aggregation, DP-FTRL and its accountant."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyodl import nn, privacy


@settings(max_examples=20, deadline=None)
@given(steps=st.integers(1, 70), seed=st.integers(0, 1000))
def test_noise_free_tree_gives_exact_prefix_sums_with_popcount_nodes(steps, seed):
    rng = np.random.default_rng(seed)
    leaves = rng.standard_normal((steps, 3))
    tree = privacy.TreeAggregator(noise_std=0.0)
    for t in range(1, steps + 1):
        np.testing.assert_allclose(tree.add(leaves[t - 1]), leaves[:t].sum(0), atol=1e-12)
        assert len(tree.stack) == bin(t).count("1")  # nodes of t's binary decomposition
    # a leaf is merged into at most one node per level
    assert tree.nodes_created <= steps * math.ceil(math.log2(steps + 1))
    assert max(level for level, _, _ in tree.stack) <= math.ceil(math.log2(steps + 1)) - 1


def test_prefix_sum_noise_variance_is_popcount_times_sigma_squared():
    # over many independent trees, the noise of prefix sum t has variance popcount(t) sigma^2
    trials, steps, sigma = 4000, 12, 0.5
    noise = np.zeros((trials, steps))
    rng = np.random.default_rng(0)
    for i in range(trials):
        tree = privacy.TreeAggregator(sigma, rng)
        for t in range(steps):
            noise[i, t] = tree.add(np.zeros(1))[0]
    expected = np.array([bin(t).count("1") for t in range(1, steps + 1)]) * sigma**2
    # the sample variance has relative standard error sqrt(2 / trials) ~ 2.2%
    np.testing.assert_allclose(noise.var(axis=0), expected, rtol=5 * math.sqrt(2 / trials))


def test_ftrl_accountant_and_its_inverse():
    eps = privacy.ftrl_epsilon(2.0, 100, 3, 1e-5)
    direct = privacy.RDPAccountant().compose_gaussian(2.0 / math.sqrt(7), 3).epsilon(1e-5)
    assert eps == pytest.approx(direct, rel=1e-12)  # depth ceil(log2 101) = 7 per epoch
    sigma = privacy.ftrl_noise_for_epsilon(eps, 100, 3, 1e-5)
    assert sigma == pytest.approx(2.0, rel=1e-3)
    assert privacy.ftrl_epsilon(sigma, 100, 3, 1e-5) <= eps
    prior = privacy.RDPAccountant().compose_gaussian(5.0)
    assert privacy.ftrl_epsilon(2.0, 100, 3, 1e-5, prior=prior) > eps


def test_ftrl_accountant_agrees_with_dp_accounting():
    pytest.importorskip("dp_accounting")
    from dp_accounting import dp_event
    from dp_accounting.rdp import rdp_privacy_accountant as rdp_acc

    relation = rdp_acc.privacy_accountant.NeighboringRelation.REPLACE_SPECIAL
    acc = rdp_acc.RdpAccountant(orders=privacy.DEFAULT_ORDERS, neighboring_relation=relation)
    acc.compose(dp_event.SingleEpochTreeAggregationDpEvent(1.7, 250), 4)
    assert privacy.ftrl_epsilon(1.7, 250, 4, 1e-6) == pytest.approx(acc.get_epsilon(1e-6), rel=1e-9)


def _model():
    return nn.Sequential([nn.Linear(6, 8, seed=0), nn.ReLU(), nn.Linear(8, 3, seed=1)]).astype(
        np.float64
    )


def test_noise_free_dp_ftrl_is_clipped_gradient_descent():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 6)), rng.integers(0, 3, 40)
    ftrl_model, sgd_model = _model(), _model()
    ftrl = privacy.DPFTRL(ftrl_model, lr=0.3, clip_norm=0.5, noise_multiplier=0.0, batch_size=10)
    dp = privacy.DPSGD(
        sgd_model,
        nn.SGD(sgd_model, lr=0.3),
        clip_norm=0.5,
        noise_multiplier=0.0,
        expected_batch_size=10,
    )
    for b in range(4):
        ftrl.step(x[10 * b : 10 * b + 10], y[10 * b : 10 * b + 10])
        dp.step(x[10 * b : 10 * b + 10], y[10 * b : 10 * b + 10])
    for key, value in sgd_model.state_dict().items():
        np.testing.assert_allclose(ftrl_model.state_dict()[key], value, rtol=1e-10)


def test_dp_ftrl_weights_follow_the_noisy_prefix_sum():
    # theta_t = theta_0 - lr * (noisy prefix sum) / B, exactly, without momentum
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((30, 6)), rng.integers(0, 3, 30)
    model = _model()
    theta0 = nn.parameters_to_vector(model).copy()
    ftrl = privacy.DPFTRL(model, lr=0.2, clip_norm=1.0, noise_multiplier=0.7, batch_size=10, seed=3)
    for b in range(3):
        ftrl.step(x[10 * b : 10 * b + 10], y[10 * b : 10 * b + 10])
    prefix = sum(node_sum + noise for _, node_sum, noise in ftrl.tree.stack)
    np.testing.assert_allclose(
        nn.parameters_to_vector(model), theta0 - 0.2 * prefix / 10, rtol=1e-9, atol=1e-12
    )


def test_fit_dpftrl_learns_and_accounts_per_epoch():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((3, 6)) * 3
    y = rng.integers(0, 3, 400)
    x = (centers[y] + rng.standard_normal((400, 6))).astype(np.float32)
    model = nn.Sequential([nn.Linear(6, 8, seed=0), nn.ReLU(), nn.Linear(8, 3, seed=1)])
    run = privacy.fit_dpftrl(
        model,
        x[:300],
        y[:300],
        batch_size=30,
        clip_norm=1.0,
        noise_multiplier=0.5,
        epochs=2,
        lr=0.2,
        momentum=0.5,
        delta=1e-5,
        seed=0,
        x_val=x[300:],
        y_val=y[300:],
    )
    assert run.steps == 20
    assert run.epsilons[1] == pytest.approx(privacy.ftrl_epsilon(0.5, 10, 2, 1e-5))
    assert run.history.val_accuracy[-1] > 0.8
