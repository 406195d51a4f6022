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
# # Chapter 06 — Trading compute for memory: checkpointing
#
# Chapter 00 showed that the activations a training step keeps for its backward pass grow
# with the batch. They also grow with the **depth**: backpropagation keeps what every layer
# saved in the forward pass until the backward pass reaches that layer, so a network of `n`
# layers holds `n` layers' worth of activations at once. On a device with a few hundred
# kilobytes of memory, depth becomes the problem.
#
# The way out costs compute instead of memory. Chen, Xu, Zhang and Guestrin ("Training Deep
# Nets with Sublinear Memory Cost", 2016) cut the chain of layers into segments, keep only
# the input of each segment during the forward pass, and **recompute** the inside of a
# segment when the backward pass gets there. Gruslys et al. ("Memory-Efficient
# Backpropagation Through Time", 2016) choose where to cut by **dynamic programming**, to
# recompute as little as possible within a memory budget. This chapter builds both and
# measures them:
#
# 1. **Memory grows with depth** — 16 equal layers, measured with tracemalloc.
# 2. **Keep the boundaries, recompute the inside** — `CheckpointedSequential`; with 4
#    segments about 8 activations are alive instead of 16.
# 3. **Exactly the same numbers** — gradients bit-identical to plain backpropagation, with
#    dropout and batchnorm inside the recomputed segments.
# 4. **A memory model and a planner** — predict a plan's peak before running it; pick the
#    plan that recomputes least within a budget (dynamic programming), against Chen's greedy
#    and brute force.
# 5. **The trade-off, measured** — peak memory against extra forward compute for a 16-block
#    CNN.
#
# Every number below is computed here; under test the notebook runs a smaller configuration
# (`TINYODL_QUICK=1`) through the same code.

# %%
import os
import time

import matplotlib.pyplot as plt
import numpy as np
from threadpoolctl import threadpool_limits

from tinyodl import backend, nn
from tinyodl.checkpointing import (
    ChainProfile,
    CheckpointedSequential,
    brute_force_plan,
    deep_cnn,
    equal_linear_chain,
    evaluate_plan,
    measure_backprop,
    min_peak_bytes,
    plan_checkpoints,
    plan_greedy,
    profile_chain,
    simulate_plan,
    sqrt_segments,
)
from tinyodl.data import load_mnist, to_float
from tinyodl.memory import format_bytes

QUICK = os.environ.get("TINYODL_QUICK") == "1"  # smaller runs under test; same code paths
BATCH = 256 if QUICK else 1024  # rows of the equal-layer chain
CNN_BATCH = 8 if QUICK else 32
TRAIN_STEPS = 4 if QUICK else 30
SEED = 0

backend.available_backends()  # load the compiled kernels before limiting BLAS threads
threadpool_limits(1)
rng = np.random.default_rng(SEED)
print(f"backend: {backend.get_backend()}; quick configuration: {QUICK}")

# %% [markdown]
# ## 1. Memory grows with depth
#
# The cleanest case is the textbook one: `n` identical layers that each keep exactly one
# activation. A `Linear(64, 64)` layer keeps its input `x` (it needs it for
# `dW = dout^T x`), an array of `N x 64` floats. We call that array **one activation** and
# count memory in activations.
#
# `measure_backprop` runs one forward and one backward pass under tracemalloc. The input
# batch and the output gradient exist before it starts, so only what the passes allocate is
# counted.

# %%
x = rng.standard_normal((BATCH, 64)).astype(np.float32)
dout = rng.standard_normal((BATCH, 64)).astype(np.float32)
ACTIVATION = x.nbytes  # one (N, 64) float32 array
chain = equal_linear_chain(16, width=64, seed=SEED)
plain = measure_backprop(chain, x, dout)
print(f"one activation = {format_bytes(ACTIVATION)}")
print(
    f"plain backprop through 16 layers: peak {format_bytes(plain.peak_bytes)} = "
    f"{plain.peak_bytes / ACTIVATION:.2f} activations; kept between the passes: "
    f"{plain.kept_bytes / ACTIVATION:.2f}"
)
# 15 kept inputs (the first is the batch, which exists anyway) + the gradient in flight
assert 15.5 < plain.peak_bytes / ACTIVATION < 17
assert 14.9 < plain.kept_bytes / ACTIVATION < 15.5

