/* tinyodl int8 epilogues and depthwise loops, written once in plain C and compiled three
 * times (portable / AVX2 / AVX-512), so that the compiler vectorizes each for its ISA.
 *
 * This file is included by int8_simd.h with TOD_SUFFIX(name) and TOD_TARGET defined; it
 * has no include guard on purpose. The arithmetic is exactly tinyodl.quant's
 * MultiplyByQuantizedMultiplier (GUIDE section 3), written branch-free:
 *
 *   double rounding:  x = sat32(sat32(acc + bias) << left)
 *                     h = (x * M0 + 2^30) >> 31                     (SRDHM; M0 >= 0)
 *                     y = (h >> right) + ((h & mask) > (mask >> 1) + (h < 0))
 *   single rounding:  y = sat32((sat32(acc + bias) * M0 + 2^(30 - shift)) >> (31 - shift))
 *   out = clamp(y + zp_out, act_min, act_max)
 *
 * SRDHM's result always fits in int32 (|x| <= 2^31, 0 <= M0 < 2^31), so it is taken from the
 * low 32 bits of a logical shift, which AVX2 can vectorize (it has no 64-bit arithmetic
 * shift). The tests hold every compiled copy bit-exact against tinyodl.reference.int8.
 */

/* out[i] = requant(acc[i] + bias) with one channel's parameters (conv, depthwise rows). */
TOD_TARGET static void TOD_SUFFIX(tod_requant_row)(const int32_t *restrict acc, int64_t n,
                                                   int64_t bias, int32_t m0, int32_t shift,
                                                   int single, int32_t zp, int32_t lo,
                                                   int32_t hi, int8_t *restrict out) {
    if (single) {
        const int total = 31 - shift;
        const int64_t nudge = (int64_t)1 << (total - 1);
        for (int64_t i = 0; i < n; i++) {
            int64_t v = (int64_t)acc[i] + bias;
            v = v < INT32_MIN ? INT32_MIN : (v > INT32_MAX ? INT32_MAX : v);
            int64_t y = (v * m0 + nudge) >> total;
            y = (y < INT32_MIN ? INT32_MIN : (y > INT32_MAX ? INT32_MAX : y)) + zp;
            out[i] = (int8_t)(y < lo ? lo : (y > hi ? hi : y));
        }
        return;
    }
    const int left = shift > 0 ? shift : 0, right = shift < 0 ? -shift : 0;
    const int32_t mask = (int32_t)(((int64_t)1 << right) - 1), half = mask >> 1;
    for (int64_t i = 0; i < n; i++) {
        int64_t v = (int64_t)acc[i] + bias;
        v = v < INT32_MIN ? INT32_MIN : (v > INT32_MAX ? INT32_MAX : v);
        v = (int64_t)((uint64_t)v << left);
        int32_t x = (int32_t)(v < INT32_MIN ? INT32_MIN : (v > INT32_MAX ? INT32_MAX : v));
        int32_t h = (int32_t)(uint32_t)((uint64_t)((int64_t)x * m0 + ((int64_t)1 << 30)) >> 31);
        int32_t y = (h >> right) + ((h & mask) > half + (h < 0));
        y = (y < -512 ? -512 : (y > 512 ? 512 : y)) + zp; /* no int32 overflow; same clamp */
        out[i] = (int8_t)(y < lo ? lo : (y > hi ? hi : y));
    }
}

/* Linear layers: a tile of rows x width accumulators (row stride ldt) whose channel
 * parameters change along the row (column j is output channel j). Per channel the caller
 * passes left[j] = max(shift, 0) and right[j] = max(-shift, 0) for double rounding, or
 * left[j] = 31 - shift (the total right shift) for single rounding, so that the loop body
 * has no branch. out has row stride ldo. */
TOD_TARGET static void TOD_SUFFIX(tod_requant_tile)(
    const int32_t *restrict acc, int64_t ldt, int64_t rows, int64_t width,
    const int64_t *restrict bias, const int32_t *restrict m0, const int32_t *restrict left,
    const int32_t *restrict right, int single, int32_t zp, int32_t lo, int32_t hi,
    int8_t *restrict out, int64_t ldo) {
    for (int64_t r = 0; r < rows; r++, acc += ldt, out += ldo) {
        if (single) {
            for (int64_t j = 0; j < width; j++) {
                int64_t v = (int64_t)acc[j] + bias[j];
                v = v < INT32_MIN ? INT32_MIN : (v > INT32_MAX ? INT32_MAX : v);
                const int total = left[j];
                int64_t y = (v * m0[j] + ((int64_t)1 << (total - 1))) >> total;
                y = (y < INT32_MIN ? INT32_MIN : (y > INT32_MAX ? INT32_MAX : y)) + zp;
                out[j] = (int8_t)(y < lo ? lo : (y > hi ? hi : y));
            }
            continue;
        }
        for (int64_t j = 0; j < width; j++) {
            int64_t v = (int64_t)acc[j] + bias[j];
            v = v < INT32_MIN ? INT32_MIN : (v > INT32_MAX ? INT32_MAX : v);
            v = (int64_t)((uint64_t)v << left[j]);
            int32_t x = (int32_t)(v < INT32_MIN ? INT32_MIN : (v > INT32_MAX ? INT32_MAX : v));
            int32_t h = (int32_t)(uint32_t)((uint64_t)((int64_t)x * m0[j] + ((int64_t)1 << 30)) >> 31);
            int32_t rr = right[j];
            int32_t mask = (int32_t)(((uint32_t)1 << rr) - 1u);
            int32_t y = (h >> rr) + ((h & mask) > (mask >> 1) + (h < 0));
            y = (y < -512 ? -512 : (y > 512 ? 512 : y)) + zp;
            out[j] = (int8_t)(y < lo ? lo : (y > hi ? hi : y));
        }
    }
}

/* acc[t] += w * xs[t + off] for t < n: one depthwise tap over a whole (virtual) plane. */
TOD_TARGET static void TOD_SUFFIX(tod_dw_tap_s16)(int32_t *restrict acc, const int16_t *restrict xs,
                                                  int64_t n, int32_t w) {
    for (int64_t t = 0; t < n; t++) acc[t] += w * (int32_t)xs[t];
}

/* out[r] = sum_k a[r * ld + k] (int8 rows; |sum| < 2^31 for every K the kernels accept). */
TOD_TARGET static void TOD_SUFFIX(tod_rowsum_s8)(const int8_t *restrict a, int64_t rows, int64_t k,
                                                 int64_t ld, int64_t *restrict out) {
    for (int64_t r = 0; r < rows; r++) {
        const int8_t *row = a + r * ld;
        int32_t s = 0;
        for (int64_t i = 0; i < k; i++) s += row[i];
        out[r] = s;
    }
}

/* out[j] = sum_k a[k * ld + j] for j < cols (the column sums of a (K, cols) matrix). */
TOD_TARGET static void TOD_SUFFIX(tod_colsum_s8)(const int8_t *restrict a, int64_t k, int64_t cols,
                                                 int64_t ld, int32_t *restrict tmp,
                                                 int64_t *restrict out) {
    for (int64_t j = 0; j < cols; j++) tmp[j] = 0;
    for (int64_t i = 0; i < k; i++)
        for (int64_t j = 0; j < cols; j++) tmp[j] += a[i * ld + j];
    for (int64_t j = 0; j < cols; j++) out[j] = tmp[j];
}
