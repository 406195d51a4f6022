# cython: language_level=3
"""Compiled fully connected layer: the fast twin of ``tinyodl.reference.linear``.

Each function is one matrix product on row-major arrays. The forward pass in float32 at
training-batch sizes (up to 128 rows, filling the tiles' columns) on an AVX2 or AVX-512
build runs on the register-tiled GEMM of ``kernels/simd/float_linear.h``, which reads the
weight matrix in place along its rows (a BLAS packs it first, which at this shape costs
about as much as the arithmetic); tiles run in parallel (``set_num_threads``). Everything
else is one BLAS ``sgemm``/``dgemm`` call: BLAS is column-major, so for the row-major
product ``C = A @ B`` we ask it for ``C.T = B.T @ A.T`` (see ``kernels/_float_common.pxd``);
BLAS uses its own thread pool. (The backward products walk the weights across their rows,
where a BLAS with its packing is faster.)
"""

import numpy as np

from cython cimport floating

from cython.parallel cimport prange

from _float_common cimport gemm

cdef extern from "float_linear.h" nogil:
    enum:
        TOD_HAVE_SGEMM
        TOD_SMR
        TOD_SNR
    void tod_sgemm_block(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float* a,
                         Py_ssize_t ars, Py_ssize_t aks, const float* b, Py_ssize_t bks,
                         float* c, Py_ssize_t ldc, int transposed, int accumulate,
                         Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t pan0, Py_ssize_t pan1)

from tinyodl.reference._checks import check_linear, check_linear_dout_w, check_linear_dout_x

cdef int _num_threads = 1


def set_num_threads(int n):
    """Set the OpenMP thread count (kept for a uniform API; GEMM threads come from BLAS)."""
    global _num_threads
    if n < 1:
        raise ValueError(f"number of threads must be >= 1, got {n}")
    _num_threads = n


cdef void _forward(const floating[:, ::1] x, const floating[:, ::1] w, const floating[::1] b,
                   bint has_bias, floating[:, ::1] out) noexcept:
    cdef int N = x.shape[0], I = x.shape[1], O = w.shape[0]
    cdef Py_ssize_t n, o
    cdef floating beta = 1 if has_bias else 0
    with nogil:
        if has_bias:
            for n in range(N):
                for o in range(O):
                    out[n, o] = b[o]
        # out (N, O) = x (N, I) @ w.T (I, O)  <=>  out.T = w @ x.T in column-major terms
        gemm(c"T", c"N", O, N, I, 1, &w[0, 0], I, &x[0, 0], I, beta, &out[0, 0], O)


cdef void _backward_input(const floating[:, ::1] dout, const floating[:, ::1] w,
                          floating[:, ::1] dx) noexcept:
    cdef int N = dout.shape[0], O = dout.shape[1], I = w.shape[1]
    with nogil:
        # dx (N, I) = dout (N, O) @ w (O, I)
        gemm(c"N", c"N", I, N, O, 1, &w[0, 0], I, &dout[0, 0], O, 0, &dx[0, 0], I)


cdef void _backward_weight(const floating[:, ::1] dout, const floating[:, ::1] x,
                           floating[:, ::1] dw) noexcept:
    cdef int N = dout.shape[0], O = dout.shape[1], I = x.shape[1]
    with nogil:
        # dw (O, I) = dout.T (O, N) @ x (N, I)
        gemm(c"N", c"T", I, O, N, 1, &x[0, 0], I, &dout[0, 0], O, 0, &dw[0, 0], I)


#: batches up to this size use the register-tiled GEMM (float32, SIMD builds)
SMALL_BATCH = 128
#: (available, MR, NR) of that GEMM, for tinyodl/memory/_rules.py
SGEMM_TILE = (bool(TOD_HAVE_SGEMM), TOD_SMR, TOD_SNR)


