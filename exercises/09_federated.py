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
# # Exercise 09 — Federated learning: FedAvg, compression, robust and secure aggregation
#
# In chapter 09 a server trains one model over many devices that never share their data.
# In this exercise you write the pieces of that system yourself, in numpy:
#
# 1. the paper's **pathological non-IID partition** (2 points);
# 2. **ClientUpdate**: local mini-batch SGD, McMahan et al.'s Algorithm 1 (3 points);
# 3. the **FedAvg server step**: the weighted mean of the client updates (1 point);
# 4. **int8 quantization** of an update and back (1.5 points);
# 5. **top-k sparsification with error feedback** (2 points);
# 6. **robust aggregation**: coordinate-wise median and trimmed mean (1.5 points);
# 7. **Krum** (1.5 points);
# 8. **pairwise masking** for secure aggregation, modulo $2^{32}$ (2 points);
# 9. the **energy of one training step** from its MACs and bytes (2 points);
# 10. the **radio energy of federated rounds vs uploading the raw data** (2 points).
#
# 18.5 points in all.
#
# **How you are graded.** The autograder looks up your functions *by name*; keep the names
# and signatures. You may add cells and helper functions. Each task is graded in a fresh,
# sandboxed Python process with a time limit; the grader calls your functions on its own
# inputs and compares the results in its own process. Each task has several checks worth
# part of its points. Cells starting with `### grader: skip` are not run by the grader. While
# grading, your code can import the standard library, numpy and scipy, but not `tinyodl` (the
# point is to write it yourself) nor plotting libraries.
#
# The checks enforce exactly what the task text and the docstrings say: shapes, dtypes,
# which random generator call decides what, and inputs left unmodified.

# %%
# tinyodl-exercise: 09_federated
import numpy as np

rng = np.random.default_rng(0)

# %% [markdown]
# ## Part 1 — The pathological non-IID partition
#
# McMahan et al. sort MNIST by label, cut it into 200 *shards* of 300 examples and give each
# of 100 clients 2 shards, so that most clients see only two digits.
#
# **Task 1 (2 points).** `pathological_partition(labels, num_clients, shards_per_client,
# seed)`:
#
# * order the example indices by label with a **stable** sort
#   (`np.argsort(labels, kind="stable")`, so equal labels keep their index order);
# * `num_shards = num_clients * shards_per_client`, `shard_size = len(labels) // num_shards`;
#   shard `s` is positions `s * shard_size` to `(s + 1) * shard_size` of that order
#   (leftover examples at the end are not used);
# * deal the shards with `np.random.default_rng(seed).permutation(num_shards)` reshaped to
#   `(num_clients, shards_per_client)`: row `k` lists client `k`'s shards;
# * return a list of `num_clients` **sorted int64** index arrays.


# %%
def pathological_partition(labels, num_clients, shards_per_client, seed):
    """List of num_clients sorted int64 index arrays (see the task text)."""
    ### BEGIN SOLUTION
    labels = np.asarray(labels)
    num_shards = num_clients * shards_per_client
    size = len(labels) // num_shards
    order = np.argsort(labels, kind="stable")[: num_shards * size]
    shards = order.reshape(num_shards, size)
    deal = np.random.default_rng(seed).permutation(num_shards).reshape(num_clients, -1)
    return [np.sort(shards[row].ravel()).astype(np.int64) for row in deal]
    ### END SOLUTION


# %%
### grader: skip
demo_labels = np.repeat(np.arange(10), 30)
parts = pathological_partition(demo_labels, 10, 2, seed=0)
print([sorted(set(demo_labels[p].tolist())) for p in parts])

