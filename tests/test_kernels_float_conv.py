"""Float convolution kernels: Cython == numpy reference, gradient checks, properties, errors."""

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

from tinyodl._shapes import conv_output_shape

DTYPES = [np.float32, np.float64]

# (N, C, H, W, F, (KH, KW), stride, padding, groups)
CONV_CASES = [
    (2, 4, 7, 6, 6, (3, 2), 1, 0, 1),  # non-square kernel
    (2, 4, 7, 6, 6, (3, 2), 2, 1, 2),  # groups = 2
    (1, 3, 9, 9, 5, (3, 3), 3, (2, 1), 1),  # stride 3, batch 1, non-square padding
    (2, 6, 8, 8, 6, (3, 3), 1, 1, 6),  # depthwise
    (2, 6, 8, 7, 6, (5, 3), 2, 2, 6),  # depthwise, stride 2, non-square
    (1, 4, 6, 6, 4, (3, 3), (1, 2), 1, 4),  # depthwise, non-square stride
    (2, 6, 8, 8, 12, (3, 3), 1, 1, 6),  # depthwise with channel multiplier 2
    (3, 5, 4, 4, 7, (1, 1), 1, 0, 1),  # pointwise: no im2col
    (2, 4, 5, 5, 4, (1, 1), 2, 0, 2),  # 1x1 with stride: im2col path
    (1, 8, 5, 5, 4, (1, 1), 1, 1, 1),  # 1x1 with padding
    (2, 3, 5, 4, 2, (5, 4), 1, 0, 1),  # kernel as large as the image
    (1, 2, 3, 3, 3, (3, 3), 3, 2, 1),  # padding larger than needed
]


def _random_cases(count: int, seed: int) -> list[tuple]:
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        groups = int(rng.choice([1, 2, 3]))
        c = groups * int(rng.integers(1, 4))
        f = groups * int(rng.integers(1, 4))
        kh, kw = (int(k) for k in rng.integers(1, 5, size=2))
        stride = tuple(int(s) for s in rng.integers(1, 4, size=2))
        padding = tuple(int(p) for p in rng.integers(0, 3, size=2))
        h, w = (int(s) for s in rng.integers(1, 10, size=2))
        if h + 2 * padding[0] < kh or w + 2 * padding[1] < kw:
            continue
        n = int(rng.integers(1, 4))
        cases.append((n, c, h, w, f, (kh, kw), stride, padding, groups))
    return cases


