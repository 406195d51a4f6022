/* tinyodl requantization in SIMD registers (AVX2: 8 lanes, AVX-512: 16 lanes).
 *
 * Chapter 03. The same arithmetic as tod_requant_row/_cols in int8_epilogue.h (read that
 * first), kept in 32-bit lanes so that AVX2 can do it too:
 *
 *   v = sat32(acc + bias)          wrapping add, then overflow test on the signs
 *   x = sat32(v << left)           compare v with INT32_MAX >> left and INT32_MIN >> left
 *   h = (x * M0 + 2^30) >> 31      32 x 32 -> 64-bit products of the even and the odd
 *                                  lanes (vpmuldq), bits 31..62 put back into 32 bits
 *   y = (h >> right) + ((h & mask) > (mask >> 1) + (h < 0))
 *   out = clamp(y, lo - zp, hi - zp) + zp           then narrowed to int8
 *
 * The left shift (and its saturation) is skipped when no channel of the row or chunk has a
 * positive shift, the usual case of a multiplier below 1.
 *
 * Only double rounding with a bias that fits in int32 takes this route; anything else
 * (single rounding, an extreme folded bias, the last few elements on AVX2) calls the
 * plain C of int8_epilogue.h for that row. Tests force both routes and compare bit for bit.
 *
 * linear_s8's fused tiles have a shorter route still (tod_rqs16_* below, tod_rqs8_* its
 * AVX2 twin) for the usual case |acc + bias| < 2^30 with no left shift: 10 instructions per
 * 16 outputs instead of 15 on AVX-512.
 */
#ifndef TINYODL_INT8_REQUANT_H
#define TINYODL_INT8_REQUANT_H

#if TOD_X86

/* --------------------------------------------------------------- AVX2, 8 lanes ---- */

/* Per-lane requantization parameters (constants of a row, or of 8 channels). */
typedef struct {
    __m256i bias, m0, left, right, lim_hi, lim_lo, mask, half;
} tod_rq8;

TOD_AVX2_TARGET static inline tod_rq8 tod_rq8_make(__m256i bias, __m256i m0, __m256i left,
                                                   __m256i right) {
    tod_rq8 p;
    p.bias = bias;
    p.m0 = m0;
    p.left = left;
    p.right = right;
    p.lim_hi = _mm256_srav_epi32(_mm256_set1_epi32(INT32_MAX), left);
    p.lim_lo = _mm256_srav_epi32(_mm256_set1_epi32(INT32_MIN), left);
    p.mask = _mm256_sub_epi32(_mm256_sllv_epi32(_mm256_set1_epi32(1), right),
                              _mm256_set1_epi32(1));
    p.half = _mm256_srai_epi32(p.mask, 1);
    return p;
}

/* y (before the output zero point) of 8 lanes whose sum with the bias, v, is already
 * saturated to int32. */
TOD_AVX2_TARGET static inline __m256i tod_rq8_apply_v(__m256i v, const tod_rq8 *p,
                                                     int has_left) {
    __m256i x = v;
    if (has_left) { /* only when some channel multiplies by 2^shift first */
        x = _mm256_sllv_epi32(v, p->left);
        x = _mm256_blendv_epi8(x, _mm256_set1_epi32(INT32_MAX), _mm256_cmpgt_epi32(v, p->lim_hi));
        x = _mm256_blendv_epi8(x, _mm256_set1_epi32(INT32_MIN), _mm256_cmpgt_epi32(p->lim_lo, v));
    }
    const __m256i nudge = _mm256_set1_epi64x((int64_t)1 << 30);
    __m256i pe = _mm256_add_epi64(_mm256_mul_epi32(x, p->m0), nudge);
    __m256i po = _mm256_add_epi64(
        _mm256_mul_epi32(_mm256_srli_epi64(x, 32), _mm256_srli_epi64(p->m0, 32)), nudge);
    /* even lanes: bits 31..62 to the low half; odd lanes: to the high half */
    const __m256i h = _mm256_blend_epi32(_mm256_srli_epi64(pe, 31), _mm256_slli_epi64(po, 1), 0xAA);
    __m256i y = _mm256_srav_epi32(h, p->right);
    const __m256i thr = _mm256_add_epi32(p->half, _mm256_srli_epi32(h, 31));
    y = _mm256_sub_epi32(y, _mm256_cmpgt_epi32(_mm256_and_si256(h, p->mask), thr));
    return y;
}

/* y (before the output zero point) of 8 int32 accumulators. */
TOD_AVX2_TARGET static inline __m256i tod_rq8_apply(__m256i acc, const tod_rq8 *p,
                                                   int has_left) {
    const __m256i s = _mm256_add_epi32(acc, p->bias);
    const __m256i ov = _mm256_srai_epi32(
        _mm256_and_si256(_mm256_xor_si256(acc, s), _mm256_xor_si256(p->bias, s)), 31);
    const __m256i sat = _mm256_xor_si256(_mm256_srai_epi32(p->bias, 31),
                                         _mm256_set1_epi32(INT32_MAX));
    return tod_rq8_apply_v(_mm256_blendv_epi8(s, sat, ov), p, has_left);
}

/* clamp to [lo - zp, hi - zp], add zp (no overflow, same result as clamping after the add)
 * and store 8 int8 */
TOD_AVX2_TARGET static inline void tod_rq8_store(__m256i y, __m256i zp, __m256i lo_zp,
                                                 __m256i hi_zp, int8_t *out) {
    y = _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(y, lo_zp), hi_zp), zp);
    const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(y), _mm256_extracti128_si256(y, 1));
    _mm_storel_epi64((__m128i *)out, _mm_packs_epi16(w16, w16));
}

static inline int tod_fits_i32(int64_t v) { return v >= INT32_MIN && v <= INT32_MAX; }

