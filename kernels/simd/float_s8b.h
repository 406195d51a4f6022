/* tinyodl float32 GEMM whose right operand is int8 (kernels/int8_backward.pyx).
 *
 * Chapter 03. The backward pass of an int8 linear layer is float32 arithmetic on integer
 * operands: dx = dout . float(W_q) and dW = dout^T . float(x_q - zp). Converting the whole
 * int8 matrix to a float32 copy first and calling BLAS reads and writes 4 + 4 bytes per
 * element before the product even starts. Here the register tile of float_linear.h (MR rows
 * x NR columns kept in registers over the whole reduction) reads its B row as NR int8 values
 * and widens them in registers (sign-extend, convert, subtract the zero point): B is read
 * once, at one byte per element, and no copy exists.
 *
 *   C[i][j] = sum_k A(i, k) * (B[k][j] - zp),  A(i, k) = a[i ars + k aks] (any strides),
 *                                              B[k][j] = b[k bks + j] (int8 rows)
 *
 * Built where float_gemm.h has its micro-kernel (AVX-512 or AVX2 + FMA); elsewhere
 * TOD_HAVE_SGEMM_S8B is 0 and int8_backward.pyx converts and calls BLAS. Sums run in
 * another order than BLAS's: results agree with the reference to float32 rounding.
 */
#ifndef TINYODL_FLOAT_S8B_H
#define TINYODL_FLOAT_S8B_H

#include "float_linear.h"

#if TOD_HAVE_SGEMM
#define TOD_HAVE_SGEMM_S8B 1

/* Column panel pan (columns [pan NR, pan NR + NR) cut at N) of C (M x N, row stride ldc)
 * = A . (B - zp) over a reduction of length K; buf holds K x NR floats (one thread's). */
static void tod_sgemm_panel_s8b(int64_t M, int64_t N, int64_t K, const float *a, int64_t ars,
                                int64_t aks, const int8_t *b, int64_t bks, int32_t zp,
                                float *c, int64_t ldc, int64_t pan, float *buf) {
    const int64_t j0 = pan * TOD_SNR, nr = N - j0 < TOD_SNR ? N - j0 : TOD_SNR;
    for (int64_t k = 0; k < K; k++) {
        const int8_t *src = b + k * bks + j0;
        float *dst = buf + k * TOD_SNR;
        for (int64_t j = 0; j < nr; j++) dst[j] = (float)((int32_t)src[j] - zp);
    }
    for (int64_t i = 0; i < M; i += TOD_SMR) {
        const int64_t mr = M - i < TOD_SMR ? M - i : TOD_SMR;
        tod_sgemm_tile(K, a + i * ars, ars, aks, buf, TOD_SNR, (int)mr, (int)nr,
                       c + i * ldc + j0, ldc, 0, 0);
    }
}

#else
#define TOD_HAVE_SGEMM_S8B 0
static void tod_sgemm_panel_s8b(int64_t M, int64_t N, int64_t K, const float *a, int64_t ars,
                                int64_t aks, const int8_t *b, int64_t bks, int32_t zp,
                                float *c, int64_t ldc, int64_t pan, float *buf) {
    (void)M; (void)N; (void)K; (void)a; (void)ars; (void)aks; (void)b; (void)bks; (void)zp;
    (void)c; (void)ldc; (void)pan; (void)buf;
}
#endif
#endif /* TINYODL_FLOAT_S8B_H */
