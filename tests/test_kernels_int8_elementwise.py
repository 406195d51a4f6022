"""Integer residual add and average pooling (add_s8, avgpool2d_s8), both backends.

Oracles are written from TFLite's definitions with Python ints (tests/int8_oracles.py), the
two backends must agree bit for bit, and the real-valued result is within rounding of the
float computation.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from int8_oracles import mbqm_oracle, trunc_div

from tinyodl import backend
from tinyodl.quant import quantize_add_params


def _add_oracle(a, b, za, zb, zy, p, lo, hi):
    out = np.empty(a.shape, dtype=np.int64)
    ls = p["left_shift"]
    for idx in np.ndindex(a.shape):
        pa = mbqm_oracle((int(a[idx]) - za) * 2**ls, p["a_multiplier"], p["a_shift"], "double")
        pb = mbqm_oracle((int(b[idx]) - zb) * 2**ls, p["b_multiplier"], p["b_shift"], "double")
        y = mbqm_oracle(pa + pb, p["output_multiplier"], p["output_shift"], "double") + zy
        out[idx] = min(max(y, lo), hi)
    return out.astype(np.int8)


def _pool_oracle(x, k, s, p, lo, hi):
    n, c, h, w = x.shape
    oh, ow = (h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1
    out = np.empty((n, c, oh, ow), dtype=np.int64)
    for img, ch, r, q in np.ndindex(out.shape):
        acc = count = 0
        for i in range(r * s[0] - p[0], r * s[0] - p[0] + k[0]):
            for j in range(q * s[1] - p[1], q * s[1] - p[1] + k[1]):
                if 0 <= i < h and 0 <= j < w:
                    acc += int(x[img, ch, i, j])
                    count += 1
        half = count // 2
        y = trunc_div(acc + half, count) if acc > 0 else trunc_div(acc - half, count)
        out[img, ch, r, q] = min(max(y, lo), hi)
    return out.astype(np.int8)


def _add_call(kernels, a, b, za, zb, zy, p, lo=-128, hi=127):
    return kernels.add_s8(
        a, b, za, p["a_multiplier"], p["a_shift"], zb, p["b_multiplier"], p["b_shift"],
        zy, p["output_multiplier"], p["output_shift"], p["left_shift"], lo, hi,
    )  # fmt: skip


@pytest.mark.parametrize(
    "scales", [(0.02, 0.05, 0.06), (0.1, 0.1, 0.1), (0.013, 0.0021, 0.011), (0.5, 0.01, 0.3)]
)
def test_add_s8_matches_the_tflite_oracle_and_the_real_sum(kernels, scales):
    rng = np.random.default_rng(0)
    a, b = (rng.integers(-128, 128, (2, 3, 5, 4)).astype(np.int8) for _ in range(2))
    za, zb, zy = -7, 12, 3
    p = quantize_add_params(*scales)
    y = _add_call(kernels, a, b, za, zb, zy, p)
    assert y.dtype == np.int8 and y.shape == a.shape
    np.testing.assert_array_equal(y, _add_oracle(a, b, za, zb, zy, p, -128, 127))
    real = (a.astype(float) - za) * scales[0] + (b.astype(float) - zb) * scales[1]
    expected = np.clip(np.round(real / scales[2]) + zy, -128, 127)
    assert np.abs(y.astype(float) - expected).max() <= 1


def test_add_s8_applies_the_fused_clamp(kernels):
    a = np.arange(-128, 128, dtype=np.int8).reshape(16, 16)
    p = quantize_add_params(0.05, 0.05, 0.1)
    y = _add_call(kernels, a, a, 0, 0, -10, p, lo=-10, hi=50)
    assert y.min() == -10 and y.max() == 50
    np.testing.assert_array_equal(y, _add_oracle(a, a, 0, 0, -10, p, -10, 50))


@settings(max_examples=25, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.floats(1e-3, 1.0),
    st.floats(1e-3, 1.0),
    st.floats(1e-3, 2.0),
    st.integers(-128, 127),
    st.integers(-128, 127),
    st.integers(-128, 127),
)
def test_add_s8_backends_agree_bit_for_bit(seed, sa, sb, sy, za, zb, zy):
    if not backend.cython_available():
        pytest.skip("kernels not built")
    rng = np.random.default_rng(seed)
    a, b = (rng.integers(-128, 128, (3, 17)).astype(np.int8) for _ in range(2))
    p = quantize_add_params(sa, sb, sy)
    outs = [_add_call(backend.implementation(n), a, b, za, zb, zy, p) for n in ("numpy", "cython")]
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], _add_oracle(a, b, za, zb, zy, p, -128, 127))


@pytest.mark.parametrize(
    "k, s, p", [((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1)), ((5, 4), (1, 3), (2, 1))]
)
def test_avgpool2d_s8_matches_the_tflite_oracle(kernels, k, s, p):
    x = np.random.default_rng(1).integers(-128, 128, (2, 3, 9, 8)).astype(np.int8)
    y = kernels.avgpool2d_s8(x, k, s, p)
    np.testing.assert_array_equal(y, _pool_oracle(x, k, s, p, -128, 127))
    np.testing.assert_array_equal(
        kernels.avgpool2d_s8(x, k, s, p, -20, 30), _pool_oracle(x, k, s, p, -20, 30)
    )


def test_global_avgpool_rounds_half_away_from_zero(kernels):
    x = np.array([[[[1, 2]], [[-1, -2]], [[3, 3]], [[-128, -127]]]], dtype=np.int8)  # (1,4,1,2)
    y = kernels.avgpool2d_s8(x, (1, 2))
    assert y.reshape(-1).tolist() == [2, -2, 3, -128]  # 1.5 -> 2, -1.5 -> -2, -127.5 -> -128


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 4), st.integers(1, 3), st.integers(0, 1))
def test_avgpool2d_s8_backends_agree_and_stay_within_the_window(seed, k, s, p):
    if not backend.cython_available():
        pytest.skip("kernels not built")
    p = min(p, k - 1)
    x = np.random.default_rng(seed).integers(-128, 128, (2, 3, 7, 6)).astype(np.int8)
    outs = [backend.implementation(n).avgpool2d_s8(x, k, s, p) for n in ("numpy", "cython")]
    np.testing.assert_array_equal(outs[0], outs[1])
    assert outs[0].min() >= x.min() and outs[0].max() <= x.max()  # an average is in range


def test_bad_arguments_are_named(kernels):
    a = np.zeros((2, 3), dtype=np.int8)
    p = quantize_add_params(0.1, 0.1, 0.1)
    with pytest.raises(ValueError, match="add_s8: a has shape"):
        _add_call(kernels, a, np.zeros((3, 2), dtype=np.int8), 0, 0, 0, p)
    with pytest.raises(TypeError, match="add_s8: b must be int8"):
        _add_call(kernels, a, a.astype(np.int16), 0, 0, 0, p)
    with pytest.raises(ValueError, match="add_s8: b_zero_point must lie in"):
        _add_call(kernels, a, a, 0, 200, 0, p)
    x = np.zeros((1, 1, 4, 4), dtype=np.int8)
    with pytest.raises(ValueError, match="avgpool2d_s8: padding"):
        kernels.avgpool2d_s8(x, 2, 1, 2)
    with pytest.raises(TypeError, match="avgpool2d_s8: x must be int8"):
        kernels.avgpool2d_s8(x.astype(np.float32), 2)
    with pytest.raises(ValueError, match="quantize_add_params: scales must be positive"):
        quantize_add_params(0.1, 0.0, 0.1)
