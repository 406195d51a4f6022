# cython: language_level=3
"""Compiled 2-D convolution: the fast twin of ``tinyodl.reference.conv`` (chapter 00).

Same functions, same signatures, same errors as the numpy reference. What changes:

* ``im2col``/``col2im`` are loops over one image at a time with contiguous inner loops
  (a ``memcpy`` per output row when the stride is 1) and ``prange`` over channels;
* the matrix products call BLAS ``sgemm``/``dgemm`` directly (``scipy.linalg.cython_blas``),
  one image and one group at a time, so the column buffer holds one image only;
* a 1x1 convolution with stride 1 and no padding needs no im2col: the image *is* the
  column matrix;
* a depthwise convolution (``groups == C == F``) uses direct loops, no im2col at all:
  each plane is split into stride x stride phase planes so that every filter tap is one
  long vectorized loop (``kernels/simd/float_dw.h``), also for the backward passes.

``set_num_threads(n)`` sets the OpenMP thread count of the ``prange`` loops (default 1).
BLAS uses its own threads (``OPENBLAS_NUM_THREADS``).
"""

import numpy as np

from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.string cimport memcpy, memset

from _float_common cimport Geom, col_hi, col_lo, gemm, make_geom
from _float_dw cimport (
    tod_dw_backward_input_f32,
    tod_dw_backward_input_f64,
    tod_dw_forward_f32,
    tod_dw_forward_f64,
    tod_dw_geom,
    tod_dw_make_geom,
    tod_dw_planes_f32,
    tod_dw_planes_f64,
    tod_dw_virtual_f32,
    tod_dw_virtual_f64,
    tod_dw_weight_accumulate_f32,
    tod_dw_weight_accumulate_f64,
    tod_dw_weight_reduce_f32,
    tod_dw_weight_reduce_f64,
)

from tinyodl.reference._checks import (
    check_dout,
    check_float,
    check_shape4,
    conv_geometry,
    window_geometry,
)

cdef int _num_threads = 1


def set_num_threads(int n):
    """Set the number of OpenMP threads used by this module's ``prange`` loops."""
    global _num_threads
    if n < 1:
        raise ValueError(f"number of threads must be >= 1, got {n}")
    _num_threads = n


# ---------------------------------------------------------------------------------------
# im2col / col2im of one image, one channel per prange iteration
# ---------------------------------------------------------------------------------------

cdef extern from "float_gemm.h" nogil:
    enum:
        TOD_HAVE_SGEMM
        TOD_SMR
        TOD_SNR
    void tod_pack_filters_f32(const float* w, Py_ssize_t F, Py_ssize_t K, float* apack)
    Py_ssize_t tod_conv_cblock(Py_ssize_t KH, Py_ssize_t KW)
    void tod_conv_same_f32(const float* x, Py_ssize_t N, Py_ssize_t C, Py_ssize_t H,
                           Py_ssize_t W, Py_ssize_t KH, Py_ssize_t KW, Py_ssize_t PH,
                           Py_ssize_t PW, const float* apack, Py_ssize_t F, const float* bias,
                           float* out, Py_ssize_t pan0, Py_ssize_t pan1, float* bpanel,
                           float* tile)


cdef extern from "float_linear.h" nogil:
    void tod_sgemm_block(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float* a,
                         Py_ssize_t ars, Py_ssize_t aks, const float* b, Py_ssize_t bks,
                         float* c, Py_ssize_t ldc, int transposed, int accumulate,
                         Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t pan0, Py_ssize_t pan1)


cdef extern from "float_rows.h" nogil:
    void tod_im2col_row_f32(float* dst, const float* src, Py_ssize_t lo, Py_ssize_t hi,
                            Py_ssize_t n, Py_ssize_t sw)
    void tod_col2im_row_f32(float* dst, const float* src, Py_ssize_t lo, Py_ssize_t hi,
                            Py_ssize_t sw)
    void tod_add_f32(float* dst, const float* src, Py_ssize_t n)


cdef extern from *:
    """
    /* A barrier of the enclosing OpenMP team: Cython's prange inside a parallel block ends
       without one ("omp for nowait"). Nothing without OpenMP (one thread). */
    static inline void tod_team_barrier(void) {
    #ifdef _OPENMP
        _Pragma("omp barrier")
    #endif
    }
    """
    void tod_team_barrier() noexcept nogil


cdef inline bint _same_stride1(const Geom* g) noexcept nogil:
    """Stride 1 and an output as large as the input ("same" padding, odd kernel)."""
    return g.SH == 1 and g.SW == 1 and g.OH == g.H and g.OW == g.W


cdef inline void _run_in_plane(Py_ssize_t start, Py_ssize_t run, Py_ssize_t plane,
                               Py_ssize_t* s, Py_ssize_t* e) noexcept nogil:
    """The part [s, e) of a run of ``run`` values at offset ``start`` of a plane of ``plane``
    values that lies inside the plane. A tap's shifted run starts before the plane when
    kw < PW and ends after it when kw > PW; those values are the columns that fell off an
    edge (zero), and reading or adding them would touch the neighbouring channel's plane --
    another thread's, in col2im -- or memory outside the array."""
    s[0] = -start if start < 0 else 0
    e[0] = plane - start if start + run > plane else run
    if e[0] < s[0]:
        e[0] = s[0]


