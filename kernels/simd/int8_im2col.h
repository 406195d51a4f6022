/* tinyodl: im2col of an int8 convolution straight from the NCHW batch, one panel at a time
 * (kernels/int8.pyx).
 *
 * Chapter 03. The packed panel is the layout of int8_simd.h's tod_pack_conv_panel: columns
 * [j0, j0 + ncols) of the flattened batch (output pixel (n, oh, ow)), their K = KH KW Cg
 * values in (i, j, c) order, four k side by side per column ([kq][nr][4] bytes), each byte
 * XORed with xor_mask. Reading NCHW directly, a tap that falls in the padding gets `pad`
 * (the input zero point, XORed: it contributes nothing once the zero points are folded),
 * so no padded channels-last copy of the batch is needed: the convolution's scratch is the
 * panel itself (K x NR bytes per thread), as in CMSIS-NN, whose im2col buffer holds a few
 * columns. k past K and columns past ncols hold `fill`.
 *
 * Work per panel: for each run of columns inside one output row and each (i, j, c), one
 * strided pass over the input row. */
#ifndef TINYODL_INT8_IM2COL_H
#define TINYODL_INT8_IM2COL_H

#include <stdint.h>
#include <string.h>

typedef struct {
    int64_t C, H, W, KH, KW, SH, SW, PT, PL, OH, OW;
} tod_nchw_geom;

static void tod_pack_conv_panel_nchw(const int8_t *x, const tod_nchw_geom *g, int64_t c0,
                                     int64_t Cg, int64_t j0, int64_t ncols, int nr,
                                     uint8_t xor_mask, uint8_t pad, uint8_t fill, int64_t kq,
                                     uint8_t *dst) {
    const int64_t P = g->OH * g->OW, K = g->KH * g->KW * Cg, row4 = (int64_t)nr * 4;
    int64_t jj = 0;
    while (jj < ncols) { /* one run of columns inside one output row */
        const int64_t j = j0 + jj, n = j / P, p = j % P, oh = p / g->OW, ow0 = p % g->OW;
        const int64_t len = g->OW - ow0 < ncols - jj ? g->OW - ow0 : ncols - jj;
        uint8_t *col0 = dst + jj * 4;
        for (int64_t i = 0; i < g->KH; i++) {
            const int64_t ih = oh * g->SH - g->PT + i;
            const int row_ok = ih >= 0 && ih < g->H;
            for (int64_t jw = 0; jw < g->KW; jw++) {
                /* the run's columns l with 0 <= (ow0 + l) SW - PL + jw < W read the input */
                const int64_t first = (ow0 * g->SW - g->PL + jw); /* iw of l = 0 */
                int64_t l_lo = first >= 0 ? 0 : (-first + g->SW - 1) / g->SW;
                int64_t l_hi = first >= g->W ? 0 : (g->W - first + g->SW - 1) / g->SW;
                if (l_lo > len) l_lo = len;
                if (l_hi > len) l_hi = len;
                if (l_hi < l_lo) l_hi = l_lo;
                int64_t c = 0;
                if ((Cg & 3) == 0 && row_ok) /* four channels = one 4-byte k group */
                    for (; c < Cg; c += 4) {
                        const int64_t t = (i * g->KW + jw) * Cg + c; /* a multiple of 4 */
                        uint8_t *d = col0 + (t >> 2) * row4;
                        const int64_t plane = g->H * g->W;
                        const int8_t *s0 = x + ((n * g->C + c0 + c) * g->H + ih) * g->W + first;
                        const int8_t *s1 = s0 + plane, *s2 = s1 + plane, *s3 = s2 + plane;
                        int64_t l = 0;
                        for (; l < l_lo; l++) memset(d + 4 * l, pad, 4);
                        for (; l < l_hi; l++) {
                            const int64_t o = l * g->SW;
                            d[4 * l] = (uint8_t)s0[o] ^ xor_mask;
                            d[4 * l + 1] = (uint8_t)s1[o] ^ xor_mask;
                            d[4 * l + 2] = (uint8_t)s2[o] ^ xor_mask;
                            d[4 * l + 3] = (uint8_t)s3[o] ^ xor_mask;
                        }
                        for (; l < len; l++) memset(d + 4 * l, pad, 4);
                    }
                for (; c < Cg; c++) {
                    const int64_t t = (i * g->KW + jw) * Cg + c;
                    uint8_t *d = col0 + (t >> 2) * row4 + (t & 3);
                    if (!row_ok) {
                        for (int64_t l = 0; l < len; l++) d[4 * l] = pad;
                        continue;
                    }
                    const int8_t *src = x + ((n * g->C + c0 + c) * g->H + ih) * g->W + first;
                    int64_t l = 0;
                    for (; l < l_lo; l++) d[4 * l] = pad;
                    if (g->SW == 1)
                        for (; l < l_hi; l++) d[4 * l] = (uint8_t)src[l] ^ xor_mask;
                    else
                        for (; l < l_hi; l++) d[4 * l] = (uint8_t)src[l * g->SW] ^ xor_mask;
                    for (; l < len; l++) d[4 * l] = pad;
                }
            }
        }
        for (int64_t t = K; t < 4 * kq; t++) { /* k padding */
            uint8_t *d = col0 + (t >> 2) * row4 + (t & 3);
            for (int64_t l = 0; l < len; l++) d[4 * l] = fill;
        }
        jj += len;
    }
    for (int64_t c = ncols; c < nr; c++) /* columns past the end of the batch */
        for (int64_t q = 0; q < kq; q++) memset(dst + q * row4 + c * 4, fill, 4);
}

#endif /* TINYODL_INT8_IM2COL_H */
