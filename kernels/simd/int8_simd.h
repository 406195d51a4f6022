/* tinyodl int8 kernels in C: the SIMD paths, the packing routines and the run-time choice.
 *
 * Chapter 03. kernels/int8.pyx (the fast twin of tinyodl/reference/int8.py) drives these
 * pieces; kernels/gemm_steps.pyx shows how a GEMM gets from the textbook triple loop to
 * the micro-kernels of int8_ukernels.h, one step at a time.
 *
 * Paths. tod_set_isa() picks one of TOD_ISA_PORTABLE / _AVX2 / _AVX512_VNNI for every
 * int8 kernel of the module (the best one the CPU supports by default); the tests force
 * each path in turn and compare it bit for bit with the numpy reference.
 */
#ifndef TINYODL_INT8_SIMD_H
#define TINYODL_INT8_SIMD_H

#include "int8_ukernels.h"

/* ---- the epilogues, compiled once per path (see int8_epilogue.h) ------------------- */
#define TOD_TARGET
#define TOD_SUFFIX(name) name##_portable
#include "int8_epilogue.h"
#undef TOD_TARGET
#undef TOD_SUFFIX
#if TOD_X86
#define TOD_TARGET TOD_AVX2_TARGET
#define TOD_SUFFIX(name) name##_avx2
#include "int8_epilogue.h"
#undef TOD_TARGET
#undef TOD_SUFFIX
#define TOD_TARGET TOD_VNNI_TARGET
#define TOD_SUFFIX(name) name##_vnni
#include "int8_epilogue.h"
#undef TOD_TARGET
#undef TOD_SUFFIX
#endif

#include "int8_requant.h" /* the explicit SIMD requantization (AVX2, AVX-512) */

typedef void (*tod_requant_row_fn)(const int32_t *, int64_t, int64_t, int32_t, int32_t, int,
                                   int32_t, int32_t, int32_t, int8_t *);
/* bias32: the same biases as int32, or NULL if one of them does not fit */
typedef void (*tod_requant_tile_fn)(const int32_t *acc, int64_t ldt, int64_t rows,
                                    int64_t width, const int32_t *bias32, const int64_t *bias,
                                    const int32_t *m0, const int32_t *left,
                                    const int32_t *right, int single, int32_t zp, int32_t lo,
                                    int32_t hi, int8_t *out, int64_t ldo);
typedef void (*tod_dw_tap_fn)(int32_t *, const int16_t *, int64_t, int32_t);
typedef void (*tod_rowsum_fn)(const int8_t *, int64_t, int64_t, int64_t, int64_t *);
typedef void (*tod_colsum_fn)(const int8_t *, int64_t, int64_t, int64_t, int32_t *, int64_t *);

static void tod_requant_tile_portablex(const int32_t *acc, int64_t ldt, int64_t rows,
                                       int64_t width, const int32_t *bias32,
                                       const int64_t *bias, const int32_t *m0,
                                       const int32_t *left, const int32_t *right, int single,
                                       int32_t zp, int32_t lo, int32_t hi, int8_t *out,
                                       int64_t ldo) {
    (void)bias32;
    tod_requant_tile_portable(acc, ldt, rows, width, bias, m0, left, right, single, zp, lo, hi,
                              out, ldo);
}

/* Everything that depends on the path, in one struct the drivers read. */
typedef struct {
    tod_gemm_path gemm;
    tod_requant_row_fn requant_row;
    tod_requant_tile_fn requant_tile;
    tod_dw_tap_fn dw_tap;
    tod_rowsum_fn rowsum;
    tod_colsum_fn colsum;
} tod_int8_path;

static inline tod_int8_path tod_int8_path_of(int isa) {
    tod_int8_path p;
    p.gemm = tod_gemm_path_of(isa);
    p.requant_row = tod_requant_row_portable;
    p.requant_tile = tod_requant_tile_portablex;
    p.dw_tap = tod_dw_tap_s16_portable;
    p.rowsum = tod_rowsum_s8_portable;
    p.colsum = tod_colsum_s8_portable;
#if TOD_X86
    if (p.gemm.isa == TOD_ISA_AVX2) {
        p.requant_row = tod_requant_row_avx2x;
        p.requant_tile = tod_requant_tile_avx2x;
        p.dw_tap = tod_dw_tap_s16_avx2;
        p.rowsum = tod_rowsum_s8_avx2;
        p.colsum = tod_colsum_s8_avx2;
    } else if (p.gemm.isa == TOD_ISA_AVX512_VNNI) {
        p.requant_row = tod_requant_row_vnnix;
        p.requant_tile = tod_requant_tile_vnnix;
        p.dw_tap = tod_dw_tap_s16_vnni;
        p.rowsum = tod_rowsum_s8_vnni;
        p.colsum = tod_colsum_s8_vnni;
    }
#endif
    return p;
}

