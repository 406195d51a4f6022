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
# # Exercise 08 — Transfer learning on the device (TinyTL)
#
# Which parameters a device updates decides the memory of a training step. For a layer
# $a = xW + b$, $\partial L/\partial W = x^\top \partial L/\partial a$ needs the layer's input
# $x$, kept from forward to backward, while $\partial L/\partial b = \partial L/\partial a$ does
# not (TinyTL, Cai et al. 2020). In this exercise you write:
#
# 1. the **bias-only backward** of a linear layer (no input kept);
# 2. an **accounting of what each layer keeps** for backward, in bytes;
# 3. the choice of **what trains** for each transfer-learning method;
# 4. the pieces of TinyTL's **lite residual** branch: a **group convolution**, the bilinear
#    **interpolation matrix**, **bilinear upsampling** and its **backward**.
#
# **How you are graded.** The autograder looks up your functions *by name*; keep the names
# and signatures. You may add cells and helper functions. Each task is graded in a fresh,
# sandboxed Python process with a time limit; the grader calls your functions on its own
# inputs and compares the results in its own process. Each task has several checks worth part
# of its points. Cells starting with `### grader: skip` are not run by the grader. Your code
# can import the standard library, numpy and scipy, but not `tinyodl`. One task has an extra
# hidden test whose result you see after grades are published.
#
# The checks enforce what the task text and the docstrings say (shapes, dtypes, return
# types). Conventions: images `(N, C, H, W)`, conv weights `(F, C / groups, KH, KW)`, linear
# weights `(out_features, in_features)`.

# %%
# tinyodl-exercise: 08_transfer
import numpy as np

rng = np.random.default_rng(0)

# %% [markdown]
# ## Part 1 — The bias-only update
#
# **Task 1 (1 point).** `linear_backward_bias_only(dout, w)` returns `(dx, db)` for
# $y = x W^\top + b$: `dx` of shape `(N, in_features)`, `db` of shape `(out_features,)`. It
# gets no `x`: that is the point.


# %%
def linear_backward_bias_only(dout, w):
    """Gradients of a linear layer whose weight is frozen: ``(dL/dx, dL/db)``."""
    ### BEGIN SOLUTION
    return dout @ w, dout.sum(axis=0)
    ### END SOLUTION


# %% [markdown]
# ## Part 2 — What a layer keeps for backward
#
# A network is described as a list of layers, each a dict with `"type"` and `"shape"` (the
# shape of one example's *input* to the layer, without the batch axis) and flags:
#
# | type | keeps for backward (bytes, for a batch of `n` float32 examples) |
# |---|---|
# | `"conv"`, `"linear"` | the input, `4 * n * prod(shape)`, only if `"weight_trainable"` |
# | `"relu"` | a boolean mask, `1 * n * prod(shape)` |
# | `"bn"` (eval mode) | `4 * C` (`C = shape[0]`), + `4 * n * prod(shape)` if `"gamma_trainable"` |
# | `"pool"` | nothing |
#
# (A batchnorm in evaluation mode keeps `1 / sqrt(var + eps)`, one float per channel, and
# the normalised input only when gamma trains, for `dL/dgamma`.)
#
# **Task 2 (2 points).** `kept_bytes(layers, n)` returns a list of ints, one per layer.


# %%
def kept_bytes(layers, n):
    """Bytes each layer keeps between forward and backward, for a batch of ``n``."""
    ### BEGIN SOLUTION
    out = []
    for layer in layers:
        size = n * int(np.prod(layer["shape"]))
        kind = layer["type"]
        if kind in ("conv", "linear"):
            out.append(4 * size if layer["weight_trainable"] else 0)
        elif kind == "relu":
            out.append(size)
        elif kind == "bn":
            out.append(4 * layer["shape"][0] + (4 * size if layer["gamma_trainable"] else 0))
        else:
            out.append(0)
    return out
    ### END SOLUTION


# %%
### grader: skip
net = [
    {"type": "conv", "shape": (1, 28, 28), "weight_trainable": False},
    {"type": "bn", "shape": (16, 14, 14), "gamma_trainable": False},
    {"type": "relu", "shape": (16, 14, 14)},
    {"type": "linear", "shape": (160,), "weight_trainable": True},
]
print(kept_bytes(net, 8))

# %% [markdown]
# ## Part 3 — What trains
#
# Parameters are named like tinyodl's: `"features.3.expand.weight"`, `"features.1.bias"`,
# `"classifier.0.weight"`. The body (`features`) is split into *stages*, given as a list of
# name prefixes in forward order, e.g. `["features.0", "features.3", ..., "features.10"]`
# (a parameter belongs to a stage when its name starts with the prefix followed by a dot).
#
# * `"feature_extraction"`: the head only (names starting with `"classifier."`);
# * `"finetune_last_k"`: the parameters of the last `k` stages, and the head;
# * `"finetune_full"`: everything;
# * `"tinytl_bias"`: every parameter whose name ends with `".bias"`, and the head.
#
# **Task 3 (2 points).** `trainable_names(names, method, stages, k)` returns the names that
# train, as a list in the order of `names`.


