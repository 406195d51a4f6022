/* tinyodl float32 GEMM for fully connected layers at small batch (kernels/linear.pyx).
 *
 * Chapter 00. A linear layer of a training step multiplies a big weight matrix by a short
 * batch (32 rows, or 10). BLAS libraries pack both operands into their own layout first;
 * at this shape that copy of the whole weight matrix costs as much as the arithmetic. The
 * products need no copy of W here, because the micro-kernel of float_gemm.h only needs,
 * per step k, MR scalars of A (any strides) and one contiguous row of NR values of B. The
 * forward pass reads W along its rows and gains the most (linear.pyx uses tod_sgemm_block
 * for it; conv.pyx for the weight gradient of a convolution, dW^T = cols . dout^T, with
 * the im2col rows read in place and dout transposed per image); the layouts are:
 *
 *   forward      out^T (F x N) = W (F x K) . x^T      A = W rows; B = x^T (the batch is
 *                                                      packed once, K x N: small)
 *   input grad   dx^T (K x N) = W^T (K x F) . dout^T   A = columns of W (8 neighbours in a
 *                                                      row); B = dout^T (packed once)
 *   weight grad  dW (F x K) = dout^T (F x N) . x       A = dout columns; B = rows of x
 *
 * Each tile of MR x NR results stays in registers over the whole reduction; column panels
 * are independent (the caller splits them across threads). Sums run in another order than
 * BLAS's: results agree with it to float32 rounding.
 */
#ifndef TINYODL_FLOAT_LINEAR_H
#define TINYODL_FLOAT_LINEAR_H

#include "float_gemm.h"

#if TOD_HAVE_SGEMM

/* C[i][j] = sum_k A(i, k) B(k, j) for i < mr, j < nr (one tile): A(i, k) = a[i ars + k aks],
 * B(k, j) = b[k bks + j]. Stored at c[i ldc + j], or at c[j ldc + i] when transposed. */
