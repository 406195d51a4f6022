# cython: language_level=3
"""Compiled 2-D max and average pooling: the fast twin of ``tinyodl.reference.pool``.

Direct loops over one ``H x W`` plane per ``prange`` iteration (``N*C`` planes in all);
no im2col. Windows are clipped to the image, which is the same as padding with ``-inf``
(max pooling: padding never wins) or with zeros (average pooling). Ties in max pooling go
to the first pixel in row-major window order, and the first NaN of a window wins it, as in
the reference. The average divides by ``KH*KW`` cut at the end of the padding
(``count_include_pad``) or by the number of real pixels; ``ceil_mode`` only changes the
output size (``pool_geometry``), the clipping does the rest.
"""

import numpy as np

from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int64_t
from libc.string cimport memset

from _float_common cimport Geom, make_geom

from tinyodl.reference._checks import check_argmax, check_float, check_shape4, pool_geometry

cdef int _num_threads = 1


def set_num_threads(int n):
    """Set the number of OpenMP threads used by this module's ``prange`` loops."""
    global _num_threads
    if n < 1:
        raise ValueError(f"number of threads must be >= 1, got {n}")
    _num_threads = n


cdef inline Py_ssize_t _clip(Py_ssize_t v, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    return lo if v < lo else (hi if v > hi else v)


cdef void _max_plane(const floating* xc, floating* oc, int64_t* ac,
                     const Geom* g) noexcept nogil:
    cdef Py_ssize_t oh, ow, ih, iw, h0, h1, w0, w1, best_i
    cdef floating best, v
    for oh in range(g.OH):
        h0 = _clip(oh * g.SH - g.PH, 0, g.H)
        h1 = _clip(oh * g.SH - g.PH + g.KH, 0, g.H)
        for ow in range(g.OW):
            w0 = _clip(ow * g.SW - g.PW, 0, g.W)
            w1 = _clip(ow * g.SW - g.PW + g.KW, 0, g.W)
            best_i = h0 * g.W + w0  # padding <= kernel/2: every window holds a pixel
            best = xc[best_i]
            for ih in range(h0, h1):
                for iw in range(w0, w1):
                    v = xc[ih * g.W + iw]
                    # a NaN wins (the first one): once best is NaN nothing compares greater
                    if v > best or (v != v and best == best):
                        best = v
                        best_i = ih * g.W + iw
            oc[oh * g.OW + ow] = best
            ac[oh * g.OW + ow] = best_i


cdef inline void _take(floating v, int64_t i, floating* best, int64_t* best_i) noexcept nogil:
    """Branch-free step of the window scan: v wins if greater, or if it is the first NaN."""
    cdef bint take = (v > best[0]) | ((v != v) & (best[0] == best[0]))
    best[0] = v if take else best[0]
    best_i[0] = i if take else best_i[0]


cdef void _max_plane_2x2(const floating* xc, floating* oc, int64_t* ac, Py_ssize_t W,
                         Py_ssize_t OH, Py_ssize_t OW) noexcept nogil:
    """2x2 windows, stride 2, no padding, every window inside the plane (the common case).

    The same scan as ``_max_plane`` (row-major window order, first NaN wins) without
    branches: on real data the comparisons are unpredictable, and a mispredicted branch
    per pixel costs more than the comparison itself.
    """
    cdef Py_ssize_t oh, ow
    cdef int64_t i, bi
    cdef floating best
    for oh in range(OH):
        for ow in range(OW):
            i = 2 * oh * W + 2 * ow
            best = xc[i]
            bi = i
            _take(xc[i + 1], i + 1, &best, &bi)
            _take(xc[i + W], i + W, &best, &bi)
            _take(xc[i + W + 1], i + W + 1, &best, &bi)
            oc[oh * OW + ow] = best
            ac[oh * OW + ow] = bi


cdef char _max_backward_plane(const floating* dc, const int64_t* ac, floating* dxc,
                              Py_ssize_t P, Py_ssize_t HW) noexcept nogil:
    """Add each gradient to its argmax pixel; 1 if an index fell outside the plane (it is
    skipped; the caller then raises the reference's error)."""
    cdef Py_ssize_t p
    cdef char bad = 0
    memset(dxc, 0, HW * sizeof(floating))
    for p in range(P):
        if 0 <= ac[p] < HW:
            dxc[ac[p]] += dc[p]
        else:
            bad = 1
    return bad


cdef inline Py_ssize_t _span(Py_ssize_t start, Py_ssize_t k, Py_ssize_t size,
                             Py_ssize_t pad) noexcept nogil:
    """Length of the window [start, start + k) cut at the end of the padding, size + pad."""
    return (size + pad if start + k > size + pad else start + k) - start


cdef inline double _divisor(const Geom* g, Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t h0,
                            Py_ssize_t h1, Py_ssize_t w0, Py_ssize_t w1,
                            bint include_pad) noexcept nogil:
    if include_pad:
        return <double>(_span(oh * g.SH - g.PH, g.KH, g.H, g.PH)
                        * _span(ow * g.SW - g.PW, g.KW, g.W, g.PW))
    return <double>((h1 - h0) * (w1 - w0))


cdef void _avg_plane(const floating* xc, floating* oc, const Geom* g,
                     bint include_pad) noexcept nogil:
    cdef Py_ssize_t oh, ow, ih, iw, h0, h1, w0, w1
    cdef double acc
    for oh in range(g.OH):
        h0 = _clip(oh * g.SH - g.PH, 0, g.H)
        h1 = _clip(oh * g.SH - g.PH + g.KH, 0, g.H)
        for ow in range(g.OW):
            w0 = _clip(ow * g.SW - g.PW, 0, g.W)
            w1 = _clip(ow * g.SW - g.PW + g.KW, 0, g.W)
            acc = 0
            for ih in range(h0, h1):
                for iw in range(w0, w1):
                    acc = acc + xc[ih * g.W + iw]
            oc[oh * g.OW + ow] = <floating>(acc / _divisor(g, oh, ow, h0, h1, w0, w1,
                                                           include_pad))


cdef void _avg_backward_plane(const floating* dc, floating* dxc, const Geom* g,
                              bint include_pad) noexcept nogil:
    cdef Py_ssize_t oh, ow, ih, iw, h0, h1, w0, w1
    cdef floating share
    memset(dxc, 0, g.H * g.W * sizeof(floating))
    for oh in range(g.OH):
        h0 = _clip(oh * g.SH - g.PH, 0, g.H)
        h1 = _clip(oh * g.SH - g.PH + g.KH, 0, g.H)
        for ow in range(g.OW):
            w0 = _clip(ow * g.SW - g.PW, 0, g.W)
            w1 = _clip(ow * g.SW - g.PW + g.KW, 0, g.W)
            share = <floating>(dc[oh * g.OW + ow]
                               / _divisor(g, oh, ow, h0, h1, w0, w1, include_pad))
            for ih in range(h0, h1):
                for iw in range(w0, w1):
                    dxc[ih * g.W + iw] += share


cdef void _max_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                       int64_t[:, :, :, ::1] argmax, const Geom* g) noexcept:
    cdef Py_ssize_t C = x.shape[1], i
    cdef int nt = _num_threads
    cdef bint two = (g.KH == 2 and g.KW == 2 and g.SH == 2 and g.SW == 2 and g.PH == 0
                     and g.PW == 0 and 2 * g.OH <= g.H and 2 * g.OW <= g.W)
    with nogil:
        for i in prange(x.shape[0] * C, num_threads=nt, schedule="static"):
            if two:
                _max_plane_2x2(&x[i // C, i % C, 0, 0], &out[i // C, i % C, 0, 0],
                               &argmax[i // C, i % C, 0, 0], g.W, g.OH, g.OW)
            else:
                _max_plane(&x[i // C, i % C, 0, 0], &out[i // C, i % C, 0, 0],
                           &argmax[i // C, i % C, 0, 0], g)


cdef bint _max_backward(const floating[:, :, :, ::1] dout,
                        const int64_t[:, :, :, ::1] argmax, floating[:, :, :, ::1] dx,
                        char[::1] bad) noexcept:
    """dx planes in parallel; True if some argmax index was out of its plane."""
    cdef Py_ssize_t C = dx.shape[1], i
    cdef Py_ssize_t P = dout.shape[2] * dout.shape[3], HW = dx.shape[2] * dx.shape[3]
    cdef int nt = _num_threads
    cdef bint any_bad = False
    with nogil:
        for i in prange(dx.shape[0] * C, num_threads=nt, schedule="static"):
            bad[i] = _max_backward_plane(&dout[i // C, i % C, 0, 0],
                                         &argmax[i // C, i % C, 0, 0],
                                         &dx[i // C, i % C, 0, 0], P, HW)
        for i in range(dx.shape[0] * C):
            any_bad = any_bad or bad[i] != 0
    return any_bad


cdef void _avg_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                       const Geom* g, bint include_pad) noexcept:
    cdef Py_ssize_t C = x.shape[1], i
    cdef int nt = _num_threads
    with nogil:
        for i in prange(x.shape[0] * C, num_threads=nt, schedule="static"):
            _avg_plane(&x[i // C, i % C, 0, 0], &out[i // C, i % C, 0, 0], g, include_pad)


cdef void _avg_backward(const floating[:, :, :, ::1] dout, floating[:, :, :, ::1] dx,
                        const Geom* g, bint include_pad) noexcept:
    cdef Py_ssize_t C = dx.shape[1], i
    cdef int nt = _num_threads
    with nogil:
        for i in prange(dx.shape[0] * C, num_threads=nt, schedule="static"):
            _avg_backward_plane(&dout[i // C, i % C, 0, 0], &dx[i // C, i % C, 0, 0], g,
                                include_pad)


def maxpool2d_forward(x, kernel_size, stride=None, padding=0, ceil_mode=False):
    """Max pooling; see ``tinyodl.reference.pool.maxpool2d_forward``."""
    fn = "maxpool2d_forward"
    x = check_float(fn, "x", x, 4)
    kh, kw, sh, sw, ph, pw, oh, ow = pool_geometry(fn, x.shape, kernel_size, stride, padding,
                                                   ceil_mode)
    n, c, h, w = x.shape
    x = np.ascontiguousarray(x)
    out = np.empty((n, c, oh, ow), dtype=x.dtype)
    argmax = np.empty((n, c, oh, ow), dtype=np.int64)
    cdef Geom geo = make_geom(h, w, kh, kw, sh, sw, ph, pw, oh, ow)
    if out.size == 0:
        return out, argmax
    if x.dtype == np.float32:
        _max_forward[float](x, out, argmax, &geo)
    else:
        _max_forward[double](x, out, argmax, &geo)
    return out, argmax


def maxpool2d_backward(dout, argmax, x_shape):
    """Route gradients to the argmax pixels; see ``tinyodl.reference.pool``."""
    fn = "maxpool2d_backward"
    dout = check_float(fn, "dout", dout, 4)
    x_shape = check_shape4(fn, "x_shape", x_shape)
    if (not isinstance(argmax, np.ndarray) or argmax.dtype != np.int64
            or argmax.shape != dout.shape or dout.shape[:2] != tuple(x_shape[:2])):
        check_argmax(fn, dout, argmax, x_shape)  # the index range is checked in the loop
    dout = np.ascontiguousarray(dout)
    argmax = np.ascontiguousarray(argmax, dtype=np.int64)
    if dout.size == 0 or int(np.prod(x_shape)) == 0:
        check_argmax(fn, dout, argmax, x_shape)
        return np.zeros(x_shape, dtype=dout.dtype)
    dx = np.empty(x_shape, dtype=dout.dtype)  # each thread zeroes its own planes
    bad = np.empty(dx.shape[0] * dx.shape[1], dtype=np.int8)
    if dout.dtype == np.float32:
        any_bad = _max_backward[float](dout, argmax, dx, bad)
    else:
        any_bad = _max_backward[double](dout, argmax, dx, bad)
    if any_bad:  # raises the reference's error, naming the valid range
        check_argmax(fn, dout, argmax, x_shape)
    return dx


def avgpool2d_forward(x, kernel_size, stride=None, padding=0, ceil_mode=False,
                      count_include_pad=True):
    """Average pooling; see ``tinyodl.reference.pool.avgpool2d_forward``."""
    fn = "avgpool2d_forward"
    x = check_float(fn, "x", x, 4)
    kh, kw, sh, sw, ph, pw, oh, ow = pool_geometry(fn, x.shape, kernel_size, stride, padding,
                                                   ceil_mode)
    cdef bint include_pad = bool(count_include_pad)
    n, c, h, w = x.shape
    x = np.ascontiguousarray(x)
    out = np.empty((n, c, oh, ow), dtype=x.dtype)
    cdef Geom geo = make_geom(h, w, kh, kw, sh, sw, ph, pw, oh, ow)
    if out.size == 0:
        return out
    if x.dtype == np.float32:
        _avg_forward[float](x, out, &geo, include_pad)
    else:
        _avg_forward[double](x, out, &geo, include_pad)
    return out


def avgpool2d_backward(dout, x_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                       count_include_pad=True):
    """Spread gradients evenly over each window; see ``tinyodl.reference.pool``."""
    fn = "avgpool2d_backward"
    dout = check_float(fn, "dout", dout, 4)
    n, c, h, w = check_shape4(fn, "x_shape", x_shape)
    kh, kw, sh, sw, ph, pw, oh, ow = pool_geometry(fn, (n, c, h, w), kernel_size, stride,
                                                   padding, ceil_mode)
    cdef bint include_pad = bool(count_include_pad)
    if dout.shape != (n, c, oh, ow):
        raise ValueError(f"{fn}: dout must have shape {(n, c, oh, ow)}, got {dout.shape}")
    dout = np.ascontiguousarray(dout)
    dx = np.zeros((n, c, h, w), dtype=dout.dtype)
    cdef Geom geo = make_geom(h, w, kh, kw, sh, sw, ph, pw, oh, ow)
    if dx.size == 0:
        return dx
    if dout.dtype == np.float32:
        _avg_backward[float](dout, dx, &geo, include_pad)
    else:
        _avg_backward[double](dout, dx, &geo, include_pad)
    return dx
