# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exercise 03 — Quantization: integer-only inference and training the int8 graph
#
# A microcontroller runs the model in **int8**. In this exercise you write the arithmetic
# that chapter 03 builds on (GUIDE section 3: TFLite's integer semantics):
#
# 1. **per-channel symmetric weight quantization** and **asymmetric activation
#    quantization** (scale and zero point);
# 2. **batchnorm folding** into the convolution before it;
# 3. the **fixed-point multiplier** (`QuantizeMultiplier`) and its application with TFLite's
#    double rounding;
# 4. an **integer-only fully connected layer**;
# 5. **fake quantization** with the straight-through estimator;
# 6. **quantization-aware scaling (QAS)** and the **pure int8 weight update**.
#
# **How you are graded.** The autograder looks up your functions *by name*; keep the names
# and signatures. You may add cells and helper functions. Each task is graded in a fresh,
# sandboxed Python process with a time limit; the grader calls your functions on its own
# inputs and compares the results in its own process. Each task has several checks worth part
# of its points. Cells starting with `### grader: skip` are not run by the grader. Your code
# can import the standard library, numpy and scipy, but not `tinyodl`. One task has an extra
# hidden test whose result you see after grades are published.
#
# The checks enforce what the task text and the docstrings say: dtypes and shapes of what
# you return, the rounding rule (**round half away from zero**, like C's `round`, *not*
# numpy's `np.round`, which rounds ties to even), clamping ranges, and that inputs are left as
# they were.

# %%
# tinyodl-exercise: 03_quantization
import numpy as np

rng = np.random.default_rng(0)