# %% [markdown]
# ## Part 2 — ClientUpdate (Algorithm 1)
#
# The client starts from the global weights $w$ and runs $E$ epochs of mini-batch SGD on its
# own data, $w \leftarrow w - \eta \nabla \ell(w; b)$ for each batch $b$:
#
# * make one generator `rng = np.random.default_rng(seed)`; at the start of **every** epoch,
#   draw the visiting order `rng.permutation(n)` (one call per epoch, nothing else drawn);
#   batches are consecutive slices of `batch_size` of that order, the last one may be
#   smaller;
# * `batch_size=None` means $B = \infty$: one full-batch step per epoch over the examples in
#   their given order, and **no** permutation is drawn (that is FedSGD when $E = 1$);
# * `grad_fn(w, xb, yb)` returns the gradient of the mean loss on a batch (same shape as `w`);
# * return the **model difference** $w_{\text{local}} - w$ as float64, and leave `w` as it
#   was.
#
# **Task 2 (3 points).** `client_update(w, x, y, epochs, batch_size, lr, seed, grad_fn)`.


# %%
def softmax_regression_grad(w, x, y, num_classes=10):
    """Gradient of the mean cross-entropy of logits ``x @ W`` (W = w reshaped (d, C))."""
    W = w.reshape(x.shape[1], num_classes)
    z = x @ W
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1
    return (x.T @ p / len(y)).ravel()


def client_update(w, x, y, epochs, batch_size, lr, seed, grad_fn):
    """Algorithm 1's ClientUpdate; returns w_local - w (float64, shape of w)."""
    ### BEGIN SOLUTION
    rng = np.random.default_rng(seed)
    local = np.array(w, dtype=np.float64, copy=True)
    n = len(y)
    for _ in range(epochs):
        if batch_size is None:
            local -= lr * grad_fn(local, x, y)
            continue
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            local -= lr * grad_fn(local, x[idx], y[idx])
    return local - w
    ### END SOLUTION


# %%
### grader: skip
xs = rng.standard_normal((50, 4))
ys = rng.integers(0, 3, 50)
w0 = np.zeros(4 * 3)
g = lambda w, xb, yb: softmax_regression_grad(w, xb, yb, 3)  # noqa: E731
print(client_update(w0, xs, ys, 2, 8, 0.5, 1, g)[:4])

# %% [markdown]
# ## Part 3 — The FedAvg server step
#
# The server adds the weighted mean of the reporting clients' differences,
# $\sum_k \frac{n_k}{m_t} \Delta_k$ with $m_t = \sum_k n_k$.
#
# **Task 3 (1 point).** `fedavg_step(deltas, num_examples)`: `deltas` is `(m, d)`,
# `num_examples` is `(m,)`; return the `(d,)` weighted mean as float64.


# %%
def fedavg_step(deltas, num_examples):
    """sum_k n_k / sum(n) * deltas[k], float64 (d,)."""
    ### BEGIN SOLUTION
    n = np.asarray(num_examples, dtype=np.float64)
    return (n / n.sum()) @ np.asarray(deltas, dtype=np.float64)
    ### END SOLUTION


# %% [markdown]
# ## Part 4 — int8 quantization of an update
#
# Symmetric quantization with one scale per vector: $s = \max_i |v_i| / 127$,
# $q_i = \mathrm{round}(v_i / s)$ (`np.rint`, round half to even), clipped to $[-127, 127]$;
# the receiver computes $q_i s$. An all-zero vector has $s = 0$ and $q = 0$ (no division by
# zero).
#
# **Task 4 (1.5 points).** `quantize_int8(v)` returns `(q, scale)` with `q` int8 of the shape
# of `v` and `scale` a float32 scalar (`np.float32`); `dequantize_int8(q, scale)` returns
# float32.


# %%
def quantize_int8(v):
    """(q int8, scale np.float32) with scale = max|v| / 127."""
    ### BEGIN SOLUTION
    v = np.asarray(v, dtype=np.float32)
    scale = np.float32(np.abs(v).max() / 127.0) if v.size else np.float32(0)
    if scale == 0:
        return np.zeros(v.shape, dtype=np.int8), np.float32(0)
    q = np.clip(np.rint(v / scale), -127, 127).astype(np.int8)
    return q, scale
    ### END SOLUTION


