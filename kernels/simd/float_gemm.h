/* tinyodl float32 convolution as an implicit GEMM (kernels/conv.pyx, kernels/int8_backward.pyx).
 *
 * Chapter 00. The textbook convolution is im2col + one BLAS sgemm per image (the numpy
 * reference, and conv.pyx for the shapes below does not cover). For the most common
 * layer -- stride 1, "same" padding, so OH = H and OW = W -- this file does better:
 *
 *  * Implicit im2col. The column matrix is never written out. The GEMM needs it one
 *    *panel* of NR output pixels at a time (K x NR values, in L2), and with OW = W the
 *    row of tap (c, kh, kw) of a panel is just the input plane shifted by
 *    (kh - PH) W + (kw - PW): one masked vector load per row, the mask zeroing the taps that
 *    fall into the padding. Pixels run over the whole batch, so a panel may span images.
 *  * A register-tiled micro-kernel: an MR x NR tile of the output (MR filters x NR pixels)
 *    stays in vector registers while k runs over K; each step is one broadcast of a weight
 *    and NR / 16 fused multiply-adds (AVX-512; AVX2: NR / 8).
 *  * The backward pass to the input of such a layer is the same convolution of dout with
 *    the filters flipped and transposed (W'[c, f, i, j] = W[f, c, KH-1-i, KW-1-j]), so it
 *    runs through the same code, without col2im.
 *
 * Compiled only where the build targets AVX2 + FMA or AVX-512 (``-march=native``);
 * TOD_HAVE_SGEMM tells conv.pyx whether to use it (otherwise im2col + BLAS). Sums run in
 * another order than BLAS's, so results agree with it to float32 rounding, not bitwise.
 */
#ifndef TINYODL_FLOAT_GEMM_H
#define TINYODL_FLOAT_GEMM_H

#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#define TOD_HAVE_SGEMM 1
#define TOD_SMR 8  /* filters per tile */
#define TOD_SNR 32 /* pixels per tile: two zmm */
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define TOD_HAVE_SGEMM 1
#define TOD_SMR 4
#define TOD_SNR 24 /* three ymm */
#else
#define TOD_HAVE_SGEMM 0
#define TOD_SMR 4
#define TOD_SNR 16
#endif

/* Panels of A (the filters): [F / MR][K][MR], rows past F zero. From float or int8 rows. */
static void tod_pack_filters_f32(const float *w, int64_t F, int64_t K, float *apack) {
    const int64_t tiles = (F + TOD_SMR - 1) / TOD_SMR;
    for (int64_t t = 0; t < tiles; t++) {
        float *dst = apack + t * K * TOD_SMR;
        for (int64_t k = 0; k < K; k++)
            for (int64_t r = 0; r < TOD_SMR; r++) {
                const int64_t f = t * TOD_SMR + r;
                dst[k * TOD_SMR + r] = f < F ? w[f * K + k] : 0.0f;
            }
    }
}

#define TOD_KBLOCK 256 /* rows of a packed block (32 KiB of float for NR = 32) */

static int64_t tod_conv_cblock(int64_t KH, int64_t KW) {
    const int64_t c = TOD_KBLOCK / (KH * KW);
    return c < 1 ? 1 : c;
}

#if TOD_HAVE_SGEMM

