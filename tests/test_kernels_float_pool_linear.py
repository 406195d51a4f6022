"""Float pooling and linear kernels: Cython == reference, gradient checks, properties, errors."""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck_utils import (
    assert_close,
    cython_float_kernels_built,
    load_float_kernels,
    numeric_gradient,
    rel_error,
)
from hypothesis import assume, given, settings
from hypothesis import strategies as st

DTYPES = [np.float32, np.float64]

# (x_shape, kernel_size, stride, padding)
POOL_CASES = [
    ((2, 3, 7, 6), 3, 2, 1),
    ((1, 2, 6, 6), 2, None, 0),
    ((2, 2, 8, 7), (3, 2), (1, 2), (1, 1)),
    ((1, 1, 4, 4), 3, 1, 1),
    ((3, 4, 5, 9), (2, 4), 3, (1, 2)),
    ((1, 2, 1, 1), 1, 1, 0),
    ((2, 3, 5, 5), 5, 1, 2),  # window as large as the image
]


def _distinct(shape, rng, dtype=np.float64):
    """Values at least 0.01 apart, so small perturbations never change a max."""
    return (rng.permutation(int(np.prod(shape))).reshape(shape) * 0.01).astype(dtype)


# ------------------------------------------------------------------ cython == reference


@pytest.mark.skipif(not cython_float_kernels_built(), reason="compiled float kernels not built")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES)
def test_pool_cython_matches_reference(case, dtype):
    ref, cy = load_float_kernels("numpy"), load_float_kernels("cython")
    shape, k, s, p = case
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(dtype)
    x[:, :, ::2] = np.round(x[:, :, ::2])  # ties: the first pixel in window order wins
    out, argmax = ref.maxpool2d_forward(x, k, s, p)
    out_c, argmax_c = cy.maxpool2d_forward(x, k, s, p)
    assert_close(out_c, out, "maxpool out")
    assert argmax_c.dtype == np.int64 and np.array_equal(argmax_c, argmax)
    dout = rng.standard_normal(out.shape).astype(dtype)
    assert_close(
        cy.maxpool2d_backward(dout, argmax, shape), ref.maxpool2d_backward(dout, argmax, shape)
    )
    assert_close(cy.avgpool2d_forward(x, k, s, p), ref.avgpool2d_forward(x, k, s, p))
    assert_close(
        cy.avgpool2d_backward(dout, shape, k, s, p), ref.avgpool2d_backward(dout, shape, k, s, p)
    )


@pytest.mark.skipif(not cython_float_kernels_built(), reason="compiled float kernels not built")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,i,o", [(1, 7, 3), (5, 20, 11), (64, 100, 10), (3, 1, 1)])
def test_linear_cython_matches_reference(n, i, o, dtype):
    ref, cy = load_float_kernels("numpy"), load_float_kernels("cython")
    rng = np.random.default_rng(n + i + o)
    x = rng.standard_normal((n, i)).astype(dtype)
    w = rng.standard_normal((o, i)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    dout = rng.standard_normal((n, o)).astype(dtype)
    assert_close(cy.linear_forward(x, w, b), ref.linear_forward(x, w, b))
    assert_close(cy.linear_forward(x, w), ref.linear_forward(x, w))
    assert_close(cy.linear_backward_input(dout, w), ref.linear_backward_input(dout, w))
    assert_close(cy.linear_backward_weight(dout, x), ref.linear_backward_weight(dout, x))


@pytest.mark.skipif(not cython_float_kernels_built(), reason="compiled float kernels not built")
def test_pool_thread_count_does_not_change_results():
    ref, cy = load_float_kernels("numpy"), load_float_kernels("cython")
    x = np.random.default_rng(0).standard_normal((3, 5, 9, 9))
    try:
        cy.pool.set_num_threads(2)
        assert np.array_equal(
            cy.maxpool2d_forward(x, 3, 2, 1)[1], ref.maxpool2d_forward(x, 3, 2, 1)[1]
        )
        assert_close(cy.avgpool2d_forward(x, 3, 2, 1), ref.avgpool2d_forward(x, 3, 2, 1))
    finally:
        cy.pool.set_num_threads(1)


# ------------------------------------------------------------------ both backends


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtypes_and_noncontiguous(fk, dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 6, 6)).astype(dtype)
    x_nc = np.asfortranarray(x)
    out, argmax = fk.maxpool2d_forward(x_nc, 2)
    assert out.dtype == dtype and argmax.dtype == np.int64
    assert_close(out, fk.maxpool2d_forward(x, 2)[0])
    assert fk.maxpool2d_backward(out, argmax, x.shape).dtype == dtype
    assert_close(fk.avgpool2d_forward(x_nc, 3, 1, 1), fk.avgpool2d_forward(x, 3, 1, 1))
    assert fk.avgpool2d_backward(out, x.shape, 2).dtype == dtype
    w = rng.standard_normal((4, 6)).astype(dtype)
    xl = rng.standard_normal((6, 5)).astype(dtype).T  # (5, 6), non-contiguous
    assert_close(fk.linear_forward(xl, w), xl @ w.T)
    d = rng.standard_normal((5, 4)).astype(dtype)
    assert_close(fk.linear_backward_input(d, np.asfortranarray(w)), d @ w)
    assert_close(fk.linear_backward_weight(np.asfortranarray(d), xl), d.T @ xl)


