# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Integer-only int8 kernels, compiled (TFLite / CMSIS-NN semantics).

Chapter 03. Same API and bit-identical results as :mod:`tinyodl.reference.int8`; read
that module for the maths. How this one is fast (``kernels/gemm_steps.pyx`` builds the
same GEMM up step by step, and ``tinyodl bench kernels --gemm-steps`` times each step):

1. **One micro-kernel, three paths.** Every product runs through a micro-kernel of
   ``kernels/simd/int8_ukernels.h`` that fills an MR x NR tile of int32 accumulators using
   the CPU's *widened multiply-add*: AVX-512 VNNI ``vpdpbusd`` (four int8 products summed
   into an int32 lane, 16 lanes), AVX2 ``vpmaddubsw`` + ``vpmaddwd``, or portable C. The
   best path the CPU supports is chosen at import; :func:`set_simd_path` forces one (the
   tests run every path and compare it bit for bit with the numpy reference).
2. **Pack.** The "vector" operand is packed into panels of NR columns, four k per column
   side by side ([K/4][NR][4] bytes): the layout those instructions read. The "broadcast"
   operand is read in place, four bytes at a time.
3. **Signs and zero points outside the loop.** ``vpdpbusd`` multiplies unsigned by signed
   bytes, so the portable and VNNI paths store one operand as ``v + 128`` (v XOR 0x80) --
   the activations: the panel of a convolution, the rows of a linear layer's input -- and
   subtract ``128 * sum_k w`` afterwards, a per-channel constant; the AVX2 path keeps int8
   and uses the sign trick (``|a| * (b * sign(a))``, exact because the weights are in
   [-127, 127]). The zero points give ``sum_k (a - za)(b - zb) = sum ab - zb rowsum(a) -
   za colsum(b) + K za zb``: per-row or per-column constants, folded into the bias.
4. **Convolution = GEMM on the fly.** im2col is done *one panel of NR output pixels at a
   time*, straight from the NCHW input into the packed layout (a tap in the padding reads
   the input zero point, which contributes nothing; ``kernels/simd/int8_im2col.h``), and
   multiplied by every filter while it is in L1, one MR x NR block of int32 accumulators
   at a time, requantized as soon as it completes. The batch is one long row of pixels, so
   7x7 maps fill whole panels too. Scratch, per thread: one panel (K x NR bytes) and one
   block of accumulators (CMSIS-NN keeps a few im2col columns the same way), plus the
   weights in (i, j, c) order -- never the im2col matrix nor a copy of the input. 1x1
   stride-1 convolutions read their weight rows in place.
5. **Depthwise** convolutions are direct loops: each (image, channel) plane is split into
   stride x stride "phase planes" of ``x - zp`` (int16), so that every filter tap is one
   long vectorized multiply-add over the whole output plane, whatever its size and stride.
6. **Fused epilogue.** bias, MultiplyByQuantizedMultiplier (both roundings), output zero
   point and clamp run on the tile while it is in cache; the C is compiled once per path
   (``kernels/simd/int8_epilogue.h``) so the compiler vectorizes it for each ISA. On the
   VNNI path ``linear_s8`` requantizes each tile while it is still in registers (16 lanes
   per instruction, ``kernels/simd/int8_requant.h``) and skips the saturating bias add when
   ``|acc| + |bias|`` provably fits in int32: with 16-256 inputs per output the
   requantization costs about as much as the multiply-adds (AVX2 has a 4 x 16 twin of the
   tile). When ``|acc + bias| < 2^30``
   and no channel shifts left (a multiplier below 1, the usual case), a shorter route gives
   the same bits: both roundings folded into one 64-bit product and one shift per output,
   the bias folded into per-channel constants set up once per call, then 64 outputs at a
   time through saturating packs (zero point, clamp, int8).
7. **Threads.** Panels are independent: ``prange`` over panels (GEMM, conv) or planes
   (depthwise), ``set_num_threads(n)`` OpenMP threads (default 1).

All scratch comes from numpy, so tracemalloc sees it (``docs/memory.md``) and a failed
allocation raises ``MemoryError``. Arguments are checked in C for the plain valid case; any
other case goes through the reference's checks (``tinyodl/reference/_int8_checks.py``), so
both backends raise the same errors.
"""

import os
import warnings

import numpy as np

cimport numpy as cnp
from cython.parallel cimport parallel, prange, threadid
from libc.stdint cimport INT32_MAX, INT32_MIN, int8_t, int16_t, int32_t, int64_t, uint8_t
from libc.string cimport memcpy, memset

from _int8_simd cimport (
    TOD_ISA_AVX2,
    TOD_ISA_AVX512_VNNI,
    TOD_ISA_PORTABLE,
    tod_best_isa,
    tod_copy_rows_xor,
    tod_dw_phase_planes_s8,
    tod_gemm_path,
    tod_int8_path,
    tod_int8_path_of,
    tod_isa_supported,
    tod_linear_tile_avx2,
    tod_linear_tile_vnni,
    tod_panel_sums_vnni,
    tod_pack_cols,
    tod_pack_pointwise_panel,
    tod_pack_rows,
    tod_rqs16,
    tod_rqs16_prepare,
    tod_linear_tile_vnni_short,
    tod_ukr_fn,
)

cdef extern from *:
    """
    /* A barrier of the enclosing OpenMP team (Cython's prange inside a parallel block ends
       with "omp for nowait"). Nothing without OpenMP. */
    static inline void tod_team_barrier(void) {
    #ifdef _OPENMP
        _Pragma("omp barrier")
    #endif
    }
    """
    void tod_team_barrier() noexcept nogil

cdef extern from "int8_im2col.h" nogil:
    ctypedef struct tod_nchw_geom:
        int64_t C, H, W, KH, KW, SH, SW, PT, PL, OH, OW
    void tod_pack_conv_panel_nchw(const int8_t* x, const tod_nchw_geom* g, int64_t c0,
                                  int64_t Cg, int64_t j0, int64_t ncols, int nr,
                                  uint8_t xor_mask, uint8_t pad, uint8_t fill, int64_t kq,
                                  uint8_t* dst)

from tinyodl.reference import _int8_checks as chk

cnp.import_array()

#: Names of the SIMD paths, indexed by the C enum (portable, AVX2, AVX-512 VNNI).
SIMD_PATHS = ("portable", "avx2", "avx512_vnni")
#: Environment variable that forces a path when the module is imported.
SIMD_ENV = "TINYODL_SIMD"

cdef int _num_threads = 1
cdef tod_int8_path _path


def set_num_threads(int n):
    """Number of OpenMP threads used by this module's ``prange`` loops (default 1)."""
    global _num_threads
    if n < 1:
        raise ValueError(f"set_num_threads: need n >= 1, got {n}")
    _num_threads = n


