# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Residual add and average pooling in the integer domain, compiled (TFLite semantics).

Chapter 03. Same API and bit-identical results as :mod:`tinyodl.reference.int8_elementwise`;
read that module for the maths. These operations are memory-bound (a few integer operations
per byte), so the compiled version is simply:

1. **One pass, no temporaries.** The numpy twin builds int64 arrays for every intermediate
   (``(a - zp) << 20``, each rescaled input, their sum); here each element goes through the
   whole chain in registers and is written once.
2. **MultiplyByQuantizedMultiplier inline** (``_mbqm``), the same double-rounding helper as
   ``kernels/int8.pyx``, with int64 intermediates.
3. **Pooling by output pixel**: each output sums its in-image window directly from the
   NCHW input (channels in parallel with ``prange``), counting the taps it used.
"""

import numpy as np

cimport numpy as cnp
from cython.parallel cimport prange
from libc.stdint cimport int8_t, int64_t

from tinyodl.reference import int8_elementwise as ref

cnp.import_array()

cdef int _num_threads = 1

cdef extern from *:
    """
    #define TINYODL_EW_INT32_MIN (-2147483647LL - 1LL)
    #define TINYODL_EW_INT32_MAX 2147483647LL
    """
    int64_t INT32_MIN "TINYODL_EW_INT32_MIN"
    int64_t INT32_MAX "TINYODL_EW_INT32_MAX"


def set_num_threads(int n):
    """Number of OpenMP threads used by this module's ``prange`` loops (default 1)."""
    global _num_threads
    if n < 1:
        raise ValueError(f"set_num_threads: need n >= 1, got {n}")
    _num_threads = n


cdef inline int64_t _saturate32(int64_t x) noexcept nogil:
    if x < INT32_MIN:
        return INT32_MIN
    if x > INT32_MAX:
        return INT32_MAX
    return x


cdef inline int64_t _mbqm(int64_t x, int64_t m0, int shift) noexcept nogil:
    """x * M0 * 2^(shift - 31) with TFLite's double rounding; x is int32-valued."""
    cdef int64_t high, mask, remainder, threshold
    cdef int left = shift if shift > 0 else 0
    cdef int right = -shift if shift < 0 else 0
    x = _saturate32(x << left)
    if x == INT32_MIN and m0 == INT32_MIN:
        high = INT32_MAX
    else:
        high = (x * m0 + (<int64_t>1 << 30)) >> 31
    mask = (<int64_t>1 << right) - 1
    remainder = high & mask
    threshold = (mask >> 1) + (1 if high < 0 else 0)
    return (high >> right) + (1 if remainder > threshold else 0)


def add_s8(a, b, a_zero_point, a_multiplier, a_shift, b_zero_point, b_multiplier, b_shift,
           output_zero_point, output_multiplier, output_shift, left_shift=ref.ADD_LEFT_SHIFT,
           act_min=-128, act_max=127):
    """Element-wise sum of two int8 tensors with different scales (TFLite ADD).

    See :func:`tinyodl.reference.int8_elementwise.add_s8`.
    """
    a, b, zps, ms, ss, lo, hi = ref.add_args(
        "add_s8", a, b, (a_zero_point, b_zero_point, output_zero_point),
        (a_multiplier, b_multiplier, output_multiplier), (a_shift, b_shift, output_shift),
        left_shift, act_min, act_max,
    )
    out = np.empty(a.shape, dtype=np.int8)
    cdef const int8_t[::1] av = a.reshape(-1)
    cdef const int8_t[::1] bv = b.reshape(-1)
    cdef int8_t[::1] ov = out.reshape(-1)
    cdef Py_ssize_t i, n = av.shape[0]
    cdef int64_t za = zps[0], zb = zps[1], zy = zps[2]
    cdef int64_t ma = ms[0], mb = ms[1], my = ms[2]
    cdef int sa = ss[0], sb = ss[1], sy = ss[2]
    cdef int ls = left_shift
    cdef int64_t ilo = lo, ihi = hi, pa, pb, y
    with nogil:
        for i in range(n):
            pa = _mbqm((av[i] - za) << ls, ma, sa)
            pb = _mbqm((bv[i] - zb) << ls, mb, sb)
            y = _mbqm(pa + pb, my, sy) + zy
            ov[i] = <int8_t>(ilo if y < ilo else (ihi if y > ihi else y))
    return out


def avgpool2d_s8(x, kernel_size, stride=None, padding=0, act_min=-128, act_max=127):
    """Int8 average pooling, TFLite semantics (padded taps neither summed nor counted).

    See :func:`tinyodl.reference.int8_elementwise.avgpool2d_s8`.
    """
    x, (kh, kw), (sh, sw), (ph, pw), (oh, ow), lo, hi = ref.pool_args(
        "avgpool2d_s8", x, kernel_size, stride, padding, act_min, act_max
    )
    cdef Py_ssize_t n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
    out = np.empty((n, c, oh, ow), dtype=np.int8)
    cdef const int8_t[:, :, :, ::1] xv = x
    cdef int8_t[:, :, :, ::1] ov = out
    cdef Py_ssize_t plane, img, ch, r, s, i, j, r0, s0, i0, i1, j0, j1
    cdef Py_ssize_t KH = kh, KW = kw, SH = sh, SW = sw, PH = ph, PW = pw
    cdef Py_ssize_t OH = oh, OW = ow
    cdef int64_t acc, cnt, mag, ilo = lo, ihi = hi, y
    for plane in prange(n * c, nogil=True, num_threads=_num_threads, schedule="static"):
        img = plane // c
        ch = plane % c
        for r in range(OH):
            r0 = r * SH - PH
            i0 = r0 if r0 > 0 else 0
            i1 = r0 + KH if r0 + KH < h else h
            for s in range(OW):
                s0 = s * SW - PW
                j0 = s0 if s0 > 0 else 0
                j1 = s0 + KW if s0 + KW < w else w
                acc = 0
                for i in range(i0, i1):
                    for j in range(j0, j1):
                        acc = acc + xv[img, ch, i, j]
                cnt = (i1 - i0) * (j1 - j0)
                mag = ((acc if acc > 0 else -acc) + cnt // 2) // cnt
                y = mag if acc > 0 else -mag
                ov[img, ch, r, s] = <int8_t>(ilo if y < ilo else (ihi if y > ihi else y))
    return out
