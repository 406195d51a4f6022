"""Int8 arithmetic with TFLite / CMSIS-NN semantics, shared by both kernel backends.

Chapter 03 (quantization). A real number is represented by an integer ``q`` as

    real = scale * (q - zero_point)

Weights are int8 in [-127, 127] with zero point 0 and one scale per output channel;
activations are int8 in [-128, 127] with one scale and zero point per tensor; biases are
int32 with scale ``s_in * s_w[c]`` and zero point 0. A conv or linear layer then needs only
integer arithmetic::

    acc = sum_k w[c, k] * (x[k] - zp_in) + bias[c]               (int32)
    y   = clamp(MultiplyByQuantizedMultiplier(acc, M0[c], shift[c]) + zp_out,
                act_min, act_max)                                (int8)

where ``M0[c] * 2^(shift[c] - 31) ~= M[c] = s_in * s_w[c] / s_out``. The functions below
compute ``M0, shift`` (:func:`quantize_multiplier`) and apply them exactly as the TFLite
reference kernels do, on whole numpy arrays at once, with int64 intermediates. References:
Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-
Only Inference" (CVPR 2018), and gemmlowp's fixed-point helpers.
"""

from __future__ import annotations

import numpy as np

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
INT8_MIN, INT8_MAX = -128, 127
#: Symmetric weight range: -128 is not used so that the range is symmetric around 0.
WEIGHT_QMIN, WEIGHT_QMAX = -127, 127
ROUNDING_MODES = ("double", "single")


