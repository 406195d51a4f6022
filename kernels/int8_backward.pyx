# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Backward passes through int8 layers, compiled (tiny-training style).

Chapter 03. Same API as :mod:`tinyodl.reference.int8_backward` (read it for the maths):
float32 gradients flow through the integer tensors read as numbers, ``float(w_q)`` for
``dx`` and ``float(x_q - zp_in)`` for ``dW``. Each convolution is a float32 im2col (or
col2im) plus one BLAS ``sgemm`` per image and group, called through
``scipy.linalg.cython_blas``; results match the float64 reference to float32 rounding.
"""

import numpy as np

cimport numpy as cnp
from cython.parallel cimport prange
from libc.stdint cimport int8_t
from libc.string cimport memset
from scipy.linalg.cython_blas cimport sgemm

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


cdef void _im2col_f32(const int8_t* x, int zp, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                      Py_ssize_t KH, Py_ssize_t KW, Py_ssize_t SH, Py_ssize_t SW, Py_ssize_t PH,
                      Py_ssize_t PW, Py_ssize_t OH, Py_ssize_t OW, float* cols,
                      int threads) noexcept nogil:
    """cols[(c, i, j), (oh, ow)] = x[c, ih, iw] - zp inside the image, 0 in the padding."""
    cdef Py_ssize_t r, c, i, j, oh, ow, ih, iw
    cdef float* dst
    for r in prange(C * KH * KW, num_threads=threads, schedule="static"):
        c = r // (KH * KW)
        i = (r // KW) % KH
        j = r % KW
        dst = cols + r * OH * OW
        for oh in range(OH):
            ih = oh * SH - PH + i
            for ow in range(OW):
                iw = ow * SW - PW + j
                if 0 <= ih < H and 0 <= iw < W:
                    dst[oh * OW + ow] = x[(c * H + ih) * W + iw] - zp
                else:
                    dst[oh * OW + ow] = 0.0


cdef void _col2im_f32(const float* cols, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                      Py_ssize_t KH, Py_ssize_t KW, Py_ssize_t SH, Py_ssize_t SW, Py_ssize_t PH,
                      Py_ssize_t PW, Py_ssize_t OH, Py_ssize_t OW, float* dx,
                      int threads) noexcept nogil:
    """dx[c, ih, iw] += cols[(c, i, j), (oh, ow)]; taps in the padding are dropped."""
    cdef Py_ssize_t c, i, j, oh, ow, ih, iw
    cdef const float* src
    cdef float* plane
    for c in prange(C, num_threads=threads, schedule="static"):  # channels never collide
        plane = dx + c * H * W
        for i in range(KH):
            for j in range(KW):
                src = cols + ((c * KH + i) * KW + j) * OH * OW
                for oh in range(OH):
                    ih = oh * SH - PH + i
                    if ih < 0 or ih >= H:
                        continue
                    for ow in range(OW):
                        iw = ow * SW - PW + j
                        if 0 <= iw < W:
                            plane[ih * W + iw] += src[oh * OW + ow]


def conv2d_s8_backward_input(dout, w, x_shape, stride=1, padding=0, groups=1):
    """``dx`` (float32, ``x_shape``) of an int8 convolution, from float(w_q). See the reference."""
    fn = "conv2d_s8_backward_input"
    w = chk.check_int8(fn, "w", w, 4)
    x_shape = chk.check_shape4(fn, "x_shape", x_shape)
    g = chk.conv_geometry(fn, x_shape, w.shape, stride, padding, groups)
    dout = chk.check_float_grad(fn, "dout", dout, (g.N, g.F, g.OH, g.OW))
    cdef Py_ssize_t N = g.N, C = g.C, F = g.F, G = g.groups, Cg = C // G, Fg = F // G
    cdef Py_ssize_t H = g.H, W = g.W, OH = g.OH, OW = g.OW, P = g.OH * g.OW
    cdef Py_ssize_t KH = g.KH, KW = g.KW, SH = g.SH, SW = g.SW, PH = g.PH, PW = g.PW
    cdef Py_ssize_t K = Cg * KH * KW
    dx = np.zeros(x_shape, dtype=np.float32)
    if dx.size == 0 or F == 0:
        return dx
    wf = np.ascontiguousarray(w.reshape(F, K), dtype=np.float32)
    cdef const float[:, ::1] wv = wf
    cdef const float[:, :, :, ::1] dv = dout
    cdef float[:, :, :, ::1] dxv = dx
    cols = np.empty((max(K, 1), max(P, 1)), dtype=np.float32)
    cdef float[:, ::1] cv = cols
    cdef Py_ssize_t n, gi
    for n in range(N):
        for gi in range(G):
            with nogil:  # cols (K, P) = W_g^T (K, Fg) @ dout_g (Fg, P), then scatter back
                _sgemm_rm(True, False, K, P, Fg, &wv[gi * Fg, 0], K,
                          &dv[n, gi * Fg, 0, 0], P, 0.0, &cv[0, 0], P)
                _col2im_f32(&cv[0, 0], Cg, H, W, KH, KW, SH, SW, PH, PW, OH, OW,
                            &dxv[n, gi * Cg, 0, 0], _num_threads)
    return dx


def conv2d_s8_backward_weight(dout, x, input_zero_point, w_shape, stride=1, padding=0,
                              groups=1):
    """``dW`` (float32, ``w_shape``) of an int8 convolution, from float(x_q - zp). See the reference."""
    fn = "conv2d_s8_backward_weight"
    x = chk.check_int8(fn, "x", x, 4)
    cdef int zp = chk.check_zero_point(fn, "input_zero_point", input_zero_point)
    w_shape = chk.check_shape4(fn, "w_shape", w_shape)
    g = chk.conv_geometry(fn, x.shape, w_shape, stride, padding, groups)
    dout = chk.check_float_grad(fn, "dout", dout, (g.N, g.F, g.OH, g.OW))
    cdef Py_ssize_t N = g.N, C = g.C, F = g.F, G = g.groups, Cg = C // G, Fg = F // G
    cdef Py_ssize_t H = g.H, W = g.W, OH = g.OH, OW = g.OW, P = g.OH * g.OW
    cdef Py_ssize_t KH = g.KH, KW = g.KW, SH = g.SH, SW = g.SW, PH = g.PH, PW = g.PW
    cdef Py_ssize_t K = Cg * KH * KW
    dw = np.zeros((F, K), dtype=np.float32)
    if dw.size == 0 or N == 0:
        return dw.reshape(w_shape)
    cdef float[:, ::1] dwv = dw
    cdef const int8_t[:, :, :, ::1] xv = x
    cdef const float[:, :, :, ::1] dv = dout
    cols = np.empty((K, max(P, 1)), dtype=np.float32)
    cdef float[:, ::1] cv = cols
    cdef Py_ssize_t n, gi
    for n in range(N):
        for gi in range(G):
            with nogil:  # dW_g (Fg, K) += dout_g (Fg, P) @ cols^T (P, K)
                _im2col_f32(&xv[n, gi * Cg, 0, 0], zp, Cg, H, W, KH, KW, SH, SW,
                            PH, PW, OH, OW, &cv[0, 0], _num_threads)
                _sgemm_rm(False, True, Fg, K, P, &dv[n, gi * Fg, 0, 0], P, &cv[0, 0], P, 1.0,
                          &dwv[gi * Fg, 0], K)
    return dw.reshape(w_shape)


def linear_s8_backward_input(dout, w):
    """``dx = dout @ float(w_q)``: float32 (N, K). See the reference."""
    fn = "linear_s8_backward_input"
    w = chk.check_int8(fn, "w", w, 2)
    n_rows = dout.shape[0] if isinstance(dout, np.ndarray) and dout.ndim == 2 else -1
    dout = chk.check_float_grad(fn, "dout", dout, (n_rows, w.shape[0]))
    cdef Py_ssize_t n = dout.shape[0], f = w.shape[0], k = w.shape[1]
    dx = np.zeros((n, k), dtype=np.float32)
    if dx.size == 0:
        return dx
    wf = np.ascontiguousarray(w, dtype=np.float32)
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
    dw = np.zeros((f, k), dtype=np.float32)
    if dw.size == 0 or n == 0:
        return dw
    xf = x.astype(np.float32)
    xf -= zp
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
