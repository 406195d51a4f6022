/* tinyodl: input gradient of an int8 pointwise convolution, int8 weights read in place
 * (kernels/int8_backward.pyx).
 *
 * Chapter 03/04. A 1x1, stride-1, unpadded convolution is a GEMM per image:
 *
 *   dx[n] (C x P) = W^T (C x F) . dout[n] (F x P),   W the int8 weights (F x C rows)
 *
 * On the register tile of float_linear.h (MR rows x NR columns in registers over the whole
 * reduction), A(c, f) = W[f][c] and B = the rows of dout[n] read in place. Only the MR
 * columns of W a tile needs are widened to float32, into a buffer of F x MR floats (a few
 * KiB, one per thread): no float copy or packing of the weight matrix, whose scratch was
 * 12 bytes per weight (float copy, flipped copy, packed copy) -- on a microcontroller-sized
 * training step that copy was the peak (chapter 04, tinyodl/engine).
 *
 * Each dx value is one float32 sum over f = 0..F-1 in order, so the result does not
 * depend on how the input channels are split into tiles, threads or calls (the engine's
 * chunks give the same bits as one call). It agrees with the float64 reference to float32
 * rounding.
 */
#ifndef TINYODL_FLOAT_S8A_H
#define TINYODL_FLOAT_S8A_H

#include "float_linear.h"
#include "float_s8c.h"
#include "float_s8w.h"

#if TOD_HAVE_SGEMM
#define TOD_HAVE_PW_DX_S8 1

/* Input channels [c0, c0 + MR) (cut at C) of dx (N, C, P) for every image: abuf holds
 * F x MR floats (A(c, f) = abuf[f MR + (c - c0)]). w: int8 (F x C), row stride ldw. */
static void tod_pw_dx_s8_tile(int64_t N, int64_t C, int64_t F, int64_t P, const int8_t *w,
                              int64_t ldw, const float *dout, float *dx, int64_t c0,
                              float *abuf) {
    const int64_t mr = C - c0 < TOD_SMR ? C - c0 : TOD_SMR;
    for (int64_t f = 0; f < F; f++)
        for (int64_t r = 0; r < TOD_SMR; r++)
            abuf[f * TOD_SMR + r] = r < mr ? (float)w[f * ldw + c0 + r] : 0.0f;
    for (int64_t n = 0; n < N; n++)
        for (int64_t p0 = 0; p0 < P; p0 += TOD_SNR) {
            const int64_t nr = P - p0 < TOD_SNR ? P - p0 : TOD_SNR;
            tod_sgemm_tile(F, abuf, 1, TOD_SMR, dout + n * F * P + p0, P, (int)mr, (int)nr,
                           dx + (n * C + c0) * P + p0, P, 0, 0);
        }
}

/* Weight gradient of the same layer:
 *
 *   dW^T (C x F) = (x - zp) (C x NP) . dout^T (NP x F)
 *
 * with the reduction over the N P pixels of the whole batch, cut into blocks of at most
 * TOD_PW_KB pixels so that its operands stay in cache: per block, dout is transposed once
 * (tod_pw_dw_dout_block: KB x F) and each work item (input channels [c0, c0 + MR)) widens
 * its MR int8 rows of the block (minus zp) into abuf (MR x KB) and continues its sums in
 * acc (C x F). On AVX-512 builds each dW value is one chain of fused multiply-adds over
 * the images and their pixels in order (the tile reloads the chain where the previous
 * block left it): independent of the blocks, tiles, threads and of which output channels
 * are asked for. */
#define TOD_PW_KB 1024

/* dtb (k1 - k0 x F) <- pixels [k0, k1) of the batch (pixel k = n P + p) of dout (N, F, P) */
static void tod_pw_dw_dout_block(int64_t F, int64_t P, const float *dout, int64_t k0, int64_t k1,
                                 float *dtb) {
    for (int64_t k = k0; k < k1;) {
        const int64_t n = k / P, p0 = k - n * P, p1 = (n + 1) * P < k1 ? P : k1 - n * P;
        tod_transpose_f32_ld(dout + n * F * P + p0, P, F, p1 - p0, dtb + (k - k0) * F, F);
        k += p1 - p0;
    }
}

