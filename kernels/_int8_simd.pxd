# Cython declarations of kernels/simd/int8_simd.h (the int8 micro-kernels, packing routines,
# epilogues and the run-time choice of SIMD path). Shared by int8.pyx and gemm_steps.pyx.

from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t


cdef extern from "int8_simd.h" nogil:
    enum:
        TOD_ISA_PORTABLE
        TOD_ISA_AVX2
        TOD_ISA_AVX512_VNNI
        TOD_ISA_COUNT

    ctypedef void (*tod_ukr_fn)(int64_t kq, const int8_t* a, int64_t lda, int mr,
                                const uint8_t* b, int32_t* c, int accumulate)
    ctypedef void (*tod_requant_row_fn)(const int32_t* acc, int64_t n, int64_t bias, int32_t m0,
                                        int32_t shift, int single, int32_t zp, int32_t lo,
                                        int32_t hi, int8_t* out)
    ctypedef void (*tod_requant_tile_fn)(const int32_t* acc, int64_t ldt, int64_t rows,
                                         int64_t width, const int32_t* bias32,
                                         const int64_t* bias, const int32_t* m0,
                                         const int32_t* left, const int32_t* right,
                                         int single, int32_t zp, int32_t lo, int32_t hi,
                                         int8_t* out, int64_t ldo)
    ctypedef void (*tod_dw_tap_fn)(int32_t* acc, const int16_t* xs, int64_t n, int32_t w)
    ctypedef void (*tod_rowsum_fn)(const int8_t* a, int64_t rows, int64_t k, int64_t ld,
                                   int64_t* out)
    ctypedef void (*tod_colsum_fn)(const int8_t* a, int64_t k, int64_t cols, int64_t ld,
                                   int32_t* tmp, int64_t* out)

    ctypedef struct tod_gemm_path:
        int isa
        int mr
        int nr
        uint8_t xor_mask
        tod_ukr_fn ukr_bsafe
        tod_ukr_fn ukr_vsafe
        tod_ukr_fn ukr_any
        tod_ukr_fn ukr_bu8

    ctypedef struct tod_int8_path:
        tod_gemm_path gemm
        tod_requant_row_fn requant_row
        tod_requant_tile_fn requant_tile
        tod_dw_tap_fn dw_tap
        tod_rowsum_fn rowsum
        tod_colsum_fn colsum

    ctypedef struct tod_conv_geom:
        int64_t C, Hp, Wp, KH, KW, SH, SW, OH, OW

    int tod_isa_supported(int isa)
    int tod_best_isa()
    tod_gemm_path tod_gemm_path_of(int isa)
    tod_int8_path tod_int8_path_of(int isa)

    void tod_copy_rows_xor(const int8_t* src, int64_t rows, int64_t k, int64_t ld,
                           uint8_t mask, int64_t kp, uint8_t* dst)
    void tod_pack_rows(const int8_t* src, int64_t cols, int64_t k, int64_t ld, int nr,
                       uint8_t xor_mask, int64_t kq, uint8_t* dst)
    void tod_pack_cols(const int8_t* src, int64_t cols, int64_t k, int64_t ld, int nr,
                       uint8_t xor_mask, int64_t kq, uint8_t* dst)
    void tod_to_padded_hwc(const int8_t* x, int64_t C, int64_t H, int64_t W, int64_t PT,
                           int64_t PB, int64_t PL, int64_t PR, uint8_t xor_mask,
                           uint8_t pad, uint8_t* dst)
    void tod_pack_conv_panel(const uint8_t* hwc, const tod_conv_geom* g, int64_t c0,
                             int64_t Cg, int64_t j0, int64_t ncols, int nr, uint8_t fill,
                             int64_t kq, uint8_t* dst)
    void tod_pack_pointwise_panel(const int8_t* x, int64_t C, int64_t P, int64_t c0,
                                  int64_t Cg, int64_t j0, int64_t ncols, int nr,
                                  uint8_t xor_mask, int64_t kq, uint8_t* dst)
    void tod_dw_phase_planes_s8(const int8_t* x, int64_t H, int64_t W, int32_t zp, int64_t SH,
                                int64_t SW, int64_t PH, int64_t PW, int64_t Hq, int64_t Wq,
                                int16_t* planes)

    # linear_s8's tile on the VNNI path, requantized in registers (int8_requant.h)
    void tod_linear_tile_vnni(int64_t kq, const int8_t* a, int64_t lda, int mr,
                              const uint8_t* b, int64_t width, const int32_t* bias32,
                              const int32_t* m0, const int32_t* left, const int32_t* right,
                              int nosat, int32_t zp, int32_t lo, int32_t hi, int8_t* out,
                              int64_t ldo)

    void tod_linear_tile_avx2(int64_t kq, const int8_t* a, int64_t lda, int mr,
                              const uint8_t* b, int64_t width, const int32_t* bias32,
                              const int32_t* m0, const int32_t* left, const int32_t* right,
                              int nosat, int32_t zp, int32_t lo, int32_t hi, int8_t* out,
                              int64_t ldo)
    # the short requantization route of that tile: parameters per 16 channels, set up once
    ctypedef struct tod_rqs16:
        pass
    void tod_rqs16_prepare(const int32_t* bias32, const int32_t* m0, const int32_t* right,
                           int64_t f, tod_rqs16* prm)
    void tod_linear_tile_vnni_short(int64_t kq, const int8_t* a, int64_t lda, int mr,
                                    const uint8_t* b, int64_t width, const tod_rqs16* prm,
                                    int32_t zp, int32_t lo, int32_t hi, int8_t* out,
                                    int64_t ldo)
    void tod_panel_sums_vnni(const uint8_t* packed, int64_t panels, int64_t kq, int64_t cols,
                             int64_t* out)

    # the portable micro-kernel, for the teaching steps
    void tod_ukr_portable(int64_t kq, const int8_t* a, int64_t lda, int mr, const uint8_t* b,
                          int32_t* c, int accumulate)