static void tod_sgemm_tile(int64_t K, const float *a, int64_t ars, int64_t aks, const float *b,
                           int64_t bks, int mr, int nr, float *c, int64_t ldc, int transposed,
                           int accumulate) {
    const float *ar[TOD_SMR];
    for (int r = 0; r < TOD_SMR; r++) ar[r] = a + (r < mr ? r : 0) * ars;
    float tile[TOD_SMR * TOD_SNR];
#if defined(__AVX512F__)
    const __mmask16 m0 = (__mmask16)(nr >= 16 ? 0xFFFF : (1u << nr) - 1u);
    const __mmask16 m1 = (__mmask16)(nr >= 32 ? 0xFFFF : (nr > 16 ? (1u << (nr - 16)) - 1u : 0));
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
           c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00,
           c61 = c00, c70 = c00, c71 = c00;
    for (int64_t k = 0; k < K; k++) {
        const __m512 b0 = _mm512_maskz_loadu_ps(m0, b + k * bks);
        const __m512 b1 = _mm512_maskz_loadu_ps(m1, b + k * bks + 16);
        const int64_t o = k * aks;
#define TOD_LROW(r)                                                  \
    {                                                                \
        const __m512 av = _mm512_set1_ps(ar[r][o]);                  \
        c##r##0 = _mm512_fmadd_ps(av, b0, c##r##0);                  \
        c##r##1 = _mm512_fmadd_ps(av, b1, c##r##1);                  \
    }
        TOD_LROW(0) TOD_LROW(1) TOD_LROW(2) TOD_LROW(3)
        TOD_LROW(4) TOD_LROW(5) TOD_LROW(6) TOD_LROW(7)
#undef TOD_LROW
    }
    if (!transposed && mr == TOD_SMR) { /* rows straight from the registers */
#define TOD_LSTORE(r)                                                            \
    if (accumulate) {                                                            \
        c##r##0 = _mm512_add_ps(c##r##0, _mm512_maskz_loadu_ps(m0, c + r * ldc)); \
        c##r##1 = _mm512_add_ps(c##r##1, _mm512_maskz_loadu_ps(m1, c + r * ldc + 16)); \
    }                                                                            \
    _mm512_mask_storeu_ps(c + r * ldc, m0, c##r##0);                             \
    _mm512_mask_storeu_ps(c + r * ldc + 16, m1, c##r##1);
        TOD_LSTORE(0) TOD_LSTORE(1) TOD_LSTORE(2) TOD_LSTORE(3)
        TOD_LSTORE(4) TOD_LSTORE(5) TOD_LSTORE(6) TOD_LSTORE(7)
#undef TOD_LSTORE
        return;
    }
    _mm512_storeu_ps(tile + 0, c00); _mm512_storeu_ps(tile + 16, c01);
    _mm512_storeu_ps(tile + 32, c10); _mm512_storeu_ps(tile + 48, c11);
    _mm512_storeu_ps(tile + 64, c20); _mm512_storeu_ps(tile + 80, c21);
    _mm512_storeu_ps(tile + 96, c30); _mm512_storeu_ps(tile + 112, c31);
    _mm512_storeu_ps(tile + 128, c40); _mm512_storeu_ps(tile + 144, c41);
    _mm512_storeu_ps(tile + 160, c50); _mm512_storeu_ps(tile + 176, c51);
    _mm512_storeu_ps(tile + 192, c60); _mm512_storeu_ps(tile + 208, c61);
    _mm512_storeu_ps(tile + 224, c70); _mm512_storeu_ps(tile + 240, c71);
#else
    int32_t lanes[24];
    for (int j = 0; j < 24; j++) lanes[j] = j < nr ? -1 : 0;
    const __m256i m0 = _mm256_loadu_si256((const __m256i *)lanes);
    const __m256i m1 = _mm256_loadu_si256((const __m256i *)(lanes + 8));
    const __m256i m2 = _mm256_loadu_si256((const __m256i *)(lanes + 16));
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00,
           c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;
    for (int64_t k = 0; k < K; k++) {
        const float *bk = b + k * bks;
        const __m256 b0 = _mm256_maskload_ps(bk, m0), b1 = _mm256_maskload_ps(bk + 8, m1),
                     b2 = _mm256_maskload_ps(bk + 16, m2);
        const int64_t o = k * aks;
#define TOD_LROW(r)                                                  \
    {                                                                \
        const __m256 av = _mm256_broadcast_ss(ar[r] + o);            \
        c##r##0 = _mm256_fmadd_ps(av, b0, c##r##0);                  \
        c##r##1 = _mm256_fmadd_ps(av, b1, c##r##1);                  \
        c##r##2 = _mm256_fmadd_ps(av, b2, c##r##2);                  \
    }
        TOD_LROW(0) TOD_LROW(1) TOD_LROW(2) TOD_LROW(3)
#undef TOD_LROW
    }
    if (!transposed && mr == TOD_SMR) { /* rows straight from the registers */
#define TOD_LSTORE(r)                                                            \
    if (accumulate) {                                                            \
        c##r##0 = _mm256_add_ps(c##r##0, _mm256_maskload_ps(c + r * ldc, m0));    \
        c##r##1 = _mm256_add_ps(c##r##1, _mm256_maskload_ps(c + r * ldc + 8, m1)); \
        c##r##2 = _mm256_add_ps(c##r##2, _mm256_maskload_ps(c + r * ldc + 16, m2)); \
    }                                                                            \
    _mm256_maskstore_ps(c + r * ldc, m0, c##r##0);                               \
    _mm256_maskstore_ps(c + r * ldc + 8, m1, c##r##1);                           \
    _mm256_maskstore_ps(c + r * ldc + 16, m2, c##r##2);
        TOD_LSTORE(0) TOD_LSTORE(1) TOD_LSTORE(2) TOD_LSTORE(3)
#undef TOD_LSTORE
        return;
    }
    _mm256_storeu_ps(tile + 0, c00); _mm256_storeu_ps(tile + 8, c01); _mm256_storeu_ps(tile + 16, c02);
    _mm256_storeu_ps(tile + 24, c10); _mm256_storeu_ps(tile + 32, c11); _mm256_storeu_ps(tile + 40, c12);
    _mm256_storeu_ps(tile + 48, c20); _mm256_storeu_ps(tile + 56, c21); _mm256_storeu_ps(tile + 64, c22);
    _mm256_storeu_ps(tile + 72, c30); _mm256_storeu_ps(tile + 80, c31); _mm256_storeu_ps(tile + 88, c32);
#endif
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) {
            float *dst = transposed ? c + j * ldc + i : c + i * ldc + j;
            *dst = accumulate ? *dst + tile[i * TOD_SNR + j] : tile[i * TOD_SNR + j];
        }
}

/* C (M x N) = A . B for rows [i0, i1) (a multiple of MR apart, or to M) and the column
 * panels [pan0, pan1) (NR columns each). */
static void tod_sgemm_block(int64_t M, int64_t N, int64_t K, const float *a, int64_t ars,
                            int64_t aks, const float *b, int64_t bks, float *c, int64_t ldc,
                            int transposed, int accumulate, int64_t i0, int64_t i1,
                            int64_t pan0, int64_t pan1) {
    for (int64_t p = pan0; p < pan1; p++) {
        const int64_t j0 = p * TOD_SNR, nr = N - j0 < TOD_SNR ? N - j0 : TOD_SNR;
        for (int64_t i = i0; i < i1 && i < M; i += TOD_SMR) {
            const int64_t mr = M - i < TOD_SMR ? M - i : TOD_SMR;
            float *cij = transposed ? c + j0 * ldc + i : c + i * ldc + j0;
            tod_sgemm_tile(K, a + i * ars, ars, aks, b + j0, bks, (int)mr, (int)nr, cij, ldc,
                           transposed, accumulate);
        }
    }
}

#else
static void tod_sgemm_block(int64_t M, int64_t N, int64_t K, const float *a, int64_t ars,
                            int64_t aks, const float *b, int64_t bks, float *c, int64_t ldc,
                            int transposed, int accumulate, int64_t i0, int64_t i1,
                            int64_t pan0, int64_t pan1) {
    (void)M; (void)accumulate; (void)N; (void)K; (void)a; (void)ars; (void)aks; (void)b; (void)bks; (void)c;
    (void)ldc; (void)transposed; (void)i0; (void)i1; (void)pan0; (void)pan1;
}
#endif /* TOD_HAVE_SGEMM */
#endif /* TINYODL_FLOAT_LINEAR_H */
