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
# # Chapter 08 — Transfer learning on the device: what to update, and what it costs
#
# A pretrained model meets new data on the device (`tinyodl.tasks`: new classes in task A,
# a new writer in task B). Which of its parameters should it update? The answer decides the
# accuracy -- and, on a device, first of all the **memory** of a training step. TinyTL (Cai
# et al., NeurIPS 2020) noticed where that memory goes:
#
# for a layer `a = x W + b`, `dL/dW = x^T dL/da` needs the input `x`, kept from forward to
# backward, while `dL/db = dL/da` does not; a ReLU needs only a 1-bit mask.
#
# 1. The calculus, seen in what tinyodl's layers keep for backward.
# 2. Five ways to adapt (`tinyodl.transfer.METHODS`): feature extraction, fine-tuning the last
#    k stages, full fine-tuning, TinyTL's bias-only update, TinyTL's lite residual branches.
# 3. Their trainable parameters and their training memory at batch 1 and 8, **measured**
#    (tracemalloc) and **predicted** (`tinyodl.memory`).
# 4. Their accuracy on tasks A and B (`tinyodl bench transfer` for the full table).

# %%
import copy
import json
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from threadpoolctl import threadpool_limits

import tinyodl
from tinyodl import models, nn, tasks, transfer
from tinyodl.bench.transfer import adapt, prepared
from tinyodl.memory import format_bytes

QUICK = os.environ.get("TINYODL_QUICK") == "1"  # smaller runs under test; same code paths
EPOCHS = {"A": 1, "B": 2} if QUICK else {"A": 10, "B": 25}
N_TEST = 300 if QUICK else None  # all test images of the task unless quick
threadpool_limits(1)
start = time.perf_counter()

# %% [markdown]
# ## 1. What a layer keeps for backward
#
# A convolution whose weight trains keeps its input; frozen, it keeps nothing -- it still
# passes the gradient on to the layers below (`dL/dx` needs only `W`). A ReLU6 keeps a
# boolean mask; a batchnorm in evaluation mode keeps a per-channel vector (and the normalised
# input only if its gamma trains).

# %%
x = np.random.default_rng(0).uniform(0, 1, (8, 16, 14, 14)).astype(np.float32)
for trainable in (True, False):
    conv = nn.Conv2d(16, 64, 1, bias=False)
    conv.params["weight"].trainable = trainable
    conv.forward(x)
    kept = sum(a.nbytes for a in conv.saved.values())
    print(f"conv weight trainable={trainable}: keeps {format_bytes(kept)} for backward")
    if not trainable:
        assert kept == 0
relu = nn.ReLU6()
relu.forward(x)
mask_bytes = relu.saved["mask"].nbytes
print(f"ReLU6 keeps {format_bytes(mask_bytes)} (1 byte per value; x is {format_bytes(x.nbytes)})")
assert relu.saved["mask"].nbytes * 4 == x.nbytes

# %% [markdown]
# ## 2. Five ways to adapt
#
# `transfer.prepare(model, method)` sets what trains (in place). Batchnorm keeps its cloud
# statistics in every method (a device batch is too small to estimate them); its gamma and
# beta are ordinary parameters. Task A's classes are new, so its head is replaced by a fresh
# one; task B keeps the pretrained head.
#
# TinyTL's **lite residual** branch sits beside each inverted residual block: a 2x2 average
# pool, a 5x5 group convolution (2 groups), a 1x1 convolution and bilinear upsampling back to
# the block's output size. It learns a correction at a quarter of the block's resolution.
# Its last batchnorm's gamma starts at 0, so at first the model computes exactly what it did:

# %%
task_a = tasks.load_task("A", per_class=20 if QUICK else None)  # 100 per class by default
task_b = tasks.load_task("B")
base = task_b.pretrained()
lite = transfer.prepare(copy.deepcopy(base), "tinytl_lite_residual")
probe = task_b.x_test[:64]
same = np.array_equal(lite.forward(probe, train=False), base.forward(probe))
print("lite residual model unchanged at the start:", same)
assert same
branch = dict(lite.named_layers())["features.3.shortcut"]
print(branch)

# %% [markdown]
# ## 3. Trainable parameters and training memory
#
# For each method, one real training step at batch 1 and at batch 8, measured with
# tracemalloc (after a warm-up step, so gradients and momentum already exist), next to the
# analytic model of `tinyodl.memory`, which replays the same step layer by layer from shapes.

