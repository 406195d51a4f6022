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
# # Chapter 12 — Training engines: compile the training step
#
# Chapters 03 and 04 made an int8 model trainable and chose *what* to train (a sparse
# update). Both still ran the training step the way PyTorch does: run the forward, keep
# whatever backward may need, run the whole backward, collect every gradient, and only then
# call `optimizer.step()`. On a microcontroller that order is wasteful: every gradient waits
# in memory for the last one to be computed.
#
# Lin et al. ("On-Device Training Under 256KB Memory", NeurIPS 2022, section 2.3) move that
# work to **compile time**. Their Tiny Training Engine (TTE)
#
# 1. **traces** the forward graph,
# 2. **derives the backward graph** from it before anything runs,
# 3. **prunes** every backward node that only serves frozen tensors,
# 4. **reorders** the operators so that each parameter's update is applied *in place* as soon
#    as its gradient exists, and the gradient buffer dies at once,
# 5. **plans** the memory of the resulting schedule: a lifetime for every buffer.
#
# For MCUNet on an STM32F746 (batch 1) the paper reports a peak of 3650 KB for the full
# update, 560 KB for the sparse update and 173 KB for the sparse update with the reordered
# schedule; reordering alone saves 2.4-3.2x. This chapter builds the same engine for
# tinyodl's int8 `mcunet_tiny` (`tinyodl.engine`) and measures what each stage buys.
#
# The second half is about choosing *what* to update on the device itself. Chapter 04's
# contribution analysis trains every candidate offline; **TinyTrain** (Kwon et al., ICML 2024)
# scores layers and channels from a single backward pass (`tinyodl.tinytrain`).
#
# Under test the notebook runs a smaller configuration (`TINYODL_QUICK=1`) through the same
# code; the full numbers come from `tinyodl bench engine` (see the end).

# %%
import copy
import os

import matplotlib.pyplot as plt
import numpy as np

from tinyodl import engine, tinytrain
from tinyodl.bench.engine import SPARSE_SCHEME, starting_qmodel
from tinyodl.memory import format_bytes
from tinyodl.qas import Int8Optimizer, int8_train_step
from tinyodl.sparse_update import UpdateScheme, apply_scheme, memory_cost
from tinyodl.train import evaluate

QUICK = os.environ.get("TINYODL_QUICK") == "1"  # smaller runs under test; same code paths
PER_CLASS = 20 if QUICK else 100  # task A adaptation images per class
N_TEST = 300 if QUICK else None
SEED = 0

task, qmodel = starting_qmodel(SEED, per_class=PER_CLASS, n_calib=64 if QUICK else 128)
x_test, y_test = (
    (task.x_test[:N_TEST], task.y_test[:N_TEST]) if N_TEST else (task.x_test, task.y_test)
)
print(task)
print(qmodel)

# %% [markdown]
# ## 1. Trace: the forward graph
#
# `engine.trace` walks the quantized model's operations (the same walk as `describe()`) and
# names every tensor after the node that produces it. Residual blocks become an `add` node
# reading two tensors: the body's output and the block's input (the skip connection).

# %%
graph = engine.trace(qmodel, (1, 1, 28, 28))
print(f"{len(graph.nodes)} nodes")
for node in graph.nodes[:8] + graph.nodes[-4:]:
    print(f"  {node.kind:8s} {node.name:24s} {node.inputs!s:48s} -> {node.out_shape}")

# %% [markdown]
# ## 2. What trains, and what backward must compute
#
# Chapter 04's search chose this scheme for task A under 64 KB (paper accounting): the
# biases of the last 10 layers, the classifier, half the channels of the last 1x1
# convolution and a few channels of block 9. `requires_grad` propagates forward
# "some trainable tensor lies at or below this tensor": a backward node whose gradient
# would only reach frozen tensors is **pruned**.

# %%
scheme = UpdateScheme.from_dict(SPARSE_SCHEME)
print(scheme)
updates = engine.resolve_scheme(graph, scheme)
req = engine.requires_grad(graph, updates)
pruned = [n.name for n in graph.nodes if not req[n.output]]
print(f"{len(pruned)} of {len(graph.nodes)} nodes need no backward at all, e.g. {pruned[:4]}")
for name, u in updates.items():
    if u.weight or u.bias:
        n_ch = 0 if u.channels is None else len(u.channels)
        print(f"  {name:22s} weight channels {n_ch:3d}  bias {u.bias}")

