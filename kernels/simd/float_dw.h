/* tinyodl depthwise convolution loops in C, for float and double (kernels/conv.pyx and the
 * int8 backward, kernels/int8_backward.pyx).
 *
 * Chapter 00. A depthwise convolution filters each (image, channel) plane on its own, with a
 * KH x KW window: too little work per plane for a GEMM, and rows too short (7 to 28 values)
 * for a fast loop over one output row. The trick used here:
 *
 *  * Split the zero-padded input plane by (row mod S, column mod S) into S x S "phase
 *    planes" of Hq x Wq values (S = stride; one plane when S = 1). Output pixel (oh, ow)
 *    reads, for tap (i, j), the value plane[(i mod S, j mod S)][(oh + i / S) Wq + ow + j / S].
 *  * So one tap is a single long loop over the "virtual" output t = oh Wq + ow, for all
 *    OH x Wq positions at once: out[t] += w[i, j] * plane[t + shift]. The Wq - OW extra
 *    columns per row are computed and dropped. That loop vectorizes at any map size.
 *  * The backward passes run the same loops the other way round: dx scatters
 *    w[i, j] * dout[t] into the phase planes of dx, and dw[i, j] is the dot product of dout
 *    with the shifted plane (summed over the batch element-wise first, reduced once).
 *
 * Hq = OH + (KH - 1) / SH + 1 and Wq = OW + (KW - 1) / SW (integer division); the extra
 * row keeps the shifted reads of the dropped columns inside the buffer. The readable twin
 * is the per-tap loop of tinyodl/reference/conv.py (im2col on one channel).
 */
#ifndef TINYODL_FLOAT_DW_H
#define TINYODL_FLOAT_DW_H

#include <stdint.h>
#include <string.h>

typedef struct {
    int64_t H, W, KH, KW, SH, SW, PH, PW, OH, OW, Hq, Wq;
} tod_dw_geom;

static inline tod_dw_geom tod_dw_make_geom(int64_t H, int64_t W, int64_t KH, int64_t KW,
                                           int64_t SH, int64_t SW, int64_t PH, int64_t PW,
                                           int64_t OH, int64_t OW) {
    tod_dw_geom g = {H, W, KH, KW, SH, SW, PH, PW, OH, OW,
                     OH + (KH - 1) / SH + 1, OW + (KW - 1) / SW};
    return g;
}

/* Offset of tap (i, j) in the phase planes: plane (i mod SH, j mod SW), shifted. */
static inline int64_t tod_dw_tap_offset(const tod_dw_geom *g, int64_t i, int64_t j) {
    return ((i % g->SH) * g->SW + j % g->SW) * g->Hq * g->Wq + (i / g->SH) * g->Wq + j / g->SW;
}

