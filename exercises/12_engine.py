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
# # Exercise 12 — Training engines: compile the step, then choose what to train
#
# A compile-time training engine (Lin et al. 2022, "TTE") knows the whole training step
# before it runs: which buffers exist, when each is last used, which backward operations
# are needed at all, and in which order to apply the updates. TinyTrain (Kwon et al. 2024)
# then chooses what to update from one backward pass. In this exercise you write:
#
# 1. the **liveness** of every buffer of a schedule;
# 2. the **planned peak** memory of a schedule;
# 3. the **pruned and reordered** backward schedule of a chain of layers;
# 4. the **in-place QAS update** of one int8 weight tensor with an fp32 shadow;
# 5. the **Fisher potential** of every channel of a layer;
# 6. TinyTrain's **layer scores** and its **greedy selection** under a memory budget.
#
# **How you are graded.** The autograder looks up your functions *by name*; keep the names
# and signatures. You may add cells and helper functions. Each task is graded in a fresh,
# sandboxed Python process with a time limit; the grader calls your functions on its own
# inputs and compares the results in its own process, with partial credit per check. Cells
# starting with `### grader: skip` are not run by the grader. While grading, your code can
# import the standard library, numpy and scipy, but not `tinyodl` (chapter 12's modules
# solve this exercise) nor plotting libraries.
#
# Conventions. A **schedule** is a list of steps; a step is a dict with the lists of buffer
# names it `"reads"` and `"allocs"` (creates), e.g. `{"reads": ["a"], "allocs": ["b"]}`
# (a missing key is an empty list). Steps are numbered from 0.

# %%
# tinyodl-exercise: 12_engine
import numpy as np

# %% [markdown]
# ## Part 1 — Liveness
#
# A buffer is **alive** from the step that allocates it to the step that uses it (reads or
# allocates it) for the last time; the engine frees it right after that step.
#
# **Task 1 (2 points).** `liveness(steps)` returns a dict *buffer name -> (alloc, free)*:
# the index of the step that allocates it and the index of its last use (a buffer that is
# never read is freed right after the step that made it). Raise `ValueError` if a step
# reads a buffer that no earlier step allocated, or if two steps allocate the same buffer.


# %%
def liveness(steps):
    """``{name: (alloc_step, last_use_step)}`` of every buffer of ``steps``."""
    ### BEGIN SOLUTION
    alloc, last = {}, {}
    for i, step in enumerate(steps):
        for name in step.get("reads", []):
            if name not in alloc:
                raise ValueError(f"step {i} reads {name!r} before it exists")
            last[name] = i
        for name in step.get("allocs", []):
            if name in alloc:
                raise ValueError(f"step {i} allocates {name!r} a second time")
            alloc[name] = i
            last[name] = i
    return {name: (alloc[name], last[name]) for name in alloc}
    ### END SOLUTION


# %%
### grader: skip
demo = [{"allocs": ["x"]}, {"reads": ["x"], "allocs": ["h"]}, {"reads": ["h"], "allocs": ["y"]}]
print(liveness(demo))  # {'x': (0, 1), 'h': (1, 2), 'y': (2, 2)}

# %% [markdown]
# ## Part 2 — The planned peak
#
# Walk the schedule: at step `s`, the buffers it allocates join the live set; the step also
# needs `workspace[s]` bytes of scratch while it runs; after it, every buffer whose last use
# it was leaves the live set.
#
# **Task 2 (2 points).** `planned_peak(steps, sizes, workspace)` returns
# `(live, peak, peak_step)`: `live[s]` = bytes of the buffers alive during step `s`
# (those it allocates included, the workspace not), `peak = max_s (live[s] + workspace[s])`
# and `peak_step` the first step where it is reached. `sizes` maps buffer names to bytes;
# return Python ints (`live` a list). Use your `liveness`.


