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
# # Exercise 02 — Pruning: masks, schedules, sparse storage and channels
#
# Chapter 02 prunes networks two ways: zeroing individual weights of small magnitude
# (unstructured), and removing whole channels so that layers shrink (structured). In this
# exercise you write the pieces:
#
# 1. a **magnitude mask** for one layer;
# 2. **global** masks with one threshold for all layers;
# 3. the **gradual sparsity schedule** of Zhu & Gupta;
# 4. an **SGD step that keeps the masks** (momentum included);
# 5. **CSR storage** of a sparse matrix and the product with a vector;
# 6. **channel pruning** of a pair of convolutions, ranked by the L1 norm of the filters.
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
# arrays updated **in place** where it says so, inputs left as they were where it says so.

# %%
# tinyodl-exercise: 02_pruning
import numpy as np

rng = np.random.default_rng(0)

# %% [markdown]
# ## Part 1 — Magnitude masks
#
# Pruning a weight array `w` to sparsity `s` keeps a boolean **mask** of the same shape,
# `True` where the weight is kept: the `round(s * n)` weights of smallest `|w|` are pruned
# (`n = w.size`), all others kept. (The test arrays have no ties in `|w|`.)
#
# **Task 1 (2 points).** `magnitude_mask(w, sparsity)` returns a boolean array of the shape
# of `w` with exactly `round(sparsity * w.size)` entries `False`, every pruned `|w|` at most
# every kept one; `w` is not modified. `sparsity` is in `[0, 1)`.


# %%
def magnitude_mask(w, sparsity):
    """Boolean mask of w's shape: False for the round(sparsity * n) smallest |w|."""
    ### BEGIN SOLUTION
    n_prune = int(round(sparsity * w.size))
    mask = np.ones(w.size, dtype=bool)
    mask[np.argsort(np.abs(w).ravel())[:n_prune]] = False
    return mask.reshape(w.shape)
    ### END SOLUTION


# %% [markdown]
# ## Part 2 — One threshold for all layers
#
# Layer-wise pruning removes the same fraction from every layer; **global** pruning ranks
# all weights of all layers together and removes the `round(s * N)` smallest (`N` = total
# number of weights), so big redundant layers lose more than small sensitive ones.
#
# **Task 2 (2 points).** `global_masks(weights, sparsity)` takes a dict *name -> array* and
# returns a dict with the same keys (in the same order) of boolean masks, pruning exactly
# `round(sparsity * N)` weights in total by one magnitude threshold.


# %%
def global_masks(weights, sparsity):
    """dict name -> array  ->  dict name -> boolean mask, one threshold for all."""
    ### BEGIN SOLUTION
    flat = np.concatenate([np.abs(w).ravel() for w in weights.values()])
    keep = magnitude_mask(flat, sparsity)
    masks, offset = {}, 0
    for name, w in weights.items():
        masks[name] = keep[offset : offset + w.size].reshape(w.shape)
        offset += w.size
    return masks
    ### END SOLUTION


# %%
### grader: skip
layers = {"big": rng.standard_normal((50, 40)), "small": rng.standard_normal((3, 40)) * 3}
for name, m in global_masks(layers, 0.8).items():
    print(name, "pruned fraction", 1 - m.mean())

# %% [markdown]
# ## Part 3 — Gradual pruning (Zhu & Gupta 2018)
#
# The sparsity rises from `s_i` to `s_f` between training steps `t_0` (`begin`) and
# `t_0 + n dt` (`end`), changing only every `dt` (`frequency`) steps:
#
# $$s_t = s_f + (s_i - s_f)\left(1 - \frac{t' - t_0}{\text{end} - t_0}\right)^3,
#   \qquad t' = t_0 + \left\lfloor \frac{t - t_0}{dt} \right\rfloor dt$$
#
# for `begin <= t < end`; it is `0` before `begin` and `s_f` from `end` on.
#
# **Task 3 (2 points).** `gradual_sparsity(step, final, begin, end, initial=0.0,
# frequency=1)` returns that float.


