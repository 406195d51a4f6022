"""Exact oracles for the int8 tests, written from the definitions with Python ints.

Independent of :mod:`tinyodl.quant`: gemmlowp's SRDHM is implemented literally (nudge, then
C's truncating division) and every rounding step goes through :class:`fractions.Fraction`.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def sat32(v: int) -> int:
    return min(max(v, INT32_MIN), INT32_MAX)


def trunc_div(n: int, d: int) -> int:
    """C integer division (rounds toward zero)."""
    q = abs(n) // abs(d)
    return q if (n >= 0) == (d > 0) else -q


def srdhm_oracle(a: int, b: int) -> int:
    """gemmlowp's SaturatingRoundingDoublingHighMul: nudge, then truncating division."""
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    return trunc_div(ab + nudge, 1 << 31)


def round_half_away_fraction(v: Fraction) -> int:
    magnitude = math.floor(abs(v) + Fraction(1, 2))
    return magnitude if v >= 0 else -magnitude


def mbqm_oracle(x: int, m0: int, shift: int, rounding: str) -> int:
    if rounding == "single":
        exact = Fraction(x * m0) * Fraction(2) ** (shift - 31)
        return sat32(math.floor(exact + Fraction(1, 2)))
    left, right = max(shift, 0), max(-shift, 0)
    high = srdhm_oracle(sat32(x * 2**left), m0)
    return round_half_away_fraction(Fraction(high, 2**right))


def requant_oracle(acc, m0, shift, zp_out, lo, hi, rounding):
    """Per-element requantization (channels on axis 1): saturate, scale, add zp, clamp."""
    out = np.empty(acc.shape, dtype=np.int64)
    for idx in np.ndindex(acc.shape):
        c = idx[1]
        y = mbqm_oracle(sat32(int(acc[idx])), int(m0[c]), int(shift[c]), rounding) + zp_out
        out[idx] = min(max(y, lo), hi)
    return out.astype(np.int8)


def conv_acc_float(x, w, b, stride, padding, groups):
    """Float64 convolution by direct loops over the filter taps (b may be None)."""
    n, c, h, wd = x.shape
    f, cg, kh, kw = w.shape
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    out = np.zeros((n, f, oh, ow))
    fg = f // groups
    for o in range(f):
        g = o // fg
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, g * cg : (g + 1) * cg, i : i + sh * oh : sh, j : j + sw * ow : sw]
                out[:, o] += np.einsum("nchw,c->nhw", patch, w[o, :, i, j])
    return out if b is None else out + b[None, :, None, None]