cdef void _im2col_channel_same(const floating* xc, floating* col, const Geom* g) noexcept nogil:
    """im2col of one channel when OH = H and OW = W at stride 1.

    Then the column row of tap (kh, kw) is the input plane shifted by
    (kh - PH) * W + (kw - PW): one contiguous copy for all the rows the tap sees, then
    zeros for the rows above and below the image and for the few columns that fell off
    the left or right edge (the copy brought values from the neighbouring row there).
    """
    cdef Py_ssize_t kh, kw, oh, ow, lo, hi, oh0, oh1, start, s, e, P = g.OH * g.OW, W = g.W
    cdef floating* dst
    for kh in range(g.KH):
        oh0 = g.PH - kh if g.PH > kh else 0          # first row with ih = oh + kh - PH >= 0
        oh1 = g.H + g.PH - kh if g.H + g.PH - kh < g.OH else g.OH
        for kw in range(g.KW):
            dst = col + (kh * g.KW + kw) * P
            lo = col_lo(g, kw)
            hi = col_hi(g, kw)
            if oh1 <= oh0:
                memset(dst, 0, P * sizeof(floating))
                continue
            start = (oh0 + kh - g.PH) * W + kw - g.PW  # the run's first value in the plane
            _run_in_plane(start, (oh1 - oh0) * W, P, &s, &e)
            memset(dst, 0, (oh0 * W + s) * sizeof(floating))
            memcpy(dst + oh0 * W + s, xc + start + s, (e - s) * sizeof(floating))
            memset(dst + oh0 * W + e, 0, (P - oh0 * W - e) * sizeof(floating))
            if lo > 0 or hi < W:
                for oh in range(oh0, oh1):
                    for ow in range(lo):
                        dst[oh * W + ow] = 0
                    for ow in range(hi, W):
                        dst[oh * W + ow] = 0


cdef void _col2im_channel_same(floating* col, floating* xc, const Geom* g) noexcept nogil:
    """col2im of one channel when OH = H and OW = W at stride 1, in place on ``col``.

    The mirror of :func:`_im2col_channel_same`: the columns that fell off an edge are set to
    zero in ``col`` (a scratch buffer), then each tap's rows are added to the plane in one
    contiguous run.
    """
    cdef Py_ssize_t kh, kw, oh, ow, lo, hi, oh0, oh1, start, s, e, t, P = g.OH * g.OW
    cdef Py_ssize_t W = g.W
    cdef floating* src
    cdef floating* dst
    for kh in range(g.KH):
        oh0 = g.PH - kh if g.PH > kh else 0
        oh1 = g.H + g.PH - kh if g.H + g.PH - kh < g.OH else g.OH
        if oh1 <= oh0:
            continue
        for kw in range(g.KW):
            src = col + (kh * g.KW + kw) * P
            lo = col_lo(g, kw)
            hi = col_hi(g, kw)
            if lo > 0 or hi < W:
                for oh in range(oh0, oh1):
                    for ow in range(lo):
                        src[oh * W + ow] = 0
                    for ow in range(hi, W):
                        src[oh * W + ow] = 0
            start = (oh0 + kh - g.PH) * W + kw - g.PW
            _run_in_plane(start, (oh1 - oh0) * W, P, &s, &e)
            src = src + oh0 * W + s
            dst = xc + start + s
            if floating is float:
                tod_add_f32(dst, src, e - s)
            else:
                for t in range(e - s):
                    dst[t] += src[t]


cdef void _im2col_channel(const floating* xc, floating* col, const Geom* g) noexcept nogil:
    """Columns of one channel: rows kh*KW + kw, each OH*OW long.

    Every output row is one short run of the input (``kernels/simd/float_rows.h`` moves it
    with masked vector loads and stores in float32).
    """
    cdef Py_ssize_t kh, kw, oh, ow, ih, lo, hi, base
    cdef floating* dst
    for kh in range(g.KH):
        for kw in range(g.KW):
            lo = col_lo(g, kw)
            hi = col_hi(g, kw)
            if hi < lo:
                hi = lo
            for oh in range(g.OH):
                dst = col + ((kh * g.KW + kw) * g.OH + oh) * g.OW
                ih = oh * g.SH - g.PH + kh
                if ih < 0 or ih >= g.H:
                    memset(dst, 0, g.OW * sizeof(floating))
                    continue
                base = ih * g.W + kw - g.PW  # pixel read by ow is base + ow*SW
                if floating is float:
                    tod_im2col_row_f32(dst, xc + base, lo, hi, g.OW, g.SW)
                    continue
                for ow in range(lo):
                    dst[ow] = 0
                if g.SW == 1:
                    if hi > lo:
                        memcpy(dst + lo, xc + base + lo, (hi - lo) * sizeof(floating))
                else:
                    for ow in range(lo, hi):
                        dst[ow] = xc[base + ow * g.SW]
                for ow in range(hi, g.OW):
                    dst[ow] = 0


