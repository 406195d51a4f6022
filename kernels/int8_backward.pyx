# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Backward passes through int8 layers, compiled (tiny-training style).

Chapter 03. Same API as :mod:`tinyodl.reference.int8_backward` (read it for the maths):
float32 gradients flow through the integer tensors read as numbers, ``float(w_q)`` for
``dx`` and ``float(x_q - zp)`` for ``dW``. They are float32 convolutions; the int8 operand
is widened where it is read (``kernels/simd/float_s8w.h``), never copied whole:

* ``dx`` of a depthwise layer (AVX-512 builds): gather form, one chain of fused
  multiply-adds over the taps per pixel (``tod_dw_backward_input_s8w_f32`` in
  ``kernels/simd/float_dw.h``; the bits of conv.pyx's scatter form);
* ``dx`` of a pointwise layer: ``W^T . dout`` on the register tiles of
  ``kernels/simd/float_s8a.h``, MR columns of W widened at a time;
* ``dx`` of other convolutions: the weights are converted once (F x C/groups x KH x KW
  values, tiny) and conv.pyx's float ``_backward_input`` runs unchanged;
* ``dW`` of a depthwise layer: one C call per channel over the batch on the phase planes of
  ``x_q - zp`` (``tod_dw_weight_s8_f32``, the bits of the float32 loops of conv.pyx);
* ``dW`` of a pointwise layer with F <= C (``float_s8a.h``): on AVX-512 builds 32 input
  channels per work item, their rows widened and transposed per block of pixels, dout read
  in place; elsewhere dout transposed per block, MR input rows widened per work item;
* ``dW`` of other convolutions without groups (AVX-512 builds): each image's phase planes
  are the im2col matrix read in place (``kernels/simd/float_s8c.h``); grouped layers and
  other builds convert ``x_q - zp`` once and run conv.pyx's ``_backward_weight``;
* linear layers (SIMD builds): ``dx = dout . W_q`` and ``dW = dout^T . (x_q - zp)`` on the
  register tiles of ``kernels/simd/float_s8b.h``, which widen the int8 matrix one column
  panel at a time into an L1-sized buffer. Other builds convert once and call BLAS.

Results match the float64 reference to float32 rounding.
"""

import functools

import numpy as np

cimport numpy as cnp
from cython.parallel cimport prange, threadid
from libc.stdint cimport int8_t
from libc.string cimport memset
from scipy.linalg.cython_blas cimport sgemm

from _float_dw cimport (
    TOD_HAVE_DW_DX_S8W,
    tod_dw_backward_input_s8w_f32,
    tod_dw_geom,
    tod_dw_make_geom,
    tod_dw_up_size,
    tod_dw_weight_s8_f32,
)

cdef extern from "float_s8a.h" nogil:
    cdef enum:
        TOD_HAVE_PW_DX_S8
        TOD_HAVE_PW_DW_PANEL
        TOD_PW_KB
        TOD_PW_KB2
        TOD_SMR
    void tod_pw_dx_s8_tile(Py_ssize_t N, Py_ssize_t C, Py_ssize_t F, Py_ssize_t P,
                           const int8_t* w, Py_ssize_t ldw, const float* dout, float* dx,
                           Py_ssize_t c0, float* abuf)
    void tod_pw_dw_s8_panel(Py_ssize_t N, Py_ssize_t C, Py_ssize_t F, Py_ssize_t P,
                            const int8_t* x, int zp, const float* dout, float* dw,
                            Py_ssize_t c0, float* bbuf, float* tmp)
    void tod_pw_dw_dout_block(Py_ssize_t F, Py_ssize_t P, const float* dout, Py_ssize_t k0,
                              Py_ssize_t k1, float* dtb)
    void tod_pw_dw_s8_block(Py_ssize_t C, Py_ssize_t F, Py_ssize_t P, const int8_t* x, int zp,
                            const float* dtb, float* acc, Py_ssize_t c0, Py_ssize_t k0,
                            Py_ssize_t k1, float* abuf, int whole)

cdef extern from "float_s8c.h" nogil:
    cdef enum:
        TOD_HAVE_CONV_DW_S8
        TOD_CMR
        TOD_CNR
    void tod_dw_planes_s8_fill_f32(const int8_t* x, int zp, const tod_dw_geom* g,
                                   float* planes)
    void tod_transpose_f32(const float* d, Py_ssize_t F, Py_ssize_t P, float* dt)
    void tod_conv_dw_items(Py_ssize_t C, Py_ssize_t F, const tod_dw_geom* g,
                           const float* planes, Py_ssize_t pl, const float* dvt, float* dwt,
                           Py_ssize_t it0, Py_ssize_t it1)

cdef extern from "float_s8b.h" nogil:
    cdef enum:
        TOD_HAVE_SGEMM_S8B
        TOD_SNR
    void tod_sgemm_panel_s8b(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float* a,
                             Py_ssize_t ars, Py_ssize_t aks, const int8_t* b, Py_ssize_t bks,
                             int zp, float* c, Py_ssize_t ldc, Py_ssize_t pan, float* buf)

from tinyodl._kernels import conv as _conv
from tinyodl.reference import _int8_checks as chk

cnp.import_array()

cdef int _num_threads = 1


def set_num_threads(int n):
    """Number of OpenMP threads used by this module's ``prange`` loops (default 1)."""
    global _num_threads
    if n < 1:
        raise ValueError(f"set_num_threads: need n >= 1, got {n}")
    _num_threads = n


cdef void _sgemm_rm(bint trans_a, bint trans_b, int m, int n, int k, const float* a, int lda,
                    const float* b, int ldb, float beta, float* c, int ldc) noexcept nogil:
    """Row-major ``C = op(A) op(B) + beta C`` with BLAS (column-major): C^T = op(B)^T op(A)^T."""
    cdef char ta = b"T" if trans_a else b"N"
    cdef char tb = b"T" if trans_b else b"N"
    cdef float alpha = 1.0
    if m == 0 or n == 0:
        return
    if k == 0:
        if beta == 0.0:
            memset(c, 0, m * n * sizeof(float))  # ldc == n for every caller
        return
    sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda, &beta, c, &ldc)


