"""Input validation shared by the numpy and Cython int8 kernels (chapter 03).

Both backends call these helpers first, so a bad argument gets the same error whichever
backend is active. Each helper returns its argument normalised (contiguous, right dtype).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tinyodl._shapes import conv_output_shape, padding4, pair
from tinyodl.quant import INT8_MAX, INT8_MIN, ROUNDING_MODES, WEIGHT_QMIN
from tinyodl.reference._checks import (  # shared with the float kernels
    ConvGeometry,
    check_shape4,  # noqa: F401  (re-exported: the int8 backward kernels call chk.check_shape4)
)

#: TFLite's accumulator bound: K products of |x - zp| <= 255 and |w| <= 127 fit in int32.
ACC_LIMIT = 2**31


def check_int8(fn: str, name: str, a: object, ndim: int) -> np.ndarray:
    """``a`` as a C-contiguous int8 array of rank ``ndim``."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{fn}: {name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != np.int8:
        raise TypeError(f"{fn}: {name} must be int8, got {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{fn}: {name} must be {ndim}-D, got shape {a.shape}")
    return np.ascontiguousarray(a)


def check_weight(fn: str, w: object, ndim: int) -> np.ndarray:
    """Int8 weights must stay in the symmetric range [-127, 127]."""
    w = check_int8(fn, "w", w, ndim)
    if w.size and w.min() < WEIGHT_QMIN:
        raise ValueError(f"{fn}: int8 weights must lie in [-127, 127], got minimum {w.min()}")
    return w


def check_zero_point(fn: str, name: str, zp: object) -> int:
    """A per-tensor int8 zero point, as a Python int."""
    if not isinstance(zp, (int, np.integer)) or isinstance(zp, bool):
        raise TypeError(f"{fn}: {name} must be an int, got {zp!r}")
    if not INT8_MIN <= int(zp) <= INT8_MAX:
        raise ValueError(f"{fn}: {name} must lie in [-128, 127], got {zp}")
    return int(zp)


def check_act_range(fn: str, act_min: object, act_max: object) -> tuple[int, int]:
    """Clamp bounds within int8 with ``act_min <= act_max``."""
    lo = check_zero_point(fn, "act_min", act_min)
    hi = check_zero_point(fn, "act_max", act_max)
    if lo > hi:
        raise ValueError(f"{fn}: act_min={lo} must not exceed act_max={hi}")
    return lo, hi


def check_rounding(fn: str, rounding: object) -> int:
    """0 for ``"double"`` (TFLite default), 1 for ``"single"``."""
    if rounding not in ROUNDING_MODES:
        raise ValueError(f"{fn}: rounding must be one of {ROUNDING_MODES}, got {rounding!r}")
    return ROUNDING_MODES.index(rounding)