cdef void _col2im_channel(const floating* col, floating* xc, const Geom* g) noexcept nogil:
    """Add the columns of one channel back into its (zeroed) H x W plane."""
    cdef Py_ssize_t kh, kw, oh, ow, ih, lo, hi, base
    cdef const floating* src
    for kh in range(g.KH):
        for kw in range(g.KW):
            lo = col_lo(g, kw)
            hi = col_hi(g, kw)
            for oh in range(g.OH):
                ih = oh * g.SH - g.PH + kh
                if ih < 0 or ih >= g.H:
                    continue
                src = col + ((kh * g.KW + kw) * g.OH + oh) * g.OW
                base = ih * g.W + kw - g.PW
                if floating is float:
                    tod_col2im_row_f32(xc + base, src, lo, hi, g.SW)
                    continue
                for ow in range(lo, hi):
                    xc[base + ow * g.SW] += src[ow]


cdef void _im2col_image(const floating* x, floating* cols, Py_ssize_t C, const Geom* g,
                        int nthreads) noexcept nogil:
    cdef Py_ssize_t c
    cdef Py_ssize_t plane = g.H * g.W, rows = g.KH * g.KW * g.OH * g.OW
    cdef bint same = _same_stride1(g)
    for c in prange(C, num_threads=nthreads, schedule="static"):
        if same:
            _im2col_channel_same(x + c * plane, cols + c * rows, g)
        else:
            _im2col_channel(x + c * plane, cols + c * rows, g)


cdef void _col2im_image(floating* cols, floating* x, Py_ssize_t C, const Geom* g,
                        int nthreads, bint scratch) noexcept nogil:
    """x = col2im(cols); with ``scratch`` the columns may be overwritten (faster path)."""
    cdef Py_ssize_t c
    cdef Py_ssize_t plane = g.H * g.W, rows = g.KH * g.KW * g.OH * g.OW
    cdef bint same = scratch and _same_stride1(g)
    memset(x, 0, C * plane * sizeof(floating))
    for c in prange(C, num_threads=nthreads, schedule="static"):
        if same:
            _col2im_channel_same(cols + c * rows, x + c * plane, g)
        else:
            _col2im_channel(cols + c * rows, x + c * plane, g)


cdef inline void* cnp_data(a):
    """Address of the first element of a C-contiguous numpy array."""
    cdef float[::1] v = a.reshape(-1)
    return &v[0]


cdef Geom _geom(g):
    return make_geom(g.H, g.W, g.KH, g.KW, g.SH, g.SW, g.PH, g.PW, g.OH, g.OW)


cdef bint _is_pointwise(const Geom* g) noexcept:
    """1x1 kernel, stride 1, no padding: im2col would be the identity."""
    return (g.KH == 1 and g.KW == 1 and g.SH == 1 and g.SW == 1
            and g.PH == 0 and g.PW == 0)


def im2col(x, kernel_size, stride=1, padding=0):
    """Unfold sliding windows into columns; see ``tinyodl.reference.conv.im2col``."""
    x = check_float("im2col", "x", x, 4)
    kh, kw, sh, sw, ph, pw, oh, ow = window_geometry("im2col", x.shape, kernel_size,
                                                     stride, padding)
    n, c, h, w = x.shape
    x = np.ascontiguousarray(x)
    cols = np.empty((n, c * kh * kw, oh * ow), dtype=x.dtype)
    cdef Geom geo = make_geom(h, w, kh, kw, sh, sw, ph, pw, oh, ow)
    if x.dtype == np.float32:
        _im2col_batch[float](x, cols, &geo)
    else:
        _im2col_batch[double](x, cols, &geo)
    return cols


cdef void _im2col_batch(const floating[:, :, :, ::1] x, floating[:, :, ::1] cols,
                        const Geom* g) noexcept:
    cdef Py_ssize_t n, N = x.shape[0], C = x.shape[1]
    cdef int nt = _num_threads
    if N == 0 or C == 0:
        return
    with nogil:
        for n in range(N):
            _im2col_image(&x[n, 0, 0, 0], &cols[n, 0, 0], C, g, nt)


def col2im(cols, x_shape, kernel_size, stride=1, padding=0):
    """Fold columns back into an image; see ``tinyodl.reference.conv.col2im``."""
    cols = check_float("col2im", "cols", cols, 3)
    n, c, h, w = check_shape4("col2im", "x_shape", x_shape)
    kh, kw, sh, sw, ph, pw, oh, ow = window_geometry("col2im", x_shape, kernel_size,
                                                     stride, padding)
    expected = (n, c * kh * kw, oh * ow)
    if cols.shape != expected:
        raise ValueError(f"col2im: cols must have shape {expected}, got {cols.shape}")
    cols = np.ascontiguousarray(cols)
    x = np.zeros((n, c, h, w), dtype=cols.dtype)
    cdef Geom geo = make_geom(h, w, kh, kw, sh, sw, ph, pw, oh, ow)
    if cols.dtype == np.float32:
        _col2im_batch[float](cols, x, &geo)
    else:
        _col2im_batch[double](cols, x, &geo)
    return x


