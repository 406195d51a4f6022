# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Integer-only int8 kernels, compiled (TFLite / CMSIS-NN semantics).

Chapter 03. Same API and bit-identical results as :mod:`tinyodl.reference.int8`; read
that module for the maths. How this one is fast:

1. **Pack.** Both GEMM operands are copied into int16 buffers with the reduction axis K
   contiguous (``A`` is (M, K), ``B`` is stored transposed, (N, K)), padded with zeros to
   multiples of 4 rows and 16 columns. int16 x int16 products summed in int32 are exactly
   what x86's ``pmaddwd`` computes, so gcc vectorizes the inner loop (``-O3 -march=native``;
   with AVX512-VNNI it even emits the fused ``vpdpwssd``).
2. **Register tile.** The micro-kernel computes a 4x4 block of C at once: 16 int32
   accumulators, 8 row loads per step of k, each load reused 4 times.
3. **Cache blocks.** K is cut into blocks of ``KC`` and the columns of C into blocks of
   ``NC`` so the working set stays in L1/L2; column blocks run in parallel (``prange``).
4. **Zero points outside the loop.**
   ``sum_k (a - za)(b - zb) = sum_k ab - zb rowsum(a) - za colsum(b) + K za zb``: the
   inner loop multiplies raw int8 values and the corrections are added once per output.
   For conv and linear the weight zero point is 0, so the correction
   ``-zp_in * rowsum(w[f])`` is folded into the bias.
5. **Fused epilogue.** bias, MultiplyByQuantizedMultiplier (int64, both rounding modes),
   output zero point and clamp run in C while the accumulator is hot.

Convolutions first copy each image into a padded (H, W, C) int16 buffer whose border holds
``zp_in`` (so the correction above cancels it: padding taps contribute nothing), then build
im2col rows in (i, j, c) order -- KH contiguous runs per patch -- with the weights packed in
the same order. 1x1 stride-1 unpadded convs need no im2col at all: they run along the
contiguous pixel axis of the NCHW image (:func:`_pointwise_acc`); depthwise convs use direct
loops over the filter taps, accumulating whole output rows (vectorized for stride 1).
The epilogue of a row (fixed channel) is written branch-free, so it is vectorized too.
"""

import numpy as np

cimport numpy as cnp
from cython.parallel cimport parallel, prange
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t
from libc.stdlib cimport free, malloc

from tinyodl.reference import _int8_checks as chk

cnp.import_array()

DEF KC = 512   # K block (int16 elements): one 4-row panel of A is 4 KiB
DEF NC = 64    # column block of C: NC rows of packed B x KC = 64 KiB

cdef int _num_threads = 1

cdef extern from *:
    """
    #define TINYODL_INT32_MIN (-2147483647LL - 1LL)
    #define TINYODL_INT32_MAX 2147483647LL
    """
    int64_t INT32_MIN "TINYODL_INT32_MIN"
    int64_t INT32_MAX "TINYODL_INT32_MAX"


def set_num_threads(int n):
    """Number of OpenMP threads used by this module's ``prange`` loops (default 1)."""
    global _num_threads
    if n < 1:
        raise ValueError(f"set_num_threads: need n >= 1, got {n}")
    _num_threads = n


# ---------------------------------------------------------------------------------------
# Requantization: MultiplyByQuantizedMultiplier on one int64 value
# ---------------------------------------------------------------------------------------

cdef inline int64_t _saturate32(int64_t x) noexcept nogil:
    if x < INT32_MIN:
        return INT32_MIN
    if x > INT32_MAX:
        return INT32_MAX
    return x


cdef inline int64_t _mbqm(int64_t x, int64_t m0, int shift, int single) noexcept nogil:
    """x * M0 * 2^(shift - 31), rounded as TFLite does; x must be int32-valued."""
    cdef int64_t total, high, mask, remainder, threshold
    cdef int left, right
    if single:  # (x * M0 + 2^(30 - shift)) >> (31 - shift)
        total = 31 - shift
        return _saturate32((x * m0 + (<int64_t>1 << (total - 1))) >> total)
    left = shift if shift > 0 else 0
    right = -shift if shift < 0 else 0
    x = _saturate32(x << left)
    if x == INT32_MIN and m0 == INT32_MIN:  # SRDHM's only overflow
        high = INT32_MAX
    else:
        high = (x * m0 + (<int64_t>1 << 30)) >> 31
    mask = (<int64_t>1 << right) - 1  # RoundingDivideByPOT: half away from zero
    remainder = high & mask
    threshold = (mask >> 1) + (1 if high < 0 else 0)
    return (high >> right) + (1 if remainder > threshold else 0)