TOD_AVX2_TARGET static void tod_requant_row_avx2x(const int32_t *acc, int64_t n, int64_t bias,
                                                  int32_t m0, int32_t shift, int single,
                                                  int32_t zp, int32_t lo, int32_t hi,
                                                  int8_t *out) {
    int64_t i = 0;
    if (!single && tod_fits_i32(bias)) {
        const tod_rq8 p = tod_rq8_make(_mm256_set1_epi32((int32_t)bias), _mm256_set1_epi32(m0),
                                       _mm256_set1_epi32(shift > 0 ? shift : 0),
                                       _mm256_set1_epi32(shift < 0 ? -shift : 0));
        const __m256i vzp = _mm256_set1_epi32(zp), vlo = _mm256_set1_epi32(lo - zp),
                      vhi = _mm256_set1_epi32(hi - zp);
        const int has_left = shift > 0;
        for (; i + 8 <= n; i += 8)
            tod_rq8_store(tod_rq8_apply(_mm256_loadu_si256((const __m256i *)(acc + i)), &p,
                                        has_left),
                          vzp, vlo, vhi, out + i);
    }
    if (i < n) tod_requant_row_avx2(acc + i, n - i, bias, m0, shift, single, zp, lo, hi, out + i);
}

TOD_AVX2_TARGET static void tod_requant_tile_avx2x(
    const int32_t *acc, int64_t ldt, int64_t rows, int64_t width, const int32_t *bias32,
    const int64_t *bias, const int32_t *m0, const int32_t *left, const int32_t *right,
    int single, int32_t zp, int32_t lo, int32_t hi, int8_t *out, int64_t ldo) {
    int64_t j = 0;
    if (!single && bias32 != NULL) { /* 8 channels at a time, their parameters set up once */
        const __m256i vzp = _mm256_set1_epi32(zp), vlo = _mm256_set1_epi32(lo - zp),
                      vhi = _mm256_set1_epi32(hi - zp);
        for (; j + 8 <= width; j += 8) {
            const tod_rq8 p = tod_rq8_make(_mm256_loadu_si256((const __m256i *)(bias32 + j)),
                                           _mm256_loadu_si256((const __m256i *)(m0 + j)),
                                           _mm256_loadu_si256((const __m256i *)(left + j)),
                                           _mm256_loadu_si256((const __m256i *)(right + j)));
            const int has_left = !_mm256_testz_si256(p.left, p.left);
            for (int64_t r = 0; r < rows; r++) {
                const __m256i a = _mm256_loadu_si256((const __m256i *)(acc + r * ldt + j));
                tod_rq8_store(tod_rq8_apply(a, &p, has_left), vzp, vlo, vhi, out + r * ldo + j);
            }
        }
    }
    if (j < width)
        tod_requant_tile_avx2(acc + j, ldt, rows, width - j, bias + j, m0 + j, left + j,
                              right + j, single, zp, lo, hi, out + j, ldo);
}

/* linear_s8's 4 x 16 AVX2 tile, requantized in registers (see tod_linear_tile_vnni below:
 * the same contract; here x stays signed and the weights are the safe operand). */
TOD_AVX2_TARGET static inline void tod_rq8_row_out(__m256i acc, const tod_rq8 *p, int has_left,
                                                   int nosat, __m256i vzp, __m256i vlo,
                                                   __m256i vhi, int64_t n, int8_t *out) {
    const __m256i y = nosat ? tod_rq8_apply_v(_mm256_add_epi32(acc, p->bias), p, has_left)
                            : tod_rq8_apply(acc, p, has_left);
    if (n >= 8) {
        tod_rq8_store(y, vzp, vlo, vhi, out);
    } else { /* the last channels of the layer */
        int8_t tmp[8];
        tod_rq8_store(y, vzp, vlo, vhi, tmp);
        memcpy(out, tmp, (size_t)n);
    }
}

/* The short route of linear_s8's VNNI tile (see the comment above tod_rqs16_make below),
 * 8 lanes: the same 64-bit constants, h gathered with vpshufd + vpblendd, the correction
 * added as a compare mask (-1). */
typedef struct {
    __m256i m0, m0o, n2e, n2o, t, e;
} tod_rqs8;

TOD_AVX2_TARGET static inline tod_rqs8 tod_rqs8_make(__m256i b, __m256i m, __m256i e) {
    tod_rqs8 p;
    const __m256i b2 = _mm256_add_epi32(b, b);
    p.m0 = m;
    p.m0o = _mm256_shuffle_epi32(m, 0xF5); /* odd channels in the even slots */
    p.e = e;
    const __m256i half = _mm256_srli_epi32(_mm256_sllv_epi32(_mm256_set1_epi32(1), e), 1);
    const __m256i r31 = _mm256_set1_epi64x((int64_t)1 << 31);
    p.n2e = _mm256_add_epi64(_mm256_or_si256(_mm256_slli_epi64(half, 32), r31),
                             _mm256_mul_epi32(b2, m));
    p.n2o = _mm256_add_epi64(_mm256_blend_epi32(half, r31, 0x55),
                             _mm256_mul_epi32(_mm256_shuffle_epi32(b2, 0xF5), p.m0o));
    p.t = _mm256_blendv_epi8(_mm256_sub_epi32(_mm256_setzero_si256(), b),
                             _mm256_set1_epi32(INT32_MIN),
                             _mm256_cmpeq_epi32(e, _mm256_setzero_si256()));
    return p;
}

