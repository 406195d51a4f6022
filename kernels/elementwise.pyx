# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Element-wise work of a float training step, compiled: twin of
``tinyodl.reference.elementwise`` (chapter 00; read that module for the maths).

numpy does each of these in one or more single-threaded passes, with temporaries (the SGD
update alone makes three). Here each is one pass over the arrays (the loops are in
``kernels/simd/float_elementwise.h``), cut into blocks of :data:`BLOCK` elements shared
among ``set_num_threads(n)`` OpenMP threads; arrays under two blocks stay on the calling
thread (an OpenMP region costs microseconds). Every element sees the same float operations
as in numpy, in the same order, so the results are bit-identical to the reference whatever
the number of threads -- except :func:`bias_grad`, a sum, taken here in double precision in
a fixed order per channel (equal to float tolerance; the same bits for any thread count).

Anything but the plain case (C-contiguous float32/float64 arrays of one dtype) goes to the
reference, so both backends accept and refuse the same arguments.
"""

import numpy as np

cimport numpy as cnp
from cython.parallel cimport prange
from libc.stdint cimport int64_t, uint8_t
from libc.string cimport memset

from tinyodl.reference import elementwise as ref

cnp.import_array()

cdef extern from "float_elementwise.h" nogil:
    void tod_relu_fwd_f32(const float* x, float* y, uint8_t* mask, int64_t n)
    void tod_relu_fwd_f64(const double* x, double* y, uint8_t* mask, int64_t n)
    void tod_relu_bwd_f32(const float* dout, const uint8_t* mask, float* dx, int64_t n)
    void tod_relu_bwd_f64(const double* dout, const uint8_t* mask, double* dx, int64_t n)
    void tod_add_into_f32(float* dst, const float* src, int64_t n)
    void tod_add_into_f64(double* dst, const double* src, int64_t n)
    void tod_sgd_f32(float* w, const float* grad, float* buf, int64_t n, float lr, float m,
                     float wd, int has_m, int has_wd, int first, int nesterov)
    void tod_sgd_f64(double* w, const double* grad, double* buf, int64_t n, double lr,
                     double m, double wd, int has_m, int has_wd, int first, int nesterov)
    void tod_bias_grad_f32(const float* x, int64_t N, int64_t C, int64_t S, int64_t c0,
                           int64_t c1, float* out)
    void tod_bias_grad_f64(const double* x, int64_t N, int64_t C, int64_t S, int64_t c0,
                           int64_t c1, double* out)

cdef enum:
    _BLOCK = 16384

#: Elements per block of the OpenMP loops (64 KiB of float32).
BLOCK = _BLOCK

cdef int _num_threads = 1


def set_num_threads(int n):
    """Number of OpenMP threads used by this module's ``prange`` loops (default 1)."""
    global _num_threads
    if n < 1:
        raise ValueError(f"number of threads must be >= 1, got {n}")
    _num_threads = n


cdef inline bint _plain(a):
    """A C-contiguous float32 or float64 ndarray."""
    return (isinstance(a, cnp.ndarray) and cnp.PyArray_IS_C_CONTIGUOUS(a)
            and (cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32
                 or cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT64))


cdef inline bint _like(a, b):
    """``b`` is a C-contiguous array of ``a``'s dtype and shape (``a`` is plain)."""
    return (isinstance(b, cnp.ndarray) and cnp.PyArray_IS_C_CONTIGUOUS(b)
            and cnp.PyArray_TYPE(b) == cnp.PyArray_TYPE(a) and b.shape == a.shape)


cdef inline bint _pyscalar(v):
    """A Python float or int: numpy casts it to the array's dtype (a numpy float64 scalar
    would instead promote a float32 update to float64: the reference handles that case)."""
    return type(v) is float or type(v) is int


cdef inline int _threads(int64_t n) noexcept nogil:
    """Threads for ``n`` elements: one under two blocks."""
    return _num_threads if n >= 2 * _BLOCK else 1


def relu_forward(x):
    """``max(x, 0)`` and the mask ``x > 0``; see the reference."""
    if not _plain(x):
        return ref.relu_forward(x)
    y = np.empty_like(x)
    mask = np.empty(x.shape, dtype=np.bool_)
    cdef int64_t n = x.size, blocks = (n + _BLOCK - 1) // _BLOCK, b, lo, hi
    cdef uint8_t* m = <uint8_t*>cnp.PyArray_DATA(mask)
    cdef char* xp = <char*>cnp.PyArray_DATA(x)
    cdef char* yp = <char*>cnp.PyArray_DATA(y)
    cdef bint single = cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32
    cdef int nt = _threads(n)
    with nogil:
        for b in prange(blocks, num_threads=nt, schedule="static"):
            lo = b * _BLOCK
            hi = n if n < lo + _BLOCK else lo + _BLOCK
            if single:
                tod_relu_fwd_f32(<float*>xp + lo, <float*>yp + lo, m + lo, hi - lo)
            else:
                tod_relu_fwd_f64(<double*>xp + lo, <double*>yp + lo, m + lo, hi - lo)
    return y, mask


