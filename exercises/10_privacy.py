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
# # Exercise 10 — Differential privacy: calibrated noise, DP-SGD and its accountant
#
# In chapter 10 a model is trained so that what leaves the device says almost nothing about
# any one record. In this exercise you write the parts of that machinery:
#
# 1. the **exact privacy profile** of the Gaussian mechanism and the smallest noise that
#    meets a budget (the *analytic* Gaussian mechanism of Balle & Wang);
# 2. **randomized response** and the unbiased estimate of the true frequencies;
# 3. **per-example gradients** of a linear layer and of a convolution, from what the backward
#    pass holds;
# 4. **clipping** each example's gradient to norm C and summing, then adding calibrated
#    **Gaussian noise** (one DP-SGD step);
# 5. the **norms without the gradients** (ghost clipping) for a linear layer;
# 6. the **RDP accountant** of the Poisson-subsampled Gaussian and its conversion to
#    $(\varepsilon, \delta)$.
#
# **How you are graded.** The autograder looks up your functions *by name*; keep the names
# and signatures. You may add cells, split cells and write helper functions. Each task is
# graded in a fresh, sandboxed Python process with a time limit; the grader calls your
# functions on its own inputs and compares the results in its own process. Each task has
# several checks worth part of its points. Cells starting with `### grader: skip` are not run
# by the grader. While grading, your code can import the standard library, numpy and scipy,
# but not `tinyodl` (the point is to write it yourself) nor plotting libraries.
#
# The checks enforce exactly what the task text and the docstrings say: the shapes and
# dtypes of what you return (float32 in, float32 out wherever a docstring says "same dtype"),
# the order in which random numbers are drawn where a docstring fixes it, and the values.
#
# Conventions (as in PyTorch and tinyodl): linear weights `(out, in)`, images `(N, C, H, W)`,
# convolution weights `(F, C, KH, KW)`. A "per-example gradient" of a parameter of shape `S`
# is an array of shape `(N, *S)`: entry `n` is the gradient of example `n`'s loss alone.

# %%
# tinyodl-exercise: 10_privacy
import math

import numpy as np
from scipy import special

rng = np.random.default_rng(0)

# %% [markdown]
# ## Part 1 — The analytic Gaussian mechanism
#
# Adding $\mathcal N(0, \sigma^2)$ to a query with L2 sensitivity $\Delta$ is
# $(\varepsilon, \delta)$-DP exactly when $\delta \ge \delta(\varepsilon)$, where
# (Balle & Wang 2018, Theorem 8)
#
# $$\delta(\varepsilon) = \Phi\!\Big(\frac{\Delta}{2\sigma} - \frac{\varepsilon\sigma}{\Delta}\Big)
#   - e^{\varepsilon}\,\Phi\!\Big(-\frac{\Delta}{2\sigma} - \frac{\varepsilon\sigma}{\Delta}\Big)$$
#
# and $\Phi$ is the standard normal CDF (`scipy.special.ndtr`). $\delta(\varepsilon)$ falls as
# $\sigma$ grows, so the smallest $\sigma$ for a budget can be found by bisection.
#
# **Task 1 (2 points).** `gaussian_delta(sigma, sensitivity, epsilon)` returns the formula
# above as a Python float. `calibrate_gaussian(sensitivity, epsilon, delta)` returns the
# smallest $\sigma$ with `gaussian_delta(sigma, sensitivity, epsilon) <= delta`, to a relative
# accuracy of 1e-6 or better, for any $\varepsilon > 0$ (also $\varepsilon \ge 1$, where the
# textbook bound $\sigma = \Delta\sqrt{2\ln(1.25/\delta)}/\varepsilon$ is not valid).


# %%
def gaussian_delta(sigma, sensitivity, epsilon):
    """Exact delta of the Gaussian mechanism with noise std ``sigma`` at ``epsilon`` (float)."""
    ### BEGIN SOLUTION
    a = sensitivity / (2 * sigma)
    b = epsilon * sigma / sensitivity
    return float(special.ndtr(a - b) - math.exp(epsilon) * special.ndtr(-a - b))
    ### END SOLUTION