def _as_float(q, int zp=0):
    """float32(q - zp) in one vectorized pass (``q`` C-contiguous int8; numpy's casting
    subtract takes about three times as long)."""
    out = np.empty(q.shape, dtype=np.float32)
    cdef const int8_t[::1] src = q.reshape(-1)
    cdef float[::1] dst = out.reshape(-1)
    cdef Py_ssize_t i, n = src.shape[0]
    with nogil:
        for i in range(n):
            dst[i] = <float>(src[i] - zp)
    return out


@functools.lru_cache(maxsize=256)
def _geometry_cached(fn, x_shape, w_shape, stride, padding, groups):
    return chk.conv_geometry(fn, x_shape, w_shape, stride, padding, groups)


def _plain(v):
    return type(v) is int or (type(v) is tuple and all(type(e) is int for e in v))


def _geometry(fn, x_shape, w_shape, stride, padding, groups):
    """``chk.conv_geometry``, remembered for the shapes a training loop repeats (its Python
    costs microseconds a call, a sizeable share of a small layer's backward). Only plain
    ints and tuples of ints are cached, so a bad argument is always checked anew."""
    if (_plain(x_shape) and _plain(w_shape) and _plain(stride) and _plain(padding)
            and type(groups) is int):
        return _geometry_cached(fn, x_shape, w_shape, stride, padding, groups)
    return chk.conv_geometry(fn, x_shape, w_shape, stride, padding, groups)


