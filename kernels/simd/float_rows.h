/* tinyodl im2col / col2im row copies (kernels/conv.pyx, kernels/int8_backward.pyx).
 *
 * Chapter 00. im2col copies, for every (channel, tap, output row), one short run of the
 * input: OW values (7 to 28 in the course's models), zero where the tap falls in the
 * padding. Tens of thousands of such runs per image make a library memcpy call per run the
 * bottleneck, so a run is moved here with masked vector loads and stores (16 floats on
 * AVX-512, 8 on AVX2; the masks also produce the zeros of the padding). Masked-out lanes
 * are never read, so a run may start next to the start of the array. Other CPUs, double
 * precision and strided runs use plain loops. Results are copies: exact on every path.
 */
#ifndef TINYODL_FLOAT_ROWS_H
#define TINYODL_FLOAT_ROWS_H

#include <stdint.h>
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

/* dst[ow] = src[ow * sw] for lo <= ow < hi, 0 for the other ow < n (src[ow * sw] is the input
 * pixel that output column ow reads; it is only dereferenced inside [lo, hi)). */
static inline void tod_im2col_row_f32(float *dst, const float *src, int64_t lo, int64_t hi,
                                      int64_t n, int64_t sw) {
    if (sw == 1) {
#if defined(__AVX512F__)
        for (int64_t o = 0; o < n; o += 16) {
            const int64_t len = n - o < 16 ? n - o : 16;
            int64_t a = lo - o, b = hi - o;
            a = a < 0 ? 0 : (a > len ? len : a);
            b = b < a ? a : (b > len ? len : b);
            const __mmask16 keep = (__mmask16)(((1u << b) - 1u) & ~((1u << a) - 1u));
            const __mmask16 all = (__mmask16)((1u << len) - 1u);
            _mm512_mask_storeu_ps(dst + o, all, _mm512_maskz_loadu_ps(keep, src + o));
        }
        return;
#elif defined(__AVX2__)
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        for (int64_t o = 0; o < n; o += 8) {
            const __m256i idx = _mm256_add_epi32(lane, _mm256_set1_epi32((int)o));
            const __m256i keep = _mm256_and_si256(
                _mm256_cmpgt_epi32(idx, _mm256_set1_epi32((int)lo - 1)),
                _mm256_cmpgt_epi32(_mm256_set1_epi32((int)hi), idx));
            const __m256i all = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), idx);
            _mm256_maskstore_ps(dst + o, all, _mm256_maskload_ps(src + o, keep));
        }
        return;
#endif
    }
    for (int64_t ow = 0; ow < lo; ow++) dst[ow] = 0;
    for (int64_t ow = lo; ow < hi; ow++) dst[ow] = src[ow * sw];
    for (int64_t ow = hi < lo ? lo : hi; ow < n; ow++) dst[ow] = 0;
}

/* dst[ow * sw] += src[ow] for lo <= ow < hi */
static inline void tod_col2im_row_f32(float *dst, const float *src, int64_t lo, int64_t hi,
                                      int64_t sw) {
    if (sw == 1) {
#if defined(__AVX512F__)
        for (int64_t o = lo; o < hi; o += 16) {
            const int64_t len = hi - o < 16 ? hi - o : 16;
            const __mmask16 k = (__mmask16)((1u << len) - 1u);
            _mm512_mask_storeu_ps(dst + o, k, _mm512_add_ps(_mm512_maskz_loadu_ps(k, dst + o),
                                                            _mm512_maskz_loadu_ps(k, src + o)));
        }
        return;
#endif
    }
    for (int64_t ow = lo; ow < hi; ow++) dst[ow * sw] += src[ow];
}

/* dst[t] += src[t], t < n (out of line, so that restrict lets it vectorize unchecked) */
__attribute__((noinline)) static void tod_add_f32(float *restrict dst, const float *restrict src,
                                                  int64_t n) {
    for (int64_t t = 0; t < n; t++) dst[t] += src[t];
}

#endif /* TINYODL_FLOAT_ROWS_H */