TOD_AVX2_TARGET static inline __m256i tod_rqs8_y(__m256i acc, const tod_rqs8 *p) {
    const __m256i a2 = _mm256_add_epi32(acc, acc);
    const __m256i pe = _mm256_add_epi64(_mm256_mul_epi32(a2, p->m0), p->n2e);
    const __m256i po = _mm256_add_epi64(
        _mm256_mul_epi32(_mm256_shuffle_epi32(a2, 0xF5), p->m0o), p->n2o);
    __m256i h = _mm256_blend_epi32(_mm256_shuffle_epi32(pe, 0xF5), po, 0xAA);
    h = _mm256_add_epi32(h, _mm256_cmpgt_epi32(p->t, acc)); /* - [v < 0 and e > 0] */
    return _mm256_srav_epi32(h, p->e);
}

/* 16 y of one row (channels 0-7 in y0, 8-15 in y1) -> n <= 16 int8: packs to int16, zero
 * point, packs to int8, clamp, one vpermd to undo the packs' interleaving by lanes. */
TOD_AVX2_TARGET static inline void tod_rqs8_store16(__m256i y0, __m256i y1, __m256i zp16,
                                                    int clamp, __m128i lo8, __m128i hi8,
                                                    int64_t n, int8_t *out) {
    const __m256i w = _mm256_adds_epi16(_mm256_packs_epi32(y0, y1), zp16);
    const __m256i v = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(w, w),
                                                  _mm256_setr_epi32(0, 4, 1, 5, 0, 4, 1, 5));
    __m128i r = _mm256_castsi256_si128(v);
    if (clamp) r = _mm_min_epi8(_mm_max_epi8(r, lo8), hi8);
    if (n >= 16) {
        _mm_storeu_si128((__m128i *)out, r);
    } else { /* the last channels of the layer */
        int8_t tmp[16];
        _mm_storeu_si128((__m128i *)tmp, r);
        memcpy(out, tmp, (size_t)n);
    }
}

TOD_AVX2_TARGET __attribute__((noinline)) static void tod_linear_tile_avx2_short(
    int64_t kq, const int8_t *a, int64_t lda, int mr, const uint8_t *b, int64_t width,
    const int32_t *bias32, const int32_t *m0, const int32_t *right, int32_t zp, int32_t lo,
    int32_t hi, int8_t *out, int64_t ldo) {
    TOD_AVX2_VSAFE_ACCUMULATE(kq, a, lda, mr, b); /* the loop of tod_ukr_avx2_vsafe */
    /* (as TOD_PIN_ACCUMULATORS below: fewer register moves and spills in that loop) */
    __asm__("" : "+x"(c00), "+x"(c01), "+x"(c10), "+x"(c11), "+x"(c20), "+x"(c21), "+x"(c30),
            "+x"(c31));
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i k0 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int32_t)width), lane);
    const __m256i k1 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int32_t)width - 8), lane);
    const tod_rqs8 p0 = tod_rqs8_make(_mm256_maskload_epi32(bias32, k0),
                                      _mm256_maskload_epi32(m0, k0),
                                      _mm256_maskload_epi32(right, k0));
    const tod_rqs8 p1 = tod_rqs8_make(_mm256_maskload_epi32(bias32 + 8, k1),
                                      _mm256_maskload_epi32(m0 + 8, k1),
                                      _mm256_maskload_epi32(right + 8, k1));
    const __m256i zp16 = _mm256_set1_epi16((int16_t)zp);
    const __m128i lo8 = _mm_set1_epi8((char)lo), hi8 = _mm_set1_epi8((char)hi);
    const int clamp = lo > -128 || hi < 127;
#define TOD_RQS_ROW(r)                                                                     \
    if (mr > r)                                                                            \
    tod_rqs8_store16(tod_rqs8_y(c##r##0, &p0), tod_rqs8_y(c##r##1, &p1), zp16, clamp, lo8, \
                     hi8, width, out + r * ldo)
    TOD_RQS_ROW(0);
    TOD_RQS_ROW(1);
    TOD_RQS_ROW(2);
    TOD_RQS_ROW(3);
#undef TOD_RQS_ROW
}

TOD_AVX2_TARGET static void tod_linear_tile_avx2(int64_t kq, const int8_t *a, int64_t lda,
                                                 int mr, const uint8_t *b, int64_t width,
                                                 const int32_t *bias32, const int32_t *m0,
                                                 const int32_t *left, const int32_t *right,
                                                 int nosat, int32_t zp, int32_t lo, int32_t hi,
                                                 int8_t *out, int64_t ldo) {
    if (nosat == 2) { /* TOD_RQ_SHORT (the enum is defined below) */
        tod_linear_tile_avx2_short(kq, a, lda, mr, b, width, bias32, m0, right, zp, lo, hi,
                                   out, ldo);
        return;
    }
    TOD_AVX2_VSAFE_ACCUMULATE(kq, a, lda, mr, b); /* the loop of tod_ukr_avx2_vsafe */
    const __m256i vzp = _mm256_set1_epi32(zp), vlo = _mm256_set1_epi32(lo - zp),
                  vhi = _mm256_set1_epi32(hi - zp);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int h = 0; h < 2 && 8 * h < width; h++) {
        const int64_t n = width - 8 * h < 8 ? width - 8 * h : 8;
        const __m256i k = _mm256_cmpgt_epi32(_mm256_set1_epi32((int32_t)n), lane);
        const tod_rq8 p = tod_rq8_make(_mm256_maskload_epi32(bias32 + 8 * h, k),
                                       _mm256_maskload_epi32(m0 + 8 * h, k),
                                       _mm256_maskload_epi32(left + 8 * h, k),
                                       _mm256_maskload_epi32(right + 8 * h, k));
        const int has_left = !_mm256_testz_si256(p.left, p.left);
        int8_t *o = out + 8 * h;
        if (mr > 0) tod_rq8_row_out(h ? c01 : c00, &p, has_left, nosat, vzp, vlo, vhi, n, o);
        if (mr > 1) tod_rq8_row_out(h ? c11 : c10, &p, has_left, nosat, vzp, vlo, vhi, n, o + ldo);
        if (mr > 2)
            tod_rq8_row_out(h ? c21 : c20, &p, has_left, nosat, vzp, vlo, vhi, n, o + 2 * ldo);
        if (mr > 3)
            tod_rq8_row_out(h ? c31 : c30, &p, has_left, nosat, vzp, vlo, vhi, n, o + 3 * ldo);
    }
}