def calibrate_gaussian(sensitivity, epsilon, delta):
    """Smallest sigma with ``gaussian_delta(sigma, sensitivity, epsilon) <= delta`` (float)."""
    ### BEGIN SOLUTION
    lo, hi = 1e-3 * sensitivity, sensitivity
    while gaussian_delta(hi, sensitivity, epsilon) > delta:
        hi *= 2
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if gaussian_delta(mid, sensitivity, epsilon) > delta:
            lo = mid
        else:
            hi = mid
    return float(hi)
    ### END SOLUTION


# %%
### grader: skip
# Self-check: the analytic sigma is below the textbook bound where that bound holds.
s = calibrate_gaussian(1.0, 0.5, 1e-5)
print(s, 1.0 * math.sqrt(2 * math.log(1.25 / 1e-5)) / 0.5, gaussian_delta(s, 1.0, 0.5))

# %% [markdown]
# ## Part 2 — Randomized response
#
# Each person holds a value in $\{0, \dots, k-1\}$ and reports it truthfully with probability
# $p = e^\varepsilon / (e^\varepsilon + k - 1)$; otherwise they report one of the *other*
# $k - 1$ values, each with probability $r = (1 - p)/(k - 1)$. If a fraction $f_j$ of people
# hold value $j$, the expected fraction of reports of $j$ is $f_j p + (1 - f_j) r$.
#
# **Task 2 (1 point).** `estimate_frequencies(reports, epsilon, k)` inverts that relation:
# it returns the unbiased estimate of $(f_0, \dots, f_{k-1})$ from the observed fractions of
# the reports, as a float64 array of shape `(k,)` (it may leave $[0, 1]$ by sampling noise:
# do not clip it).


# %%
def estimate_frequencies(reports, epsilon, k):
    """Unbiased estimate of the true frequencies from randomized-response reports.

    reports : int array (M,), values in [0, k). Returns float64 (k,).
    """
    ### BEGIN SOLUTION
    p = math.exp(epsilon) / (math.exp(epsilon) + k - 1)
    r = (1 - p) / (k - 1)
    observed = np.bincount(np.asarray(reports), minlength=k)[:k] / len(reports)
    return ((observed - r) / (p - r)).astype(np.float64)
    ### END SOLUTION


# %% [markdown]
# ## Part 3 — Per-example gradients from the backward pass
#
# For a linear layer $y = x W^\top + b$ the gradient of example $n$'s loss is the outer
# product of its output gradient and its input: $\partial L_n/\partial W = \text{dout}_n
# x_n^\top$ and $\partial L_n/\partial b = \text{dout}_n$. For a convolution, with
# $U_n = \text{im2col}(x_n)$ of shape `(C*KH*KW, L)` and $D_n$ = `dout[n]` reshaped to
# `(F, L)` (L = OH·OW output positions), $\partial L_n / \partial W = D_n U_n^\top$ reshaped
# to `(F, C, KH, KW)` and $\partial L_n / \partial b$ = `dout[n]` summed over positions.
#
# Compute them for the whole batch at once (`np.einsum` or `np.matmul` over a batch axis): a
# Python loop over examples is exactly what DP libraries avoid (it is not graded, but try
# N = 1000 and feel the difference). `im2col` is given.
#
# **Task 3 (1 point).** `linear_per_example_grads(x, dout)` returns `(dw, db)` of shapes
# `(N, out, in)` and `(N, out)`, same dtype as `x`.
# **Task 4 (2 points).** `conv2d_per_example_grads(x, dout, kernel_size, stride, padding)`
# returns `(dw, db)` of shapes `(N, F, C, KH, KW)` and `(N, F)`, same dtype as `x`.


# %%
def pair(value):
    """``3 -> (3, 3)``; ``(2, 1) -> (2, 1)``."""
    return (value, value) if np.isscalar(value) else tuple(value)


def im2col(x, kernel_size, stride=1, padding=0):
    """(N, C, H, W) -> (N, C*KH*KW, OH*OW); rows ordered (c, kh, kw), columns (oh, ow)."""
    (kh, kw), (sh, sw), (ph, pw) = pair(kernel_size), pair(stride), pair(padding)
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw]
    return cols.reshape(n, c * kh * kw, oh * ow)