/* tile[MR][NR] (+)= sum_k apanel[k][0:MR] (outer) bpanel[k][0:NR] */
static void tod_sgemm_ukr(int64_t K, const float *restrict a, const float *restrict b,
                          float *restrict tile, int accumulate) {
#if defined(__AVX512F__)
    __m512 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71;
    if (accumulate) {
        c00 = _mm512_loadu_ps(tile + 0); c01 = _mm512_loadu_ps(tile + 16);
        c10 = _mm512_loadu_ps(tile + 32); c11 = _mm512_loadu_ps(tile + 48);
        c20 = _mm512_loadu_ps(tile + 64); c21 = _mm512_loadu_ps(tile + 80);
        c30 = _mm512_loadu_ps(tile + 96); c31 = _mm512_loadu_ps(tile + 112);
        c40 = _mm512_loadu_ps(tile + 128); c41 = _mm512_loadu_ps(tile + 144);
        c50 = _mm512_loadu_ps(tile + 160); c51 = _mm512_loadu_ps(tile + 176);
        c60 = _mm512_loadu_ps(tile + 192); c61 = _mm512_loadu_ps(tile + 208);
        c70 = _mm512_loadu_ps(tile + 224); c71 = _mm512_loadu_ps(tile + 240);
    } else {
        c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = _mm512_setzero_ps();
        c40 = c41 = c50 = c51 = c60 = c61 = c70 = c71 = _mm512_setzero_ps();
    }
#pragma GCC unroll 4
    for (int64_t k = 0; k < K; k++, a += 8, b += 32) {
        const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
#define TOD_FROW(r)                                                  \
    {                                                                \
        const __m512 ar = _mm512_set1_ps(a[r]);                      \
        c##r##0 = _mm512_fmadd_ps(ar, b0, c##r##0);                  \
        c##r##1 = _mm512_fmadd_ps(ar, b1, c##r##1);                  \
    }
        TOD_FROW(0) TOD_FROW(1) TOD_FROW(2) TOD_FROW(3)
        TOD_FROW(4) TOD_FROW(5) TOD_FROW(6) TOD_FROW(7)
#undef TOD_FROW
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
    __m256 c00, c01, c02, c10, c11, c12, c20, c21, c22, c30, c31, c32;
    if (accumulate) {
        c00 = _mm256_loadu_ps(tile + 0); c01 = _mm256_loadu_ps(tile + 8); c02 = _mm256_loadu_ps(tile + 16);
        c10 = _mm256_loadu_ps(tile + 24); c11 = _mm256_loadu_ps(tile + 32); c12 = _mm256_loadu_ps(tile + 40);
        c20 = _mm256_loadu_ps(tile + 48); c21 = _mm256_loadu_ps(tile + 56); c22 = _mm256_loadu_ps(tile + 64);
        c30 = _mm256_loadu_ps(tile + 72); c31 = _mm256_loadu_ps(tile + 80); c32 = _mm256_loadu_ps(tile + 88);
    } else {
        c00 = c01 = c02 = c10 = c11 = c12 = _mm256_setzero_ps();
        c20 = c21 = c22 = c30 = c31 = c32 = _mm256_setzero_ps();
    }
    for (int64_t k = 0; k < K; k++, a += 4, b += 24) {
        const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8),
                     b2 = _mm256_loadu_ps(b + 16);
#define TOD_FROW(r)                                                  \
    {                                                                \
        const __m256 ar = _mm256_broadcast_ss(a + r);                \
        c##r##0 = _mm256_fmadd_ps(ar, b0, c##r##0);                  \
        c##r##1 = _mm256_fmadd_ps(ar, b1, c##r##1);                  \
        c##r##2 = _mm256_fmadd_ps(ar, b2, c##r##2);                  \
    }
        TOD_FROW(0) TOD_FROW(1) TOD_FROW(2) TOD_FROW(3)
#undef TOD_FROW
    }
    _mm256_storeu_ps(tile + 0, c00); _mm256_storeu_ps(tile + 8, c01); _mm256_storeu_ps(tile + 16, c02);
    _mm256_storeu_ps(tile + 24, c10); _mm256_storeu_ps(tile + 32, c11); _mm256_storeu_ps(tile + 40, c12);
    _mm256_storeu_ps(tile + 48, c20); _mm256_storeu_ps(tile + 56, c21); _mm256_storeu_ps(tile + 64, c22);
    _mm256_storeu_ps(tile + 72, c30); _mm256_storeu_ps(tile + 80, c31); _mm256_storeu_ps(tile + 88, c32);
#endif
}

/* One segment of a panel: lanes [l0, l0 + len) hold pixels [p0, p0 + len) of image n. */
typedef struct {
    int64_t n, p0, l0, len;
} tod_segment;

