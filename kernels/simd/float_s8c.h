/* tinyodl: weight gradient of an int8 convolution (groups 1) from the int8 input's phase
 * planes (kernels/int8_backward.pyx).
 *
 * Chapter 03. dW[f, c, i, j] = sum_n sum_(oh, ow) dout[n, f, oh, ow] (x[n, c] - zp) at
 * (oh SH + i - PH, ow SW + j - PW). The float path converts the whole batch to float32 and
 * writes each image's im2col matrix (C KH KW rows of OH OW values) before a BLAS product.
 * Here each image's input is widened once into the phase planes of float_dw.h (a few
 * values more than the image), where the im2col row of (c, i, j) is simply the plane of c
 * read from the offset of tap (i, j), over the "virtual" output t = oh Wq + ow: the
 * register tile below broadcasts A(r, t) straight from the plane of row r, for the real
 * output pixels t = oh Wq + ow (ow < OW) only. B is dout transposed (OH OW x F):
 *
 *   dW^T[r][f] += sum_(oh, ow) plane_c[off(i, j) + oh Wq + ow] dout^T[oh OW + ow][f]
 *
 * One MR x NR tile per (row block, filter panel) and image; the image's sum is added to
 * the K x F accumulator, so each dW value is the same sequence of float32 operations
 * however the rows, filters or threads are split (a subset of filters gives the same bits
 * as the full layer). Sums run in another order than BLAS: results agree with the
 * reference to float32 rounding. Scratch: C SH SW Hq Wq + OH OW F + K F floats, against
 * the float path's 4 N C H W bytes of converted input plus an im2col matrix per image.
 * AVX-512 builds only (TOD_HAVE_CONV_DW_S8); elsewhere int8_backward.pyx converts.
 */
#ifndef TINYODL_FLOAT_S8C_H
#define TINYODL_FLOAT_S8C_H

#include "float_dw.h"

#if TOD_S8W_AVX512
#define TOD_HAVE_CONV_DW_S8 1
#define TOD_CMR 8  /* rows (c, i, j) per tile */
#define TOD_CNR 32 /* filters per tile: two zmm */

/* c[q][0:nr] += sum_(oh, ow) ar[q][oh Wq + ow] b[oh OW + ow][0:nr] for q < mr (row q of c
 * at c + q ldc): the reduction runs over the real output pixels only (not the dropped
 * columns of the virtual plane), in order, one fused multiply-add chain per value.
 * mode TOD_TILE_ADD: the chain starts from zero and its sum is added to c;
 * mode TOD_TILE_CONTINUE: the chain starts from c and ends in c (a reduction cut into
 * blocks gives the bits of the uncut one); mode TOD_TILE_TRANSPOSED: from zero, the tile
 * stored transposed (c[j ldc + q]). */