def relu_backward(dout, mask):
    """``dout * mask``; see the reference."""
    if not (_plain(dout) and isinstance(mask, cnp.ndarray)
            and cnp.PyArray_TYPE(mask) == cnp.NPY_BOOL and cnp.PyArray_IS_C_CONTIGUOUS(mask)
            and mask.shape == dout.shape):
        return ref.relu_backward(dout, mask)
    dx = np.empty_like(dout)
    cdef int64_t n = dout.size, blocks = (n + _BLOCK - 1) // _BLOCK, b, lo, hi
    cdef const uint8_t* m = <const uint8_t*>cnp.PyArray_DATA(mask)
    cdef char* dp = <char*>cnp.PyArray_DATA(dout)
    cdef char* xp = <char*>cnp.PyArray_DATA(dx)
    cdef bint single = cnp.PyArray_TYPE(dout) == cnp.NPY_FLOAT32
    cdef int nt = _threads(n)
    with nogil:
        for b in prange(blocks, num_threads=nt, schedule="static"):
            lo = b * _BLOCK
            hi = n if n < lo + _BLOCK else lo + _BLOCK
            if single:
                tod_relu_bwd_f32(<float*>dp + lo, m + lo, <float*>xp + lo, hi - lo)
            else:
                tod_relu_bwd_f64(<double*>dp + lo, m + lo, <double*>xp + lo, hi - lo)
    return dx


def bias_grad(dout):
    """``dout`` summed over every axis but 1, shape (C,); see the reference."""
    if not (_plain(dout) and dout.ndim >= 2):
        return ref.bias_grad(dout)
    cdef int64_t N = dout.shape[0], C = dout.shape[1], S = dout.size // max(N * C, 1)
    out = np.empty(C, dtype=dout.dtype)
    if C == 0:
        return out
    if N * S == 0:
        out.fill(0)
        return out
    cdef char* xp = <char*>cnp.PyArray_DATA(dout)
    cdef char* op = <char*>cnp.PyArray_DATA(out)
    cdef bint single = cnp.PyArray_TYPE(dout) == cnp.NPY_FLOAT32
    cdef int nt = _threads(N * C * S) if C > 1 else 1
    cdef int64_t c
    with nogil:
        for c in prange(C, num_threads=nt, schedule="static"):
            if single:
                tod_bias_grad_f32(<float*>xp, N, C, S, c, c + 1, <float*>op)
            else:
                tod_bias_grad_f64(<double*>xp, N, C, S, c, c + 1, <double*>op)
    return out


def add_into(dst, src):
    """``dst += src`` in place; see the reference."""
    if not (_plain(dst) and _like(dst, src)):
        return ref.add_into(dst, src)
    cdef int64_t n = dst.size, blocks = (n + _BLOCK - 1) // _BLOCK, b, lo, hi
    cdef char* dp = <char*>cnp.PyArray_DATA(dst)
    cdef char* sp = <char*>cnp.PyArray_DATA(src)
    cdef bint single = cnp.PyArray_TYPE(dst) == cnp.NPY_FLOAT32
    cdef int nt = _threads(n)
    with nogil:
        for b in prange(blocks, num_threads=nt, schedule="static"):
            lo = b * _BLOCK
            hi = n if n < lo + _BLOCK else lo + _BLOCK
            if single:
                tod_add_into_f32(<float*>dp + lo, <float*>sp + lo, hi - lo)
            else:
                tod_add_into_f64(<double*>dp + lo, <double*>sp + lo, hi - lo)


def fill_zeros(a):
    """``a[...] = 0`` in place; see the reference."""
    if not _plain(a):
        return ref.fill_zeros(a)
    cdef int64_t n = a.size, blocks = (n + _BLOCK - 1) // _BLOCK, b, lo, hi
    cdef int64_t item = cnp.PyArray_ITEMSIZE(a)
    cdef char* p = <char*>cnp.PyArray_DATA(a)
    cdef int nt = _threads(n)
    with nogil:
        for b in prange(blocks, num_threads=nt, schedule="static"):
            lo = b * _BLOCK
            hi = n if n < lo + _BLOCK else lo + _BLOCK
            memset(p + lo * item, 0, (hi - lo) * item)


def sgd_update(w, grad, buf, lr, momentum=0.0, weight_decay=0.0, nesterov=False,
               first=False):
    """One SGD step on ``w`` (and ``buf``) in place; see the reference."""
    if not (_plain(w) and _like(w, grad) and (buf is None or _like(w, buf))
            and (buf is not None or not momentum) and _pyscalar(lr) and _pyscalar(momentum)
            and _pyscalar(weight_decay)):
        return ref.sgd_update(w, grad, buf, lr, momentum, weight_decay, nesterov, first)
    cdef int64_t n = w.size, blocks = (n + _BLOCK - 1) // _BLOCK, b, lo, hi
    cdef char* wp = <char*>cnp.PyArray_DATA(w)
    cdef char* gp = <char*>cnp.PyArray_DATA(grad)
    cdef char* bp = <char*>cnp.PyArray_DATA(buf) if buf is not None else NULL
    cdef bint single = cnp.PyArray_TYPE(w) == cnp.NPY_FLOAT32
    cdef double lr_d = lr, m_d = momentum, wd_d = weight_decay
    cdef float lr_f = <float>lr_d, m_f = <float>m_d, wd_f = <float>wd_d  # numpy's casts
    cdef int has_m = momentum != 0, has_wd = weight_decay != 0
    cdef int fst = bool(first), nes = bool(nesterov)
    cdef int nt = _threads(n)
    with nogil:
        for b in prange(blocks, num_threads=nt, schedule="static"):
            lo = b * _BLOCK
            hi = n if n < lo + _BLOCK else lo + _BLOCK
            if single:
                tod_sgd_f32(<float*>wp + lo, <float*>gp + lo,
                            (<float*>bp + lo) if has_m else NULL, hi - lo, lr_f, m_f, wd_f,
                            has_m, has_wd, fst, nes)
            else:
                tod_sgd_f64(<double*>wp + lo, <double*>gp + lo,
                            (<double*>bp + lo) if has_m else NULL, hi - lo, lr_d, m_d, wd_d,
                            has_m, has_wd, fst, nes)
