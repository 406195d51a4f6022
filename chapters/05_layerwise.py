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
# # Chapter 05 — Layer-wise training: one block at a time
#
# End-to-end backpropagation is what makes training expensive in memory: the backward pass
# needs what *every* layer saved in the forward pass, so all of it is alive at once
# (chapter 00). What if no backward pass ever went through more than one block?
#
# **Greedy layer-wise training** (Belilovsky, Eickenberg and Oyallon, "Greedy Layerwise
# Learning Can Scale to ImageNet", ICML 2019) trains a network block by block. Block `j`
# gets a small **auxiliary head** — average pooling to a 2x2 map and a linear classifier —
# and is trained, with its head, to classify the output of the blocks before it, which are
# **frozen**:
#
# $$\min_{W_j, V_j} \; \mathcal{L}\big(A_j(B_j(x_j; W_j); V_j),\, y\big), \qquad
#   x_j = B_{j-1}(\dots B_1(x)) \text{ (frozen: forward only)}$$
#
# Then block `j` is frozen and block `j + 1` starts. The head of the last block is the
# network's classifier. Only block `j`'s activations are alive during its backward pass; the
# frozen blocks run as *inference*, keeping nothing once their output exists.
#
# This chapter measures what that buys and what it costs:
#
# 1. **The network as blocks**, each with its auxiliary head.
# 2. **Memory first**: one training step end to end against one step of each stage,
#    measured with tracemalloc beside the analytic model of `tinyodl.memory`.
# 3. **Accuracy**: end-to-end against greedy layer-wise training on MNIST.
# 4. **The forward-only extreme**: train only a head on frozen random or pretrained features.
# 5. **The trade-off** in one figure.
#
# Under test the notebook runs a smaller configuration (`TINYODL_QUICK=1`) through the same
# code; the full numbers come from `tinyodl bench layerwise` (see the end).

# %%
import os

import matplotlib.pyplot as plt
import numpy as np
from threadpoolctl import threadpool_limits

from tinyodl import backend, nn
from tinyodl import layerwise as L
from tinyodl.data import load_mnist, to_float, train_val_split
from tinyodl.memory import (
    analytic_training_memory,
    compare,
    format_bytes,
    measure_training_step,
)
from tinyodl.train import evaluate

QUICK = os.environ.get("TINYODL_QUICK") == "1"  # smaller runs under test; same code paths
EPOCHS = 1 if QUICK else 4  # per stage for layer-wise training
N_TRAIN = 1500 if QUICK else None  # None: all 12,000 shipped training images
BATCH, LR, SEED = 64, 0.1, 0

backend.available_backends()  # load the compiled kernels before limiting BLAS threads
threadpool_limits(1)
images, labels = load_mnist("train")
test_images, test_labels = load_mnist("test")
x_all, y_all = to_float(images), labels.astype(np.int64)
if N_TRAIN:
    keep = np.sort(np.random.default_rng(SEED).permutation(len(x_all))[:N_TRAIN])
    x_all, y_all = x_all[keep], y_all[keep]
x_train, y_train, x_val, y_val = train_val_split(x_all, y_all, 0.1, np.random.default_rng(SEED))
x_test, y_test = to_float(test_images), test_labels.astype(np.int64)
if QUICK:
    x_test, y_test = x_test[:500], y_test[:500]
SHAPE = x_train.shape[1:]
print(f"train {len(x_train)}, validation {len(x_val)}, test {len(x_test)}; quick: {QUICK}")

# %% [markdown]
# ## 1. The network as blocks
#
# The body is four **equal** blocks, each conv 3x3 + batchnorm + ReLU; the first has stride
# 2, so every block outputs 32 x 14 x 14. Equal blocks make the point cleanly: each keeps the
# same activations for its backward pass. Each block gets an auxiliary head sized from its
# output. End to end, the same blocks and the last head form an ordinary CNN.

# %%
blocks = L.conv_blocks(seed=SEED)
heads = L.heads_for(blocks, SHAPE, seed=SEED + 1)
shape = (1, *SHAPE)
for j, (block, head) in enumerate(zip(blocks, heads, strict=True)):
    shape = block.output_shape(shape)
    print(
        f"block {j + 1}: {[type(layer).__name__ for layer in block]} -> {shape[1:]}, "
        f"{block.num_params():,} parameters; head: {[type(h).__name__ for h in head]}, "
        f"{head.num_params():,} parameters"
    )
e2e = L.end_to_end_model(blocks, heads[-1])
print(f"end-to-end model: {e2e.num_params():,} parameters")