#define TOD_DW_DEFINE(T, S)                                                                 \
    /* y[t] += a * x[t]: one tap over the virtual plane. Kept out of line so that the       \
     * restrict qualifiers hold and the loop is vectorized without a run-time alias test. */ \
    __attribute__((noinline)) static void tod_axpy_##S(T *restrict y, const T *restrict x,  \
                                                      T a, int64_t n) {                     \
        for (int64_t t = 0; t < n; t++) y[t] += a * x[t];                                   \
    }                                                                                       \
    /* y[t] += a[t] * b[t] */                                                               \
    __attribute__((noinline)) static void tod_fma_##S(T *restrict y, const T *restrict a,   \
                                                     const T *restrict b, int64_t n) {      \
        for (int64_t t = 0; t < n; t++) y[t] += a[t] * b[t];                                \
    }                                                                                       \
    /* planes <- phase planes of the zero-padded plane x (H, W). Column w of the input goes \
     * to phase b = (w + PW) mod SW at v = (w + PW) / SW: walked phase by phase, no division. */ \
    static void tod_dw_planes_##S(const T *x, const tod_dw_geom *g, T *planes) {            \
        const int64_t plane = g->Hq * g->Wq;                                                \
        memset(planes, 0, (size_t)(g->SH * g->SW * plane) * sizeof(T));                     \
        for (int64_t h = 0; h < g->H; h++) {                                                \
            const int64_t r = h + g->PH, u = r / g->SH;                                     \
            if (u >= g->Hq) break;                                                          \
            T *row = planes + (r % g->SH) * g->SW * plane + u * g->Wq;                      \
            const T *src = x + h * g->W;                                                    \
            for (int64_t b = 0; b < g->SW; b++) {                                           \
                T *dst = row + b * plane;                                                   \
                int64_t v = 0, w = b - g->PW;                                               \
                for (; w < 0; v++, w += g->SW) {}                                           \
                for (; v < g->Wq && w < g->W; v++, w += g->SW) dst[v] = src[w];             \
            }                                                                               \
        }                                                                                   \
    }                                                                                       \
    /* int8 input: the planes hold x - zp (the int8 backward's float(x_q - zp)) */          \
    static void tod_dw_planes_s8_##S(const int8_t *x, int32_t zp, const tod_dw_geom *g,     \
                                     T *planes) {                                           \
        const int64_t plane = g->Hq * g->Wq;                                                \
        memset(planes, 0, (size_t)(g->SH * g->SW * plane) * sizeof(T));                     \
        for (int64_t h = 0; h < g->H; h++) {                                                \
            const int64_t r = h + g->PH, u = r / g->SH;                                     \
            if (u >= g->Hq) break;                                                          \
            T *row = planes + (r % g->SH) * g->SW * plane + u * g->Wq;                      \
            const int8_t *src = x + h * g->W;                                               \
            if (g->SW == 1) { /* one contiguous run: vectorized conversion */               \
                const int64_t n = g->W < g->Wq - g->PW ? g->W : g->Wq - g->PW;              \
                T *restrict dst = row + g->PW;                                              \
                for (int64_t w = 0; w < n; w++) dst[w] = (T)(src[w] - zp);                  \
                continue;                                                                   \
            }                                                                               \
            for (int64_t b = 0; b < g->SW; b++) {                                           \
                T *dst = row + b * plane;                                                   \
                int64_t v = 0, w = b - g->PW;                                               \
                for (; w < 0; v++, w += g->SW) {}                                           \
                for (; v < g->Wq && w < g->W; v++, w += g->SW) dst[v] = (T)(src[w] - zp);   \
            }                                                                               \
        }                                                                                   \
    }                                                                                       \
    /* out (OH, OW) = bias + sum over taps of w[i, j] * shifted plane; acc: OH * Wq */      \
    static void tod_dw_forward_##S(const T *planes, const T *w, T bias,                     \
                                   const tod_dw_geom *g, T *restrict acc, T *restrict out) { \
        const int64_t n = g->OH * g->Wq;                                                    \
        for (int64_t t = 0; t < n; t++) acc[t] = bias;                                      \
        for (int64_t i = 0; i < g->KH; i++)                                                 \
            for (int64_t j = 0; j < g->KW; j++) {                                           \
                tod_axpy_##S(acc, planes + tod_dw_tap_offset(g, i, j), w[i * g->KW + j], n); \
            }                                                                               \
        for (int64_t oh = 0; oh < g->OH; oh++)                                              \
            memcpy(out + oh * g->OW, acc + oh * g->Wq, (size_t)g->OW * sizeof(T));          \
    }                                                                                       \
    /* dvirt (OH * Wq) <- dout (OH, OW) with zero in the dropped columns */                 \
    static void tod_dw_virtual_##S(const T *dout, const tod_dw_geom *g, T *dvirt) {         \
        for (int64_t oh = 0; oh < g->OH; oh++) {                                            \
            memcpy(dvirt + oh * g->Wq, dout + oh * g->OW, (size_t)g->OW * sizeof(T));       \
            for (int64_t ow = g->OW; ow < g->Wq; ow++) dvirt[oh * g->Wq + ow] = 0;          \
        }                                                                                   \
    }                                                                                       \
    /* dx (H, W) of one plane: scatter w[i, j] * dout into phase planes, then gather */     \
    static void tod_dw_backward_input_##S(const T *dout, const T *w, const tod_dw_geom *g,  \
                                          T *restrict dvirt, T *restrict dplanes, T *dx) {  \
        const int64_t n = g->OH * g->Wq, plane = g->Hq * g->Wq;                             \
        tod_dw_virtual_##S(dout, g, dvirt);                                                 \
        memset(dplanes, 0, (size_t)(g->SH * g->SW * plane) * sizeof(T));                    \
        for (int64_t i = 0; i < g->KH; i++)                                                 \
            for (int64_t j = 0; j < g->KW; j++) {                                           \
                tod_axpy_##S(dplanes + tod_dw_tap_offset(g, i, j), dvirt, w[i * g->KW + j], n); \
            }                                                                               \
        for (int64_t h = 0; h < g->H; h++) { /* the real pixels of the padded plane */      \
            const int64_t r = h + g->PH, u = r / g->SH;                                     \
            T *drow = dx + h * g->W;                                                        \
            memset(drow, 0, (size_t)g->W * sizeof(T));                                      \
            if (u >= g->Hq) continue;                                                       \
            const T *row = dplanes + (r % g->SH) * g->SW * plane + u * g->Wq;               \
            for (int64_t b = 0; b < g->SW; b++) {                                           \
                const T *src = row + b * plane;                                             \
                int64_t v = 0, w = b - g->PW;                                               \
                for (; w < 0; v++, w += g->SW) {}                                           \
                for (; v < g->Wq && w < g->W; v++, w += g->SW) drow[w] = src[v];            \
            }                                                                               \
        }                                                                                   \
    }                                                                                       \
    /* wacc[tap][t] += dvirt[t] * shifted plane[t]: one image's share of dw, element-wise */ \
    static void tod_dw_weight_accumulate_##S(const T *dvirt, const T *planes,               \
                                             const tod_dw_geom *g, T *restrict wacc) {      \
        const int64_t n = g->OH * g->Wq;                                                    \
        for (int64_t i = 0; i < g->KH; i++)                                                 \
            for (int64_t j = 0; j < g->KW; j++) {                                           \
                tod_fma_##S(wacc + (i * g->KW + j) * n, dvirt, planes + tod_dw_tap_offset(g, i, j), \
                            n);                                                             \
            }                                                                               \
    }                                                                                       \
    /* dw[tap] = sum_t wacc[tap][t], in double with eight partial sums */                  \
    static void tod_dw_weight_reduce_##S(const T *wacc, const tod_dw_geom *g, T *dw) {      \
        const int64_t n = g->OH * g->Wq;                                                    \
        for (int64_t tap = 0; tap < g->KH * g->KW; tap++) {                                 \
            const T *a = wacc + tap * n;                                                    \
            double p[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                         \
            int64_t t = 0;                                                                  \
            for (; t + 8 <= n; t += 8)                                                      \
                for (int l = 0; l < 8; l++) p[l] += (double)a[t + l];                       \
            for (; t < n; t++) p[0] += (double)a[t];                                        \
            dw[tap] = (T)(((p[0] + p[4]) + (p[1] + p[5])) + ((p[2] + p[6]) + (p[3] + p[7]))); \
        }                                                                                   \
    }

