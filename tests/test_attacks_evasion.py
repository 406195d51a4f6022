"""Chapter 11: the estimator and the white-box evasion attacks (FGSM, PGD)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from security_helpers import blobs, tiny_mlp, trained_tiny

from tinyodl import nn
from tinyodl.attacks import (
    FGSM,
    PGD,
    Classifier,
    FastGradientMethod,
    ProjectedGradientDescent,
    adversarial_accuracy,
    frozen,
    projection,
    random_ball,
)
from tinyodl.attacks.evasion import steepest_ascent

# ----------------------------------------------------------------------------- estimator


def test_loss_gradient_matches_numerical_gradient_per_example():
    model = tiny_mlp(0, "float64")
    x, y = blobs(6)
    x = x.astype(np.float64)
    clf = Classifier(model, clip_values=None)
    g = clf.loss_gradient(x, y)

    def total(_):
        return float(clf.loss(x, y).sum())

    num = nn.numerical_gradient(total, x, h=1e-6)
    assert nn.rel_error(g, num) < 1e-6
    # each row is that example's own gradient: changing another example changes nothing
    x2 = x.copy()
    x2[1:] = 0.5
    assert np.allclose(clf.loss_gradient(x2, y)[0], g[0])


def test_frozen_leaves_gradients_and_flags_untouched():
    model = tiny_mlp(0)
    x, y = blobs(8)
    logits = model.forward(x)
    _, d = nn.softmax_cross_entropy(logits, y)
    model.backward(d)
    before = {n: p.grad.copy() for n, p in model.named_parameters()}
    model["classifier.0"].params["bias"].trainable = False
    Classifier(model).loss_gradient(x, y)  # runs inside frozen()
    for n, p in model.named_parameters():
        if n == "classifier.0.bias":
            assert not p.trainable and p.grad is None
        else:
            assert p.trainable
            np.testing.assert_array_equal(p.grad, before[n])
    with frozen(model):
        assert not any(p.trainable for p in model.parameters())


def test_prediction_without_backward_does_not_leak_into_a_later_gradient():
    # a forward never backpropagated (predict) must not leave a stale input behind
    model = tiny_mlp(0)
    x, y = blobs(40)
    clf = Classifier(model, batch_size=7)
    model.forward(x[:30], train=False)  # trainable forward: saves inputs, never used
    g = clf.loss_gradient(x[:5], y[:5])
    assert g.shape == x[:5].shape
    np.testing.assert_allclose(g, Classifier(tiny_mlp(0)).loss_gradient(x[:5], y[:5]), atol=1e-7)


def test_classifier_batches_give_the_same_result_and_count_queries():
    model, x, y = trained_tiny()
    a, b = Classifier(model, batch_size=7), Classifier(model, batch_size=1000)
    np.testing.assert_allclose(a.predict(x), b.predict(x), rtol=1e-6)
    np.testing.assert_allclose(a.loss_gradient(x, y), b.loss_gradient(x, y), atol=1e-7)
    assert a.queries_ == 2 * len(x) and a.gradient_calls_ == len(x)


def test_classifier_rejects_bad_input():
    with pytest.raises(TypeError, match="forward"):
        Classifier(object())
    with pytest.raises(ValueError, match="clip_values"):
        Classifier(tiny_mlp(), clip_values=(1.0, 0.0))
    with pytest.raises(ValueError, match="float"):
        Classifier(tiny_mlp()).predict(np.zeros((2, 1, 4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="labels"):
        Classifier(tiny_mlp()).loss_gradient(np.zeros((2, 1, 4, 4), np.float32), np.zeros(3, int))


# ----------------------------------------------------------------------------- geometry


@settings(max_examples=40, deadline=None)
@given(
    eps=st.floats(0.0, 2.0),
    norm=st.sampled_from([np.inf, 2]),
    seed=st.integers(0, 2**16),
    scale=st.floats(0.01, 5.0),
)
def test_projection_lands_in_the_ball_and_is_idempotent(eps, norm, seed, scale):
    rng = np.random.default_rng(seed)
    delta = (scale * rng.standard_normal((5, 1, 3, 3))).astype(np.float32)
    p = projection(delta, eps, norm)
    flat = p.reshape(5, -1).astype(np.float64)
    lengths = np.abs(flat).max(1) if norm == np.inf else np.linalg.norm(flat, axis=1)
    assert np.all(lengths <= eps * (1 + 1e-6) + 1e-7)
    np.testing.assert_allclose(projection(p, eps, norm), p, atol=1e-6)
    inside = projection(delta, 1e9, norm)  # a ball that holds everything changes nothing
    np.testing.assert_array_equal(inside, delta)


def test_random_ball_is_inside_and_fills_the_ball():
    for norm in (np.inf, 2):
        r = random_ball((4000, 1, 2, 2), 0.5, norm, seed=1)
        flat = r.reshape(len(r), -1)
        lengths = np.abs(flat).max(1) if norm == np.inf else np.linalg.norm(flat, axis=1)
        assert lengths.max() <= 0.5
        if norm == 2:  # uniform in volume: E[radius] = d / (d + 1) * eps with d = 4
            assert abs(lengths.mean() - 0.4) < 0.01
        else:
            assert abs(flat.mean()) < 0.01 and abs(flat.std() - 0.5 / np.sqrt(3)) < 0.01
    np.testing.assert_array_equal(
        random_ball((3, 4), 1.0, 2, seed=5), random_ball((3, 4), 1.0, 2, seed=5)
    )


def test_steepest_ascent_is_a_unit_vector_along_the_gradient():
    g = np.random.default_rng(0).standard_normal((3, 1, 2, 2)).astype(np.float32)
    np.testing.assert_array_equal(steepest_ascent(g, np.inf), np.sign(g))
    s = steepest_ascent(g, 2)
    np.testing.assert_allclose(np.linalg.norm(s.reshape(3, -1), axis=1), 1.0, rtol=1e-6)
    assert np.all(steepest_ascent(np.zeros((2, 3)), 2) == 0)
    with pytest.raises(ValueError, match="norm"):
        steepest_ascent(g, 1)


# ----------------------------------------------------------------------------- FGSM


def test_fgsm_is_exactly_eps_sign_gradient_clipped():
    model, x, y = trained_tiny()
    clf = Classifier(model)
    g = clf.loss_gradient(x, y)
    for eps in (0.05, 0.3):
        expected = np.clip(x + np.float32(eps) * np.sign(g), 0, 1)
        np.testing.assert_array_equal(FGSM(model, eps=eps).generate(x, y), expected)
    targeted = FGSM(model, eps=0.1, targeted=True).generate(x, (y + 1) % 3)
    g_t = clf.loss_gradient(x, (y + 1) % 3)
    np.testing.assert_array_equal(targeted, np.clip(x - np.float32(0.1) * np.sign(g_t), 0, 1))


def test_fgm_l2_step_has_length_eps_before_clipping():
    model, x, y = trained_tiny()
    x = np.full_like(x, 0.5)  # far from the clip bounds
    adv = FastGradientMethod(model, norm=2, eps=0.2).generate(x, y)
    lengths = np.linalg.norm((adv - x).reshape(len(x), -1), axis=1)
    np.testing.assert_allclose(lengths, 0.2, rtol=1e-5)


def test_fgsm_without_labels_attacks_the_prediction_and_targeted_needs_labels():
    model, x, y = trained_tiny()
    pred = Classifier(model).predict_labels(x)
    np.testing.assert_array_equal(
        FGSM(model, eps=0.1).generate(x), FGSM(model, eps=0.1).generate(x, pred)
    )
    with pytest.raises(ValueError, match="target"):
        FGSM(model, targeted=True).generate(x)


def test_fgsm_random_start_stays_in_the_ball_and_is_seeded():
    model, x, y = trained_tiny()
    a = FGSM(model, eps=0.1, eps_step=0.125, num_random_init=1, seed=3).generate(x, y)
    b = FGSM(model, eps=0.1, eps_step=0.125, num_random_init=1, seed=3).generate(x, y)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - x).max() <= 0.1 + 1e-7 and a.min() >= 0 and a.max() <= 1


# ----------------------------------------------------------------------------- PGD


@settings(max_examples=15, deadline=None)
@given(
    eps=st.floats(0.01, 1.0),
    steps=st.integers(1, 6),
    norm=st.sampled_from([np.inf, 2]),
    restarts=st.integers(0, 2),
    seed=st.integers(0, 1000),
)
def test_pgd_stays_in_the_ball_and_the_valid_range(eps, steps, norm, restarts, seed):
    model = tiny_mlp(seed % 5)
    x, y = blobs(12, seed)
    attack = PGD(
        model,
        norm=norm,
        eps=eps,
        eps_step=eps / 2,
        max_iter=steps,
        num_random_init=restarts,
        seed=seed,
    )
    adv = attack.generate(x, y)
    d = (adv - x).reshape(len(x), -1).astype(np.float64)
    length = np.abs(d).max(1) if norm == np.inf else np.linalg.norm(d, axis=1)
    assert np.all(length <= eps * (1 + 1e-5) + 1e-6)
    assert adv.min() >= 0 and adv.max() <= 1 and adv.dtype == x.dtype


def test_pgd_increases_the_loss_and_beats_fgsm():
    model, x, y = trained_tiny()
    clf = Classifier(model)
    clean = clf.loss(x, y).mean()
    adv = PGD(model, eps=0.3, eps_step=0.05, max_iter=10).generate(x, y)
    assert clf.loss(adv, y).mean() > clf.loss(FGSM(model, eps=0.3).generate(x, y), y).mean() * 0.99
    assert clf.loss(adv, y).mean() > clean
    assert adversarial_accuracy(model, PGD(model, eps=0.3, eps_step=0.05, max_iter=10), x, y) < (
        adversarial_accuracy(model, None, x, y)
    )


def test_targeted_pgd_reaches_the_target():
    model, x, y = trained_tiny()
    target = (y + 1) % 3
    adv = PGD(model, eps=0.6, eps_step=0.05, max_iter=40, targeted=True).generate(x, target)
    assert np.mean(Classifier(model).predict_labels(adv) == target) > 0.9


def test_restarts_keep_an_example_that_was_already_fooled():
    model, x, y = trained_tiny()
    attack = PGD(model, eps=0.2, eps_step=0.05, max_iter=3, num_random_init=4, seed=0)
    adv = attack.generate(x, y)
    single = PGD(model, eps=0.2, eps_step=0.05, max_iter=3, num_random_init=1, seed=0).generate(
        x, y
    )
    fooled_single = attack.success(single, y)
    # the first restart is the single run; whatever it fooled stays fooled
    assert np.all(attack.success(adv, y)[fooled_single])
    np.testing.assert_array_equal(adv[fooled_single], single[fooled_single])


def test_attack_parameters_are_validated():
    model = tiny_mlp()
    with pytest.raises(ValueError, match="norm"):
        ProjectedGradientDescent(model, norm=1)
    with pytest.raises(ValueError, match="eps_step"):
        PGD(model, eps_step=0)
    with pytest.raises(ValueError, match="max_iter"):
        PGD(model, max_iter=0)
    with pytest.raises(ValueError, match="y must be"):
        PGD(model).generate(np.zeros((2, 1, 4, 4), np.float32), np.zeros((3,), int))
