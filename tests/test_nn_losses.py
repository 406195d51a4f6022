"""Losses: gradient checks, invariants (hypothesis), validation, and numerical gradcheck tools."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinyodl import nn
from tinyodl.nn.gradcheck import numerical_gradient, rel_error

logit_arrays = hnp.arrays(
    np.float64,
    st.tuples(st.integers(1, 6), st.integers(2, 7)),
    elements=st.floats(-30, 30, allow_nan=False),
)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_gradient(rng, reduction):
    logits, labels = rng.standard_normal((4, 5)), np.array([0, 4, 2, 2])
    loss, dlogits = nn.softmax_cross_entropy(logits, labels, reduction)
    numeric = numerical_gradient(
        lambda z: nn.softmax_cross_entropy(z, labels, reduction)[0], logits
    )
    assert rel_error(dlogits, numeric) < 1e-7
    expected = -np.log(np.exp(logits[np.arange(4), labels]) / np.exp(logits).sum(1))
    assert loss == pytest.approx(expected.mean() if reduction == "mean" else expected.sum())


def test_cross_entropy_soft_labels_gradient(rng):
    logits = rng.standard_normal((3, 4))
    targets = rng.dirichlet(np.ones(4), size=3)
    _, d = nn.softmax_cross_entropy(logits, targets)
    numeric = numerical_gradient(lambda z: nn.softmax_cross_entropy(z, targets)[0], logits)
    assert rel_error(d, numeric) < 1e-7


def test_cross_entropy_is_stable_for_huge_logits():
    loss, d = nn.softmax_cross_entropy(np.array([[1000.0, 0.0], [0.0, -1000.0]]), np.array([1, 1]))
    assert np.isfinite(loss) and np.all(np.isfinite(d))
    assert loss == pytest.approx((1000.0 + 1000.0) / 2)


@settings(max_examples=40, deadline=None)
@given(logits=logit_arrays, data=st.data())
def test_cross_entropy_invariants(logits, data):
    n, c = logits.shape
    labels = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    shift = data.draw(st.floats(-50, 50))
    loss, d = nn.softmax_cross_entropy(logits, labels)
    np.testing.assert_allclose(d.sum(axis=1), 0, atol=1e-12)  # rows of the gradient sum to 0
    shifted, d2 = nn.softmax_cross_entropy(logits + shift, labels)
    assert shifted == pytest.approx(loss, rel=1e-9, abs=1e-9)
    np.testing.assert_allclose(d2, d, atol=1e-12)
    assert loss >= 0


@settings(max_examples=30, deadline=None)
@given(logits=logit_arrays)
def test_softmax_rows_are_distributions(logits):
    p = nn.softmax(logits)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert np.all(p >= 0)


def test_cross_entropy_validation():
    logits = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\).*\[0, 3\]"):
        nn.softmax_cross_entropy(logits, np.array([0, 3]))
    with pytest.raises(ValueError, match=r"integer labels must have shape \(2,\), got \(3,\)"):
        nn.softmax_cross_entropy(logits, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"logits must be a 2-D float array"):
        nn.softmax_cross_entropy(np.zeros(3), np.array([0]))
    with pytest.raises(TypeError, match="labels must be integers"):
        nn.softmax_cross_entropy(logits, np.array(["a", "b"]))
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum'"):
        nn.softmax_cross_entropy(logits, np.array([0, 1]), reduction="none")


def test_mse_loss(rng):
    pred, target = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    loss, d = nn.mse_loss(pred, target)
    assert loss == pytest.approx(((pred - target) ** 2).mean())
    numeric = numerical_gradient(lambda p: nn.mse_loss(p, target)[0], pred)
    assert rel_error(d, numeric) < 1e-7
    with pytest.raises(ValueError, match=r"pred shape \(3, 4\) != target shape \(4,\)"):
        nn.mse_loss(pred, np.zeros(4))


def test_accuracy():
    assert nn.accuracy(np.array([[0.0, 1.0], [2.0, 1.0]]), np.array([1, 1])) == 0.5


def test_numerical_gradient_of_known_functions():
    x = np.array([1.0, -2.0, 3.0])
    np.testing.assert_allclose(numerical_gradient(lambda v: np.sum(v**3), x), 3 * x**2, rtol=1e-8)
    df = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(numerical_gradient(np.sin, x, df=df), np.cos(x) * df, rtol=1e-8)
    np.testing.assert_array_equal(x, [1.0, -2.0, 3.0])  # restored


def test_rel_error():
    assert rel_error(np.ones(3), np.ones(3)) == 0.0
    assert rel_error(np.array([1.0]), np.array([3.0])) == pytest.approx(0.5)
    assert rel_error(np.zeros(2), np.zeros(2)) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        rel_error(np.ones(2), np.ones(3))