def dequantize_int8(q, scale):
    """q * scale as float32."""
    ### BEGIN SOLUTION
    return (q.astype(np.float32) * np.float32(scale)).astype(np.float32)
    ### END SOLUTION


# %% [markdown]
# ## Part 5 — Top-k with error feedback
#
# Send only the $k$ entries of largest magnitude; keep what was not sent in a residual $e$
# and add it to the next update:
#
# $$v = \Delta + e, \qquad \text{send } \mathrm{top}_k(v),
#   \qquad e \leftarrow v - \mathrm{top}_k(v).$$
#
# **Task 5 (2 points).** `topk_error_feedback(delta, residual, k)` returns
# `(indices, values, new_residual)`: the `k` positions of largest `|v|` as **sorted int32**
# indices (on ties, the lower index wins: `np.argsort(-np.abs(v), kind="stable")`), their
# float32 values of `v`, and the float32 new residual. Do not modify `delta` or `residual`.


# %%
def topk_error_feedback(delta, residual, k):
    """(indices int32 sorted, values float32, new_residual float32)."""
    ### BEGIN SOLUTION
    v = (np.asarray(delta, dtype=np.float32) + np.asarray(residual, dtype=np.float32)).astype(
        np.float32
    )
    idx = np.sort(np.argsort(-np.abs(v), kind="stable")[:k]).astype(np.int32)
    values = v[idx].copy()
    new_residual = v.copy()
    new_residual[idx] = 0
    return idx, values, new_residual
    ### END SOLUTION


# %% [markdown]
# ## Part 6 — Robust aggregation: median and trimmed mean
#
# With poisoned clients the mean is hopeless: one client can move it anywhere. Per
# coordinate, the **median** of the $m$ updates, or the **trimmed mean**: drop the
# $c = \lfloor \beta m \rfloor$ smallest and $c$ largest values and average the rest
# (unweighted).
#
# **Task 6 (1.5 points).** `coordinate_median(deltas)` and `trimmed_mean(deltas, beta)`, both
# `(m, d) -> (d,)` float64.


# %%
def coordinate_median(deltas):
    """Per-coordinate median, float64 (d,)."""
    ### BEGIN SOLUTION
    return np.median(np.asarray(deltas, dtype=np.float64), axis=0)
    ### END SOLUTION


def trimmed_mean(deltas, beta):
    """Per-coordinate mean after dropping floor(beta m) values at each end, float64 (d,)."""
    ### BEGIN SOLUTION
    d = np.sort(np.asarray(deltas, dtype=np.float64), axis=0)
    c = int(np.floor(beta * len(d)))
    return d[c : len(d) - c].mean(axis=0)
    ### END SOLUTION


# %% [markdown]
# ## Part 7 — Krum
#
# Krum (Blanchard et al. 2017) scores each update by the sum of its squared Euclidean
# distances to its $m - f - 2$ nearest *other* updates and picks the lowest score; it
# tolerates $f$ malicious clients when $m > 2f + 2$.
#
# **Task 7 (1.5 points).** `krum(deltas, f)` returns the **index** (a Python `int`) of the
# chosen update; on equal scores, the lower index. Raise `ValueError` if $m \le 2f + 2$.


# %%
def krum(deltas, f):
    """Index of the update with the lowest Krum score."""
    ### BEGIN SOLUTION
    d = np.asarray(deltas, dtype=np.float64)
    m = len(d)
    if m <= 2 * f + 2:
        raise ValueError(f"krum needs m > 2f + 2, got m={m}, f={f}")
    dist = ((d[:, None, :] - d[None, :, :]) ** 2).sum(axis=2)
    scores = [np.sort(np.delete(dist[i], i))[: m - f - 2].sum() for i in range(m)]
    return int(np.argmin(scores))
    ### END SOLUTION