# %%
def gradual_sparsity(step, final, begin, end, initial=0.0, frequency=1):
    """Target sparsity at a training step (cubic schedule, held between pruning steps)."""
    ### BEGIN SOLUTION
    if step < begin:
        return 0.0
    if step >= end:
        return float(final)
    t = begin + ((step - begin) // frequency) * frequency
    progress = (t - begin) / (end - begin)
    return float(final + (initial - final) * (1 - progress) ** 3)
    ### END SOLUTION


# %% [markdown]
# ## Part 4 — Training with the masks held
#
# A pruned weight must stay zero while the network fine-tunes. SGD with momentum would
# revive it: its gradient is not zero, and momentum keeps pushing. So the step masks the
# gradient before the update (no momentum builds up for pruned weights) and the weights
# after it:
#
# $$g \leftarrow g \odot m,\qquad v \leftarrow \mu v + g,\qquad w \leftarrow w - \eta v,
#   \qquad w \leftarrow w \odot m$$
#
# **Task 4 (2 points).** `masked_sgd_step(w, grad, velocity, mask, lr, momentum)` updates
# `w` and `velocity` **in place** and returns nothing; it does not modify `grad`.


# %%
def masked_sgd_step(w, grad, velocity, mask, lr, momentum=0.9):
    """SGD with momentum that keeps w * mask == w; w and velocity are updated in place."""
    ### BEGIN SOLUTION
    g = grad * mask
    velocity *= momentum
    velocity += g
    w -= lr * velocity
    w *= mask
    ### END SOLUTION


# %% [markdown]
# ## Part 5 — Storing a sparse matrix: CSR
#
# Compressed sparse rows keep, for a matrix `W` of shape `(R, C)`, three arrays:
#
# * `values`: the non-zeros, row by row (left to right within a row);
# * `col_index`: the column of each value;
# * `row_ptr` (`R + 1` entries): row `r` holds `values[row_ptr[r]:row_ptr[r + 1]]`;
#   `row_ptr[0] = 0` and `row_ptr[R]` = the number of non-zeros.
#
# This is SciPy's `csr_matrix` layout (`data`, `indices`, `indptr`).
#
# **Task 5 (2 points).** `to_csr(W)` returns `(values, col_index, row_ptr)` (values in the
# dtype of `W`, the two index arrays of any integer dtype), and `csr_matvec(values,
# col_index, row_ptr, x)` returns `W @ x` (shape `(R,)`) computed from the three arrays.


# %%
def to_csr(W):
    """(R, C) array -> (values, col_index, row_ptr)."""
    ### BEGIN SOLUTION
    rows, cols = np.nonzero(W)
    row_ptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=W.shape[0]))])
    return W[rows, cols], cols, row_ptr
    ### END SOLUTION


def csr_matvec(values, col_index, row_ptr, x):
    """W @ x for W in CSR form; returns (R,)."""
    ### BEGIN SOLUTION
    out = np.zeros(len(row_ptr) - 1, dtype=np.result_type(values, x))
    for r in range(len(out)):
        lo, hi = row_ptr[r], row_ptr[r + 1]
        out[r] = values[lo:hi] @ x[col_index[lo:hi]]
    return out
    ### END SOLUTION


# %%
### grader: skip
W = rng.standard_normal((4, 6)) * (rng.random((4, 6)) < 0.3)
v, c, p = to_csr(W)
x = rng.standard_normal(6)
print(v, c, p, np.allclose(csr_matvec(v, c, p, x), W @ x))

# %% [markdown]
# ## Part 6 — Channel pruning
#
# Two convolutions in a row, `conv1` with weight `w1` of shape `(F, C, KH, KW)` and bias `b1`
# `(F,)`, then `conv2` with weight `w2` of shape `(G, F, KH2, KW2)`: output channel `f` of
# `conv1` is input channel `f` of `conv2`. Removing it removes filter `w1[f]`, bias `b1[f]`
# and the slice `w2[:, f]`; the layers become smaller dense layers.
#
# Channels are ranked by the **L1 norm of their filter**, `sum |w1[f]|` (Li et al. 2017).
#
# **Task 6 (2 points).** `l1_keep(w1, n_keep)` returns the indices of the `n_keep` filters
# of largest L1 norm, **sorted in increasing order** (so the channels keep their order).
# `prune_conv_pair(w1, b1, w2, keep)` returns `(w1', b1', w2')` with only the channels
# `keep` (a sorted index array), as new arrays; the inputs are not modified.


# %%
def l1_keep(w1, n_keep):
    """Sorted indices of the n_keep filters of w1 (F, C, KH, KW) with the largest L1 norm."""
    ### BEGIN SOLUTION
    l1 = np.abs(w1).reshape(len(w1), -1).sum(axis=1)
    return np.sort(np.argsort(-l1)[:n_keep])
    ### END SOLUTION


def prune_conv_pair(w1, b1, w2, keep):
    """Keep the channels `keep` of conv1 (w1, b1) and of conv2's input (w2)."""
    ### BEGIN SOLUTION
    return w1[keep].copy(), b1[keep].copy(), w2[:, keep].copy()
    ### END SOLUTION


# %%
### grader: skip
w1, b1, w2 = (
    rng.standard_normal((8, 3, 3, 3)),
    rng.standard_normal(8),
    rng.standard_normal((4, 8, 3, 3)),
)
keep = l1_keep(w1, 5)
print(keep, [a.shape for a in prune_conv_pair(w1, b1, w2, keep)])