def _make(case, dtype, rng):
    n, c, h, w, f, k, stride, padding, groups = case
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((f, c // groups, *k)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype)
    oh, ow = conv_output_shape(x.shape, k, stride, padding)
    dout = rng.standard_normal((n, f, oh, ow)).astype(dtype)
    return x, wt, b, dout, dict(stride=stride, padding=padding, groups=groups)


needs_cython = pytest.mark.skipif(
    not cython_float_kernels_built(), reason="compiled float kernels not built"
)


# ------------------------------------------------------------------ cython == reference


@needs_cython
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES + _random_cases(20, seed=1))
def test_cython_matches_reference(case, dtype):
    ref, cy = load_float_kernels("numpy"), load_float_kernels("cython")
    x, w, b, dout, kw = _make(case, dtype, np.random.default_rng(7))
    geo = dict(stride=kw["stride"], padding=kw["padding"])
    for bias in (b, None):
        assert_close(cy.conv2d_forward(x, w, bias, **kw), ref.conv2d_forward(x, w, bias, **kw))
    assert_close(
        cy.conv2d_backward_input(dout, w, x.shape, **kw),
        ref.conv2d_backward_input(dout, w, x.shape, **kw),
        "backward_input",
    )
    assert_close(
        cy.conv2d_backward_weight(dout, x, w.shape, **kw),
        ref.conv2d_backward_weight(dout, x, w.shape, **kw),
        "backward_weight",
    )
    cols = ref.im2col(x, w.shape[2:], **geo)
    assert_close(cy.im2col(x, w.shape[2:], **geo), cols, "im2col")
    assert_close(
        cy.col2im(cols, x.shape, w.shape[2:], **geo),
        ref.col2im(cols, x.shape, w.shape[2:], **geo),
        "col2im",
    )


@needs_cython
def test_cython_thread_count_does_not_change_results():
    ref, cy = load_float_kernels("numpy"), load_float_kernels("cython")
    x, w, b, dout, kw = _make(
        (4, 6, 9, 9, 6, (3, 3), 1, 1, 6), np.float64, np.random.default_rng(3)
    )
    x2, w2, _, dout2, kw2 = _make(
        (3, 4, 9, 9, 6, (3, 3), 2, 1, 2), np.float64, np.random.default_rng(4)
    )
    try:
        cy.conv.set_num_threads(2)
        assert_close(cy.conv2d_forward(x, w, b, **kw), ref.conv2d_forward(x, w, b, **kw))
        assert_close(
            cy.conv2d_backward_weight(dout, x, w.shape, **kw),
            ref.conv2d_backward_weight(dout, x, w.shape, **kw),
        )
        assert_close(
            cy.conv2d_backward_input(dout2, w2, x2.shape, **kw2),
            ref.conv2d_backward_input(dout2, w2, x2.shape, **kw2),
        )
    finally:
        cy.conv.set_num_threads(1)
    with pytest.raises(ValueError, match="threads"):
        cy.conv.set_num_threads(0)


# ------------------------------------------------------------------ both backends


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtype_preserved_and_noncontiguous_inputs(fk, dtype):
    rng = np.random.default_rng(0)
    x, w, b, dout, kw = _make((2, 4, 6, 5, 4, (3, 3), 1, 1, 2), dtype, rng)
    out = fk.conv2d_forward(x, w, b, **kw)
    assert out.dtype == dtype
    # the same data in non-contiguous views gives the same result
    x_nc = np.asfortranarray(x)
    w_nc = np.repeat(w, 2, axis=3)[..., ::2]
    dout_nc = np.swapaxes(np.swapaxes(dout, 2, 3).copy(), 2, 3)
    assert not (x_nc.flags.c_contiguous or w_nc.flags.c_contiguous or dout_nc.flags.c_contiguous)
    assert_close(fk.conv2d_forward(x_nc, w_nc, b, **kw), out)
    dx = fk.conv2d_backward_input(dout, w, x.shape, **kw)
    dw = fk.conv2d_backward_weight(dout, x, w.shape, **kw)
    assert dx.dtype == dtype and dw.dtype == dtype
    assert_close(fk.conv2d_backward_input(dout_nc, w_nc, x.shape, **kw), dx)
    assert_close(fk.conv2d_backward_weight(dout_nc, x_nc, w.shape, **kw), dw)
    assert fk.im2col(x_nc, 3, 1, 1).dtype == dtype


GRAD_CASES = [
    (2, 4, 5, 5, 4, (3, 3), 1, 1, 1),
    (1, 4, 6, 5, 6, (3, 2), 2, (1, 0), 2),
    (2, 3, 6, 6, 3, (3, 3), 2, 1, 3),  # depthwise
    (1, 2, 7, 7, 4, (2, 3), 3, 2, 2),
    (2, 3, 4, 4, 2, (1, 1), 1, 0, 1),  # pointwise
]


@pytest.mark.parametrize("case", GRAD_CASES)
def test_conv_gradients_match_central_differences(fk, case):
    rng = np.random.default_rng(11)
    x, w, b, dout, kw = _make(case, np.float64, rng)

    def loss():  # L = sum(conv(x, w, b) * dout), so dL/dout = dout
        return float(np.sum(fk.conv2d_forward(x, w, b, **kw) * dout))

    dx = fk.conv2d_backward_input(dout, w, x.shape, **kw)
    dw = fk.conv2d_backward_weight(dout, x, w.shape, **kw)
    assert rel_error(dx, numeric_gradient(loss, x)) < 1e-7
    assert rel_error(dw, numeric_gradient(loss, w)) < 1e-7
    assert rel_error(dout.sum(axis=(0, 2, 3)), numeric_gradient(loss, b)) < 1e-7


def test_col2im_gradient_of_im2col(fk):
    """col2im(c) is the gradient of x -> <im2col(x), c>."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 5, 4))
    c = rng.standard_normal(fk.im2col(x, (3, 2), 2, 1).shape)

    def loss():
        return float(np.sum(fk.im2col(x, (3, 2), 2, 1) * c))

    assert rel_error(fk.col2im(c, x.shape, (3, 2), 2, 1), numeric_gradient(loss, x)) < 1e-7


def test_im2col_layout(fk):
    """Row c*KH*KW + kh*KW + kw, column oh*OW + ow holds x_pad[n, c, oh*SH+kh, ow*SW+kw]."""
    x = np.arange(2 * 3 * 5 * 4, dtype=np.float64).reshape(2, 3, 5, 4) + 1
    kh, kw, sh, sw, ph, pw = 3, 2, 2, 1, 1, 0
    cols = fk.im2col(x, (kh, kw), (sh, sw), (ph, pw))
    oh, ow = conv_output_shape(x.shape, (kh, kw), (sh, sw), (ph, pw))
    x_pad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    for n, c, i, j, r, s in [(0, 0, 0, 0, 0, 0), (1, 2, 2, 1, 1, 2), (0, 1, 1, 0, 2, 1)]:
        assert cols[n, c * kh * kw + i * kw + j, r * ow + s] == x_pad[n, c, r * sh + i, s * sw + j]
    assert cols[0, 0, 0] == 0  # the first tap of the first window lies in the top padding


# ------------------------------------------------------------------ properties

geometry = st.fixed_dictionaries(
    {
        "n": st.integers(1, 2),
        "c": st.integers(1, 3),
        "h": st.integers(1, 7),
        "w": st.integers(1, 7),
        "k": st.tuples(st.integers(1, 4), st.integers(1, 4)),
        "stride": st.tuples(st.integers(1, 3), st.integers(1, 3)),
        "padding": st.tuples(st.integers(0, 2), st.integers(0, 2)),
        "seed": st.integers(0, 2**16),
    }
)


def _fits(g) -> bool:
    return g["h"] + 2 * g["padding"][0] >= g["k"][0] and g["w"] + 2 * g["padding"][1] >= g["k"][1]


@settings(max_examples=30, deadline=None)
@given(g=geometry)
def test_col2im_is_adjoint_of_im2col(fk, g):
    assume(_fits(g))
    rng = np.random.default_rng(g["seed"])
    x = rng.standard_normal((g["n"], g["c"], g["h"], g["w"]))
    cols = fk.im2col(x, g["k"], g["stride"], g["padding"])
    c = rng.standard_normal(cols.shape)
    back = fk.col2im(c, x.shape, g["k"], g["stride"], g["padding"])
    assert np.isclose(np.vdot(cols, c), np.vdot(x, back), rtol=1e-10, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(g=geometry, groups=st.sampled_from([1, 2, "depthwise"]), a=st.floats(-3, 3))
def test_conv_is_linear_in_x_and_in_w(fk, g, groups, a):
    assume(_fits(g))
    rng = np.random.default_rng(g["seed"])
    c = g["c"] * (2 if groups == 2 else 1)
    groups = c if groups == "depthwise" else groups
    shape = (g["n"], c, g["h"], g["w"])
    x1, x2 = rng.standard_normal(shape), rng.standard_normal(shape)
    w1, w2 = (rng.standard_normal((2 * groups, c // groups, *g["k"])) for _ in range(2))
    kw = dict(stride=g["stride"], padding=g["padding"], groups=groups)
    conv = fk.conv2d_forward
    lhs = conv(a * x1 + x2, w1, **kw)
    assert np.allclose(lhs, a * conv(x1, w1, **kw) + conv(x2, w1, **kw), atol=1e-10)
    lhs = conv(x1, a * w1 + w2, **kw)
    assert np.allclose(lhs, a * conv(x1, w1, **kw) + conv(x1, w2, **kw), atol=1e-10)


@settings(max_examples=20, deadline=None)
@given(g=geometry)
def test_backward_input_is_adjoint_of_forward(fk, g):
    """<conv(x, w), d> == <x, conv_backward_input(d, w)> -- the definition of the gradient."""
    assume(_fits(g))
    rng = np.random.default_rng(g["seed"])
    x = rng.standard_normal((g["n"], 2 * g["c"], g["h"], g["w"]))
    w = rng.standard_normal((4, g["c"], *g["k"]))
    kw = dict(stride=g["stride"], padding=g["padding"], groups=2)
    out = fk.conv2d_forward(x, w, **kw)
    d = rng.standard_normal(out.shape)
    dx = fk.conv2d_backward_input(d, w, x.shape, **kw)
    dw = fk.conv2d_backward_weight(d, x, w.shape, **kw)
    assert np.isclose(np.vdot(out, d), np.vdot(x, dx), rtol=1e-10, atol=1e-10)
    assert np.isclose(np.vdot(out, d), np.vdot(w, dw), rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------ errors


def test_conv_errors_name_function_expected_and_actual(fk):
    x = np.zeros((2, 4, 5, 5), np.float32)
    w = np.zeros((6, 3, 3, 3), np.float32)
    msg = "conv2d_forward: w has 3 input channels per group but x has 4 channels and groups=1"
    with pytest.raises(ValueError, match=msg):
        fk.conv2d_forward(x, w)
    with pytest.raises(ValueError, match="not divisible by groups=3"):
        fk.conv2d_forward(x, np.zeros((6, 1, 3, 3), np.float32), groups=3)
    with pytest.raises(TypeError, match="conv2d_forward: w has dtype float64 but the input"):
        fk.conv2d_forward(x, np.zeros((6, 4, 3, 3)))
    with pytest.raises(TypeError, match="conv2d_forward: x must be float32 or float64, got int64"):
        fk.conv2d_forward(np.zeros((2, 4, 5, 5), np.int64), w)
    with pytest.raises(ValueError, match=r"conv2d_forward: x must be 4-D, got shape \(4, 5, 5\)"):
        fk.conv2d_forward(x[0], w)
    with pytest.raises(ValueError, match=r"conv2d_forward: b must have shape \(6,\)"):
        fk.conv2d_forward(x, np.zeros((6, 4, 3, 3), np.float32), np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="conv2d_forward: window of size 7"):
        fk.conv2d_forward(x, np.zeros((6, 4, 7, 7), np.float32))
    with pytest.raises(ValueError, match="stride must be positive"):
        fk.conv2d_forward(x, np.zeros((6, 4, 3, 3), np.float32), stride=0)
    with pytest.raises(
        ValueError, match=r"conv2d_backward_input: dout must have shape \(2, 6, 3, 3\)"
    ):
        fk.conv2d_backward_input(
            np.zeros((2, 6, 5, 5), np.float32), np.zeros((6, 4, 3, 3), np.float32), x.shape
        )
    with pytest.raises(
        ValueError, match="conv2d_backward_weight: x_shape|conv2d_backward_weight: w_shape"
    ):
        fk.conv2d_backward_weight(np.zeros((2, 6, 3, 3), np.float32), x, (6, 4, 3))
    with pytest.raises(ValueError, match=r"col2im: cols must have shape \(2, 36, 9\)"):
        fk.col2im(np.zeros((2, 36, 8), np.float32), x.shape, 3)