TOD_DW_DEFINE(float, f32)
TOD_DW_DEFINE(double, f64)

/* ---- weight gradient of an int8 depthwise layer (kernels/int8_backward.pyx) -------------
 *
 * dW of one channel over the batch, the input read as int8 (x_q - zp). Same values and the
 * same float32 operations, in the same order, as tod_dw_planes_s8_f32 +
 * tod_dw_virtual_f32 + tod_dw_weight_accumulate_f32 per image and tod_dw_weight_reduce_f32
 * (so the same bits), with what repeats per image taken out:
 *
 *  * the padding of the phase planes and the dropped columns of the virtual plane are zeroed
 *    once per channel (every image writes the same positions);
 *  * a row of int8 is widened with vector instructions (AVX-512: vpmovsxbd + vcvtdq2ps;
 *    stride > 1: the phase rows are picked from the widened row by a lane permutation);
 *  * the KH x KW tap products of a stretch of 16 outputs share one load of dout.
 */
#include "float_s8w.h"
#define TOD_DW_S8_AVX512 TOD_S8W_AVX512

#define TOD_DW_ROWBUF 512 /* widest input row widened on the stack (stride > 1) */

/* The data positions of the phase planes of one int8 plane (the zeros are already there). */
static void tod_dw_planes_s8_fill_f32(const int8_t *x, int32_t zp, const tod_dw_geom *g,
                                      float *planes) {
    const int64_t plane = g->Hq * g->Wq;
#if TOD_DW_S8_AVX512
    /* stride > 1, rows of at most 32 and phase rows of at most 16: lane permutations */
    const int perm = g->SW > 1 && g->W <= 32 && g->Wq <= 16 && g->SW <= 16;
    __m512i idx[16];
    __mmask16 keep[16];
    if (perm)
        for (int64_t b = 0; b < g->SW; b++) {
            int32_t lane[16];
            unsigned m = 0;
            for (int64_t v = 0; v < 16; v++) {
                const int64_t w = b - g->PW + v * g->SW;
                const int ok = v < g->Wq && w >= 0 && w < g->W;
                lane[v] = ok ? (int32_t)w : 0;
                m |= (unsigned)ok << v;
            }
            idx[b] = _mm512_loadu_si512((const void *)lane);
            keep[b] = (__mmask16)m;
        }
    const __m512i z = _mm512_set1_epi32(zp);
#endif
    float rowf[TOD_DW_ROWBUF];
    for (int64_t h = 0; h < g->H; h++) {
        const int64_t r = h + g->PH, u = r / g->SH;
        if (u >= g->Hq) break;
        float *row = planes + (r % g->SH) * g->SW * plane + u * g->Wq;
        const int8_t *src = x + h * g->W;
        if (g->SW == 1) {
            const int64_t n = g->W < g->Wq - g->PW ? g->W : g->Wq - g->PW;
            tod_s8_widen_f32(src, zp, row + g->PW, n);
            continue;
        }
#if TOD_DW_S8_AVX512
        if (perm) {
            const int64_t n1 = g->W > 16 ? g->W - 16 : 0, n0 = g->W - n1;
            const __m512 lo = _mm512_cvtepi32_ps(_mm512_sub_epi32(
                _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8((__mmask16)((1u << n0) - 1u), src)), z));
            const __m512 hi = _mm512_cvtepi32_ps(_mm512_sub_epi32(
                _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8((__mmask16)((1u << n1) - 1u),
                                                          src + n0)), z));
            for (int64_t b = 0; b < g->SW; b++)
                _mm512_mask_storeu_ps(row + b * plane, keep[b],
                                      _mm512_permutex2var_ps(lo, idx[b], hi));
            continue;
        }
