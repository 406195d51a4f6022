# Shared inline helpers of the float kernels (conv, linear, pool): a fused-type GEMM that
# calls BLAS through SciPy, and the window geometry of a 2-D convolution or pooling.
#
# BLAS is Fortran, i.e. column-major. A row-major (M, N) array is, to BLAS, the column-major
# (N, M) matrix C^T. So to get the row-major product C = A @ B we ask BLAS for
# C^T = B^T @ A^T, passing B first: every caller below does that swap.

from cython cimport floating
from scipy.linalg.cython_blas cimport dgemm, sgemm


cdef inline void gemm(char transa, char transb, int m, int n, int k, floating alpha,
                      const floating* a, int lda, const floating* b, int ldb,
                      floating beta, floating* c, int ldc) noexcept nogil:
    """Column-major C(m, n) = alpha * op(A)(m, k) @ op(B)(k, n) + beta * C."""
    if floating is float:
        sgemm(&transa, &transb, &m, &n, &k, &alpha, <float*>a, &lda, <float*>b, &ldb,
              &beta, c, &ldc)
    else:
        dgemm(&transa, &transb, &m, &n, &k, &alpha, <double*>a, &lda, <double*>b, &ldb,
              &beta, c, &ldc)


cdef struct Geom:
    # input plane, kernel, stride, padding and output plane sizes
    Py_ssize_t H, W, KH, KW, SH, SW, PH, PW, OH, OW


cdef inline Geom make_geom(Py_ssize_t H, Py_ssize_t W, Py_ssize_t KH, Py_ssize_t KW,
                           Py_ssize_t SH, Py_ssize_t SW, Py_ssize_t PH, Py_ssize_t PW,
                           Py_ssize_t OH, Py_ssize_t OW) noexcept:
    cdef Geom g
    g.H = H; g.W = W; g.KH = KH; g.KW = KW; g.SH = SH; g.SW = SW
    g.PH = PH; g.PW = PW; g.OH = OH; g.OW = OW
    return g


cdef inline Py_ssize_t col_lo(const Geom* g, Py_ssize_t kw) noexcept nogil:
    """First output column ow whose tap kw reads a real pixel (ow*SW + kw - PW >= 0)."""
    cdef Py_ssize_t t = g.PW - kw
    if t <= 0:
        return 0
    t = (t + g.SW - 1) // g.SW
    return t if t < g.OW else g.OW


cdef inline Py_ssize_t col_hi(const Geom* g, Py_ssize_t kw) noexcept nogil:
    """One past the last output column ow whose tap kw reads a real pixel (< W)."""
    cdef Py_ssize_t u = g.W + g.PW - kw - 1
    if u < 0:
        return 0
    u = u // g.SW + 1
    return u if u < g.OW else g.OW