cdef void _col2im_batch(const floating[:, :, ::1] cols, floating[:, :, :, ::1] x,
                        const Geom* g) noexcept:
    cdef Py_ssize_t n, N = x.shape[0], C = x.shape[1]
    cdef int nt = _num_threads
    if N == 0 or C == 0:
        return
    with nogil:
        for n in range(N):
            _col2im_image(<floating*>&cols[n, 0, 0], &x[n, 0, 0, 0], C, g, nt, False)


# ---------------------------------------------------------------------------------------
# general (grouped) convolution: im2col + one GEMM per image and group
# ---------------------------------------------------------------------------------------

#: (available, MR, NR, rows of a K block) of the float32 micro-kernel of
#: kernels/simd/float_gemm.h; tinyodl/memory/_rules.py reads it to size the scratch.
SGEMM_TILE = (bool(TOD_HAVE_SGEMM), TOD_SMR, TOD_SNR, 256)


def _use_implicit_gemm(x, groups, g):
    """float32, no groups, stride 1, OH = H and OW = W, a SIMD build: kernels/simd/float_gemm.h."""
    return (TOD_HAVE_SGEMM and x.dtype == np.float32 and groups == 1 and g.SH == 1
            and g.SW == 1 and g.OH == g.H and g.OW == g.W and g.KH <= 16 and g.KW <= 16
            and g.C * g.KH * g.KW >= 64)  # a few taps (first layers): im2col + BLAS is faster


