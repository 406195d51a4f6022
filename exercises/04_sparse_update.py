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
# # Exercise 04 — Sparse update
#
# Lin et al. (NeurIPS 2022) train a model on a microcontroller by updating only the parts
# that buy the most accuracy for their memory: the biases of the last $k$ layers and the
# weights of a few layers, each for a ratio $r \in \{0, 1/8, 1/4, 1/2, 1\}$ of its output
# channels (those of largest weight L2 norm). In this exercise you write:
#
# 1. the **channel selection** by weight L2 norm;
# 2. the **weight gradient of the selected channels only** for a linear layer;
# 3. the **in-place update** of those channels;
# 4. the **memory cost** of a scheme in the paper's accounting;
# 5. the **exact search** for the best scheme under a budget;
# 6. the paper's **evolutionary search** for it.
#
# **How you are graded.** The autograder looks up your functions *by name*; keep the names
# and signatures. You may add cells and helper functions. Each task is graded in a fresh,
# sandboxed Python process with a time limit; the grader calls your functions on its own
# inputs and compares the results in its own process. Each task has several checks worth part
# of its points. Cells starting with `### grader: skip` are not run by the grader. Your code
# can import the standard library, numpy and scipy, but not `tinyodl`.
#
# Conventions: weights have the output channels on axis 0 (`(F, ...)`; a linear layer's
# weight is `(out_features, in_features)` and $y = x W^\top + b$).

# %%
# tinyodl-exercise: 04_sparse_update
import itertools
import math

import numpy as np

RATIOS = (0.0, 0.125, 0.25, 0.5, 1.0)

# %% [markdown]
# ## Part 1 — Which channels
#
# **Task 1 (2 points).** `select_channels(w, ratio)` returns the indices of the
# `ceil(ratio * F)` output channels of `w` (shape `(F, ...)`) with the largest L2 norm
# (over all the channel's weights), **sorted increasingly**, as an `int64` array. Among equal
# norms the lower index wins. `ratio = 0` gives an empty array; `ratio = 1` every channel.


# %%
def select_channels(w, ratio):
    """Indices (int64, sorted) of the ceil(ratio * F) channels of largest L2 norm."""
    ### BEGIN SOLUTION
    f = w.shape[0]
    k = int(math.ceil(ratio * f - 1e-9))
    norms = np.sqrt((w.reshape(f, -1).astype(np.float64) ** 2).sum(axis=1))
    order = np.argsort(-norms, kind="stable")
    return np.sort(order[:k]).astype(np.int64)
    ### END SOLUTION


# %% [markdown]
# ## Part 2 — The gradient of the selected channels, and their update
#
# For a linear layer $y = x W^\top + b$, $\partial L / \partial W = (\partial L/\partial y)^\top
# x$. Updating only output channels `channels` needs only those rows.
#
# **Task 2 (2 points).** `partial_weight_gradient(x, dout, channels)` returns the rows
# `channels` of $\partial L/\partial W$, shape `(len(channels), in_features)`, without
# computing the other rows (no full `(out_features, in_features)` product). `x` is
# `(N, in_features)`, `dout` is `(N, out_features)`; the result has the dtype of `x`.
#
# **Task 3 (1 point).** `sparse_sgd_step(w, grad_rows, channels, lr)` applies
# `w[channels] -= lr * grad_rows` **in place** (it returns nothing); the other rows of `w`
# must not change.


# %%
def partial_weight_gradient(x, dout, channels):
    """(N, K), (N, F), (C,) -> (C, K): rows ``channels`` of dL/dW."""
    ### BEGIN SOLUTION
    return (dout[:, channels].T @ x).astype(x.dtype)
    ### END SOLUTION


def sparse_sgd_step(w, grad_rows, channels, lr):
    """In place: w[channels] -= lr * grad_rows."""
    ### BEGIN SOLUTION
    w[channels] -= lr * grad_rows
    ### END SOLUTION


# %% [markdown]
# ## Part 3 — What a scheme costs
#
# A network is a list of layers, in forward order (the last is the classifier), each a dict:
#
# * `"type"`: `"conv"`, `"depthwise"` or `"linear"`;
# * `"in_shape"`, `"out_shape"`: one example's input and output shape (no batch axis);
# * `"weight_size"`: number of weights, `"out_channels"`: `F`;
# * `"relu"`: whether a ReLU follows (clamps) the layer's output.
#
# A scheme is `bias_depth` (the biases of the last `bias_depth` layers are updated) and
# `ratios`, a list with one ratio per layer (0: its weights are frozen). For a batch of `n`,
# the paper's accounting of the **extra** training memory is, in bytes:
#
# * `"activations"`: for each layer whose weights are updated (`c = ceil(r * F) > 0`
#   channels), its int8 input, `n * prod(in_shape)` bytes -- except a depthwise layer, which
#   keeps only its selected channels: `n * prod(in_shape) * c // F`;
# * `"gradients"`: 4 bytes per updated weight (`c * weight_size // F` of them) and per
#   updated bias (`F` per layer in the last `bias_depth`);
# * `"masks"`: one bit per output element, `ceil(n * prod(out_shape) / 8)` bytes, for every
#   layer with `"relu"` from the **first layer that updates anything** (weights or bias) to
#   the last; nothing if nothing is updated;
# * `"total"`: the sum of the three.
#
# **Task 4 (3 points).** `scheme_memory(layers, bias_depth, ratios, n)` returns that dict
# (values are Python ints).