@pytest.mark.parametrize("case", POOL_CASES[:5])
def test_maxpool_gradient(fk, case):
    shape, k, s, p = case
    rng = np.random.default_rng(2)
    x = _distinct(shape, rng)
    out, argmax = fk.maxpool2d_forward(x, k, s, p)
    dout = rng.standard_normal(out.shape)

    def loss():
        return float(np.sum(fk.maxpool2d_forward(x, k, s, p)[0] * dout))

    dx = fk.maxpool2d_backward(dout, argmax, shape)
    assert rel_error(dx, numeric_gradient(loss, x)) < 1e-7


@pytest.mark.parametrize("case", POOL_CASES[:5])
def test_avgpool_gradient(fk, case):
    shape, k, s, p = case
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape)
    dout = rng.standard_normal(fk.avgpool2d_forward(x, k, s, p).shape)

    def loss():
        return float(np.sum(fk.avgpool2d_forward(x, k, s, p) * dout))

    dx = fk.avgpool2d_backward(dout, shape, k, s, p)
    assert rel_error(dx, numeric_gradient(loss, x)) < 1e-7


def test_linear_gradients(fk):
    rng = np.random.default_rng(6)
    x, w, b = rng.standard_normal((4, 5)), rng.standard_normal((3, 5)), rng.standard_normal(3)
    dout = rng.standard_normal((4, 3))

    def loss():
        return float(np.sum(fk.linear_forward(x, w, b) * dout))

    assert rel_error(fk.linear_backward_input(dout, w), numeric_gradient(loss, x)) < 1e-7
    assert rel_error(fk.linear_backward_weight(dout, x), numeric_gradient(loss, w)) < 1e-7
    assert rel_error(dout.sum(axis=0), numeric_gradient(loss, b)) < 1e-7


def test_maxpool_padding_never_wins(fk):
    x = -np.ones((1, 1, 3, 3)) - np.arange(9).reshape(1, 1, 3, 3)  # all negative
    out, argmax = fk.maxpool2d_forward(x, 3, 1, 1)
    assert (out < 0).all()
    assert (argmax >= 0).all() and (argmax < 9).all()
    assert argmax[0, 0, 0, 0] == 0 and argmax[0, 0, 2, 2] == 4


# ------------------------------------------------------------------ properties

pool_geometry = st.fixed_dictionaries(
    {
        "shape": st.tuples(
            st.integers(1, 2), st.integers(1, 3), st.integers(1, 8), st.integers(1, 8)
        ),
        "k": st.tuples(st.integers(1, 4), st.integers(1, 4)),
        "stride": st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))),
        "pad": st.tuples(st.integers(0, 2), st.integers(0, 2)),
        "seed": st.integers(0, 2**16),
    }
)


def _pool_ok(g) -> bool:
    (_, _, h, w), (kh, kw), (ph, pw) = g["shape"], g["k"], g["pad"]
    return 2 * ph <= kh and 2 * pw <= kw and h + 2 * ph >= kh and w + 2 * pw >= kw


@settings(max_examples=30, deadline=None)
@given(g=pool_geometry)
def test_maxpool_argmax_gathers_the_output(fk, g):
    assume(_pool_ok(g))
    x = np.random.default_rng(g["seed"]).standard_normal(g["shape"])
    out, argmax = fk.maxpool2d_forward(x, g["k"], g["stride"], g["pad"])
    n, c, h, w = x.shape
    gathered = np.take_along_axis(x.reshape(n, c, h * w), argmax.reshape(n, c, -1), axis=2)
    assert np.array_equal(gathered.reshape(out.shape), out)


