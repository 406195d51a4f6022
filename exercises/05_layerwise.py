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
# # Exercise 05 — Layer-wise training: one block at a time
#
# End-to-end backpropagation keeps what every layer saved until the backward pass reaches
# it. **Greedy layer-wise training** (Belilovsky et al. 2019) trains a network block by
# block instead: block `j` gets a small *auxiliary head* and is trained, with it, on the
# output of the blocks before it, which are **frozen** and run as inference. Only one block's
# activations are ever kept for a backward pass.
#
# You write the pieces for a fully connected network (numpy only):
#
# 1. a block (linear + ReLU) that keeps what its backward pass needs — or nothing;
# 2. the softmax cross-entropy loss;
# 3. the frozen prefix, run as inference;
# 4. one training step of a stage: frozen prefix, block `j`, head `j`;
# 5. the whole greedy loop;
# 6. the memory count: what end-to-end training keeps against one stage.
#
# **How you are graded.** The autograder looks up your functions *by name*; keep the names
# and signatures. You may add cells and helper functions. Each task is graded in a fresh,
# sandboxed Python process with a time limit; the grader calls your functions on its own
# inputs and compares the results in its own process, with partial credit per check. Cells
# starting with `### grader: skip` are not run by the grader. While grading, your code can
# import the standard library, numpy and scipy, but not `tinyodl` (chapter 05's module
# solves this exercise) nor plotting libraries. Arrays are float64 unless stated; do not
# modify arrays you are given unless the task says to update them in place.
#
# **The network.** Block `j` maps `h` (N, D_j) to `relu(h W_j^T + b_j)` (N, D_{j+1}) with
# `W_j` of shape (D_{j+1}, D_j); its auxiliary head is linear: `logits = h V_j^T + c_j` with
# `V_j` of shape (K, D_{j+1}). A block's parameters are given as a list `[W, b]`, a head's as
# `[V, c]`.

# %%
# tinyodl-exercise: 05_layerwise
import numpy as np

rng = np.random.default_rng(0)

# %% [markdown]
# ## Part 1 — A block, and what it keeps
#
# The backward pass of `out = relu(h W^T + b)` needs the input `h` (for `dW = g^T h`) and
# which pre-activations were positive (a boolean mask, 1 byte per value), with
# `g = dout * mask`:
#
# $$\frac{\partial L}{\partial W} = g^\top h, \qquad \frac{\partial L}{\partial b} =
#   \textstyle\sum_n g_n, \qquad \frac{\partial L}{\partial h} = g\, W .$$
#
# **Task 1 (2 points).** `block_forward(h, w, b, save=True)` returns `(out, cache)`: with
# `save=True` the cache is the tuple `(h, mask)` (the mask a boolean array of the output's
# shape), with `save=False` — a frozen block — the cache is `None`: nothing is kept.
# `block_backward(dout, cache, w)` returns `(dh, dw, db)`.


# %%
def block_forward(h, w, b, save=True):
    """``relu(h @ w.T + b)``; returns ``(out, (h, mask))`` or ``(out, None)``."""
    ### BEGIN SOLUTION
    z = h @ w.T + b
    mask = z > 0
    out = z * mask
    return out, ((h, mask) if save else None)
    ### END SOLUTION


def block_backward(dout, cache, w):
    """Gradients of a block from its cache: ``(dh, dw, db)``."""
    ### BEGIN SOLUTION
    h, mask = cache
    g = dout * mask
    return g @ w, g.T @ h, g.sum(axis=0)
    ### END SOLUTION


# %% [markdown]
# ## Part 2 — The loss
#
# **Task 2 (1 point).** `softmax_cross_entropy(logits, y)` returns `(loss, dlogits)`: the
# mean over the batch of `-log softmax(logits)[n, y_n]` (a Python float) and its gradient
# `(softmax(logits) - onehot(y)) / N`. Subtract each row's maximum before `exp` so that
# large logits do not overflow.


# %%
def softmax_cross_entropy(logits, y):
    """Mean cross-entropy and its gradient with respect to the logits."""
    ### BEGIN SOLUTION
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    n = len(y)
    loss = -log_p[np.arange(n), y].mean()
    grad = np.exp(log_p)
    grad[np.arange(n), y] -= 1
    return float(loss), grad / n
    ### END SOLUTION


# %% [markdown]
# ## Part 3 — The frozen prefix
#
# Blocks trained earlier are frozen: they only run forward, as inference, and keep nothing.
#
# **Task 3 (1 point).** `frozen_forward(x, frozen)` runs `x` through the blocks of `frozen`
# (a list of `[W, b]`, in order; possibly empty) with `save=False` and returns the output.