# %% [markdown]
# Between the two passes 15 inputs are kept (the 16th is the batch itself). During the
# backward pass one more array appears: the gradient `dL/dx` a layer returns, while the
# gradient it received is still alive. The peak is therefore about **16 activations**, and
# it would be 32 for 32 layers.
#
# ## 2. Keep the boundaries, recompute the inside
#
# `CheckpointedSequential` is a `Sequential` whose forward pass runs in **segments**. For
# every segment but the last it keeps only the segment's input (its *boundary*) and drops
# what its layers saved. The backward pass goes through the segments from the last one:
# it runs a segment forward again from its boundary — this time keeping what the layers
# save — and then back-propagates through it. The last segment is never dropped: it would be
# recomputed right away.
#
# With `k` equal segments of `n` equal layers, the worst moment is the backward pass of a
# segment: `k` boundaries plus the `n/k` activations of that segment, **`n/k + k`**, which
# is smallest at `k = sqrt(n)`. For `n = 16`: `4 + 4 = 8` instead of 16, for one extra
# forward pass of the first 12 layers. The default is `round(sqrt(n))` segments.

# %%
ckpt = CheckpointedSequential.wrap(equal_linear_chain(16, width=64, seed=SEED))
print("segments:", ckpt.segments())
measured = measure_backprop(ckpt, x, dout)
live = measured.peak_bytes / ACTIVATION
print(
    f"4 segments: peak {format_bytes(measured.peak_bytes)} = {live:.2f} activations "
    f"(plain: {plain.peak_bytes / ACTIVATION:.2f}); kept between the passes "
    f"{measured.kept_bytes / ACTIVATION:.2f}"
)
assert ckpt.boundaries == (4, 8, 12)
assert 6.5 < live < 8.0  # about n/k + k = 8 (the batch, boundary 0, costs nothing here)

# %% [markdown]
# About seven activations: three boundaries (the inputs of layers 4, 8 and 12; the batch is
# the first), three inputs inside the segment being recomputed (its first input *is* its
# boundary) and the gradient in flight. Chen's `n/k + k = 8` counts the batch too.
#
# Now every number of segments, measured, next to the count `n/k + k`:

# %%
segment_counts = list(range(1, 17))
live_by_k = {}
for k in segment_counts:
    model = CheckpointedSequential.wrap(equal_linear_chain(16, 64, seed=SEED), segments=k)
    live_by_k[k] = measure_backprop(model, x, dout).peak_bytes / ACTIVATION
recompute = [evaluate_plan(ChainProfile.uniform(16), sqrt_segments(16, k)) for k in segment_counts]

fig, ax = plt.subplots(1, 2, figsize=(11, 4))
ax[0].plot(segment_counts, list(live_by_k.values()), "o-", label="measured (tracemalloc)")
ax[0].plot(segment_counts, [16 / k + k for k in segment_counts], "k:", label="n/k + k")
ax[0].set(xlabel="segments k", ylabel="peak, in activations", title="16 equal layers")
ax[0].legend()
ax[0].grid(alpha=0.3)
ax[1].plot(segment_counts, [100 * p.recompute_fraction for p in recompute], "o-")
ax[1].set(xlabel="segments k", ylabel="% of a forward pass recomputed", title="the price")
ax[1].grid(alpha=0.3)
best_k = min(live_by_k, key=live_by_k.get)
print({k: round(v, 2) for k, v in live_by_k.items()})
assert best_k in (3, 4, 5) and live_by_k[4] < 0.5 * live_by_k[1]

# %% [markdown]
# The curve is the `n/k + k` shape: few segments keep long segments alive, many segments keep
# many boundaries. The minimum is at `k ≈ sqrt(16) = 4`. The price (right) is one forward
# pass of everything before the last segment: 75% of a forward pass at `k = 4`. Since a
# training step is about one forward and two forward-sized backward passes, that is roughly
# 25% more compute per step (Chen et al. report +30% time for their 1000-layer ResNet).
#
# ## 3. Exactly the same numbers
#
# Recomputation is only allowed if it reproduces the first forward pass *bit for bit*;
# otherwise the gradients change. Three things could break that:
#
# * **dropout** draws a new random mask on every forward pass. `CheckpointedSequential`
#   records the state of each random generator of a segment before its first pass, puts it
#   back for the recomputation (same masks) and afterwards returns the generator to where it
#   was (the next step draws as it would have).
# * **batchnorm** in training mode normalises with the batch statistics (the same batch gives
#   the same output) but also *updates its running statistics* on every forward pass. The
#   running statistics of a segment are copied before the recomputation and put back after.
# * the **mode**: the recomputation uses the same `train` flag as the first pass.
#
# Here is the first problem on its own: the same dropout layer, run twice, draws two masks.