def check_requant_params(
    fn: str, multiplier: object, shift: object, channels: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel int32 ``(M0, shift)`` of length ``channels`` (a scalar is broadcast)."""
    out = []
    for name, p in (("multiplier", multiplier), ("shift", shift)):
        arr = np.asarray(p)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"{fn}: {name} must be an integer array, got dtype {arr.dtype}")
        if arr.ndim == 0 or arr.shape == (1,):
            arr = np.full(channels, arr.reshape(()), dtype=np.int64)
        if arr.shape != (channels,):
            raise ValueError(f"{fn}: {name} must have shape ({channels},), got {arr.shape}")
        out.append(arr.astype(np.int64))
    m0, sh = out
    if m0.size and (m0.min() < 0 or m0.max() >= 2**31):
        raise ValueError(f"{fn}: multiplier must lie in [0, 2^31), got {m0.min()}..{m0.max()}")
    if sh.size and (sh.min() < -31 or sh.max() > 30):
        raise ValueError(f"{fn}: shift must lie in [-31, 30], got {sh.min()}..{sh.max()}")
    return np.ascontiguousarray(m0, dtype=np.int32), np.ascontiguousarray(sh, dtype=np.int32)


def check_bias(fn: str, bias: object, channels: int) -> np.ndarray:
    """Int32 bias of shape (channels,); ``None`` means zeros."""
    if bias is None:
        return np.zeros(channels, dtype=np.int32)
    if not isinstance(bias, np.ndarray) or bias.dtype != np.int32:
        got = bias.dtype if isinstance(bias, np.ndarray) else type(bias).__name__
        raise TypeError(f"{fn}: bias must be an int32 array or None, got {got}")
    if bias.shape != (channels,):
        raise ValueError(f"{fn}: bias must have shape ({channels},), got {bias.shape}")
    return np.ascontiguousarray(bias)


def check_accumulator(fn: str, k: int) -> None:
    """``K * 255 * 127 < 2^31``: the int32 accumulator cannot overflow."""
    if k * 255 * 127 >= ACC_LIMIT:
        raise ValueError(
            f"{fn}: reduction length K={k} is too long for an int32 accumulator "
            f"(need K * 255 * 127 < 2^31, i.e. K <= {(ACC_LIMIT - 1) // (255 * 127)})"
        )


def gemm_args(fn: str, a, b, a_zero_point, b_zero_point) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Validate ``gemm_s8`` operands; the int32 result must not be able to overflow."""
    a = check_int8(fn, "a", a, 2)
    b = check_int8(fn, "b", b, 2)
    za = check_zero_point(fn, "a_zero_point", a_zero_point)
    zb = check_zero_point(fn, "b_zero_point", b_zero_point)
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"{fn}: a is {a.shape} and b is {b.shape}; inner dimensions differ")
    # Largest |a - za| and |b - zb| over the whole int8 range bound every dot product.
    a_max, b_max = max(za + 128, 127 - za), max(zb + 128, 127 - zb)
    if a.shape[1] * a_max * b_max >= ACC_LIMIT:
        raise ValueError(
            f"{fn}: K={a.shape[1]} with zero points ({za}, {zb}) can overflow int32 "
            f"(need K * {a_max} * {b_max} < 2^31)"
        )
    return a, b, za, zb


class RequantArgs(NamedTuple):
    """Validated requantization parameters shared by every int8 kernel."""

    multiplier: np.ndarray
    shift: np.ndarray
    zp_out: int
    act_min: int
    act_max: int
    rounding: int


def requant_args(
    fn: str, channels: int, multiplier, shift, output_zero_point, act_min, act_max, rounding
) -> RequantArgs:
    """Validate ``(multiplier, shift, output_zero_point, act_min, act_max, rounding)``."""
    m0, sh = check_requant_params(fn, multiplier, shift, channels)
    zp_out = check_zero_point(fn, "output_zero_point", output_zero_point)
    lo, hi = check_act_range(fn, act_min, act_max)
    return RequantArgs(m0, sh, zp_out, lo, hi, check_rounding(fn, rounding))


def check_acc(fn: str, acc: object) -> np.ndarray:
    """An int32 accumulator of shape (N, F, ...), C-contiguous."""
    if not isinstance(acc, np.ndarray) or acc.dtype != np.int32:
        got = acc.dtype if isinstance(acc, np.ndarray) else type(acc).__name__
        raise TypeError(f"{fn}: acc must be an int32 array, got {got}")
    if acc.ndim < 2:
        raise ValueError(f"{fn}: acc must be (N, F, ...) with channels on axis 1, got {acc.shape}")
    return np.ascontiguousarray(acc)