def _conv_same(x, w, b, ph, pw):
    """conv2d of float32 x (N, C, H, W) with w (F, C, KH, KW), stride 1, output H x W."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t F = w.shape[0], KH = w.shape[2], KW = w.shape[3], K = C * KH * KW
    cdef Py_ssize_t panels = (N * H * W + TOD_SNR - 1) // TOD_SNR, pan, tid
    cdef Py_ssize_t PH = ph, PW = pw
    out = np.empty((N, F, H, W), dtype=np.float32)
    apack = np.empty(((F + TOD_SMR - 1) // TOD_SMR) * K * TOD_SMR, dtype=np.float32)
    cdef const float[:, :, :, ::1] xv = x
    cdef const float[:, :, :, ::1] wv = w
    cdef float[::1] av = apack
    cdef float[:, :, :, ::1] ov = out
    cdef const float* bp = NULL
    cdef const float[::1] bv
    if b is not None:
        bv = b
        bp = &bv[0]
    # per thread: one block of an implicit-im2col panel (KC x NR) and the F x NR tiles
    cdef Py_ssize_t kc = tod_conv_cblock(KH, KW) * KH * KW
    cdef Py_ssize_t tiles = (F + TOD_SMR - 1) // TOD_SMR * TOD_SMR * TOD_SNR
    scratch = np.empty((_num_threads, kc * TOD_SNR + tiles), dtype=np.float32)
    cdef float[:, ::1] sv = scratch
    tod_pack_filters_f32(&wv[0, 0, 0, 0], F, K, &av[0])
    with nogil:
        for pan in prange(panels, num_threads=_num_threads, schedule="static"):
            tid = threadid()
            tod_conv_same_f32(&xv[0, 0, 0, 0], N, C, H, W, KH, KW, PH, PW, &av[0], F, bp,
                              &ov[0, 0, 0, 0], pan, pan + 1, &sv[tid, 0],
                              &sv[tid, kc * TOD_SNR])
    return out


cdef void _im2col_rows_f32(const float* x, float* cols, const Geom* g, Py_ssize_t r0,
                           Py_ssize_t r1) noexcept nogil:
    """Rows [r0, r1) of one float32 image's columns: row c*KH*KW + kh*KW + kw, OH*OW long
    (the same values as :func:`_im2col_channel`, for any range of rows)."""
    cdef Py_ssize_t r, t, kh, kw, oh, ih, lo, hi, taps = g.KH * g.KW
    cdef const float* xc
    cdef float* dst
    for r in range(r0, r1):
        t = r % taps
        kh = t // g.KW
        kw = t % g.KW
        xc = x + (r // taps) * g.H * g.W
        lo = col_lo(g, kw)
        hi = col_hi(g, kw)
        if hi < lo:
            hi = lo
        for oh in range(g.OH):
            dst = cols + (r * g.OH + oh) * g.OW
            ih = oh * g.SH - g.PH + kh
            if ih < 0 or ih >= g.H:
                memset(dst, 0, g.OW * sizeof(float))
            else:
                tod_im2col_row_f32(dst, xc + ih * g.W + kw - g.PW, lo, hi, g.OW, g.SW)


#: images whose dout is transposed together by the weight gradient (two barriers per group)
DW_IMAGES = 8


def _weight_grad_tiled(dout, x, w_shape, g):
    """dW of a float32 convolution without groups on the register tiles of float_linear.h.

    dW^T (K x F) += cols . dout^T image after image, the K rows cut into one range of whole
    MR-row blocks per OpenMP thread; each thread builds the im2col rows (K x P) of its own
    range only and multiplies them while they are in its cache. dout is transposed (P x F
    per image) by all the threads for :data:`DW_IMAGES` images at a time, in 16-pixel
    blocks. The K x F sum is transposed into dW at the end. One OpenMP region for the whole
    batch, two barriers per group of images. Each element of dW is summed by one thread,
    image after image, whatever the thread count: the same bits on any number of threads.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], F = w_shape[0]
    cdef Py_ssize_t P = g.OH * g.OW, K = C * g.KH * g.KW, ci, n0, nb, i, q, f, p, p0, t, k0, k1
    cdef Py_ssize_t blocks = (K + TOD_SMR - 1) // TOD_SMR, panels = (F + TOD_SNR - 1) // TOD_SNR
    cdef Py_ssize_t B = N if N < DW_IMAGES else DW_IMAGES, pblocks = (P + 15) // 16
    cdef Geom geo = _geom(g)
    cdef bint direct = _is_pointwise(&geo)
    cdef int nt = _num_threads if _num_threads < blocks else <int>blocks
    cols = np.empty((K, P), dtype=np.float32) if not direct else None
    dout_t = np.empty((B, P, F), dtype=np.float32)
    dw_t = np.zeros((K, F), dtype=np.float32)
    cdef const float[:, :, :, ::1] xv = x
    cdef const float[:, :, ::1] dv = dout.reshape(N, F, P)
    cdef float* cp = NULL
    if not direct:
        cp = <float*>cnp_data(cols)
    cdef float[:, :, ::1] tv = dout_t
    cdef float[:, ::1] wv = dw_t
    cdef const float* a
    with nogil, parallel(num_threads=nt):
        for ci in range((N + B - 1) // B):
            n0 = ci * B
            nb = N - n0 if N - n0 < B else B
            for q in prange(nb * pblocks, schedule="static"):  # (image, 16 pixels): in cache
                i = q // pblocks
                p0 = (q % pblocks) * 16
                for f in range(F):
                    for p in range(p0, P if P < p0 + 16 else p0 + 16):
                        tv[i, p, f] = dv[n0 + i, f, p]
            tod_team_barrier()  # dout^T complete before anyone multiplies by it
            for t in prange(nt, schedule="static"):
                k0 = blocks * t // nt * TOD_SMR
                k1 = blocks * (t + 1) // nt * TOD_SMR
                k1 = K if k1 > K else k1
                for i in range(nb):
                    if direct:
                        a = &xv[n0 + i, 0, 0, 0]  # (C, P) is already the column matrix
                    else:
                        _im2col_rows_f32(&xv[n0 + i, 0, 0, 0], cp, &geo, k0, k1)
                        a = cp
                    tod_sgemm_block(K, F, P, a, P, 1, &tv[i, 0, 0], F, &wv[0, 0], F, 0, 1, k0,
                                    k1, 0, panels)
            tod_team_barrier()  # everyone is done with these dout^T before the next ones
    return np.ascontiguousarray(dw_t.T).reshape(w_shape)


def _use_images_tiled(x, groups, g):
    """float32 without groups, a few taps per output (K < 64: first layers), a SIMD build:
    one image per OpenMP thread, im2col + the register tiles of float_linear.h. The result
    does not depend on the number of threads (each image is one sequence of tiles)."""
    return (TOD_HAVE_SGEMM and x.dtype == np.float32 and groups == 1
            and not (g.KH == 1 and g.KW == 1 and g.SH == 1 and g.SW == 1 and g.PH == 0
                     and g.PW == 0 and g.PB == 0 and g.PR == 0)
            and g.C * g.KH * g.KW < 64)


def _forward_images_tiled(x, w, b, out, g):
    """conv2d forward per image in parallel: out[n] (F x P) = W (F x K) . im2col(x[n])."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], F = w.shape[0], n, f, p, tid
    cdef Py_ssize_t P = g.OH * g.OW, K = C * g.KH * g.KW
    cdef Py_ssize_t panels = (P + TOD_SNR - 1) // TOD_SNR
    cdef Geom geo = _geom(g)
    cdef int nt = _num_threads
    buf = np.empty((nt, K * P), dtype=np.float32)
    cdef float[:, ::1] bv = buf
    cdef const float[:, :, :, ::1] xv = x
    cdef const float[:, :, :, ::1] wv = w
    cdef const float[::1] bias = b
    cdef float[:, :, :, ::1] ov = out
    cdef float* o
    with nogil:
        for n in prange(N, num_threads=nt, schedule="static"):
            tid = threadid()
            _im2col_image(&xv[n, 0, 0, 0], &bv[tid, 0], C, &geo, 1)
            o = &ov[n, 0, 0, 0]
            tod_sgemm_block(F, P, K, &wv[0, 0, 0, 0], K, 1, &bv[tid, 0], P, o, P, 0, 0, 0, F,
                            0, panels)
            for f in range(F):
                for p in range(P):
                    o[f * P + p] = o[f * P + p] + bias[f]


def _backward_input_images_tiled(dout, w, dx, g):
    """dx[n] = col2im(W^T (K x F) . dout[n] (F x P)), one image per OpenMP thread."""
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], F = w.shape[0], n, tid
    cdef Py_ssize_t P = g.OH * g.OW, K = C * g.KH * g.KW
    cdef Py_ssize_t panels = (P + TOD_SNR - 1) // TOD_SNR
    cdef Geom geo = _geom(g)
    cdef int nt = _num_threads
    buf = np.empty((nt, K * P), dtype=np.float32)
    cdef float[:, ::1] bv = buf
    cdef const float[:, :, :, ::1] dv = dout
    cdef const float[:, :, :, ::1] wv = w
    cdef float[:, :, :, ::1] xv = dx
    with nogil:
        for n in prange(N, num_threads=nt, schedule="static"):
            tid = threadid()
            tod_sgemm_block(K, P, F, &wv[0, 0, 0, 0], 1, K, &dv[n, 0, 0, 0], P, &bv[tid, 0], P,
                            0, 0, 0, K, 0, panels)
            _col2im_image(&bv[tid, 0], &xv[n, 0, 0, 0], C, &geo, 1, True)


cdef void _forward_gemm(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                        const floating[::1] b, bint has_bias, floating[:, :, :, ::1] out,
                        int groups, const Geom* g) noexcept:
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], F = w.shape[0]
    cdef Py_ssize_t n, f, p, G
    cdef int P = g.OH * g.OW, Fg = F // groups, K = (C // groups) * g.KH * g.KW
    cdef bint direct = _is_pointwise(g)
    cdef int nt = _num_threads
    cdef floating beta = 1 if has_bias else 0
    cdef floating[:, ::1] buf
    cdef const floating* cols
    cdef floating* o
    if not direct:
        buf = np.empty((C * g.KH * g.KW, P), dtype=np.float32 if floating is float else np.float64)
    with nogil:
        for n in range(N):
            if direct:
                cols = &x[n, 0, 0, 0]  # (C, H*W) is already the column matrix
            else:
                _im2col_image(&x[n, 0, 0, 0], &buf[0, 0], C, g, nt)
                cols = &buf[0, 0]
            o = &out[n, 0, 0, 0]
            if has_bias:
                for f in range(F):
                    for p in range(P):
                        o[f * P + p] = b[f]
            for G in range(groups):
                # out_g (Fg, P) = w_g (Fg, K) @ cols_g (K, P); BLAS sees the transposes
                gemm(c"N", c"N", P, Fg, K, 1, cols + G * K * P, P, &w[G * Fg, 0, 0, 0], K,
                     beta, o + G * Fg * P, P)


cdef void _backward_input_gemm(const floating[:, :, :, ::1] dout,
                               const floating[:, :, :, ::1] w,
                               floating[:, :, :, ::1] dx, int groups,
                               const Geom* g) noexcept:
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], F = w.shape[0]
    cdef Py_ssize_t n, G
    cdef int P = g.OH * g.OW, Fg = F // groups, K = (C // groups) * g.KH * g.KW
    cdef bint direct = _is_pointwise(g)
    cdef int nt = _num_threads
    cdef floating[:, ::1] buf
    cdef floating* dcols
    if not direct:
        buf = np.empty((C * g.KH * g.KW, P), dtype=np.float32 if floating is float else np.float64)
    with nogil:
        for n in range(N):
            dcols = &dx[n, 0, 0, 0] if direct else &buf[0, 0]
            for G in range(groups):
                # dcols_g (K, P) = w_g.T (K, Fg) @ dout_g (Fg, P)
                gemm(c"N", c"T", P, K, Fg, 1, &dout[n, G * Fg, 0, 0], P,
                     &w[G * Fg, 0, 0, 0], K, 0, dcols + G * K * P, P)
            if not direct:
                _col2im_image(&buf[0, 0], &dx[n, 0, 0, 0], C, g, nt, True)


cdef void _backward_weight_gemm(const floating[:, :, :, ::1] dout,
                                const floating[:, :, :, ::1] x,
                                floating[:, :, :, ::1] dw, int groups,
                                const Geom* g) noexcept:
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], F = dw.shape[0]
    cdef Py_ssize_t n, G
    cdef int P = g.OH * g.OW, Fg = F // groups, K = (C // groups) * g.KH * g.KW
    cdef bint direct = _is_pointwise(g)
    cdef int nt = _num_threads
    cdef floating[:, ::1] buf
    cdef const floating* cols
    if not direct:
        buf = np.empty((C * g.KH * g.KW, P), dtype=np.float32 if floating is float else np.float64)
    with nogil:
        for n in range(N):
            if direct:
                cols = &x[n, 0, 0, 0]
            else:
                _im2col_image(&x[n, 0, 0, 0], &buf[0, 0], C, g, nt)
                cols = &buf[0, 0]
            for G in range(groups):
                # dw_g (Fg, K) += dout_g (Fg, P) @ cols_g.T (P, K); beta = 1 sums over n
                gemm(c"T", c"N", K, Fg, P, 1, cols + G * K * P, P, &dout[n, G * Fg, 0, 0], P,
                     1, &dw[G * Fg, 0, 0, 0], K)


# ---------------------------------------------------------------------------------------
# depthwise convolution (groups == C == F): direct loops on phase planes
# (kernels/simd/float_dw.h explains the layout; scratch per thread comes from numpy)
# ---------------------------------------------------------------------------------------

cdef tod_dw_geom _dw_geom(const Geom* g) noexcept:
    return tod_dw_make_geom(g.H, g.W, g.KH, g.KW, g.SH, g.SW, g.PH, g.PW, g.OH, g.OW)


def _dw_scratch(dtype, Py_ssize_t per_thread):
    """Per-thread scratch rows, from numpy (tracemalloc sees them; MemoryError if too big)."""
    return np.empty((_num_threads, max(per_thread, 1)), dtype=dtype)


cdef void _dw_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                      const floating[::1] b, floating[:, :, :, ::1] out,
                      const Geom* geo) noexcept:
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], i, tid
    cdef tod_dw_geom g = _dw_geom(geo)
    cdef Py_ssize_t planes_size = g.SH * g.SW * g.Hq * g.Wq, virt = g.OH * g.Wq
    dtype = np.float32 if floating is float else np.float64
    cdef floating[:, ::1] scratch = _dw_scratch(dtype, planes_size + virt)
    cdef floating* ph
    with nogil:
        for i in prange(N * C, num_threads=_num_threads, schedule="static"):
            tid = threadid()
            ph = &scratch[tid, 0]
            if floating is float:
                tod_dw_planes_f32(&x[i // C, i % C, 0, 0], &g, ph)
                tod_dw_forward_f32(ph, &w[i % C, 0, 0, 0], b[i % C], &g, ph + planes_size,
                                   &out[i // C, i % C, 0, 0])
            else:
                tod_dw_planes_f64(&x[i // C, i % C, 0, 0], &g, ph)
                tod_dw_forward_f64(ph, &w[i % C, 0, 0, 0], b[i % C], &g, ph + planes_size,
                                   &out[i // C, i % C, 0, 0])


cdef void _dw_backward_input(const floating[:, :, :, ::1] dout,
                             const floating[:, :, :, ::1] w,
                             floating[:, :, :, ::1] dx, const Geom* geo) noexcept:
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], i, tid
    cdef tod_dw_geom g = _dw_geom(geo)
    cdef Py_ssize_t planes_size = g.SH * g.SW * g.Hq * g.Wq, virt = g.OH * g.Wq
    dtype = np.float32 if floating is float else np.float64
    cdef floating[:, ::1] scratch = _dw_scratch(dtype, planes_size + virt)
    cdef floating* sp
    with nogil:
        for i in prange(N * C, num_threads=_num_threads, schedule="static"):
            tid = threadid()
            sp = &scratch[tid, 0]
            if floating is float:
                tod_dw_backward_input_f32(&dout[i // C, i % C, 0, 0], &w[i % C, 0, 0, 0], &g,
                                          sp + planes_size, sp, &dx[i // C, i % C, 0, 0])
            else:
                tod_dw_backward_input_f64(&dout[i // C, i % C, 0, 0], &w[i % C, 0, 0, 0], &g,
                                          sp + planes_size, sp, &dx[i // C, i % C, 0, 0])


cdef void _dw_backward_weight(const floating[:, :, :, ::1] dout,
                              const floating[:, :, :, ::1] x,
                              floating[:, :, :, ::1] dw, const Geom* geo) noexcept:
    """dw[c] = sum over images of the tap-wise products, one channel per iteration."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], c, n, tid
    cdef tod_dw_geom g = _dw_geom(geo)
    cdef Py_ssize_t planes_size = g.SH * g.SW * g.Hq * g.Wq, virt = g.OH * g.Wq
    cdef Py_ssize_t wacc_size = g.KH * g.KW * virt
    dtype = np.float32 if floating is float else np.float64
    cdef floating[:, ::1] scratch = _dw_scratch(dtype, planes_size + virt + wacc_size)
    cdef floating* ph
    cdef floating* dv
    cdef floating* wa
    with nogil:
        for c in prange(C, num_threads=_num_threads, schedule="static"):
            tid = threadid()
            ph = &scratch[tid, 0]
            dv = ph + planes_size
            wa = dv + virt
            memset(wa, 0, wacc_size * sizeof(floating))
            for n in range(N):
                if floating is float:
                    tod_dw_planes_f32(&x[n, c, 0, 0], &g, ph)
                    tod_dw_virtual_f32(&dout[n, c, 0, 0], &g, dv)
                    tod_dw_weight_accumulate_f32(dv, ph, &g, wa)
                else:
                    tod_dw_planes_f64(&x[n, c, 0, 0], &g, ph)
                    tod_dw_virtual_f64(&dout[n, c, 0, 0], &g, dv)
                    tod_dw_weight_accumulate_f64(dv, ph, &g, wa)
            if floating is float:
                tod_dw_weight_reduce_f32(wa, &g, &dw[c, 0, 0, 0])
            else:
                tod_dw_weight_reduce_f64(wa, &g, &dw[c, 0, 0, 0])


# ---------------------------------------------------------------------------------------
# public API (validation shared with the numpy reference)
# ---------------------------------------------------------------------------------------

def _is_depthwise(g):
    return g.groups == g.C == g.F and g.groups > 1


def conv2d_forward(x, w, b=None, stride=1, padding=0, groups=1):
    """Grouped 2-D convolution; see ``tinyodl.reference.conv.conv2d_forward``."""
    fn = "conv2d_forward"
    x = check_float(fn, "x", x, 4)
    w = check_float(fn, "w", w, 4, like=x)
    g = conv_geometry(fn, x.shape, w.shape, stride, padding, groups)
    has_bias = b is not None
    if has_bias:
        b = check_float(fn, "b", b, 1, like=x)
        if b.shape != (g.F,):
            raise ValueError(f"{fn}: b must have shape ({g.F},), got {b.shape}")
        b = np.ascontiguousarray(b)
    else:
        b = np.zeros(g.F, dtype=x.dtype)
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w)
    if g.N == 0 or g.F == 0:
        return np.empty((g.N, g.F, g.OH, g.OW), dtype=x.dtype)
    if not _is_depthwise(g) and _use_implicit_gemm(x, g.groups, g):
        return _conv_same(x, w, b if has_bias else None, g.PH, g.PW)  # allocates its output
    out = np.empty((g.N, g.F, g.OH, g.OW), dtype=x.dtype)
    cdef Geom geo = _geom(g)
    single = x.dtype == np.float32
    if _is_depthwise(g):
        if single:
            _dw_forward[float](x, w, b, out, &geo)
        else:
            _dw_forward[double](x, w, b, out, &geo)
    elif _use_images_tiled(x, g.groups, g):
        _forward_images_tiled(x, w, b, out, g)
    elif single:
        _forward_gemm[float](x, w, b, has_bias, out, g.groups, &geo)
    else:
        _forward_gemm[double](x, w, b, has_bias, out, g.groups, &geo)
    return out