def linear_per_example_grads(x, dout):
    """Per-example gradients of ``y = x @ W.T + b``.

    x : (N, in); dout : (N, out). Returns ``(dw, db)``: (N, out, in), (N, out), same dtype as x.
    """
    ### BEGIN SOLUTION
    dw = np.einsum("no,ni->noi", dout, x).astype(x.dtype, copy=False)
    return dw, dout.astype(x.dtype, copy=True)
    ### END SOLUTION


def conv2d_per_example_grads(x, dout, kernel_size, stride=1, padding=0):
    """Per-example gradients of a convolution (groups = 1).

    x : (N, C, H, W); dout : (N, F, OH, OW). Returns ``(dw, db)``: (N, F, C, KH, KW) and
    (N, F), same dtype as x.
    """
    ### BEGIN SOLUTION
    n, c = x.shape[:2]
    f = dout.shape[1]
    kh, kw = pair(kernel_size)
    cols = im2col(x, (kh, kw), stride, padding)  # (N, C*KH*KW, L)
    d = dout.reshape(n, f, -1)  # (N, F, L)
    dw = np.matmul(d, cols.transpose(0, 2, 1)).reshape(n, f, c, kh, kw)
    return dw.astype(x.dtype, copy=False), dout.sum(axis=(2, 3)).astype(x.dtype)
    ### END SOLUTION


# %%
### grader: skip
# Self-check: the per-example gradients sum to the batch gradient dout.T @ x.
x, dout = rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
dw, db = linear_per_example_grads(x, dout)
print(np.allclose(dw.sum(0), dout.T @ x), np.allclose(db.sum(0), dout.sum(0)))

# %% [markdown]
# ## Part 4 — Clip, sum, add noise: one DP-SGD step
#
# DP-SGD bounds each example's influence by clipping its **whole** gradient — the norm over
# all parameters together — to $C$, then hides it with Gaussian noise:
#
# $$g_n \leftarrow g_n / \max(1, \|g_n\|/C), \qquad
#   \tilde g = \Big(\textstyle\sum_n g_n + \mathcal N(0, \sigma^2 C^2 I)\Big) / L.$$
#
# **Task 5 (2 points).** `clip_and_sum(grad_samples, clip_norm)` takes a list of
# per-example gradient arrays (one per parameter, each `(N, ...)`) and returns
# `(sums, norms)`: the list of clipped sums (each of the parameter's shape, same dtype as
# its input) and the float64 array `(N,)` of the norms **before** clipping.
#
# **Task 6 (1 point).** `noisy_average(sums, clip_norm, noise_multiplier, expected_batch_size,
# seed)` returns the list $\big(s + \sigma C\, z\big) / L$, one array per parameter (same
# shape and dtype as `s`), where the standard normal draws `z` come from
# `rng = np.random.default_rng(seed)` as `rng.standard_normal(s.shape)`, one call per
# parameter, in list order.


# %%
def clip_and_sum(grad_samples, clip_norm):
    """Clip every example's whole gradient to ``clip_norm`` and sum over examples.

    grad_samples : list of arrays (N, ...). Returns ``(sums, norms)``: list of arrays (...),
    same dtypes; norms float64 (N,) before clipping.
    """
    ### BEGIN SOLUTION
    n = len(grad_samples[0])
    flat = [g.reshape(n, -1).astype(np.float64) for g in grad_samples]
    norms = np.sqrt(sum((f**2).sum(axis=1) for f in flat))
    factors = 1.0 / np.maximum(1.0, norms / clip_norm)
    sums = [np.tensordot(factors, g, axes=(0, 0)).astype(g.dtype) for g in grad_samples]
    return sums, norms
    ### END SOLUTION


def noisy_average(sums, clip_norm, noise_multiplier, expected_batch_size, seed):
    """``(s + sigma * C * z) / L`` for each clipped sum ``s``; z drawn in list order."""
    ### BEGIN SOLUTION
    gen = np.random.default_rng(seed)
    out = []
    for s in sums:
        z = gen.standard_normal(s.shape)
        out.append(((s + noise_multiplier * clip_norm * z) / expected_batch_size).astype(s.dtype))
    return out
    ### END SOLUTION