def conv2d_s8_backward_input(dout, w, x_shape, stride=1, padding=0, groups=1):
    """``dx`` (float32, ``x_shape``) of an int8 convolution, from float(w_q). See the reference."""
    fn = "conv2d_s8_backward_input"
    w = chk.check_int8(fn, "w", w, 4)
    x_shape = chk.check_shape4(fn, "x_shape", x_shape)
    g = _geometry(fn, x_shape, w.shape, stride, padding, groups)
    dout = chk.check_float_grad(fn, "dout", dout, (g.N, g.F, g.OH, g.OW))
    if TOD_HAVE_PW_DX_S8 and _is_pointwise(g) and g.N * g.C * g.H * g.W and g.F:
        return _pointwise_input(dout, w, g)
    if (TOD_HAVE_DW_DX_S8W and g.groups > 1 and g.groups == g.C == g.F
            and g.KH * g.KW <= 64 and g.N * g.C * g.H * g.W):
        return _depthwise_input(dout, w, g)
    if (g.groups == 1 and g.C >= TOD_SMR and g.N * g.C * g.H * g.W and g.F
            and _conv._use_implicit_gemm(dout, 1, g)):
        # stride 1, same size: conv.pyx's implicit GEMM of dout with the flipped, transposed
        # filters, which are built straight from the int8 weights (one pass, no float copy)
        return _conv._conv_same(dout, _flipped_float(w), None, g.KH - 1 - g.PH,
                                g.KW - 1 - g.PW)
    return _conv._backward_input(dout, _as_float(w), g)


def _flipped_float(w):
    """W'[c, f, i, j] = float(W[f, c, KH-1-i, KW-1-j]) (C, F, KH, KW) from int8 W: each
    KH x KW block reversed (flipping both axes reverses the flattened block)."""
    cdef Py_ssize_t F = w.shape[0], C = w.shape[1], T = w.shape[2] * w.shape[3]
    cdef Py_ssize_t f, c, t
    cdef cnp.ndarray out = np.empty((C, F, w.shape[2], w.shape[3]), dtype=np.float32)
    cdef const int8_t* src = <const int8_t*>cnp.PyArray_DATA(w)
    cdef float* dst = <float*>cnp.PyArray_DATA(out)
    cdef const int8_t* s
    cdef float* d
    with nogil:
        for c in range(C):
            for f in range(F):
                s = src + (f * C + c) * T
                d = dst + (c * F + f) * T
                for t in range(T):
                    d[t] = <float>s[T - 1 - t]
    return out


cdef object _depthwise_input(dout, w, g):
    """dx of a depthwise layer in gather form, the int8 taps read in place
    (``tod_dw_backward_input_s8w_f32``: the bits of conv.pyx's scatter form)."""
    cdef tod_dw_geom geo = tod_dw_make_geom(g.H, g.W, g.KH, g.KW, g.SH, g.SW, g.PH, g.PW,
                                            g.OH, g.OW)
    cdef Py_ssize_t N = g.N, C = g.C, i, up = tod_dw_up_size(&geo), taps = g.KH * g.KW
    cdef Py_ssize_t plane = g.H * g.W, oplane = g.OH * g.OW
    cdef int nt = _num_threads
    cdef cnp.ndarray dx = np.empty((N, C, g.H, g.W), dtype=np.float32)
    cdef cnp.ndarray scratch = np.zeros(nt * up, dtype=np.float32)
    cdef float* sp = <float*>cnp.PyArray_DATA(scratch)
    cdef const int8_t* wp = <const int8_t*>cnp.PyArray_DATA(w)
    cdef const float* dp = <const float*>cnp.PyArray_DATA(dout)
    cdef float* xp = <float*>cnp.PyArray_DATA(dx)
    with nogil:
        if nt == 1:
            for i in range(N * C):
                tod_dw_backward_input_s8w_f32(dp + i * oplane, wp + (i % C) * taps, &geo, sp,
                                              xp + i * plane)
        else:
            for i in prange(N * C, num_threads=nt, schedule="static"):
                tod_dw_backward_input_s8w_f32(dp + i * oplane, wp + (i % C) * taps, &geo,
                                              sp + threadid() * up, xp + i * plane)
    return dx


def _is_pointwise(g):
    """1x1, stride 1, no padding, no groups: dx[n] = W^T . dout[n] (float_s8a.h)."""
    return (g.groups == 1 and g.KH == 1 and g.KW == 1 and g.SH == 1 and g.SW == 1
            and g.PH == 0 and g.PW == 0 and g.OH == g.H and g.OW == g.W)


