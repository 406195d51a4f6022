"""Backward kernels through int8 layers (both backends) against float64 gradients."""

from __future__ import annotations

import numpy as np
import pytest
from int8_oracles import conv_acc_float

from tinyodl.reference import int8_backward as ref

RTOL, ATOL = 2e-5, 1e-4  # float32 results of sums of a few hundred float32 products


def rand_s8(rng, shape, lo=-128, hi=127):
    return rng.integers(lo, hi + 1, shape).astype(np.int8)


def numerical_grad(f, x, eps=1e-3):
    """Central differences of the scalar function ``f`` at float64 ``x``."""
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + eps
        up = f(x)
        x[idx] = old - eps
        down = f(x)
        x[idx] = old
        grad[idx] = (up - down) / (2 * eps)
    return grad


CASES = [  # (N, C, H, W, F, KH, KW, stride, padding, groups)
    (2, 3, 6, 5, 4, 3, 3, 1, 1, 1),
    (1, 4, 7, 7, 6, 3, 2, (2, 1), (1, 0), 2),
    (2, 2, 5, 5, 2, 1, 1, 1, 0, 1),
    (1, 4, 6, 6, 4, 3, 3, 2, 1, 4),
]


def pair(v):
    return (v, v) if isinstance(v, int) else v


def make_case(rng, case):
    n, c, h, w, f, kh, kw, stride, padding, groups = case
    x = rand_s8(rng, (n, c, h, w))
    wq = rand_s8(rng, (f, c // groups, kh, kw), -127)
    return x, wq, pair(stride), pair(padding), groups


@pytest.mark.parametrize("case", CASES)
def test_conv_backward_input_central_differences(kernels, rng, case):
    x, wq, stride, padding, groups = make_case(rng, case)
    out_shape = conv_acc_float(x.astype(float), wq.astype(float), None, stride, padding, groups)
    dout = rng.normal(size=out_shape.shape).astype(np.float32)
    dx = kernels.conv2d_s8_backward_input(dout, wq, x.shape, stride, padding, groups)
    assert dx.dtype == np.float32 and dx.shape == x.shape

    def loss(xf):
        return np.sum(dout * conv_acc_float(xf, wq.astype(float), None, stride, padding, groups))

    want = numerical_grad(loss, x.astype(np.float64))
    np.testing.assert_allclose(dx, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("case", CASES)
def test_conv_backward_weight_central_differences(kernels, rng, case):
    x, wq, stride, padding, groups = make_case(rng, case)
    zp = int(rng.integers(-128, 128))
    xc = x.astype(np.float64) - zp  # the padding holds zp, i.e. 0 after centring
    dout = rng.normal(
        size=conv_acc_float(xc, wq.astype(float), None, stride, padding, groups).shape
    )
    dout = dout.astype(np.float32)
    dw = kernels.conv2d_s8_backward_weight(dout, x, zp, wq.shape, stride, padding, groups)
    assert dw.dtype == np.float32 and dw.shape == wq.shape

    def loss(wf):
        return np.sum(dout * conv_acc_float(xc, wf, None, stride, padding, groups))

    want = numerical_grad(loss, wq.astype(np.float64))
    scale = np.abs(want).max()
    np.testing.assert_allclose(dw, want, rtol=RTOL, atol=1e-6 * scale)


def test_linear_backward_closed_form(kernels, rng):
    x, w = rand_s8(rng, (5, 9)), rand_s8(rng, (4, 9), -127)
    dout = rng.normal(size=(5, 4)).astype(np.float32)
    dx = kernels.linear_s8_backward_input(dout, w)
    dw = kernels.linear_s8_backward_weight(dout, x, -7)
    assert dx.dtype == dw.dtype == np.float32
    np.testing.assert_allclose(dx, dout.astype(float) @ w, rtol=RTOL, atol=ATOL)
    want = dout.astype(float).T @ (x.astype(float) + 7)
    np.testing.assert_allclose(dw, want, rtol=RTOL, atol=1e-3)

    def loss(wf):  # and one gradient check: dW of sum(dout * (x - zp) @ W.T)
        return np.sum(dout * ((x.astype(float) + 7) @ wf.T))

    np.testing.assert_allclose(dw, numerical_grad(loss, w.astype(float)), rtol=RTOL, atol=1e-3)


@pytest.mark.torch
@pytest.mark.parametrize("case", CASES)
def test_conv_backward_against_torch_autograd(kernels, rng, case):
    torch = pytest.importorskip("torch")
    x, wq, stride, padding, groups = make_case(rng, case)
    zp = 11
    xt = torch.tensor(x.astype(np.float64) - zp, requires_grad=True)
    wt = torch.tensor(wq.astype(np.float64), requires_grad=True)
    out = torch.nn.functional.conv2d(xt, wt, stride=stride, padding=padding, groups=groups)
    dout = rng.normal(size=tuple(out.shape)).astype(np.float32)
    out.backward(torch.from_numpy(dout.astype(np.float64)))
    dx = kernels.conv2d_s8_backward_input(dout, wq, x.shape, stride, padding, groups)
    dw = kernels.conv2d_s8_backward_weight(dout, x, zp, wq.shape, stride, padding, groups)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=RTOL, atol=1e-3)


def test_backends_agree_on_larger_conv(kernels, rng):
    x, wq = rand_s8(rng, (3, 8, 12, 12)), rand_s8(rng, (16, 4, 3, 3), -127)
    dout = rng.normal(size=(3, 16, 6, 6)).astype(np.float32)
    dx = kernels.conv2d_s8_backward_input(dout, wq, x.shape, 2, 1, 2)
    dw = kernels.conv2d_s8_backward_weight(dout, x, -3, wq.shape, 2, 1, 2)
    np.testing.assert_allclose(dx, ref.conv2d_s8_backward_input(dout, wq, x.shape, 2, 1, 2),
                               rtol=RTOL, atol=ATOL)  # fmt: skip
    want = ref.conv2d_s8_backward_weight(dout, x, -3, wq.shape, 2, 1, 2)
    np.testing.assert_allclose(dw, want, rtol=RTOL, atol=1e-6 * np.abs(want).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ste_clamp_backward_masks_bounds(kernels, rng, dtype):
    q = np.array([[-128, -20, -19, 0, 99, 100, 127]], np.int8)
    dout = rng.normal(size=q.shape).astype(dtype)
    got = kernels.ste_clamp_backward(dout, q, -20, 100)
    assert got.dtype == dtype
    assert got.tolist() == [[0, 0, dout[0, 2], dout[0, 3], dout[0, 4], 0, 0]]
    q3 = rand_s8(rng, (2, 3, 4, 5))
    d3 = rng.normal(size=q3.shape).astype(dtype)
    got = kernels.ste_clamp_backward(d3, q3, -50, 50)
    assert np.array_equal(got, np.where((q3 > -50) & (q3 < 50), d3, 0))


def test_backward_errors(kernels, rng):
    x, w = rand_s8(rng, (1, 2, 5, 5)), rand_s8(rng, (3, 2, 3, 3), -127)
    dout = np.zeros((1, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"dout must have shape \(1, 3, 3, 3\)"):
        kernels.conv2d_s8_backward_input(dout[:, :2], w, x.shape)
    with pytest.raises(TypeError, match="w must be int8"):
        kernels.conv2d_s8_backward_input(dout, w.astype(np.float32), x.shape)
    with pytest.raises(TypeError, match="dout must be a float"):
        kernels.conv2d_s8_backward_weight(dout.astype(np.int32), x, 0, w.shape)
    with pytest.raises(ValueError, match="q has shape"):
        kernels.ste_clamp_backward(dout, x, -128, 127)


# the pointwise paths (kernels/simd/float_s8a.h): shapes around the MR x NR tiles (4 x 24 on
# AVX2, 8 x 32 on AVX-512), N > 1, tails in every dimension; (N, C, H, W, F)
POINTWISE = [
    (1, 1, 1, 1, 1),
    (2, 13, 5, 3, 7),
    (3, 9, 4, 4, 33),
    (1, 40, 7, 7, 24),
    (2, 17, 6, 1, 65),
]


@pytest.mark.parametrize("shape", POINTWISE)
def test_pointwise_backward_against_reference(kernels, rng, shape):
    n, c, h, w, f = shape
    x, wq = rand_s8(rng, (n, c, h, w)), rand_s8(rng, (f, c, 1, 1), -127)
    dout = rng.normal(size=(n, f, h, w)).astype(np.float32)
    dx = kernels.conv2d_s8_backward_input(dout, wq, x.shape)
    dw = kernels.conv2d_s8_backward_weight(dout, x, 9, wq.shape)
    assert dx.dtype == dw.dtype == np.float32 and dx.shape == x.shape and dw.shape == wq.shape
    want = np.einsum("fc,nfp->ncp", wq[:, :, 0, 0].astype(float), dout.reshape(n, f, -1))
    np.testing.assert_allclose(dx, want.reshape(x.shape), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(dx, ref.conv2d_s8_backward_input(dout, wq, x.shape),
                               rtol=RTOL, atol=ATOL)  # fmt: skip
    want = ref.conv2d_s8_backward_weight(dout, x, 9, wq.shape)
    np.testing.assert_allclose(dw, want, rtol=RTOL, atol=1e-6 * np.abs(want).max())


def test_pointwise_backward_bits_do_not_depend_on_the_split(kernels, rng):
    """The engine asks for dx a few input channels at a time and dW for some output
    channels: each value is the same sum in the same order, so the same bits (F <= C: the
    in-place dW path for the whole layer and for the rows)."""
    n, c, h, w, f = 2, 37, 5, 5, 29
    x, wq = rand_s8(rng, (n, c, h, w)), rand_s8(rng, (f, c, 1, 1), -127)
    dout = rng.normal(size=(n, f, h, w)).astype(np.float32)
    dx = kernels.conv2d_s8_backward_input(dout, wq, x.shape)
    dw = kernels.conv2d_s8_backward_weight(dout, x, -5, wq.shape)
    for sl in (slice(0, 3), slice(3, 20), slice(20, 37)):
        part = kernels.conv2d_s8_backward_input(dout, wq[:, sl], (n, sl.stop - sl.start, h, w))
        assert np.array_equal(part, dx[:, sl])
    rows = [0, 4, 5, 28]
    part = kernels.conv2d_s8_backward_weight(
        np.ascontiguousarray(dout[:, rows]), x, -5, (len(rows), c, 1, 1)
    )
    assert np.array_equal(part, dw[rows])


def test_pointwise_backward_input_makes_no_copy_of_the_weights(backend_name, kernels, rng):
    """Scratch of the compiled dx: F x MR floats, not a float copy (4+ bytes per weight)."""
    import tracemalloc

    if backend_name != "cython":
        pytest.skip("the numpy reference converts the weights")
    kb = pytest.importorskip("tinyodl._kernels.int8_backward")
    if not kb.POINTWISE_DX_IN_PLACE:
        pytest.skip("no SIMD float micro-kernel in this build: convert and call BLAS")
    f, c = 256, 256
    wq, dout = rand_s8(rng, (f, c, 1, 1), -127), rng.normal(size=(1, f, 2, 2)).astype(np.float32)
    kernels.conv2d_s8_backward_input(dout, wq, (1, c, 2, 2))  # warm-up
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        dx = kernels.conv2d_s8_backward_input(dout, wq, (1, c, 2, 2))
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < dx.nbytes + wq.size, (peak, dx.nbytes)  # under 1 byte per weight


@pytest.mark.parametrize("n", [1, 3])
def test_pointwise_expansion_weight_grad_scratch_is_the_converted_input(
    backend_name, kernels, rng, n
):
    """dW of a 1x1 layer with F > C (an inverted-residual expansion): float32(x_q - zp) and
    BLAS per image, not dout transposed (4 N P F bytes, F / C times more); the engine's full
    update peaks at such a layer (``tinyodl bench engine``)."""
    import tracemalloc

    if backend_name != "cython":
        pytest.skip("the numpy reference's scratch is not the compiled kernel's")
    c, f, h, w = 16, 64, 14, 14
    x, wq = rand_s8(rng, (n, c, h, w)), rand_s8(rng, (f, c, 1, 1), -127)
    dout = rng.normal(size=(n, f, h, w)).astype(np.float32)
    want = ref.conv2d_s8_backward_weight(dout, x, 3, wq.shape)
    kernels.conv2d_s8_backward_weight(dout, x, 3, wq.shape)  # warm-up
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        dw = kernels.conv2d_s8_backward_weight(dout, x, 3, wq.shape)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    np.testing.assert_allclose(dw, want, rtol=RTOL, atol=1e-6 * np.abs(want).max())
    converted = 4 * x.size
    assert peak <= dw.nbytes + converted + 2048, (peak, dw.nbytes, converted)  # + headers
    assert peak < 4 * dout.size, (peak, 4 * dout.size)  # less than dout^T alone