/* ------------------------------------------------------------ AVX-512, 16 lanes ---- */

typedef struct {
    __m512i bias, m0, left, right, lim_hi, lim_lo, mask, half;
} tod_rq16;

TOD_VNNI_TARGET static inline tod_rq16 tod_rq16_make(__m512i bias, __m512i m0, __m512i left,
                                                     __m512i right) {
    tod_rq16 p;
    p.bias = bias;
    p.m0 = m0;
    p.left = left;
    p.right = right;
    p.lim_hi = _mm512_srav_epi32(_mm512_set1_epi32(INT32_MAX), left);
    p.lim_lo = _mm512_srav_epi32(_mm512_set1_epi32(INT32_MIN), left);
    p.mask = _mm512_sub_epi32(_mm512_sllv_epi32(_mm512_set1_epi32(1), right),
                              _mm512_set1_epi32(1));
    p.half = _mm512_srai_epi32(p.mask, 1);
    return p;
}

/* y of 16 accumulators whose sum with the bias, v, is already saturated to int32. */
TOD_VNNI_TARGET static inline __m512i tod_rq16_apply_v(__m512i v, const tod_rq16 *p,
                                                       int has_left) {
    __m512i x = v;
    if (has_left) {
        x = _mm512_sllv_epi32(v, p->left);
        x = _mm512_mask_mov_epi32(x, _mm512_cmpgt_epi32_mask(v, p->lim_hi),
                                  _mm512_set1_epi32(INT32_MAX));
        x = _mm512_mask_mov_epi32(x, _mm512_cmplt_epi32_mask(v, p->lim_lo),
                                  _mm512_set1_epi32(INT32_MIN));
    }
    const __m512i nudge = _mm512_set1_epi64((int64_t)1 << 30);
    __m512i pe = _mm512_add_epi64(_mm512_mul_epi32(x, p->m0), nudge);
    __m512i po = _mm512_add_epi64(
        _mm512_mul_epi32(_mm512_srli_epi64(x, 32), _mm512_srli_epi64(p->m0, 32)), nudge);
    const __m512i h = _mm512_mask_blend_epi32((__mmask16)0xAAAA, _mm512_srli_epi64(pe, 31),
                                              _mm512_slli_epi64(po, 1));
    __m512i y = _mm512_srav_epi32(h, p->right);
    const __m512i thr = _mm512_add_epi32(p->half, _mm512_srli_epi32(h, 31));
    y = _mm512_mask_add_epi32(y, _mm512_cmpgt_epi32_mask(_mm512_and_si512(h, p->mask), thr), y,
                              _mm512_set1_epi32(1));
    return y;
}

TOD_VNNI_TARGET static inline __m512i tod_rq16_apply(__m512i acc, const tod_rq16 *p,
                                                     int has_left) {
    const __m512i s = _mm512_add_epi32(acc, p->bias);
    const __mmask16 ov = _mm512_movepi32_mask(
        _mm512_and_si512(_mm512_xor_si512(acc, s), _mm512_xor_si512(p->bias, s)));
    const __m512i sat = _mm512_xor_si512(_mm512_srai_epi32(p->bias, 31),
                                         _mm512_set1_epi32(INT32_MAX));
    return tod_rq16_apply_v(_mm512_mask_mov_epi32(s, ov, sat), p, has_left);
}

TOD_VNNI_TARGET static inline void tod_rq16_store(__m512i y, __m512i zp, __m512i lo_zp,
                                                  __m512i hi_zp, __mmask16 k, int8_t *out) {
    y = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(y, lo_zp), hi_zp), zp);
    _mm512_mask_cvtepi32_storeu_epi8(out, k, y);
}

static inline __mmask16 tod_tail16(int64_t left) {
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
}

TOD_VNNI_TARGET static void tod_requant_row_vnnix(const int32_t *acc, int64_t n, int64_t bias,
                                                  int32_t m0, int32_t shift, int single,
                                                  int32_t zp, int32_t lo, int32_t hi,
                                                  int8_t *out) {
    if (single || !tod_fits_i32(bias)) {
        tod_requant_row_vnni(acc, n, bias, m0, shift, single, zp, lo, hi, out);
        return;
    }
    const tod_rq16 p = tod_rq16_make(_mm512_set1_epi32((int32_t)bias), _mm512_set1_epi32(m0),
                                     _mm512_set1_epi32(shift > 0 ? shift : 0),
                                     _mm512_set1_epi32(shift < 0 ? -shift : 0));
    const __m512i vzp = _mm512_set1_epi32(zp), vlo = _mm512_set1_epi32(lo - zp),
                  vhi = _mm512_set1_epi32(hi - zp);
    const int has_left = shift > 0;
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = tod_tail16(n - i);
        tod_rq16_store(tod_rq16_apply(_mm512_maskz_loadu_epi32(k, acc + i), &p, has_left), vzp,
                       vlo, vhi, k, out + i);
    }
}