def round_half_away(x):
    """Round to the nearest integer, ties away from zero (C's ``round``), as float64."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


# %% [markdown]
# ## Part 1 — Quantizing weights and activations
#
# A real number is stored as an integer `q` with `real = scale * (q - zero_point)`.
#
# * **Weights**: int8 in $[-127, 127]$, zero point 0, one scale per output channel
#   $s_c = \max |W_c| / 127$ (a channel that is all zeros gets scale 1). Then
#   $q = \mathrm{clamp}(\mathrm{round}(W / s_c), -127, 127)$.
# * **Activations**: int8 in $[-128, 127]$ with one scale and zero point per tensor covering
#   a calibrated range $[x_{min}, x_{max}]$. The range is first widened to contain 0 (so that
#   real 0 -- padding, ReLU's floor -- is exactly representable):
#   $lo = \min(x_{min}, 0)$, $hi = \max(x_{max}, 0)$, $s = (hi - lo) / 255$,
#   $zp = \mathrm{clamp}(-128 - \mathrm{round}(lo / s), -128, 127)$; an all-zero range
#   gets $s = 1, zp = 0$.
#
# **Task 1 (2 points).** `quantize_weights_per_channel(w)` returns `(q, scales)`: `q` int8 of
# the shape of `w`, `scales` float64 of shape `(F,)` (`F = w.shape[0]`, the output channels).
#
# **Task 2 (2 points).** `choose_activation_qparams(x_min, x_max)` returns
# `(scale, zero_point)` as a Python `float` and `int`; `quantize(x, scale, zero_point)`
# returns int8 `clamp(round(x / scale) + zero_point, -128, 127)` of the shape of `x`.


# %%
def quantize_weights_per_channel(w):
    """Symmetric per-output-channel int8 quantization of a weight tensor.

    Parameters
    ----------
    w : ndarray, float, shape (F, ...)

    Returns
    -------
    q : ndarray, int8, shape of w, values in [-127, 127]
    scales : ndarray, float64, shape (F,)
    """
    ### BEGIN SOLUTION
    w64 = np.asarray(w, dtype=np.float64)
    amax = np.abs(w64.reshape(w64.shape[0], -1)).max(axis=1)
    scales = np.where(amax > 0, amax / 127.0, 1.0)
    shaped = scales.reshape((-1,) + (1,) * (w64.ndim - 1))
    q = np.clip(round_half_away(w64 / shaped), -127, 127).astype(np.int8)
    return q, scales
    ### END SOLUTION


def choose_activation_qparams(x_min, x_max):
    """``(scale, zero_point)`` of an int8 tensor covering ``[x_min, x_max]`` and 0."""
    ### BEGIN SOLUTION
    lo, hi = min(float(x_min), 0.0), max(float(x_max), 0.0)
    scale = (hi - lo) / 255.0
    if scale == 0.0:
        return 1.0, 0
    zero_point = int(np.clip(-128 - round_half_away(lo / scale), -128, 127))
    return float(scale), zero_point
    ### END SOLUTION


def quantize(x, scale, zero_point):
    """``clamp(round_half_away(x / scale) + zero_point, -128, 127)`` as int8."""
    ### BEGIN SOLUTION
    q = round_half_away(np.asarray(x, dtype=np.float64) / scale) + zero_point
    return np.clip(q, -128, 127).astype(np.int8)
    ### END SOLUTION


# %%
### grader: skip
w = rng.standard_normal((4, 3, 3, 3))
q, s = quantize_weights_per_channel(w)
print("max |q| per channel:", np.abs(q).reshape(4, -1).max(axis=1))  # 127 each
scale, zp = choose_activation_qparams(0.0, 6.0)  # a ReLU6 output
print(scale, zp, quantize(np.array([0.0, 3.0, 6.0, 7.0]), scale, zp))

# %% [markdown]
# ## Part 2 — Folding batchnorm
#
# In evaluation mode batchnorm is an affine map per channel:
# $y = \gamma (x - \mu) / \sqrt{\sigma^2 + \epsilon} + \beta$. After a convolution
# $x = W * a + b$ it merges into the convolution: with $k = \gamma / \sqrt{\sigma^2 + \epsilon}$,
# $W' = k_c W_c$ (each output channel scaled) and $b' = k (b - \mu) + \beta$.
#
# **Task 3 (1 point).** `fold_batchnorm(w, b, gamma, beta, mean, var, eps)` returns
# `(w_folded, b_folded)` with the shapes of `w` (F, C, KH, KW) and `(F,)`, float64. `b` may be
# `None` (a conv without bias). The inputs must not be modified.


# %%
def fold_batchnorm(w, b, gamma, beta, mean, var, eps=1e-5):
    """Merge an evaluation-mode batchnorm into the preceding convolution."""
    ### BEGIN SOLUTION
    k = np.asarray(gamma, dtype=np.float64) / np.sqrt(np.asarray(var, dtype=np.float64) + eps)
    w_folded = np.asarray(w, dtype=np.float64) * k.reshape(-1, 1, 1, 1)
    bias = np.zeros(len(k)) if b is None else np.asarray(b, dtype=np.float64)
    b_folded = k * (bias - mean) + beta
    return w_folded, b_folded
    ### END SOLUTION


# %% [markdown]
# ## Part 3 — The fixed-point multiplier
#
# An int8 layer rescales its int32 accumulator by $M = s_x s_W / s_y$, a real number. TFLite
# stores it as a 31-bit mantissa and a shift (`QuantizeMultiplier`): with
# `frexp(M) = m * 2**shift`, $m \in [0.5, 1)$, $M_0 = \mathrm{round}(m \cdot 2^{31})$; if
# $M_0 = 2^{31}$, halve it and add 1 to the shift; $M = 0$ gives $(0, 0)$. (Use `np.frexp`.)
#
# Applying it to an int32 value $x$ ("double rounding", `MultiplyByQuantizedMultiplier`), with
# `left = max(shift, 0)`, `right = max(-shift, 0)` and int64 arithmetic:
#
# 1. $x' = \mathrm{saturate_{int32}}(x \cdot 2^{left})$;
# 2. $h = (x' M_0 + 2^{30}) \gg 31$ (arithmetic shift: `>>` on int64 numpy arrays);
# 3. divide by $2^{right}$ rounding half away from zero: `mask = 2**right - 1`,
#    `rem = h & mask`, `thr = (mask >> 1) + (h < 0)`, result `(h >> right) + (rem > thr)`.
#
# **Task 4 (2 points).** `quantize_multiplier(m)` for an array of non-negative multipliers
# returns `(m0, shift)`, both int64 arrays of the shape of `m`.
# `multiply_by_quantized_multiplier(x, m0, shift)` returns an int64 array of the shape of
# `x` (`m0`, `shift` are scalars or broadcast against `x`).


# %%
def quantize_multiplier(m):
    """TFLite's QuantizeMultiplier: ``m ~= m0 * 2**(shift - 31)``."""
    ### BEGIN SOLUTION
    m = np.asarray(m, dtype=np.float64)
    frac, shift = np.frexp(m)
    m0 = round_half_away(frac * 2.0**31).astype(np.int64)
    shift = shift.astype(np.int64)
    carry = m0 == 2**31
    m0 = np.where(carry, m0 // 2, m0)
    shift = np.where(carry, shift + 1, shift)
    shift = np.where(m0 == 0, 0, shift)
    return m0, shift
    ### END SOLUTION


def multiply_by_quantized_multiplier(x, m0, shift):
    """``x * m0 * 2**(shift - 31)`` with TFLite's double rounding; int64 result."""
    ### BEGIN SOLUTION
    x = np.asarray(x, dtype=np.int64)
    m0 = np.asarray(m0, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
    xs = np.clip(x << left, -(2**31), 2**31 - 1)
    high = (xs * m0 + (1 << 30)) >> 31
    mask = (np.int64(1) << right) - 1
    return (high >> right) + ((high & mask) > (mask >> 1) + (high < 0))
    ### END SOLUTION


# %% [markdown]
# ## Part 4 — An integer-only fully connected layer
#
# With int8 input `x_q` (zero point `zp_in`), int8 weights `w_q` (F, K) (zero point 0), int32
# bias `b_q`, and per-output-channel `(m0, shift)`:
#
# $acc_{nf} = \sum_k w_{fk} (x_{nk} - zp_{in}) + b_f$ (exact, int64 -- never `int8 @ int8`,
# which wraps around), then
# $y = \mathrm{clamp}(\mathrm{MBQM}(acc, m0_f, shift_f) + zp_{out}, act_{min}, act_{max})$.
#
# **Task 5 (2 points + 1 hidden).** `linear_s8(x_q, w_q, b_q, zp_in, zp_out, m0, shift,
# act_min, act_max)` returns int8 of shape `(N, F)`.


# %%
def linear_s8(x_q, w_q, b_q, zp_in, zp_out, m0, shift, act_min=-128, act_max=127):
    """Integer-only fully connected layer (TFLite semantics)."""
    ### BEGIN SOLUTION
    acc = (x_q.astype(np.int64) - zp_in) @ w_q.astype(np.int64).T + b_q.astype(np.int64)
    y = multiply_by_quantized_multiplier(acc, m0[None, :], shift[None, :]) + zp_out
    return np.clip(y, act_min, act_max).astype(np.int8)
    ### END SOLUTION


# %%
### grader: skip
x = rng.standard_normal((5, 8))
w = rng.standard_normal((3, 8))
sx, zx = choose_activation_qparams(x.min(), x.max())
wq, sw = quantize_weights_per_channel(w)
y_real = x @ w.T
sy, zy = choose_activation_qparams(y_real.min(), y_real.max())
m0, sh = quantize_multiplier(sx * sw / sy)
bq = np.zeros(3, dtype=np.int32)
yq = linear_s8(quantize(x, sx, zx), wq, bq, zx, zy, m0, sh)
print("max error in steps:", np.abs(quantize(y_real, sy, zy).astype(int) - yq).max())

# %% [markdown]
# ## Part 5 — Fake quantization and the straight-through estimator
#
# Quantization-aware training computes in float but rounds and clamps like the integer
# model: `fq(x) = scale * (clamp(round(x / scale) + zp, qmin, qmax) - zp)`. Its derivative is
# 0 almost everywhere, so training uses the **straight-through estimator**: rounding counts as
# the identity, and the gradient passes where the value was *not* clamped, i.e. where
# `qmin < round(x / scale) + zp < qmax` (a value landing exactly on a bound counts as clamped).
#
# **Task 6 (1 point).** `fake_quantize_forward(x, scale, zp, qmin, qmax)` returns
# `(y, mask)`: `y` of `x`'s shape and dtype, `mask` boolean;
# `fake_quantize_backward(dout, mask)` returns the gradient w.r.t. `x`.


# %%
def fake_quantize_forward(x, scale, zp, qmin=-128, qmax=127):
    """Quantize-dequantize ``x``; also return the straight-through mask."""
    ### BEGIN SOLUTION
    q = round_half_away(np.asarray(x, dtype=np.float64) / scale) + zp
    mask = (q > qmin) & (q < qmax)
    y = scale * (np.clip(q, qmin, qmax) - zp)
    return y.astype(x.dtype), mask
    ### END SOLUTION


def fake_quantize_backward(dout, mask):
    """Straight-through estimator: pass ``dout`` where the value was not clamped."""
    ### BEGIN SOLUTION
    return dout * mask
    ### END SOLUTION


# %% [markdown]
# ## Part 6 — Training the int8 graph: QAS, and where the weights live
#
# On the device the trainable tensors are the integers themselves. Because $W = s_W W_q$,
# the gradient with respect to the integers is $G_{W_q} = s_W G_W$: plain SGD on $W_q$ moves
# the real weights at a learning rate $\alpha s_W^2$ -- far too slowly, and differently in each
# channel. **Quantization-aware scaling** (Lin et al. 2022) multiplies the weight gradient by
# $s_W^{-2}$ (per output channel) and the bias gradient by $(s_W s_x)^{-2}$ (the bias has
# scale $s_x s_W$).
#
# When only the int8 tensor is stored, an update is applied by rounding it:
# $W_q \leftarrow \mathrm{clamp}(W_q + \mathrm{round}(\Delta), -127, 127)$ -- an update smaller
# than half a step is lost.
#
# **Task 7 (2 points).** `qas_scale(g_w, g_b, s_w, s_x)` returns `(g_w_scaled, g_b_scaled)`
# (float64; `g_w` has shape `(F, ...)`, `g_b` and `s_w` shape `(F,)`, `s_x` a float).
# `int8_update(w_q, delta)` returns the new int8 weights (a new array; `w_q` is not modified).


# %%
def qas_scale(g_w, g_b, s_w, s_x):
    """Quantization-aware scaling of the integer-weight and integer-bias gradients."""
    ### BEGIN SOLUTION
    s_w = np.asarray(s_w, dtype=np.float64)
    factor = (s_w**-2).reshape((-1,) + (1,) * (np.ndim(g_w) - 1))
    return np.asarray(g_w, dtype=np.float64) * factor, np.asarray(g_b) * (s_w * s_x) ** -2
    ### END SOLUTION


def int8_update(w_q, delta):
    """Pure int8 storage: add the rounded update and clamp to [-127, 127]."""
    ### BEGIN SOLUTION
    new = w_q.astype(np.int64) + round_half_away(delta).astype(np.int64)
    return np.clip(new, -127, 127).astype(np.int8)
    ### END SOLUTION


# %%
### grader: skip
w_q = np.array([10, -20, 127], dtype=np.int8)
print(int8_update(w_q, np.array([0.4, -0.6, 3.0])))  # [10, -21, 127]
