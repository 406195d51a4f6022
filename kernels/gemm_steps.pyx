# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""One int8 GEMM, made fast one step at a time (chapter 03; the EfficientML lab layout).

Every step computes the same exact product ``C = A @ B`` of int8 matrices A (M, K) and
B (K, N) into int32 (the zero points of ``gemm_s8`` are left out: ``kernels/int8.pyx``
shows how they leave the inner loop). Read the steps in order; ``tinyodl bench kernels
--gemm-steps`` times each on your CPU, and ``tests/test_gemm_steps.py`` holds every step
to the exact result.

0. :func:`reference` -- the textbook triple loop: for each C[i, j], a dot product down
   column j of B. The inner loop strides through B by N bytes, so almost every load
   misses the cache line of the previous one.
1. :func:`blocked` -- the same sums in another order. The (i, k, j) loop walks *rows* of B
   and C, contiguous in memory, and the compiler vectorizes that inner loop; the loops
   are cut into blocks (``MC`` rows of A, ``KC`` of K, ``NC`` columns) whose data fits in
   the caches, so each block is reused before it is evicted.
2. :func:`register_tiled` -- A and B are first *packed*: copied into int16 buffers with K
   contiguous (B transposed), and a 4 x 4 tile of C is kept in 16 local variables
   (registers) while k runs over the whole of K: each loaded value is used 4 times and C is
   written once instead of K times. The compiler vectorizes the 16 dot products with
   ``pmaddwd`` (int16 pairs multiplied and summed into int32): the first widened
   multiply-add, found by the compiler. (This was tinyodl's int8 GEMM before step 3.)
3. :func:`widened` -- the CPU's int8 *widened multiply-add*, called explicitly: one
   instruction multiplies four int8 pairs and adds them into an int32 lane (AVX-512 VNNI ``vpdpbusd``; AVX2 needs
   ``vpmaddubsw`` + ``vpmaddwd``). The panel stores four k of a column side by side
   ([K/4][NR][4] bytes), the layout those instructions read; the micro-kernels are in
   ``kernels/simd/int8_ukernels.h`` (a portable C one beside the intrinsics).
4. :func:`threaded` -- the column panels are independent, so ``prange`` hands them to
   OpenMP threads (``tinyodl.backend.set_num_threads``).

Step 4 is the code path of ``tinyodl.ops.gemm_s8`` (without its zero-point corrections).
"""

import numpy as np

cimport numpy as cnp
from cython.parallel cimport prange, threadid
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t
from libc.string cimport memset

from _int8_simd cimport (
    TOD_ISA_PORTABLE,
    tod_best_isa,
    tod_gemm_path,
    tod_gemm_path_of,
    tod_pack_cols,
    tod_ukr_fn,
)

cnp.import_array()

#: The steps, in teaching order.
STEPS = ("reference", "blocked", "register_tiled", "widened", "threaded")

DEF MC = 64     # step 1: rows of A per block
DEF KC = 256    # step 1: depth per block (a KC x NC block of B is 64 KiB of int8)
DEF NC = 256    # step 1: columns per block

cdef int _num_threads = 1


def set_num_threads(int n):
    """Number of OpenMP threads of step 4 (default 1)."""
    global _num_threads
    if n < 1:
        raise ValueError(f"set_num_threads: need n >= 1, got {n}")
    _num_threads = n


def _operands(a, b):
    """Check two int8 matrices with matching inner sizes; return them C-contiguous."""
    for name, arr in (("a", a), ("b", b)):
        if not isinstance(arr, np.ndarray) or arr.dtype != np.int8 or arr.ndim != 2:
            raise TypeError(f"gemm steps: {name} must be a 2-D int8 array")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"gemm steps: a is {a.shape} and b is {b.shape}; inner sizes differ")
    if a.shape[1] * 128 * 128 >= 2**31:
        raise ValueError(f"gemm steps: K={a.shape[1]} can overflow the int32 accumulator")
    return np.ascontiguousarray(a), np.ascontiguousarray(b)


# ---------------------------------------------------------------------------------------
# Step 0: the textbook triple loop
# ---------------------------------------------------------------------------------------

def reference(a, b):
    """C[i, j] = sum_k A[i, k] B[k, j], one dot product at a time (i, j, k order)."""
    a, b = _operands(a, b)
    cdef const int8_t[:, ::1] A = a
    cdef const int8_t[:, ::1] B = b
    cdef Py_ssize_t M = a.shape[0], K = a.shape[1], N = b.shape[1], i, j, k
    c = np.empty((M, N), dtype=np.int32)
    cdef int32_t[:, ::1] C = c
    cdef int32_t acc
    with nogil:
        for i in range(M):
            for j in range(N):
                acc = 0
                for k in range(K):
                    acc = acc + A[i, k] * B[k, j]   # B read down a column: stride N
                C[i, j] = acc
    return c


# ---------------------------------------------------------------------------------------
# Step 1: loop order (i, k, j) and cache blocks
# ---------------------------------------------------------------------------------------

def blocked(a, b):
    """The same sums in (i, k, j) order, in cache-sized blocks; contiguous inner loop."""
    a, b = _operands(a, b)
    cdef const int8_t[:, ::1] A = a
    cdef const int8_t[:, ::1] B = b
    cdef Py_ssize_t M = a.shape[0], K = a.shape[1], N = b.shape[1]
    cdef Py_ssize_t i0, k0, j0, i, k, j, i1, k1, j1
    c = np.zeros((M, N), dtype=np.int32)
    cdef int32_t[:, ::1] C = c
    cdef int32_t aik
    with nogil:
        for j0 in range(0, N, NC):
            j1 = min(j0 + NC, N)
            for k0 in range(0, K, KC):
                k1 = min(k0 + KC, K)
                for i0 in range(0, M, MC):
                    i1 = min(i0 + MC, M)
                    for i in range(i0, i1):
                        for k in range(k0, k1):
                            aik = A[i, k]
                            for j in range(j0, j1):   # rows of B and C: vectorized
                                C[i, j] += aik * B[k, j]
    return c


# ---------------------------------------------------------------------------------------
# Step 2: packed operands and a register tile
# ---------------------------------------------------------------------------------------

cdef void _tile_4x4(const int16_t* a, const int16_t* b, Py_ssize_t kp, int32_t* c,
                    Py_ssize_t ldc) noexcept nogil:
    """c[0:4, 0:4] = a[0:4, :] . b[0:4, :]^T: 16 dot products of length kp, in registers.

    Rows of ``a`` (4 rows of A) and of ``b`` (4 columns of B) are contiguous int16, so
    every step of k loads 8 values and uses each one 4 times. int16 x int16 summed into
    int32 is what x86's ``pmaddwd`` computes on pairs, so the compiler vectorizes the
    k loop with it.
    """
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
    for k in range(kp):
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
    c[0] = c00; c[1] = c01; c[2] = c02; c[3] = c03
    c += ldc
    c[0] = c10; c[1] = c11; c[2] = c12; c[3] = c13
    c += ldc
    c[0] = c20; c[1] = c21; c[2] = c22; c[3] = c23
    c += ldc
    c[0] = c30; c[1] = c31; c[2] = c32; c[3] = c33


def register_tiled(a, b):
    """Pack A and B^T into int16 rows (K contiguous), then 4 x 4 tiles in registers."""
    a, b = _operands(a, b)
    cdef Py_ssize_t M = a.shape[0], K = a.shape[1], N = b.shape[1]
    cdef Py_ssize_t mp = (M + 3) // 4 * 4, np_ = (N + 3) // 4 * 4, kp = max(K, 1)
    ap = np.zeros((mp, kp), dtype=np.int16)     # rows padded to a multiple of 4 with zeros
    bt = np.zeros((np_, kp), dtype=np.int16)    # B transposed: row j is column j of B
    ap[:M, :K] = a
    bt[:N, :K] = b.T
    cp = np.empty((mp, np_), dtype=np.int32)
    cdef const int16_t[:, ::1] A = ap
    cdef const int16_t[:, ::1] Bt = bt
    cdef int32_t[:, ::1] C = cp
    cdef Py_ssize_t i, j
    with nogil:
        for j in range(0, np_, 4):          # a 4-column block of B^T stays in L1 ...
            for i in range(0, mp, 4):       # ... while the 4-row blocks of A stream by
                _tile_4x4(&A[i, 0], &Bt[j, 0], kp, &C[i, j], np_)
    return np.ascontiguousarray(cp[:M, :N])


# ---------------------------------------------------------------------------------------
# Steps 3 and 4: the widened multiply-add micro-kernels, then threads
# ---------------------------------------------------------------------------------------

cdef object _widened(a, b, int threads):
    a, b = _operands(a, b)
    cdef Py_ssize_t M = a.shape[0], K = a.shape[1], N = b.shape[1]
    cdef tod_gemm_path path = tod_gemm_path_of(tod_best_isa())
    cdef tod_ukr_fn ukr = path.ukr_any
    if ukr == NULL:   # AVX2: one operand must avoid -128 (the sign trick), else portable C
        if b.size == 0 or b.min() > -128:
            ukr = path.ukr_vsafe
        else:
            path = tod_gemm_path_of(TOD_ISA_PORTABLE)
            ukr = path.ukr_any
    cdef Py_ssize_t kq = (K + 3) // 4, mr = path.mr, nr = path.nr, panels = (N + nr - 1) // nr
    # A's rows padded to 4 * kq bytes; B packed as [panel][K/4][NR][4] (b XOR the path's mask)
    ap = np.zeros((M, 4 * kq), dtype=np.int8)
    ap[:, :K] = a
    bp = np.empty(max(panels * kq * nr * 4, 1), dtype=np.uint8)
    cdef const int8_t[:, ::1] A = ap
    cdef const int8_t[:, ::1] B = b
    cdef uint8_t[::1] Bp = bp
    if kq and N:
        tod_pack_cols(&B[0, 0], N, K, N, nr, path.xor_mask, kq, &Bp[0])
    # with the mask 0x80 the panel holds b + 128: subtract 128 * (row sum of A) afterwards
    cdef const int64_t[::1] fix = (-128 if path.xor_mask else 0) * a.sum(axis=1, dtype=np.int64)
    c = np.empty((M, N), dtype=np.int32)
    if M == 0 or N == 0:
        return c
    tiles = np.empty((threads, mr * nr), dtype=np.int32)
    cdef int32_t[:, ::1] T = tiles
    cdef int32_t[:, ::1] C = c
    cdef Py_ssize_t p, t, i, r, j, rows, cols
    cdef int32_t* tile
    with nogil:
        for p in prange(panels, num_threads=threads, schedule="static"):
            tile = &T[threadid(), 0]
            cols = min(nr, N - p * nr)
            for t in range((M + mr - 1) // mr):
                i = t * mr
                rows = min(mr, M - i)
                if kq:
                    ukr(kq, &A[i, 0], 4 * kq, rows, &Bp[p * kq * nr * 4], tile, 0)
                else:
                    memset(tile, 0, mr * nr * sizeof(int32_t))
                for r in range(rows):
                    for j in range(cols):
                        C[i + r, p * nr + j] = <int32_t>(tile[r * nr + j] + fix[i + r])
    return c


def widened(a, b):
    """Panels of [K/4][NR][4] bytes and the SIMD micro-kernel (one thread)."""
    return _widened(a, b, 1)


def threaded(a, b):
    """Step 3 with the panels shared among ``set_num_threads(n)`` OpenMP threads."""
    return _widened(a, b, _num_threads)


def simd_path():
    """Name of the micro-kernel steps 3 and 4 use on this CPU."""
    return ("portable", "avx2", "avx512_vnni")[tod_best_isa()]