# %% [markdown]
# ## 2. Memory first
#
# Training memory does not depend on the weights' values, so we can measure it before
# training anything. `measure_training_step` runs one real SGD + momentum step under
# tracemalloc (after a warm-up step, so gradients and momentum already exist, as in every
# step of training) and splits it into categories; `analytic_training_memory` predicts the
# same from shapes alone.
#
# At stage `j` the trained model is `L.stage_model(blocks, heads, j)`: the frozen blocks
# `1..j-1` wrapped in `L.Frozen` (inference: evaluation mode, each block's saved tensors
# dropped as soon as it has run, no gradient below), then block `j` and its head.
# `tinyodl.memory` has no rule for `Frozen`, so `L.analytic_stage_memory` combines its
# predictions: the frozen blocks' inference peak, and the training step of block `j` + head
# on the frozen blocks' output.


# %%
def measure(model, x, y):
    opt = nn.SGD(model, lr=0.0, momentum=0.9)  # lr 0: measure without changing the model
    measure_training_step(model, opt, x, y)  # warm-up
    return measure_training_step(model, opt, x, y), opt


xb, yb = x_train[:BATCH], y_train[:BATCH]
e2e_report, e2e_opt = measure(e2e, xb, yb)
e2e_predicted = analytic_training_memory(e2e, SHAPE, BATCH, e2e_opt)
rows = [("end to end", e2e_report, e2e_predicted.total_peak_bytes)]
for j in range(len(blocks)):
    stage = L.stage_model(blocks, heads, j)
    report, opt = measure(stage, xb, yb)
    rows.append(
        (f"stage {j + 1}", report, L.analytic_stage_memory(blocks, heads, j, SHAPE, BATCH, opt))
    )
for b in blocks:  # stage_model froze the prefix; training starts from unfrozen blocks
    b.unfreeze()

print(f"batch {BATCH}: {'':<11}{'measured':>10}{'analytic':>10}{'error':>8}{'saved for bwd':>15}")
for name, report, predicted in rows:
    total = getattr(predicted, "total_peak_bytes", predicted)
    err = (total - report.total_peak_bytes) / report.total_peak_bytes
    print(
        f"{name:<18}{format_bytes(report.total_peak_bytes):>13}{format_bytes(total):>10}"
        f"{err:>8.1%}{format_bytes(report.saved_new_bytes):>15}"
    )
errors = compare(e2e_predicted, e2e_report)
stage_peak = max(r.total_peak_bytes for _, r, _ in rows[1:])
stage_saved = max(r.saved_new_bytes for _, r, _ in rows[1:])
assert abs(errors["total_peak"]) < 0.05
assert all(
    abs(p.total_peak_bytes - r.total_peak_bytes) / r.total_peak_bytes < 0.05 for _, r, p in rows[1:]
)
assert stage_saved < 0.35 * e2e_report.saved_new_bytes  # one block instead of four
assert stage_peak < 0.7 * e2e_report.total_peak_bytes
print(
    f"end to end needs {e2e_report.total_peak_bytes / stage_peak:.2f}x the peak of the "
    f"largest stage and {e2e_report.saved_new_bytes / stage_saved:.2f}x its saved activations"
)

# %% [markdown]
# The saved activations — what the backward pass needs — drop to about a quarter: one block
# of four (plus a small head). The *peak* drops less, because a training step needs more than
# its saved activations, and layer-wise training removes none of that: the gradient flowing
# back and the temporaries of each layer's backward pass, kernel scratch and, from stage 2
# on, the inference of the frozen blocks. The analytic model says where each stage peaks and
# what is alive then:

# %%
for name, _, predicted in rows[1:]:
    at_peak = predicted.training.at_peak
    print(
        f"{name}: peaks in the {predicted.training.peak_phase} pass with "
        f"{format_bytes(at_peak.get('activations', 0))} of saved activations and "
        f"{format_bytes(at_peak.get('scratch', 0))} of temporaries alive; frozen-prefix "
        f"inference peak {format_bytes(predicted.inference_peak_bytes)}"
    )
    assert at_peak.get("scratch", 0) > at_peak.get("activations", 0)
