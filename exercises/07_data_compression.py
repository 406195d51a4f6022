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
# # Exercise 07 — Data compression: more training signal per byte
#
# A device keeps its training data in a few kilobytes. Chapter 07 compares three ways to make
# the most of them; in this exercise you write their core:
#
# 1. **low-bit quantization** of pixels and its inverse;
# 2. **4-bit packing**, two pixels per byte;
# 3. **herding**, which keeps examples whose mean tracks the mean of all;
# 4. **greedy k-center**, which keeps examples that cover the feature space;
# 5. **EL2N scores** and a class-balanced choice of the easiest examples;
# 6. **orthogonal matching pursuit**, the sparse code of one example over a dictionary.
#
# **How you are graded.** The autograder looks up your functions *by name*; keep the names
# and signatures. You may add cells and helper functions. Each task is graded in a fresh,
# sandboxed Python process with a time limit; the grader calls your code on its own inputs
# and compares the results in its own process. Each task has several checks worth part of its
# points. Cells starting with `### grader: skip` are not run by the grader. While grading,
# your code can import the standard library, numpy and scipy, but not `tinyodl` nor plotting
# libraries.
#
# The checks enforce exactly what the task text and the docstrings say: shapes and dtypes,
# and inputs left as they were.

# %%
# tinyodl-exercise: 07_data_compression
import numpy as np

rng = np.random.default_rng(0)

# %% [markdown]
# ## Part 1 — Fewer bits per pixel
#
# A pixel value `x` in `[0, 1]` stored with `b` bits keeps one of `L = 2^b` levels:
# `q = round(x (L - 1))` (values outside `[0, 1]` are clipped first), read back as
# `q / (L - 1)`. The error is at most half a level, `1 / (2 (L - 1))`.
#
# **Task 1 (2 points).** `quantize(x, bits)` returns the levels as a `uint8` array of the
# shape of `x`; `dequantize(q, bits)` returns `float32` values in `[0, 1]`.


# %%
def quantize(x, bits):
    """Levels round(x * (2**bits - 1)) of x (clipped to [0, 1]), as uint8."""
    ### BEGIN SOLUTION
    top = 2**bits - 1
    return np.rint(np.clip(x, 0.0, 1.0) * top).astype(np.uint8)
    ### END SOLUTION


def dequantize(q, bits):
    """float32 values q / (2**bits - 1)."""
    ### BEGIN SOLUTION
    return (q.astype(np.float32) / np.float32(2**bits - 1)).astype(np.float32)
    ### END SOLUTION


# %% [markdown]
# ## Part 2 — Two pixels per byte
#
# 4-bit levels (0..15) are packed two per byte, the **first value in the high nibble** (the
# top 4 bits): `[0xA, 0x3, 0xF]` becomes the bytes `[0xA3, 0xF0]` (an odd count is padded with
# a zero). `n` values take `ceil(n / 2)` bytes.
#
# **Task 2 (2 points).** `pack_4bit(q)` takes a flat `uint8` array of values 0..15 and
# returns the packed `uint8` array; `unpack_4bit(packed, n)` returns the first `n` values
# (`uint8`).


