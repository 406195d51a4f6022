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
# # Exercise 06 — Trading compute for memory: checkpointing
#
# Backpropagation keeps the input of every layer until the backward pass reaches it, so the
# memory of training grows with depth. **Checkpointing** (Chen et al. 2016) cuts the chain of
# `n` layers into segments, keeps only the input of each segment (its *boundary*) during the
# forward pass, and **recomputes** the inside of a segment when the backward pass gets
# there. In this exercise you write:
#
# 1. the default segmentation into about `sqrt(n)` equal segments;
# 2. the memory and compute a segmentation costs, in a simple model;
# 3. a checkpointed backward pass whose gradients are **bit-identical** to plain
#    backpropagation;
# 4. the same with **dropout**, where recomputation must replay the random masks;
# 5. a **planner** that picks the segmentation recomputing least within a memory budget, by
#    dynamic programming (Gruslys et al. 2016).
#
# **How you are graded.** The autograder looks up your functions *by name*; keep the names
# and signatures. You may add cells and helper functions. Each task is graded in a fresh,
# sandboxed Python process with a time limit; the grader calls your functions on its own
# inputs and compares the results in its own process, with partial credit per check. Cells
# starting with `### grader: skip` are not run by the grader. While grading, your code can
# import the standard library, numpy and scipy, but not `tinyodl` (chapter 06's module
# solves this exercise) nor plotting libraries.
#
# Conventions: a *segmentation* of a chain of `n` layers is given by its **boundaries**, the
# increasing layer indices after 0 at which a new segment starts: `(4, 8, 12)` cuts 16 layers
# into `[0, 4), [4, 8), [8, 12), [12, 16)`; `()` is one segment (plain backpropagation).

# %%
# tinyodl-exercise: 06_checkpointing
import numpy as np

rng = np.random.default_rng(0)

# %% [markdown]
# ## Part 1 — Equal segments
#
# With `k` segments of `n` equal layers, about `n/k + k` layer inputs are alive at once,
# which is smallest at `k = sqrt(n)`.
#
# **Task 1 (1 point).** `equal_segments(n, k=None)` returns the boundaries of `k` segments
# whose lengths differ by at most one, the longer segments first (`equal_segments(10, 3) ==
# (4, 7)`: lengths 4, 3, 3). The default `k` is `round(sqrt(n))` (Python's `round`). Return a
# tuple of Python ints; raise `ValueError` if `k` is not between 1 and `n`.