# %% [markdown]
# ## Part 8 — Pairwise masks for secure aggregation
#
# In secure aggregation (Bonawitz et al. 2017) user $u$ sends
#
# $$y_u = x_u + \sum_{v > u} \mathrm{PRG}(s_{uv})
#   - \sum_{v < u} \mathrm{PRG}(s_{uv}) \pmod{2^{32}}$$
#
# where $s_{uv} = s_{vu}$ is a seed the two users agreed on. The masks cancel in
# $\sum_u y_u$, so the server learns the sum and nothing about any single $x_u$. Updates are
# fixed-point integers in `uint32`; numpy's `uint32` arithmetic wraps around, which *is*
# arithmetic modulo $2^{32}$. Use the `prg` below.
#
# **Task 8 (2 points).** `mask_input(x, uid, pairs)`: `x` is a uint32 vector, `pairs` a list
# of `(v, s_uv)` pairs, one for each other user `v` with the seed shared with it; return
# $y_u$ as uint32. Do not modify `x`.


# %%
def prg(seed, size):
    """The shared pseudo-random generator: ``size`` uint32 values from ``seed``."""
    g = np.random.Generator(np.random.PCG64(seed))
    return g.integers(0, 2**32, size=size, dtype=np.uint64).astype(np.uint32)


def mask_input(x, uid, pairs):
    """y_u = x + sum_{v > u} prg(s_uv) - sum_{v < u} prg(s_uv) (mod 2^32), uint32."""
    ### BEGIN SOLUTION
    y = np.asarray(x, dtype=np.uint32).copy()
    for v, seed in pairs:
        mask = prg(seed, len(y))
        if v > uid:
            y += mask
        elif v < uid:
            y -= mask
    return y
    ### END SOLUTION


# %%
### grader: skip
users = [0, 1, 2]
shared = {(0, 1): 11, (0, 2): 12, (1, 2): 13}
seed_of = {u: [(v, shared[min(u, v), max(u, v)]) for v in users if v != u] for u in users}
xs = {u: rng.integers(0, 1000, 5).astype(np.uint32) for u in users}
ys = {u: mask_input(xs[u], u, seed_of[u]) for u in users}
print("sum of masked == sum of inputs:", np.array_equal(sum(ys.values()), sum(xs.values())))


# %% [markdown]
# ## Part 9 — The energy of one training step
#
# A device's energy goes to arithmetic and to moving bytes (chapter 09, `tinyodl.energy`).
# Horowitz's 45 nm table (ISSCC 2014) prices a float32 multiply at 3.7 pJ and an add at
# 0.9 pJ, so a float32 multiply-accumulate (MAC) costs 4.6 pJ; reading 8 bytes from a 32 KB
# SRAM costs 20 pJ, 2.5 pJ a byte. For a training step, count both.
#
# The model is an MLP of linear layers with biases, `layer_sizes = [d_0, d_1, ..., d_L]`
# (layer `i` maps `d_i` inputs to `d_{i+1}` outputs), every parameter trained, float32
# (4 bytes a value), a batch of `B` examples:
#
# * **MACs**: the forward pass costs `B * d_i * d_{i+1}` for each layer; the backward pass
#   costs the same again for each layer's *weight gradient*, and the same again for each
#   layer's *input gradient* -- except the first layer, whose input (the data) needs no
#   gradient.
# * **Bytes**: with `P` the number of parameters (weights and biases of all layers), the
#   parameters are read in the forward pass, read again in the backward pass and their
#   gradient is written: `3 * P` values; in the forward pass every layer reads its input and
#   writes its output: `B * (d_i + d_{i+1})` values for layer `i`. Bytes are 4 times the
#   number of values.
#
# **Task 9 (2 points).** `step_counts(layer_sizes, batch_size)` returns `(macs, nbytes)`, two
# Python `int`s; `step_energy(layer_sizes, batch_size, e_mac, e_byte)` returns the joules
# `macs * e_mac + nbytes * e_byte` as a Python `float`.