# %%
drop = nn.Dropout(0.5, seed=SEED)
h = np.ones((2, 8), dtype=np.float32)
first, second = drop.forward(h, train=True), drop.forward(h, train=True)
print("first pass :", (first > 0).astype(int)[0])
print("second pass:", (second > 0).astype(int)[0])
assert not np.array_equal(first, second)

# %% [markdown]
# Now a real network: a 16-block CNN (conv 3x3 + batchnorm + ReLU + dropout per block) on
# MNIST, trained with SGD for a few steps plain and checkpointed. We compare everything
# with `np.array_equal`: not "close", *equal*.

# %%
images, labels = load_mnist("train")
x_img = to_float(images[: CNN_BATCH * TRAIN_STEPS])
y_img = labels[: CNN_BATCH * TRAIN_STEPS].astype(np.int64)


def train_steps(model):
    """SGD steps over the batches; returns the losses and the final state."""
    opt = nn.SGD(model, lr=0.05, momentum=0.9)
    losses = []
    for start in range(0, len(x_img), CNN_BATCH):
        opt.zero_grad()
        loss, dlogits = nn.softmax_cross_entropy(
            model.forward(x_img[start : start + CNN_BATCH]), y_img[start : start + CNN_BATCH]
        )
        model.backward(dlogits)
        opt.step()
        losses.append(loss)
    return losses, model.state_dict()


t0 = time.perf_counter()
plain_losses, plain_state = train_steps(deep_cnn(16, dropout=0.1, seed=SEED))
t_plain = time.perf_counter() - t0
t0 = time.perf_counter()
ckpt_model = CheckpointedSequential.wrap(deep_cnn(16, dropout=0.1, seed=SEED))
ckpt_losses, ckpt_state = train_steps(ckpt_model)
t_ckpt = time.perf_counter() - t0
print(f"{len(plain_losses)} steps; segments {ckpt_model.segments()}")
print(f"plain losses       : {np.round(plain_losses[:6], 6)}")
print(f"checkpointed losses: {np.round(ckpt_losses[:6], 6)}")
identical = all(np.array_equal(plain_state[k], ckpt_state[k]) for k in plain_state)
print(f"weights and running statistics bit-identical after training: {identical}")
print(f"time: checkpointed / plain = {t_ckpt / t_plain:.2f} (shared machine: indicative)")
assert plain_losses == ckpt_losses and identical

# %% [markdown]
# Same losses, same weights, same batchnorm statistics, step after step. (The tests check the
# same thing for random segmentations, per-example gradients, MobileNet-style inverted
# residual blocks and both backends, and include two *negative controls*: without restoring
# the random state, or without restoring the running statistics, the comparison fails.)
#
# ## 4. A memory model, and a planner
#
# Equal segments are a good default, but real networks are not made of equal layers: early
# layers see large images, later ones small feature maps; some layers keep their input,
# others only a mask. To choose segments well we need to **predict** the peak of a plan
# without running it.
#
# `profile_chain` runs each link of the chain once and *reads* what the planner needs: the
# bytes of its input and output, what it saves (from `layer.saved`, like chapter 00's
# memory report), whether it keeps its input, the short-lived workspace of its forward and
# backward (measured), and its forward cost in multiply-accumulates. `simulate_plan` then
# replays the executor's allocations and frees, one by one, with reference counts — the
# same bookkeeping CPython does — and returns the peak.

