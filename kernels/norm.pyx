# cython: language_level=3
"""Compiled batch normalisation: the fast twin of ``tinyodl.reference.norm`` (chapter 00).

Same functions, signatures and errors. One pass computes the per-channel mean, one the
variance (two passes, as numpy's ``var``, in double), one writes ``x_hat`` and the output;
the backward takes ``sum(dout)`` and ``sum(dout * x_hat)`` in one pass and writes ``dx``
in a second. The numpy reference makes about ten passes with full-size temporaries;
here the only full-size arrays are the results. Channels run in parallel (``prange``).
The loops are in ``kernels/simd/float_norm.h``.
"""

import numpy as np

from cython cimport floating
from cython.parallel cimport prange

from tinyodl.reference.norm import check_batchnorm

cdef extern from "float_norm.h" nogil:
    double tod_sum_f32(const float* x, Py_ssize_t n)
    double tod_sum_f64(const double* x, Py_ssize_t n)
    double tod_sumsq_dev_f32(const float* x, Py_ssize_t n, double m)
    double tod_sumsq_dev_f64(const double* x, Py_ssize_t n, double m)
    void tod_sum_dot_f32(const float* a, const float* b, Py_ssize_t n, double* sa, double* sab)
    void tod_sum_dot_f64(const double* a, const double* b, Py_ssize_t n, double* sa,
                         double* sab)
    void tod_bn_apply_f32(const float* x, Py_ssize_t n, float mean, float inv_std, float gamma,
                          float beta, float* x_hat, float* y)
    void tod_bn_apply_f64(const double* x, Py_ssize_t n, double mean, double inv_std,
                          double gamma, double beta, double* x_hat, double* y)
    void tod_bn_dx_f32(const float* dout, const float* x_hat, Py_ssize_t n, float k, float m,
                       float dbeta, float dxh, float* dx)
    void tod_bn_dx_f64(const double* dout, const double* x_hat, Py_ssize_t n, double k,
                       double m, double dbeta, double dxh, double* dx)

cdef int _num_threads = 1


def set_num_threads(int n):
    """Set the number of OpenMP threads used by this module's ``prange`` loops."""
    global _num_threads
    if n < 1:
        raise ValueError(f"number of threads must be >= 1, got {n}")
    _num_threads = n


cdef inline double _sum(const floating* x, Py_ssize_t n) noexcept nogil:
    if floating is float:
        return tod_sum_f32(x, n)
    return tod_sum_f64(x, n)


cdef inline double _sumsq_dev(const floating* x, Py_ssize_t n, double m) noexcept nogil:
    if floating is float:
        return tod_sumsq_dev_f32(x, n, m)
    return tod_sumsq_dev_f64(x, n, m)