# %%
rows = []
for method in transfer.METHODS:
    model = prepared(task_a, method, k=2)
    row = {"method": method, "trainable": transfer.trainable_parameters(model)}
    for n in (1, 8):
        mem = transfer.training_memory(
            model, task_a.x_train[:n], task_a.y_train[:n], lambda m: nn.SGD(m, 0.01, 0.9)
        )
        row[n] = mem
        assert abs(mem["analytic"] - mem["measured"]) <= 0.1 * mem["measured"]
    rows.append(row)
header = f"{'method':<22}{'trainable':>10}{'kept b8':>11}"
for n in (1, 8):
    header += f"{f'b{n} measured':>14}{f'b{n} analytic':>14}"
print(header)
for row in rows:
    line = f"{row['method']:<22}{row['trainable']:>10,}{format_bytes(row[8]['saved_bytes']):>11}"
    for n in (1, 8):
        line += f"{format_bytes(row[n]['measured']):>14}{format_bytes(row[n]['analytic']):>14}"
    print(line)
by = {r["method"]: r for r in rows}
assert by["tinytl_bias"][8]["saved_bytes"] * 8 < by["finetune_full"][8]["saved_bytes"]
assert by["feature_extraction"][8]["measured"] < by["finetune_full"][8]["measured"]

# %%
fig, ax = plt.subplots(figsize=(8, 3))
labels = [r["method"] for r in rows]
pos = np.arange(len(rows))
for i, n in enumerate((1, 8)):
    ax.bar(pos + 0.4 * i - 0.2, [r[n]["measured"] / 2**20 for r in rows], 0.4, label=f"batch {n}")
    analytic = [r[n]["analytic"] / 2**20 for r in rows]
    label = "analytic" if i else None
    ax.scatter(pos + 0.4 * i - 0.2, analytic, color="k", marker="_", s=200, label=label)
ax.set_xticks(pos, labels, rotation=15, fontsize=8)
ax.set_ylabel("peak training memory (MiB)")
ax.legend()
plt.show()

# %% [markdown]
# On this small model the *parameters* (400 KB in float32) and their gradients and momentum
# weigh as much as the activations; on MCUNet at 224x224 (TinyTL's Table 2) the activations
# dominate by far, which is why the paper's savings are larger. The lite residual branches
# add trainable parameters (their gradients and momentum cost memory) but keep only small,
# quarter-resolution maps.
#
# ## 4. Accuracy
#
# Each method adapts with SGD (momentum 0.9, batch 8, cosine decay); here all at one
# learning rate, in the benchmark each at the rate chosen on a validation split.


# %%
def test_accuracy(model, task):
    """Accuracy on the task's test images (the first N_TEST of them when quick)."""
    x_test, y_test = task.x_test[:N_TEST], task.y_test[:N_TEST]
    return float(np.mean(model.forward(x_test, train=False).argmax(1) == y_test))


accuracy = {}
for task in (task_a, task_b):
    for method in transfer.METHODS:
        model = prepared(task, method, k=2)
        adapt(model, task.x_train, task.y_train, 0.01, EPOCHS[task.name], seed=0)
        accuracy[task.name, method] = test_accuracy(model, task)
        print(f"task {task.name} {method:<22} {100 * accuracy[task.name, method]:6.2f}%")
before = test_accuracy(task_b.pretrained(), task_b)
print(f"task B before adaptation: {100 * before:.2f}%")
assert accuracy["B", "finetune_full"] > before

# %% [markdown]
# ## 5. The table
#
# `tinyodl bench transfer` runs every method on both tasks with three seeds. Its committed
# result, when the repository is at hand:

# %%
results_file = Path(tinyodl.__file__).resolve().parents[1] / "benchmarks/results/transfer.json"
if results_file.exists():
    doc = json.loads(results_file.read_text())
    print("command:", doc["command"])
    s = doc["summary"]
    for method in transfer.METHODS:
        mem = s["tasks"]["A"]["memory"][method]
        line = f"{method:<22} {s['trainable_params'][method]:>8,}"
        for n in ("1", "8"):
            line += f"  b{n} {format_bytes(mem[n]['measured']):>9}"
        for t in sorted(s["accuracy"]):
            mean, std = s["accuracy"][t][method], s["accuracy_std"][t][method]
            line += f"  task {t} {100 * mean:6.2f} ± {100 * std:.2f}"
        print(line)
else:
    print("benchmarks/results/transfer.json not found (installed package without the repository)")
print(f"notebook ran in {time.perf_counter() - start:.0f} s")
