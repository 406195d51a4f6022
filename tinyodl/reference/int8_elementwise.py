"""Residual add and average pooling in the integer domain, pure numpy reference.

Chapter 03 (integer-only inference). The two operations an int8 MobileNet/MCUNet needs
besides convolutions, with the semantics of TFLite's reference integer kernels:

**ADD** (``tensorflow/lite/kernels/internal/reference/integer_ops/add.h``). The inputs have
their own scales ``s_a``, ``s_b``; the output ``s_y``. With ``left_shift = 20`` and
``t = 2 max(s_a, s_b)`` (see :func:`tinyodl.quant.quantize_add_params`)::

    a' = MBQM((a - zp_a) * 2^20, M_a, shift_a)        M_a = s_a / t   (< 1)
    b' = MBQM((b - zp_b) * 2^20, M_b, shift_b)        M_b = s_b / t
    y  = clamp(MBQM(a' + b', M_y, shift_y) + zp_y)    M_y = t / (2^20 s_y)

so ``y ~= ((a - zp_a) s_a + (b - zp_b) s_b) / s_y + zp_y``. MBQM is
:func:`tinyodl.quant.multiply_by_quantized_multiplier` with double rounding. Shifting by
2^20 first keeps 20 fractional bits through the two rescalings: ``255 * 2^20 < 2^31``.

**AVERAGE_POOL_2D** (``reference/integer_ops/pooling.h``). Input and output share one scale
and zero point, so averaging the raw int8 values is exact in real terms. Only taps inside
the image are summed and counted (unlike :func:`tinyodl.reference.pool.avgpool2d_forward`,
whose padding counts as zeros), and the division rounds half away from zero as C does::

    acc = sum of the window's values;  n = number of in-image taps
    y   = clamp((acc + n/2) / n if acc > 0 else (acc - n/2) / n)     (C integer division)

Global average pooling is this with the window equal to the whole image. The compiled twin
is ``tinyodl._kernels.int8_elementwise``; both give bit-identical outputs.
"""

from __future__ import annotations

import numpy as np

from tinyodl._shapes import conv_output_shape, pair
from tinyodl.quant import multiply_by_quantized_multiplier
from tinyodl.reference import _int8_checks as chk

#: TFLite's left shift for int8 ADD (15 for int16).
ADD_LEFT_SHIFT = 20


def add_args(fn, a, b, zps, multipliers, shifts, left_shift, act_min, act_max):
    """Validate the arguments of :func:`add_s8` (shared with the compiled kernel)."""
    a = chk.check_int8(fn, "a", a, a.ndim if isinstance(a, np.ndarray) else 1)
    b = chk.check_int8(fn, "b", b, b.ndim if isinstance(b, np.ndarray) else 1)
    if a.shape != b.shape:
        raise ValueError(f"{fn}: a has shape {a.shape} but b has shape {b.shape}; they must match")
    names = ("a_zero_point", "b_zero_point", "output_zero_point")
    zps = tuple(chk.check_zero_point(fn, n, z) for n, z in zip(names, zps, strict=True))
    for name, m in zip(("a", "b", "output"), multipliers, strict=True):
        if not isinstance(m, (int, np.integer)) or not 0 <= int(m) < 2**31:
            raise ValueError(f"{fn}: {name}_multiplier must be an int in [0, 2^31), got {m!r}")
    for name, s in zip(("a", "b", "output"), shifts, strict=True):
        if not isinstance(s, (int, np.integer)) or not -31 <= int(s) <= 30:
            raise ValueError(f"{fn}: {name}_shift must be an int in [-31, 30], got {s!r}")
    if not isinstance(left_shift, (int, np.integer)) or not 0 <= int(left_shift) <= 22:
        raise ValueError(f"{fn}: left_shift must be an int in [0, 22], got {left_shift!r}")
    lo, hi = chk.check_act_range(fn, act_min, act_max)
    return a, b, zps, tuple(int(m) for m in multipliers), tuple(int(s) for s in shifts), lo, hi