# %%
def frozen_forward(x, frozen):
    """Inference through the frozen blocks; returns their output."""
    ### BEGIN SOLUTION
    h = x
    for w, b in frozen:
        h, _ = block_forward(h, w, b, save=False)
    return h
    ### END SOLUTION


# %% [markdown]
# ## Part 4 — One step of a stage
#
# At stage `j` the frozen blocks `0..j-1` compute the input of block `j`; block `j` and head
# `j` train on it. The backward pass starts at the loss and **stops at block `j`**: no
# gradient is computed for, or flows into, the frozen blocks.
#
# **Task 4 (3 points).** `stage_step(x, y, frozen, block, head, lr)` does one step of plain
# gradient descent on the whole batch: frozen prefix, block forward (keeping its cache), head
# forward (`logits = out V^T + c`), loss, backward through the head and the block, then
# `p -= lr * grad` **in place** for the four arrays of `block` and `head`. It returns the loss
# (computed before the update) and leaves the frozen blocks unchanged.


# %%
def stage_step(x, y, frozen, block, head, lr):
    """One gradient-descent step of block + head on the frozen prefix's output."""
    ### BEGIN SOLUTION
    (w, b), (v, c) = block, head
    h = frozen_forward(x, frozen)
    out, cache = block_forward(h, w, b)
    logits = out @ v.T + c
    loss, dlogits = softmax_cross_entropy(logits, y)
    dv, dc = dlogits.T @ out, dlogits.sum(axis=0)
    dout = dlogits @ v
    _, dw, db = block_backward(dout, cache, w)
    for p, grad in ((w, dw), (b, db), (v, dv), (c, dc)):
        p -= lr * grad
    return loss
    ### END SOLUTION


# %% [markdown]
# ## Part 5 — Greedy layer-wise training
#
# **Task 5 (2 points).** `greedy_layerwise(x, y, blocks, heads, steps, lr)` trains stage
# `0`, then `1`, ..., each for `steps` calls of `stage_step` with the blocks before it frozen.
# It updates `blocks` and `heads` in place and returns the list of the last loss of each
# stage.


# %%
def greedy_layerwise(x, y, blocks, heads, steps, lr):
    """Train block by block; returns the final loss of every stage."""
    ### BEGIN SOLUTION
    losses = []
    for j in range(len(blocks)):
        for _ in range(steps):
            loss = stage_step(x, y, blocks[:j], blocks[j], heads[j], lr)
        losses.append(loss)
    return losses
    ### END SOLUTION


# %%
### grader: skip
# Self-check on a toy problem: each stage should improve on the previous one.
widths, classes = [20, 32, 32, 32], 4
centers = rng.standard_normal((classes, widths[0])) * 2
y_toy = rng.integers(0, classes, 200)
x_toy = centers[y_toy] + rng.standard_normal((200, widths[0]))
toy_blocks = [
    [rng.standard_normal((widths[j + 1], widths[j])) / np.sqrt(widths[j]), np.zeros(widths[j + 1])]
    for j in range(3)
]
toy_heads = [[np.zeros((classes, widths[j + 1])), np.zeros(classes)] for j in range(3)]
print("final loss of each stage:", greedy_layerwise(x_toy, y_toy, toy_blocks, toy_heads, 50, 0.2))

# %% [markdown]
# ## Part 6 — What it saves
#
# Count the bytes kept for backward passes, with float32 activations (4 bytes) and boolean
# masks (1 byte), for a batch of `N`: a trained block keeps its input `h` (N x D_j floats)
# and its mask (N x D_{j+1} booleans); a head keeps its input (N x D_{j+1} floats); a frozen
# block keeps nothing.
#
# * End to end (`stage=None`): every block and the last head are trained together.
# * Stage `j`: block `j` and head `j` only.
#
# **Task 6 (2 points).** `saved_bytes(widths, batch, stage=None)` returns that count as an
# int; `widths = [D_0, D_1, ..., D_J]` describes `J` blocks.


# %%
def saved_bytes(widths, batch, stage=None):
    """Bytes kept for backward: end to end (``stage=None``) or at one stage."""

    ### BEGIN SOLUTION
    def block(j):
        return batch * widths[j] * 4 + batch * widths[j + 1] * 1

    def head(j):
        return batch * widths[j + 1] * 4

    if stage is None:
        last = len(widths) - 2
        return int(sum(block(j) for j in range(len(widths) - 1)) + head(last))
    return int(block(stage) + head(stage))
    ### END SOLUTION


# %%
### grader: skip
widths = [784, 256, 256, 256, 256]
print("end to end:", saved_bytes(widths, 64), "bytes")
print("largest stage:", max(saved_bytes(widths, 64, j) for j in range(4)), "bytes")