TOD_VNNI_TARGET static void tod_requant_tile_vnnix(
    const int32_t *acc, int64_t ldt, int64_t rows, int64_t width, const int32_t *bias32,
    const int64_t *bias, const int32_t *m0, const int32_t *left, const int32_t *right,
    int single, int32_t zp, int32_t lo, int32_t hi, int8_t *out, int64_t ldo) {
    if (single || bias32 == NULL) {
        tod_requant_tile_vnni(acc, ldt, rows, width, bias, m0, left, right, single, zp, lo, hi,
                              out, ldo);
        return;
    }
    const __m512i vzp = _mm512_set1_epi32(zp), vlo = _mm512_set1_epi32(lo - zp),
                  vhi = _mm512_set1_epi32(hi - zp);
    for (int64_t j = 0; j < width; j += 16) { /* 16 channels, parameters set up once */
        const __mmask16 k = tod_tail16(width - j);
        const tod_rq16 p = tod_rq16_make(_mm512_maskz_loadu_epi32(k, bias32 + j),
                                         _mm512_maskz_loadu_epi32(k, m0 + j),
                                         _mm512_maskz_loadu_epi32(k, left + j),
                                         _mm512_maskz_loadu_epi32(k, right + j));
        const int has_left = _mm512_test_epi32_mask(p.left, p.left) != 0;
        for (int64_t r = 0; r < rows; r++)
            tod_rq16_store(tod_rq16_apply(_mm512_maskz_loadu_epi32(k, acc + r * ldt + j), &p,
                                          has_left),
                           vzp, vlo, vhi, k, out + r * ldo + j);
    }
}


/* ------------------------------------------- linear_s8's fused VNNI tile ---- */

/* The short route (mode TOD_RQ_SHORT below). When the caller has proved |v| < 2^30 for
 * every v = acc + bias of the call and no channel shifts left, double rounding
 *
 *   h = SRDHM(v, M0) = (v M0 + 2^30) >> 31,   y = RoundingDivideByPOT(h, e)   (e = -shift)
 *
 * is computed as
 *
 *   h' = (2v M0 + 2^31 + 2^(e-1) 2^32) >> 32      (= h + 2^(e-1); 2^(e-1) is 0 for e = 0)
 *   y  = (h' - [v < 0 and e > 0]) >> e             (arithmetic shifts)
 *
 * Why it is the same number: for e >= 1, RoundingDivideByPOT rounds half away from zero,
 * which is floor((h + 2^(e-1) - [h < 0]) / 2^e); [h < 0] may be replaced by [v < 0]
 * because M0 >= 0 (h < 0 implies v < 0, and v < 0 with h >= 0 means h = 0, where both give
 * 0); and adding an integer c to h before the 31-bit shift is adding c 2^31 to v M0 + 2^30
 * (floor(floor(a / 2^31) + c) = floor((a + c 2^31) / 2^31)). Doubling v (|2v| < 2^31) puts
 * h' in the high half of each 64-bit product, so one vpermt2d gathers the 16 results; the
 * bound keeps h' - 1 and h' + 0 inside int32 (|h'| <= |v| + 2^30).
 * Per 16 outputs: vpaddd, vpshufd, 2 vpmuldq, 2 vpaddq, vpermt2d, vpcmpd, masked vpsubd,
 * vpsravd, the bias folded into the 64-bit constant -- against 15 instructions on the
 * general route. Then the output zero point and the clamp are applied to 64 outputs at a
 * time after saturating packs to int16 (exact: every clamp bound is an int8). */
enum { TOD_RQ_SATURATE = 0, TOD_RQ_NOSAT = 1, TOD_RQ_SHORT = 2 };

typedef struct {
    __m512i m0, m0o, n2e, n2o, t, e;
} tod_rqs16;

/* parameters of 16 channels (lanes past the mask: M0 = 0, e = 0, bias 0, harmless). The bias
 * rides in the 64-bit constant: 2 (acc + bias) M0 + n2 = 2 acc M0 + (2 bias M0 + n2), and
 * v < 0 is acc < -bias. */
TOD_VNNI_TARGET static inline tod_rqs16 tod_rqs16_make(__mmask16 k, const int32_t *bias,
                                                       const int32_t *m0,
                                                       const int32_t *right) {
    tod_rqs16 p;
    const __m512i b = _mm512_maskz_loadu_epi32(k, bias), b2 = _mm512_add_epi32(b, b);
    p.m0 = _mm512_maskz_loadu_epi32(k, m0);
    p.e = _mm512_maskz_loadu_epi32(k, right);
    p.m0o = _mm512_shuffle_epi32(p.m0, _MM_PERM_DDBB); /* odd channels in the even slots */
    const __m512i half = /* 2^(e-1), 0 for e = 0 */
        _mm512_srli_epi32(_mm512_sllv_epi32(_mm512_set1_epi32(1), p.e), 1);
    const __m512i r31 = _mm512_set1_epi64((int64_t)1 << 31);
    p.n2e = _mm512_add_epi64(_mm512_or_si512(_mm512_slli_epi64(half, 32), r31), /* even */
                             _mm512_mul_epi32(b2, p.m0));
    p.n2o = _mm512_add_epi64(_mm512_mask_blend_epi32((__mmask16)0x5555, half, r31), /* odd */
                             _mm512_mul_epi32(_mm512_shuffle_epi32(b2, _MM_PERM_DDBB), p.m0o));
    /* acc < t: v < 0 where e > 0, never where e = 0 */
    p.t = _mm512_mask_mov_epi32(_mm512_sub_epi32(_mm512_setzero_si512(), b),
                                _mm512_cmpeq_epi32_mask(p.e, _mm512_setzero_si512()),
                                _mm512_set1_epi32(INT32_MIN));
    return p;
}