# %%
def step_counts(layer_sizes, batch_size):
    """(MACs, bytes) of one SGD step of the MLP ``layer_sizes`` (see the task text)."""
    ### BEGIN SOLUTION
    pairs = list(zip(layer_sizes[:-1], layer_sizes[1:], strict=False))
    fwd = sum(a * b for a, b in pairs)
    macs = batch_size * (2 * fwd + fwd - pairs[0][0] * pairs[0][1])
    params = sum(a * b + b for a, b in pairs)
    values = 3 * params + batch_size * sum(a + b for a, b in pairs)
    return int(macs), int(4 * values)
    ### END SOLUTION


def step_energy(layer_sizes, batch_size, e_mac, e_byte):
    """Joules of one SGD step: MACs * e_mac + bytes * e_byte."""
    ### BEGIN SOLUTION
    macs, nbytes = step_counts(layer_sizes, batch_size)
    return float(macs * e_mac + nbytes * e_byte)
    ### END SOLUTION


# %%
### grader: skip
macs, nbytes = step_counts([784, 200, 200, 10], 10)
print(f"2NN, batch 10: {macs:,} MACs, {nbytes:,} bytes")
print(f"energy: {1e6 * step_energy([784, 200, 200, 10], 10, 4.6e-12, 2.5e-12):.1f} uJ")

# %% [markdown]
# ## Part 10 — A federated round's radio vs uploading the raw data
#
# Instead of federated rounds a device could upload its raw examples once and download the
# model trained in the cloud. Which costs the device less radio energy? With `e_tx` and
# `e_rx` the joules per byte sent and received (e.g. an nRF52832 BLE radio: about 0.18 uJ a
# byte sent, 0.17 uJ received; `tinyodl.energy` derives them):
#
# * an update of `d` values is sent as: `"float32"` 4 bytes a value; `"int8"` one byte a
#   value plus one float32 scale (4 bytes) for the whole vector; `"topk"` `k` entries, each an
#   int32 index and a float32 value (8 bytes);
# * a **federated round** downloads the model (`d` float32 values) and uploads one update;
# * the **raw upload** sends `num_samples * sample_bytes` bytes once and downloads the
#   trained model (`d` float32 values) once.
#
# **Task 10 (2 points).** `update_bytes(d, compression, k=None)` returns the bytes of one
# update as a Python `int` (raise `ValueError` for an unknown `compression`);
# `federated_vs_raw(d, compression, k, rounds, num_samples, sample_bytes, e_tx, e_rx)` returns
# a dict `{"federated": J of `rounds` rounds, "raw": J of the raw upload}` of Python floats.


# %%
def update_bytes(d, compression, k=None):
    """Bytes of one update of d values: float32, int8 (+ one scale) or top-k (8 B each)."""
    ### BEGIN SOLUTION
    if compression == "float32":
        return int(4 * d)
    if compression == "int8":
        return int(d + 4)
    if compression == "topk":
        return int(8 * k)
    raise ValueError(f"update_bytes: unknown compression {compression!r}")
    ### END SOLUTION


def federated_vs_raw(d, compression, k, rounds, num_samples, sample_bytes, e_tx, e_rx):
    """{"federated": J, "raw": J} on the device's radio (see the task text)."""
    ### BEGIN SOLUTION
    model_down = 4 * d * e_rx
    per_round = model_down + update_bytes(d, compression, k) * e_tx
    raw = num_samples * sample_bytes * e_tx + model_down
    return {"federated": float(rounds * per_round), "raw": float(raw)}
    ### END SOLUTION


# %%
### grader: skip
for comp, k in (("float32", None), ("int8", None), ("topk", 1992)):
    e = federated_vs_raw(199210, comp, k, 20, 120, 785, 0.18e-6, 0.17e-6)
    print(f"{comp:8s} 20 rounds: {e['federated']:.3f} J; raw upload once: {e['raw']:.3f} J")