# %% [markdown]
# ## 3. Compile: derive backward, reorder, plan
#
# `compile_training` emits one flat schedule: quantize, the forward nodes, the loss, the
# derived backward steps (`bwd_mask` applies the straight-through clamp and the requantization
# scale in place, then `bwd_dx`, `bwd_db`, `bwd_dw`), and the updates. With `reorder=True`
# each `update_*` follows its gradient immediately. The forward keeps a **1-bit mask** of
# each clamp (not the int8 output) and the int8 input of a layer only if its weight trains;
# a depthwise layer updated on a few channels keeps only those channels' input. A stride-1
# depthwise layer writes `dL/dx` over its `dL/dy` (`bwd_dx_inplace`: channel c of one needs
# only channel c of the other), after `bwd_db` and `bwd_dw` have read it and before its
# weights change.

# %%
plan = engine.compile_training(copy.deepcopy(qmodel), (1, 1, 28, 28), scheme=scheme, lr=0.01)
backward = [s for s in plan.steps if s.kind not in ("quantize", "forward")]
print(f"{len(plan.steps)} steps; the first backward ones:")
for s in backward[:12]:
    print(f"  {s.label():34s} frees {s.frees}")

# %% [markdown]
# The **lifetime table**: every buffer, its size, the step that creates it and the step
# after which it is freed (its last use). The planned peak is the largest sum of live
# buffers plus the kernel's own scratch at that step (measured once per step at compile
# time, like the workspace TTE reads from its kernels).

# %%
mp = plan.memory_plan
print(f"{'buffer':30s} {'kind':12s} {'bytes':>7s}  alive")
for row in mp.table()[-14:]:
    life = f"{row['alloc_step']} .. {row['free_step']}"
    print(f"{row['name']:30s} {row['kind']:12s} {row['bytes']:7d}  {life}")
print(f"planned peak {format_bytes(mp.peak_bytes)} at {mp.steps[mp.peak_step].label()}")
print("alive at the peak:", mp.by_kind())

# %% [markdown]
# ## 4. The same weights as plain backprop
#
# The engine changes the *order* of the work, never the arithmetic: after a few steps the
# integers must equal chapter 03's eager step (`int8_train_step` with `Int8Optimizer`), with
# chapter 04's `apply_scheme` marking what trains. They are equal bit for bit.

# %%
opt_kw = dict(lr=0.01, momentum=0.9, qas=True, store="shadow")
eager = apply_scheme(copy.deepcopy(qmodel), scheme)
optimizer = Int8Optimizer(eager, kind="sgd", **opt_kw)
compiled = copy.deepcopy(qmodel)
plan = engine.compile_training(compiled, (1, 1, 28, 28), scheme=scheme, **opt_kw)
for i in range(5):
    xb, yb = task.x_train[i : i + 1], task.y_train[i : i + 1]
    int8_train_step(eager, optimizer, xb, yb)
    plan.step(xb, yb)
same = all(
    np.array_equal(a.weight, b.weight) and np.array_equal(a.bias, b.bias)
    for (_, a), (_, b) in zip(eager.named_convs(), compiled.named_convs(), strict=True)
)
print("bit-equal after 5 steps:", same)
assert same

# %% [markdown]
# ## 5. Where the memory goes: full, sparse, reordered
#
# Four compiled steps of batch 1: the full update (every weight and bias) and the sparse
# scheme, each with the updates at the end (as `optimizer.step()`) or reordered. For each,
# the planned peak and the peak tracemalloc measures while the step runs (above the
# resident weights, optimizer state and input), and the resident training state.

# %%
layers = [n for n, _ in qmodel.named_convs()]
full = UpdateScheme(len(layers), {n: 1.0 for n in layers})
configs = {}
for label, sch in (("full", full), ("sparse", scheme)):
    for reorder in (False, True):
        work = copy.deepcopy(qmodel)
        p = engine.compile_training(work, (1, 1, 28, 28), scheme=sch, reorder=reorder, lr=0.0)
        p.step(task.x_train[:1], task.y_train[:1])  # warm-up
        measured = p.measure(task.x_train[1:2], task.y_train[1:2]).peak_bytes
        configs[label + (" + reordered" if reorder else "")] = (p, measured)
print(f"{'configuration':20s} {'planned':>9s} {'measured':>9s} {'error':>7s} {'state':>9s}")
for label, (p, measured) in configs.items():
    planned = p.memory_plan.peak_bytes
    err = (planned - measured) / measured
    print(
        f"{label:20s} {planned:9,d} {measured:9,d} {100 * err:+6.1f}% {p.resident_train_bytes:9,d}"
    )
    assert abs(err) < 0.10
peaks = {k: m for k, (_, m) in configs.items()}
print(f"reordering alone: full {peaks['full'] / peaks['full + reordered']:.2f}x, "
      f"sparse {peaks['sparse'] / peaks['sparse + reordered']:.2f}x (paper 2.4-3.2x)")  # fmt: skip
