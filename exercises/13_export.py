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
# # Exercise 13 — Deployment: layouts, padding, rounding, checksums and differences
#
# Exporting a model is a change of container that must carry the arithmetic along. In this
# exercise you write the small pieces on which chapter 13's exporters stand:
#
# 1. the **weight layouts** of TFLite (NHWC) from tinyodl's (NCHW);
# 2. TFLite's **SAME padding**, which is asymmetric for stride 2 on even inputs;
# 3. the **requantization** of a fully connected layer as TFLite's reference kernel does it
#    (float, ties away from zero) and as ONNX defines it (ties to even);
# 4. a **manifest entry** with a checksum, and its verification;
# 5. **model differences** for a federated round: exact, int8-compressed and top-k.
#
# **How you are graded.** The autograder looks up your functions *by name*; keep the names
# and signatures. You may add cells and helper functions. Each task is graded in a fresh,
# sandboxed Python process with a time limit; the grader calls your functions on its own
# inputs and compares the results in its own process. Each task has several checks worth part
# of its points. Cells starting with `### grader: skip` are not run by the grader. Your code
# can import the standard library, numpy and scipy, but not `tinyodl`.
#
# The checks enforce what the task text and the docstrings say (shapes, dtypes, return
# types). Conventions: tinyodl conv weights `(F, C, KH, KW)`, depthwise weights
# `(C, 1, KH, KW)`.

# %%
# tinyodl-exercise: 13_export
import hashlib

import numpy as np

rng = np.random.default_rng(0)

# %% [markdown]
# ## Part 1 — Layouts
#
# TFLite stores a convolution's weight as `(F, KH, KW, C)` ("OHWI") and a depthwise
# convolution's as `(1, KH, KW, C)`.
#
# **Task 1 (2 points).** `to_tflite_layout(w, depthwise)` returns the weight in TFLite's
# layout, C-contiguous, same dtype: for `depthwise=False` `w` is `(F, C, KH, KW)`, for
# `depthwise=True` it is `(C, 1, KH, KW)`.


# %%
def to_tflite_layout(w, depthwise):
    """tinyodl (NCHW) weight -> TFLite weight (OHWI, or 1HWC for depthwise)."""
    ### BEGIN SOLUTION
    axes = (1, 2, 3, 0) if depthwise else (0, 2, 3, 1)
    return np.ascontiguousarray(np.transpose(w, axes))
    ### END SOLUTION


# %% [markdown]
# ## Part 2 — SAME padding
#
# TFLite's SAME padding makes the output `ceil(size / stride)` long and pads
# `total = max((out - 1) * stride + kernel - size, 0)` positions, `total // 2` before and the
# rest after.
#
# **Task 2 (2 points).** `same_padding(size, kernel, stride)` returns the tuple of Python
# ints `(out, before, after)`.