#define TOD_TILE_ADD 0
#define TOD_TILE_CONTINUE 1
#define TOD_TILE_TRANSPOSED 2 /* from zero, stored at c[j ldc + q] */
static void tod_rows_tile(int64_t OH, int64_t OW, int64_t Wq, const float *const *ar,
                          const float *b, int64_t bks, int mr, int nr, float *c, int64_t ldc,
                          int mode) {
    const __mmask16 m0 = (__mmask16)(nr >= 16 ? 0xFFFF : (1u << nr) - 1u);
    const __mmask16 m1 = (__mmask16)(nr >= 32 ? 0xFFFF : (nr > 16 ? (1u << (nr - 16)) - 1u : 0));
    const float *a0 = ar[0], *a1 = ar[1 < mr ? 1 : 0], *a2 = ar[2 < mr ? 2 : 0],
                *a3 = ar[3 < mr ? 3 : 0], *a4 = ar[4 < mr ? 4 : 0], *a5 = ar[5 < mr ? 5 : 0],
                *a6 = ar[6 < mr ? 6 : 0], *a7 = ar[7 < mr ? 7 : 0];
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
           c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00,
           c61 = c00, c70 = c00, c71 = c00;
    if (mode == TOD_TILE_CONTINUE) {
#define TOD_CLOAD(r)                                                                      \
    if (r < mr) {                                                                         \
        c##r##0 = _mm512_maskz_loadu_ps(m0, c + (int64_t)(r) * ldc);                      \
        c##r##1 = _mm512_maskz_loadu_ps(m1, c + (int64_t)(r) * ldc + 16);                 \
    }
        TOD_CLOAD(0) TOD_CLOAD(1) TOD_CLOAD(2) TOD_CLOAD(3)
        TOD_CLOAD(4) TOD_CLOAD(5) TOD_CLOAD(6) TOD_CLOAD(7)
#undef TOD_CLOAD
    }
    if (nr > 16) {
        for (int64_t oh = 0; oh < OH; oh++)
        for (int64_t t = oh * Wq, p = oh * OW; t < oh * Wq + OW; t++, p++) {
            const __m512 b0 = _mm512_loadu_ps(b + p * bks);
            const __m512 b1 = _mm512_maskz_loadu_ps(m1, b + p * bks + 16);
#define TOD_CROW(r)                                                  \
    {                                                                \
        const __m512 av = _mm512_set1_ps(a##r[t]);                   \
        c##r##0 = _mm512_fmadd_ps(av, b0, c##r##0);                  \
        c##r##1 = _mm512_fmadd_ps(av, b1, c##r##1);                  \
    }
            TOD_CROW(0) TOD_CROW(1) TOD_CROW(2) TOD_CROW(3)
            TOD_CROW(4) TOD_CROW(5) TOD_CROW(6) TOD_CROW(7)
#undef TOD_CROW
        }
    } else { /* 16 filters or fewer: one column of registers */
        for (int64_t oh = 0; oh < OH; oh++)
        for (int64_t t = oh * Wq, p = oh * OW; t < oh * Wq + OW; t++, p++) {
            const __m512 b0 = _mm512_maskz_loadu_ps(m0, b + p * bks);
#define TOD_CROW(r) c##r##0 = _mm512_fmadd_ps(_mm512_set1_ps(a##r[t]), b0, c##r##0);
            TOD_CROW(0) TOD_CROW(1) TOD_CROW(2) TOD_CROW(3)
            TOD_CROW(4) TOD_CROW(5) TOD_CROW(6) TOD_CROW(7)
#undef TOD_CROW
        }
    }
    if (mode == TOD_TILE_TRANSPOSED) {
        float tile[TOD_CMR * TOD_CNR];
        _mm512_storeu_ps(tile + 0, c00); _mm512_storeu_ps(tile + 16, c01);
        _mm512_storeu_ps(tile + 32, c10); _mm512_storeu_ps(tile + 48, c11);
        _mm512_storeu_ps(tile + 64, c20); _mm512_storeu_ps(tile + 80, c21);
        _mm512_storeu_ps(tile + 96, c30); _mm512_storeu_ps(tile + 112, c31);
        _mm512_storeu_ps(tile + 128, c40); _mm512_storeu_ps(tile + 144, c41);
        _mm512_storeu_ps(tile + 160, c50); _mm512_storeu_ps(tile + 176, c51);
        _mm512_storeu_ps(tile + 192, c60); _mm512_storeu_ps(tile + 208, c61);
        _mm512_storeu_ps(tile + 224, c70); _mm512_storeu_ps(tile + 240, c71);
        for (int j = 0; j < nr; j++)
            for (int q = 0; q < mr; q++) c[j * ldc + q] = tile[q * TOD_CNR + j];
        return;
    }
    if (mode == TOD_TILE_CONTINUE) {
#define TOD_CPUT(r)                                                                       \
    if (r < mr) {                                                                         \
        _mm512_mask_storeu_ps(c + (int64_t)(r) * ldc, m0, c##r##0);                       \
        if (m1) _mm512_mask_storeu_ps(c + (int64_t)(r) * ldc + 16, m1, c##r##1);          \
    }
        TOD_CPUT(0) TOD_CPUT(1) TOD_CPUT(2) TOD_CPUT(3)
        TOD_CPUT(4) TOD_CPUT(5) TOD_CPUT(6) TOD_CPUT(7)
#undef TOD_CPUT
        return;
    }
#define TOD_CSTORE(r)                                                                     \
    if (r < mr) {                                                                         \
        float *cr = c + (int64_t)(r) * ldc;                                               \
        _mm512_mask_storeu_ps(cr, m0, _mm512_add_ps(_mm512_maskz_loadu_ps(m0, cr), c##r##0)); \
        if (m1)                                                                           \
            _mm512_mask_storeu_ps(cr + 16, m1,                                            \
                                  _mm512_add_ps(_mm512_maskz_loadu_ps(m1, cr + 16), c##r##1)); \
    }
    TOD_CSTORE(0) TOD_CSTORE(1) TOD_CSTORE(2) TOD_CSTORE(3)
    TOD_CSTORE(4) TOD_CSTORE(5) TOD_CSTORE(6) TOD_CSTORE(7)
#undef TOD_CSTORE
}

/* Work items [it0, it1) of one image: item = row block * panels + filter panel. planes: the
 * image's C planes (pl floats each); dwt: the K x F accumulator (K = C KH KW). */
static void tod_conv_dw_items(int64_t C, int64_t F, const tod_dw_geom *g, const float *planes,
                              int64_t pl, const float *dvt, float *dwt, int64_t it0,
                              int64_t it1) {
    const int64_t taps = g->KH * g->KW, K = C * taps;
    const int64_t panels = (F + TOD_CNR - 1) / TOD_CNR;
    const float *ar[TOD_CMR];
    for (int64_t it = it0; it < it1; it++) {
        const int64_t r0 = (it / panels) * TOD_CMR, f0 = (it % panels) * TOD_CNR;
        const int mr = (int)(K - r0 < TOD_CMR ? K - r0 : TOD_CMR);
        const int nr = (int)(F - f0 < TOD_CNR ? F - f0 : TOD_CNR);
        for (int q = 0; q < TOD_CMR; q++) {
            const int64_t r = r0 + (q < mr ? q : 0), c = r / taps, tap = r % taps;
            ar[q] = planes + c * pl + tod_dw_tap_offset(g, tap / g->KW, tap % g->KW);
        }
        tod_rows_tile(g->OH, g->OW, g->Wq, ar, dvt + f0, F, mr, nr, dwt + r0 * F + f0, F, TOD_TILE_ADD);
    }
}

#else
#define TOD_HAVE_CONV_DW_S8 0
#define TOD_CMR 8
#define TOD_CNR 32
static void tod_conv_dw_items(int64_t C, int64_t F, const tod_dw_geom *g, const float *planes,
                              int64_t pl, const float *dvt, float *dwt, int64_t it0,
                              int64_t it1) {
    (void)C; (void)F; (void)g; (void)planes; (void)pl; (void)dvt; (void)dwt; (void)it0;
    (void)it1;
}
#endif
#endif /* TINYODL_FLOAT_S8C_H */