# %%
def scheme_memory(layers, bias_depth, ratios, n):
    """Paper accounting of a sparse-update scheme: activations, gradients, masks, total."""
    ### BEGIN SOLUTION
    count = len(layers)
    first_bias = count - bias_depth
    activations = gradients = 0
    trained = []
    for i, (layer, r) in enumerate(zip(layers, ratios, strict=True)):
        f = layer["out_channels"]
        c = int(math.ceil(r * f - 1e-9))
        x = n * int(np.prod(layer["in_shape"]))
        if c:
            trained.append(i)
            activations += x * c // f if layer["type"] == "depthwise" else x
            gradients += 4 * c * (layer["weight_size"] // f)
        if i >= first_bias:
            gradients += 4 * f
    if bias_depth:
        trained.append(first_bias)
    start = min(trained) if trained else count
    masks = sum(
        -(-n * int(np.prod(layer["out_shape"])) // 8) for layer in layers[start:] if layer["relu"]
    )
    total = activations + gradients + masks
    return {"activations": activations, "gradients": gradients, "masks": masks, "total": total}
    ### END SOLUTION


# %% [markdown]
# ## Part 4 — Searching under a budget
#
# The contribution analysis measured, for each candidate `i` and each option `j`, an
# accuracy gain `gains[i][j]` and a memory cost `costs[i][j]` (option 0 is "not updated":
# gain 0 and cost 0). The paper assumes gains and costs add up and looks for one option per
# candidate that maximises the summed gain with the summed cost at most `budget`.
#
# **Task 5 (2 points).** `exact_search(costs, gains, budget)` returns the best choice as a
# list of option indices (one per candidate), by trying every combination. Among choices of
# equal gain, any is accepted.
#
# **Task 6 (2 points).** `evolutionary_search(costs, gains, budget, population=30,
# generations=30, seed=0)`: the paper's search. Keep a population of choices; each
# generation keep the best quarter of the *distinct* feasible choices as parents (at most
# `population // 4` of them, at least 2 if there are) and refill, alternately, with
# mutations of a parent (one random gene redrawn, and each other gene with probability 0.1)
# and crossovers of two parents (each gene from one of them); return the best feasible
# choice found (a list of option indices). Use
# `np.random.default_rng(seed)` for every random choice. It is graded on small problems
# (81 choices, `population=60, generations=40`), where it must find the optimum, and it must
# never return an over-budget choice.


# %%
def _gain_cost(choice, costs, gains):
    return (
        sum(gains[i][j] for i, j in enumerate(choice)),
        sum(costs[i][j] for i, j in enumerate(choice)),
    )


def exact_search(costs, gains, budget):
    """One option index per candidate: the largest summed gain within the budget."""
    ### BEGIN SOLUTION
    best, best_gain = None, -np.inf
    for choice in itertools.product(*[range(len(c)) for c in costs]):
        gain, cost = _gain_cost(choice, costs, gains)
        if cost <= budget and gain > best_gain:
            best, best_gain = list(choice), gain
    return best
    ### END SOLUTION


def evolutionary_search(costs, gains, budget, population=30, generations=30, seed=0):
    """The paper's evolutionary search; returns the best feasible choice found."""
    ### BEGIN SOLUTION
    rng = np.random.default_rng(seed)
    sizes = np.array([len(c) for c in costs])

    def fitness(choice):
        gain, cost = _gain_cost(choice, costs, gains)
        return gain if cost <= budget else -np.inf

    pop = [np.zeros(len(costs), dtype=int)]
    pop += [rng.integers(0, sizes) for _ in range(population - 1)]
    for _ in range(generations):
        unique = {tuple(int(v) for v in p): p for p in pop}.values()  # no duplicates
        ranked = sorted(unique, key=fitness, reverse=True)
        parents = [p for p in ranked[: max(2, population // 4)] if np.isfinite(fitness(p))]
        parents = parents or ranked[:1]
        children = []
        while len(parents) + len(children) < population:
            a = parents[rng.integers(len(parents))]
            if len(children) % 2:  # crossover: each gene from one of two parents
                b = parents[rng.integers(len(parents))]
                child = np.where(rng.random(len(costs)) < 0.5, a, b)
            else:  # mutation: one gene redrawn, and each other with probability 0.1
                child = a.copy()
                redraw = rng.random(len(costs)) < 0.1
                redraw[rng.integers(len(costs))] = True
                child[redraw] = rng.integers(0, sizes)[redraw]
            children.append(child)
        pop = parents + children
    best = max(pop, key=fitness)
    return [int(v) for v in best]
    ### END SOLUTION


# %%
### grader: skip
w = rng_w = np.random.default_rng(0).standard_normal((8, 3))
print(select_channels(w, 0.25), np.linalg.norm(w, axis=1).round(2))
costs = [[0, 3, 5], [0, 2, 6], [0, 4, 7]]
gains = [[0, 0.02, 0.03], [0, 0.01, 0.05], [0, 0.02, 0.04]]
print(exact_search(costs, gains, 9), evolutionary_search(costs, gains, 9))