/* y of 16 accumulators whose sums with the bias, v, satisfy |v| < 2^30 (see above) */
TOD_VNNI_TARGET static inline __m512i tod_rqs16_y(__m512i acc, const tod_rqs16 *p) {
    const __m512i gather = _mm512_setr_epi32(1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29,
                                             15, 31); /* high halves of even, odd products */
    const __m512i a2 = _mm512_add_epi32(acc, acc);
    const __m512i pe = _mm512_add_epi64(_mm512_mul_epi32(a2, p->m0), p->n2e);
    const __m512i po = _mm512_add_epi64(
        _mm512_mul_epi32(_mm512_shuffle_epi32(a2, _MM_PERM_DDBB), p->m0o), p->n2o);
    __m512i h = _mm512_permutex2var_epi32(pe, gather, po);
    h = _mm512_mask_sub_epi32(h, _mm512_cmplt_epi32_mask(acc, p->t), h, _mm512_set1_epi32(1));
    return _mm512_srav_epi32(h, p->e);
}

/* Four vectors of 16 y -> 64 int8 in the order a, b, c, d: saturating packs to int16, the
 * zero point (saturating add), packs to int8, the clamp, and one vpermd to undo the packs'
 * interleaving by 128-bit lanes. Same result as clamp(y + zp, lo, hi): a y beyond int16 is
 * beyond every int8 bound on the same side. */
TOD_VNNI_TARGET static inline __m512i tod_rqs_pack4(__m512i a, __m512i b, __m512i c,
                                                    __m512i d, __m512i zp16, int clamp,
                                                    __m512i lo8, __m512i hi8) {
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11,
                                            15);
    const __m512i ab = _mm512_adds_epi16(_mm512_packs_epi32(a, b), zp16);
    const __m512i cd = _mm512_adds_epi16(_mm512_packs_epi32(c, d), zp16);
    __m512i v = _mm512_packs_epi16(ab, cd);
    if (clamp) v = _mm512_min_epi8(_mm512_max_epi8(v, lo8), hi8);
    return _mm512_permutexvar_epi32(order, v);
}

/* One MR x NR tile of linear_s8 on the VNNI path, requantized while it is in registers.
 *
 * The micro-kernel of tod_ukr_vnni_bu8 (x as u8 = x + 128 broadcast, packed signed weights,
 * 8 x 32 int32 accumulators), then the requantization of each row of accumulators and an
 * int8 store of `width` channels: no int32 tile goes through memory. A panel of at most 16
 * channels runs only the first half of the tile (a narrow layer does half the multiply-adds).
 * Double rounding with int32 biases only (the caller falls back to the generic route
 * otherwise). mode: TOD_RQ_SATURATE (saturating bias add), TOD_RQ_NOSAT (the caller proved
 * |acc| + |bias| <= INT32_MAX for every channel, |acc| <= K * 255 * 128, so the bias add
 * is a plain add) or TOD_RQ_SHORT (|acc| + |bias| < 2^30 and no left shift: the short
 * route above). */
#define TOD_VNNI_ROW_BU8_HALF(r)                                         \
    do {                                                                 \
        c##r##0 = _mm512_dpbusd_epi32(c##r##0, _mm512_set1_epi32(tod_load_i32(a##r)), b0); \
        a##r += 4;                                                       \
    } while (0)

TOD_VNNI_TARGET static inline void tod_rq16_row_out(__m512i acc, const tod_rq16 *p,
                                                    int has_left, int nosat, __m512i vzp,
                                                    __m512i vlo, __m512i vhi, __mmask16 k,
                                                    int8_t *out) {
    const __m512i y = nosat ? tod_rq16_apply_v(_mm512_add_epi32(acc, p->bias), p, has_left)
                            : tod_rq16_apply(acc, p, has_left);
    tod_rq16_store(y, vzp, vlo, vhi, k, out);
}

/* An empty asm that takes the 16 accumulators in registers after the loop: without it gcc
 * 12 keeps a second copy of each accumulator inside the loop of the short route (two
 * register moves, and stack spills, per multiply-add: slower than the general route). */
#define TOD_PIN_ACCUMULATORS()                                                             \
    do {                                                                                   \
        __asm__("" : "+v"(c00), "+v"(c01), "+v"(c10), "+v"(c11), "+v"(c20), "+v"(c21),    \
                "+v"(c30), "+v"(c31));                                                     \
        __asm__("" : "+v"(c40), "+v"(c41), "+v"(c50), "+v"(c51), "+v"(c60), "+v"(c61),    \
                "+v"(c70), "+v"(c71));                                                     \
    } while (0)

/* The accumulators c00 .. c71 of an 8 x 32 tile, starting at init0 (channels 0..15) and
 * init1 (16..31), summed over 4 kq; a panel of at most 16 channels (wide = 0) runs only
 * the first half. One macro for the two tiles below (the short and the general route). */
#define TOD_VNNI_TILE_ACCUMULATE(init0, init1)                                              \
    __m512i c00 = init0, c01 = init1, c10 = init0, c11 = init1, c20 = init0, c21 = init1,  \
            c30 = init0, c31 = init1, c40 = init0, c41 = init1, c50 = init0, c51 = init1,  \
            c60 = init0, c61 = init1, c70 = init0, c71 = init1;                            \
    do {                                                                                   \
        TOD_ROW_POINTERS8(a, lda, mr);                                                     \
        if (wide) {                                                                        \
            TOD_VNNI_BU8_LOOP(kq, b) /* the loop of tod_ukr_vnni_bu8 */                    \
        } else {                                                                           \
            for (int64_t q = 0; q < kq; q++, b += 128) {                                   \
                const __m512i b0 = _mm512_loadu_si512((const void *)b);                    \
                TOD_VNNI_ROW_BU8_HALF(0);                                                  \
                TOD_VNNI_ROW_BU8_HALF(1);                                                  \
                TOD_VNNI_ROW_BU8_HALF(2);                                                  \
                TOD_VNNI_ROW_BU8_HALF(3);                                                  \
                TOD_VNNI_ROW_BU8_HALF(4);                                                  \
                TOD_VNNI_ROW_BU8_HALF(5);                                                  \
                TOD_VNNI_ROW_BU8_HALF(6);                                                  \
                TOD_VNNI_ROW_BU8_HALF(7);                                                  \
            }                                                                              \
        }                                                                                  \
        TOD_PIN_ACCUMULATORS();                                                            \
    } while (0)