cdef inline int8_t _requant1(int64_t acc, int64_t m0, int shift, int single, int zp_out,
                             int lo, int hi) noexcept nogil:
    """Saturate, scale, add the output zero point, clamp to [lo, hi]."""
    cdef int64_t y = _mbqm(_saturate32(acc), m0, shift, single) + zp_out
    if y < lo:
        y = lo
    elif y > hi:
        y = hi
    return <int8_t>y


cdef void _requant_row(const int32_t* acc, Py_ssize_t count, int64_t bias, int64_t m0,
                       int shift, int single, int zp_out, int lo, int hi,
                       int8_t* out) noexcept nogil:
    """out[i] = _requant1(acc[i] + bias, ...) for one channel, written branch-free so that
    gcc vectorizes it (the parameters are fixed along the row). M0 >= 0 is validated, so
    SRDHM's only overflow (both operands INT32_MIN) cannot happen here."""
    cdef Py_ssize_t i
    cdef int64_t v, y, total, nudge, mask, half
    cdef int left = shift if shift > 0 else 0
    cdef int right = -shift if shift < 0 else 0
    if single:
        total = 31 - shift
        nudge = <int64_t>1 << (total - 1)
        for i in range(count):
            v = acc[i] + bias
            v = INT32_MIN if v < INT32_MIN else (INT32_MAX if v > INT32_MAX else v)
            y = (v * m0 + nudge) >> total
            y = (INT32_MIN if y < INT32_MIN else (INT32_MAX if y > INT32_MAX else y)) + zp_out
            out[i] = <int8_t>(lo if y < lo else (hi if y > hi else y))
        return
    mask = (<int64_t>1 << right) - 1
    half = mask >> 1
    for i in range(count):
        v = acc[i] + bias
        v = INT32_MIN if v < INT32_MIN else (INT32_MAX if v > INT32_MAX else v)
        v = v << left
        v = INT32_MIN if v < INT32_MIN else (INT32_MAX if v > INT32_MAX else v)
        v = (v * m0 + (<int64_t>1 << 30)) >> 31                        # SRDHM
        y = (v >> right) + ((v & mask) > half + (v < 0)) + zp_out   # RoundingDivideByPOT
        out[i] = <int8_t>(lo if y < lo else (hi if y > hi else y))


cdef inline void memset_zero(int32_t* p, Py_ssize_t count) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(count):
        p[i] = 0


