"""Int8 kernels (both backends): exact oracles, Cython == reference bit for bit, float oracles."""

from __future__ import annotations

import numpy as np
import pytest
from int8_oracles import conv_acc_float, requant_oracle

from tinyodl import backend, quant
from tinyodl.reference import int8 as ref

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
K_MAX = (2**31 - 1) // (255 * 127)  # longest reduction the int32 accumulator allows


def rand_s8(rng, shape, lo=-128, hi=127):
    return rng.integers(lo, hi + 1, shape).astype(np.int8)


def rand_requant(rng, channels, lo=1e-4, hi=0.05):
    return quant.quantize_multiplier(rng.uniform(lo, hi, channels))


def conv_acc_int64(x, w, bias, zp_in, stride, padding, groups):
    """Exact int64 conv accumulator by direct loops over taps (independent of im2col)."""
    n, c, h, wd = x.shape
    f, cg, kh, kw = w.shape
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    xp = np.pad(x.astype(np.int64) - zp_in, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    acc = np.zeros((n, f, oh, ow), dtype=np.int64)
    fg = f // groups
    for o in range(f):
        g = o // fg
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, g * cg : (g + 1) * cg, i : i + sh * oh : sh, j : j + sw * ow : sw]
                acc[:, o] += np.einsum("nchw,c->nhw", patch, w[o, :, i, j].astype(np.int64))
    return acc + bias.astype(np.int64)[None, :, None, None]


# ---- gemm_s8 ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 17, 3), (33, 70, 9), (64, 130, 65)])
def test_gemm_s8_matches_int64_oracle(kernels, rng, shape):
    m, k, n = shape
    a, b = rand_s8(rng, (m, k)), rand_s8(rng, (k, n))
    for za, zb in [(0, 0), (3, -7), (-128, 127)]:
        want = (a.astype(np.int64) - za) @ (b.astype(np.int64) - zb)
        got = kernels.gemm_s8(a, b, za, zb)
        assert got.dtype == np.int32 and np.array_equal(got, want)