print(f"full / sparse + reordered: {peaks['full'] / peaks['sparse + reordered']:.1f}x (paper 21x)")

# %% [markdown]
# Why reordering helps so much for the full update: with the updates at the end, every
# gradient is alive at once just before the first update. Reordered, a gradient lives for
# one step. The live bytes of each schedule, step by step:

# %%
fig, ax = plt.subplots(figsize=(9, 4))
for label, (p, _) in configs.items():
    live = np.array(p.memory_plan.live_bytes) + [s.workspace for s in p.memory_plan.steps]
    ax.plot(np.arange(len(live)) / len(live), live / 1024, label=label)
ax.set(xlabel="position in the schedule (fraction of its steps)", ylabel="planned live KB",
       title="one training step of int8 mcunet_tiny, batch 1")  # fmt: skip
ax.grid(alpha=0.3)
ax.legend()
plt.show()

# %% [markdown]
# ## 6. TinyTrain: choose on the device, from one backward pass
#
# The **Fisher potential** of output channel $o$ of a layer, from its activations $a$ and
# their gradients $g$ over $N$ examples and the $D$ positions of the channel:
#
# $$P_o = \frac{1}{2N} \sum_{n=1}^{N} \Big( \sum_{d=1}^{D} a_{n,o,d}\, g_{n,o,d} \Big)^2,
#   \qquad P_i = \sum_o P_o$$
#
# A layer's score divides its potential by what updating it costs:
# $s_i = P_i / \big( (|W_i| / \max |W|) \cdot (\mathrm{MACs}_i / \max \mathrm{MACs}) \big)$.
# `tinytrain.select` walks the layers by decreasing score and gives each the largest channel
# ratio that fits the budget (chapter 04's accounting), with the channels of highest $P_o$.

# %%
fisher = tinytrain.fisher_potential(qmodel, task.x_train, task.y_train)
scores = tinytrain.layer_scores(fisher, tinytrain.layer_stats(qmodel, (1, 28, 28)))
names = list(scores)
fig, ax = plt.subplots(figsize=(9, 3.5))
ax.bar(range(len(names)), [scores[n] for n in names])
ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
ax.set(yscale="log", ylabel="score $s_i$", title="TinyTrain layer scores, task A")
plt.show()

budget = 64 * 1024
selected = tinytrain.select(qmodel, task.x_train, task.y_train, budget)
print(selected, f"-- selected in {selected.seconds:.1f} s")
print("paper-accounting cost:", memory_cost(qmodel, selected)["total"], "of", budget)

# %% [markdown]
# Train each scheme the same way — the engine, SGD with momentum and QAS, one epoch at
# batch 1 — and compare with updating the classifier alone and with chapter 04's scheme.

# %%
head_only = UpdateScheme(1, {"classifier.0": 1.0})
results = {}
for label, sch in (
    ("classifier only", head_only),
    ("chapter 04 scheme", scheme),
    ("TinyTrain", selected),
):
    model, p = tinytrain.train(qmodel, sch, task.x_train, task.y_train, lr=0.01, seed=SEED)
    acc = float(evaluate(model, x_test, y_test, batch_size=500)[1])
    results[label] = acc
    planned = format_bytes(p.memory_plan.training_bytes)
    print(f"{label:18s} accuracy {acc:.3f}  planned training memory {planned}")
assert results["TinyTrain"] > results["classifier only"] - 0.05

# %% [markdown]
# The full comparison with contribution analysis (chapter 04) on the same budget, over three
# seeds, with the seconds each selection takes, is `tinyodl bench engine --json
# benchmarks/results/engine.json`; its numbers are in the README (chapter 12 results).
# Contribution analysis trains about a hundred candidate schemes; TinyTrain runs one
# backward pass.
#
# ## Take-aways
#
# * A training step is a program that can be compiled: once the graph and what trains are
#   known, the backward graph, what each node must keep and when each buffer dies are all
#   known *before* the first example arrives.
# * Pruning turns a sparse update's savings into real bytes: frozen layers keep nothing and
#   compute no gradient; a partial depthwise update keeps only its channels' input.
# * Reordering changes no arithmetic (the same integers, bit for bit) but lets every
#   gradient die one step after it is born: a large saving when many tensors train.
# * TinyTrain chooses the scheme from one backward pass on the device's own data, a small
#   fraction of the time contribution analysis needs.
#
# **Exercise** `exercises/12_engine.py`: liveness, the planned peak, the reordered schedule,
# the Fisher potential and the layer scores.