def simd_paths():
    """The SIMD paths this CPU can run, from the portable C to the fastest."""
    return [name for i, name in enumerate(SIMD_PATHS) if tod_isa_supported(i)]


def get_simd_path():
    """Name of the path every int8 kernel of this module uses now."""
    return SIMD_PATHS[_path.gemm.isa]


def set_simd_path(name=None):
    """Use SIMD path ``name`` ("portable", "avx2", "avx512_vnni"); None picks the best one.

    All paths give bit-identical results; forcing one is for tests and benchmarks.
    """
    global _path
    if name is None:
        _path = tod_int8_path_of(tod_best_isa())
        return
    if name not in SIMD_PATHS:
        raise ValueError(f"set_simd_path: unknown path {name!r}; choose from {SIMD_PATHS}")
    isa = SIMD_PATHS.index(name)
    if not tod_isa_supported(isa):
        raise ValueError(
            f"set_simd_path: this CPU cannot run {name!r}; it supports {simd_paths()}"
        )
    _path = tod_int8_path_of(isa)


def _init_simd_path():
    requested = os.environ.get(SIMD_ENV, "").strip().lower()
    try:
        set_simd_path(requested or None)
    except ValueError as err:
        warnings.warn(f"{SIMD_ENV}={requested!r} ignored: {err}", RuntimeWarning, stacklevel=2)
        set_simd_path(None)


_init_simd_path()


# ---------------------------------------------------------------------------------------
# Fast argument checks. The numpy reference's checks (tinyodl/reference/_int8_checks.py) are
# the specification and produce every error message; they cost tens of microseconds, which
# is most of the call on a small layer. These C-level tests accept only the plain, valid
# case (contiguous arrays of the exact dtypes, Python ints); anything else goes through the
# reference checks, which raise the same errors on both backends.
# ---------------------------------------------------------------------------------------

cdef inline bint _is_int(v, long lo, long hi):
    return type(v) is int and lo <= v <= hi


cdef inline bint _array(a, int typenum, int ndim):
    return (isinstance(a, cnp.ndarray) and cnp.PyArray_TYPE(a) == typenum
            and cnp.PyArray_NDIM(a) == ndim and cnp.PyArray_IS_C_CONTIGUOUS(a))


cdef inline Py_ssize_t _dim(a, int i):
    """``a.shape[i]`` of an ndarray, without building the shape tuple."""
    return cnp.PyArray_DIMS(<cnp.ndarray>a)[i]


cdef bint _weights_ok(w):
    """int8 weights, C-contiguous, none below -127."""
    cdef Py_ssize_t i, n = cnp.PyArray_SIZE(w)
    cdef const int8_t* p = <const int8_t*>cnp.PyArray_DATA(w)
    cdef int8_t lo = 0
    with nogil:
        for i in range(n):
            lo = p[i] if p[i] < lo else lo
    return lo >= -127


cdef bint _requant_ok(Py_ssize_t channels, multiplier, shift, zp_out, act_min, act_max,
                      rounding):
    """int32 (F,) multiplier/shift in range, plain ints and a known rounding."""
    if not (_array(multiplier, cnp.NPY_INT32, 1) and _array(shift, cnp.NPY_INT32, 1)):
        return False
    if _dim(multiplier, 0) != channels or _dim(shift, 0) != channels:
        return False
    if not (_is_int(zp_out, -128, 127) and _is_int(act_min, -128, 127)
            and _is_int(act_max, -128, 127) and act_min <= act_max):
        return False
    if rounding != "double" and rounding != "single":
        return False
    cdef const int32_t* m = <const int32_t*>cnp.PyArray_DATA(multiplier)
    cdef const int32_t* sh = <const int32_t*>cnp.PyArray_DATA(shift)
    cdef Py_ssize_t i
    for i in range(channels):
        if m[i] < 0 or sh[i] < -31 or sh[i] > 30:
            return False
    return True


cdef object _fast_requant(Py_ssize_t channels, multiplier, shift, zp_out, act_min, act_max,
                          rounding):
    """RequantArgs for int32 (F,) multiplier/shift and plain ints, else None."""
    if not _requant_ok(channels, multiplier, shift, zp_out, act_min, act_max, rounding):
        return None
    return chk.RequantArgs(multiplier, shift, zp_out, act_min, act_max,
                           0 if rounding == "double" else 1)


cdef object _fast_bias(bias, Py_ssize_t channels):
    if bias is None:
        return np.zeros(channels, dtype=np.int32)
    if _array(bias, cnp.NPY_INT32, 1) and _dim(bias, 0) == channels:
        return bias
    return None