cdef void _tiled(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float* a, Py_ssize_t ars,
                 Py_ssize_t aks, const float* b, Py_ssize_t bks, float* c, Py_ssize_t ldc,
                 int transposed) noexcept nogil:
    """C (M x N) = A . B on the tiles of float_linear.h, blocks of (MR rows x NR columns)
    shared among the OpenMP threads."""
    cdef Py_ssize_t rows = (M + TOD_SMR - 1) // TOD_SMR, panels = (N + TOD_SNR - 1) // TOD_SNR
    cdef Py_ssize_t item
    for item in prange(rows * panels, num_threads=_num_threads, schedule="static"):
        tod_sgemm_block(M, N, K, a, ars, aks, b, bks, c, ldc, transposed, 0,
                        (item // panels) * TOD_SMR, (item // panels + 1) * TOD_SMR,
                        item % panels, item % panels + 1)


def _use_tiled(a, rows):
    """float32, a SIMD build, a batch up to SMALL_BATCH that fills its panels to 3/4."""
    panels = -(-rows // TOD_SNR)
    return (TOD_HAVE_SGEMM and a.dtype == np.float32 and 0 < rows <= SMALL_BATCH
            and 4 * rows >= 3 * panels * TOD_SNR)


def linear_forward(x, w, b=None):
    """``x @ w.T + b``; see ``tinyodl.reference.linear.linear_forward``."""
    x, w, b = check_linear("linear_forward", x, w, b)
    has_bias = b is not None
    if has_bias:
        b = np.ascontiguousarray(b)
    else:
        b = np.zeros(w.shape[0], dtype=x.dtype)
    out = np.empty((x.shape[0], w.shape[0]), dtype=x.dtype)
    if out.size == 0:
        return out
    if x.shape[1] == 0:
        out[...] = b
        return out
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w)
    cdef const float[:, ::1] xt
    cdef const float[:, ::1] wv
    cdef float[:, ::1] ov
    cdef Py_ssize_t N = x.shape[0], I = x.shape[1], O = w.shape[0]
    if _use_tiled(x, N):
        # out^T (O x N) = w (O x I) . x^T: the batch is packed once as x^T (I x N)
        xt = np.ascontiguousarray(x.T)
        wv = w
        ov = out
        with nogil:
            _tiled(O, N, I, &wv[0, 0], I, 1, &xt[0, 0], N, &ov[0, 0], O, 1)
        if has_bias:
            out += b
        return out
    if x.dtype == np.float32:
        _forward[float](x, w, b, has_bias, out)
    else:
        _forward[double](x, w, b, has_bias, out)
    return out


def linear_backward_input(dout, w):
    """``dout @ w``; see ``tinyodl.reference.linear.linear_backward_input``."""
    dout, w = check_linear_dout_w("linear_backward_input", dout, w)
    cdef Py_ssize_t N = dout.shape[0], O = dout.shape[1], I = w.shape[1]
    tiled = _use_tiled(dout, N) and O > 0 and I > 0
    # the tiles write every element: no serial zero-fill of the result first
    dx = (np.empty if tiled else np.zeros)((N, I), dtype=dout.dtype)
    if dx.size == 0 or dout.shape[1] == 0:
        return dx
    dout = np.ascontiguousarray(dout)
    w = np.ascontiguousarray(w)
    cdef const float[:, ::1] dt
    cdef const float[:, ::1] wv
    cdef float[:, ::1] dxv
    if tiled:
        # dx^T (I x N) = w^T (I x O) . dout^T: A = columns of w, B = dout^T packed once
        dt = np.ascontiguousarray(dout.T)
        wv = w
        dxv = dx
        with nogil:
            _tiled(I, N, O, &wv[0, 0], 1, I, &dt[0, 0], N, &dxv[0, 0], I, 1)
        return dx
    if dout.dtype == np.float32:
        _backward_input[float](dout, w, dx)
    else:
        _backward_input[double](dout, w, dx)
    return dx


def linear_backward_weight(dout, x):
    """``dout.T @ x``; see ``tinyodl.reference.linear.linear_backward_weight``."""
    dout, x = check_linear_dout_x("linear_backward_weight", dout, x)
    cdef Py_ssize_t N = dout.shape[0], O = dout.shape[1], I = x.shape[1]
    tiled = (TOD_HAVE_SGEMM and dout.dtype == np.float32 and 0 < N <= SMALL_BATCH
             and 4 * I >= 3 * TOD_SNR and O > 0)
    # the tiles write every element: no serial zero-fill of the result first
    dw = (np.empty if tiled else np.zeros)((O, I), dtype=dout.dtype)
    if dw.size == 0 or x.shape[0] == 0:
        return dw
    dout = np.ascontiguousarray(dout)
    x = np.ascontiguousarray(x)
    cdef const float[:, ::1] dv
    cdef const float[:, ::1] xv
    cdef float[:, ::1] dwv
    if tiled:
        # dw (O x I) = dout^T (O x N) . x: A = columns of dout, B = rows of x, in place
        dv = dout
        xv = x
        dwv = dw
        with nogil:
            _tiled(O, I, N, &dv[0, 0], 1, O, &xv[0, 0], I, &dwv[0, 0], I, 0)
        return dw
    if dout.dtype == np.float32:
        _backward_weight[float](dout, x, dw)
    else:
        _backward_weight[double](dout, x, dw)
    return dw