/* The segments of panel columns [j0, j0 + ncols) of a batch of images of P pixels each. */
static int tod_panel_segments(int64_t j0, int64_t ncols, int64_t P, tod_segment *seg) {
    int count = 0;
    for (int64_t l = 0; l < ncols;) {
        const int64_t j = j0 + l, p = j % P, len = P - p < ncols - l ? P - p : ncols - l;
        seg[count].n = j / P;
        seg[count].p0 = p;
        seg[count].l0 = l;
        seg[count].len = len;
        count++;
        l += len;
    }
    return count;
}

/* Bit l of rows[kh] (cols[kw]) says whether lane l's pixel sees tap row kh (column kw)
 * inside the image; pixels past the segment get no bit. */
static void tod_tap_masks(const tod_segment *s, int64_t H, int64_t W, int64_t KH, int64_t KW,
                          int64_t PH, int64_t PW, uint32_t *rows, uint32_t *cols) {
    for (int64_t i = 0; i < KH; i++) rows[i] = 0;
    for (int64_t j = 0; j < KW; j++) cols[j] = 0;
    for (int64_t l = 0; l < s->len; l++) {
        const int64_t p = s->p0 + l, oh = p / W, ow = p % W;
        const uint32_t bit = (uint32_t)1 << (s->l0 + l);
        for (int64_t i = 0; i < KH; i++)
            if (oh + i - PH >= 0 && oh + i - PH < H) rows[i] |= bit;
        for (int64_t j = 0; j < KW; j++)
            if (ow + j - PW >= 0 && ow + j - PW < W) cols[j] |= bit;
    }
}

/* The implicit-im2col panel [K][NR] of columns [j0, j0 + ncols), K = C KH KW in (c, kh, kw)
 * order, for a stride-1 "same" convolution of x (N, C, H, W). */
typedef struct {
    int nseg;
    tod_segment seg[TOD_SNR];
    uint32_t rows[TOD_SNR][16], cols[TOD_SNR][16]; /* kernels up to 16 x 16 */
} tod_panel_info;

static void tod_panel_info_make(int64_t j0, int64_t ncols, int64_t H, int64_t W, int64_t KH,
                                int64_t KW, int64_t PH, int64_t PW, tod_panel_info *info) {
    info->nseg = tod_panel_segments(j0, ncols, H * W, info->seg);
    for (int s = 0; s < info->nseg; s++)
        tod_tap_masks(&info->seg[s], H, W, KH, KW, PH, PW, info->rows[s], info->cols[s]);
}

/* Rows of channels [c0, c1) of that panel. */
static void tod_pack_same_panel_f32(const float *x, int64_t C, int64_t H, int64_t W,
                                    int64_t KH, int64_t KW, int64_t PH, int64_t PW,
                                    const tod_panel_info *info, int64_t c0, int64_t c1,
                                    float *bpanel) {
    const int64_t P = H * W;
    const int nseg = info->nseg;
    const tod_segment *seg = info->seg;
    float *dst = bpanel;
    for (int64_t c = c0; c < c1; c++)
        for (int64_t i = 0; i < KH; i++)
            for (int64_t j = 0; j < KW; j++, dst += TOD_SNR) {
                const int64_t shift = (i - PH) * W + (j - PW);
#if defined(__AVX512F__)
                __m512 v0 = _mm512_setzero_ps(), v1 = v0;
                for (int s = 0; s < nseg; s++) {
                    const uint32_t m = info->rows[s][i] & info->cols[s][j];
                    /* lane l reads x[n, c, p0 + (l - l0) + shift] */
                    const float *base = x + (seg[s].n * C + c) * P + seg[s].p0 - seg[s].l0 + shift;
                    v0 = _mm512_mask_loadu_ps(v0, (__mmask16)(m & 0xFFFF), base);
                    v1 = _mm512_mask_loadu_ps(v1, (__mmask16)(m >> 16), base + 16);
                }
                _mm512_storeu_ps(dst, v0);
                _mm512_storeu_ps(dst + 16, v1);
#else
                __m256 v[3] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
                const __m256i lane = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
                for (int s = 0; s < nseg; s++) {
                    const uint32_t m = info->rows[s][i] & info->cols[s][j];
                    const float *base = x + (seg[s].n * C + c) * P + seg[s].p0 - seg[s].l0 + shift;
                    for (int q = 0; q < 3; q++) {
                        const uint32_t mq = (m >> (8 * q)) & 0xFF;
                        if (!mq) continue;
                        const __m256i k = _mm256_cmpeq_epi32(
                            _mm256_and_si256(_mm256_set1_epi32((int)mq), lane), lane);
                        v[q] = _mm256_blendv_ps(v[q], _mm256_maskload_ps(base + 8 * q, k),
                                                _mm256_castsi256_ps(k));
                    }
                }
                _mm256_storeu_ps(dst, v[0]);
                _mm256_storeu_ps(dst + 8, v[1]);
                _mm256_storeu_ps(dst + 16, v[2]);
#endif
            }
}