/* dst (rows, kp) = src (rows, k; row stride ld) XOR mask, zero-padded to kp columns: the
 * broadcast operand of a linear layer, stored as u8 = x + 128 for the VNNI and portable
 * paths (mask 0x80; the padding then holds the code of 0, i.e. mask). */
#if TOD_X86 && defined(__linux__) && !defined(__clang__)
/* one clone per ISA, chosen when the module loads (an ifunc): 64 bytes per step with AVX-512 */
#define TOD_COPY_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define TOD_COPY_CLONES
#endif
TOD_COPY_CLONES static void tod_copy_rows_xor(const int8_t *src, int64_t rows, int64_t k,
                                              int64_t ld, uint8_t mask, int64_t kp,
                                              uint8_t *dst) {
    if (k == kp && ld == k) { /* same layout: one flat pass, eight bytes at a time */
        const int64_t total = rows * k, mask64 = (int64_t)(0x0101010101010101ull * mask);
        int64_t i = 0;
        for (; i + 8 <= total; i += 8) {
            int64_t v;
            memcpy(&v, src + i, 8);
            v ^= mask64;
            memcpy(dst + i, &v, 8);
        }
        for (; i < total; i++) dst[i] = (uint8_t)src[i] ^ mask;
        return;
    }
    for (int64_t r = 0; r < rows; r++) {
        const int8_t *s = src + r * ld;
        uint8_t *d = dst + r * kp;
        for (int64_t i = 0; i < k; i++) d[i] = (uint8_t)s[i] ^ mask;
        for (int64_t i = k; i < kp; i++) d[i] = mask;
    }
}

/* ------------------------------------------------------------------------------------
 * Packing the vector operand into panels [cols / nr][kq][nr][4]
 * ------------------------------------------------------------------------------------
 * Padding: k >= K and columns >= cols hold the packed value of 0 (0 ^ xor_mask), so they
 * add nothing whatever the broadcast operand holds there. */

/* The vector operand given as `cols` rows of K bytes (row stride ld): linear weights. */
static void tod_pack_rows(const int8_t *src, int64_t cols, int64_t k, int64_t ld, int nr,
                          uint8_t xor_mask, int64_t kq, uint8_t *dst) {
    const int64_t panels = (cols + nr - 1) / nr, kfull = k / 4 < kq ? k / 4 : kq;
    const uint32_t mask32 = 0x01010101u * xor_mask;
    for (int64_t p = 0; p < panels; p++) {
        uint8_t *panel = dst + p * kq * nr * 4;
        const int64_t ncols = cols - p * nr < nr ? cols - p * nr : nr;
        if (ncols < nr || kfull < kq) /* padding columns, and the last group of k */
            memset(panel, xor_mask, (size_t)(kq * nr * 4));
        for (int64_t j = 0; j < ncols; j++) {
            const int8_t *row = src + (p * nr + j) * ld;
            uint8_t *d = panel + j * 4;
            for (int64_t q = 0; q < kfull; q++) { /* four k of one column: one 32-bit move */
                uint32_t v;
                memcpy(&v, row + 4 * q, 4);
                v ^= mask32;
                memcpy(d + q * nr * 4, &v, 4);
            }
            for (int64_t kk = 4 * kfull; kk < k && kk < 4 * kq; kk++)
                d[(kk >> 2) * nr * 4 + (kk & 3)] = (uint8_t)row[kk] ^ xor_mask;
        }
    }
}

/* The vector operand given as a (K, cols) row-major matrix (row stride ld): gemm_s8's b. */
static void tod_pack_cols(const int8_t *src, int64_t cols, int64_t k, int64_t ld, int nr,
                          uint8_t xor_mask, int64_t kq, uint8_t *dst) {
    int64_t panels = (cols + nr - 1) / nr;
    for (int64_t p = 0; p < panels; p++) {
        uint8_t *panel = dst + p * kq * nr * 4;
        int64_t width = cols - p * nr < nr ? cols - p * nr : nr;
        memset(panel, xor_mask, (size_t)(kq * nr * 4));
        for (int64_t kk = 0; kk < k; kk++) {
            const int8_t *row = src + kk * ld + p * nr;
            uint8_t *d = panel + (kk >> 2) * nr * 4 + (kk & 3);
            for (int64_t j = 0; j < width; j++) d[4 * j] = (uint8_t)row[j] ^ xor_mask;
        }
    }
}