def add_s8(
    a: np.ndarray,
    b: np.ndarray,
    a_zero_point: int,
    a_multiplier: int,
    a_shift: int,
    b_zero_point: int,
    b_multiplier: int,
    b_shift: int,
    output_zero_point: int,
    output_multiplier: int,
    output_shift: int,
    left_shift: int = ADD_LEFT_SHIFT,
    act_min: int = -128,
    act_max: int = 127,
) -> np.ndarray:
    """Element-wise sum of two int8 tensors with different scales (TFLite ADD).

    Parameters
    ----------
    a, b : int8 arrays of the same shape
    a_zero_point, b_zero_point, output_zero_point : int in [-128, 127]
    a_multiplier, a_shift, b_multiplier, b_shift, output_multiplier, output_shift : int
        From :func:`tinyodl.quant.quantize_add_params`.
    left_shift : int, default 20
    act_min, act_max : int
        Clamp bounds (a fused activation).

    Returns
    -------
    int8 array, same shape
    """
    a, b, zps, ms, ss, lo, hi = add_args(
        "add_s8",
        a,
        b,
        (a_zero_point, b_zero_point, output_zero_point),
        (a_multiplier, b_multiplier, output_multiplier),
        (a_shift, b_shift, output_shift),
        left_shift,
        act_min,
        act_max,
    )
    scale = np.int64(1) << int(left_shift)
    a_part = multiply_by_quantized_multiplier((a.astype(np.int64) - zps[0]) * scale, ms[0], ss[0])
    b_part = multiply_by_quantized_multiplier((b.astype(np.int64) - zps[1]) * scale, ms[1], ss[1])
    y = multiply_by_quantized_multiplier(a_part + b_part, ms[2], ss[2]) + zps[2]
    return np.clip(y, lo, hi).astype(np.int8)


def pool_args(fn, x, kernel_size, stride, padding, act_min, act_max):
    """Validate the arguments of :func:`avgpool2d_s8`; returns (x, k, s, p, (OH, OW), lo, hi)."""
    x = chk.check_int8(fn, "x", x, 4)
    k = pair(kernel_size, "kernel_size")
    s = k if stride is None else pair(stride, "stride")
    p = pair(padding, "padding")
    if min(k) < 1:
        raise ValueError(f"{fn}: kernel_size must be positive, got {k}")
    if p[0] >= k[0] or p[1] >= k[1]:
        raise ValueError(f"{fn}: padding {p} must be smaller than the window {k}")
    try:
        out_hw = conv_output_shape(x.shape, k, s, p)
    except ValueError as err:
        raise ValueError(f"{fn}: {err} (input shape {x.shape})") from None
    lo, hi = chk.check_act_range(fn, act_min, act_max)
    return x, k, s, p, out_hw, lo, hi


def avgpool2d_s8(
    x: np.ndarray,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    act_min: int = -128,
    act_max: int = 127,
) -> np.ndarray:
    """Int8 average pooling, TFLite semantics (in and out share scale and zero point).

    Parameters
    ----------
    x : int8 array, shape (N, C, H, W)
    kernel_size, stride, padding : int or pair
        ``stride`` defaults to the window. Padded taps are neither summed nor counted.
    act_min, act_max : int

    Returns
    -------
    int8 array, shape (N, C, OH, OW)
    """
    x, (kh, kw), (sh, sw), (ph, pw), (oh, ow), lo, hi = pool_args(
        "avgpool2d_s8", x, kernel_size, stride, padding, act_min, act_max
    )
    n, c, h, w = x.shape
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    inside = np.pad(np.ones((h, w), dtype=np.int64), ((ph, ph), (pw, pw)))
    acc = np.zeros((n, c, oh, ow), dtype=np.int64)
    count = np.zeros((oh, ow), dtype=np.int64)
    for i in range(kh):  # one strided view per window tap
        for j in range(kw):
            rows = slice(i, i + sh * (oh - 1) + 1, sh)
            cols = slice(j, j + sw * (ow - 1) + 1, sw)
            acc += xp[:, :, rows, cols]
            count += inside[rows, cols]
    half = count // 2
    # C's integer division truncates toward zero; numpy's // floors, so divide magnitudes.
    magnitude = (np.abs(acc) + half) // count
    y = np.where(acc > 0, magnitude, -magnitude)
    return np.clip(y, lo, hi).astype(np.int8)