# %%
x_cnn = x_img[:CNN_BATCH]
dout_cnn = rng.standard_normal((CNN_BATCH, 10)).astype(np.float32)
cnn = deep_cnn(16, seed=SEED)
profile = profile_chain(cnn, x_cnn)
print(f"{'link':<11}{'input':>10}{'saved':>10}{'keeps x':>8}{'MACs':>12}")
for i, name in enumerate(profile.names):
    print(
        f"{name:<11}{format_bytes(profile.input_bytes[i]):>10}"
        f"{format_bytes(profile.saved_bytes[i]):>10}{str(profile.saves_input[i]):>8}"
        f"{profile.forward_cost[i]:>12,.0f}"
    )

# %%
checks = []
for k in (1, 2, 4, 8):
    boundaries = sqrt_segments(profile.n, k)
    model = CheckpointedSequential.wrap(deep_cnn(16, seed=SEED), boundaries=boundaries)
    got = measure_backprop(model, x_cnn, dout_cnn).peak_bytes
    want = simulate_plan(profile, boundaries)
    checks.append(abs(want - got) / got)
    print(
        f"{k} segments: predicted {format_bytes(want)}, measured {format_bytes(got)} "
        f"({(want - got) / got:+.1%})"
    )
assert max(checks) < 0.05

# %% [markdown]
# The model is within a few percent of tracemalloc. Now the planner. With one level of
# recomputation, every layer before the last segment runs forward twice, so the extra
# compute depends only on **where the last segment starts**: to recompute less, start it
# earlier — which makes it longer and costs memory. The question is how early it can start
# within a budget.
#
# `plan_checkpoints` answers it exactly by dynamic programming over the chain: for every
# position `i`, the least boundary memory a feasible segmentation of the layers before `i`
# must keep (less kept memory never hurts later segments, so keeping the minimum is
# optimal). Chen et al.'s own heuristic, `plan_greedy`, grows each segment until the next
# layer would not fit. Greedy fills the *first* segments to the brim, which pushes the last
# one back. On the textbook chain with a budget of 8 activations:

# %%
textbook = ChainProfile.uniform(16)  # 16 layers of 1 "byte" each: counts in activations
for budget in (7, 8, 10, 12):
    dp, greedy = plan_checkpoints(textbook, budget), plan_greedy(textbook, budget)
    print(f"budget {budget:>2}: DP     {dp}")
    print(f"           greedy {greedy}")
    assert dp.recompute_cost <= greedy.recompute_cost and dp.peak_bytes <= budget
assert plan_checkpoints(textbook, 8).recompute_cost < plan_greedy(textbook, 8).recompute_cost

# %% [markdown]
# Within 8 activations the DP recomputes 10 of 16 layers, greedy 13. Is the DP really
# optimal? For small chains we can try **every** segmentation (`2^(n-1)` of them) and
# compare, on random chains with uneven layers:

# %%
trials = 20 if QUICK else 100
for trial in range(trials):
    r = np.random.default_rng(trial)
    n = int(r.integers(2, 11))
    sizes = r.integers(1, 20, n + 1).tolist()
    chain_t = ChainProfile(
        sizes[:-1], sizes[1:], r.integers(0, 10, n).tolist(), r.random(n) < 0.6,
        r.integers(1, 5, n).tolist(), r.integers(0, 8, n).tolist(),
    )  # fmt: skip
    budget = int(r.integers(min_peak_bytes(chain_t), simulate_plan(chain_t) + 1))
    best, dp = brute_force_plan(chain_t, budget), plan_checkpoints(chain_t, budget)
    assert (dp.recompute_cost, dp.peak_bytes) == (best.recompute_cost, best.peak_bytes)
print(f"{trials} random chains: the DP plan recomputes as little as brute force, at the same peak")

# %% [markdown]
# ## 5. The trade-off, measured
#
# Finally the figure of the chapter: for the 16-block CNN, the **measured** peak memory of
# forward + backward against the extra forward compute, for `k` equal segments, for the DP
# plan at a range of budgets, and for Chen's greedy at the same budgets. Hollow markers are
# the model's predictions; the grey staircase is the DP's predicted frontier.

# %%
lowest, highest = min_peak_bytes(profile), simulate_plan(profile)
fractions = [0.0, 0.3, 0.6, 1.0] if QUICK else [0.0, 0.1, 0.2, 0.35, 0.5, 0.7, 0.85, 1.0]
plans = [evaluate_plan(profile, sqrt_segments(profile.n, k), method="equal") for k in range(1, 9)]
for f in fractions:
    budget = int(lowest + f * (highest - lowest))
    plans.append(plan_checkpoints(profile, budget))
    try:
        plans.append(plan_greedy(profile, budget))
    except ValueError as err:  # the greedy may find nothing where a plan exists
        print("greedy:", err)