# %%
def planned_peak(steps, sizes, workspace):
    """``(live bytes per step, peak bytes, first step of the peak)``."""
    ### BEGIN SOLUTION
    spans = liveness(steps)
    live = []
    for s in range(len(steps)):
        live.append(int(sum(sizes[n] for n, (a, f) in spans.items() if a <= s <= f)))
    totals = [live[s] + workspace[s] for s in range(len(steps))]
    peak = max(totals)
    return live, int(peak), int(totals.index(peak))
    ### END SOLUTION


# %%
### grader: skip
print(planned_peak(demo, {"x": 100, "h": 50, "y": 10}, [0, 5, 0]))  # ([100, 150, 60], 155, 1)

# %% [markdown]
# ## Part 3 — Prune and reorder the backward pass
#
# A chain of `n` layers `0 .. n-1` (layer 0 reads the input). `trainable[i]` says whether
# layer `i`'s weight trains. The backward pass visits the layers from `n-1` down to 0 and
# may emit, for layer `i`:
#
# * `("dw", i)` — its weight gradient, only if `trainable[i]`;
# * `("dx", i)` — the gradient of its input, only if some layer **before** it (`j < i`)
#   trains (otherwise nobody needs it: it is *pruned*);
# * `("update", i)` — applying `dw` of layer `i`.
#
# Within one layer, `"dx"` comes first (it needs the weight *before* the update), then
# `"dw"`. With `reorder=True` each `("update", i)` comes right after `("dw", i)`: the
# gradient dies at once. With `reorder=False` all updates come after the backward pass, in
# increasing layer order (like `optimizer.step()`). A layer that emits nothing is skipped.
#
# **Task 3 (3 points).** `backward_schedule(trainable, reorder)` returns that list of
# `(kind, layer)` tuples (`layer` a Python int).


# %%
def backward_schedule(trainable, reorder):
    """The pruned backward schedule of a chain, updates reordered or at the end."""
    ### BEGIN SOLUTION
    n = len(trainable)
    first = next((i for i in range(n) if trainable[i]), n)
    out, pending = [], []
    for i in range(n - 1, -1, -1):
        if i > first:
            out.append(("dx", i))
        if trainable[i]:
            out.append(("dw", i))
            if reorder:
                out.append(("update", i))
            else:
                pending.append(("update", i))
    return out + sorted(pending, key=lambda s: s[1])
    ### END SOLUTION


# %%
### grader: skip
print(backward_schedule([False, True, False, True], reorder=True))
print(backward_schedule([False, True, False, True], reorder=False))

# %% [markdown]
# ## Part 4 — The in-place QAS update with an fp32 shadow
#
# The int8 weight `w_q` (shape `(F, ...)`, int8, scale `s_w[f]` per output channel) has an
# fp32 **shadow** `shadow` (same shape, float32) that accumulates small updates. With the
# gradient `g = dL/dw_q` (float32) and quantization-aware scaling (QAS, chapter 03), one
# SGD step is:
#
# 1. `g_tilde = g * s_w[f]^-2` (per output channel `f`);
# 2. `shadow += -lr * g_tilde`, then clip `shadow` to `[-127, 127]`;
# 3. `w_q = round_half_away_from_zero(shadow)` (e.g. 2.5 -> 3, -2.5 -> -3).
#
# **Task 4 (2 points).** `qas_shadow_step(w_q, shadow, g, s_w, lr)` does this **in place**:
# it changes `w_q` and `shadow` themselves (and returns `None`); `g` is left unchanged.
# Compute in float32 (`s_w` arrives as float64: cast `s_w**-2` to float32 first, and `lr`
# too), so results match float32 arithmetic.


# %%
def qas_shadow_step(w_q, shadow, g, s_w, lr):
    """One QAS SGD step of ``w_q`` (int8) through its fp32 ``shadow``, in place."""
    ### BEGIN SOLUTION
    factor = (np.asarray(s_w, dtype=np.float64) ** -2).astype(np.float32)
    factor = factor.reshape((-1,) + (1,) * (w_q.ndim - 1))
    shadow += np.float32(-lr) * (g * factor)
    np.clip(shadow, -127, 127, out=shadow)
    rounded = np.trunc(shadow + np.copysign(np.float32(0.5), shadow))
    w_q[...] = rounded.astype(np.int8)
    ### END SOLUTION