#endif
        const float *wide = rowf;
        if (g->W <= TOD_DW_ROWBUF) tod_s8_widen_f32(src, zp, rowf, g->W);
        for (int64_t b = 0; b < g->SW; b++) {
            float *dst = row + b * plane;
            int64_t v = 0, w = b - g->PW;
            for (; w < 0; v++, w += g->SW) {}
            if (g->W <= TOD_DW_ROWBUF)
                for (; v < g->Wq && w < g->W; v++, w += g->SW) dst[v] = wide[w];
            else
                for (; v < g->Wq && w < g->W; v++, w += g->SW) dst[v] = (float)(src[w] - zp);
        }
    }
}

/* wacc[tap][t] += dvirt[t] * shifted plane[t], every tap in one sweep over t */
static void tod_dw_weight_accumulate_fused_f32(const float *restrict dvirt,
                                               const float *restrict planes,
                                               const tod_dw_geom *g, float *restrict wacc) {
#if TOD_DW_S8_AVX512
    const int64_t n = g->OH * g->Wq, taps = g->KH * g->KW;
    int64_t off[64];
    if (taps > 64) {
        tod_dw_weight_accumulate_f32(dvirt, planes, g, wacc);
        return;
    }
    for (int64_t i = 0; i < g->KH; i++)
        for (int64_t j = 0; j < g->KW; j++) off[i * g->KW + j] = tod_dw_tap_offset(g, i, j);
    for (int64_t t = 0; t < n; t += 16) {
        const __mmask16 m = (__mmask16)(n - t >= 16 ? 0xFFFFu : (1u << (n - t)) - 1u);
        const __m512 d = _mm512_maskz_loadu_ps(m, dvirt + t);
        for (int64_t k = 0; k < taps; k++) {
            float *a = wacc + k * n + t;
            const __m512 p = _mm512_maskz_loadu_ps(m, planes + off[k] + t);
            _mm512_mask_storeu_ps(a, m, _mm512_fmadd_ps(d, p, _mm512_maskz_loadu_ps(m, a)));
        }
    }
#else
    tod_dw_weight_accumulate_f32(dvirt, planes, g, wacc);
#endif
}

/* dw (KH x KW) of one channel: x (N planes H x W, int8, image stride xn), dout (N planes
 * OH x OW, image stride dn); scratch: planes + OH Wq + KH KW OH Wq floats. */