cdef object _pointwise_input(dout, w, g):
    """dx of a pointwise layer with the int8 weights read in place: MR input channels per
    work item, their F x MR weights widened into the thread's buffer (from numpy)."""
    cdef Py_ssize_t N = g.N, C = g.C, F = g.F, P = g.H * g.W, tiles = (C + TOD_SMR - 1) // TOD_SMR
    cdef Py_ssize_t t
    dx = np.empty((N, C, g.H, g.W), dtype=np.float32)
    abuf = np.empty((_num_threads, F * TOD_SMR), dtype=np.float32)
    cdef float[:, ::1] av = abuf
    cdef const int8_t[::1] wv = w.reshape(-1)
    cdef const float[::1] dv = dout.reshape(-1)
    cdef float[::1] xv = dx.reshape(-1)
    with nogil:
        for t in prange(tiles, num_threads=_num_threads, schedule="static"):
            tod_pw_dx_s8_tile(N, C, F, P, &wv[0], C, &dv[0], &xv[0], t * TOD_SMR,
                              &av[threadid(), 0])
    return dx


def conv2d_s8_backward_weight(dout, x, input_zero_point, w_shape, stride=1, padding=0,
                              groups=1):
    """``dW`` (float32, ``w_shape``) of an int8 convolution, from float(x_q - zp). See the reference."""
    fn = "conv2d_s8_backward_weight"
    x = chk.check_int8(fn, "x", x, 4)
    cdef int zp = chk.check_zero_point(fn, "input_zero_point", input_zero_point)
    w_shape = chk.check_shape4(fn, "w_shape", w_shape)
    g = _geometry(fn, x.shape, w_shape, stride, padding, groups)
    dout = chk.check_float_grad(fn, "dout", dout, (g.N, g.F, g.OH, g.OW))
    if g.groups > 1 and g.groups == g.C == g.F:
        return _depthwise_weight(dout, x, zp, g, w_shape)
    if TOD_HAVE_PW_DX_S8 and _is_pointwise(g) and g.N * g.C * g.H * g.W and 0 < g.F <= g.C:
        # its scratch is 4 N P F bytes (dout transposed), the float path's 4 N P C (x - zp
        # converted): the in-place path when it holds less (a projection, a few channels)
        return _pointwise_weight(dout, x, zp, g)
    if _is_pointwise(g) and g.N * g.C * g.H * g.W and g.F > g.C:
        # an expansion: x - zp converted (4 N P C bytes) is smaller than dout^T (4 N P F)
        return _pointwise_weight_gemm(dout, x, zp, g)
    if (TOD_HAVE_CONV_DW_S8 and g.groups == 1 and not _is_pointwise(g)
            and g.N * g.C * g.H * g.W and g.F):
        return _conv_weight_planes(dout, x, zp, g, w_shape)
    return _conv._backward_weight(dout, _as_float(x, zp), w_shape, g)


cdef object _conv_weight_planes(dout, x, int zp, g, w_shape):
    """dW of a convolution without groups from the phase planes of each image's x_q - zp
    (``kernels/simd/float_s8c.h``): no float copy of the input, no im2col matrix."""
    cdef tod_dw_geom geo = tod_dw_make_geom(g.H, g.W, g.KH, g.KW, g.SH, g.SW, g.PH, g.PW,
                                            g.OH, g.OW)
    cdef Py_ssize_t N = g.N, C = g.C, F = g.F, K = C * g.KH * g.KW, n, c, it, f, r
    cdef Py_ssize_t pl = geo.SH * geo.SW * geo.Hq * geo.Wq, T = geo.OH * geo.OW
    cdef Py_ssize_t plane = g.H * g.W, oplane = g.OH * g.OW
    cdef Py_ssize_t items = (K + TOD_CMR - 1) // TOD_CMR * ((F + TOD_CNR - 1) // TOD_CNR)
    cdef int nt = _num_threads
    cdef cnp.ndarray dw = np.empty(w_shape, dtype=np.float32)
    cdef cnp.ndarray scratch = np.zeros(C * pl + T * F + K * F, dtype=np.float32)
    cdef float* planes = <float*>cnp.PyArray_DATA(scratch)
    cdef float* dvt = planes + C * pl
    cdef float* dwt = dvt + T * F
    cdef const int8_t* xp = <const int8_t*>cnp.PyArray_DATA(x)
    cdef const float* dp = <const float*>cnp.PyArray_DATA(dout)
    cdef float* wp = <float*>cnp.PyArray_DATA(dw)
    with nogil:
        for n in range(N):
            for c in range(C):
                tod_dw_planes_s8_fill_f32(xp + (n * C + c) * plane, zp, &geo, planes + c * pl)
            tod_transpose_f32(dp + n * F * oplane, F, oplane, dvt)
            if nt == 1:
                tod_conv_dw_items(C, F, &geo, planes, pl, dvt, dwt, 0, items)
            else:
                for it in prange(items, num_threads=nt, schedule="static"):
                    tod_conv_dw_items(C, F, &geo, planes, pl, dvt, dwt, it, it + 1)
        for f in range(F):
            for r in range(K):
                wp[f * K + r] = dwt[r * F + f]
    return dw


