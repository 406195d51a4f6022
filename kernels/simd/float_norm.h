/* tinyodl batch-normalisation loops in C, for float and double (kernels/norm.pyx).
 *
 * Chapter 00. One channel of an (N, C, HW) tensor is N contiguous runs of HW values.
 * Sums over a run go into eight independent partial sums (in double), which the compiler
 * can keep in one vector register: the order of the additions is fixed, so results do
 * not depend on the compiler or the CPU. The readable twin is tinyodl/reference/norm.py.
 */
#ifndef TINYODL_FLOAT_NORM_H
#define TINYODL_FLOAT_NORM_H

#include <stdint.h>

#define TOD_NORM_DEFINE(T, S)                                                              \
    /* sum_i x[i] */                                                                       \
    static inline double tod_sum_##S(const T *restrict x, int64_t n) {                     \
        double p[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                            \
        int64_t i = 0;                                                                     \
        for (; i + 8 <= n; i += 8)                                                         \
            for (int l = 0; l < 8; l++) p[l] += (double)x[i + l];                          \
        for (; i < n; i++) p[0] += (double)x[i];                                           \
        return ((p[0] + p[4]) + (p[1] + p[5])) + ((p[2] + p[6]) + (p[3] + p[7]));          \
    }                                                                                      \
    /* sum_i (x[i] - m)^2 */                                                               \
    static inline double tod_sumsq_dev_##S(const T *restrict x, int64_t n, double m) {      \
        double p[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                            \
        int64_t i = 0;                                                                     \
        for (; i + 8 <= n; i += 8)                                                         \
            for (int l = 0; l < 8; l++) {                                                  \
                double d = (double)x[i + l] - m;                                           \
                p[l] += d * d;                                                             \
            }                                                                              \
        for (; i < n; i++) {                                                               \
            double d = (double)x[i] - m;                                                   \
            p[0] += d * d;                                                                 \
        }                                                                                  \
        return ((p[0] + p[4]) + (p[1] + p[5])) + ((p[2] + p[6]) + (p[3] + p[7]));          \
    }                                                                                      \
    /* sum_i a[i] and sum_i a[i] * b[i] in one pass */                                     \
    static inline void tod_sum_dot_##S(const T *restrict a, const T *restrict b, int64_t n, \
                                       double *sa, double *sab) {                          \
        double p[8] = {0, 0, 0, 0, 0, 0, 0, 0}, q[8] = {0, 0, 0, 0, 0, 0, 0, 0};          \
        int64_t i = 0;                                                                     \
        for (; i + 8 <= n; i += 8)                                                         \
            for (int l = 0; l < 8; l++) {                                                  \
                p[l] += (double)a[i + l];                                                  \
                q[l] += (double)a[i + l] * (double)b[i + l];                               \
            }                                                                              \
        for (; i < n; i++) {                                                               \
            p[0] += (double)a[i];                                                          \
            q[0] += (double)a[i] * (double)b[i];                                           \
        }                                                                                  \
        *sa += ((p[0] + p[4]) + (p[1] + p[5])) + ((p[2] + p[6]) + (p[3] + p[7]));          \
        *sab += ((q[0] + q[4]) + (q[1] + q[5])) + ((q[2] + q[6]) + (q[3] + q[7]));         \
    }                                                                                      \
    /* x_hat = (x - mean) * inv_std;  y = gamma * x_hat + beta  (x_hat may be NULL) */      \
    static inline void tod_bn_apply_##S(const T *restrict x, int64_t n, T mean, T inv_std,  \
                                        T gamma, T beta, T *restrict x_hat,                \
                                        T *restrict y) {                                   \
        if (x_hat != 0) {                                                                  \
            for (int64_t i = 0; i < n; i++) {                                              \
                T h = (x[i] - mean) * inv_std;                                             \
                x_hat[i] = h;                                                              \
                y[i] = gamma * h + beta;                                                   \
            }                                                                              \
        } else {                                                                           \
            for (int64_t i = 0; i < n; i++) y[i] = gamma * ((x[i] - mean) * inv_std) + beta; \
        }                                                                                  \
    }                                                                                      \
    /* dx = k * (m * dout - dbeta - x_hat * dxh), or dx = k * dout when x_hat is NULL */   \
    static inline void tod_bn_dx_##S(const T *restrict dout, const T *restrict x_hat,      \
                                     int64_t n, T k, T m, T dbeta, T dxh, T *restrict dx) { \
        if (x_hat != 0) {                                                                  \
            for (int64_t i = 0; i < n; i++)                                                \
                dx[i] = k * ((m * dout[i] - dbeta) - x_hat[i] * dxh);                      \
        } else {                                                                           \
            for (int64_t i = 0; i < n; i++) dx[i] = k * dout[i];                           \
        }                                                                                  \
    }

TOD_NORM_DEFINE(float, f32)
TOD_NORM_DEFINE(double, f64)

#endif /* TINYODL_FLOAT_NORM_H */
