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

/* dt (NP x F) = dout (N, F, P) with each image's F x P block transposed */
static void tod_pw_dw_transpose(int64_t N, int64_t F, int64_t P, const float *dout, float *dt) {
    for (int64_t n = 0; n < N; n++) tod_transpose_f32(dout + n * F * P, F, P, dt + n * P * F);
}

/* Weight gradient of the same layer, input channels [c0, c0 + MR) (cut at C):
 *
 *   dW^T[c0:c0+MR] (MR x F) = (x - zp)[:, c0:c0+MR] (MR x NP) . dout^T (NP x F)
 *
 * with the reduction over the N P pixels of the whole batch. A = the MR int8 input rows of
 * every image widened (minus zp) into abuf (MR x NP floats); B = dout transposed by the
 * caller once (dt, NP x F); each tile is stored transposed into dW (F x C, row stride C).
 * Each dW value is one float32 sum over the images and their pixels in order: independent
 * of the tiles, threads and of which output channels are asked for. */
static void tod_pw_dw_s8_tile(int64_t N, int64_t C, int64_t F, int64_t P, const int8_t *x,
                              int32_t zp, const float *dt, float *dw, int64_t c0,
                              float *abuf) {
    const int64_t mr = C - c0 < TOD_SMR ? C - c0 : TOD_SMR, NP = N * P;
    for (int64_t r = 0; r < mr; r++)
        for (int64_t n = 0; n < N; n++) {
            tod_s8_widen_f32(x + (n * C + c0 + r) * P, zp, abuf + r * NP + n * P, P);
        }
    for (int64_t f0 = 0; f0 < F; f0 += TOD_SNR) {
        const int64_t nr = F - f0 < TOD_SNR ? F - f0 : TOD_SNR;
        tod_sgemm_tile(NP, abuf, NP, 1, dt + f0, F, (int)mr, (int)nr, dw + f0 * C + c0, C, 1,
                       0);
    }
}

#else
#define TOD_HAVE_PW_DX_S8 0
static void tod_pw_dw_transpose(int64_t N, int64_t F, int64_t P, const float *dout, float *dt) {
    (void)N; (void)F; (void)P; (void)dout; (void)dt;
}
static void tod_pw_dw_s8_tile(int64_t N, int64_t C, int64_t F, int64_t P, const int8_t *x,
                              int32_t zp, const float *dt, float *dw, int64_t c0,
                              float *abuf) {
    (void)N; (void)C; (void)F; (void)P; (void)x; (void)zp; (void)dt; (void)dw; (void)c0;
    (void)abuf;
}
static void tod_pw_dx_s8_tile(int64_t N, int64_t C, int64_t F, int64_t P, const int8_t *w,
                              int64_t ldw, const float *dout, float *dx, int64_t c0,
                              float *abuf) {
    (void)N; (void)C; (void)F; (void)P; (void)w; (void)ldw; (void)dout; (void)dx; (void)c0;
    (void)abuf;
}
#endif
#endif /* TINYODL_FLOAT_S8A_H */