@settings(max_examples=30, deadline=None)
@given(g=pool_geometry)
def test_avgpool_is_a_depthwise_conv_with_constant_weights(fk, g):
    assume(_pool_ok(g))
    x = np.random.default_rng(g["seed"]).standard_normal(g["shape"])
    c = x.shape[1]
    kh, kw = g["k"]
    stride = g["stride"] if g["stride"] is not None else g["k"]
    w = np.full((c, 1, kh, kw), 1.0 / (kh * kw))
    expected = fk.conv2d_forward(x, w, stride=stride, padding=g["pad"], groups=c)
    np.testing.assert_allclose(
        fk.avgpool2d_forward(x, g["k"], g["stride"], g["pad"]), expected, atol=1e-12
    )


@settings(max_examples=20, deadline=None)
@given(g=pool_geometry)
def test_pool_backward_is_adjoint(fk, g):
    """<pool(x), d> == <x, pool_backward(d)> for average pooling (a linear map)."""
    assume(_pool_ok(g))
    rng = np.random.default_rng(g["seed"])
    x = rng.standard_normal(g["shape"])
    out = fk.avgpool2d_forward(x, g["k"], g["stride"], g["pad"])
    d = rng.standard_normal(out.shape)
    dx = fk.avgpool2d_backward(d, x.shape, g["k"], g["stride"], g["pad"])
    assert np.isclose(np.vdot(out, d), np.vdot(x, dx), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ errors


def test_pool_errors(fk):
    x = np.zeros((2, 3, 6, 6), np.float32)
    with pytest.raises(
        ValueError, match=r"maxpool2d_forward: padding \(2, 2\) must be at most half"
    ):
        fk.maxpool2d_forward(x, 3, 1, 2)
    with pytest.raises(
        ValueError, match=r"avgpool2d_forward: padding \(2, 2\) must be at most half"
    ):
        fk.avgpool2d_forward(x, 3, 1, 2)
    with pytest.raises(
        TypeError, match="maxpool2d_forward: x must be float32 or float64, got uint8"
    ):
        fk.maxpool2d_forward(x.astype(np.uint8), 2)
    with pytest.raises(ValueError, match="maxpool2d_forward: window of size 7"):
        fk.maxpool2d_forward(x, 7)
    out, argmax = fk.maxpool2d_forward(x, 2)
    with pytest.raises(ValueError, match="maxpool2d_backward: argmax shape"):
        fk.maxpool2d_backward(out, argmax[:, :, :2], x.shape)
    with pytest.raises(
        ValueError, match=r"maxpool2d_backward: argmax entries must lie in \[0, 16\)"
    ):
        fk.maxpool2d_backward(out, argmax, (2, 3, 4, 4))
    with pytest.raises(TypeError, match="maxpool2d_backward: argmax must be an integer array"):
        fk.maxpool2d_backward(out, argmax.astype(np.float32), x.shape)
    with pytest.raises(
        ValueError, match=r"avgpool2d_backward: dout must have shape \(2, 3, 3, 3\)"
    ):
        fk.avgpool2d_backward(out[:, :, :2], x.shape, 2)


def test_linear_errors(fk):
    x, w = np.zeros((4, 5), np.float32), np.zeros((3, 6), np.float32)
    with pytest.raises(ValueError, match="linear_forward: w has 6 input features but x has 5"):
        fk.linear_forward(x, w)
    with pytest.raises(
        TypeError, match="linear_forward: w has dtype float64 but the input has dtype float32"
    ):
        fk.linear_forward(x, np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"linear_forward: b must have shape \(3,\)"):
        fk.linear_forward(x, w[:, :5], np.zeros(4, np.float32))
    with pytest.raises(
        ValueError, match="linear_backward_input: w has 3 output features but dout has 2"
    ):
        fk.linear_backward_input(np.zeros((4, 2), np.float32), w)
    with pytest.raises(
        ValueError, match="linear_backward_weight: dout has batch size 3 but x has 4"
    ):
        fk.linear_backward_weight(np.zeros((3, 2), np.float32), x)
    with pytest.raises(ValueError, match=r"linear_forward: x must be 2-D, got shape \(5,\)"):
        fk.linear_forward(x[0], w)
    with pytest.raises(TypeError, match="linear_forward: x must be a numpy array, got list"):
        fk.linear_forward([[1.0]], w)
