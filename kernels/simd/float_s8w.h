/* tinyodl: widening int8 to float32 minus a zero point, for the int8 backward kernels
 * (float_s8a.h, float_s8b.h, float_dw.h; kernels/int8_backward.pyx).
 *
 * Chapter 03. The backward pass of an int8 layer reads its integer operand as the float32
 * number float(q - zp), which is exact for every int8 q and zero point. A compiler
 * vectorizes the plain loop, but over rows as short as a layer's (7 to 49 values) its
 * scalar remainder costs as much as the vector body; AVX-512 (BW + VL) does the remainder
 * with one masked load (vpmovsxbd + vpsubd + vcvtdq2ps, 16 values at a time).
 * Also here: the float32 transpose that puts dout in the layout the register tiles read.
 */
#ifndef TINYODL_FLOAT_S8W_H
#define TINYODL_FLOAT_S8W_H

#include <stdint.h>

#if defined(__AVX__)
#include <immintrin.h>
#endif
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define TOD_S8W_AVX512 1
#else
#define TOD_S8W_AVX512 0
#endif

/* dst[i] = float32(x[i] - zp), i < n */
static inline void tod_s8_widen_f32(const int8_t *restrict x, int32_t zp, float *restrict dst,
                                    int64_t n) {
    int64_t i = 0;
#if TOD_S8W_AVX512
    const __m512i z = _mm512_set1_epi32(zp);
    for (; i + 16 <= n; i += 16) {
        const __m512i v = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(x + i)));
        _mm512_storeu_ps(dst + i, _mm512_cvtepi32_ps(_mm512_sub_epi32(v, z)));
    }
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        const __m512i v = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, x + i));
        _mm512_mask_storeu_ps(dst + i, m, _mm512_cvtepi32_ps(_mm512_sub_epi32(v, z)));
    }
#else
    for (; i < n; i++) dst[i] = (float)((int32_t)x[i] - zp);
#endif
}

/* dt (P x F) <- d (F x P), row strides ld and ldt: 8 x 8 blocks through AVX registers */
static void tod_transpose_f32_ld(const float *d, int64_t ld, int64_t F, int64_t P, float *dt,
                                 int64_t ldt) {
    int64_t f0 = 0;
#if defined(__AVX__)
    for (; f0 + 8 <= F; f0 += 8) {
        int64_t p0 = 0;
        for (; p0 + 8 <= P; p0 += 8) {
            const float *s0 = d + f0 * ld + p0;
            const __m256 r0 = _mm256_loadu_ps(s0), r1 = _mm256_loadu_ps(s0 + ld),
                         r2 = _mm256_loadu_ps(s0 + 2 * ld), r3 = _mm256_loadu_ps(s0 + 3 * ld),
                         r4 = _mm256_loadu_ps(s0 + 4 * ld), r5 = _mm256_loadu_ps(s0 + 5 * ld),
                         r6 = _mm256_loadu_ps(s0 + 6 * ld), r7 = _mm256_loadu_ps(s0 + 7 * ld);
            const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1),
                         t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3),
                         t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
                         t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
            const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE),
                         u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE),
                         u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
                         u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
            float *o = dt + p0 * ldt + f0;
            _mm256_storeu_ps(o, _mm256_permute2f128_ps(u0, u4, 0x20));
            _mm256_storeu_ps(o + ldt, _mm256_permute2f128_ps(u1, u5, 0x20));
            _mm256_storeu_ps(o + 2 * ldt, _mm256_permute2f128_ps(u2, u6, 0x20));
            _mm256_storeu_ps(o + 3 * ldt, _mm256_permute2f128_ps(u3, u7, 0x20));
            _mm256_storeu_ps(o + 4 * ldt, _mm256_permute2f128_ps(u0, u4, 0x31));
            _mm256_storeu_ps(o + 5 * ldt, _mm256_permute2f128_ps(u1, u5, 0x31));
            _mm256_storeu_ps(o + 6 * ldt, _mm256_permute2f128_ps(u2, u6, 0x31));
            _mm256_storeu_ps(o + 7 * ldt, _mm256_permute2f128_ps(u3, u7, 0x31));
        }
        for (; p0 < P; p0++)
            for (int64_t f = f0; f < f0 + 8; f++) dt[p0 * ldt + f] = d[f * ld + p0];
    }
#endif
    for (; f0 < F; f0++)
        for (int64_t p = 0; p < P; p++) dt[p * ldt + f0] = d[f0 * ld + p];
}

/* dt (P x F) <- d (F x P), contiguous */
static inline void tod_transpose_f32(const float *d, int64_t F, int64_t P, float *dt) {
    tod_transpose_f32_ld(d, P, F, P, dt, F);
}

#endif /* TINYODL_FLOAT_S8W_H */