# %% [markdown]
# ## Part 5 — Norms without per-example gradients (ghost clipping)
#
# `linear_per_example_grads` materialises `N × out × in` numbers only to take their norms. But
# the Frobenius norm of an outer product is the product of the two vector norms:
# $\|\text{dout}_n x_n^\top\|^2 = \|\text{dout}_n\|^2 \|x_n\|^2$.
#
# **Task 7 (1 point).** `linear_ghost_sq_norms(x, dout)` returns the float64 array `(N,)` of
# the squared norms of the per-example gradients of a linear layer, **weight and bias
# together**, computed from the two vectors only.


# %%
def linear_ghost_sq_norms(x, dout):
    """Squared norms (N,) of the per-example gradients of weight and bias, float64."""
    ### BEGIN SOLUTION
    x64, d64 = x.astype(np.float64), dout.astype(np.float64)
    d_sq = (d64**2).sum(axis=1)
    return d_sq * (x64**2).sum(axis=1) + d_sq
    ### END SOLUTION


# %% [markdown]
# ## Part 6 — The RDP accountant
#
# One DP-SGD step with sampling rate $q$ and noise multiplier $\sigma$ is $(\alpha,
# R(\alpha))$-RDP with, for integer $\alpha \ge 2$,
#
# $$R(\alpha) = \frac{1}{\alpha-1}\log\sum_{k=0}^{\alpha}\binom{\alpha}{k}(1-q)^{\alpha-k}q^k
#   \exp\!\Big(\frac{k^2-k}{2\sigma^2}\Big).$$
#
# The terms overflow for large $\alpha$: sum them in the log domain
# (`scipy.special.logsumexp`, `scipy.special.gammaln` for the binomial). RDP adds up over
# steps, and the improved conversion to $(\varepsilon, \delta)$ minimises over the orders
#
# $$\varepsilon = T R(\alpha) + \log\frac{\alpha-1}{\alpha}
#   - \frac{\log\delta + \log\alpha}{\alpha-1}.$$
#
# **Task 8 (2 points).** `rdp_subsampled_gaussian(q, sigma, alpha)` for an integer
# `alpha >= 2` and `0 < q < 1`, as a float.
# **Task 9 (2 points).** `dpsgd_epsilon(q, sigma, steps, delta, orders)`: the smallest
# $\varepsilon$ over the integer `orders` (a list) after `steps` steps, as a float.


# %%
def rdp_subsampled_gaussian(q, sigma, alpha):
    """RDP of one Poisson-subsampled Gaussian step at integer order ``alpha`` (float)."""
    ### BEGIN SOLUTION
    k = np.arange(alpha + 1)
    log_binom = special.gammaln(alpha + 1) - special.gammaln(k + 1) - special.gammaln(alpha - k + 1)
    terms = log_binom + (alpha - k) * np.log1p(-q) + k * np.log(q) + (k * k - k) / (2 * sigma**2)
    return float(special.logsumexp(terms) / (alpha - 1))
    ### END SOLUTION


def dpsgd_epsilon(q, sigma, steps, delta, orders):
    """Epsilon of ``steps`` DP-SGD steps at ``delta``, minimised over ``orders`` (float)."""
    ### BEGIN SOLUTION
    best = math.inf
    for a in orders:
        r = steps * rdp_subsampled_gaussian(q, sigma, a)
        eps = r + math.log((a - 1) / a) - (math.log(delta) + math.log(a)) / (a - 1)
        best = min(best, eps)
    return float(max(best, 0.0))
    ### END SOLUTION


# %%
### grader: skip
# Self-check: with q close to 1 the sampled Gaussian is the plain Gaussian, R = alpha/(2 s^2);
# and 60 epochs of MNIST (q = 0.01, sigma = 1.1) cost a few units of epsilon.
print(rdp_subsampled_gaussian(1 - 1e-12, 2.0, 8), 8 / (2 * 2.0**2))
print(dpsgd_epsilon(0.01, 1.1, 6000, 1e-5, list(range(2, 64))))