/* ------------------------------------------------------------------------------------
 * Convolutions: a padded channels-last copy of the input, then im2col one panel at a time
 * ------------------------------------------------------------------------------------ */

/* (C, H, W) int8 image -> (PT + H + PB, PL + W + PR, C) bytes holding x ^ xor_mask, with a
 * border of `pad` (the packed input zero point, so that padding taps contribute nothing).
 * Top/bottom and left/right may differ (TFLite's SAME padding at stride 2). */
static void tod_to_padded_hwc(const int8_t *x, int64_t C, int64_t H, int64_t W, int64_t PT,
                              int64_t PB, int64_t PL, int64_t PR, uint8_t xor_mask,
                              uint8_t pad, uint8_t *dst) {
    const int64_t Wp = PL + W + PR, Hp = PT + H + PB;
    for (int64_t r = 0; r < Hp; r++) {
        uint8_t *row = dst + r * Wp * C;
        if (r < PT || r >= PT + H) {
            memset(row, pad, (size_t)(Wp * C));
            continue;
        }
        memset(row, pad, (size_t)(PL * C));
        memset(row + (PL + W) * C, pad, (size_t)(PR * C));
        const int8_t *src = x + (r - PT) * W;
        uint8_t *d = row + PL * C;
        for (int64_t w = 0; w < W; w++)
            for (int64_t c = 0; c < C; c++) d[w * C + c] = (uint8_t)src[c * H * W + w] ^ xor_mask;
    }
}

/* Geometry of an int8 convolution over a padded channels-last batch. */
typedef struct {
    int64_t C, Hp, Wp, KH, KW, SH, SW, OH, OW;
} tod_conv_geom;

/* im2col of columns [j0, j0 + ncols) into one packed panel [kq][nr][4]. Column j is the
 * output pixel (n, oh, ow) of the flattened batch; its K = KH * KW * Cg values are taken in
 * (i, j, c) order from channels [c0, c0 + Cg) of the padded channels-last batch `hwc`
 * (the weights are packed in the same order). */
static void tod_pack_conv_panel(const uint8_t *hwc, const tod_conv_geom *g, int64_t c0,
                                int64_t Cg, int64_t j0, int64_t ncols, int nr, uint8_t fill,
                                int64_t kq, uint8_t *dst) {
    const int64_t P = g->OH * g->OW, image = g->Hp * g->Wp * g->C;
    const int64_t row4 = (int64_t)nr * 4;
    int64_t n = j0 / P, p = j0 % P, oh = p / g->OW, ow = p % g->OW;
    for (int64_t jj = 0; jj < ncols; jj++) {
        const uint8_t *base =
            hwc + n * image + ((oh * g->SH) * g->Wp + ow * g->SW) * g->C + c0;
        uint8_t *col = dst + jj * 4;
        if ((Cg & 3) == 0) { /* whole groups of four channels: copy 32-bit words */
            int64_t q = 0;
            for (int64_t i = 0; i < g->KH; i++)
                for (int64_t j = 0; j < g->KW; j++) {
                    const uint8_t *src = base + (i * g->Wp + j) * g->C;
                    for (int64_t c = 0; c < Cg; c += 4, q++) memcpy(col + q * row4, src + c, 4);
                }
        } else {
            int64_t t = 0;
            for (int64_t i = 0; i < g->KH; i++)
                for (int64_t j = 0; j < g->KW; j++) {
                    const uint8_t *src = base + (i * g->Wp + j) * g->C;
                    for (int64_t c = 0; c < Cg; c++, t++) col[(t >> 2) * row4 + (t & 3)] = src[c];
                }
            for (; t < 4 * kq; t++) col[(t >> 2) * row4 + (t & 3)] = fill;
        }
        if (++ow == g->OW) { /* next output pixel */
            ow = 0;
            if (++oh == g->OH) {
                oh = 0;
                n++;
            }
        }
    }
    for (int64_t jj = ncols; jj < nr; jj++) /* columns past the end of the batch */
        for (int64_t q = 0; q < kq; q++) memset(dst + q * row4 + jj * 4, fill, 4);
}