results = []
for plan in plans:
    model = CheckpointedSequential.wrap(deep_cnn(16, seed=SEED), boundaries=plan.boundaries)
    got = measure_backprop(model, x_cnn, dout_cnn).peak_bytes
    results.append((plan, got))
frontier = sorted(
    {
        (p.recompute_fraction, p.peak_bytes)
        for p in (plan_checkpoints(profile, int(b)) for b in np.linspace(lowest, highest, 40))
    }
)

fig, ax = plt.subplots(figsize=(8, 5))
ax.step(
    [100 * f for f, _ in frontier], [b / 2**20 for _, b in frontier], where="post",
    color="0.6", label="DP frontier (predicted)",
)  # fmt: skip
for method, marker, label in [
    ("equal", "o", "k equal segments"),
    ("dp", "s", "DP plan for a budget"),
    ("greedy", "^", "Chen's greedy, same budgets"),
]:
    sel = sorted((r for r in results if r[0].method == method), key=lambda r: r[0].recompute_cost)
    xs = [100 * p.recompute_fraction for p, _ in sel]
    line = ax.plot(xs, [m / 2**20 for _, m in sel], marker, label=label)
    ax.plot(xs, [p.peak_bytes / 2**20 for p, _ in sel], marker, mfc="none", ms=12,
            color=line[0].get_color())  # fmt: skip
ax.set(
    xlabel="extra forward compute (% of one forward pass, MACs)",
    ylabel="peak memory of forward + backward (MiB)",
    title=f"16-block CNN, batch {CNN_BATCH}: measured (filled), predicted (hollow)",
)
ax.legend()
ax.grid(alpha=0.3)
errors = [abs(p.peak_bytes - m) / m for p, m in results]
plain_peak = next(m for p, m in results if p.method == "equal" and p.num_segments == 1)
low_peak = min(m for _, m in results)
print(f"largest prediction error: {max(errors):.1%}")
print(f"plain: {format_bytes(plain_peak)}; lowest measured: {format_bytes(low_peak)} "
      f"({plain_peak / low_peak:.1f}x less)")  # fmt: skip
assert max(errors) < 0.05 and low_peak < 0.45 * plain_peak
for plan, _ in results:  # no equal-segment plan beats the DP at its own memory
    if plan.method == "equal":
        assert plan_checkpoints(profile, plan.peak_bytes).recompute_cost <= plan.recompute_cost
    if plan.method == "greedy":
        assert plan_checkpoints(profile, plan.budget_bytes).recompute_cost <= plan.recompute_cost

# %% [markdown]
# Reading the figure:
#
# * The first segments bought are the cheapest: memory falls fastest at the left of the
#   figure, and the last few percent of memory cost the most recomputation.
# * No equal-segment plan and no greedy plan beats the DP at its own memory (asserted
#   above): for the same peak the DP recomputes as little or less.
# * The lowest peak is about a third of plain backpropagation here; one level of
#   recomputation cannot go below it (Gruslys et al. recurse — checkpoint inside a
#   recomputed segment — to reach O(log n) memory with more compute).
#
# The same figure, at batch 32 with timings, comes from
# `tinyodl bench checkpointing --json benchmarks/results/checkpointing.json --plot
# benchmarks/results/checkpointing.png` (numbers in the README).
#
# ## Take-aways
#
# * Activation memory grows with depth; keeping only segment boundaries and recomputing
#   brings `n` activations down to about `n/k + k`, `2 sqrt(n)` at best, for one extra
#   forward pass at most.
# * Recomputation must reproduce the first pass exactly: random state and running
#   statistics need care, and then the gradients are bit-identical.
# * A memory model read off a real profile predicts each plan's peak to a few percent, and a
#   dynamic programme finds the plan that recomputes least within a budget — provably, and
#   checked against brute force. The training engine of chapter 12 reuses this planner
#   (`docs/architecture.md`, "Checkpoint planner").
#
# **Exercise** `exercises/06_checkpointing.py`: segment boundaries, the memory count, a
# recomputing backward pass, and the planner.