/* the short route (the bias is folded into its constants) */
/* prm[g] = the short route's parameters of channels 16 g .. 16 g + 15 (of f), set up once
 * per call: linear_s8 calls the tile below with prm + col0 / 16. */
TOD_VNNI_TARGET static void tod_rqs16_prepare(const int32_t *bias32, const int32_t *m0,
                                              const int32_t *right, int64_t f,
                                              tod_rqs16 *prm) {
    for (int64_t g = 0; 16 * g < f; g++)
        prm[g] = tod_rqs16_make(tod_tail16(f - 16 * g), bias32 + 16 * g, m0 + 16 * g,
                                right + 16 * g);
}

/* the short route: prm[0] (and prm[1] for more than 16 channels) from tod_rqs16_prepare */
TOD_VNNI_TARGET __attribute__((noinline)) static void tod_linear_tile_vnni_short(
    int64_t kq, const int8_t *a, int64_t lda, int mr, const uint8_t *b, int64_t width,
    const tod_rqs16 *prm, int32_t zp, int32_t lo, int32_t hi, int8_t *out, int64_t ldo) {
    const int wide = width > 16;
    const __mmask16 k0 = tod_tail16(width), k1 = wide ? tod_tail16(width - 16) : 0;
    const __m512i zero = _mm512_setzero_si512();
    TOD_VNNI_TILE_ACCUMULATE(zero, zero);
    const __m512i zp16 = _mm512_set1_epi16((int16_t)zp), lo8 = _mm512_set1_epi8((char)lo),
                  hi8 = _mm512_set1_epi8((char)hi);
    const int clamp = lo > -128 || hi < 127;
    const tod_rqs16 *p0 = prm;
#define TOD_Y0(r) c##r##0 = tod_rqs16_y(c##r##0, p0)
    TOD_Y0(0); TOD_Y0(1); TOD_Y0(2); TOD_Y0(3); TOD_Y0(4); TOD_Y0(5); TOD_Y0(6); TOD_Y0(7);
#undef TOD_Y0
    if (wide) { /* rows r, r + 1 -> 2 x 32 bytes */
        const tod_rqs16 *p1 = prm + 1;
#define TOD_Y1(r) c##r##1 = tod_rqs16_y(c##r##1, p1)
        TOD_Y1(0); TOD_Y1(1); TOD_Y1(2); TOD_Y1(3); TOD_Y1(4); TOD_Y1(5); TOD_Y1(6); TOD_Y1(7);
#undef TOD_Y1
        const __mmask32 km = ((__mmask32)k1 << 16) | 0xFFFFu;
#define TOD_STORE2(r, s)                                                                   \
    if (mr > r) {                                                                          \
        const __m512i v_ = tod_rqs_pack4(c##r##0, c##r##1, c##s##0, c##s##1, zp16, clamp,  \
                                         lo8, hi8);                                        \
        _mm256_mask_storeu_epi8(out + r * ldo, km, _mm512_castsi512_si256(v_));            \
        if (mr > s) _mm256_mask_storeu_epi8(out + s * ldo, km, _mm512_extracti64x4_epi64(v_, 1)); \
    }
        TOD_STORE2(0, 1)
        TOD_STORE2(2, 3)
        TOD_STORE2(4, 5)
        TOD_STORE2(6, 7)
#undef TOD_STORE2
    } else { /* rows r .. r + 3 -> 4 x 16 bytes */
#define TOD_STORE4(r, s, t, u)                                                              \
    if (mr > r) {                                                                           \
        const __m512i v_ = tod_rqs_pack4(c##r##0, c##s##0, c##t##0, c##u##0, zp16, clamp,   \
                                         lo8, hi8);                                         \
        _mm_mask_storeu_epi8(out + r * ldo, k0, _mm512_castsi512_si128(v_));                \
        if (mr > s) _mm_mask_storeu_epi8(out + s * ldo, k0, _mm512_extracti32x4_epi32(v_, 1)); \
        if (mr > t) _mm_mask_storeu_epi8(out + t * ldo, k0, _mm512_extracti32x4_epi32(v_, 2)); \
        if (mr > u) _mm_mask_storeu_epi8(out + u * ldo, k0, _mm512_extracti32x4_epi32(v_, 3)); \
    }
        TOD_STORE4(0, 1, 2, 3)
        TOD_STORE4(4, 5, 6, 7)
#undef TOD_STORE4
    }
}

/* the general route: saturating or plain bias add, any shift (tod_rq16_*) */
TOD_VNNI_TARGET __attribute__((noinline)) static void tod_linear_tile_vnni_general(
    int64_t kq, const int8_t *a, int64_t lda, int mr, const uint8_t *b, int64_t width,
    const int32_t *bias32, const int32_t *m0, const int32_t *left, const int32_t *right,
    int nosat, int32_t zp, int32_t lo, int32_t hi, int8_t *out, int64_t ldo) {
    const int wide = width > 16;
    const __m512i zero = _mm512_setzero_si512();
    TOD_VNNI_TILE_ACCUMULATE(zero, zero);
    const __m512i vzp = _mm512_set1_epi32(zp), vlo = _mm512_set1_epi32(lo - zp),
                  vhi = _mm512_set1_epi32(hi - zp);
    for (int h = 0; h < 2 && 16 * h < width; h++) {
        const __mmask16 k = tod_tail16(width - 16 * h);
        const tod_rq16 p = tod_rq16_make(_mm512_maskz_loadu_epi32(k, bias32 + 16 * h),
                                         _mm512_maskz_loadu_epi32(k, m0 + 16 * h),
                                         _mm512_maskz_loadu_epi32(k, left + 16 * h),
                                         _mm512_maskz_loadu_epi32(k, right + 16 * h));
        const int has_left = _mm512_test_epi32_mask(p.left, p.left) != 0;
        int8_t *o = out + 16 * h;
#define TOD_RQ_ROW(r)                                                                    \
    if (mr > r)                                                                          \
        tod_rq16_row_out(h ? c##r##1 : c##r##0, &p, has_left, nosat, vzp, vlo, vhi, k,   \
                         o + r * ldo)
        TOD_RQ_ROW(0);
        TOD_RQ_ROW(1);
        TOD_RQ_ROW(2);
        TOD_RQ_ROW(3);
        TOD_RQ_ROW(4);
        TOD_RQ_ROW(5);
        TOD_RQ_ROW(6);
        TOD_RQ_ROW(7);
#undef TOD_RQ_ROW
    }
}