cdef inline Py_ssize_t _ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """ceil(a / b) for b > 0 and any sign of a."""
    if a >= 0:
        return (a + b - 1) // b
    return -((-a) // b)


# ---------------------------------------------------------------------------------------
# Packing into int16, K contiguous
# ---------------------------------------------------------------------------------------

cdef inline Py_ssize_t _round_up(Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    return (n + m - 1) // m * m


cdef void _pack_rows(const int8_t* src, Py_ssize_t rows, Py_ssize_t k, Py_ssize_t ld,
                     int16_t* dst, Py_ssize_t kp) noexcept nogil:
    """dst[r, :k] = src[r, :k] (row stride ld), dst[r, k:kp] = 0. Padding rows are not touched."""
    cdef Py_ssize_t r, i
    for r in range(rows):
        for i in range(k):
            dst[r * kp + i] = src[r * ld + i]
        for i in range(k, kp):
            dst[r * kp + i] = 0


cdef void _pack_transposed(const int8_t* src, Py_ssize_t k, Py_ssize_t cols, Py_ssize_t ld,
                           int16_t* dst, Py_ssize_t kp) noexcept nogil:
    """dst[c, i] = src[i, c] for a (k, cols) source with row stride ld; K padding = 0."""
    cdef Py_ssize_t c0, c, i, cend
    for c0 in range(0, cols, 16):  # 16-column strips keep the writes in cache
        cend = c0 + 16 if c0 + 16 < cols else cols
        for i in range(k):
            for c in range(c0, cend):
                dst[c * kp + i] = src[i * ld + c]
        for c in range(c0, cend):
            for i in range(k, kp):
                dst[c * kp + i] = 0


# ---------------------------------------------------------------------------------------
# GEMM core: C (mp, np_) += A (mp, kp) . B (np_, kp)^T, all padded
# ---------------------------------------------------------------------------------------

cdef inline void _micro_4x4(const int16_t* a, const int16_t* b, Py_ssize_t kc, Py_ssize_t kp,
                            int32_t* c, Py_ssize_t ldc) noexcept nogil:
    """c[0:4, 0:4] += a[0:4, 0:kc] . b[0:4, 0:kc]^T; rows of a and b are kp apart."""
    cdef const int16_t* a0 = a
    cdef const int16_t* a1 = a + kp
    cdef const int16_t* a2 = a + 2 * kp
    cdef const int16_t* a3 = a + 3 * kp
    cdef const int16_t* b0 = b
    cdef const int16_t* b1 = b + kp
    cdef const int16_t* b2 = b + 2 * kp
    cdef const int16_t* b3 = b + 3 * kp
    cdef int32_t c00 = 0, c01 = 0, c02 = 0, c03 = 0
    cdef int32_t c10 = 0, c11 = 0, c12 = 0, c13 = 0
    cdef int32_t c20 = 0, c21 = 0, c22 = 0, c23 = 0
    cdef int32_t c30 = 0, c31 = 0, c32 = 0, c33 = 0
    cdef Py_ssize_t k
    for k in range(kc):  # int16 * int16 summed in int32: vectorized as pmaddwd
        c00 += a0[k] * b0[k]
        c01 += a0[k] * b1[k]
        c02 += a0[k] * b2[k]
        c03 += a0[k] * b3[k]
        c10 += a1[k] * b0[k]
        c11 += a1[k] * b1[k]
        c12 += a1[k] * b2[k]
        c13 += a1[k] * b3[k]
        c20 += a2[k] * b0[k]
        c21 += a2[k] * b1[k]
        c22 += a2[k] * b2[k]
        c23 += a2[k] * b3[k]
        c30 += a3[k] * b0[k]
        c31 += a3[k] * b1[k]
        c32 += a3[k] * b2[k]
        c33 += a3[k] * b3[k]
    c[0] += c00; c[1] += c01; c[2] += c02; c[3] += c03
    c += ldc
    c[0] += c10; c[1] += c11; c[2] += c12; c[3] += c13
    c += ldc
    c[0] += c20; c[1] += c21; c[2] += c22; c[3] += c23
    c += ldc
    c[0] += c30; c[1] += c31; c[2] += c32; c[3] += c33


cdef void _gemm_core(const int16_t* a, const int16_t* b, int32_t* c, Py_ssize_t mp,
                     Py_ssize_t np_, Py_ssize_t kp, int threads) noexcept nogil:
    """C += A B^T for packed operands: mp, np_ multiples of 4, kp a multiple of 16."""
    cdef Py_ssize_t nblocks = (np_ + NC - 1) // NC
    cdef Py_ssize_t blk, k0, kc, i, j, jend
    for blk in prange(nblocks, num_threads=threads, schedule="static"):
        jend = (blk + 1) * NC
        if jend > np_:
            jend = np_
        for k0 in range(0, kp, KC):
            kc = kp - k0 if kp - k0 < KC else KC
            for i in range(0, mp, 4):
                for j in range(blk * NC, jend, 4):
                    _micro_4x4(a + i * kp + k0, b + j * kp + k0, kc, kp, c + i * np_ + j, np_)


cdef class _Packed:
    """An int16 buffer of (rows rounded up to 4) x (k rounded up to 16), zero-initialised."""
    cdef public object array
    cdef int16_t* ptr
    cdef Py_ssize_t rows, k, kp

    def __init__(self, Py_ssize_t rows, Py_ssize_t k):
        self.rows, self.k, self.kp = rows, k, _round_up(max(k, 1), 16)
        self.array = np.zeros((_round_up(max(rows, 1), 4), self.kp), dtype=np.int16)
        cdef int16_t[:, ::1] view = self.array
        self.ptr = &view[0, 0]


cdef object _matmul_packed(_Packed a, _Packed b, int threads):
    """int32 (rows_a_padded, rows_b_padded) = A B^T."""
    cdef Py_ssize_t mp = a.array.shape[0], np_ = b.array.shape[0]
    out = np.zeros((mp, np_), dtype=np.int32)
    cdef int32_t[:, ::1] c = out
    with nogil:
        _gemm_core(a.ptr, b.ptr, &c[0, 0], mp, np_, a.kp, threads)
    return out


# ---------------------------------------------------------------------------------------
# Public kernels
# ---------------------------------------------------------------------------------------

def gemm_s8(a, b, a_zero_point=0, b_zero_point=0):
    """Exact int8 matrix product with zero points; int32 (M, N). See the reference."""
    a, b, a_zero_point, b_zero_point = chk.gemm_args("gemm_s8", a, b, a_zero_point, b_zero_point)
    cdef cnp.ndarray[cnp.int8_t, ndim=2, mode="c"] a_c = np.ascontiguousarray(a)
    cdef cnp.ndarray[cnp.int8_t, ndim=2, mode="c"] b_c = np.ascontiguousarray(b)
    cdef Py_ssize_t m = a_c.shape[0], k = a_c.shape[1], n = b_c.shape[1]
    cdef int64_t za = a_zero_point, zb = b_zero_point
    cdef _Packed pa = _Packed(m, k)
    cdef _Packed pb = _Packed(n, k)
    with nogil:
        if m and k:
            _pack_rows(<int8_t*>a_c.data, m, k, k, pa.ptr, pa.kp)
        if n and k:
            _pack_transposed(<int8_t*>b_c.data, k, n, n, pb.ptr, pb.kp)
    raw = _matmul_packed(pa, pb, _num_threads)
    cdef int32_t[:, ::1] c = raw
    cdef int64_t[::1] rowsum = a_c.sum(axis=1, dtype=np.int64)
    cdef int64_t[::1] colsum = b_c.sum(axis=0, dtype=np.int64)
    out = np.empty((m, n), dtype=np.int32)
    cdef int32_t[:, ::1] o = out
    cdef Py_ssize_t i, j
    cdef int64_t kzz = k * za * zb
    with nogil:
        for i in prange(m, num_threads=_num_threads, schedule="static"):
            for j in range(n):
                o[i, j] = <int32_t>(c[i, j] - zb * rowsum[i] - za * colsum[j] + kzz)
    return out




def requantize(acc, multiplier, shift, output_zero_point, act_min=-128, act_max=127,
               rounding="double"):
    """Int32 accumulators (N, F, ...) -> int8, per channel along axis 1. See the reference."""
    acc = chk.check_acc("requantize", acc)
    rq = chk.requant_args(
        "requantize", acc.shape[1], multiplier, shift, output_zero_point, act_min, act_max,
        rounding,
    )
    cdef Py_ssize_t n = acc.shape[0], f = acc.shape[1], s = acc.size // max(n * f, 1)
    cdef const int32_t[:, :, ::1] a = acc.reshape(n, f, s)
    cdef const int32_t[::1] m0 = rq.multiplier
    cdef const int32_t[::1] sh = rq.shift
    cdef int single = rq.rounding, zp = rq.zp_out, lo = rq.act_min, hi = rq.act_max
    out = np.empty((n, f, s), dtype=np.int8)
    cdef int8_t[:, :, ::1] o = out
    cdef Py_ssize_t row, i, c
    with nogil:
        for row in prange(n * f, num_threads=_num_threads, schedule="static"):
            c = row % f
            _requant_row(&a[row // f, c, 0], s, 0, m0[c], sh[c], single, zp, lo, hi,
                         &o[row // f, c, 0])
    return out.reshape(acc.shape)


cdef object _folded_bias(w2d, bias, int zp_in):
    """bias[f] - zp_in * sum_k w[f, k] (int64): the input zero point's whole contribution."""
    return bias.astype(np.int64) - zp_in * w2d.sum(axis=1, dtype=np.int64)


def linear_s8(x, w, bias, input_zero_point, output_zero_point, multiplier, shift,
              act_min=-128, act_max=127, rounding="double"):
    """Int8 fully connected layer, int8 (N, F). See the reference."""
    fn = "linear_s8"
    x, w, bias, zp_in = chk.linear_args(fn, x, w, bias, input_zero_point)
    rq = chk.requant_args(fn, w.shape[0], multiplier, shift, output_zero_point, act_min,
                          act_max, rounding)
    cdef const int8_t[:, ::1] xv = x
    cdef const int8_t[:, ::1] wv = w
    cdef Py_ssize_t n = x.shape[0], k = x.shape[1], f = w.shape[0]
    cdef _Packed px = _Packed(n, k)
    cdef _Packed pw = _Packed(f, k)
    with nogil:
        if n and k:
            _pack_rows(&xv[0, 0], n, k, k, px.ptr, px.kp)
        if f and k:
            _pack_rows(&wv[0, 0], f, k, k, pw.ptr, pw.kp)
    raw = _matmul_packed(px, pw, _num_threads)  # (N, F) = sum_k x w
    cdef const int32_t[:, ::1] c = raw
    cdef const int64_t[::1] b = _folded_bias(w, bias, zp_in)
    cdef const int32_t[::1] m0 = rq.multiplier
    cdef const int32_t[::1] sh = rq.shift
    cdef int single = rq.rounding, zp = rq.zp_out, lo = rq.act_min, hi = rq.act_max
    out = np.empty((n, f), dtype=np.int8)
    cdef int8_t[:, ::1] o = out
    cdef Py_ssize_t i, j
    with nogil:
        for i in prange(n, num_threads=_num_threads, schedule="static"):
            for j in range(f):
                o[i, j] = _requant1(<int64_t>c[i, j] + b[j], m0[j], sh[j], single, zp, lo, hi)
    return out


cdef void _pointwise_acc(const int8_t* w, const int8_t* x, Py_ssize_t F, Py_ssize_t C,
                         Py_ssize_t P, int32_t* acc, Py_ssize_t ldacc,
                         int threads) noexcept nogil:
    """acc[f, p] = sum_c w[f, c] * x[c, p] for a 1x1 conv, straight from the NCHW image.

    With a short reduction (C of a few dozen) the packed dot-product GEMM spends its time in
    horizontal sums; here the loop runs along the contiguous pixel axis p instead (an axpy
    per input channel, vectorized), over blocks of pixels that stay in L1.
    """
    cdef Py_ssize_t f, c, p, p0, pend
    cdef int32_t w0, w1, w2, w3
    cdef int32_t* row
    cdef const int8_t* src
    for f in prange(F, num_threads=threads, schedule="static"):
        row = acc + f * ldacc
        for p0 in range(0, P, 1024):
            pend = p0 + 1024 if p0 + 1024 < P else P
            for p in range(p0, pend):
                row[p] = 0
            for c in range(0, C - 3, 4):  # four input channels per pass over the row
                w0 = w[f * C + c]
                w1 = w[f * C + c + 1]
                w2 = w[f * C + c + 2]
                w3 = w[f * C + c + 3]
                src = x + c * P
                for p in range(p0, pend):
                    row[p] += (w0 * src[p] + w1 * src[P + p]
                               + w2 * src[2 * P + p] + w3 * src[3 * P + p])
            for c in range(C - C % 4, C):
                w0 = w[f * C + c]
                src = x + c * P
                for p in range(p0, pend):
                    row[p] += w0 * src[p]


cdef void _pad_hwc(const int8_t* x, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t PH,
                   Py_ssize_t PW, int16_t pad, int16_t* dst) noexcept nogil:
    """(C, H, W) int8 -> (H + 2 PH, W + 2 PW, C) int16 with a border of ``pad``."""
    cdef Py_ssize_t Wp = W + 2 * PW, Hp = H + 2 * PH, c, h, w, t
    for t in range(Hp * Wp * C):
        dst[t] = pad
    for c in range(C):
        for h in range(H):
            for w in range(W):
                dst[((h + PH) * Wp + w + PW) * C + c] = x[(c * H + h) * W + w]


cdef void _im2col_hwc(const int16_t* xp, Py_ssize_t C, Py_ssize_t Wp, Py_ssize_t KH,
                      Py_ssize_t KW, Py_ssize_t SH, Py_ssize_t SW, Py_ssize_t OH, Py_ssize_t OW,
                      int16_t* dst, Py_ssize_t kp, int threads) noexcept nogil:
    """Patch p = (oh, ow) -> dst[p, (i, j, c)] from the padded HWC image ``xp``.

    In (i, j, c) order each filter row i of a patch is one contiguous run of KW * C values
    of ``xp``, so the im2col is a copy of KH runs per patch (the weights are packed in the
    same order; a dot product does not care about the order of its terms).
    """
    cdef Py_ssize_t p, oh, ow, i, t, run = KW * C
    cdef int16_t* row
    cdef const int16_t* src
    for p in prange(OH * OW, num_threads=threads, schedule="static"):
        oh = p // OW
        ow = p % OW
        row = dst + p * kp
        for i in range(KH):
            src = xp + ((oh * SH + i) * Wp + ow * SW) * C
            for t in range(run):
                row[i * run + t] = src[t]
        for t in range(KH * run, kp):
            row[t] = 0


def conv2d_s8(x, w, bias, input_zero_point, output_zero_point, multiplier, shift, stride=1,
              padding=0, groups=1, act_min=-128, act_max=127, rounding="double"):
    """Int8 2-D convolution, int8 (N, F, OH, OW). See the reference."""
    a = chk.conv_args("conv2d_s8", x, w, bias, input_zero_point, output_zero_point, multiplier,
                      shift, stride, padding, groups, act_min, act_max, rounding)
    g = a.geom
    cdef Py_ssize_t N = g.N, C = g.C, H = g.H, W = g.W, F = g.F, KH = g.KH, KW = g.KW
    cdef Py_ssize_t SH = g.SH, SW = g.SW, PH = g.PH, PW = g.PW, OH = g.OH, OW = g.OW
    cdef Py_ssize_t G = g.groups, Cg = C // G, Fg = F // G, K = Cg * KH * KW, P = OH * OW
    cdef bint pointwise = KH == 1 and KW == 1 and SH == 1 and SW == 1 and PH == 0 and PW == 0
    w2d = np.ascontiguousarray(a.w.transpose(0, 2, 3, 1)).reshape(F, K)  # (f, (i, j, c))
    cdef const int8_t[:, ::1] wv = w2d
    cdef const int8_t[:, :, :, ::1] xv = a.x
    cdef const int64_t[::1] b = _folded_bias(w2d, a.bias, a.zp_in)
    cdef const int32_t[::1] m0 = a.rq.multiplier
    cdef const int32_t[::1] sh = a.rq.shift
    cdef int single = a.rq.rounding, zp = a.rq.zp_out, lo = a.rq.act_min, hi = a.rq.act_max
    cdef int threads = _num_threads
    cdef int16_t pad = a.zp_in  # padding taps hold zp_in, so x - zp_in is 0 there
    out = np.empty((N, F, OH, OW), dtype=np.int8)
    if N == 0 or F == 0:
        return out
    cdef int8_t[:, :, :, ::1] o = out
    packed_w = []
    cdef _Packed pw
    cdef Py_ssize_t grp
    for grp in range(G):
        pw = _Packed(Fg, K)
        _pack_rows(&wv[grp * Fg, 0], Fg, K, K, pw.ptr, pw.kp)
        packed_w.append(pw)
    cdef _Packed cols = _Packed(P, K)
    cdef Py_ssize_t mp = pw.array.shape[0], np_ = cols.array.shape[0]
    acc = np.empty((mp, np_), dtype=np.int32)
    cdef int32_t[:, ::1] cv = acc
    cdef int16_t[::1] xpv = np.empty((H + 2 * PH) * (W + 2 * PW) * Cg + 1, dtype=np.int16)
    cdef Py_ssize_t n, gi, f, p, ch
    for n in range(N):
        for gi in range(G):
            pw = packed_w[gi]
            with nogil:
                if pointwise:  # a 1x1 conv is a GEMM on the image itself: no im2col
                    _pointwise_acc(&wv[gi * Fg, 0], &xv[n, gi * Cg, 0, 0], Fg, Cg, P,
                                   &cv[0, 0], np_, threads)
                else:
                    _pad_hwc(&xv[n, gi * Cg, 0, 0], Cg, H, W, PH, PW, pad, &xpv[0])
                    _im2col_hwc(&xpv[0], Cg, W + 2 * PW, KH, KW, SH, SW, OH, OW, cols.ptr,
                                cols.kp, threads)
                    memset_zero(&cv[0, 0], mp * np_)
                    _gemm_core(pw.ptr, cols.ptr, &cv[0, 0], mp, np_, cols.kp, threads)
                for f in prange(Fg, num_threads=threads, schedule="static"):
                    ch = gi * Fg + f
                    _requant_row(&cv[f, 0], P, b[ch], m0[ch], sh[ch], single, zp, lo, hi,
                                 &o[n, ch, 0, 0])
    return out


def depthwise_conv2d_s8(x, w, bias, input_zero_point, output_zero_point, multiplier, shift,
                        stride=1, padding=0, act_min=-128, act_max=127, rounding="double"):
    """Int8 depthwise convolution (depth multiplier 1), int8 (N, C, OH, OW). See the reference."""
    a = chk.depthwise_args("depthwise_conv2d_s8", x, w, bias, input_zero_point,
                           output_zero_point, multiplier, shift, stride, padding, act_min,
                           act_max, rounding)
    g = a.geom
    cdef Py_ssize_t N = g.N, C = g.C, H = g.H, W = g.W, KH = g.KH, KW = g.KW
    cdef Py_ssize_t SH = g.SH, SW = g.SW, PH = g.PH, PW = g.PW, OH = g.OH, OW = g.OW
    cdef const int8_t[:, :, :, ::1] xv = a.x
    cdef const int8_t[:, :, :, ::1] wv = a.w
    cdef const int32_t[::1] b = a.bias
    cdef const int32_t[::1] m0 = a.rq.multiplier
    cdef const int32_t[::1] sh = a.rq.shift
    cdef int single = a.rq.rounding, zp = a.rq.zp_out, lo = a.rq.act_min, hi = a.rq.act_max
    cdef int zp_in = a.zp_in
    out = np.empty((N, C, OH, OW), dtype=np.int8)
    if N * C == 0:
        return out
    cdef int8_t[:, :, :, ::1] o = out
    cdef Py_ssize_t plane, n, c, i, j, oh, ow, oh0, oh1, ow0, ow1, t
    cdef int32_t* acc
    cdef int32_t* out_row
    cdef int16_t* xs
    cdef const int16_t* row
    cdef const int8_t* src
    cdef int32_t wt
    acc = NULL
    xs = NULL
    with nogil, parallel(num_threads=_num_threads):
        acc = <int32_t*>malloc(OH * OW * sizeof(int32_t))
        xs = <int16_t*>malloc(H * W * sizeof(int16_t))
        for plane in prange(N * C, schedule="static"):
            n = plane // C
            c = plane % C
            src = &xv[n, c, 0, 0]
            for t in range(H * W):  # x - zp_in, once per plane
                xs[t] = src[t] - zp_in
            for t in range(OH * OW):
                acc[t] = 0
            for i in range(KH):
                # output rows whose tap i lands inside the image: 0 <= oh*SH - PH + i < H
                oh0 = max(_ceil_div(PH - i, SH), 0)
                oh1 = min(_ceil_div(H + PH - i, SH), OH)
                for j in range(KW):
                    ow0 = max(_ceil_div(PW - j, SW), 0)
                    ow1 = min(_ceil_div(W + PW - j, SW), OW)
                    wt = wv[c, 0, i, j]
                    for oh in range(oh0, oh1):
                        row = xs + (oh * SH - PH + i) * W - PW + j
                        out_row = acc + oh * OW
                        if SW == 1:  # unit stride: vectorized
                            for ow in range(ow0, ow1):
                                out_row[ow] += wt * row[ow]
                        else:
                            for ow in range(ow0, ow1):
                                out_row[ow] += wt * row[ow * SW]
            _requant_row(acc, OH * OW, b[c], m0[c], sh[c], single, zp, lo, hi, &o[n, c, 0, 0])
        free(acc)
        free(xs)
    return out