/* A 1x1 convolution with stride 1 and no padding needs no im2col: column j is the pixel
 * (n, p) of the NCHW batch x (N, C, P) and k is the channel, so a panel interleaves four
 * channel rows at a time. Channels past Cg (k padding) and columns past ncols hold 0. */
static void tod_pack_pointwise_panel(const int8_t *x, int64_t C, int64_t P, int64_t c0,
                                     int64_t Cg, int64_t j0, int64_t ncols, int nr,
                                     uint8_t xor_mask, int64_t kq, uint8_t *dst) {
    const int64_t row4 = (int64_t)nr * 4;
    int64_t jj = 0;
    while (jj < ncols) { /* one run of columns inside one image */
        const int64_t j = j0 + jj, n = j / P, p = j % P;
        const int64_t len = P - p < ncols - jj ? P - p : ncols - jj;
        const int8_t *base = x + (n * C + c0) * P + p;
        for (int64_t q = 0; q < kq; q++) {
            uint8_t *d = dst + q * row4 + jj * 4;
            if (4 * q + 4 <= Cg) {
                const int8_t *s0 = base + (4 * q) * P, *s1 = s0 + P, *s2 = s1 + P, *s3 = s2 + P;
                for (int64_t l = 0; l < len; l++) {
                    d[4 * l] = (uint8_t)s0[l] ^ xor_mask;
                    d[4 * l + 1] = (uint8_t)s1[l] ^ xor_mask;
                    d[4 * l + 2] = (uint8_t)s2[l] ^ xor_mask;
                    d[4 * l + 3] = (uint8_t)s3[l] ^ xor_mask;
                }
            } else {
                for (int64_t t = 0; t < 4; t++) {
                    const int64_t c = 4 * q + t;
                    for (int64_t l = 0; l < len; l++)
                        d[4 * l + t] = c < Cg ? (uint8_t)base[c * P + l] ^ xor_mask : xor_mask;
                }
            }
        }
        jj += len;
    }
    for (int64_t q = 0; q < kq; q++)
        if (ncols < nr) memset(dst + q * row4 + ncols * 4, xor_mask, (size_t)((nr - ncols) * 4));
}

/* ------------------------------------------------------------------------------------
 * Depthwise convolutions: one plane at a time, on S x S "phase planes"
 * ------------------------------------------------------------------------------------
 * With stride S the output pixel (oh, ow) reads the padded input at (oh S + i, ow S + j).
 * Splitting the padded plane by (row mod S, column mod S) into S^2 phase planes of width
 * Wq turns every tap into a shift: plane[(i mod S, j mod S)][(oh + i / S) Wq + ow + j / S].
 * So one tap is a single long loop over the "virtual" output t = oh Wq + ow (columns
 * ow >= OW are computed and dropped), which vectorizes whatever the map size and stride.
 * Planes hold x - zp as int16 (zero in the padding), Hq = OH + (KH-1)/SH + 1 rows, and
 * Wq = OW + (KW-1)/SW columns. */
static void tod_dw_phase_planes_s8(const int8_t *x, int64_t H, int64_t W, int32_t zp,
                                   int64_t SH, int64_t SW, int64_t PH, int64_t PW,
                                   int64_t Hq, int64_t Wq, int16_t *planes) {
    const int64_t plane = Hq * Wq;
    memset(planes, 0, (size_t)(SH * SW * plane) * sizeof(int16_t));
    for (int64_t h = 0; h < H; h++) {
        int64_t r = h + PH, u = r / SH;
        if (u >= Hq) break;
        int16_t *rowbase = planes + (r % SH) * SW * plane + u * Wq;
        const int8_t *src = x + h * W;
        if (SW == 1) {
            int64_t v0 = PW, n = W < Wq - v0 ? W : Wq - v0;
            for (int64_t w = 0; w < n; w++) rowbase[v0 + w] = (int16_t)(src[w] - zp);
            continue;
        }
        for (int64_t w = 0; w < W; w++) {
            int64_t s = w + PW, v = s / SW;
            if (v < Wq) rowbase[(s % SW) * plane + v] = (int16_t)(src[w] - zp);
        }
    }
}

#endif /* TINYODL_INT8_SIMD_H */
