/* tinyodl: widening int8 to float32 minus a zero point, for the int8 backward kernels
 * (float_s8a.h, float_s8b.h, float_dw.h; kernels/int8_backward.pyx).
 *
 * Chapter 03. The backward pass of an int8 layer reads its integer operand as the float32
 * number float(q - zp), which is exact for every int8 q and zero point. A compiler
 * vectorizes the plain loop, but over rows as short as a layer's (7 to 49 values) its
 * scalar remainder costs as much as the vector body; AVX-512 (BW + VL) does the remainder
 * with one masked load (vpmovsxbd + vpsubd + vcvtdq2ps, 16 values at a time).
 */
#ifndef TINYODL_FLOAT_S8W_H
#define TINYODL_FLOAT_S8W_H

#include <stdint.h>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#include <immintrin.h>
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

#endif /* TINYODL_FLOAT_S8W_H */