static void tod_dw_weight_s8_f32(const int8_t *x, int64_t xn, int32_t zp, const float *dout,
                                 int64_t dn, int64_t N, const tod_dw_geom *g, float *scratch,
                                 float *dw) {
    const int64_t planes = g->SH * g->SW * g->Hq * g->Wq, virt = g->OH * g->Wq;
    float *ph = scratch, *dv = scratch + planes, *wa = dv + virt;
    memset(scratch, 0, (size_t)(planes + virt + g->KH * g->KW * virt) * sizeof(float));
    for (int64_t n = 0; n < N; n++) {
        tod_dw_planes_s8_fill_f32(x + n * xn, zp, g, ph);
        for (int64_t oh = 0; oh < g->OH; oh++)
            memcpy(dv + oh * g->Wq, dout + n * dn + oh * g->OW, (size_t)g->OW * sizeof(float));
        tod_dw_weight_accumulate_fused_f32(dv, ph, g, wa);
    }
    tod_dw_weight_reduce_f32(wa, g, dw);
}

/* ---- input gradient of an int8 depthwise layer, gather form (kernels/int8_backward.pyx) ---
 *
 * tod_dw_backward_input_f32 scatters w[i, j] dout into phase planes, tap after tap, then
 * gathers dx out of them. The same sums, read the other way: dout is written into a zeroed
 * plane "up" at (oh SH, ow SW) (zeros between the samples when the stride is > 1, and KH - 1,
 * KW - 1 zeros of border), and each dx pixel is one chain of fused multiply-adds over the
 * taps in the same order, dx[h, w] = sum_(i, j) w[i, j] up[h + PH - i, w + PW - j]. A tap
 * that did not reach the pixel in the scatter form adds an exact zero here, so the bits are
 * those of the scatter form; 16 pixels of a row take one vector per tap, no plane is
 * written back to memory tap after tap, and the zeros of "up" are written once per call.
 * Scratch: tod_dw_up_size(g) floats. AVX-512 builds only (TOD_DW_S8_AVX512).
 */
static inline int64_t tod_dw_up_cols(const tod_dw_geom *g) { return g->W + g->PW + g->KW - 1; }

static inline int64_t tod_dw_up_size(const tod_dw_geom *g) {
    return (g->H + g->PH + g->KH - 1) * tod_dw_up_cols(g);
}

#if TOD_DW_S8_AVX512
/* dx (H, W) of one plane; w: KH x KW int8 weights; up: zeroed at the first call. */
static void tod_dw_backward_input_s8w_f32(const float *dout, const int8_t *w,
                                          const tod_dw_geom *g, float *up, float *dx) {
    const int64_t cb = tod_dw_up_cols(g), amax = g->H - 1 + g->PH, bmax = g->W - 1 + g->PW;
    const int64_t taps = g->KH * g->KW;
    for (int64_t oh = 0; oh < g->OH && oh * g->SH <= amax; oh++) {
        float *row = up + (oh * g->SH + g->KH - 1) * cb + g->KW - 1;
        const float *src = dout + oh * g->OW;
        if (g->SW == 1) {
            memcpy(row, src, (size_t)(g->OW < bmax + 1 ? g->OW : bmax + 1) * sizeof(float));
        } else {
            for (int64_t ow = 0; ow < g->OW && ow * g->SW <= bmax; ow++) row[ow * g->SW] = src[ow];
        }
    }
    float wf[64];
    int64_t off[64];
    for (int64_t i = 0; i < g->KH; i++)
        for (int64_t j = 0; j < g->KW; j++) {
            wf[i * g->KW + j] = (float)w[i * g->KW + j];
            off[i * g->KW + j] = (g->PH - i + g->KH - 1) * cb + g->PW - j + g->KW - 1;
        }
    for (int64_t h = 0; h < g->H; h++) {
        const float *base = up + h * cb;
        for (int64_t w0 = 0; w0 < g->W; w0 += 16) {
            const __mmask16 m = (__mmask16)(g->W - w0 >= 16 ? 0xFFFFu : (1u << (g->W - w0)) - 1u);
            __m512 acc = _mm512_setzero_ps();
            for (int64_t k = 0; k < taps; k++)
                acc = _mm512_fmadd_ps(_mm512_set1_ps(wf[k]),
                                      _mm512_maskz_loadu_ps(m, base + off[k] + w0), acc);
            _mm512_mask_storeu_ps(dx + h * g->W + w0, m, acc);
        }
    }
}
#define TOD_HAVE_DW_DX_S8W 1
#else
#define TOD_HAVE_DW_DX_S8W 0
static void tod_dw_backward_input_s8w_f32(const float *dout, const int8_t *w,
                                          const tod_dw_geom *g, float *up, float *dx) {
    (void)dout; (void)w; (void)g; (void)up; (void)dx;
}
#endif

#endif /* TINYODL_FLOAT_DW_H */