# %%
def pack_4bit(q):
    """Flat uint8 values 0..15 -> uint8 bytes, first value in the high nibble."""
    ### BEGIN SOLUTION
    padded = np.zeros(2 * ((len(q) + 1) // 2), dtype=np.uint8)
    padded[: len(q)] = q
    return ((padded[0::2] << 4) | padded[1::2]).astype(np.uint8)
    ### END SOLUTION


def unpack_4bit(packed, n):
    """The first n 4-bit values of packed bytes, as uint8."""
    ### BEGIN SOLUTION
    out = np.empty(2 * len(packed), dtype=np.uint8)
    out[0::2] = packed >> 4
    out[1::2] = packed & 0x0F
    return out[:n]
    ### END SOLUTION


# %%
### grader: skip
q = quantize(rng.random(7), 4)
print(q, [hex(v) for v in pack_4bit(q)], unpack_4bit(pack_4bit(q), 7))

# %% [markdown]
# ## Part 3 — Herding
#
# Given features `F` (N, D) with mean `mu`, herding picks examples one at a time: the `k`-th
# pick is the example (not picked before) that makes the mean of the picks closest to `mu`:
#
# $$i_k = \arg\min_{i \notin S} \left\| \mu - \frac{s_{k-1} + f_i}{k} \right\|,
#   \qquad s_k = s_{k-1} + f_{i_k}$$
#
# (`s_0 = 0`). Ties go to the smallest index (what `np.argmin` does).
#
# **Task 3 (2 points).** `herding(F, n)` returns the `n` indices **in the order picked**
# (int array), and does not modify `F`.


# %%
def herding(F, n):
    """Indices of n examples chosen by herding, in pick order."""
    ### BEGIN SOLUTION
    mu = F.mean(axis=0)
    total = np.zeros(F.shape[1])
    picked = []
    for k in range(1, n + 1):
        gap = np.linalg.norm(mu - (total + F) / k, axis=1)
        gap[picked] = np.inf
        i = int(np.argmin(gap))
        picked.append(i)
        total += F[i]
    return np.array(picked)
    ### END SOLUTION


# %% [markdown]
# ## Part 4 — Greedy k-center
#
# Greedy k-center starts from a given example `first`, then repeatedly adds the example
# farthest (Euclidean distance) from all examples chosen so far:
# `i_k = argmax_i min_{j in S} ||f_i - f_j||`, ties to the smallest index. Keep, for every
# example, its distance to the nearest chosen one, and update it after each pick (do not
# recompute all distances every time).
#
# **Task 4 (2 points).** `k_center(F, n, first)` returns the `n` indices in pick order,
# starting with `first`.


# %%
def k_center(F, n, first):
    """Indices of n examples chosen by greedy k-center from `first`, in pick order."""
    ### BEGIN SOLUTION
    picked = [first]
    nearest = np.linalg.norm(F - F[first], axis=1)
    for _ in range(n - 1):
        i = int(np.argmax(nearest))
        picked.append(i)
        nearest = np.minimum(nearest, np.linalg.norm(F - F[i], axis=1))
    return np.array(picked)
    ### END SOLUTION


# %% [markdown]
# ## Part 5 — Loss-based selection
#
# The EL2N score of an example is `|| p - onehot(y) ||_2`, where `p` (K,) is a model's
# predicted probability vector: small for examples the model already gets right with
# confidence ("easy"), large for ambiguous or mislabelled ones ("hard").
#
# **Task 5 (2 points).** `el2n(P, y)` returns the scores (N,) of probabilities `P` (N, K) and
# labels `y` (N,), without modifying `P`. `easiest_per_class(scores, y, m)` returns, for each
# class in increasing order, the indices of its `m` examples of smallest score (in increasing
# order of score; ties to the smaller index), concatenated: an int array of `m * (number of
# classes)` indices (every class has at least `m` examples).


# %%
def el2n(P, y):
    """EL2N scores ||P[i] - onehot(y[i])|| of every example."""
    ### BEGIN SOLUTION
    diff = P.copy()
    diff[np.arange(len(y)), y] -= 1.0
    return np.linalg.norm(diff, axis=1)
    ### END SOLUTION


def easiest_per_class(scores, y, m):
    """For each class (increasing), its m lowest-score indices, easiest first."""
    ### BEGIN SOLUTION
    out = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        out.append(idx[np.argsort(scores[idx], kind="stable")[:m]])
    return np.concatenate(out)
    ### END SOLUTION


# %% [markdown]
# ## Part 6 — Orthogonal matching pursuit
#
# A dictionary `D` (A, P) holds A atoms as rows of unit norm. OMP finds a code `c` (A,) with
# `k` non-zeros such that `c @ D` approximates `x` (P,):
#
# 1. start with the residual `r = x` and an empty support `S`;
# 2. `k` times: add to `S` the atom most correlated with the residual, `argmax_j |D[j] @ r|`
#    (over atoms not in `S`); then refit **all** coefficients on `S` by least squares,
#    `c_S = argmin ||x - c_S @ D[S]||` (`np.linalg.lstsq`), and set `r = x - c_S @ D[S]`.
#
# **Task 6 (3 points).** `omp(x, D, k)` returns the code `c`, a float64 array (A,) with at
# most `k` non-zeros.


# %%
def omp(x, D, k):
    """Sparse code (A,) of x (P,) over the dictionary D (A, P), with k atoms."""
    ### BEGIN SOLUTION
    support = []
    r = x.astype(np.float64)
    coef = np.zeros(0)
    for _ in range(k):
        corr = np.abs(D @ r)
        corr[support] = -1.0
        support.append(int(np.argmax(corr)))
        coef = np.linalg.lstsq(D[support].T, x, rcond=None)[0]
        r = x - coef @ D[support]
    c = np.zeros(D.shape[0])
    c[support] = coef
    return c
    ### END SOLUTION


# %%
### grader: skip
D = rng.standard_normal((20, 50))
D /= np.linalg.norm(D, axis=1, keepdims=True)
truth = np.zeros(20)
truth[[2, 7, 11]] = [1.5, -2.0, 0.7]
print("recovered:", np.round(omp(truth @ D, D, 3), 6)[[2, 7, 11]])