# %%
def trainable_names(names, method, stages, k=2):
    """The parameter names that ``method`` updates, in the order of ``names``."""

    ### BEGIN SOLUTION
    def head(name):
        return name.startswith("classifier.")

    if method == "feature_extraction":
        keep = head
    elif method == "finetune_full":

        def keep(name):
            return True
    elif method == "finetune_last_k":
        last = [s + "." for s in stages[len(stages) - k :]]

        def keep(name):
            return head(name) or any(name.startswith(p) for p in last)
    elif method == "tinytl_bias":

        def keep(name):
            return head(name) or name.endswith(".bias")
    else:
        raise ValueError(f"unknown method {method!r}")
    return [name for name in names if keep(name)]
    ### END SOLUTION


# %% [markdown]
# ## Part 4 — The lite residual branch
#
# TinyTL's branch beside each block: 2x2 average pool, a **5x5 group convolution with 2
# groups**, a 1x1 convolution, and **bilinear upsampling** back to the block's output size.
#
# A group convolution splits the `C` input channels into `groups` consecutive groups and the
# `F` filters likewise; filter group `g` sees only input group `g` (so `w` has shape
# `(F, C / groups, KH, KW)`).
#
# **Task 4 (2 points).** `group_conv2d(x, w, groups, padding)`: stride 1, zero padding,
# returns float64 `(N, F, H + 2p - KH + 1, W + 2p - KW + 1)`.


# %%
def group_conv2d(x, w, groups, padding=0):
    """Grouped 2-D convolution (cross-correlation), stride 1."""
    ### BEGIN SOLUTION
    n, c, h, width = x.shape
    f, cg, kh, kw = w.shape
    p = padding
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (p, p), (p, p)))
    oh, ow = h + 2 * p - kh + 1, width + 2 * p - kw + 1
    out = np.zeros((n, f, oh, ow))
    fg = f // groups
    for g in range(groups):
        xs = xp[:, g * cg : (g + 1) * cg]
        ws = w[g * fg : (g + 1) * fg]
        for i in range(kh):
            for j in range(kw):
                out[:, g * fg : (g + 1) * fg] += np.einsum(
                    "nchw,fc->nfhw", xs[:, :, i : i + oh, j : j + ow], ws[:, :, i, j]
                )
    return out
    ### END SOLUTION


# %% [markdown]
# Bilinear interpolation is separable: along one axis, output pixel `o` reads the input at
# `src = max((o + 0.5) * in_size / out_size - 0.5, 0)`: with `i0 = floor(src)`,
# `i1 = min(i0 + 1, in_size - 1)` and `l = src - i0`, it is `(1 - l) x[i0] + l x[i1]`
# (PyTorch's `align_corners=False`). As a matrix `A` of shape `(out_size, in_size)`, the whole
# 2-D upsampling is `y = A_h @ x @ A_w.T` (matmul broadcasts over N and C), and its backward
# `dx = A_h.T @ dy @ A_w`.
#
# **Task 5 (2 points + 1 hidden).** `interpolation_matrix(in_size, out_size)` (float64),
# `bilinear_upsample(x, size)` with `size = (OH, OW)`, returning float64 `(N, C, OH, OW)`.
#
# **Task 6 (1 point).** `bilinear_upsample_backward(dout, in_hw)` with `in_hw = (H, W)`:
# the gradient w.r.t. the input, float64 `(N, C, H, W)`.


# %%
def interpolation_matrix(in_size, out_size):
    """The (out_size, in_size) matrix of 1-D linear interpolation, half-pixel centres."""
    ### BEGIN SOLUTION
    a = np.zeros((out_size, in_size))
    for o in range(out_size):
        src = max((o + 0.5) * in_size / out_size - 0.5, 0.0)
        i0 = min(int(np.floor(src)), in_size - 1)
        i1 = min(i0 + 1, in_size - 1)
        frac = src - i0
        a[o, i0] += 1.0 - frac
        a[o, i1] += frac
    return a
    ### END SOLUTION


def bilinear_upsample(x, size):
    """Resize (N, C, H, W) to (N, C, size[0], size[1])."""
    ### BEGIN SOLUTION
    a_h = interpolation_matrix(x.shape[2], size[0])
    a_w = interpolation_matrix(x.shape[3], size[1])
    return a_h @ x.astype(np.float64) @ a_w.T
    ### END SOLUTION


def bilinear_upsample_backward(dout, in_hw):
    """Gradient of :func:`bilinear_upsample` w.r.t. its input of spatial size ``in_hw``."""
    ### BEGIN SOLUTION
    a_h = interpolation_matrix(in_hw[0], dout.shape[2])
    a_w = interpolation_matrix(in_hw[1], dout.shape[3])
    return a_h.T @ dout.astype(np.float64) @ a_w
    ### END SOLUTION


# %%
### grader: skip
x = rng.standard_normal((1, 1, 2, 2))
print(bilinear_upsample(x, (4, 4)).round(3))
