"""Chapter 11: query attacks (NES/SPSA, HopSkipJump, transfer prior) and transfer."""

from __future__ import annotations

import numpy as np
import pytest
from security_helpers import mnist_mlp, mnist_test, trained_tiny

from tinyodl.attacks import BlackBox, Classifier
from tinyodl.attacks.blackbox import NES, HopSkipJump, TransferPriorAttack, margin, margin_objective
from tinyodl.attacks.transfer import quantize_weights, transfer_attack, transfer_rate


def test_margin_sign_and_targeted_form():
    logp = np.log(np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3]]))
    y = np.array([0, 0])
    m = margin(logp, y)
    np.testing.assert_allclose(m, [np.log(0.7 / 0.2), np.log(0.2 / 0.5)])
    np.testing.assert_allclose(
        margin(logp, np.array([2, 2]), targeted=True), [np.log(7), np.log(5 / 3)]
    )


def test_margin_objective_gradient_matches_finite_differences():
    model, x, y = trained_tiny(dtype="float64")
    clf = Classifier(model, clip_values=None)
    values, g = clf.gradient(x[:3].astype(np.float64), margin_objective(y[:3]))
    eps = 1e-6
    for i in range(3):
        for j in [(0, 0, 1), (0, 2, 3)]:
            xp, xm = x[i : i + 1].astype(np.float64).copy(), x[i : i + 1].astype(np.float64).copy()
            xp[(0, *j)] += eps
            xm[(0, *j)] -= eps
            fp = margin(np.log(np.exp(clf.predict(xp))), y[i : i + 1])[0]
            fm = margin(np.log(np.exp(clf.predict(xm))), y[i : i + 1])[0]
            assert abs((fp - fm) / (2 * eps) - g[i][j]) < 1e-5
    np.testing.assert_allclose(values, margin(clf.predict(x[:3].astype(np.float64)), y[:3]))


def test_nes_estimate_points_along_the_true_gradient():
    model, x, y = trained_tiny(dtype="float64")
    clf = Classifier(model, clip_values=None)
    true = clf.gradient(x[:1].astype(np.float64), margin_objective(y[:1]))[1][0].ravel()
    for sampling in ("gaussian", "rademacher"):
        nes = NES(model, samples=400, sigma=1e-3, sampling=sampling, seed=0)
        est = nes.estimate_gradient(x[0].astype(np.float64), int(y[0]), np.random.default_rng(0))
        cos = est.ravel() @ true / (np.linalg.norm(est) * np.linalg.norm(true))
        assert cos > 0.9
        assert nes.victim.queries_ == 800


def test_nes_fools_the_model_within_its_budget_and_counts_queries():
    model = mnist_mlp()
    x, y = mnist_test(8)
    box = BlackBox(model, "scores")
    nes = NES(box, eps=0.2, eps_step=0.02, samples=10, momentum=0.9, max_queries=800, seed=0)
    adv = nes.generate(x, y)
    assert nes.queries_.max() <= 800 and nes.queries_.sum() == box.queries_
    assert np.abs(adv - x).max() <= 0.2 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    pred = Classifier(model).predict_labels(adv)
    np.testing.assert_array_equal(nes.success_, pred != y)
    assert nes.success_.mean() >= 0.5


def test_label_only_victim_refuses_scores():
    box = BlackBox(mnist_mlp(), "labels")
    with pytest.raises(PermissionError):
        box.scores(mnist_test(2)[0])
    with pytest.raises(ValueError, match="output"):
        BlackBox(mnist_mlp(), "logits")


def test_hopskipjump_shrinks_the_distance_and_stays_adversarial():
    model = mnist_mlp()
    x, y = mnist_test(4)
    short = HopSkipJump(model, max_queries=200, seed=0)
    short.generate(x, y)
    long = HopSkipJump(model, max_queries=1500, seed=0)
    adv = long.generate(x, y)
    assert long.queries_.max() <= 1500
    assert np.all(Classifier(model).predict_labels(adv) != y)
    assert np.all(long.distances_ <= short.distances_ + 1e-6)
    assert np.median(long.distances_) < 0.7 * np.median(short.distances_)
    np.testing.assert_allclose(long.distances_, np.linalg.norm((adv - x).reshape(4, -1), axis=1))
    with pytest.raises(ValueError, match="x_init"):
        HopSkipJump(model, targeted=True).generate(x, y)


def test_targeted_hopskipjump_from_target_images():
    model = mnist_mlp()
    x, y = mnist_test(64)
    pred = Classifier(model).predict_labels(x)
    src, tgt = np.flatnonzero(pred == 1)[:2], np.flatnonzero(pred == 7)[:2]
    hsj = HopSkipJump(model, targeted=True, max_queries=800, seed=0)
    adv = hsj.generate(x[src], np.full(2, 7), x_init=x[tgt])
    np.testing.assert_array_equal(Classifier(model).predict_labels(adv), [7, 7])
    assert np.all(hsj.distances_ < np.linalg.norm((x[tgt] - x[src]).reshape(2, -1), axis=1))


def test_transfer_prior_with_a_perfect_surrogate_needs_one_query():
    model = mnist_mlp()
    x, y = mnist_test(6)
    attack = TransferPriorAttack(model, surrogate=model, eps=0.3, max_queries=500, seed=0)
    attack.generate(x, y)
    # PGD on the victim itself always works: every example succeeds at its first query
    assert attack.success_.all() and np.all(attack.queries_ == 1) and attack.transferred_.all()


def test_transfer_rate_counts_only_examples_the_target_gets_right():
    model = mnist_mlp()
    x, y = mnist_test(50)
    clf = Classifier(model)
    right = clf.predict_labels(x) == y
    assert 0 < right.sum() < 50
    assert transfer_rate(model, x, y, x) == 0.0
    out = transfer_attack(model, model, x, y, eps=0.3, steps=10)
    assert out["source_success"] == out["transfer_rate"] > 0.9
    with pytest.raises(ValueError, match="none"):
        transfer_rate(model, x[~right], y[~right], x[~right])


def test_quantize_weights_rounds_to_255_levels_per_channel():
    model = mnist_mlp()
    q = quantize_weights(model)
    for (name, p), (_, pq) in zip(model.named_parameters(), q.named_parameters(), strict=True):
        if name.endswith("weight"):
            scale = np.abs(p.data).max(axis=1, keepdims=True) / 127
            levels = pq.data / scale
            np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
            assert np.abs(pq.data - p.data).max() <= scale.max() / 2 + 1e-7
        else:
            np.testing.assert_array_equal(pq.data, p.data)
    x, y = mnist_test(100)
    agree = np.mean(Classifier(q).predict_labels(x) == Classifier(model).predict_labels(x))
    assert agree >= 0.95  # 8-bit weights barely change the decisions