TOD_VNNI_TARGET static void tod_linear_tile_vnni(int64_t kq, const int8_t *a, int64_t lda,
                                                 int mr, const uint8_t *b, int64_t width,
                                                 const int32_t *bias32, const int32_t *m0,
                                                 const int32_t *left, const int32_t *right,
                                                 int mode, int32_t zp, int32_t lo, int32_t hi,
                                                 int8_t *out, int64_t ldo) {
    if (mode == TOD_RQ_SHORT) { /* (linear_s8 prepares the parameters once per call) */
        tod_rqs16 prm[2];
        tod_rqs16_prepare(bias32, m0, right, width, prm);
        tod_linear_tile_vnni_short(kq, a, lda, mr, b, width, prm, zp, lo, hi, out, ldo);
    } else
        tod_linear_tile_vnni_general(kq, a, lda, mr, b, width, bias32, m0, left, right,
                                     mode == TOD_RQ_NOSAT, zp, lo, hi, out, ldo);
}
#undef TOD_VNNI_ROW_BU8_HALF

/* out[j] = sum_k w[j][k] (j < cols) read from linear_s8's packed weight panels
 * ([panels][kq][32][4] signed bytes, zero padding): one vpdpbusd of bytes 1 per 16 columns
 * and 4 k, instead of a pass over the rows (which, for the short rows of a 1x1 layer, costs
 * more than this whole sum). */
TOD_VNNI_TARGET static void tod_panel_sums_vnni(const uint8_t *packed, int64_t panels,
                                                int64_t kq, int64_t cols, int64_t *out) {
    const __m512i ones = _mm512_set1_epi8(1);
    for (int64_t p = 0; p < panels; p++) {
        __m512i s0 = _mm512_setzero_si512(), s1 = s0;
        const uint8_t *b = packed + p * kq * 128;
        for (int64_t q = 0; q < kq; q++, b += 128) {
            s0 = _mm512_dpbusd_epi32(s0, ones, _mm512_loadu_si512((const void *)b));
            s1 = _mm512_dpbusd_epi32(s1, ones, _mm512_loadu_si512((const void *)(b + 64)));
        }
        int32_t tmp[32];
        _mm512_storeu_si512(tmp, s0);
        _mm512_storeu_si512(tmp + 16, s1);
        for (int64_t j = 0; j < 32 && p * 32 + j < cols; j++) out[p * 32 + j] = tmp[j];
    }
}

#else /* not x86: no VNNI path, never called */
typedef struct {
    int32_t unused;
} tod_rqs16;
static void tod_rqs16_prepare(const int32_t *bias32, const int32_t *m0, const int32_t *right,
                              int64_t f, tod_rqs16 *prm) {
    (void)bias32; (void)m0; (void)right; (void)f; (void)prm;
}
static void tod_linear_tile_vnni_short(int64_t kq, const int8_t *a, int64_t lda, int mr,
                                       const uint8_t *b, int64_t width, const tod_rqs16 *prm,
                                       int32_t zp, int32_t lo, int32_t hi, int8_t *out,
                                       int64_t ldo) {
    (void)kq; (void)a; (void)lda; (void)mr; (void)b; (void)width; (void)prm; (void)zp;
    (void)lo; (void)hi; (void)out; (void)ldo;
}
static void tod_linear_tile_vnni(int64_t kq, const int8_t *a, int64_t lda, int mr,
                                 const uint8_t *b, int64_t width, const int32_t *bias32,
                                 const int32_t *m0, const int32_t *left, const int32_t *right,
                                 int nosat, int32_t zp, int32_t lo, int32_t hi, int8_t *out,
                                 int64_t ldo) {
    (void)kq; (void)a; (void)lda; (void)mr; (void)b; (void)width; (void)bias32; (void)m0;
    (void)left; (void)right; (void)nosat; (void)zp; (void)lo; (void)hi; (void)out; (void)ldo;
}
static void tod_panel_sums_vnni(const uint8_t *packed, int64_t panels, int64_t kq, int64_t cols,
                                int64_t *out) {
    (void)packed; (void)panels; (void)kq; (void)cols; (void)out;
}
static void tod_linear_tile_avx2(int64_t kq, const int8_t *a, int64_t lda, int mr,
                                 const uint8_t *b, int64_t width, const int32_t *bias32,
                                 const int32_t *m0, const int32_t *left, const int32_t *right,
                                 int nosat, int32_t zp, int32_t lo, int32_t hi, int8_t *out,
                                 int64_t ldo) {
    tod_linear_tile_vnni(kq, a, lda, mr, b, width, bias32, m0, left, right, nosat, zp, lo, hi,
                         out, ldo);
}
#endif /* TOD_X86 */
#endif /* TINYODL_INT8_REQUANT_H */
