/* tinyodl int8 GEMM micro-kernels: one readable portable version and two SIMD versions.
 *
 * Chapter 03. Every int8 product in tinyodl (gemm_s8, linear_s8, conv2d_s8) is computed by
 * one of the micro-kernels below. A micro-kernel multiplies a small MR x K strip of the
 * *broadcast* operand A (int8, row-major, K a multiple of 4) by a packed K x NR panel of
 * the *vector* operand B and writes an MR x NR tile of int32 accumulators:
 *
 *     C[r][j] (+)= sum_k A[r][k] * B[k][j]          r < MR, j < NR
 *
 * The packed panel stores B as [K/4][NR][4] bytes: for each group of four k, the four
 * values of column j sit side by side. That is the layout of the "widened multiply-add"
 * instructions, which multiply four int8 pairs and add the four products into one int32
 * lane in a single step:
 *
 *   portable     plain C on u8 x s8 (the definition; gcc vectorizes what it can)
 *   avx2         vpsignb/vpabsb + vpmaddubsw (u8 x s8 -> pairs summed in int16) + vpmaddwd
 *                (pairs of int16 summed in int32): 8 columns x 4 k per instruction group
 *   avx512_vnni  vpdpbusd: u8 x s8, four products summed into int32, 16 columns per step
 *
 * Signedness. vpdpbusd and vpmaddubsw multiply an *unsigned* byte by a signed one. The
 * portable and VNNI paths therefore store the vector operand as u8 = b + 128 (b XOR 0x80)
 * and the caller subtracts 128 * sum_k A[r][k] afterwards (a per-row constant, exact).
 * Accumulators wrap modulo 2^32 (as vpaddd and vpdpbusd do; the portable C sums in uint32):
 * the corrected result is exact whenever it fits in int32, even if the raw sum did not.
 * vpmaddubsw also saturates each int16 pair sum, and 2 * 255 * 127 overflows int16, so the
 * AVX2 path keeps both operands signed and uses |a| * (b * sign(a)): with the *other*
 * operand in [-127, 127] every pair sum stays within 2 * 128 * 127 = 32,512 (GUIDE section 3).
 * Which operand is the safe one depends on the call: conv weights are broadcast
 * (``ukr_bsafe``: broadcast operand in [-127, 127]), linear weights are vectors
 * (``ukr_vsafe``: vector operand in [-127, 127]).
 *
 * Every path gives the same int32 results bit for bit (tests/test_kernels_int8_simd.py
 * forces each one). The readable twin of the whole computation is tinyodl/reference/int8.py.
 */
#ifndef TINYODL_INT8_UKERNELS_H
#define TINYODL_INT8_UKERNELS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define TOD_X86 1
#include <immintrin.h>
#else
#define TOD_X86 0
#endif

enum { TOD_ISA_PORTABLE = 0, TOD_ISA_AVX2 = 1, TOD_ISA_AVX512_VNNI = 2, TOD_ISA_COUNT = 3 };

/* C[r][j] (+)= sum_k a[r * lda + k] * B[k][j], k < 4 * kq; rows r >= mr are not stored. */
typedef void (*tod_ukr_fn)(int64_t kq, const int8_t *a, int64_t lda, int mr,
                           const uint8_t *b, int32_t *c, int accumulate);