fig, ax = plt.subplots(figsize=(8, 4))
names = [name for name, _, _ in rows]
parts = {
    "saved activations": [r.saved_new_bytes for _, r, _ in rows],
    "parameters, gradients, momentum": [
        r.parameters + r.gradients + r.optimizer_state + r.buffers for _, r, _ in rows
    ],
}
parts["everything else (scratch, gradients in flight, inference)"] = [
    r.total_peak_bytes - sum(p[i] for p in parts.values()) for i, (_, r, _) in enumerate(rows)
]
bottom = np.zeros(len(rows))
for label, values in parts.items():
    ax.bar(names, np.array(values) / 2**20, bottom=bottom, label=label)
    bottom += np.array(values) / 2**20
ax.set(ylabel="MiB (measured)", title=f"one training step, batch {BATCH}")
ax.legend(fontsize="small")

# %% [markdown]
# Once only one block trains, the working memory of its backward pass — for a batchnorm
# layer several input-sized temporaries (`dout * x_hat`, `m * dout - sum(dout)`, ...) — is
# larger than the activations it keeps. Layer-wise training shrinks the part that grows with
# depth; the part that grows with the batch and the width of one layer remains. (Smaller
# batches, or the compute-for-memory trades of chapter 06, attack that part.)
#
# ## 3. Accuracy: end to end against greedy layer-wise
#
# Both train with SGD + momentum 0.9, weight decay 5e-4, a cosine learning-rate schedule from
# 0.1 and batches of 64. End to end trains for `EPOCHS` epochs; layer-wise trains each block
# (with its head) for `EPOCHS` epochs.

# %%
e2e_history = L.sgd_fit(e2e, x_train, y_train, epochs=EPOCHS, batch_size=BATCH, seed=SEED, lr=LR)
e2e_acc = evaluate(e2e.eval(), x_test, y_test)[1]
print(f"end to end: test accuracy {e2e_acc:.4f}")

# %%
lw_blocks = L.conv_blocks(seed=SEED)
lw_heads = L.heads_for(lw_blocks, SHAPE, seed=SEED + 1)
result = L.greedy_layerwise_fit(
    lw_blocks, lw_heads, x_train, y_train, epochs=EPOCHS, batch_size=BATCH, seed=SEED,
    lr=LR, x_val=x_val, y_val=y_val,
)  # fmt: skip
stage_test = []
for j, stage in enumerate(result.stages):
    model = L.stage_model(lw_blocks, lw_heads, j).eval()
    stage_test.append(evaluate(model, x_test, y_test)[1])
    print(
        f"stage {j + 1}: validation {stage.val_accuracy:.4f}, test {stage_test[-1]:.4f} "
        f"({stage.trainable_params:,} parameters trained, {stage.seconds:.1f} s)"
    )
lw_acc = evaluate(result.model, x_test, y_test)[1]
assert lw_acc == stage_test[-1]  # the assembled model is the last stage
assert stage_test[-1] > stage_test[0]  # later blocks build on earlier ones
assert lw_acc > 0.5  # far above chance (10%) even in the quick configuration
print(f"layer-wise: test accuracy {lw_acc:.4f} (end to end {e2e_acc:.4f})")

# %% [markdown]
# Later stages improve on earlier ones: block `j + 1` learns features from block `j`'s
# output that a linear head classifies better (91.10, 96.00, 97.40 and 98.10% after blocks
# 1-4 in the full run, against 98.30% end to end). The first block alone, with a linear head on
# its 2x2-pooled output, is a weak classifier — Belilovsky et al. found the same for shallow
# auxiliary problems and used small convolutional auxiliary networks for the early blocks.
# The price of greed: block `j` never adapts to what the blocks above it need, which is why
# end-to-end training usually stays ahead for the same number of epochs.
#
# ## 4. The forward-only extreme: train only a head
#
# At the far end of the memory scale, nothing but a head trains: the body is frozen and runs
# as inference. That is as cheap as training gets — and only as good as the frozen features.
# Two bodies:
#
# * **random**: the same four blocks, never trained. Their batchnorm statistics are set from
#   2,000 images by forward passes alone (`L.recalibrate_batchnorm`: no gradient anywhere);
# * **pretrained** on other classes: `L.pretrained_body` uses the `mcunet_tiny` that tinyodl
#   ships pretrained on digits 0-4 (`tinyodl.tasks.pretrained("A")`) when it is installed;
#   otherwise it pretrains the four blocks here, end to end, on the training images of
#   digits 0-4 only. The printed line says which. Either way the body never saw a label of
#   the digits 5-9 it must now also classify.

