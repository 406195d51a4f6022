"""Chapter 11: privacy attacks -- model and gradient inversion, membership inference,
model extraction."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from security_helpers import blobs, mnist_mlp, mnist_test, tiny_mlp, trained_tiny

from tinyodl import models, nn
from tinyodl.attacks import Classifier
from tinyodl.attacks.inference import (
    ShadowModelAttack,
    agreement,
    dp_advantage_bound,
    extract_model,
    loss_threshold_attack,
    max_advantage,
    roc_auc,
)
from tinyodl.attacks.inversion import (
    DLG,
    gradient_matching_loss,
    infer_labels,
    invert_dense_gradient,
    match_reconstructions,
    mi_face,
    model_gradient,
)
from tinyodl.data import load_mnist, to_float
from tinyodl.train import fit

# ----------------------------------------------------------------------------- gradient inversion


def _first_layer_grads(model, x, y):
    g = model_gradient(model, x, y)
    w = model["features.1"].params["weight"]
    return g[: w.size].reshape(w.shape), g[w.size : w.size + w.shape[0]]


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-4), ("float64", 1e-10)])
def test_analytic_inversion_recovers_a_single_input_exactly(dtype, tol):
    model = models.mlp_2nn(seed=1).astype(dtype) if dtype != "float32" else models.mlp_2nn(seed=1)
    x, y = mnist_test(1)
    gw, gb = _first_layer_grads(model, x.astype(dtype), y)
    rec = invert_dense_gradient(gw, gb)
    np.testing.assert_allclose(rec, x.ravel(), atol=tol)


def test_analytic_inversion_of_a_batch_is_an_affine_mixture():
    model = models.mlp_2nn(seed=1).astype("float64")
    x, y = mnist_test(2)
    rec = invert_dense_gradient(*_first_layer_grads(model, x.astype(np.float64), y))
    coef, *_ = np.linalg.lstsq(x.reshape(2, -1).T.astype(np.float64), rec, rcond=None)
    np.testing.assert_allclose(x.reshape(2, -1).T @ coef, rec, atol=1e-8)  # in the span
    assert abs(coef.sum() - 1) < 1e-8 and not np.allclose(rec, x[0].ravel(), atol=1e-3)
    with pytest.raises(ValueError, match="zero"):
        invert_dense_gradient(np.ones((3, 4)), np.zeros(3))
    with pytest.raises(ValueError, match="expected"):
        invert_dense_gradient(np.ones((3, 4)), np.zeros(4))


def test_model_gradient_leaves_existing_gradients_alone():
    model, x, y = trained_tiny()
    _, d = nn.softmax_cross_entropy(model.forward(x), y)
    model.backward(d)
    kept = [p.grad.copy() for p in model.parameters()]
    g = model_gradient(model, x[:3], y[:3])
    assert g.size == sum(p.size for p in model.parameters())
    for p, k in zip(model.parameters(), kept, strict=True):
        np.testing.assert_array_equal(p.grad, k)


def test_infer_labels_from_the_last_bias_gradient():
    model = models.mlp_2nn(seed=3)
    x, y = mnist_test(40)
    for idx in ([5], [0, 1, 2], [3, 8, 9, 11]):
        idx = np.array(idx)
        if len(set(y[idx])) < len(idx):
            continue
        g = model_gradient(model, x[idx], y[idx])
        np.testing.assert_array_equal(infer_labels(g[-10:], len(idx)), np.sort(y[idx]))
    with pytest.raises(ValueError, match="batch_size"):
        infer_labels(np.zeros(10), 11)


def test_gradient_matching_gradient_matches_finite_differences():
    model = tiny_mlp(0, "float64")
    x, y = blobs(3)
    x = x.astype(np.float64)
    observed = model_gradient(model, x, y) + 0.05  # something to match
    dummy = np.random.default_rng(0).uniform(size=x.shape)
    loss, g = gradient_matching_loss(model, dummy, y, observed, h=1e-4)
    num = nn.numerical_gradient(
        lambda z: gradient_matching_loss(model, z, y, observed)[0], dummy, h=1e-6
    )
    assert nn.rel_error(g, num) < 1e-4 and loss > 0


def test_dlg_reconstructs_a_small_batch():
    model = tiny_mlp(2, "float64")
    x, y = blobs(2, seed=5)
    observed = model_gradient(model, x.astype(np.float64), y)
    for kw in ({}, {"distance": "l2", "optimizer": "adam", "lr": 0.1}):
        dlg = DLG(model, steps=400, restarts=4, seed=0, **kw)
        rec = dlg.reconstruct(observed, batch_size=2, shape=(1, 4, 4))
        np.testing.assert_array_equal(dlg.labels_, np.sort(y))
        score = match_reconstructions(x, rec)
        assert score["mean_mse"] < 1e-3 and dlg.losses_[-1] < 1e-3 * dlg.losses_[0], kw
    assert rec.dtype == np.float32 and rec.min() >= 0 and rec.max() <= 1


def test_match_reconstructions_finds_the_permutation():
    x = np.random.default_rng(0).uniform(size=(4, 1, 3, 3))
    rec = x[[2, 0, 3, 1]]
    out = match_reconstructions(x, rec)
    np.testing.assert_array_equal(out["order"], [1, 3, 0, 2])
    assert out["mean_mse"] == 0 and out["psnr"] > 100


def test_mi_face_raises_the_target_probability():
    model = mnist_mlp()
    x, costs = mi_face(model, target=3, steps=60, lr=0.1)
    p = nn.softmax(Classifier(model).predict(x[None]).astype(np.float64))[0]
    assert costs[-1] < costs[0] and p[3] > 0.9 and x.min() >= 0 and x.max() <= 1
    assert x.shape == (1, 28, 28)


# ----------------------------------------------------------------------------- membership


@settings(max_examples=25, deadline=None)
@given(
    a=st.lists(st.integers(0, 5), min_size=1, max_size=12),
    b=st.lists(st.integers(0, 5), min_size=1, max_size=12),
)
def test_auc_and_advantage_match_brute_force(a, b):
    a, b = np.array(a, float), np.array(b, float)
    pairs = (a[:, None] > b[None, :]).mean() + 0.5 * (a[:, None] == b[None, :]).mean()
    assert abs(roc_auc(a, b) - pairs) < 1e-12
    best = max((a >= t).mean() - (b >= t).mean() for t in np.concatenate([a, b, [np.inf]]))
    assert abs(max_advantage(a, b)[0] - best) < 1e-12


def test_dp_advantage_bounds():
    assert dp_advantage_bound(0.0) == {"yeom": 0.0, "tight": 0.0}
    b = dp_advantage_bound(0.5, 1e-5)
    assert abs(b["yeom"] - (np.exp(0.5) - 1)) < 1e-12
    assert abs(b["tight"] - (np.exp(0.5) - 1 + 2e-5) / (np.exp(0.5) + 1)) < 1e-12
    assert b["tight"] < b["yeom"] and dp_advantage_bound(5.0)["yeom"] == 1.0


def _overfit_mlp(x, y, seed):
    model = models.mlp_2nn(seed=seed)
    fit(
        model,
        nn.SGD(model, lr=0.1, momentum=0.9),
        x,
        y,
        epochs=30,
        batch_size=20,
        seed=seed,
        progress=False,
    )
    model.eval()
    return model


@pytest.fixture(scope="module")
def overfit():
    xi, yi = load_mnist("train")
    x, y = to_float(xi[:800]), yi[:800].astype(np.int64)
    return _overfit_mlp(x[:200], y[:200], 0), x, y


def test_loss_threshold_attack_detects_members_of_an_overfit_model(overfit):
    model, x, y = overfit
    out = loss_threshold_attack(model, x[:200], y[:200], x[200:400], y[200:400])
    assert out["auc"] > 0.6 and 0 < out["advantage"] <= 1
    assert out["advantage_at_tau"] <= out["advantage"] + 1e-12
    assert abs(out["tau"] - Classifier(model, None).loss(x[:200], y[:200]).mean()) < 1e-9


@pytest.mark.slow
def test_shadow_models_learn_membership(overfit):
    model, x, y = overfit
    attack = ShadowModelAttack(lambda a, b, s: _overfit_mlp(a, b, s), num_shadows=2, seed=0)
    attack.fit(x[400:800], y[400:800])  # the attacker's own data, disjoint from the victim's
    out = attack.evaluate(model, x[:200], y[:200], x[200:400], y[200:400])
    assert out["auc"] > 0.6 and out["advantage"] > 0.1


def test_model_extraction_agrees_with_the_victim():
    victim = mnist_mlp()
    xi, _ = load_mnist("train")
    queries = to_float(xi[-2000:])

    def train(student, xq, t):
        fit(
            student,
            nn.SGD(student, lr=0.1, momentum=0.9),
            xq,
            t,
            epochs=3,
            batch_size=50,
            seed=0,
            progress=False,
        )

    student, used = extract_model(victim, models.mlp_2nn(seed=7), queries, train)
    x, _ = mnist_test(500)
    assert used == 2000 and agreement(victim, student, x) > 0.85
    soft, used = extract_model(
        victim, models.mlp_2nn(seed=7), queries[:500], train, output="scores"
    )
    assert used == 500 and agreement(victim, soft, x) > 0.7