def pointwise_weight_scratch(Py_ssize_t N, Py_ssize_t C, Py_ssize_t F, Py_ssize_t P,
                             int threads=1):
    """(panels?, floats of scratch) of the pointwise dW (F <= C) of this shape.

    Two paths give the same bits (``kernels/simd/float_s8a.h``): 32 input channels per work
    item (AVX-512 builds; lanes never idle, no dout transpose) or MR input rows per work
    item against dout transposed per block of pixels; the one with less scratch runs (a
    training step's peak must not grow), the panels on a tie. ``tinyodl.quantization.
    memory`` reads the same numbers.
    """
    cdef Py_ssize_t NP = N * P, kb = NP if NP < TOD_PW_KB else TOD_PW_KB
    cdef Py_ssize_t blocks = kb * F + threads * TOD_SMR * kb + (0 if NP <= TOD_PW_KB else C * F)
    cdef Py_ssize_t rows, width
    if not TOD_HAVE_PW_DW_PANEL:
        return False, blocks
    if P <= TOD_PW_KB2:
        width = P
        rows = min(TOD_PW_KB2 // P, N) * P
    else:
        width = rows = TOD_PW_KB2
    cdef Py_ssize_t panels = threads * (TOD_CNR * rows + 8 * (width + 16))
    return (True, panels) if panels <= blocks else (False, blocks)


cdef object _pointwise_weight_gemm(dout, x, int zp, g):
    """dW of a pointwise layer with F > C: float32(x_q - zp) once, then one BLAS product
    per image accumulated in place, dW (F x C) += dout[n] (F x P) . xf[n]^T (P x C); no
    scratch beyond the converted input (``dout`` and ``x`` are C-contiguous)."""
    cdef Py_ssize_t N = g.N, C = g.C, F = g.F, P = g.H * g.W, n
    dw = np.empty((F, C, 1, 1), dtype=np.float32)
    xf = _as_float(x, zp)
    cdef const float[::1] xv = xf.reshape(-1)
    cdef const float[::1] dv = dout.reshape(-1)
    cdef float[::1] wv = dw.reshape(-1)
    with nogil:
        for n in range(N):
            _sgemm_rm(False, True, F, C, P, &dv[n * F * P], P, &xv[n * C * P], P,
                      0.0 if n == 0 else 1.0, &wv[0], C)
    return dw


cdef object _pointwise_weight(dout, x, int zp, g):
    panels, floats = pointwise_weight_scratch(g.N, g.C, g.F, g.H * g.W, _num_threads)
    if panels:
        return _pointwise_weight_panels(dout, x, zp, g, floats // _num_threads)
    return _pointwise_weight_blocks(dout, x, zp, g)


cdef object _pointwise_weight_panels(dout, x, int zp, g, Py_ssize_t per):
    """dW of a pointwise layer, AVX-512: 32 input channels per work item, their int8 rows
    widened and transposed per block of pixels (``tod_pw_dw_s8_panel``); dout read in place,
    dW written in place. ``per``: one thread's floats (block rows x 32, then 8 rows of tmp)."""
    cdef Py_ssize_t N = g.N, C = g.C, F = g.F, P = g.H * g.W, t
    cdef Py_ssize_t panels = (C + TOD_CNR - 1) // TOD_CNR
    cdef Py_ssize_t width = P if P <= TOD_PW_KB2 else TOD_PW_KB2
    cdef Py_ssize_t tmp = per - 8 * (width + 16)
    cdef int nt = _num_threads
    cdef cnp.ndarray dw = np.zeros((F, C, 1, 1), dtype=np.float32)
    cdef cnp.ndarray scratch = np.empty(nt * per, dtype=np.float32)
    cdef float* sp = <float*>cnp.PyArray_DATA(scratch)
    cdef const int8_t* xp = <const int8_t*>cnp.PyArray_DATA(x)
    cdef const float* dp = <const float*>cnp.PyArray_DATA(dout)
    cdef float* wp = <float*>cnp.PyArray_DATA(dw)
    with nogil:
        if nt == 1:
            for t in range(panels):
                tod_pw_dw_s8_panel(N, C, F, P, xp, zp, dp, wp, t * TOD_CNR, sp, sp + tmp)
        else:
            for t in prange(panels, num_threads=nt, schedule="static"):
                tod_pw_dw_s8_panel(N, C, F, P, xp, zp, dp, wp, t * TOD_CNR,
                                   sp + threadid() * per, sp + threadid() * per + tmp)
    return dw


cdef object _pointwise_weight_blocks(dout, x, int zp, g):
    """dW of a pointwise layer with the int8 input read in place, over blocks of at most
    ``TOD_PW_KB`` pixels of the batch: per block, dout transposed (KB x F) and, per work
    item, MR input rows of x - zp widened (MR x KB); with several blocks the sums live in
    dW^T (C x F), with one the tiles go straight into dW. One scratch array holds it all
    (``x`` and ``dout`` are C-contiguous: the checks made them so)."""
    cdef Py_ssize_t N = g.N, C = g.C, F = g.F, P = g.H * g.W, t, f, c, k0, k1
    cdef Py_ssize_t tiles = (C + TOD_SMR - 1) // TOD_SMR, NP = N * P
    cdef Py_ssize_t kb = NP if NP < TOD_PW_KB else TOD_PW_KB
    cdef bint whole = NP <= TOD_PW_KB
    cdef int nt = _num_threads
    cdef cnp.ndarray dw = np.empty((F, C, 1, 1), dtype=np.float32)
    cdef cnp.ndarray scratch = np.zeros((0 if whole else C * F) + kb * F + nt * TOD_SMR * kb,
                                        dtype=np.float32)
    cdef float* wp = <float*>cnp.PyArray_DATA(dw)
    cdef float* acc = wp if whole else <float*>cnp.PyArray_DATA(scratch)
    cdef float* dtb = <float*>cnp.PyArray_DATA(scratch) + (0 if whole else C * F)
    cdef float* abuf = dtb + kb * F
    cdef const int8_t* xp = <const int8_t*>cnp.PyArray_DATA(x)
    cdef const float* dp = <const float*>cnp.PyArray_DATA(dout)
    k0 = 0
    with nogil:
        while k0 < NP:
            k1 = k0 + kb if k0 + kb < NP else NP
            tod_pw_dw_dout_block(F, P, dp, k0, k1, dtb)
            if nt == 1:  # no OpenMP region (its start costs microseconds at this size)
                for t in range(tiles):
                    tod_pw_dw_s8_block(C, F, P, xp, zp, dtb, acc, t * TOD_SMR, k0, k1, abuf,
                                       whole)
            else:
                for t in prange(tiles, num_threads=nt, schedule="static"):
                    tod_pw_dw_s8_block(C, F, P, xp, zp, dtb, acc, t * TOD_SMR, k0, k1,
                                       abuf + threadid() * TOD_SMR * kb, whole)
            k0 = k1
        if not whole:
            for f in range(F):
                for c in range(C):
                    wp[f * C + c] = acc[c * F + f]
    return dw


cdef object _depthwise_weight(dout, x, int zp, g, w_shape):
    """dW of a depthwise layer straight from the int8 input (phase planes of x_q - zp),
    one channel over the whole batch per work item (``tod_dw_weight_s8_f32``)."""
    dw = np.zeros(w_shape, dtype=np.float32)
    if dw.size == 0 or g.N == 0:
        return dw
    cdef tod_dw_geom geo = tod_dw_make_geom(g.H, g.W, g.KH, g.KW, g.SH, g.SW, g.PH, g.PW,
                                            g.OH, g.OW)
    cdef Py_ssize_t planes = geo.SH * geo.SW * geo.Hq * geo.Wq, virt = geo.OH * geo.Wq
    cdef Py_ssize_t wacc = geo.KH * geo.KW * virt, N = g.N, C = g.C, c
    cdef Py_ssize_t xn = C * g.H * g.W, dn = C * g.OH * g.OW
    scratch = np.empty((_num_threads, planes + virt + wacc), dtype=np.float32)
    cdef float[:, ::1] sv = scratch
    cdef const int8_t[:, :, :, ::1] xv = x
    cdef const float[:, :, :, ::1] dv = dout
    cdef float[:, :, :, ::1] wv = dw
    with nogil:
        for c in prange(C, num_threads=_num_threads, schedule="static"):
            tod_dw_weight_s8_f32(&xv[0, c, 0, 0], xn, zp, &dv[0, c, 0, 0], dn, N, &geo,
                                 &sv[threadid(), 0], &wv[c, 0, 0, 0])
    return dw


#: dx and dW of a pointwise (1x1, stride 1, unpadded) conv read the int8 operand in place,
#: with F x MR (dx) or C x F + KB x F + MR x KB (dW) floats of scratch (float_s8a.h)
POINTWISE_DX_IN_PLACE = bool(TOD_HAVE_PW_DX_S8)

#: dx of a depthwise layer runs in gather form on one zeroed plane of dout per thread
#: (kernels/simd/float_dw.h; AVX-512 builds)
DEPTHWISE_DX_GATHER = bool(TOD_HAVE_DW_DX_S8W)

#: pixels of the batch per block of the pointwise dW's reduction (its dout^T is KB x F)
POINTWISE_DW_BLOCK = TOD_PW_KB


#: dW of a convolution without groups reads the int8 input's phase planes, one image at a
#: time (kernels/simd/float_s8c.h; AVX-512 builds): no float copy of the input, no im2col
CONV_WEIGHT_PLANES = bool(TOD_HAVE_CONV_DW_S8)

#: the linear backward passes read int8 operands in place (kernels/simd/float_s8b.h)
INT8_OPERAND_GEMM = bool(TOD_HAVE_SGEMM_S8B)


def _gemm_s8b(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float[::1] a, Py_ssize_t ars,
              Py_ssize_t aks, const int8_t[::1] b, int zp, float[::1] c):
    """C (M x N) = A . (B - zp), B int8 (K x N): one column panel per OpenMP work item, each
    widened once into its thread's buffer (K x NR floats, from numpy: tracemalloc sees it)."""
    cdef Py_ssize_t panels = (N + TOD_SNR - 1) // TOD_SNR, pan
    cdef int nt = _num_threads
    buf = np.empty((nt, K * TOD_SNR), dtype=np.float32)
    cdef float[:, ::1] bv = buf
    with nogil:
        for pan in prange(panels, num_threads=nt, schedule="static"):
            tod_sgemm_panel_s8b(M, N, K, &a[0], ars, aks, &b[0], N, zp, &c[0], N, pan,
                                &bv[threadid(), 0])


def linear_s8_backward_input(dout, w):
    """``dx = dout @ float(w_q)``: float32 (N, K). See the reference."""
    fn = "linear_s8_backward_input"
    w = chk.check_int8(fn, "w", w, 2)
    n_rows = dout.shape[0] if isinstance(dout, np.ndarray) and dout.ndim == 2 else -1
    dout = chk.check_float_grad(fn, "dout", dout, (n_rows, w.shape[0]))
    cdef Py_ssize_t n = dout.shape[0], f = w.shape[0], k = w.shape[1]
    if TOD_HAVE_SGEMM_S8B and n * k and f:
        # dx (N x K) = dout (N x F) . W_q (F x K): A = dout rows, B = the int8 rows of W
        dx = np.empty((n, k), dtype=np.float32)
        _gemm_s8b(n, k, f, dout.reshape(-1), f, 1, w.reshape(-1), 0, dx.reshape(-1))
        return dx
    dx = np.zeros((n, k), dtype=np.float32)
    if dx.size == 0:
        return dx
    wf = _as_float(w)
    cdef const float[:, ::1] wv = wf
    cdef const float[:, ::1] dv = dout
    cdef float[:, ::1] dxv = dx
    if f:
        with nogil:
            _sgemm_rm(False, False, n, k, f, &dv[0, 0], f, &wv[0, 0], k, 0.0, &dxv[0, 0], k)
    return dx


def linear_s8_backward_weight(dout, x, input_zero_point):
    """``dW = dout.T @ float(x_q - zp)``: float32 (F, K). See the reference."""
    fn = "linear_s8_backward_weight"
    x = chk.check_int8(fn, "x", x, 2)
    zp = chk.check_zero_point(fn, "input_zero_point", input_zero_point)
    f_cols = dout.shape[1] if isinstance(dout, np.ndarray) and dout.ndim == 2 else -1
    dout = chk.check_float_grad(fn, "dout", dout, (x.shape[0], f_cols))
    cdef Py_ssize_t n = x.shape[0], f = dout.shape[1], k = x.shape[1]
    if TOD_HAVE_SGEMM_S8B and f * k and n:
        # dW (F x K) = dout^T (F x N) . (x_q - zp) (N x K): A(f, n) = dout[n, f]
        dw = np.empty((f, k), dtype=np.float32)
        _gemm_s8b(f, k, n, dout.reshape(-1), 1, f, x.reshape(-1), zp, dw.reshape(-1))
        return dw
    dw = np.zeros((f, k), dtype=np.float32)
    if dw.size == 0 or n == 0:
        return dw
    xf = _as_float(x, zp)
    cdef const float[:, ::1] xv = xf
    cdef const float[:, ::1] dv = dout
    cdef float[:, ::1] dwv = dw
    with nogil:
        _sgemm_rm(True, False, f, k, n, &dv[0, 0], f, &xv[0, 0], k, 0.0, &dwv[0, 0], k)
    return dw


ctypedef fused floating:
    float
    double


cdef void _ste_mask(const floating* dout, const int8_t* q, Py_ssize_t size, int lo, int hi,
                    floating* out, int threads) noexcept nogil:
    cdef Py_ssize_t i
    for i in prange(size, num_threads=threads, schedule="static"):
        out[i] = dout[i] if lo < q[i] < hi else 0


def ste_clamp_backward(dout, q, act_min, act_max):
    """Pass ``dout`` where ``act_min < q < act_max``, zero elsewhere. See the reference."""
    fn = "ste_clamp_backward"
    cdef int lo, hi
    lo, hi = chk.check_act_range(fn, act_min, act_max)
    if not isinstance(dout, np.ndarray) or dout.dtype.kind != "f":
        raise TypeError(f"{fn}: dout must be a float array")
    if not isinstance(q, np.ndarray) or q.dtype != np.int8:
        raise TypeError(f"{fn}: q must be the int8 output of the forward pass")
    if q.shape != dout.shape:
        raise ValueError(f"{fn}: q has shape {q.shape} but dout has shape {dout.shape}")
    dtype = np.float64 if dout.dtype == np.float64 else np.float32
    d = np.ascontiguousarray(dout, dtype=dtype).reshape(-1)
    qc = np.ascontiguousarray(q).reshape(-1)
    out = np.empty_like(d)
    cdef const int8_t[::1] qv = qc
    cdef const float[::1] d32
    cdef float[::1] o32
    cdef const double[::1] d64
    cdef double[::1] o64
    cdef Py_ssize_t size = d.shape[0]
    if size == 0:
        return out.reshape(dout.shape).astype(dout.dtype, copy=False)
    if dtype == np.float32:
        d32, o32 = d, out
        with nogil:
            _ste_mask(&d32[0], &qv[0], size, lo, hi, &o32[0], _num_threads)
    else:
        d64, o64 = d, out
        with nogil:
            _ste_mask(&d64[0], &qv[0], size, lo, hi, &o64[0], _num_threads)
    return out.reshape(dout.shape).astype(dout.dtype, copy=False)