# %%
### grader: skip
w = np.array([[10, -3], [0, 127]], dtype=np.int8)
sh = w.astype(np.float32)
qas_shadow_step(w, sh, np.array([[1.0, 2.0], [-3.0, -4.0]], np.float32), np.array([0.1, 0.2]), 0.01)
print(w, sh)

# %% [markdown]
# ## Part 5 — Fisher potential
#
# For a layer's output activations `a` and their gradients `g = dL/da`, both of shape
# `(N, C, H, W)` (or `(N, C)` for a fully connected layer), the Fisher potential of
# channel `o` is
#
# $$P_o = \frac{1}{2N} \sum_{n=1}^{N} \Big( \sum_{d} a_{n,o,d}\, g_{n,o,d} \Big)^2$$
#
# where `d` runs over the `H*W` positions (one position for `(N, C)`).
#
# **Task 5 (2 points).** `fisher_potential(a, g)` returns `P`, float64 of shape `(C,)`.
# Compute in float64 (cast the inputs first). No Python loop over examples is needed.


# %%
def fisher_potential(a, g):
    """Per-channel Fisher potential, float64 (C,)."""
    ### BEGIN SOLUTION
    a = np.asarray(a, dtype=np.float64)
    g = np.asarray(g, dtype=np.float64)
    n, c = a.shape[:2]
    per_example = (a * g).reshape(n, c, -1).sum(axis=2)
    return (per_example**2).sum(axis=0) / (2 * n)
    ### END SOLUTION


# %%
### grader: skip
rng = np.random.default_rng(0)
print(fisher_potential(rng.standard_normal((4, 3, 2, 2)), rng.standard_normal((4, 3, 2, 2))))

# %% [markdown]
# ## Part 6 — TinyTrain's scores and selection
#
# A layer's score divides its potential `P_i` (the sum of its channels' potentials) by
# what updating it costs relative to the largest layer:
#
# $$s_i = \frac{P_i}{(|W_i| / \max_j |W_j|) \cdot (\mathrm{MACs}_i / \max_j \mathrm{MACs}_j)}$$
#
# Selection, in a simple cost model where updating a fraction `r` of layer `i`'s channels
# costs `r * cost[i]` bytes: walk the layers by **decreasing score** (ties: the earlier
# layer in the dicts' order first); give each the **largest** ratio among `1, 1/2, 1/4, 1/8`
# whose cost fits in what is left of the budget, or skip it if none fits.
#
# **Task 6 (2 points).** `layer_scores(potentials, params, macs)` (dicts keyed by layer
# name, potentials as arrays) returns a dict *name -> float score*;
# `select_layers(scores, cost, budget)` returns a dict *name -> ratio* (Python floats) of
# the selected layers only.


# %%
def layer_scores(potentials, params, macs):
    """TinyTrain's ``s_i`` for every layer (dict name -> float)."""
    ### BEGIN SOLUTION
    max_p, max_m = max(params.values()), max(macs.values())
    return {
        name: float(np.sum(potentials[name])) / ((params[name] / max_p) * (macs[name] / max_m))
        for name in potentials
    }
    ### END SOLUTION


def select_layers(scores, cost, budget):
    """Greedy: by decreasing score, the largest ratio that fits the remaining budget."""
    ### BEGIN SOLUTION
    order = sorted(scores, key=lambda name: -scores[name])  # sorted is stable: ties in order
    left, chosen = budget, {}
    for name in order:
        for r in (1.0, 0.5, 0.25, 0.125):
            if r * cost[name] <= left:
                chosen[name] = r
                left -= r * cost[name]
                break
    return chosen
    ### END SOLUTION


# %%
### grader: skip
s = layer_scores(
    {"a": np.array([1.0, 3.0]), "b": np.array([2.0])}, {"a": 10, "b": 5}, {"a": 100, "b": 400}
)
print(s, select_layers(s, {"a": 100, "b": 60}, 130))