def linear_args(
    fn: str, x, w, bias, input_zero_point
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Validate ``(x (N, K), w (F, K), bias (F,), zp_in)`` of an int8 linear layer."""
    x = check_int8(fn, "x", x, 2)
    w = check_weight(fn, w, 2)
    if x.shape[1] != w.shape[1]:
        raise ValueError(
            f"{fn}: x is {x.shape} but w is {w.shape}; expected w of (F, {x.shape[1]})"
        )
    check_accumulator(fn, w.shape[1])
    bias = check_bias(fn, bias, w.shape[0])
    return x, w, bias, check_zero_point(fn, "input_zero_point", input_zero_point)


def conv_geometry(fn: str, x_shape, w_shape, stride, padding, groups: object) -> ConvGeometry:
    """Check that x (N, C, H, W) and w (F, C/groups, KH, KW) fit; compute (OH, OW)."""
    n, c, h, w = (int(s) for s in x_shape)
    f, cg, kh, kw = (int(s) for s in w_shape)
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"{fn}: groups must be a positive int, got {groups!r}")
    groups = int(groups)
    if c % groups or f % groups:
        raise ValueError(
            f"{fn}: channels C={c} and filters F={f} must both be divisible by groups={groups}"
        )
    if cg * groups != c:
        raise ValueError(
            f"{fn}: w has {cg} input channels per group; x has C={c} and groups={groups}, "
            f"so expected {c // groups}"
        )
    if kh < 1 or kw < 1:
        raise ValueError(f"{fn}: kernel size must be positive, got {(kh, kw)}")
    sh, sw = pair(stride, "stride")
    try:
        ph, pb, pw, pr = padding4(padding)
        oh, ow = conv_output_shape((n, c, h, w), (kh, kw), (sh, sw), (ph, pb, pw, pr))
    except ValueError as err:
        raise ValueError(f"{fn}: {err} (input shape {(n, c, h, w)})") from None
    return ConvGeometry(n, c, h, w, f, kh, kw, sh, sw, ph, pw, oh, ow, groups, pb, pr)


class Int8ConvArgs(NamedTuple):
    """Validated arguments of :func:`conv2d_s8` / :func:`depthwise_conv2d_s8`."""

    x: np.ndarray
    w: np.ndarray
    bias: np.ndarray
    zp_in: int
    geom: ConvGeometry
    rq: RequantArgs


def conv_args(
    fn, x, w, bias, zp_in, zp_out, multiplier, shift, stride, padding, groups, act_min, act_max,
    rounding,
) -> Int8ConvArgs:  # fmt: skip
    """Validate every argument of an int8 convolution."""
    x = check_int8(fn, "x", x, 4)
    w = check_weight(fn, w, 4)
    geom = conv_geometry(fn, x.shape, w.shape, stride, padding, groups)
    check_accumulator(fn, w.shape[1] * geom.KH * geom.KW)
    return Int8ConvArgs(
        x,
        w,
        check_bias(fn, bias, geom.F),
        check_zero_point(fn, "input_zero_point", zp_in),
        geom,
        requant_args(fn, geom.F, multiplier, shift, zp_out, act_min, act_max, rounding),
    )


def depthwise_args(
    fn, x, w, bias, zp_in, zp_out, multiplier, shift, stride, padding, act_min, act_max, rounding
) -> Int8ConvArgs:
    """Validate a depthwise convolution: a conv with groups = C and w of shape (C, 1, KH, KW)."""
    if isinstance(x, np.ndarray) and isinstance(w, np.ndarray) and x.ndim == 4 == w.ndim:
        if w.shape[0] != x.shape[1] or w.shape[1] != 1:
            raise ValueError(f"{fn}: w must have shape ({x.shape[1]}, 1, KH, KW), got {w.shape}")
    groups = x.shape[1] if isinstance(x, np.ndarray) and x.ndim == 4 else 1
    return conv_args(
        fn, x, w, bias, zp_in, zp_out, multiplier, shift, stride, padding, groups, act_min,
        act_max, rounding,
    )  # fmt: skip


def check_float_grad(fn: str, name: str, a: object, shape: tuple[int, ...]) -> np.ndarray:
    """A float gradient of the given shape, as C-contiguous float32."""
    if not isinstance(a, np.ndarray) or a.dtype.kind != "f":
        got = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
        raise TypeError(f"{fn}: {name} must be a float array, got {got}")
    if a.shape != tuple(shape):
        raise ValueError(f"{fn}: {name} must have shape {tuple(shape)}, got {a.shape}")
    return np.ascontiguousarray(a, dtype=np.float32)