/* acc rows [c0, c0 + MR) (cut at C) continued over pixels [k0, k1); abuf: MR x (k1 - k0).
 * whole: [k0, k1) is the whole batch, and acc is dW itself (F x C): the tiles are stored
 * transposed into it (no C x F sums to keep). */
static void tod_pw_dw_s8_block(int64_t C, int64_t F, int64_t P, const int8_t *x, int32_t zp,
                               const float *dtb, float *acc, int64_t c0, int64_t k0, int64_t k1,
                               float *abuf, int whole) {
    const int64_t mr = C - c0 < TOD_SMR ? C - c0 : TOD_SMR, kb = k1 - k0;
    for (int64_t r = 0; r < mr; r++)
        for (int64_t k = k0; k < k1;) {
            const int64_t n = k / P, p0 = k - n * P, p1 = (n + 1) * P < k1 ? P : k1 - n * P;
            tod_s8_widen_f32(x + (n * C + c0 + r) * P + p0, zp, abuf + r * kb + (k - k0),
                             p1 - p0);
            k += p1 - p0;
        }
#if TOD_HAVE_CONV_DW_S8 /* the 8 x 32 row tile of float_s8c.h: one zmm when nr <= 16 */
    const float *ar[TOD_CMR];
    for (int r = 0; r < TOD_CMR; r++) ar[r] = abuf + (r < mr ? r : 0) * kb;
    for (int64_t f0 = 0; f0 < F; f0 += TOD_CNR) {
        const int64_t nr = F - f0 < TOD_CNR ? F - f0 : TOD_CNR;
        if (whole)
            tod_rows_tile(1, kb, kb, ar, dtb + f0, F, (int)mr, (int)nr, acc + f0 * C + c0, C,
                          TOD_TILE_TRANSPOSED);
        else
            tod_rows_tile(1, kb, kb, ar, dtb + f0, F, (int)mr, (int)nr, acc + c0 * F + f0, F,
                          TOD_TILE_CONTINUE);
    }
#else /* AVX2: the block's sums are added to acc */
    for (int64_t f0 = 0; f0 < F; f0 += TOD_SNR) {
        const int64_t nr = F - f0 < TOD_SNR ? F - f0 : TOD_SNR;
        if (whole)
            tod_sgemm_tile(kb, abuf, kb, 1, dtb + f0, F, (int)mr, (int)nr, acc + f0 * C + c0, C,
                           1, 0);
        else
            tod_sgemm_tile(kb, abuf, kb, 1, dtb + f0, F, (int)mr, (int)nr, acc + c0 * F + f0, F,
                           0, 1);
    }
#endif
}

#if TOD_HAVE_CONV_DW_S8
/* AVX-512 builds turn the product around, so that the register tile's 32 lanes run over
 * input channels and its 8 rows over filters (no lane idles when F is not a multiple of
 * 32, and dW comes out row-major, no transpose):
 *
 *   dW[f0:f0+8, c0:c0+32] (+)= dout[f0:f0+8] (8 x NP) . (x - zp)^T[:, c0:c0+32] (NP x 32)
 *
 * A = the rows of dout read in place (a jump of F P values from one image to the next);
 * B = the panel's 32 int8 input rows of a block of pixels, widened and transposed into
 * bbuf (KB x 32; via tmp, 8 rows of L + 16). A block is a few whole images (P <= TOD_PW_KB2) or a
 * part of one. The tile continues each chain where the last block left it: each dW value
 * is one chain of fused multiply-adds over the images and their pixels in order -- the
 * bits of tod_pw_dw_s8_block, whatever the blocks, panels or threads. */
#define TOD_PW_KB2 256
#define TOD_HAVE_PW_DW_PANEL 1