# %%
def equal_segments(n, k=None):
    """Boundaries of ``k`` near-equal segments of ``n`` layers (a tuple of ints)."""
    ### BEGIN SOLUTION
    if k is None:
        k = max(1, round(np.sqrt(n)))
    if not 1 <= k <= n:
        raise ValueError(f"equal_segments: k must be in [1, {n}], got {k}")
    lengths = [n // k + (1 if j < n % k else 0) for j in range(k)]
    return tuple(int(b) for b in np.cumsum(lengths)[:-1])
    ### END SOLUTION


# %%
### grader: skip
print(equal_segments(16), equal_segments(10, 3), equal_segments(5, 1))

# %% [markdown]
# ## Part 2 — What a segmentation costs
#
# A simple model. Layer `i` keeps its input, `sizes[i]` bytes, for its backward pass (the
# batch, `sizes[0]`, counts too). With segment starts `s_0 = 0 < s_1 < ... < s_{k-1}`:
#
# * a segment that is **not the last** keeps only its boundary, `sizes[s_j]`, from the
#   forward pass until its own backward pass is over; when the backward pass reaches it, it
#   recomputes its layers from the boundary, which brings back the inputs of all its layers;
# * the **last** segment keeps its layers' inputs from the forward pass (recomputing it right
#   away would gain nothing).
#
# So while segment `j` is worked on, memory holds the boundaries of the segments before it
# and the inputs of its own layers:
#
# $$\text{peak} = \max_j \Big( \sum_{i < j} \text{sizes}[s_i] \;+\;
#   \sum_{l = s_j}^{s_{j+1} - 1} \text{sizes}[l] \Big)$$
#
# Every layer before the last segment runs forward twice, so the extra compute is
# `sum(costs[:s_{k-1}])`: it depends only on where the last segment starts.
#
# **Task 2 (2 points).** `peak_memory(sizes, boundaries)` and
# `recompute_cost(costs, boundaries)`, both returning Python numbers (16 layers of size 1
# in 4 segments: peak 7, recompute 12).


# %%
def peak_memory(sizes, boundaries):
    """Peak bytes of the model above for a segmentation (an int)."""
    ### BEGIN SOLUTION
    starts = [0, *boundaries]
    ends = [*boundaries, len(sizes)]
    peak, kept = 0, 0
    for lo, hi in zip(starts, ends, strict=True):
        peak = max(peak, kept + sum(sizes[lo:hi]))
        kept += sizes[lo]
    return int(peak)
    ### END SOLUTION


def recompute_cost(costs, boundaries):
    """Forward cost of the layers that run twice: every layer before the last segment."""
    ### BEGIN SOLUTION
    last_start = boundaries[-1] if len(boundaries) else 0
    return float(sum(costs[:last_start]))
    ### END SOLUTION


# %%
### grader: skip
for k in (1, 2, 4, 8, 16):
    b = equal_segments(16, k)
    print(k, "segments: peak", peak_memory([1] * 16, b), "recompute", recompute_cost([1] * 16, b))

# %% [markdown]
# ## Part 3 — Recompute, exactly
#
# The network is a chain of `n` layers `h_{i+1} = relu(h_i W_i^T)` (no bias), `h_0 = x` of
# shape `(N, D_0)`, `W_i` of shape `(D_{i+1}, D_i)`. Given `dout = dL/dh_n`, the backward
# pass of layer `i` needs its input `h_i` (for `dW_i = g^T h_i` and the ReLU mask
# `h_i W_i^T > 0`): with `g = dout * (h_i W_i^T > 0)`,
#
# $$\frac{\partial L}{\partial W_i} = g^\top h_i, \qquad
#   \frac{\partial L}{\partial h_i} = g\, W_i .$$
#
# **Task 3 (3 points).**
#
# * `plain_backprop(x, weights, dout)` keeps every `h_i` and returns `(dx, grads)`: `dx =
#   dL/dx` and the list of `dL/dW_i`, in layer order.
# * `checkpointed_backprop(x, weights, dout, boundaries)` keeps only the boundaries during
#   the forward pass (and every input of the last segment), then goes through the segments
#   from the last: for a segment other than the last, run its layers forward again from its
#   boundary, then back-propagate through them. It returns `(dx, grads, forwards)`, where
#   `forwards` is the total number of layer forward computations (first pass and
#   recomputation).
#
# Recomputation repeats exactly the same operations on the same arrays, so the results must
# be **bit-identical** to `plain_backprop`: the grader compares them with `np.array_equal`.
# Use the helpers below for every layer, in both functions. Inputs are float64; do not modify
# them.


# %%
def layer_forward(h, w):
    """One layer: ``relu(h @ w.T)``."""
    return np.maximum(h @ w.T, 0.0)


def layer_backward(g_out, h, w):
    """Gradients of one layer from its input ``h``: returns ``(dh, dw)``."""
    g = g_out * (h @ w.T > 0)
    return g @ w, g.T @ h


# %%
def plain_backprop(x, weights, dout):
    """Backpropagation keeping every layer input. Returns ``(dx, grads)``."""
    ### BEGIN SOLUTION
    inputs, h = [], x
    for w in weights:
        inputs.append(h)
        h = layer_forward(h, w)
    grads = [None] * len(weights)
    g = dout
    for i in reversed(range(len(weights))):
        g, grads[i] = layer_backward(g, inputs[i], weights[i])
    return g, grads
    ### END SOLUTION


def checkpointed_backprop(x, weights, dout, boundaries):
    """Backpropagation keeping only segment boundaries; returns ``(dx, grads, forwards)``."""
    ### BEGIN SOLUTION
    n = len(weights)
    starts = [0, *boundaries]
    ends = [*boundaries, n]
    kept, last_inputs, forwards, h = {}, [], 0, x
    for lo, hi in zip(starts, ends, strict=True):
        last = hi == n
        if not last:
            kept[lo] = h
        for i in range(lo, hi):
            if last:
                last_inputs.append(h)
            h = layer_forward(h, weights[i])
            forwards += 1
    grads = [None] * n
    g = dout
    for lo, hi in reversed(list(zip(starts, ends, strict=True))):
        if hi == n:
            inputs = last_inputs
        else:
            inputs, h = [], kept.pop(lo)
            for i in range(lo, hi):
                inputs.append(h)
                h = layer_forward(h, weights[i])
                forwards += 1
        for i in reversed(range(lo, hi)):
            g, grads[i] = layer_backward(g, inputs[i - lo], weights[i])
    return g, grads, forwards
    ### END SOLUTION


# %%
### grader: skip
ws = [rng.standard_normal((8, 8)) / 3 for _ in range(9)]
x0, d0 = rng.standard_normal((5, 8)), rng.standard_normal((5, 8))
dx_p, g_p = plain_backprop(x0, ws, d0)
dx_c, g_c, count = checkpointed_backprop(x0, ws, d0, equal_segments(9))
print("identical:", np.array_equal(dx_p, dx_c) and all(map(np.array_equal, g_p, g_c)), count)

# %% [markdown]
# ## Part 4 — Dropout inside a recomputed segment
#
# Now every layer ends with inverted dropout: `h_{i+1} = relu(h_i W_i^T) * m_i / (1 - p)` with
# a keep-mask `m_i = rng.random(shape) >= p` (shape `(N, D_{i+1})`). One generator, `rng =
# np.random.default_rng(seed)`, draws the masks **in layer order during the first forward
# pass**. A naive recomputation would draw new masks and compute the gradient of a different
# network. Record `rng.bit_generator.state` at each boundary and put it back before
# recomputing that segment (assigning to `rng.bit_generator.state` restores it).
#
# **Task 4 (2 points).** `checkpointed_backprop_dropout(x, weights, dout, boundaries, p,
# seed)` returns `(dx, grads)`, the gradients of the network with the masks of the first
# forward pass. Draw each mask with one call `rng.random(shape) >= p`, exactly when layer `i`
# runs forward the first time (and again when it is recomputed, from the restored state).


# %%
def checkpointed_backprop_dropout(x, weights, dout, boundaries, p, seed):
    """Checkpointed backprop through ReLU + dropout layers; returns ``(dx, grads)``."""
    ### BEGIN SOLUTION
    generator = np.random.default_rng(seed)
    n = len(weights)
    starts = [0, *boundaries]
    ends = [*boundaries, n]

    def run(h, i):  # forward of layer i: returns the output and what backward needs
        mask = generator.random((h.shape[0], weights[i].shape[0])) >= p
        return layer_forward(h, weights[i]) * mask / (1 - p), (h, mask)

    kept, saved, h = {}, {}, x
    for lo, hi in zip(starts, ends, strict=True):
        if hi != n:
            kept[lo] = (h, generator.bit_generator.state)
        for i in range(lo, hi):
            h, cache = run(h, i)
            if hi == n:
                saved[i] = cache
    grads, g = [None] * n, dout
    for lo, hi in reversed(list(zip(starts, ends, strict=True))):
        if hi != n:
            h, state = kept.pop(lo)
            now = generator.bit_generator.state
            generator.bit_generator.state = state
            for i in range(lo, hi):
                h, saved[i] = run(h, i)
            generator.bit_generator.state = now
        for i in reversed(range(lo, hi)):
            h_in, mask = saved.pop(i)
            g, grads[i] = layer_backward(g * mask / (1 - p), h_in, weights[i])
    return g, grads
    ### END SOLUTION


# %% [markdown]
# ## Part 5 — A planner
#
# Equal segments suit equal layers. For real chains — big early layers, small late ones —
# we want the segmentation that **recomputes least while its peak (Part 2) stays within a
# budget**. Since the recomputation depends only on where the last segment starts, we want
# the last segment to start as early as the budget allows. Dynamic programming finds it.
# Let `kept[i]` be the least boundary memory that a feasible segmentation of layers
# `0..i-1` must keep while layer `i` onwards runs:
#
# $$\text{kept}[0] = 0, \qquad \text{kept}[i] = \min_{h < i \,:\, \text{kept}[h] +
#   \sum_{l=h}^{i-1} \text{sizes}[l] \le B} \big(\text{kept}[h] + \text{sizes}[h]\big)$$
#
# (less kept memory never hurts a later segment, so keeping the minimum is optimal). The last
# segment can start at `p` if `kept[p] + sum(sizes[p:]) <= B`; take the feasible `p` with the
# least `recompute_cost`, and rebuild the segmentation from the `h` that gave each minimum.
#
# **Task 5 (3 points).** `plan_checkpoints(sizes, costs, budget)` returns boundaries (a tuple
# of ints) whose `peak_memory` is at most `budget` and whose `recompute_cost` is the least of
# all segmentations that fit; it raises `ValueError` when none fits. It must handle chains of
# 60 layers in well under a second (trying all `2^(n-1)` segmentations will not).


# %%
def plan_checkpoints(sizes, costs, budget):
    """The least-recomputation segmentation within ``budget`` (a tuple of boundaries)."""
    ### BEGIN SOLUTION
    n = len(sizes)
    prefix = np.concatenate([[0], np.cumsum(sizes)])
    kept = [np.inf] * n
    parent = [-1] * n
    kept[0] = 0
    for i in range(1, n):
        for h in range(i):
            if kept[h] + prefix[i] - prefix[h] <= budget and kept[h] + sizes[h] < kept[i]:
                kept[i], parent[i] = kept[h] + sizes[h], h
    feasible = [p for p in range(n) if kept[p] + prefix[n] - prefix[p] <= budget]
    if not feasible:
        raise ValueError(f"plan_checkpoints: no segmentation fits in {budget}")
    start = min(feasible, key=lambda p: (sum(costs[:p]), p))
    chain = [start]
    while chain[-1] != 0:
        chain.append(parent[chain[-1]])
    return tuple(int(b) for b in chain[::-1][1:])
    ### END SOLUTION


# %%
### grader: skip
sizes = [1] * 16
for budget in (7, 8, 10, 16):
    plan = plan_checkpoints(sizes, [1] * 16, budget)
    print(budget, plan, peak_memory(sizes, plan), recompute_cost([1] * 16, plan))