cdef void _stats(const floating[:, :, ::1] x, double[::1] mean, double[::1] var) noexcept:
    """Per-channel mean and biased variance, two passes, in double."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], n, c
    cdef double m, v, count = N * S
    with nogil:
        for c in prange(C, num_threads=_num_threads, schedule="static"):
            m = 0
            for n in range(N):
                m = m + _sum(&x[n, c, 0], S)
            m = m / count
            v = 0
            for n in range(N):
                v = v + _sumsq_dev(&x[n, c, 0], S, m)
            mean[c] = m
            var[c] = v / count


cdef void _apply(const floating[:, :, ::1] x, const floating[::1] mean,
                 const floating[::1] inv_std, const floating[::1] gamma,
                 const floating[::1] beta, floating[:, :, ::1] x_hat,
                 floating[:, :, ::1] out) noexcept:
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], S = x.shape[2], n, c
    with nogil:
        for c in prange(C, num_threads=_num_threads, schedule="static"):
            for n in range(N):
                if floating is float:
                    tod_bn_apply_f32(&x[n, c, 0], S, mean[c], inv_std[c], gamma[c], beta[c],
                                     &x_hat[n, c, 0], &out[n, c, 0])
                else:
                    tod_bn_apply_f64(&x[n, c, 0], S, mean[c], inv_std[c], gamma[c], beta[c],
                                     &x_hat[n, c, 0], &out[n, c, 0])


def batchnorm_forward(x, gamma, beta, eps=1e-5, train=True, running_mean=None,
                      running_var=None):
    """Batch normalisation; see ``tinyodl.reference.norm.batchnorm_forward``."""
    x = check_batchnorm("batchnorm_forward", x, gamma, beta, train, running_mean, running_var)
    dtype = x.dtype
    n, c = x.shape[0], x.shape[1]
    x3 = np.ascontiguousarray(x).reshape(n, c, int(np.prod(x.shape[2:], dtype=np.int64)))
    if train:
        mean64, var64 = np.empty(c), np.empty(c)
        if x3.size:
            if dtype == np.float32:
                _stats[float](x3, mean64, var64)
            else:
                _stats[double](x3, mean64, var64)
        else:
            mean64[:], var64[:] = np.nan, np.nan
        mean, var = mean64.astype(dtype), var64.astype(dtype)
    else:
        mean, var = running_mean, running_var
    inv_std = (1.0 / np.sqrt(var + eps)).astype(dtype)
    out = np.empty(x.shape, dtype=dtype)
    x_hat = np.empty(x.shape, dtype=dtype)
    if x3.size:
        args = (x3, np.ascontiguousarray(mean, dtype=dtype), inv_std,
                np.ascontiguousarray(gamma, dtype=dtype), np.ascontiguousarray(beta, dtype=dtype),
                x_hat.reshape(x3.shape), out.reshape(x3.shape))
        if dtype == np.float32:
            _apply[float](*args)
        else:
            _apply[double](*args)
    return out, x_hat, inv_std, mean, var


cdef void _grad_sums(const floating[:, :, ::1] dout, const floating[:, :, ::1] x_hat,
                     bint has_x_hat, double[::1] dbeta, double[::1] dgamma) noexcept:
    cdef Py_ssize_t N = dout.shape[0], C = dout.shape[1], S = dout.shape[2], n, c
    cdef double sa, sab
    with nogil:
        for c in prange(C, num_threads=_num_threads, schedule="static"):
            sa = 0
            sab = 0
            for n in range(N):
                if has_x_hat:
                    if floating is float:
                        tod_sum_dot_f32(&dout[n, c, 0], &x_hat[n, c, 0], S, &sa, &sab)
                    else:
                        tod_sum_dot_f64(&dout[n, c, 0], &x_hat[n, c, 0], S, &sa, &sab)
                else:
                    sa = sa + _sum(&dout[n, c, 0], S)
            dbeta[c] = sa
            dgamma[c] = sab


cdef void _dx(const floating[:, :, ::1] dout, const floating[:, :, ::1] x_hat, bint train,
              const floating[::1] k, floating m, const floating[::1] dbeta,
              const floating[::1] dxh, floating[:, :, ::1] dx) noexcept:
    cdef Py_ssize_t N = dout.shape[0], C = dout.shape[1], S = dout.shape[2], n, c
    with nogil:
        for c in prange(C, num_threads=_num_threads, schedule="static"):
            for n in range(N):
                if floating is float:
                    tod_bn_dx_f32(&dout[n, c, 0], &x_hat[n, c, 0] if train else NULL, S, k[c],
                                  m, dbeta[c], dxh[c], &dx[n, c, 0])
                else:
                    tod_bn_dx_f64(&dout[n, c, 0], &x_hat[n, c, 0] if train else NULL, S, k[c],
                                  m, dbeta[c], dxh[c], &dx[n, c, 0])


def batchnorm_backward(dout, x_hat, gamma, inv_std, train):
    """Gradients of batch normalisation; see ``tinyodl.reference.norm.batchnorm_backward``."""
    if train and x_hat is None:
        raise ValueError("batchnorm_backward: training mode needs x_hat")
    dtype = dout.dtype
    n, c = dout.shape[0], dout.shape[1]
    d3 = np.ascontiguousarray(dout).reshape(n, c, int(np.prod(dout.shape[2:], dtype=np.int64)))
    h3 = d3 if x_hat is None else np.ascontiguousarray(x_hat, dtype=dtype).reshape(d3.shape)
    dbeta64, dgamma64 = np.zeros(c), np.zeros(c)
    if d3.size:
        if dtype == np.float32:
            _grad_sums[float](d3, h3, x_hat is not None, dbeta64, dgamma64)
        else:
            _grad_sums[double](d3, h3, x_hat is not None, dbeta64, dgamma64)
    dbeta = dbeta64.astype(dtype)
    dgamma = None if x_hat is None else dgamma64.astype(dtype)
    scale = (gamma * inv_std).astype(dtype)
    m = d3.shape[0] * d3.shape[2]
    k = scale / m if train else scale
    dx = np.empty(dout.shape, dtype=dtype)
    if d3.size:
        args = (d3, h3, bool(train), np.ascontiguousarray(k, dtype=dtype), m if train else 1,
                dbeta, dgamma if train else dbeta, dx.reshape(d3.shape))
        if dtype == np.float32:
            _dx[float](*args)
        else:
            _dx[double](*args)
    return dx, dgamma, dbeta
