/* Element-wise loops of a float training step (kernels/elementwise.pyx), float and double.
 *
 * Each function handles one contiguous range [0, n) and is called per block by the OpenMP
 * loop of elementwise.pyx. They must give the same bits as the numpy reference
 * (tinyodl/reference/elementwise.py), so every product is rounded before it is added, as
 * numpy does: floating-point contraction (a * b + c fused into one FMA, one rounding) is
 * switched off for this file. The compiler still vectorizes the loops.
 */
#ifndef TOD_FLOAT_ELEMENTWISE_H
#define TOD_FLOAT_ELEMENTWISE_H

#include <stdint.h>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#elif defined(__clang__)
#pragma clang fp contract(off)
#endif

#define TOD_EW_DEFINE(T, SFX)                                                                \
    /* y = x * (x > 0), mask = x > 0 (numpy: x * mask, the bool cast to 1 or 0) */          \
    static void tod_relu_fwd_##SFX(const T *x, T *y, uint8_t *mask, int64_t n) {            \
        for (int64_t i = 0; i < n; i++) {                                                   \
            const int pos = x[i] > (T)0;                                                    \
            y[i] = x[i] * (T)pos;                                                           \
            mask[i] = (uint8_t)pos;                                                         \
        }                                                                                   \
    }                                                                                       \
    /* dx = dout * mask */                                                                  \
    static void tod_relu_bwd_##SFX(const T *dout, const uint8_t *mask, T *dx, int64_t n) {  \
        for (int64_t i = 0; i < n; i++)                                                     \
            dx[i] = dout[i] * (T)(mask[i] != 0);                                            \
    }                                                                                       \
    static void tod_add_into_##SFX(T *dst, const T *src, int64_t n) {                       \
        for (int64_t i = 0; i < n; i++)                                                     \
            dst[i] = dst[i] + src[i];                                                       \
    }                                                                                       \
    /* SGD (PyTorch's rule): g = grad + wd * w; buf = g (first) or m * buf + g;             \
     * g = g + m * buf (Nesterov) or buf; w = w - lr * g. One rounding per numpy operation. */ \
    static void tod_sgd_##SFX(T *w, const T *grad, T *buf, int64_t n, T lr, T m, T wd,       \
                              int has_m, int has_wd, int first, int nesterov) {             \
        for (int64_t i = 0; i < n; i++) {                                                   \
            T g = grad[i];                                                                  \
            if (has_wd) {                                                                   \
                const T d = wd * w[i];                                                      \
                g = g + d;                                                                  \
            }                                                                               \
            if (has_m) {                                                                    \
                T b;                                                                        \
                if (first) {                                                                \
                    b = g;                                                                  \
                } else {                                                                    \
                    b = m * buf[i];                                                         \
                    b = b + g;                                                              \
                }                                                                           \
                buf[i] = b;                                                                 \
                if (nesterov) {                                                             \
                    const T mb = m * b;                                                     \
                    g = g + mb;                                                             \
                } else {                                                                    \
                    g = b;                                                                  \
                }                                                                           \
            }                                                                               \
            const T step = lr * g;                                                          \
            w[i] = w[i] - step;                                                             \
        }                                                                                   \
    }                                                                                       \
    /* out[c] = sum over n < N and p < S of x[(n * C + c) * S + p], for c in [c0, c1),      \
     * summed in double in a fixed order (the result does not depend on the threads) */     \
    static void tod_bias_grad_##SFX(const T *x, int64_t N, int64_t C, int64_t S, int64_t c0, \
                                    int64_t c1, T *out) {                                   \
        for (int64_t c = c0; c < c1; c++) {                                                 \
            double s = 0.0;                                                                 \
            for (int64_t k = 0; k < N; k++) {                                               \
                const T *row = x + (k * C + c) * S;                                         \
                double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0}; /* 8 lanes: vectorizable */      \
                int64_t p = 0;                                                              \
                for (; p + 8 <= S; p += 8)                                                  \
                    for (int j = 0; j < 8; j++)                                             \
                        acc[j] += (double)row[p + j];                                       \
                for (; p < S; p++)                                                          \
                    acc[0] += (double)row[p];                                               \
                s += ((acc[0] + acc[1]) + (acc[2] + acc[3])) +                              \
                     ((acc[4] + acc[5]) + (acc[6] + acc[7]));                               \
            }                                                                               \
            out[c] = (T)s;                                                                  \
        }                                                                                   \
    }

TOD_EW_DEFINE(float, f32)
TOD_EW_DEFINE(double, f64)

#undef TOD_EW_DEFINE

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

#endif /* TOD_FLOAT_ELEMENTWISE_H */
