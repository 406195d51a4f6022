"""Integer-only int8 kernels, pure numpy reference (TFLite / CMSIS-NN semantics).

Chapter 03 (quantization). Every kernel computes an exact int32 accumulator

    acc[c] = sum_k w[c, k] * (x[k] - input_zero_point) + bias[c]

and requantizes it (see :mod:`tinyodl.quant`)::

    y[c] = clamp(MultiplyByQuantizedMultiplier(acc[c], multiplier[c], shift[c])
                 + output_zero_point, act_min, act_max)

Accumulation must be exact: ``int8 @ int8`` in numpy wraps around in int8, so we widen to
float64 and use BLAS, which is exact while every partial sum stays below 2^53 (here they
stay below 2^31). A sum that would overflow int32 is rejected up front
(``K * 255 * 127 < 2^31``). When adding the bias overflows int32 the result is saturated.
The compiled twin is ``tinyodl._kernels.int8``; both give bit-identical outputs.
"""

from __future__ import annotations

import numpy as np

from tinyodl.quant import INT32_MAX, INT32_MIN, ROUNDING_MODES, multiply_by_quantized_multiplier
from tinyodl.reference import _int8_checks as chk


def gemm_s8(
    a: np.ndarray, b: np.ndarray, a_zero_point: int = 0, b_zero_point: int = 0
) -> np.ndarray:
    """Exact int8 matrix product with zero points: ``sum_k (a[m,k] - za) * (b[k,n] - zb)``.

    Parameters
    ----------
    a : int8 array, shape (M, K)
    b : int8 array, shape (K, N)
    a_zero_point, b_zero_point : int in [-128, 127]

    Returns
    -------
    int32 array, shape (M, N)
    """
    a, b, za, zb = chk.gemm_args("gemm_s8", a, b, a_zero_point, b_zero_point)
    acc = (a.astype(np.float64) - za) @ (b.astype(np.float64) - zb)  # exact: |acc| < 2^31
    return acc.astype(np.int32)


def _requantize(acc: np.ndarray, rq: chk.RequantArgs) -> np.ndarray:
    """Saturate int64 ``acc`` to int32, scale per channel (axis 1), add zp_out, clamp."""
    acc = np.clip(acc, INT32_MIN, INT32_MAX)
    channel = (-1,) + (1,) * (acc.ndim - 2)  # broadcast (F,) along axis 1
    y = multiply_by_quantized_multiplier(
        acc, rq.multiplier.reshape(channel), rq.shift.reshape(channel), ROUNDING_MODES[rq.rounding]
    )
    return np.clip(y + rq.zp_out, rq.act_min, rq.act_max).astype(np.int8)


def requantize(
    acc: np.ndarray,
    multiplier: np.ndarray,
    shift: np.ndarray,
    output_zero_point: int,
    act_min: int = -128,
    act_max: int = 127,
    rounding: str = "double",
) -> np.ndarray:
    """Int32 accumulators -> int8 outputs, one (multiplier, shift) per channel (axis 1).

    Parameters
    ----------
    acc : int32 array, shape (N, F, ...)
    multiplier, shift : int32 arrays, shape (F,)
        From :func:`tinyodl.quant.quantize_multiplier`.
    output_zero_point : int
    act_min, act_max : int
        Clamp bounds (fused activation), see :func:`tinyodl.quant.activation_range`.
    rounding : {"double", "single"}

    Returns
    -------
    int8 array, same shape as ``acc``
    """
    acc = chk.check_acc("requantize", acc)
    rq = chk.requant_args(
        "requantize", acc.shape[1], multiplier, shift, output_zero_point, act_min, act_max, rounding
    )
    return _requantize(acc.astype(np.int64), rq)


def linear_s8(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None,
    input_zero_point: int,
    output_zero_point: int,
    multiplier: np.ndarray,
    shift: np.ndarray,
    act_min: int = -128,
    act_max: int = 127,
    rounding: str = "double",
) -> np.ndarray:
    """Fully connected int8 layer: ``requantize((x - zp_in) @ w.T + bias)``.

    Parameters
    ----------
    x : int8 array, shape (N, K)
    w : int8 array, shape (F, K), values in [-127, 127]
    bias : int32 array, shape (F,), or None

    Returns
    -------
    int8 array, shape (N, F)
    """
    fn = "linear_s8"
    x, w, bias, zp_in = chk.linear_args(fn, x, w, bias, input_zero_point)
    rq = chk.requant_args(
        fn, w.shape[0], multiplier, shift, output_zero_point, act_min, act_max, rounding
    )
    acc = (x.astype(np.float64) - zp_in) @ w.astype(np.float64).T  # exact
    return _requantize(acc.astype(np.int64) + bias, rq)