def conv2d_backward_input(dout, w, x_shape, stride=1, padding=0, groups=1):
    """Gradient w.r.t. the input; see ``tinyodl.reference.conv.conv2d_backward_input``."""
    fn = "conv2d_backward_input"
    dout = check_float(fn, "dout", dout, 4)
    w = check_float(fn, "w", w, 4, like=dout)
    x_shape = check_shape4(fn, "x_shape", x_shape)
    g = conv_geometry(fn, x_shape, w.shape, stride, padding, groups)
    check_dout(fn, dout, g)
    return _backward_input(np.ascontiguousarray(dout), np.ascontiguousarray(w), g)


def _backward_input(dout, w, g):
    """conv2d_backward_input on validated, contiguous arrays (also used by int8_backward)."""
    x_shape = (g.N, g.C, g.H, g.W)
    if g.N * g.C * g.H * g.W == 0 or g.F == 0:
        return np.zeros(x_shape, dtype=dout.dtype)
    if not _is_depthwise(g) and _use_implicit_gemm(dout, g.groups, g) and g.C >= TOD_SMR:
        # stride 1, same size: dx is the convolution of dout with the flipped, transposed
        # filters (W'[c, f, i, j] = W[f, c, KH-1-i, KW-1-j]) and the same padding
        wt = np.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
        return _conv_same(dout, wt, None, g.KH - 1 - g.PH, g.KW - 1 - g.PW)
    dx = np.zeros(x_shape, dtype=dout.dtype)
    cdef Geom geo = _geom(g)
    single = dout.dtype == np.float32
    if _is_depthwise(g):
        if single:
            _dw_backward_input[float](dout, w, dx, &geo)
        else:
            _dw_backward_input[double](dout, w, dx, &geo)
    elif _use_images_tiled(dout, g.groups, g):
        _backward_input_images_tiled(dout, w, dx, g)
    elif single:
        _backward_input_gemm[float](dout, w, dx, g.groups, &geo)
    else:
        _backward_input_gemm[double](dout, w, dx, g.groups, &geo)
    return dx


