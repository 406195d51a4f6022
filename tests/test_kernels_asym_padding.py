"""Asymmetric padding ``(top, bottom, left, right)`` in the conv kernels (chapter 13).

TFLite's and ONNX's SAME padding pads only the bottom/right when the padded total is odd
(a 3x3 stride-2 conv on an even input). The kernels take the 4-tuple natively; the oracle
is the explicit ``np.pad`` followed by an unpadded convolution, and torch for the floats.
"""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck_utils import numeric_gradient
from hypothesis import given, settings
from hypothesis import strategies as st
from test_kernels_int8 import rand_requant, rand_s8

from tinyodl import backend
from tinyodl._shapes import conv_output_shape, padding4
from tinyodl.reference import conv as ref
from tinyodl.reference import int8 as ref8
from tinyodl.reference import int8_backward as ref8_backward

# (H, W, K, stride, (top, bottom, left, right), groups, C, F): SAME at stride 2, odd
# kernels, depthwise, one case per Cython fast path (implicit GEMM needs stride 1,
# OH = H and C*K*K >= 64; depthwise uses phase planes)
CASES = [
    (8, 8, 3, 2, (0, 1, 0, 1), 1, 3, 5),
    (9, 7, 3, 1, (0, 2, 1, 1), 1, 4, 6),
    (8, 8, 3, 2, (0, 1, 0, 1), 4, 4, 4),
    (10, 10, 5, 2, (1, 2, 2, 1), 1, 16, 8),
    (8, 8, 3, 1, (0, 2, 2, 0), 1, 32, 16),
    (8, 8, 2, 1, (0, 1, 0, 1), 1, 40, 16),
    (12, 12, 3, 2, (0, 1, 0, 1), 8, 8, 8),
    (7, 9, 1, 1, (1, 0, 0, 2), 1, 4, 3),
]