static inline int32_t tod_load_i32(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Write (or add) an MR x NR tile kept in a local array into c (row stride nr). */
#define TOD_STORE_TILE(tile, MR_, NR_, mr, c, accumulate)        \
    do {                                                         \
        for (int r_ = 0; r_ < (mr); r_++) {                      \
            int32_t *row_ = (c) + (int64_t)r_ * (NR_);           \
            if (accumulate)                                      \
                for (int j_ = 0; j_ < (NR_); j_++)               \
                    row_[j_] = (int32_t)((uint32_t)row_[j_] + (uint32_t)(tile)[r_][j_]); \
            else                                                 \
                for (int j_ = 0; j_ < (NR_); j_++) row_[j_] = (int32_t)(tile)[r_][j_]; \
        }                                                        \
    } while (0)

/* ------------------------------------------------------------------------------------
 * portable: the definition, 4 x 16 tile
 * ------------------------------------------------------------------------------------ */
#define TOD_MR_PORTABLE 4
#define TOD_NR_PORTABLE 16

static void tod_ukr_portable(int64_t kq, const int8_t *a, int64_t lda, int mr,
                             const uint8_t *b, int32_t *c, int accumulate) {
    uint32_t tile[TOD_MR_PORTABLE][TOD_NR_PORTABLE]; /* unsigned: sums wrap like vpaddd */
    memset(tile, 0, sizeof(tile));
    for (int64_t q = 0; q < kq; q++) {               /* one group of four k */
        const uint8_t *bq = b + q * TOD_NR_PORTABLE * 4;
        for (int r = 0; r < mr; r++) {
            const int8_t *ar = a + r * lda + 4 * q;
            int32_t a0 = ar[0], a1 = ar[1], a2 = ar[2], a3 = ar[3];
            for (int j = 0; j < TOD_NR_PORTABLE; j++) /* u8 x s8, four products per lane */
                tile[r][j] += (uint32_t)(a0 * bq[4 * j] + a1 * bq[4 * j + 1] +
                                         a2 * bq[4 * j + 2] + a3 * bq[4 * j + 3]);
        }
    }
    TOD_STORE_TILE(tile, TOD_MR_PORTABLE, TOD_NR_PORTABLE, mr, c, accumulate);
}

/* The same tile with the roles of the signs swapped: the broadcast operand is unsigned
 * (u8 = x + 128, a linear layer's activations) and the packed panel signed (its weights). */
static void tod_ukr_portable_bu8(int64_t kq, const int8_t *a, int64_t lda, int mr,
                                 const uint8_t *b, int32_t *c, int accumulate) {
    uint32_t tile[TOD_MR_PORTABLE][TOD_NR_PORTABLE];
    memset(tile, 0, sizeof(tile));
    for (int64_t q = 0; q < kq; q++) {
        const int8_t *bq = (const int8_t *)b + q * TOD_NR_PORTABLE * 4;
        for (int r = 0; r < mr; r++) {
            const uint8_t *ar = (const uint8_t *)a + r * lda + 4 * q;
            int32_t a0 = ar[0], a1 = ar[1], a2 = ar[2], a3 = ar[3];
            for (int j = 0; j < TOD_NR_PORTABLE; j++)
                tile[r][j] += (uint32_t)(a0 * bq[4 * j] + a1 * bq[4 * j + 1] +
                                         a2 * bq[4 * j + 2] + a3 * bq[4 * j + 3]);
        }
    }
    TOD_STORE_TILE(tile, TOD_MR_PORTABLE, TOD_NR_PORTABLE, mr, c, accumulate);
}

#if TOD_X86
/* ------------------------------------------------------------------------------------
 * AVX2: 4 x 16 tile, two ymm of 8 int32 lanes per row
 * ------------------------------------------------------------------------------------ */
#define TOD_MR_AVX2 4
#define TOD_NR_AVX2 16
#define TOD_AVX2_TARGET \
    __attribute__((target("avx2,fma,bmi,bmi2,popcnt,lzcnt,f16c,movbe")))

/* Four rows of A, each a pointer advanced by 4 bytes per step; missing rows (r >= mr)
 * recompute row 0 and are not stored. */
#define TOD_ROW_POINTERS4(a, lda, mr)                        \
    const int8_t *a0 = (a), *a1 = (a) + ((mr) > 1 ? 1 : 0) * (lda), \
                 *a2 = (a) + ((mr) > 2 ? 2 : 0) * (lda), *a3 = (a) + ((mr) > 3 ? 3 : 0) * (lda)

/* One row of the AVX2 tile: acc_r{0,1} += a_r . b{0,1} over four k (see the header). */
#define TOD_AVX2_ROW_BSAFE(r)                                                        \
    do {                                                                             \
        __m256i av = _mm256_set1_epi32(tod_load_i32(a##r));                          \
        c##r##0 = _mm256_add_epi32(                                                  \
            c##r##0, _mm256_madd_epi16(_mm256_maddubs_epi16(ub0, _mm256_sign_epi8(av, b0)), ones)); \
        c##r##1 = _mm256_add_epi32(                                                  \
            c##r##1, _mm256_madd_epi16(_mm256_maddubs_epi16(ub1, _mm256_sign_epi8(av, b1)), ones)); \
        a##r += 4;                                                                   \
    } while (0)

#define TOD_AVX2_ROW_VSAFE(r)                                                        \
    do {                                                                             \
        __m256i av = _mm256_set1_epi32(tod_load_i32(a##r));                          \
        __m256i ua = _mm256_abs_epi8(av);                                            \
        c##r##0 = _mm256_add_epi32(                                                  \
            c##r##0, _mm256_madd_epi16(_mm256_maddubs_epi16(ua, _mm256_sign_epi8(b0, av)), ones)); \
        c##r##1 = _mm256_add_epi32(                                                  \
            c##r##1, _mm256_madd_epi16(_mm256_maddubs_epi16(ua, _mm256_sign_epi8(b1, av)), ones)); \
        a##r += 4;                                                                   \
    } while (0)

/* The accumulation of the vector-safe 4 x 16 AVX2 tile, shared by tod_ukr_avx2_vsafe and
 * linear_s8's fused tile (int8_requant.h): declares the accumulators c00 .. c31 (zero) in
 * the enclosing block and sums a (mr rows, stride lda) times the packed panel b over 4 kq. */
#define TOD_AVX2_VSAFE_ACCUMULATE(kq, a, lda, mr, b)                                 \
    const __m256i ones = _mm256_set1_epi16(1);                                       \
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, \
            c21 = c00, c30 = c00, c31 = c00;                                         \
    do {                                                                             \
        TOD_ROW_POINTERS4(a, lda, mr);                                               \
        const uint8_t *bq_ = (b);                                                    \
        for (int64_t q_ = 0; q_ < (kq); q_++, bq_ += 64) {                           \
            const __m256i b0 = _mm256_loadu_si256((const __m256i *)bq_);             \
            const __m256i b1 = _mm256_loadu_si256((const __m256i *)(bq_ + 32));      \
            TOD_AVX2_ROW_VSAFE(0);                                                   \
            TOD_AVX2_ROW_VSAFE(1);                                                   \
            TOD_AVX2_ROW_VSAFE(2);                                                   \
            TOD_AVX2_ROW_VSAFE(3);                                                   \
        }                                                                            \
    } while (0)

#define TOD_AVX2_STORE(c, mr, accumulate)                                            \
    do {                                                                             \
        __m256i t_[TOD_MR_AVX2][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}}; \
        for (int r_ = 0; r_ < (mr); r_++) {                                          \
            int32_t *row_ = (c) + r_ * TOD_NR_AVX2;                                  \
            if (accumulate) {                                                        \
                t_[r_][0] = _mm256_add_epi32(t_[r_][0], _mm256_loadu_si256((const __m256i *)row_)); \
                t_[r_][1] = _mm256_add_epi32(t_[r_][1], _mm256_loadu_si256((const __m256i *)(row_ + 8))); \
            }                                                                        \
            _mm256_storeu_si256((__m256i *)row_, t_[r_][0]);                         \
            _mm256_storeu_si256((__m256i *)(row_ + 8), t_[r_][1]);                   \
        }                                                                            \
    } while (0)

/* The broadcast operand (a, e.g. conv weights) lies in [-127, 127]; b is any int8:
 * |b| * (a * sign(b)) == a * b. */
TOD_AVX2_TARGET static void tod_ukr_avx2_bsafe(int64_t kq, const int8_t *a, int64_t lda,
                                               int mr, const uint8_t *b, int32_t *c,
                                               int accumulate) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00,
            c21 = c00, c30 = c00, c31 = c00;
    TOD_ROW_POINTERS4(a, lda, mr);
    for (int64_t q = 0; q < kq; q++, b += 64) {
        const __m256i b0 = _mm256_loadu_si256((const __m256i *)b);
        const __m256i b1 = _mm256_loadu_si256((const __m256i *)(b + 32));
        const __m256i ub0 = _mm256_abs_epi8(b0), ub1 = _mm256_abs_epi8(b1); /* |b| as u8 */
        TOD_AVX2_ROW_BSAFE(0);
        TOD_AVX2_ROW_BSAFE(1);
        TOD_AVX2_ROW_BSAFE(2);
        TOD_AVX2_ROW_BSAFE(3);
    }
    TOD_AVX2_STORE(c, mr, accumulate);
}

/* The vector operand (b, e.g. linear weights) lies in [-127, 127]; a is any int8:
 * |a| * (b * sign(a)) == a * b. */
TOD_AVX2_TARGET static void tod_ukr_avx2_vsafe(int64_t kq, const int8_t *a, int64_t lda,
                                               int mr, const uint8_t *b, int32_t *c,
                                               int accumulate) {
    TOD_AVX2_VSAFE_ACCUMULATE(kq, a, lda, mr, b);
    TOD_AVX2_STORE(c, mr, accumulate);
}

/* ------------------------------------------------------------------------------------
 * AVX-512 VNNI: 8 x 32 tile, two zmm of 16 int32 lanes per row, vpdpbusd
 * ------------------------------------------------------------------------------------ */
#define TOD_MR_VNNI 8
#define TOD_NR_VNNI 32
#define TOD_VNNI_TARGET \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,bmi,bmi2,popcnt,lzcnt,f16c,movbe")))

#define TOD_VNNI_ROW_BU8(r)                                              \
    do {                                                                 \
        const __m512i av = _mm512_set1_epi32(tod_load_i32(a##r)); /* u8 x 4 */ \
        c##r##0 = _mm512_dpbusd_epi32(c##r##0, av, b0);                  \
        c##r##1 = _mm512_dpbusd_epi32(c##r##1, av, b1);                  \
        a##r += 4;                                                       \
    } while (0)

#define TOD_VNNI_ROW(r)                                                  \
    do {                                                                 \
        const __m512i av = _mm512_set1_epi32(tod_load_i32(a##r)); /* s8 x 4 */ \
        c##r##0 = _mm512_dpbusd_epi32(c##r##0, b0, av);                  \
        c##r##1 = _mm512_dpbusd_epi32(c##r##1, b1, av);                  \
        a##r += 4;                                                       \
    } while (0)

/* Eight rows of A (see TOD_ROW_POINTERS4). */
#define TOD_ROW_POINTERS8(a, lda, mr)                                                 \
    TOD_ROW_POINTERS4(a, lda, mr);                                                    \
    const int8_t *a4 = (a) + ((mr) > 4 ? 4 : 0) * (lda), *a5 = (a) + ((mr) > 5 ? 5 : 0) * (lda), \
                 *a6 = (a) + ((mr) > 6 ? 6 : 0) * (lda), *a7 = (a) + ((mr) > 7 ? 7 : 0) * (lda)

/* The 8 x 32 accumulation of tod_ukr_vnni_bu8 into c00 .. c71 (declared by the caller, with
 * the row pointers of TOD_ROW_POINTERS8), advancing b; shared with linear_s8's fused tile
 * (int8_requant.h). */
#define TOD_VNNI_BU8_LOOP(kq, b)                                                      \
    for (int64_t q_ = 0; q_ < (kq); q_++, (b) += 128) {                               \
        const __m512i b0 = _mm512_loadu_si512((const void *)(b)); /* s8: 16 x 4 k */  \
        const __m512i b1 = _mm512_loadu_si512((const void *)((b) + 64));              \
        TOD_VNNI_ROW_BU8(0);                                                          \
        TOD_VNNI_ROW_BU8(1);                                                          \
        TOD_VNNI_ROW_BU8(2);                                                          \
        TOD_VNNI_ROW_BU8(3);                                                          \
        TOD_VNNI_ROW_BU8(4);                                                          \
        TOD_VNNI_ROW_BU8(5);                                                          \
        TOD_VNNI_ROW_BU8(6);                                                          \
        TOD_VNNI_ROW_BU8(7);                                                          \
    }

TOD_VNNI_TARGET static void tod_ukr_vnni(int64_t kq, const int8_t *a, int64_t lda, int mr,
                                         const uint8_t *b, int32_t *c, int accumulate) {
    __m512i c00 = _mm512_setzero_si512(), c01 = c00, c10 = c00, c11 = c00, c20 = c00,
            c21 = c00, c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00,
            c60 = c00, c61 = c00, c70 = c00, c71 = c00;
    TOD_ROW_POINTERS4(a, lda, mr);
    const int8_t *a4 = a + (mr > 4 ? 4 : 0) * lda, *a5 = a + (mr > 5 ? 5 : 0) * lda,
                 *a6 = a + (mr > 6 ? 6 : 0) * lda, *a7 = a + (mr > 7 ? 7 : 0) * lda;
    for (int64_t q = 0; q < kq; q++, b += 128) {
        const __m512i b0 = _mm512_loadu_si512((const void *)b); /* u8: 16 columns x 4 k */
        const __m512i b1 = _mm512_loadu_si512((const void *)(b + 64));
        TOD_VNNI_ROW(0);
        TOD_VNNI_ROW(1);
        TOD_VNNI_ROW(2);
        TOD_VNNI_ROW(3);
        TOD_VNNI_ROW(4);
        TOD_VNNI_ROW(5);
        TOD_VNNI_ROW(6);
        TOD_VNNI_ROW(7);
    }
    __m512i t[TOD_MR_VNNI][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31},
                                 {c40, c41}, {c50, c51}, {c60, c61}, {c70, c71}};
    for (int r = 0; r < mr; r++) {
        int32_t *row = c + r * TOD_NR_VNNI;
        if (accumulate) {
            t[r][0] = _mm512_add_epi32(t[r][0], _mm512_loadu_si512(row));
            t[r][1] = _mm512_add_epi32(t[r][1], _mm512_loadu_si512(row + 16));
        }
        _mm512_storeu_si512(row, t[r][0]);
        _mm512_storeu_si512(row + 16, t[r][1]);
    }
}
/* Broadcast operand unsigned, panel signed (see tod_ukr_portable_bu8). */
TOD_VNNI_TARGET static void tod_ukr_vnni_bu8(int64_t kq, const int8_t *a, int64_t lda, int mr,
                                         const uint8_t *b, int32_t *c, int accumulate) {
    __m512i c00 = _mm512_setzero_si512(), c01 = c00, c10 = c00, c11 = c00, c20 = c00,
            c21 = c00, c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00,
            c60 = c00, c61 = c00, c70 = c00, c71 = c00;
    TOD_ROW_POINTERS8(a, lda, mr);
    TOD_VNNI_BU8_LOOP(kq, b)
    __m512i t[TOD_MR_VNNI][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31},
                                 {c40, c41}, {c50, c51}, {c60, c61}, {c70, c71}};
    for (int r = 0; r < mr; r++) {
        int32_t *row = c + r * TOD_NR_VNNI;
        if (accumulate) {
            t[r][0] = _mm512_add_epi32(t[r][0], _mm512_loadu_si512(row));
            t[r][1] = _mm512_add_epi32(t[r][1], _mm512_loadu_si512(row + 16));
        }
        _mm512_storeu_si512(row, t[r][0]);
        _mm512_storeu_si512(row + 16, t[r][1]);
    }
}
#endif /* TOD_X86 */

/* ------------------------------------------------------------------------------------
 * Which paths this CPU can run, and which one is in use
 * ------------------------------------------------------------------------------------ */
static inline int tod_isa_supported(int isa) {
    if (isa == TOD_ISA_PORTABLE) return 1;
#if TOD_X86
    __builtin_cpu_init();
    if (isa == TOD_ISA_AVX2) return __builtin_cpu_supports("avx2") != 0;
    if (isa == TOD_ISA_AVX512_VNNI)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx2");
#endif
    return 0;
}

static inline int tod_best_isa(void) {
    for (int isa = TOD_ISA_COUNT - 1; isa > 0; isa--)
        if (tod_isa_supported(isa)) return isa;
    return TOD_ISA_PORTABLE;
}

/* What a GEMM driver needs to know about a path. */
typedef struct {
    int isa;
    int mr, nr;            /* tile of the micro-kernel */
    uint8_t xor_mask;      /* the vector operand is stored as b ^ xor_mask (0x80: u8 = b + 128) */
    tod_ukr_fn ukr_bsafe;  /* broadcast operand in [-127, 127] */
    tod_ukr_fn ukr_vsafe;  /* vector operand in [-127, 127] */
    tod_ukr_fn ukr_any;    /* no restriction (NULL on AVX2) */
    tod_ukr_fn ukr_bu8;    /* broadcast operand u8 = x ^ 0x80, panel raw s8 (NULL on AVX2) */
} tod_gemm_path;

static inline tod_gemm_path tod_gemm_path_of(int isa) {
    tod_gemm_path p;
#if TOD_X86
    if (isa == TOD_ISA_AVX512_VNNI) {
        p.isa = isa; p.mr = TOD_MR_VNNI; p.nr = TOD_NR_VNNI; p.xor_mask = 0x80;
        p.ukr_bsafe = p.ukr_vsafe = p.ukr_any = tod_ukr_vnni;
        p.ukr_bu8 = tod_ukr_vnni_bu8;
        return p;
    }
    if (isa == TOD_ISA_AVX2) {
        p.isa = isa; p.mr = TOD_MR_AVX2; p.nr = TOD_NR_AVX2; p.xor_mask = 0x00;
        p.ukr_bsafe = tod_ukr_avx2_bsafe; p.ukr_vsafe = tod_ukr_avx2_vsafe; p.ukr_any = NULL;
        p.ukr_bu8 = NULL;
        return p;
    }
#endif
    p.isa = TOD_ISA_PORTABLE; p.mr = TOD_MR_PORTABLE; p.nr = TOD_NR_PORTABLE; p.xor_mask = 0x80;
    p.ukr_bsafe = p.ukr_vsafe = p.ukr_any = tod_ukr_portable;
    p.ukr_bu8 = tod_ukr_portable_bu8;
    return p;
}

#endif /* TINYODL_INT8_UKERNELS_H */