# %%
def same_padding(size, kernel, stride):
    """TFLite SAME padding along one axis: ``(output size, pad before, pad after)``."""
    ### BEGIN SOLUTION
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return int(out), int(total // 2), int(total - total // 2)
    ### END SOLUTION


# %% [markdown]
# ## Part 3 — Requantization: TFLite's reference FC versus ONNX
#
# A fully connected layer's int32 accumulator `acc` (bias included) becomes int8 as
# `y = clamp(round(acc * M) + zero_point, -128, 127)` with `M = s_in * s_w[c] / s_out` per
# output column `c`. TFLite's reference kernel computes `acc * M` in float64 and rounds
# ties **away from zero** (`round(2.5) = 3`, `round(-2.5) = -3`); ONNX's `QLinearMatMul`
# rounds ties **to even** (`round(2.5) = 2`).
#
# **Task 3 (3 points).** `requantize(acc, multiplier, zero_point, mode)`: `acc` int32
# `(N, F)`, `multiplier` float64 `(F,)`, `mode` `"tflite"` or `"onnx"`; returns int8
# `(N, F)`. Any other mode raises `ValueError`.


# %%
def requantize(acc, multiplier, zero_point, mode):
    """Int32 accumulators -> int8, rounding as TFLite's reference FC or as ONNX."""
    ### BEGIN SOLUTION
    v = acc.astype(np.float64) * np.asarray(multiplier, dtype=np.float64)[None, :]
    if mode == "tflite":
        r = np.sign(v) * np.floor(np.abs(v) + 0.5)
    elif mode == "onnx":
        r = np.rint(v)
    else:
        raise ValueError(f"unknown mode {mode!r}")
    return np.clip(r + zero_point, -128, 127).astype(np.int8)
    ### END SOLUTION


# %% [markdown]
# ## Part 4 — A manifest entry with a checksum
#
# A training checkpoint's manifest describes every array so that the loader can refuse a
# truncated, tampered or mismatched file: its dtype (`a.dtype.str`, e.g. `"<f4"`), its shape
# (a list of ints) and the SHA-256 (hex digest, `hashlib.sha256`) of its bytes in C order.
#
# **Task 4 (2 points).** `manifest_entry(a)` returns the dict `{"dtype", "shape", "sha256"}`;
# `matches(a, entry)` returns a Python `bool`: True only when the array has that dtype,
# shape and checksum.


# %%
def manifest_entry(a):
    """``{"dtype": str, "shape": list, "sha256": hex str}`` of an array."""
    ### BEGIN SOLUTION
    data = np.ascontiguousarray(a).tobytes()
    return {
        "dtype": a.dtype.str,
        "shape": list(a.shape),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    ### END SOLUTION


def matches(a, entry):
    """Whether array ``a`` is the one ``entry`` describes."""
    ### BEGIN SOLUTION
    return bool(manifest_entry(a) == entry)
    ### END SOLUTION


# %% [markdown]
# ## Part 5 — Model differences
#
# After fine-tuning, a device sends `delta = trained - base` for every array (a dict name ->
# float32 array). Applied to the base, an uncompressed difference must give back the trained
# model **exactly**. Careful: in float32, `base + (trained - base)` is not always `trained`
# (try `base = 1e-8`, `trained = 1.0`); the difference of two float32 numbers computed in
# float64 is exact for the values of this exercise.
#
# **Task 5 (2 points).** `compute_diff(base, trained)` returns a dict of float64 arrays;
# `apply_diff(base, delta)` returns a dict of float32 arrays equal to `trained`. Neither
# modifies its inputs.
#
# **Task 6 (3 points).** Compression:
#
# * `compress_int8(d)` returns `(q, scale)`: `scale = max|d| / 127` as a Python float (1.0
#   when `d` is all zero) and `q = round(d / scale)` as int8, ties away from zero;
# * `compress_topk(d, k)` returns `(index, value)`: the flat indices (int64, **sorted
#   ascending**) of the `k` entries of largest `|d|` and their values (float32). Ties in
#   `|d|` are broken towards the smaller index.


# %%
def compute_diff(base, trained):
    """``{name: trained[name] - base[name]}`` in float64."""
    ### BEGIN SOLUTION
    return {k: trained[k].astype(np.float64) - base[k].astype(np.float64) for k in base}
    ### END SOLUTION


def apply_diff(base, delta):
    """``{name: base[name] + delta[name]}`` as float32, exact for an uncompressed delta."""
    ### BEGIN SOLUTION
    return {k: (base[k].astype(np.float64) + delta[k]).astype(np.float32) for k in base}
    ### END SOLUTION


def compress_int8(d):
    """One scale per tensor: ``(q int8, scale float)``."""
    ### BEGIN SOLUTION
    peak = float(np.max(np.abs(d))) if d.size else 0.0
    scale = peak / 127 if peak > 0 else 1.0
    v = d / scale
    q = np.sign(v) * np.floor(np.abs(v) + 0.5)
    return np.clip(q, -127, 127).astype(np.int8), scale
    ### END SOLUTION


def compress_topk(d, k):
    """The ``k`` largest ``|d|``: ``(sorted flat indices int64, values float32)``."""
    ### BEGIN SOLUTION
    flat = d.ravel()
    order = np.argsort(-np.abs(flat), kind="stable")[:k]
    index = np.sort(order).astype(np.int64)
    return index, flat[index].astype(np.float32)
    ### END SOLUTION


# %%
### grader: skip
w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
print(to_tflite_layout(w, False).shape, same_padding(28, 3, 2))
acc = np.array([[5, -5, 15]], dtype=np.int32)
print(
    requantize(acc, np.array([0.5, 0.5, 0.1]), 0, "tflite"),
    requantize(acc, np.array([0.5, 0.5, 0.1]), 0, "onnx"),
)
base = {"w": np.array([1e-8, 2.0], np.float32)}
trained = {"w": np.array([1.0, 2.5], np.float32)}
print(apply_diff(base, compute_diff(base, trained))["w"] == trained["w"])