def round_half_away(x: np.ndarray | float) -> np.ndarray:
    """Round to the nearest integer, ties away from zero (C's ``round``), as float64.

    numpy's ``np.round`` rounds ties to even (``np.round(2.5) == 2``); TFLite uses
    ``std::round`` (``round(2.5) == 3``, ``round(-2.5) == -3``).
    """
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def quantize_multiplier(real_multiplier: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Split real multipliers into a Q31 fixed-point mantissa and a power-of-two shift.

    TFLite's ``QuantizeMultiplier``: ``frexp(M) = q * 2^shift`` with ``q`` in [0.5, 1);
    ``M0 = round_half_away(q * 2^31)``, so ``M ~= M0 * 2^(shift - 31)``. If rounding gives
    ``M0 == 2^31`` it is halved and ``shift`` incremented; if ``shift < -31`` the multiplier
    is too small to represent and becomes ``M0 = 0, shift = 0``; ``M == 0`` gives ``(0, 0)``.

    Parameters
    ----------
    real_multiplier : float or array of float, shape (F,)
        Non-negative effective multipliers, usually ``s_in * s_w[c] / s_out``.

    Returns
    -------
    multiplier : int32 array, same shape
        ``M0``, in [2^30, 2^31) for every representable non-zero multiplier.
    shift : int32 array, same shape
        Power-of-two exponent; positive means a left shift.
    """
    m = np.asarray(real_multiplier, dtype=np.float64)
    if not np.all(np.isfinite(m)) or np.any(m < 0):
        raise ValueError(f"quantize_multiplier: multipliers must be finite and >= 0, got {m}")
    q, shift = np.frexp(m)  # m = q * 2^shift, 0.5 <= q < 1 (q = 0 for m = 0)
    m0 = round_half_away(q * 2.0**31).astype(np.int64)
    shift = shift.astype(np.int64)
    carry = m0 == 2**31
    m0 = np.where(carry, m0 // 2, m0)
    shift = np.where(carry, shift + 1, shift)
    tiny = shift < -31
    m0 = np.where(tiny, 0, m0)
    shift = np.where(tiny | (m0 == 0), 0, shift)
    if np.any(shift > 30):
        raise ValueError(f"quantize_multiplier: multiplier {m.max()} >= 2^30 is not supported")
    return m0.astype(np.int32), shift.astype(np.int32)


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp's SRDHM: the high 32 bits of ``2 * a * b``, rounded; int32 in, int64 out.

    ``(a * b + 2^30) >> 31`` in int64 (an arithmetic shift floors, so ties round up,
    which is the same as gemmlowp's nudge-and-truncate). The single overflowing case,
    ``a == b == INT32_MIN``, saturates to ``INT32_MAX``.
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    result = (a * b + (1 << 30)) >> 31
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, result)


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray | int) -> np.ndarray:
    """``x / 2^exponent`` rounded half away from zero (gemmlowp ``RoundingDivideByPOT``).

    ``mask = 2^e - 1``, ``remainder = x & mask``, ``threshold = (mask >> 1) + (x < 0)``,
    ``result = (x >> e) + (remainder > threshold)``. ``exponent`` is in [0, 31].
    """
    x = np.asarray(x, dtype=np.int64)
    e = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (remainder > threshold)


def multiply_by_quantized_multiplier(
    x: np.ndarray, multiplier: np.ndarray, shift: np.ndarray, rounding: str = "double"
) -> np.ndarray:
    """``x * M0 * 2^(shift - 31)`` rounded to an integer, TFLite style; returns int64.

    ``rounding="double"`` (TFLite's default reference path)::

        left, right = max(shift, 0), max(-shift, 0)
        RoundingDivideByPOT(SRDHM(x * 2^left, M0), right)

    rounds twice (half up inside SRDHM, then half away from zero). ``x * 2^left`` is
    saturated to int32 (C leaves that overflow undefined; we pin it down).
    ``rounding="single"`` (``TFLITE_SINGLE_ROUNDING``) rounds once, half up::

        (x * M0 + 2^(30 - shift)) >> (31 - shift)

    and its result is saturated to int32. ``x`` is int32-valued; ``multiplier``/``shift``
    broadcast against it (per-channel arrays need a trailing axis, e.g. ``m[:, None]``).
    """
    if rounding not in ROUNDING_MODES:
        raise ValueError(f"rounding must be one of {ROUNDING_MODES}, got {rounding!r}")
    x = np.asarray(x, dtype=np.int64)
    m0 = np.asarray(multiplier, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    if rounding == "single":
        total = 31 - shift
        result = (x * m0 + (np.int64(1) << (total - 1))) >> total
        return np.clip(result, INT32_MIN, INT32_MAX)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    shifted = np.clip(x << left, INT32_MIN, INT32_MAX)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, m0), right)


def _broadcast_param(p, ndim: int, axis: int | None) -> np.ndarray:
    """Shape a per-tensor scalar or per-channel vector so it broadcasts along ``axis``."""
    p = np.asarray(p, dtype=np.float64)
    if axis is None or p.ndim == 0:
        return p
    shape = [1] * ndim
    shape[axis] = -1
    return p.reshape(shape)


def quantize(
    x: np.ndarray,
    scale: np.ndarray | float,
    zero_point: np.ndarray | int,
    qmin: int = INT8_MIN,
    qmax: int = INT8_MAX,
    axis: int | None = None,
) -> np.ndarray:
    """``q = clamp(round_half_away(x / scale) + zero_point, qmin, qmax)``.

    Returns int8 when ``[qmin, qmax]`` fits in int8, else int32 (e.g. biases, with
    ``qmin=INT32_MIN, qmax=INT32_MAX``). For per-channel ``scale``/``zero_point``
    vectors give the channel ``axis`` of ``x``.
    """
    x = np.asarray(x, dtype=np.float64)
    s = _broadcast_param(scale, x.ndim, axis)
    zp = _broadcast_param(zero_point, x.ndim, axis)
    if np.any(s <= 0):
        raise ValueError(f"quantize: scale must be positive, got {scale}")
    q = np.clip(round_half_away(x / s) + zp, qmin, qmax)
    dtype = np.int8 if INT8_MIN <= qmin and qmax <= INT8_MAX else np.int32
    return q.astype(dtype)


def dequantize(
    q: np.ndarray,
    scale: np.ndarray | float,
    zero_point: np.ndarray | int,
    axis: int | None = None,
    dtype: type = np.float32,
) -> np.ndarray:
    """``real = scale * (q - zero_point)``; per-channel parameters along ``axis``."""
    q = np.asarray(q)
    s = _broadcast_param(scale, q.ndim, axis)
    zp = _broadcast_param(zero_point, q.ndim, axis)
    return (s * (q.astype(np.float64) - zp)).astype(dtype)


def activation_range(
    scale: float, zero_point: int, activation: str | None = None
) -> tuple[int, int]:
    """Int8 clamp bounds ``(act_min, act_max)`` of a fused activation.

    ``None`` -> (-128, 127); ``"relu"`` -> (quantize(0), 127); ``"relu6"`` ->
    (quantize(0), quantize(6)), each clipped to the int8 range. quantize(0) is the zero point.
    """
    if activation not in (None, "relu", "relu6"):
        raise ValueError(f"activation must be None, 'relu' or 'relu6', got {activation!r}")
    if activation is None:
        return INT8_MIN, INT8_MAX
    act_min = max(INT8_MIN, int(zero_point))
    if activation == "relu":
        return act_min, INT8_MAX
    six = int(quantize(6.0, scale, zero_point))
    return act_min, min(INT8_MAX, six)


def choose_activation_qparams(
    x_min: float, x_max: float, qmin: int = INT8_MIN, qmax: int = INT8_MAX
) -> tuple[float, int]:
    """Per-tensor asymmetric ``(scale, zero_point)`` covering ``[x_min, x_max]``.

    The range is first widened to contain 0 (so real 0, e.g. padding and ReLU's floor, is
    exactly representable): ``scale = (max - min) / (qmax - qmin)``,
    ``zero_point = clamp(qmin - round_half_away(min / scale), qmin, qmax)``.
    An all-zero range gets ``scale = 1``.
    """
    lo, hi = min(float(x_min), 0.0), max(float(x_max), 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"choose_activation_qparams: range must be finite, got {x_min, x_max}")
    scale = (hi - lo) / (qmax - qmin)
    if scale == 0.0:
        return 1.0, 0
    zero_point = int(np.clip(qmin - round_half_away(lo / scale), qmin, qmax))
    return float(scale), zero_point


def choose_weight_scales(w: np.ndarray, axis: int = 0, qmax: int = WEIGHT_QMAX) -> np.ndarray:
    """Per-channel symmetric scales ``max|w_c| / qmax`` (float64, one per ``axis`` entry).

    Channels that are entirely zero get scale 1 (any scale represents them exactly).
    """
    w = np.asarray(w, dtype=np.float64)
    reduce_axes = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
    amax = np.abs(w).max(axis=reduce_axes) if reduce_axes else np.abs(w)
    return np.where(amax > 0, amax / qmax, 1.0)


def quantize_weights_per_channel(w: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel int8 weights: ``(w_q in [-127, 127], scales)``."""
    scales = choose_weight_scales(w, axis)
    return quantize(w, scales, 0, WEIGHT_QMIN, WEIGHT_QMAX, axis=axis), scales


def quantize_bias(b: np.ndarray, input_scale: float, weight_scales: np.ndarray) -> np.ndarray:
    """Int32 bias with scale ``s_in * s_w[c]`` and zero point 0."""
    return quantize(b, input_scale * np.asarray(weight_scales), 0, INT32_MIN, INT32_MAX)


def requantize_params(
    input_scale: float, weight_scales: np.ndarray, output_scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """``quantize_multiplier(s_in * s_w[c] / s_out)``, computed in float64 as TFLite does."""
    real = np.float64(input_scale) * np.asarray(weight_scales, dtype=np.float64)
    return quantize_multiplier(real / np.float64(output_scale))


def quantize_add_params(
    a_scale: float, b_scale: float, output_scale: float, left_shift: int = 20
) -> dict[str, int]:
    """Integer parameters of TFLite's int8 ADD (``tinyodl.ops.add_s8``).

    With ``t = 2 * max(s_a, s_b)``: ``M_a = s_a / t`` and ``M_b = s_b / t`` (both <= 1/2)
    rescale the inputs after a left shift by ``left_shift`` bits, and
    ``M_y = t / (2^left_shift * s_y)`` rescales their sum (computed in float64).

    Returns
    -------
    dict
        ``a_multiplier``, ``a_shift``, ``b_multiplier``, ``b_shift``, ``output_multiplier``,
        ``output_shift`` (Python ints) and ``left_shift``.
    """
    scales = np.array([a_scale, b_scale, output_scale], dtype=np.float64)
    if not np.all(np.isfinite(scales)) or np.any(scales <= 0):
        raise ValueError(f"quantize_add_params: scales must be positive, got {scales.tolist()}")
    twice_max = 2.0 * max(scales[0], scales[1])
    real = np.array(
        [scales[0] / twice_max, scales[1] / twice_max, twice_max / (2.0**left_shift * scales[2])]
    )
    m0, shift = quantize_multiplier(real)
    names = ("a", "b", "output")
    out = {f"{n}_multiplier": int(m) for n, m in zip(names, m0, strict=True)}
    out.update({f"{n}_shift": int(s) for n, s in zip(names, shift, strict=True)})
    out["left_shift"] = int(left_shift)
    return out
