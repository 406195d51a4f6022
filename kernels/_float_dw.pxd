# Cython declarations of kernels/simd/float_dw.h: depthwise convolution on phase planes.
# Shared by conv.pyx (float kernels) and int8_backward.pyx (int8 layers' gradients).

from libc.stdint cimport int8_t, int32_t, int64_t


cdef extern from "float_dw.h" nogil:
    ctypedef struct tod_dw_geom:
        int64_t H, W, KH, KW, SH, SW, PH, PW, OH, OW, Hq, Wq

    tod_dw_geom tod_dw_make_geom(int64_t H, int64_t W, int64_t KH, int64_t KW, int64_t SH,
                                 int64_t SW, int64_t PH, int64_t PW, int64_t OH, int64_t OW)

    void tod_dw_planes_f32(const float* x, const tod_dw_geom* g, float* planes)
    void tod_dw_planes_f64(const double* x, const tod_dw_geom* g, double* planes)
    void tod_dw_planes_s8_f32(const int8_t* x, int32_t zp, const tod_dw_geom* g, float* planes)
    void tod_dw_forward_f32(const float* planes, const float* w, float bias,
                            const tod_dw_geom* g, float* acc, float* out)
    void tod_dw_forward_f64(const double* planes, const double* w, double bias,
                            const tod_dw_geom* g, double* acc, double* out)
    void tod_dw_virtual_f32(const float* dout, const tod_dw_geom* g, float* dvirt)
    void tod_dw_virtual_f64(const double* dout, const tod_dw_geom* g, double* dvirt)
    void tod_dw_backward_input_f32(const float* dout, const float* w, const tod_dw_geom* g,
                                   float* dvirt, float* dplanes, float* dx)
    void tod_dw_backward_input_f64(const double* dout, const double* w, const tod_dw_geom* g,
                                   double* dvirt, double* dplanes, double* dx)
    void tod_dw_weight_accumulate_f32(const float* dvirt, const float* planes,
                                      const tod_dw_geom* g, float* wacc)
    void tod_dw_weight_accumulate_f64(const double* dvirt, const double* planes,
                                      const tod_dw_geom* g, double* wacc)
    void tod_dw_weight_reduce_f32(const float* wacc, const tod_dw_geom* g, float* dw)
    void tod_dw_weight_reduce_f64(const double* wacc, const tod_dw_geom* g, double* dw)
    enum:
        TOD_HAVE_DW_DX_S8W
    int64_t tod_dw_up_size(const tod_dw_geom* g)
    void tod_dw_backward_input_s8w_f32(const float* dout, const int8_t* w, const tod_dw_geom* g,
                                       float* up, float* dx)
    void tod_dw_weight_s8_f32(const int8_t* x, int64_t xn, int32_t zp, const float* dout,
                              int64_t dn, int64_t N, const tod_dw_geom* g, float* scratch,
                              float* dw)
