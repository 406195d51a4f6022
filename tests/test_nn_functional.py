"""Gradient checks of every functional forward/backward pair (float64, both backends)."""

from __future__ import annotations

import numpy as np
import pytest

from tinyodl.nn import functional as F
from tinyodl.nn.gradcheck import numerical_gradient, rel_error

TOL = 1e-6


def _check(forward, inputs, backward, grads_index, rng):
    """Check each analytic gradient of ``sum(forward(*inputs) * dout)`` numerically."""
    out, cache = forward(*inputs)
    dout = rng.standard_normal(out.shape)
    grads = backward(dout, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    for g_pos, in_pos in grads_index:
        numeric = numerical_gradient(lambda _v: forward(*inputs)[0], inputs[in_pos], df=dout)
        assert rel_error(grads[g_pos], numeric) < TOL, (g_pos, in_pos)


def test_linear_pair(backend_name, rng):
    x, w, b = rng.standard_normal((4, 5)), rng.standard_normal((3, 5)), rng.standard_normal(3)
    _check(F.linear_forward, [x, w, b], F.linear_backward, [(0, 0), (1, 1), (2, 2)], rng)


def test_linear_backward_without_input_gives_no_dw(backend_name, rng):
    x, w = rng.standard_normal((4, 5)), rng.standard_normal((3, 5))
    out, cache = F.linear_forward(x, w)
    dx, dw, db = F.linear_backward(np.ones_like(out), {"w": cache["w"]})
    assert dw is None
    np.testing.assert_allclose(dx, np.ones_like(out) @ w)


@pytest.mark.parametrize(
    "stride, padding, groups, channels", [(1, 1, 1, 2), (2, 0, 1, 3), (1, 1, 2, 4), (2, 1, 4, 4)]
)
def test_conv2d_pair(backend_name, rng, stride, padding, groups, channels):
    x = rng.standard_normal((2, channels, 5, 5))
    w = rng.standard_normal((4, channels // groups, 3, 3))
    b = rng.standard_normal(4)

    def forward(x, w, b):
        return F.conv2d_forward(x, w, b, stride, padding, groups)

    _check(forward, [x, w, b], F.conv2d_backward, [(0, 0), (1, 1), (2, 2)], rng)


def test_conv2d_per_example_grads_sum_to_batch_grad(backend_name, rng):
    x, w = rng.standard_normal((3, 4, 5, 5)), rng.standard_normal((6, 2, 3, 3))
    out, cache = F.conv2d_forward(x, w, None, 2, 1, 2)
    dout = rng.standard_normal(out.shape)
    _, dw, db = F.conv2d_backward(dout, cache)
    dw_s, db_s = F.conv2d_per_example_grads(dout, x, w.shape, 2, 1, 2)
    assert dw_s.shape == (3, *w.shape)
    np.testing.assert_allclose(dw_s.sum(0), dw, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(db_s.sum(0), db)
    for n in range(3):  # each slice is the gradient of that example alone
        _, c1 = F.conv2d_forward(x[n : n + 1], w, None, 2, 1, 2)
        np.testing.assert_allclose(F.conv2d_backward(dout[n : n + 1], c1)[1], dw_s[n], atol=1e-10)


def test_relu_and_relu6_pairs(rng):
    x = rng.uniform(-3, 9, (4, 6))
    x[np.abs(x) < 0.01] = 0.5  # stay away from the kinks at 0 and 6
    x[np.abs(x - 6) < 0.01] = 5.0
    _check(F.relu_forward, [x], F.relu_backward, [(0, 0)], rng)
    _check(F.relu6_forward, [x], F.relu6_backward, [(0, 0)], rng)
    assert F.relu_forward(x)[1]["mask"].dtype == bool


def test_softmax_pair(rng):
    _check(F.softmax_forward, [rng.standard_normal((3, 5))], F.softmax_backward, [(0, 0)], rng)


@pytest.mark.parametrize("padding", [0, 1])
def test_pool_pairs(backend_name, rng, padding):
    x = rng.permutation(2 * 3 * 6 * 6).reshape(2, 3, 6, 6) / 100.0  # distinct values: no ties

    def maxpool(x):
        return F.maxpool2d_forward(x, 3, 2, padding)

    def avgpool(x):
        return F.avgpool2d_forward(x, 3, 2, padding)

    _check(maxpool, [x], F.maxpool2d_backward, [(0, 0)], rng)
    _check(avgpool, [x], F.avgpool2d_backward, [(0, 0)], rng)


def test_global_avgpool_pair(backend_name, rng):
    x = rng.standard_normal((2, 3, 4, 5))
    out, _ = F.global_avgpool_forward(x)
    np.testing.assert_allclose(out, x.mean(axis=(2, 3)))
    _check(F.global_avgpool_forward, [x], F.global_avgpool_backward, [(0, 0)], rng)


@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 2, 3)])
@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_pair(rng, shape, train):
    c = shape[1]
    x = rng.standard_normal(shape) * 2 + 1
    gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
    rm, rv = rng.standard_normal(c), rng.uniform(0.5, 2, c)

    def forward(x, gamma, beta):
        return F.batchnorm_forward(x, gamma, beta, 1e-5, train, rm, rv)

    _check(forward, [x, gamma, beta], F.batchnorm_backward, [(0, 0), (1, 1), (2, 2)], rng)


def test_batchnorm_train_normalises_each_channel(rng):
    x = rng.standard_normal((8, 3, 4, 4)) * 5 + 3
    out, cache = F.batchnorm_forward(x, np.ones(3), np.zeros(3), eps=0.0)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=(0, 2, 3)), 1, atol=1e-10)
    np.testing.assert_allclose(cache["mean"], x.mean(axis=(0, 2, 3)))


def test_dropout_pair_with_fixed_mask(rng):
    x = rng.standard_normal((5, 6))
    mask = rng.random(x.shape) >= 0.3

    def forward(x):
        return F.dropout_forward(x, 0.3, mask=mask)

    _check(forward, [x], F.dropout_backward, [(0, 0)], rng)
    out, _ = forward(x)
    np.testing.assert_allclose(out, x * mask / 0.7)


def test_dropout_eval_is_identity_and_keeps_expectation(rng):
    x = np.ones((200, 200))
    out, cache = F.dropout_forward(x, 0.5, rng, train=False)
    assert out is x and cache == {}
    out, cache = F.dropout_forward(x, 0.5, rng)
    assert abs(out.mean() - 1.0) < 0.02  # inverted dropout keeps E[out] = x
    assert abs(cache["mask"].mean() - 0.5) < 0.02
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\)"):
        F.dropout_forward(x, 1.0, rng)