def _explicit(x, top, bottom, left, right, value=0):
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def test_padding4_forms_and_errors():
    assert padding4(2) == (2, 2, 2, 2)
    assert padding4((1, 3)) == (1, 1, 3, 3)
    assert padding4((0, 1, 2, 3)) == (0, 1, 2, 3)
    with pytest.raises(ValueError, match="top, bottom, left, right"):
        padding4((1, 2, 3))
    assert conv_output_shape((1, 1, 8, 8), 3, 2, (0, 1, 0, 1)) == (4, 4)
    with pytest.raises(ValueError, match="non-negative"):
        conv_output_shape((1, 1, 8, 8), 3, 1, (0, -1, 0, 0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[:5]}g{c[5]}")
def test_float_conv_matches_explicit_pad(fk, rng, case, dtype):
    h, w, k, s, pad, groups, c, f = case
    x = rng.standard_normal((2, c, h, w)).astype(dtype)
    wt = rng.standard_normal((f, c // groups, k, k)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    out = fk.conv2d_forward(x, wt, b, s, pad, groups)
    want = ref.conv2d_forward(_explicit(x, *pad), wt, b, s, 0, groups)
    assert out.shape == want.shape
    np.testing.assert_allclose(out, want, **tol)
    dout = rng.standard_normal(out.shape).astype(dtype)
    top, bottom, left, right = pad
    dxp = ref.conv2d_backward_input(dout, wt, _explicit(x, *pad).shape, s, 0, groups)
    dx_want = dxp[:, :, top : top + h, left : left + w]
    np.testing.assert_allclose(fk.conv2d_backward_input(dout, wt, x.shape, s, pad, groups),
                               dx_want, **tol)  # fmt: skip
    dw_want = ref.conv2d_backward_weight(dout, _explicit(x, *pad), wt.shape, s, 0, groups)
    np.testing.assert_allclose(fk.conv2d_backward_weight(dout, x, wt.shape, s, pad, groups),
                               dw_want, **tol)  # fmt: skip


def test_symmetric_4tuple_is_the_int_padding(fk, rng):
    x = rng.standard_normal((2, 3, 7, 7))
    wt = rng.standard_normal((4, 3, 3, 3))
    np.testing.assert_array_equal(
        fk.conv2d_forward(x, wt, None, 2, (1, 1, 1, 1)), fk.conv2d_forward(x, wt, None, 2, 1)
    )


@pytest.mark.parametrize("depthwise", [False, True])
def test_float_backward_gradient_check(fk, rng, depthwise):
    c, f, groups = (3, 3, 3) if depthwise else (2, 3, 1)
    x = rng.standard_normal((1, c, 6, 6))
    wt = rng.standard_normal((f, c // groups, 3, 3))
    pad = (0, 1, 0, 1)
    proj = rng.standard_normal(fk.conv2d_forward(x, wt, None, 2, pad, groups).shape)

    def loss():
        return float((fk.conv2d_forward(x, wt, None, 2, pad, groups) * proj).sum())

    np.testing.assert_allclose(
        fk.conv2d_backward_input(proj, wt, x.shape, 2, pad, groups),
        numeric_gradient(loss, x), rtol=1e-5, atol=1e-7,
    )  # fmt: skip
    np.testing.assert_allclose(
        fk.conv2d_backward_weight(proj, x, wt.shape, 2, pad, groups),
        numeric_gradient(loss, wt), rtol=1e-5, atol=1e-7,
    )  # fmt: skip


@pytest.mark.torch
def test_float_conv_against_torch(fk, rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 4, 8, 8))
    wt = rng.standard_normal((6, 4, 3, 3))
    pad = (0, 1, 0, 1)
    got = fk.conv2d_forward(x, wt, None, 2, pad)
    xt = torch.nn.functional.pad(torch.from_numpy(x), (0, 1, 0, 1))  # (left, right, top, bottom)
    want = torch.nn.functional.conv2d(xt, torch.from_numpy(wt), stride=2).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def _int8_case(rng, case, depthwise):
    h, w, k, s, pad, groups, c, f = case
    if depthwise:
        groups, f = c, c
    x = rand_s8(rng, (2, c, h, w))
    wq = rand_s8(rng, (f, c // groups, k, k), -127)
    bias = rng.integers(-20000, 20000, f).astype(np.int32)
    m0, shift = rand_requant(rng, f, 1e-4, 0.05)
    zp_in, zp_out = (int(v) for v in rng.integers(-128, 128, 2))
    return (x, wq, bias, zp_in, zp_out, m0, shift), groups


@pytest.mark.parametrize("rounding", ["double", "single"])
@pytest.mark.parametrize("depthwise", [False, True], ids=["conv", "depthwise"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[:5]}g{c[5]}")
def test_int8_conv_bit_exact_with_explicit_pad(kernels, rng, case, depthwise, rounding):
    args, groups = _int8_case(rng, case, depthwise)
    x, zp_in, s, pad = args[0], args[3], case[3], case[4]
    if depthwise:
        got = kernels.depthwise_conv2d_s8(*args, stride=s, padding=pad, rounding=rounding)
    else:
        got = kernels.conv2d_s8(*args, stride=s, padding=pad, groups=groups, rounding=rounding)
    # oracle: the border holds the input zero point, then an unpadded reference conv
    xp = _explicit(x, *pad, value=zp_in)
    want = ref8.conv2d_s8(xp, *args[1:], stride=s, padding=0, groups=groups, rounding=rounding)
    assert np.array_equal(got, want)


@settings(max_examples=30, deadline=None)
@given(
    data=st.data(),
    pad=st.tuples(*[st.integers(0, 2)] * 4),
    stride=st.integers(1, 3),
    k=st.integers(1, 4),
)
def test_int8_cython_equals_reference_property(data, pad, stride, k):
    """Any asymmetric padding: the compiled int8 conv equals the numpy reference bit for bit."""
    if "cython" not in backend.available_backends():
        pytest.skip("kernels not built")
    cy = backend.implementation("cython")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    h, w = (int(v) for v in rng.integers(k, 9, 2))
    case = (h, w, k, stride, pad, 1, int(rng.integers(1, 9)), int(rng.integers(1, 5)))
    for depthwise in (False, True):
        args, groups = _int8_case(rng, case, depthwise)
        if depthwise:
            got = cy.depthwise_conv2d_s8(*args, stride=stride, padding=pad)
            want = ref8.depthwise_conv2d_s8(*args, stride=stride, padding=pad)
        else:
            got = cy.conv2d_s8(*args, stride=stride, padding=pad)
            want = ref8.conv2d_s8(*args, stride=stride, padding=pad)
        assert np.array_equal(got, want)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[:5]}g{c[5]}")
def test_int8_backward_matches_explicit_pad(kernels, rng, case):
    """The int8 layers' gradients: dx is the explicit-pad dx cropped, dW the explicit-pad dW."""
    h, w, k, s, pad, groups, c, f = case
    top, bottom, left, right = pad
    x = rand_s8(rng, (2, c, h, w))
    wq = rand_s8(rng, (f, c // groups, k, k), -127)
    zp_in = int(rng.integers(-128, 128))
    xp = _explicit(x, *pad, value=zp_in)
    oh, ow = conv_output_shape(x.shape, k, s, pad)
    dout = rng.standard_normal((2, f, oh, ow)).astype(np.float32)
    dx = kernels.conv2d_s8_backward_input(dout, wq, x.shape, s, pad, groups)
    dxp = ref8_backward.conv2d_s8_backward_input(dout, wq, xp.shape, s, 0, groups)
    dx_want = dxp[:, :, top : top + h, left : left + w]  # float64 oracle, float32 kernels
    np.testing.assert_allclose(dx, dx_want, rtol=1e-4, atol=1e-5 * np.abs(dx_want).max())
    dw = kernels.conv2d_s8_backward_weight(dout, x, zp_in, wq.shape, s, pad, groups)
    dw_want = ref8_backward.conv2d_s8_backward_weight(dout, xp, zp_in, wq.shape, s, 0, groups)
    np.testing.assert_allclose(dw, dw_want, rtol=1e-4, atol=1e-5 * np.abs(dw_want).max())