def im2col_s8(x: np.ndarray, geom: chk.ConvGeometry, pad_value: int) -> np.ndarray:
    """Int8 im2col: (N, C, H, W) -> (N, C*KH*KW, OH*OW), padding filled with ``pad_value``.

    Filling the border with the input zero point makes ``x - zp_in`` zero there, so the
    padding taps contribute nothing to the accumulator.
    """
    g = geom
    xp = np.pad(x, ((0, 0), (0, 0), (g.PH, g.PB), (g.PW, g.PR)), constant_values=pad_value)
    cols = np.empty((g.N, g.C, g.KH, g.KW, g.OH, g.OW), dtype=x.dtype)
    for i in range(g.KH):
        for j in range(g.KW):
            rows = slice(i, i + g.SH * (g.OH - 1) + 1, g.SH)
            columns = slice(j, j + g.SW * (g.OW - 1) + 1, g.SW)
            cols[:, :, i, j] = xp[:, :, rows, columns]
    return cols.reshape(g.N, g.C * g.KH * g.KW, g.OH * g.OW)


def conv2d_s8(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None,
    input_zero_point: int,
    output_zero_point: int,
    multiplier: np.ndarray,
    shift: np.ndarray,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, ...] = 0,
    groups: int = 1,
    act_min: int = -128,
    act_max: int = 127,
    rounding: str = "double",
) -> np.ndarray:
    """Int8 2-D convolution (cross-correlation) with per-output-channel requantization.

    Parameters
    ----------
    x : int8 array, shape (N, C, H, W)
    w : int8 array, shape (F, C // groups, KH, KW), values in [-127, 127]
    bias : int32 array, shape (F,), or None
    input_zero_point, output_zero_point : int
    multiplier, shift : int32 arrays, shape (F,)
    stride : int or (int, int)
    padding : int, (ph, pw) or (top, bottom, left, right)
        Padded with the input zero point; a 4-tuple gives TFLite's asymmetric SAME padding.

    Returns
    -------
    int8 array, shape (N, F, OH, OW)
    """
    a = chk.conv_args(
        "conv2d_s8", x, w, bias, input_zero_point, output_zero_point, multiplier, shift,
        stride, padding, groups, act_min, act_max, rounding,
    )  # fmt: skip
    g = a.geom
    cols = im2col_s8(a.x, g, a.zp_in).astype(np.float64) - a.zp_in  # (N, C*KH*KW, P)
    k = (g.C // g.groups) * g.KH * g.KW
    fg = g.F // g.groups
    acc = np.empty((g.N, g.F, g.OH * g.OW), dtype=np.int64)
    for grp in range(g.groups):
        w_g = a.w[grp * fg : (grp + 1) * fg].reshape(fg, k).astype(np.float64)
        acc[:, grp * fg : (grp + 1) * fg] = w_g @ cols[:, grp * k : (grp + 1) * k]  # exact
    acc += a.bias[:, None]
    return _requantize(acc, a.rq).reshape(g.N, g.F, g.OH, g.OW)


def depthwise_conv2d_s8(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None,
    input_zero_point: int,
    output_zero_point: int,
    multiplier: np.ndarray,
    shift: np.ndarray,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, ...] = 0,
    act_min: int = -128,
    act_max: int = 127,
    rounding: str = "double",
) -> np.ndarray:
    """Int8 depthwise convolution (depth multiplier 1): each channel has its own filter.

    Parameters
    ----------
    x : int8 array, shape (N, C, H, W)
    w : int8 array, shape (C, 1, KH, KW)
    bias : int32 array, shape (C,), or None

    Returns
    -------
    int8 array, shape (N, C, OH, OW)
    """
    a = chk.depthwise_args(
        "depthwise_conv2d_s8", x, w, bias, input_zero_point, output_zero_point, multiplier,
        shift, stride, padding, act_min, act_max, rounding,
    )  # fmt: skip
    g = a.geom
    xp = np.pad(a.x, ((0, 0), (0, 0), (g.PH, g.PB), (g.PW, g.PR)), constant_values=a.zp_in)
    xp = xp.astype(np.int64) - a.zp_in
    acc = np.zeros((g.N, g.C, g.OH, g.OW), dtype=np.int64)
    for i in range(g.KH):  # one shifted, strided view of the input per filter tap
        for j in range(g.KW):
            window = xp[
                :, :, i : i + g.SH * (g.OH - 1) + 1 : g.SH, j : j + g.SW * (g.OW - 1) + 1 : g.SW
            ]
            acc += a.w[:, 0, i, j].astype(np.int64)[:, None, None] * window
    acc += a.bias[:, None, None]
    return _requantize(acc, a.rq)
