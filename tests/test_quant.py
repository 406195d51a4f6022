"""tinyodl.quant: TFLite integer arithmetic against exact Python-integer oracles."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from int8_oracles import INT32_MAX, INT32_MIN, mbqm_oracle, round_half_away_fraction, srdhm_oracle

from tinyodl import quant

int32s = st.integers(INT32_MIN, INT32_MAX)
SETTINGS = settings(max_examples=150, deadline=None)


# ---- quantize_multiplier -------------------------------------------------------------------


@SETTINGS
@given(st.floats(min_value=2.0**-31, max_value=1e6, allow_nan=False, allow_infinity=False))
def test_quantize_multiplier_mantissa_range_and_reconstruction(m):
    m0, shift = quant.quantize_multiplier(np.array([m]))
    assert m0.dtype == np.int32 and shift.dtype == np.int32
    m0, shift = int(m0[0]), int(shift[0])
    assert 2**30 <= m0 < 2**31
    approx = m0 * 2.0 ** (shift - 31)
    assert abs(approx - m) <= m * 2.0**-30  # half an ulp of a 31-bit mantissa, relative


def test_quantize_multiplier_edge_cases():
    m0, shift = quant.quantize_multiplier(np.array([0.0, 1.0, 0.5, 2.0**-40, 1 - 2.0**-33]))
    assert m0.tolist()[:4] == [0, 2**30, 2**30, 0]
    assert shift.tolist()[:4] == [0, 1, 0, 0]
    # q * 2^31 rounds up to 2^31: halved, shift incremented
    assert (m0[4], shift[4]) == (2**30, 1)
    with pytest.raises(ValueError, match="finite and >= 0"):
        quant.quantize_multiplier(-0.5)


def test_quantize_multiplier_rounds_half_away():
    # q = 0.5 + 2^-32 sits exactly halfway between two Q31 values: round up, not to even
    m0, _ = quant.quantize_multiplier(0.5 + 2.0**-32)
    assert int(m0) == 2**30 + 1


# ---- fixed-point primitives --------------------------------------------------------------


@SETTINGS
@given(int32s, int32s)
def test_srdhm_matches_gemmlowp(a, b):
    got = quant.saturating_rounding_doubling_high_mul(np.int64(a), np.int64(b))
    assert int(got) == srdhm_oracle(a, b)


def test_srdhm_saturates_and_rounds_ties_up():
    got = quant.saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MIN)
    assert int(got) == INT32_MAX
    # a * b = +-2^30 and +-3 * 2^30 are exact ties of a * b / 2^31
    a = np.array([2**15, -(2**15), 3 * 2**15, -3 * 2**15])
    got = quant.saturating_rounding_doubling_high_mul(a, 2**15)
    assert got.tolist() == [srdhm_oracle(int(v), 2**15) for v in a] == [1, 0, 2, -1]


def test_rounding_divide_by_pot_ties():
    x = np.array([5, -5, 6, -6, 7, -7, 12, -12])
    got = quant.rounding_divide_by_pot(x, np.array([1, 1, 2, 2, 1, 1, 3, 3]))
    assert got.tolist() == [3, -3, 2, -2, 4, -4, 2, -2]


@SETTINGS
@given(int32s, st.integers(0, 31))
def test_rounding_divide_by_pot_rounds_half_away(x, e):
    got = int(quant.rounding_divide_by_pot(np.int64(x), e))
    assert got == round_half_away_fraction(Fraction(x, 2**e))


@SETTINGS
@given(
    int32s, st.integers(0, INT32_MAX), st.integers(-31, 30), st.sampled_from(["double", "single"])
)
def test_multiply_by_quantized_multiplier_matches_oracle(x, m0, shift, rounding):
    got = quant.multiply_by_quantized_multiplier(np.int64(x), m0, shift, rounding)
    assert int(got) == mbqm_oracle(x, m0, shift, rounding)


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_multiply_by_quantized_multiplier_vectorized_extremes(rounding):
    xs = np.array([INT32_MIN, INT32_MIN + 1, -(2**30), -3, -1, 0, 1, 2, 2**30, INT32_MAX])
    cases = [(2**31 - 1, 0), (2**30, 0), (2**30, -31), (2**31 - 1, -31), (2**30 + 7, 5), (1, 30)]
    for m0, shift in cases:
        got = quant.multiply_by_quantized_multiplier(xs, m0, shift, rounding)
        want = [mbqm_oracle(int(x), m0, shift, rounding) for x in xs]
        assert got.tolist() == want, (m0, shift)


@SETTINGS
@given(st.integers(-(2**24), 2**24), st.floats(1e-6, 0.99))
def test_double_rounding_is_within_one_of_exact(x, m):
    m0, shift = quant.quantize_multiplier(m)
    exact = Fraction(x) * Fraction(int(m0)) * Fraction(2) ** (int(shift) - 31)
    for rounding, tol in (("double", 1), ("single", Fraction(1, 2))):
        got = int(quant.multiply_by_quantized_multiplier(np.int64(x), m0, shift, rounding))
        assert abs(got - exact) <= tol


def test_unknown_rounding_is_rejected():
    with pytest.raises(ValueError, match="rounding"):
        quant.multiply_by_quantized_multiplier(1, 2**30, 0, "stochastic")


# ---- quantize / dequantize / ranges ------------------------------------------------------


def test_quantize_rounds_half_away_and_clamps():
    x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 1000.0, -1000.0])
    q = quant.quantize(x, 1.0, 0)
    assert q.dtype == np.int8
    assert q.tolist() == [-3, -2, -1, 1, 2, 3, 127, -128]
    q32 = quant.quantize(np.array([1e12]), 1.0, 0, quant.INT32_MIN, quant.INT32_MAX)
    assert q32.dtype == np.int32 and q32[0] == INT32_MAX


@SETTINGS
@given(st.floats(1e-3, 10.0), st.integers(-128, 127), st.integers(0, 2**32 - 1))
def test_dequantize_then_quantize_is_identity(scale, zp, seed):
    q = np.random.default_rng(seed).integers(-128, 128, 50).astype(np.int8)
    back = quant.quantize(quant.dequantize(q, scale, zp, dtype=np.float64), scale, zp)
    assert np.array_equal(back, q)


def test_per_channel_weights_are_symmetric_and_close():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 3, 3, 3)) * np.arange(1, 7)[:, None, None, None]
    w[2] = 0.0
    wq, scales = quant.quantize_weights_per_channel(w)
    assert wq.dtype == np.int8 and wq.min() >= -127 and wq.max() <= 127
    assert scales.shape == (6,) and scales[2] == 1.0
    assert np.abs(wq).reshape(6, -1).max(axis=1).tolist() == [127, 127, 0, 127, 127, 127]
    err = np.abs(quant.dequantize(wq, scales, 0, axis=0, dtype=np.float64) - w)
    assert np.all(err <= scales[:, None, None, None] / 2 + 1e-12)


@SETTINGS
@given(st.floats(-50, 0), st.floats(0, 50))
def test_activation_qparams_represent_zero_and_cover_range(lo, hi):
    scale, zp = quant.choose_activation_qparams(lo, hi)
    assert -128 <= zp <= 127 and scale > 0
    assert quant.dequantize(np.int8(zp), scale, zp, dtype=np.float64) == 0.0
    if hi - lo > 1e-3:
        ends = quant.dequantize(np.array([-128, 127], np.int8), scale, zp, dtype=np.float64)
        assert ends[0] <= lo + scale and ends[1] >= hi - scale


def test_activation_range():
    assert quant.activation_range(0.1, -5) == (-128, 127)
    assert quant.activation_range(0.1, -5, "relu") == (-5, 127)
    assert quant.activation_range(0.1, -128, "relu6") == (-128, -68)
    assert quant.activation_range(0.01, 0, "relu6") == (0, 127)
    with pytest.raises(ValueError, match="activation"):
        quant.activation_range(0.1, 0, "gelu")


def test_requantize_params_and_bias():
    m0, shift = quant.requantize_params(0.02, np.array([0.001, 0.004]), 0.1)
    real = m0 * 2.0 ** (shift.astype(float) - 31)
    np.testing.assert_allclose(real, [0.0002, 0.0008], rtol=1e-9)
    b = quant.quantize_bias(np.array([0.5, -0.5]), 0.02, np.array([0.001, 0.004]))
    assert b.dtype == np.int32 and b.tolist() == [25000, -6250]