def conv2d_backward_weight(dout, x, w_shape, stride=1, padding=0, groups=1):
    """Gradient w.r.t. the weights; see ``tinyodl.reference.conv.conv2d_backward_weight``."""
    fn = "conv2d_backward_weight"
    dout = check_float(fn, "dout", dout, 4)
    x = check_float(fn, "x", x, 4, like=dout)
    w_shape = check_shape4(fn, "w_shape", w_shape)
    g = conv_geometry(fn, x.shape, w_shape, stride, padding, groups)
    check_dout(fn, dout, g)
    return _backward_weight(np.ascontiguousarray(dout), np.ascontiguousarray(x), w_shape, g)


def _backward_weight(dout, x, w_shape, g):
    """conv2d_backward_weight on validated, contiguous arrays (also used by int8_backward)."""
    dw = np.zeros(w_shape, dtype=dout.dtype)
    if dw.size == 0 or g.N == 0:
        return dw
    cdef Geom geo = _geom(g)
    single = dout.dtype == np.float32
    if _is_depthwise(g):
        if single:
            _dw_backward_weight[float](dout, x, dw, &geo)
        else:
            _dw_backward_weight[double](dout, x, dw, &geo)
    elif (TOD_HAVE_SGEMM and single and g.groups == 1 and g.F >= TOD_SNR // 2
            and (g.C * g.KH * g.KW >= 256 or g.C * g.KH * g.KW < 64)):
        # enough rows of K to pay for transposing dout, or the few taps of a first layer
        # (where BLAS, called per image, splits badly among threads)
        return _weight_grad_tiled(dout, x, w_shape, g)
    elif single:
        _backward_weight_gemm[float](dout, x, dw, g.groups, &geo)
    else:
        _backward_weight_gemm[double](dout, x, dw, g.groups, &geo)
    return dw