/* out (N, F, H, W) = conv(x, W) + bias for panels [pan0, pan1) of the N H W output pixels:
 * stride 1, "same" padding, no groups. apack: tod_pack_filters_f32 of W (F, K); bias may be
 * NULL. The caller's per-thread scratch: bpanel (KC x NR floats, KC = the rows of
 * TOD_CBLOCK channels) and tiles (F rounded up to MR, x NR). K is cut into blocks of whole
 * channels so that the packed block of the panel stays in L1 while every tile uses it. */
static void tod_conv_same_f32(const float *x, int64_t N, int64_t C, int64_t H, int64_t W,
                              int64_t KH, int64_t KW, int64_t PH, int64_t PW,
                              const float *apack, int64_t F, const float *bias, float *out,
                              int64_t pan0, int64_t pan1, float *bpanel, float *tiles) {
    const int64_t P = H * W, J = N * P, K = C * KH * KW, taps = KH * KW;
    const int64_t ftiles = (F + TOD_SMR - 1) / TOD_SMR, cb = tod_conv_cblock(KH, KW);
    tod_panel_info info;
    for (int64_t pan = pan0; pan < pan1; pan++) {
        const int64_t j0 = pan * TOD_SNR, ncols = J - j0 < TOD_SNR ? J - j0 : TOD_SNR;
        tod_panel_info_make(j0, ncols, H, W, KH, KW, PH, PW, &info);
        for (int64_t c0 = 0; c0 < C; c0 += cb) {
            const int64_t c1 = c0 + cb < C ? c0 + cb : C;
            tod_pack_same_panel_f32(x, C, H, W, KH, KW, PH, PW, &info, c0, c1, bpanel);
            for (int64_t t = 0; t < ftiles; t++)
                tod_sgemm_ukr((c1 - c0) * taps, apack + (t * K + c0 * taps) * TOD_SMR, bpanel,
                              tiles + t * TOD_SMR * TOD_SNR, c0 > 0);
        }
        for (int64_t f = 0; f < F; f++) {
            const float b = bias ? bias[f] : 0.0f;
            const float *row = tiles + f * TOD_SNR; /* tile t, row r: (t MR + r) NR */
            for (int s = 0; s < info.nseg; s++) {
                float *o = out + (info.seg[s].n * F + f) * P + info.seg[s].p0;
                const float *src = row + info.seg[s].l0;
                for (int64_t l = 0; l < info.seg[s].len; l++) o[l] = src[l] + b;
            }
        }
    }
}

#else  /* no AVX2/AVX-512 build: conv.pyx never calls this (it checks TOD_HAVE_SGEMM) */
static void tod_conv_same_f32(const float *x, int64_t N, int64_t C, int64_t H, int64_t W,
                              int64_t KH, int64_t KW, int64_t PH, int64_t PW,
                              const float *apack, int64_t F, const float *bias, float *out,
                              int64_t pan0, int64_t pan1, float *bpanel, float *tiles) {
    (void)x; (void)N; (void)C; (void)H; (void)W; (void)KH; (void)KW; (void)PH; (void)PW;
    (void)apack; (void)F; (void)bias; (void)out; (void)pan0; (void)pan1; (void)bpanel;
    (void)tiles;
}
#endif /* TOD_HAVE_SGEMM */
#endif /* TINYODL_FLOAT_GEMM_H */