static void tod_pw_dw_s8_panel(int64_t N, int64_t C, int64_t F, int64_t P, const int8_t *x,
                               int32_t zp, const float *dout, float *dw, int64_t c0,
                               float *bbuf, float *tmp) {
    const int nr = (int)(C - c0 < TOD_CNR ? C - c0 : TOD_CNR);
    const float *ar[TOD_CMR];
    int64_t n = 0, p = 0;
    while (n < N) {
        int64_t m = 1, L = P;
        if (P <= TOD_PW_KB2) {
            m = TOD_PW_KB2 / P < N - n ? TOD_PW_KB2 / P : N - n;
        } else {
            L = P - p < TOD_PW_KB2 ? P - p : TOD_PW_KB2;
        }
        for (int64_t i = 0; i < m; i++)
            for (int j0 = 0; j0 < nr; j0 += 8) {
                const int jn = nr - j0 < 8 ? nr - j0 : 8;
                for (int q = 0; q < jn; q++) /* rows L + 16 apart: no 4 KiB aliasing */
                    tod_s8_widen_f32(x + ((n + i) * C + c0 + j0 + q) * P + p, zp,
                                     tmp + q * (L + 16), L);
                tod_transpose_f32_ld(tmp, L + 16, jn, L, bbuf + i * L * TOD_CNR + j0, TOD_CNR);
            }
        for (int64_t f0 = 0; f0 < F; f0 += TOD_CMR) {
            const int mr = (int)(F - f0 < TOD_CMR ? F - f0 : TOD_CMR);
            for (int q = 0; q < TOD_CMR; q++) ar[q] = dout + (n * F + f0 + (q < mr ? q : 0)) * P + p;
            tod_rows_tile(m, L, F * P, ar, bbuf, TOD_CNR, mr, nr, dw + f0 * C + c0, C,
                          TOD_TILE_CONTINUE);
        }
        if (P <= TOD_PW_KB2) {
            n += m;
        } else if ((p += L) == P) {
            p = 0;
            n++;
        }
    }
}
#else
#define TOD_PW_KB2 256
#define TOD_HAVE_PW_DW_PANEL 0
#endif

#else
#define TOD_HAVE_PW_DX_S8 0
#define TOD_PW_KB 1024
#define TOD_PW_KB2 256
#define TOD_HAVE_PW_DW_PANEL 0
static void tod_pw_dw_dout_block(int64_t F, int64_t P, const float *dout, int64_t k0, int64_t k1,
                                 float *dtb) {
    (void)F; (void)P; (void)dout; (void)k0; (void)k1; (void)dtb;
}
static void tod_pw_dw_s8_block(int64_t C, int64_t F, int64_t P, const int8_t *x, int32_t zp,
                               const float *dtb, float *acc, int64_t c0, int64_t k0, int64_t k1,
                               float *abuf, int whole) {
    (void)whole; (void)C; (void)F; (void)P; (void)x; (void)zp; (void)dtb; (void)acc; (void)c0; (void)k0;
    (void)k1; (void)abuf;
}
static void tod_pw_dx_s8_tile(int64_t N, int64_t C, int64_t F, int64_t P, const int8_t *w,
                              int64_t ldw, const float *dout, float *dx, int64_t c0,
                              float *abuf) {
    (void)N; (void)C; (void)F; (void)P; (void)w; (void)ldw; (void)dout; (void)dx; (void)c0;
    (void)abuf;
}
#endif

#if !TOD_HAVE_PW_DW_PANEL /* no AVX-512 panel in this build: never called */
static void tod_pw_dw_s8_panel(int64_t N, int64_t C, int64_t F, int64_t P, const int8_t *x,
                               int32_t zp, const float *dout, float *dw, int64_t c0,
                               float *bbuf, float *tmp) {
    (void)N; (void)C; (void)F; (void)P; (void)x; (void)zp; (void)dout; (void)dw; (void)c0;
    (void)bbuf; (void)tmp;
}
#endif
#endif /* TINYODL_FLOAT_S8A_H */