cdef object _fast_conv_args(x, w, bias, zp_in, zp_out, multiplier, shift, stride, padding,
                            groups, act_min, act_max, rounding):
    """Int8ConvArgs for the plain valid case (int stride/padding/groups), else None."""
    if not (_array(x, cnp.NPY_INT8, 4) and _array(w, cnp.NPY_INT8, 4)
            and _is_int(zp_in, -128, 127) and type(stride) is int and type(padding) is int
            and type(groups) is int and stride >= 1 and padding >= 0 and groups >= 1):
        return None
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t F = w.shape[0], Cg = w.shape[1], KH = w.shape[2], KW = w.shape[3]
    if KH < 1 or KW < 1 or C % groups or F % groups or Cg * groups != C:
        return None
    if Cg * KH * KW * 255 * 127 >= 2**31:
        return None
    cdef Py_ssize_t OH = (H + 2 * padding - KH) // stride + 1
    cdef Py_ssize_t OW = (W + 2 * padding - KW) // stride + 1
    if H + 2 * padding < KH or W + 2 * padding < KW or OH < 1 or OW < 1:
        return None
    if not _weights_ok(w):
        return None
    b = _fast_bias(bias, F)
    rq = _fast_requant(F, multiplier, shift, zp_out, act_min, act_max, rounding)
    if b is None or rq is None:
        return None
    geom = chk.ConvGeometry(N, C, H, W, F, KH, KW, stride, stride, padding, padding, OH, OW,
                            groups, padding, padding)
    return chk.Int8ConvArgs(x, w, b, zp_in, geom, rq)


cdef object _folded_bias(w2d, bias, int64_t za):
    """``bias - za * rowsum(w2d)`` as int64 (F,), summed in C: numpy's casting reduction
    (``w.sum(axis=1, dtype=np.int64)``) allocates a buffer of 8192 int64 values (64 KiB),
    larger than everything else an int8 training step at batch 1 holds."""
    cdef const int8_t[:, ::1] wv = w2d
    cdef const int32_t[::1] bv = np.ascontiguousarray(bias, dtype=np.int32)
    cdef Py_ssize_t F = wv.shape[0], K = wv.shape[1], f, k
    out = np.empty(F, dtype=np.int64)
    cdef int64_t[::1] ov = out
    cdef int64_t s
    with nogil:
        for f in range(F):
            s = 0
            for k in range(K):
                s = s + wv[f, k]
            ov[f] = bv[f] - za * s
    return out