def test_gemm_s8_non_contiguous_and_bound(kernels, rng):
    a = rand_s8(rng, (12, 40))[:, ::2]
    b = np.asfortranarray(rand_s8(rng, (20, 7)))
    assert np.array_equal(kernels.gemm_s8(a, b), a.astype(np.int64) @ b.astype(np.int64))
    big = np.zeros((1, 2**31 // (128 * 128)), np.int8)  # K * 128 * 128 = 2^31
    with pytest.raises(ValueError, match="overflow int32"):
        kernels.gemm_s8(big, big.T)


# ---- requantize ------------------------------------------------------------------------


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_requantize_int32_edges_match_oracle(kernels, rounding):
    acc = np.array([INT32_MIN, INT32_MIN + 1, -(2**30), -65, -1, 0, 1, 64, 2**30, INT32_MAX])
    acc = np.tile(acc, (2, 6, 1)).astype(np.int32)  # (N=2, F=6, 10)
    m0 = np.array([2**31 - 1, 2**30, 2**30, 2**31 - 1, 2**30 + 12345, 1], np.int32)
    shift = np.array([0, 0, -31, -20, 3, 30], np.int32)
    for zp, lo, hi in [(0, -128, 127), (-20, -20, 127), (100, -50, 60)]:
        got = kernels.requantize(acc, m0, shift, zp, lo, hi, rounding)
        assert got.dtype == np.int8
        assert np.array_equal(got, requant_oracle(acc, m0, shift, zp, lo, hi, rounding))


def test_requantize_random_matches_reference(kernels, rng):
    acc = rng.integers(INT32_MIN, INT32_MAX, (3, 5, 4, 3), endpoint=True).astype(np.int32)
    m0, shift = quant.quantize_multiplier(rng.uniform(1e-6, 4.0, 5))
    for rounding in ("double", "single"):
        got = kernels.requantize(acc, m0, shift, 3, -100, 90, rounding)
        assert np.array_equal(got, ref.requantize(acc, m0, shift, 3, -100, 90, rounding))
        assert np.array_equal(got, requant_oracle(acc, m0, shift, 3, -100, 90, rounding))


# ---- linear_s8 -------------------------------------------------------------------------


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_linear_s8_matches_exact_oracle(kernels, rng, rounding):
    for n, k, f in [(1, 1, 1), (3, 20, 5), (9, 64, 10), (17, 100, 33)]:
        x, w = rand_s8(rng, (n, k)), rand_s8(rng, (f, k), -127)
        bias = rng.integers(-10000, 10000, f).astype(np.int32)
        m0, shift = rand_requant(rng, f)
        zp_in, zp_out = int(rng.integers(-128, 128)), int(rng.integers(-128, 128))
        got = kernels.linear_s8(x, w, bias, zp_in, zp_out, m0, shift, -110, 120, rounding)
        acc = (x.astype(np.int64) - zp_in) @ w.T.astype(np.int64) + bias
        assert np.array_equal(got, requant_oracle(acc, m0, shift, zp_out, -110, 120, rounding))


def test_linear_s8_accumulator_extremes(kernels):
    # all inputs -128 with zp_in = 127 (x - zp = -255) times weights 127: the largest |acc|
    x = np.full((2, K_MAX), -128, np.int8)
    w = np.full((3, K_MAX), 127, np.int8)
    w[1] = -127
    bias = np.array([0, 0, INT32_MIN], np.int32)  # the last one saturates at INT32_MIN
    m0, shift = np.full(3, 2**31 - 1, np.int32), np.full(3, -24, np.int32)
    for rounding in ("double", "single"):
        got = kernels.linear_s8(x, w, bias, 127, 0, m0, shift, rounding=rounding)
        acc = np.array([-255 * 127 * K_MAX, 255 * 127 * K_MAX, INT32_MIN], dtype=np.int64)
        assert abs(acc[0]) < 2**31
        want = requant_oracle(np.tile(acc, (2, 1)), m0, shift, 0, -128, 127, rounding)
        assert np.array_equal(got, want)
    with pytest.raises(ValueError, match=r"K \* 255 \* 127"):
        kernels.linear_s8(x[:, :1].repeat(K_MAX + 1, 1), w[:, :1].repeat(K_MAX + 1, 1),
                          bias, 0, 0, m0, shift)  # fmt: skip


# ---- conv2d_s8 and depthwise: Cython == reference, bit for bit ----------------------------


def random_conv_case(rng, depthwise=False):
    groups = 1 if depthwise else int(rng.choice([1, 1, 2, 3]))
    cg = 1 if depthwise else int(rng.integers(1, 5))
    c = int(rng.integers(1, 7)) if depthwise else cg * groups
    f = c if depthwise else int(rng.integers(1, 4)) * groups
    kh, kw = (int(v) for v in rng.integers(1, 4, 2))
    stride = tuple(int(v) for v in rng.integers(1, 3, 2))
    padding = tuple(int(v) for v in rng.integers(0, 2, 2))
    if rng.random() < 0.25:  # exercise the pointwise (1x1, stride 1) fast path
        kh = kw = 1
        stride, padding = (1, 1), (0, 0)
    h, w = (int(v) for v in rng.integers(max(kh, kw), 10, 2))
    x = rand_s8(rng, (int(rng.integers(1, 4)), c, h, w))
    wq = rand_s8(rng, (f, 1 if depthwise else cg, kh, kw), -127)
    bias = rng.integers(-20000, 20000, f).astype(np.int32)
    m0, shift = rand_requant(rng, f, 1e-5, 0.2)
    zp_in, zp_out = (int(v) for v in rng.integers(-128, 128, 2))
    lo = int(rng.integers(-128, 0))
    hi = int(rng.integers(lo, 128))
    kw_ = dict(stride=stride, padding=padding, act_min=lo, act_max=hi)
    if not depthwise:
        kw_["groups"] = groups
    return (x, wq, bias, zp_in, zp_out, m0, shift), kw_


@pytest.mark.parametrize("rounding", ["double", "single"])
@pytest.mark.parametrize("depthwise", [False, True], ids=["conv", "depthwise"])
def test_conv_bit_exact_against_reference_and_oracle(kernels, rng, rounding, depthwise):
    kernel = kernels.depthwise_conv2d_s8 if depthwise else kernels.conv2d_s8
    reference = ref.depthwise_conv2d_s8 if depthwise else ref.conv2d_s8
    for _ in range(25):
        args, kw = random_conv_case(rng, depthwise)
        got = kernel(*args, rounding=rounding, **kw)
        assert got.dtype == np.int8
        assert np.array_equal(got, reference(*args, rounding=rounding, **kw))
    # one case against the independent loop oracle
    x, w, bias, zp_in, zp_out, m0, shift = args
    groups = x.shape[1] if depthwise else kw["groups"]
    from tinyodl._shapes import pair

    acc = conv_acc_int64(x, w, bias, zp_in, pair(kw["stride"]), pair(kw["padding"]), groups)
    want = requant_oracle(acc, m0, shift, zp_out, kw["act_min"], kw["act_max"], rounding)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_pointwise_conv_is_linear_on_pixels(kernels, rng, rounding):
    x = rand_s8(rng, (3, 10, 5, 7))
    w = rand_s8(rng, (7, 10, 1, 1), -127)
    bias = rng.integers(-5000, 5000, 7).astype(np.int32)
    m0, shift = rand_requant(rng, 7)
    conv = kernels.conv2d_s8(x, w, bias, 9, -4, m0, shift, rounding=rounding)
    pixels = np.ascontiguousarray(x.transpose(0, 2, 3, 1).reshape(-1, 10))
    lin = kernels.linear_s8(pixels, w[:, :, 0, 0], bias, 9, -4, m0, shift, rounding=rounding)
    assert np.array_equal(conv, lin.reshape(3, 5, 7, 7).transpose(0, 3, 1, 2))


def test_conv_accumulator_extremes(kernels):
    k = 3 * 3
    c = K_MAX // k
    x = np.full((1, c, 4, 4), -128, np.int8)
    w = np.full((2, c, 3, 3), 127, np.int8)
    w[1] = -127
    bias = np.array([INT32_MAX, 5], np.int32)
    m0, shift = quant.quantize_multiplier(np.array([0.999999, 2.0**-20]))
    got = kernels.conv2d_s8(x, w, bias, 127, -3, m0, shift, padding=1, rounding="double")
    acc = conv_acc_int64(x, w, bias, 127, (1, 1), (1, 1), 1)
    assert np.array_equal(got, requant_oracle(acc, m0, shift, -3, -128, 127, "double"))


def test_conv_matches_cython_with_threads(rng):
    if not backend.cython_available():
        pytest.skip("kernels not built")
    fast = backend.implementation("cython")
    args, kw = random_conv_case(np.random.default_rng(3))
    x = rand_s8(rng, (4, 6, 12, 12))
    w = rand_s8(rng, (8, 3, 3, 3), -127)
    m0, shift = rand_requant(rng, 8)
    want = ref.conv2d_s8(x, w, None, 5, -2, m0, shift, padding=1, groups=2)
    try:
        backend.set_num_threads(2)
        got = fast.conv2d_s8(x, w, None, 5, -2, m0, shift, padding=1, groups=2)
        dw = fast.depthwise_conv2d_s8(x, w[:6, :1], None, 5, -2, m0[:6], shift[:6], padding=1)
    finally:
        backend.set_num_threads(1)
    assert np.array_equal(got, want)
    want_dw = ref.depthwise_conv2d_s8(x, w[:6, :1], None, 5, -2, m0[:6], shift[:6], padding=1)
    assert np.array_equal(dw, want_dw)


# ---- against float convolution of the dequantized tensors --------------------------------


def quantized_conv_layer(rng, c=4, f=6, groups=1, activation=None):
    """A float conv made integer: returns float tensors, their int8 versions and qparams."""
    x = rng.normal(size=(2, c, 9, 8))
    w = rng.normal(size=(f, c // groups, 3, 3)) * rng.uniform(0.2, 2.0, (f, 1, 1, 1))
    b = rng.normal(size=f)
    s_in, zp_in = quant.choose_activation_qparams(x.min(), x.max())
    xq = quant.quantize(x, s_in, zp_in)
    wq, s_w = quant.quantize_weights_per_channel(w)
    bq = quant.quantize_bias(b, s_in, s_w)
    s_out, zp_out = quant.choose_activation_qparams(-8.0, 10.0)
    m0, shift = quant.requantize_params(s_in, s_w, s_out)
    lo, hi = quant.activation_range(s_out, zp_out, activation)
    # the float tensors the integers represent exactly
    xd = quant.dequantize(xq, s_in, zp_in, dtype=np.float64)
    wd = quant.dequantize(wq, s_w, 0, axis=0, dtype=np.float64)
    bd = bq * (s_in * s_w)
    return (xq, wq, bq, zp_in, zp_out, m0, shift), (xd, wd, bd), (s_out, zp_out, lo, hi)


@pytest.mark.parametrize("activation", [None, "relu", "relu6"])
def test_conv_within_one_lsb_of_float(kernels, rng, activation):
    args, (xd, wd, bd), (s_out, zp_out, lo, hi) = quantized_conv_layer(rng, activation=activation)
    got = kernels.conv2d_s8(*args, stride=(1, 2), padding=1, act_min=lo, act_max=hi)
    # float64 conv by direct loops over taps
    real = conv_acc_float(xd, wd, bd, (1, 2), (1, 1), groups=1)
    want = np.clip(quant.quantize(real / s_out, 1.0, zp_out, -(2**31), 2**31 - 1), lo, hi)
    assert np.abs(got.astype(np.int64) - want).max() <= 1


@pytest.mark.torch
@pytest.mark.parametrize("groups", [1, 2])
def test_conv_against_torch_float64(kernels, rng, groups):
    torch = pytest.importorskip("torch")
    args, (xd, wd, bd), (s_out, zp_out, lo, hi) = quantized_conv_layer(
        rng, c=4, f=6, groups=groups, activation="relu"
    )
    got = kernels.conv2d_s8(*args, stride=2, padding=1, groups=groups, act_min=lo, act_max=hi)
    real = torch.nn.functional.conv2d(
        torch.from_numpy(xd), torch.from_numpy(wd), torch.from_numpy(bd),
        stride=2, padding=1, groups=groups,
    ).numpy()  # fmt: skip
    want = np.clip(quant.quantize(real / s_out, 1.0, zp_out, -(2**31), 2**31 - 1), lo, hi)
    assert np.abs(got.astype(np.int64) - want).max() <= 1
    dw_args = list(args)
    c = args[0].shape[1]
    dw_args[1] = args[1][:c, :1]
    dw_args[2], dw_args[5], dw_args[6] = args[2][:c], args[5][:c], args[6][:c]
    got_dw = kernels.depthwise_conv2d_s8(*dw_args, padding=1, act_min=lo, act_max=hi)
    real_dw = torch.nn.functional.conv2d(
        torch.from_numpy(xd), torch.from_numpy(wd[:c, :1]), torch.from_numpy(bd[:c]),
        padding=1, groups=c,
    ).numpy()  # fmt: skip
    want_dw = np.clip(quant.quantize(real_dw / s_out, 1.0, zp_out, -(2**31), 2**31 - 1), lo, hi)
    assert np.abs(got_dw.astype(np.int64) - want_dw).max() <= 1


# ---- validation ------------------------------------------------------------------------


def test_clear_errors(kernels, rng):
    x, w = rand_s8(rng, (1, 2, 5, 5)), rand_s8(rng, (3, 2, 3, 3), -127)
    m0, shift = rand_requant(rng, 3)
    with pytest.raises(TypeError, match="conv2d_s8: x must be int8, got float32"):
        kernels.conv2d_s8(x.astype(np.float32), w, None, 0, 0, m0, shift)
    bad_w = w.copy()
    bad_w[0, 0, 0, 0] = -128
    with pytest.raises(ValueError, match=r"\[-127, 127\]"):
        kernels.conv2d_s8(x, bad_w, None, 0, 0, m0, shift)
    with pytest.raises(ValueError, match="multiplier must have shape"):
        kernels.conv2d_s8(x, w, None, 0, 0, m0[:2], shift[:2])
    with pytest.raises(ValueError, match="input_zero_point must lie in"):
        kernels.conv2d_s8(x, w, None, 200, 0, m0, shift)
    with pytest.raises(ValueError, match="act_min=5 must not exceed act_max=4"):
        kernels.conv2d_s8(x, w, None, 0, 0, m0, shift, act_min=5, act_max=4)
    with pytest.raises(TypeError, match="bias must be an int32"):
        kernels.conv2d_s8(x, w, np.zeros(3, np.int64), 0, 0, m0, shift)
    with pytest.raises(ValueError, match="rounding"):
        kernels.conv2d_s8(x, w, None, 0, 0, m0, shift, rounding="nearest")
    with pytest.raises(ValueError, match="groups=2"):
        kernels.conv2d_s8(x, w, None, 0, 0, m0, shift, groups=2)
    with pytest.raises(ValueError, match="does not fit"):
        kernels.conv2d_s8(x[:, :, :2, :2], w, None, 0, 0, m0, shift)
    with pytest.raises(ValueError, match=r"shape \(2, 1, KH, KW\)"):
        kernels.depthwise_conv2d_s8(x, w, None, 0, 0, m0, shift)
    with pytest.raises(ValueError, match="shift must lie in"):
        kernels.requantize(np.zeros((1, 3), np.int32), m0, shift + 40, 0)
    with pytest.raises(ValueError, match="inner dimensions"):
        kernels.gemm_s8(x[0, 0], x[0, 0, :3])