# %%
random_body = L.end_to_end_model(L.conv_blocks(seed=SEED + 7), heads[-1])["features"]
L.recalibrate_batchnorm(random_body, x_train[:2000])
pre_body, pre_source = L.pretrained_body(
    x_train, y_train, epochs=EPOCHS, batch_size=BATCH, seed=SEED, lr=LR
)
print("pretrained features:", pre_source)
forward_only = {}
for name, body in [("random features", random_body), ("pretrained features", pre_body)]:
    head = L.auxiliary_head(body.output_shape((1, *SHAPE))[1:], seed=SEED + 3)
    probe = nn.Sequential({"frozen": L.Frozen(body), "head": head})
    report, _ = measure(probe, xb, yb)
    model, _ = L.head_only_fit(
        body, head, x_train, y_train, epochs=EPOCHS, batch_size=BATCH, seed=SEED, lr=LR
    )
    acc = evaluate(model, x_test, y_test)[1]
    forward_only[name] = (acc, report.total_peak_bytes, report.saved_new_bytes)
    print(
        f"head on {name}: test accuracy {acc:.4f}; one step peaks at "
        f"{format_bytes(report.total_peak_bytes)}, saves {format_bytes(report.saved_new_bytes)}"
    )
assert forward_only["pretrained features"][0] > forward_only["random features"][0] > 0.1
assert all(saved < stage_saved for _, _, saved in forward_only.values())
# The random body is the same four blocks as the layer-wise stages; the shipped pretrained
# body, when used, is mcunet_tiny, a different (wider) network with its own inference peak.
assert forward_only["random features"][1] < 1.05 * stage_peak

# %% [markdown]
# A head on random features learns something (above chance; 88% in the full run of
# `tinyodl bench layerwise`), but pretrained features — even from other digits — are better
# (96.05% there): that is transfer learning (chapter 08). Training only a head keeps the
# least for its backward pass (the head's input), yet its peak is close to a layer-wise
# stage's: the inference of the frozen body, one block at a time, now sets the peak. (The
# shipped pretrained body is `mcunet_tiny`, whose expanded inverted-residual activations
# are larger than the four blocks': its inference peak is higher, its saved bytes as small.)
#
# ## 5. The trade-off

# %%
fig, ax = plt.subplots(figsize=(7, 4.5))
ax.scatter(e2e_report.total_peak_bytes / 2**20, 100 * e2e_acc, s=70, label="end to end")
for j, (_, report, _) in enumerate(rows[1:]):
    ax.scatter(
        report.total_peak_bytes / 2**20, 100 * stage_test[j], marker="s", color="C1", s=60,
        label="layer-wise, after each stage" if j == 0 else None,
    )  # fmt: skip
    ax.annotate(f"block {j + 1}", (report.total_peak_bytes / 2**20, 100 * stage_test[j]),
                textcoords="offset points", xytext=(6, -4))  # fmt: skip
for (name, (acc, peak, _)), color in zip(forward_only.items(), ["C7", "C2"], strict=True):
    ax.scatter(peak / 2**20, 100 * acc, color=color, s=70, label=f"head only, {name}")
ax.set(
    xlabel="peak memory of one training step (MiB, measured)",
    ylabel="test accuracy (%)",
    title=f"MNIST, batch {BATCH}: accuracy against training memory",
)
ax.grid(alpha=0.3)
ax.legend(fontsize="small", loc="lower right")
print(
    f"end to end {e2e_acc:.4f} at {format_bytes(e2e_report.total_peak_bytes)}; layer-wise "
    f"{lw_acc:.4f} at {format_bytes(stage_peak)}"
)

# %% [markdown]
# The full-size run of this figure — all 10,800 training images, four epochs per stage — is
# `tinyodl bench layerwise --json benchmarks/results/layerwise.json --plot
# benchmarks/results/layerwise.png`; its numbers are in the README (chapter 05 results).
#
# ## Take-aways
#
# * Greedy layer-wise training back-propagates through one block at a time: the activations
#   kept for the backward pass shrink to one block's (measured: about a quarter here), and
#   the peak of a training step becomes that of the largest *stage*.
# * What remains is the working memory a step needs anyway — gradients in flight, kernel
#   scratch — and the inference of the frozen blocks, which the analytic model separates.
# * Greed costs accuracy: each block is trained for its own auxiliary problem, never for the
#   blocks above it. Training only a head is the cheapest of all and only as good as the
#   frozen features; pretrained features beat random ones by far.
# * Layer-wise training changes *what* is trained; checkpointing (chapter 06) keeps
#   end-to-end training and trades compute for memory instead.
#
# **Exercise** `exercises/05_layerwise.py`: a frozen prefix, auxiliary heads, a stage's
# training step and the memory count of one block at a time.