cdef inline Py_ssize_t _cdiv(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return (a + b - 1) // b


cdef object _padded_rows(a, Py_ssize_t k4):
    """``a`` (rows, K) int8 as a C-contiguous (rows, k4) array, zero-padded along K."""
    if a.shape[1] == k4 and a.flags.c_contiguous:
        return a
    out = np.zeros((a.shape[0], k4), dtype=np.int8)
    out[:, : a.shape[1]] = a
    return out


# ---------------------------------------------------------------------------------------
# Requantization
# ---------------------------------------------------------------------------------------


def requantize(acc, multiplier, shift, output_zero_point, act_min=-128, act_max=127,
               rounding="double"):
    """Int32 accumulators (N, F, ...) -> int8, per channel along axis 1. See the reference."""
    acc = chk.check_acc("requantize", acc)
    rq = chk.requant_args(
        "requantize", acc.shape[1], multiplier, shift, output_zero_point, act_min, act_max,
        rounding,
    )
    cdef Py_ssize_t n = acc.shape[0], f = acc.shape[1], s = acc.size // max(n * f, 1)
    out = np.empty((n, f, s), dtype=np.int8)
    if out.size == 0:
        return out.reshape(acc.shape)
    cdef const int32_t[:, :, ::1] a = acc.reshape(n, f, s)
    cdef const int32_t[::1] m0 = rq.multiplier
    cdef const int32_t[::1] sh = rq.shift
    cdef int single = rq.rounding, zp = rq.zp_out, lo = rq.act_min, hi = rq.act_max
    cdef int8_t[:, :, ::1] o = out
    cdef Py_ssize_t row, c
    cdef tod_int8_path p = _path
    with nogil:
        for row in prange(n * f, num_threads=_num_threads, schedule="static"):
            c = row % f
            p.requant_row(&a[row // f, c, 0], s, 0, m0[c], sh[c], single, zp, lo, hi,
                          &o[row // f, c, 0])
    return out.reshape(acc.shape)


# ---------------------------------------------------------------------------------------
# GEMM: a (M, K) broadcast, b packed into column panels
# ---------------------------------------------------------------------------------------

cdef tod_ukr_fn _gemm_kernel(tod_gemm_path* p, a, b):
    """The micro-kernel for two arbitrary int8 operands (AVX2 needs one of them > -128)."""
    if p.ukr_any != NULL:
        return p.ukr_any
    if b.size == 0 or b.min() > -128:
        return p.ukr_vsafe
    if a.size == 0 or a.min() > -128:
        return p.ukr_bsafe
    p[0] = _int8_path_portable().gemm  # both hold -128: the portable path is exact for any
    return p.ukr_any


cdef tod_int8_path _int8_path_portable():
    return tod_int8_path_of(TOD_ISA_PORTABLE)


def gemm_s8(a, b, a_zero_point=0, b_zero_point=0):
    """Exact int8 matrix product with zero points; int32 (M, N). See the reference."""
    a, b, za, zb = chk.gemm_args("gemm_s8", a, b, a_zero_point, b_zero_point)
    cdef Py_ssize_t m = a.shape[0], k = a.shape[1], n = b.shape[1]
    out = np.empty((m, n), dtype=np.int32)
    if m == 0 or n == 0:
        return out
    cdef tod_gemm_path p = _path.gemm
    cdef tod_ukr_fn ukr = _gemm_kernel(&p, a, b)
    cdef Py_ssize_t kq = _cdiv(k, 4), nr = p.nr, mr = p.mr, panels = _cdiv(n, nr)
    cdef int64_t off = 128 if p.xor_mask else 0
    a_pad = _padded_rows(a, 4 * kq)
    bpack = np.empty(max(panels * kq * nr * 4, 1), dtype=np.uint8)
    cdef const int8_t[:, ::1] av = a_pad
    cdef const int8_t[:, ::1] bv = b
    cdef uint8_t[::1] bp = bpack
    if kq:
        tod_pack_cols(&bv[0, 0], n, k, n, nr, p.xor_mask, kq, &bp[0])
    # acc = sum a (b ^ xor) = ab + off rowsum(a); out = ab - zb rowsum(a) - za colsum(b) + K za zb
    rowsum = np.empty(m, dtype=np.int64)
    colsum = np.empty(n, dtype=np.int64)
    cdef int64_t[::1] rs = rowsum
    cdef int64_t[::1] cs = colsum
    cdef int32_t[::1] tmp = np.empty(n, dtype=np.int32)
    cdef tod_int8_path path = _path
    path.rowsum(&av[0, 0], m, 4 * kq, 4 * kq, &rs[0])
    path.colsum(&bv[0, 0], k, n, n, &tmp[0], &cs[0])
    cdef const int64_t[::1] rowc = -(off + zb) * rowsum
    cdef const int64_t[::1] colc = -za * colsum + k * za * zb
    tiles = np.empty((_num_threads, mr * nr), dtype=np.int32)
    cdef int32_t[:, ::1] tv = tiles
    cdef int32_t[:, ::1] o = out
    cdef Py_ssize_t item, items = panels * _cdiv(m, mr), pan, i0, r, jj, width, rows, col0
    cdef int32_t* tile
    with nogil:
        for item in prange(items, num_threads=_num_threads, schedule="static"):
            pan = item % panels
            i0 = (item // panels) * mr
            col0 = pan * nr
            rows = m - i0 if m - i0 < mr else mr
            width = n - col0 if n - col0 < nr else nr
            tile = &tv[threadid(), 0]
            if kq:
                ukr(kq, &av[i0, 0], 4 * kq, rows, &bp[pan * kq * nr * 4], tile, 0)
            else:
                memset(tile, 0, mr * nr * sizeof(int32_t))
            for r in range(rows):
                for jj in range(width):
                    o[i0 + r, col0 + jj] = <int32_t>(tile[r * nr + jj] + rowc[i0 + r]
                                                     + colc[col0 + jj])
    return out


def linear_s8(x, w, bias, input_zero_point, output_zero_point, multiplier, shift,
              act_min=-128, act_max=127, rounding="double"):
    """Int8 fully connected layer, int8 (N, F). See the reference."""
    fn = "linear_s8"
    b_fast = None
    cdef bint fast = False
    cdef int threads = _num_threads
    if (_array(x, cnp.NPY_INT8, 2) and _array(w, cnp.NPY_INT8, 2) and _dim(x, 1) == _dim(w, 1)
            and _dim(w, 1) * 255 * 127 < 2**31 and _is_int(input_zero_point, -128, 127)
            and (threads > 1 or _weights_ok(w))):  # on threads: checked while packing
        b_fast = _fast_bias(bias, _dim(w, 0))
        fast = b_fast is not None and _requant_ok(_dim(w, 0), multiplier, shift,
                                                  output_zero_point, act_min, act_max, rounding)
    cdef int single, zp, lo, hi
    if fast:  # plain valid arguments: no RequantArgs to build (a small layer's call is short)
        bias = b_fast
        single, zp, lo, hi = rounding == "single", output_zero_point, act_min, act_max
    else:
        x, w, bias, input_zero_point = chk.linear_args(fn, x, w, bias, input_zero_point)
        rq = chk.requant_args(fn, w.shape[0], multiplier, shift, output_zero_point, act_min,
                              act_max, rounding)
        multiplier, shift = rq.multiplier, rq.shift
        single, zp, lo, hi = rq.rounding, rq.zp_out, rq.act_min, rq.act_max
    cdef int zp_in = input_zero_point
    cdef Py_ssize_t n = _dim(x, 0), k = _dim(x, 1), f = _dim(w, 0)
    cdef cnp.npy_intp dims[2]
    dims[0], dims[1] = n, f
    out = cnp.PyArray_EMPTY(2, dims, cnp.NPY_INT8, 0)  # np.empty's Python call costs more
    if n == 0 or f == 0:
        return out
    cdef tod_int8_path path = _path
    cdef tod_gemm_path p = path.gemm
    # VNNI and portable: x is the unsigned operand (u8 = x ^ 0x80 = x + 128, a copy padded to
    # whole groups of 4) and the weights stay signed: acc = sum (x + 128) w, one correction
    # per output channel. AVX2: both stay signed (the weights are the safe operand).
    cdef bint bu8 = p.ukr_bu8 != NULL
    cdef tod_ukr_fn ukr = p.ukr_bu8 if bu8 else p.ukr_vsafe
    cdef Py_ssize_t kq = _cdiv(k, 4), nr = p.nr, mr = p.mr, panels = _cdiv(f, nr)
    cdef int64_t off = 128 if bu8 else 0
    cdef bint copy_x = bu8 or 4 * kq != k
    # All scratch in one numpy buffer (a small layer's call is mostly fixed costs), cut into
    # 64-byte aligned pieces: per channel the folded bias (int64), b32 / left / right
    # (int32), on the VNNI path the short route's parameters (_short_params), the tiles of
    # the threads, the packed weights and the copy of x.
    cdef Py_ssize_t o_b32 = _a64(8 * f), o_l = o_b32 + _a64(4 * f), o_r = o_l + _a64(4 * f)
    cdef Py_ssize_t o_q = o_r + _a64(4 * f)
    cdef Py_ssize_t o_t = o_q + (_a64(_cdiv(f, 16) * sizeof(tod_rqs16))
                                 if p.isa == TOD_ISA_AVX512_VNNI else 0)
    cdef Py_ssize_t o_w = o_t + _a64(4 * mr * nr * threads + (panels if threads > 1 else 0))
    cdef Py_ssize_t o_x = o_w + _a64(panels * kq * nr * 4)
    cdef Py_ssize_t total = o_x + (_a64(n * 4 * kq) if copy_x else 0)
    dims[0] = total + 64
    scratch = cnp.PyArray_EMPTY(1, dims, cnp.NPY_UINT8, 0)
    cdef uint8_t* base = <uint8_t*>cnp.PyArray_DATA(scratch)
    base = base + ((64 - (<size_t>base) % 64) % 64)
    cdef int64_t* colb = <int64_t*>base
    cdef int32_t* b32 = <int32_t*>(base + o_b32)
    cdef int32_t* lv = <int32_t*>(base + o_l)
    cdef int32_t* rv = <int32_t*>(base + o_r)
    cdef int32_t* tiles = <int32_t*>(base + o_t)
    cdef uint8_t* wp = base + o_w
    cdef const int8_t* xsrc = <const int8_t*>cnp.PyArray_DATA(x)
    cdef const int8_t* wsrc = <const int8_t*>cnp.PyArray_DATA(w)
    cdef const int8_t* xa = xsrc
    cdef const int32_t* bias_p = <const int32_t*>cnp.PyArray_DATA(bias)
    cdef const int32_t* m0 = <const int32_t*>cnp.PyArray_DATA(multiplier)
    cdef const int32_t* shv = <const int32_t*>cnp.PyArray_DATA(shift)
    cdef int8_t* o = <int8_t*>cnp.PyArray_DATA(out)
    cdef bint fits = True, fused = False, left0 = True
    cdef int nosat = 0  # TOD_RQ_SATURATE / _NOSAT / _SHORT (kernels/simd/int8_requant.h)
    cdef int64_t bmax = 0
    cdef Py_ssize_t t, item, items = panels * _cdiv(n, mr)
    cdef Py_ssize_t chunk = 64, r0
    cdef int8_t wmin = 0
    if threads > 1:
        with nogil:
            wmin = _linear_threads(&path, ukr, bu8, copy_x, threads, n, k, f, kq, zp_in, off,
                                   xsrc, wsrc, base + o_x, wp, tiles, colb, b32, lv, rv,
                                   bias_p, m0, shv, single, zp, lo, hi, o)
        if wmin < -127:  # the reference's checks raise the error
            chk.linear_args(fn, x, w, bias, input_zero_point)
        return out
    with nogil:
        if copy_x:
            xa = <const int8_t*>(base + o_x)
            if threads == 1:
                tod_copy_rows_xor(xsrc, n, k, k, 0x80 if bu8 else 0, 4 * kq, base + o_x)
            else:  # blocks of 64 rows of x, and panels of weights, shared among the threads
                for r0 in prange(0, n, chunk, num_threads=threads, schedule="static"):
                    tod_copy_rows_xor(xsrc + r0 * k, n - r0 if n - r0 < chunk else chunk, k, k,
                                      0x80 if bu8 else 0, 4 * kq, base + o_x + r0 * 4 * kq)
        if kq and threads == 1:
            tod_pack_rows(wsrc, f, k, k, nr, 0, kq, wp)
        elif kq:
            for t in prange(panels, num_threads=threads, schedule="static"):
                tod_pack_rows(wsrc + t * nr * k, f - t * nr if f - t * nr < nr else nr, k, k,
                              nr, 0, kq, wp + t * kq * nr * 4)
        # sum_k (x - zp) w = acc - (off + zp) rowsum(w): with the bias, one int64 per channel;
        # beside it the split shifts of the requantization (see kernels/simd/int8_epilogue.h)
        if p.isa == TOD_ISA_AVX512_VNNI and kq:  # from the packed panels
            tod_panel_sums_vnni(wp, panels, kq, f, colb)
        else:
            path.rowsum(wsrc, f, k, k, colb)
        for t in range(f):
            colb[t] = bias_p[t] - (zp_in + off) * colb[t]
            fits = fits and INT32_MIN <= colb[t] <= INT32_MAX
            b32[t] = <int32_t>colb[t]
            if single:
                lv[t] = 31 - shv[t]
                rv[t] = 0
            else:
                lv[t] = shv[t] if shv[t] > 0 else 0
                rv[t] = -shv[t] if shv[t] < 0 else 0
        if not fits:
            b32 = NULL
        # the fused VNNI tile (kernels/simd/int8_requant.h): double rounding, int32 biases;
        # no saturating bias add when |acc| <= K * 255 * 128 leaves room for every bias
        fused = ((p.isa == TOD_ISA_AVX512_VNNI or p.isa == TOD_ISA_AVX2) and not single
                 and b32 != NULL and kq > 0)
        for t in range(f):
            bmax = colb[t] if colb[t] > bmax else (-colb[t] if -colb[t] > bmax else bmax)
        nosat = bmax <= INT32_MAX - 4 * kq * 255 * 128
        for t in range(f):
            left0 = left0 and lv[t] == 0
        # |acc + bias| < 2^30 and no left shift: the fused tiles' short requantization route
        if fused and nosat and left0 and bmax < (1 << 30) - 4 * kq * 255 * 128:
            nosat = 2
            if p.isa == TOD_ISA_AVX512_VNNI:  # its parameters, once per call
                tod_rqs16_prepare(b32, m0, rv, f, <tod_rqs16*>(base + o_q))
        if threads == 1:  # no OpenMP region for one thread (a few microseconds per call)
            for item in range(items):
                _linear_item(&path, ukr, fused, nosat, item, panels, n, f, kq, xa, wp, tiles,
                             colb, b32, m0, lv, rv, single, zp, lo, hi, o)
        else:
            for item in prange(items, num_threads=threads, schedule="static"):
                _linear_item(&path, ukr, fused, nosat, item, panels, n, f, kq, xa, wp,
                             tiles + threadid() * mr * nr, colb, b32, m0, lv, rv, single, zp,
                             lo, hi, o)
    return out


cdef int8_t _linear_threads(const tod_int8_path* path, tod_ukr_fn ukr, bint bu8, bint copy_x,
                           int threads, Py_ssize_t n, Py_ssize_t k, Py_ssize_t f,
                           Py_ssize_t kq, int zp_in, int64_t off, const int8_t* xsrc,
                           const int8_t* wsrc, uint8_t* xcopy, uint8_t* wp, int32_t* tiles,
                           int64_t* colb, int32_t* b32, int32_t* lv, int32_t* rv,
                           const int32_t* bias_p, const int32_t* m0, const int32_t* shv,
                           int single, int zp, int lo, int hi, int8_t* o) noexcept nogil:
    """linear_s8 on ``threads`` OpenMP threads, in one parallel region: blocks of 64 rows of
    x copied, and panels of weights packed -- each with its channels' row sums, folded bias
    and requantization shifts, and the minimum weight (returned: below -127 the caller
    raises) -- shared among the threads; a barrier; then the MR x NR tiles. The fixed costs
    of a call (packing, sums) run on every thread instead of one, and the threads start once.
    Each tile is computed as on one thread: the same bits.
    """
    cdef Py_ssize_t nr = path.gemm.nr, mr = path.gemm.mr, panels = _cdiv(f, nr)
    cdef Py_ssize_t items = panels * _cdiv(n, mr), chunk = 64, r0, t, c, j, c0, width, item
    cdef bint vnni = path.gemm.isa == TOD_ISA_AVX512_VNNI
    cdef bint fused, left0
    cdef int nosat  # TOD_RQ_SATURATE / _NOSAT / _SHORT, as in linear_s8
    cdef tod_rqs16* prm = <tod_rqs16*>_short_params(colb, f)
    cdef int32_t* b32t
    cdef int64_t bmax
    cdef const int8_t* xa = <const int8_t*>xcopy if copy_x else xsrc
    cdef int8_t* mins = <int8_t*>(tiles + threads * mr * nr)  # one byte per panel
    with parallel(num_threads=threads):
        if copy_x:
            for r0 in prange(0, n, chunk, schedule="static"):
                tod_copy_rows_xor(xsrc + r0 * k, n - r0 if n - r0 < chunk else chunk, k, k,
                                  0x80 if bu8 else 0, 4 * kq, xcopy + r0 * 4 * kq)
        for t in prange(panels, schedule="static"):
            c0 = t * nr
            width = f - c0 if f - c0 < nr else nr
            mins[t] = _min_s8(wsrc + c0 * k, width * k)
            if kq:
                tod_pack_rows(wsrc + c0 * k, width, k, k, nr, 0, kq, wp + t * kq * nr * 4)
            if vnni and kq:  # from the packed panel
                tod_panel_sums_vnni(wp + t * kq * nr * 4, 1, kq, width, colb + c0)
            else:
                path.rowsum(wsrc + c0 * k, width, k, k, colb + c0)
            for j in range(c0, c0 + width):
                colb[j] = bias_p[j] - (zp_in + off) * colb[j]
                b32[j] = <int32_t>colb[j]
                if single:
                    lv[j] = 31 - shv[j]
                    rv[j] = 0
                else:
                    lv[j] = shv[j] if shv[j] > 0 else 0
                    rv[j] = -shv[j] if shv[j] < 0 else 0
        tod_team_barrier()  # x copied, every panel packed and its channels folded
        # every thread: the same whole-layer flags as the one-thread code (a pass over F)
        b32t = b32
        bmax = 0
        for c in range(f):
            if colb[c] < INT32_MIN or colb[c] > INT32_MAX:
                b32t = NULL
            bmax = colb[c] if colb[c] > bmax else (-colb[c] if -colb[c] > bmax else bmax)
        nosat = bmax <= INT32_MAX - 4 * kq * 255 * 128
        fused = ((path.gemm.isa == TOD_ISA_AVX512_VNNI or path.gemm.isa == TOD_ISA_AVX2)
                 and not single and b32t != NULL and kq > 0)
        left0 = True
        for c in range(f):
            left0 = left0 and lv[c] == 0
        # the short requantization route on the same condition as linear_s8's one-thread code;
        # every thread computes the same flags, so all of them meet the barrier or none does
        if fused and nosat and left0 and bmax < (1 << 30) - 4 * kq * 255 * 128:
            nosat = 2
            if vnni:  # its parameters, panel by panel (a VNNI panel is 32 channels)
                for t in prange(panels, schedule="static"):
                    c0 = t * nr
                    width = f - c0 if f - c0 < nr else nr
                    tod_rqs16_prepare(b32 + c0, m0 + c0, rv + c0, width, prm + c0 // 16)
                tod_team_barrier()
        for item in prange(items, schedule="static"):
            _linear_item(path, ukr, fused, nosat, item, panels, n, f, kq, xa, wp,
                         tiles + threadid() * mr * nr, colb, b32t, m0, lv, rv, single, zp, lo,
                         hi, o)
    cdef int8_t wmin = 0
    for t in range(panels):
        wmin = mins[t] if mins[t] < wmin else wmin
    return wmin


cdef inline int8_t _min_s8(const int8_t* p, Py_ssize_t n) noexcept nogil:
    """Smallest of ``n`` int8 values (0 if all are larger)."""
    cdef Py_ssize_t i
    cdef int8_t lo = 0
    for i in range(n):
        lo = p[i] if p[i] < lo else lo
    return lo


cdef inline Py_ssize_t _a64(Py_ssize_t nbytes) noexcept nogil:
    """``nbytes`` rounded up to a multiple of 64 (a cache line)."""
    return (nbytes + 63) // 64 * 64


cdef inline const tod_rqs16* _short_params(const int64_t* colb, Py_ssize_t f) noexcept nogil:
    """The short route's parameters in linear_s8's scratch (after colb, b32, left, right)."""
    return <const tod_rqs16*>(<const uint8_t*>colb + _a64(8 * f) + 3 * _a64(4 * f))


cdef inline void _linear_item(const tod_int8_path* path, tod_ukr_fn ukr, bint fused,
                              int nosat, Py_ssize_t item,
                              Py_ssize_t panels, Py_ssize_t n, Py_ssize_t f, Py_ssize_t kq,
                              const int8_t* xa, const uint8_t* wp, int32_t* tile,
                              const int64_t* colb, const int32_t* b32, const int32_t* m0,
                              const int32_t* lv, const int32_t* rv, int single, int zp, int lo,
                              int hi, int8_t* o) noexcept nogil:
    """One MR x NR tile of linear_s8: micro-kernel, then requantization into ``o``."""
    cdef Py_ssize_t mr = path.gemm.mr, nr = path.gemm.nr, pan = 0, i0 = item * mr
    if panels > 1:  # (a 64-bit division costs about as much as a narrow tile's epilogue)
        pan = item % panels
        i0 = (item // panels) * mr
    cdef Py_ssize_t col0 = pan * nr
    cdef Py_ssize_t rows = n - i0 if n - i0 < mr else mr
    cdef Py_ssize_t width = f - col0 if f - col0 < nr else nr
    if fused and path.gemm.isa == TOD_ISA_AVX2:  # the AVX2 twin of the tile below
        tod_linear_tile_avx2(kq, xa + i0 * 4 * kq, 4 * kq, rows, wp + pan * kq * nr * 4, width,
                             b32 + col0, m0 + col0, lv + col0, rv + col0, nosat, zp, lo, hi,
                             o + i0 * f + col0, f)
        return
    if fused and nosat == 2:  # the VNNI tile below, short requantization route
        tod_linear_tile_vnni_short(kq, xa + i0 * 4 * kq, 4 * kq, rows, wp + pan * kq * nr * 4,
                                   width, _short_params(colb, f) + col0 // 16, zp, lo, hi,
                                   o + i0 * f + col0, f)
        return
    if fused:  # micro-kernel and requantization in registers, int8 stored directly
        tod_linear_tile_vnni(kq, xa + i0 * 4 * kq, 4 * kq, rows, wp + pan * kq * nr * 4, width,
                             b32 + col0, m0 + col0, lv + col0, rv + col0, nosat, zp, lo, hi,
                             o + i0 * f + col0, f)
        return
    if kq:
        ukr(kq, xa + i0 * 4 * kq, 4 * kq, rows, wp + pan * kq * nr * 4, tile, 0)
    else:
        memset(tile, 0, mr * nr * sizeof(int32_t))
    path.requant_tile(tile, nr, rows, width, b32 + col0 if b32 != NULL else NULL, colb + col0,
                      m0 + col0, lv + col0, rv + col0, single, zp, lo, hi, o + i0 * f + col0, f)


# ---------------------------------------------------------------------------------------
# Convolution: implicit GEMM over panels of output pixels
# ---------------------------------------------------------------------------------------

def conv2d_s8(x, w, bias, input_zero_point, output_zero_point, multiplier, shift, stride=1,
              padding=0, groups=1, act_min=-128, act_max=127, rounding="double"):
    """Int8 2-D convolution, int8 (N, F, OH, OW). See the reference."""
    a = _fast_conv_args(x, w, bias, input_zero_point, output_zero_point, multiplier, shift,
                        stride, padding, groups, act_min, act_max, rounding)
    if a is None:
        a = chk.conv_args("conv2d_s8", x, w, bias, input_zero_point, output_zero_point,
                          multiplier, shift, stride, padding, groups, act_min, act_max, rounding)
    g = a.geom
    if g.groups > 1 and g.groups == g.C == g.F:
        return _depthwise(a)
    cdef Py_ssize_t N = g.N, C = g.C, H = g.H, W = g.W, F = g.F, KH = g.KH, KW = g.KW
    cdef Py_ssize_t G = g.groups, Cg = C // G, Fg = F // G, K = Cg * KH * KW, P = g.OH * g.OW
    cdef Py_ssize_t PH = g.PH, PW = g.PW, PB = g.PB, PR = g.PR  # top, left, bottom, right
    out = np.empty((N, F, g.OH, g.OW), dtype=np.int8)
    if N == 0 or F == 0:
        return out
    cdef tod_int8_path path = _path
    cdef tod_gemm_path p = path.gemm
    cdef Py_ssize_t kq = _cdiv(K, 4), nr = p.nr, mr = p.mr, J = N * P, panels = _cdiv(J, nr)
    cdef int64_t off = 128 if p.xor_mask else 0
    cdef int zp_in = a.zp_in
    cdef bint pointwise = (KH == 1 and KW == 1 and g.SH == 1 and g.SW == 1
                           and PH == 0 and PW == 0 and PB == 0 and PR == 0)
    # weights: (F, K) in (i, j, c) order, K padded to 4 with zeros; the bias absorbs
    # -(off + zp_in) * rowsum(w) (pointwise panels keep the NCHW channel order, same thing)
    if pointwise and K == 4 * kq:  # (F, C) rows are already the layout: no copy
        w2d = a.w.reshape(F, K)
    else:
        w2d = np.zeros((F, 4 * kq), dtype=np.int8)
        w2d[:, :K] = a.w.transpose(0, 2, 3, 1).reshape(F, K)
    cdef const int8_t[:, ::1] wv = w2d
    cdef const int64_t[::1] b = _folded_bias(w2d, a.bias, off + zp_in)
    cdef const int32_t[::1] m0 = a.rq.multiplier
    cdef const int32_t[::1] sh = a.rq.shift
    cdef int single = a.rq.rounding, zp = a.rq.zp_out, lo = a.rq.act_min, hi = a.rq.act_max
    cdef uint8_t xmask = p.xor_mask
    cdef uint8_t pad = <uint8_t>(<int8_t>zp_in) ^ xmask
    cdef const int8_t[:, :, :, ::1] xv = a.x
    cdef int threads = _num_threads
    cdef Py_ssize_t n
    # im2col straight from NCHW, one panel of NR columns at a time (kernels/simd/
    # int8_im2col.h): padding taps read the zero point, no padded copy of the batch
    cdef tod_nchw_geom geo
    geo.C = C; geo.H = H; geo.W = W; geo.KH = KH; geo.KW = KW; geo.SH = g.SH; geo.SW = g.SW
    geo.PT = PH; geo.PL = PW; geo.OH = g.OH; geo.OW = g.OW
    panel_bufs = np.empty((threads, max(kq * nr * 4, 1)), dtype=np.uint8)
    tiles = np.empty((threads, mr * nr), dtype=np.int32)  # one MR x NR block at a time
    cdef uint8_t[:, ::1] pb = panel_bufs
    cdef int32_t[:, ::1] tv = tiles
    cdef int8_t* o = <int8_t*>cnp.PyArray_DATA(out)
    cdef Py_ssize_t pan, j0, ncols, gi, ft, f0, f, ch, jj, ln, j, q, tid
    cdef uint8_t* panel
    cdef int32_t* tile
    with nogil:
        for pan in prange(panels, num_threads=threads, schedule="static"):
            tid = threadid()
            panel = &pb[tid, 0]
            tile = &tv[tid, 0]
            j0 = pan * nr
            ncols = J - j0 if J - j0 < nr else nr
            for gi in range(G):
                if pointwise:
                    tod_pack_pointwise_panel(&xv[0, 0, 0, 0], C, P, gi * Cg, Cg, j0, ncols, nr,
                                             xmask, kq, panel)
                else:
                    tod_pack_conv_panel_nchw(&xv[0, 0, 0, 0], &geo, gi * Cg, Cg, j0, ncols,
                                             nr, xmask, pad, xmask, kq, panel)
                for ft in range(_cdiv(Fg, mr)):
                    # one block of MR filters x NR pixels, requantized while in cache: the
                    # int32 accumulators never exceed one tile (CMSIS-NN keeps a few too)
                    f0 = ft * mr
                    p.ukr_bsafe(kq, &wv[gi * Fg + f0, 0], 4 * kq,
                                Fg - f0 if Fg - f0 < mr else mr, panel, tile, 0)
                    jj = 0
                    while jj < ncols:  # runs of columns inside one image
                        j = j0 + jj
                        n = j // P
                        q = j % P
                        ln = P - q if P - q < ncols - jj else ncols - jj
                        for f in range(f0, f0 + mr if f0 + mr < Fg else Fg):
                            ch = gi * Fg + f
                            path.requant_row(tile + (f - f0) * nr + jj, ln, b[ch], m0[ch],
                                             sh[ch], single, zp, lo, hi,
                                             o + (n * F + ch) * P + q)
                        jj = jj + ln
    return out


# ---------------------------------------------------------------------------------------
# Depthwise convolution: direct loops over phase planes
# ---------------------------------------------------------------------------------------

def depthwise_conv2d_s8(x, w, bias, input_zero_point, output_zero_point, multiplier, shift,
                        stride=1, padding=0, act_min=-128, act_max=127, rounding="double"):
    """Int8 depthwise convolution (depth multiplier 1), int8 (N, C, OH, OW). See the reference."""
    a = None
    if (isinstance(x, cnp.ndarray) and isinstance(w, cnp.ndarray) and x.ndim == 4
            and w.ndim == 4 and w.shape[1] == 1 and w.shape[0] == x.shape[1]):
        a = _fast_conv_args(x, w, bias, input_zero_point, output_zero_point, multiplier, shift,
                            stride, padding, x.shape[1], act_min, act_max, rounding)
    if a is None:
        a = chk.depthwise_args("depthwise_conv2d_s8", x, w, bias, input_zero_point,
                               output_zero_point, multiplier, shift, stride, padding, act_min,
                               act_max, rounding)
    return _depthwise(a)


cdef object _depthwise(a):
    g = a.geom
    cdef Py_ssize_t N = g.N, C = g.C, H = g.H, W = g.W, KH = g.KH, KW = g.KW
    cdef Py_ssize_t SH = g.SH, SW = g.SW, PH = g.PH, PW = g.PW, OH = g.OH, OW = g.OW
    out = np.empty((N, C, OH, OW), dtype=np.int8)
    if N * C == 0:
        return out
    cdef Py_ssize_t Hq = OH + (KH - 1) // SH + 1, Wq = OW + (KW - 1) // SW
    cdef Py_ssize_t plane_size = Hq * Wq, virt = OH * Wq
    cdef int threads = _num_threads
    # per thread: SH*SW phase planes of x - zp (int16) and one plane of int32 accumulators
    planes = np.empty((threads, SH * SW * plane_size), dtype=np.int16)
    accs = np.empty((threads, virt), dtype=np.int32)
    outs = np.empty((threads, virt), dtype=np.int8)
    cdef int16_t[:, ::1] pv = planes
    cdef int32_t[:, ::1] av = accs
    cdef int8_t[:, ::1] ov = outs
    cdef const int8_t[:, :, :, ::1] xv = a.x
    cdef const int8_t[:, :, :, ::1] wv = a.w
    cdef const int32_t[::1] b = a.bias
    cdef const int32_t[::1] m0 = a.rq.multiplier
    cdef const int32_t[::1] sh = a.rq.shift
    cdef int single = a.rq.rounding, zp = a.rq.zp_out, lo = a.rq.act_min, hi = a.rq.act_max
    cdef int zp_in = a.zp_in
    cdef int8_t[:, :, :, ::1] o = out
    cdef tod_int8_path path = _path
    cdef Py_ssize_t pl, n, c, i, j, oh, tid
    cdef int16_t* ph
    cdef int32_t* acc
    with nogil:
        for pl in prange(N * C, num_threads=threads, schedule="static"):
            tid = threadid()
            ph = &pv[tid, 0]
            acc = &av[tid, 0]
            n = pl // C
            c = pl % C
            tod_dw_phase_planes_s8(&xv[n, c, 0, 0], H, W, zp_in, SH, SW, PH, PW, Hq, Wq, ph)
            memset(acc, 0, virt * sizeof(int32_t))
            for i in range(KH):
                for j in range(KW):
                    path.dw_tap(acc, ph + ((i % SH) * SW + j % SW) * plane_size
                                + (i // SH) * Wq + j // SW, virt, wv[c, 0, i, j])
            # requantize the whole virtual plane in one long run, keep the OW real columns
            path.requant_row(acc, virt, b[c], m0[c], sh[c], single, zp, lo, hi, &ov[tid, 0])
            for oh in range(OH):
                memcpy(&o[n, c, oh, 0], &ov[tid, oh * Wq], OW)
    return out
