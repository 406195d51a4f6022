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
# # Chapter 02 — Pruning: fewer weights, fewer channels, fewer bytes
#
# A trained network has far more weights than it needs: most can be removed with little loss
# of accuracy, if the network is allowed to adapt (LeCun et al. 1990; Han et al. 2015). On a
# device this buys two different things, and the chapter keeps them apart:
#
# * **unstructured** (magnitude) pruning zeroes individual weights. The model *stores* in
#   fewer bytes (a bitmask or CSR), but a dense kernel still multiplies every zero;
# * **structured** (channel) pruning removes whole filters, so every layer that touches them
#   *shrinks*: fewer parameters, fewer multiply-accumulates, a faster forward pass with the
#   same dense kernels.
#
# Sections: 1. magnitude pruning, layer-wise and global; 2. a per-layer sensitivity scan;
# 3. masks kept through fine-tuning, and gradual pruning (Zhu & Gupta 2018); 4. storing sparse
# weights; 5. channel pruning through batchnorm, flattening and residual blocks; 6. what each
# kind buys, measured. The headline figures come from
# `tinyodl bench pruning --json benchmarks/results/pruning.json` (`benchmarks/README.md`).

# %%
import copy
import os

import matplotlib.pyplot as plt
import numpy as np
from threadpoolctl import threadpool_limits

from tinyodl import models, nn, pruning, schedules
from tinyodl.data import load_mnist, to_float
from tinyodl.memory import format_bytes
from tinyodl.train import evaluate, fit

QUICK = os.environ.get("TINYODL_QUICK") == "1"  # smaller runs under test; same code paths
N_TRAIN = 3000 if QUICK else 12000
EPOCHS = 3 if QUICK else 10
FINETUNE_EPOCHS = 2 if QUICK else 8
LENET_FINETUNE_EPOCHS = 1 if QUICK else 3
SEED = 0
SHAPE = (1, 28, 28)
threadpool_limits(1)

images, labels = load_mnist("train")
test_images, test_labels = load_mnist("test")
idx = np.random.default_rng(SEED).permutation(len(labels))[:N_TRAIN]
x, y = to_float(images[idx]), labels[idx].astype(np.int64)
N_TEST = 1000 if QUICK else 2000
x_test, y_test = to_float(test_images[:N_TEST]), test_labels[:N_TEST].astype(np.int64)


def train(model, xs, ys, epochs, lr, seed=SEED):
    steps = epochs * int(np.ceil(len(xs) / 64))
    opt = nn.SGD(model, lr=lr, momentum=0.9, nesterov=True)
    fit(
        model,
        opt,
        xs,
        ys,
        epochs=epochs,
        batch_size=64,
        seed=seed,
        schedule=schedules.Cosine(lr, steps),
        progress=False,
    )
    return model


def accuracy(model):
    return evaluate(model, x_test, y_test)[1]


dense = train(models.mlp_2nn(seed=SEED), x, y, EPOCHS, 0.05)
dense_acc = accuracy(dense)
print(f"mlp_2nn (784-200-200-10, {dense.num_params():,} parameters): test accuracy {dense_acc:.4f}")

# %% [markdown]
# ## 1. Magnitude pruning
#
# The simplest importance score of a weight is its magnitude `|w|`. Pruning to sparsity `s`
# keeps a **mask** `m` (1 = kept) and computes with `W * m`:
#
# * **layer-wise**: each layer drops the fraction `s` of its own smallest weights;
# * **global**: one threshold for all layers, so layers with many small weights (the big
#   first layer of an MLP) lose more than small, sensitive ones (the classifier).

# %%
w1 = np.abs(dense["features.1"].params["weight"].data).ravel()
threshold = np.sort(w1)[int(0.9 * w1.size)]
fig, ax = plt.subplots(figsize=(7, 3))
ax.hist(w1, bins=100, color="tab:blue")
ax.axvline(threshold, color="red", label=f"90% of |w| below {threshold:.3f}")
ax.set(xlabel="|w| of the first layer", ylabel="count", yscale="log")
ax.legend()

masks_global = pruning.magnitude_masks(dense, 0.9, scope="global")
print("global threshold at 90%: sparsity per layer")
for name, m in masks_global.items():
    print(f"  {name:<20} {m.size:>7,} weights, {1 - m.mean():.1%} pruned")
assert (
    1 - masks_global["features.1.weight"].mean()
    > 0.9
    > 1 - masks_global["classifier.0.weight"].mean()
)

# %%
sparsities = [0.5, 0.7, 0.8, 0.9, 0.95, 0.98]
one_shot = {"layer": [], "global": []}
for s in sparsities:
    for scope in one_shot:
        m = copy.deepcopy(dense)
        pruning.apply_masks(m, pruning.magnitude_masks(m, s, scope))
        one_shot[scope].append(accuracy(m))
fig, ax = plt.subplots(figsize=(7, 3.8))
for scope, accs in one_shot.items():
    ax.plot(
        [100 * s for s in sparsities],
        [100 * a for a in accs],
        "o-",
        label=f"one-shot, {scope} threshold",
    )
ax.axhline(100 * dense_acc, color="black", ls=":", label="dense")
ax.set(xlabel="weights removed (%)", ylabel="test accuracy (%)", title="mlp_2nn, no retraining")
ax.legend()
ax.grid(alpha=0.3)
print({scope: [round(a, 3) for a in accs] for scope, accs in one_shot.items()})
# half the weights go almost for free (within a point once the network is fully trained;
# the quick configuration's briefly trained network is less redundant)
assert one_shot["global"][sparsities.index(0.5)] > dense_acc - (0.03 if QUICK else 0.01)
assert one_shot["global"][-1] < dense_acc - 0.2  # 98% without retraining: broken

# %% [markdown]
# Half the weights go almost for free; beyond about 80% the damage grows fast, and the global
# threshold degrades more gracefully than the layer-wise one, because it spares the small
# classifier layer.
#
# ## 2. Which layers can take it: a sensitivity scan
#
# Pruning one layer at a time, with the others intact, shows how sensitive each layer is
# (Han et al. 2015 use this to choose per-layer sparsities):

# %%
scan_sparsities = [0.5, 0.8, 0.9, 0.95, 0.99]
scan = pruning.sensitivity_scan(dense, accuracy, scan_sparsities, kind="magnitude")
fig, ax = plt.subplots(figsize=(7, 3.8))
for name, accs in scan.items():
    ax.plot([100 * s for s in scan_sparsities], 100 * accs, "o-", label=name)
ax.set(
    xlabel="weights of this layer removed (%)",
    ylabel="test accuracy (%)",
    title="sensitivity scan (one layer at a time, no retraining)",
)
ax.legend()
ax.grid(alpha=0.3)
at_99 = {name: accs[-1] for name, accs in scan.items()}
print({k: round(v, 3) for k, v in at_99.items()})
assert at_99["features.1.weight"] > at_99["classifier.0.weight"]

# %% [markdown]
# The first layer (157k weights) survives even 99% pruning far better than the classifier
# (2k weights): the big layer is the redundant one.
#
# ## 3. Keeping the masks through training, and pruning gradually
#
# After pruning, the network fine-tunes to recover. A plain optimizer would bring the pruned
# weights back: their gradient is not zero, and momentum keeps pushing them. A
# `pruning.MaskedOptimizer` zeroes the gradients of pruned weights before the step (so no
# momentum builds up) and re-applies the masks after it:

# %%
x_small, y_small = x[:512], y[:512]
for wrapped in (False, True):
    m = copy.deepcopy(dense)
    masks = pruning.magnitude_masks(m, 0.9, "global")
    pruning.apply_masks(m, masks)
    opt = nn.SGD(m, lr=0.02, momentum=0.9)
    opt = pruning.MaskedOptimizer(opt, masks) if wrapped else opt
    fit(m, opt, x_small, y_small, epochs=1, batch_size=64, seed=SEED, progress=False)
    label = "MaskedOptimizer" if wrapped else "plain SGD"
    print(f"{label:<16} after fine-tuning: sparsity {pruning.sparsity(m):.3f}")
    assert (pruning.sparsity(m) == 0.9) == wrapped  # plain SGD revives every pruned weight

# %% [markdown]
# Pruning to 90% in one go removes weights the network still needs. Zhu & Gupta (2018)
# raise the sparsity during training with a cubic schedule that prunes fast at first, when
# many weights are redundant, and slowly at the end:
#
# $$s_t = s_f + (s_i - s_f)\left(1 - \frac{t - t_0}{n\,\Delta t}\right)^3$$
#
# `pruning.prune_and_finetune` runs it with `fit`: the masks are recomputed every `dt`
# steps during the first half of the training steps (a pruned weight has magnitude 0, so it
# is the first to go again: masks only lose entries), then training goes on at the final
# sparsity with the masks held.

# %%
steps = FINETUNE_EPOCHS * int(np.ceil(N_TRAIN / 64))
t = np.arange(steps + 1)
fig, ax = plt.subplots(figsize=(7, 3))
ax.plot(
    t, [pruning.gradual_sparsity(s, 0.9, 0, int(0.6 * steps), frequency=steps // 40) for s in t]
)
ax.set(xlabel="training step", ylabel="target sparsity", title="Zhu & Gupta's cubic schedule")
ax.grid(alpha=0.3)

sparse = copy.deepcopy(dense)
opt = nn.SGD(sparse, lr=0.05, momentum=0.9, nesterov=True)
pruner, history = pruning.prune_and_finetune(
    sparse,
    opt,
    x,
    y,
    final_sparsity=0.9,
    epochs=FINETUNE_EPOCHS,
    batch_size=64,
    seed=SEED + 1,
    prune_fraction=0.5,
    schedule=schedules.Cosine(0.05, steps),
)
sparse_acc = accuracy(sparse)
print(f"pruning events: {len(pruner.history)}; final sparsity {pruning.sparsity(sparse):.3f}")
print(
    f"dense {dense_acc:.4f} -> 90% sparse {sparse_acc:.4f} "
    f"({100 * (sparse_acc - dense_acc):+.2f} points); one-shot 90% without fine-tuning: "
    f"{one_shot['global'][sparsities.index(0.9)]:.4f}"
)
assert pruning.sparsity(sparse) == 0.9
assert sparse_acc > one_shot["global"][sparsities.index(0.9)]
assert sparse_acc > dense_acc - (0.05 if QUICK else 0.01)

# %% [markdown]
# Gradual pruning with fine-tuning keeps the 90%-sparse 2NN close to its dense accuracy (the
# full run, `tinyodl bench pruning`, trains longer on all 12,000 images; the summary key
# `mlp_2nn_sparsity_90` of `benchmarks/results/pruning.json` holds both accuracies).
#
# ## 4. Storing a sparse model
#
# Zeros are only saved if they are not stored. Two formats, with `b` bytes per value:
#
# * **bitmask**: one bit per weight saying "kept", then the kept values: `n/8 + nnz b` bytes;
# * **CSR** (compressed sparse rows): the kept values, the column index of each (`i` bytes),
#   and where each row starts: `nnz (b + i) + (rows + 1) p` bytes.
#
# A bitmask beats dense storage once more than `1/(8b)` = 3% of float32 weights are pruned;
# CSR beats the bitmask only below a density of about `1/(8i)` (6% with 2-byte column
# indices).

# %%
rows = pruning.model_storage(sparse)
print(f"{'weight':<22} {'sparsity':>8} {'dense':>10} {'bitmask':>10} {'CSR':>10}")
for r in rows:
    print(
        f"{r['name']:<22} {r['sparsity']:>8.1%} {format_bytes(r['dense']):>10} "
        f"{format_bytes(r['bitmask']):>10} {format_bytes(r['csr']):>10}"
    )
total = rows[-1]
assert total["bitmask"] < total["dense"] / 6 and total["csr"] < total["dense"] / 6
w = sparse["features.1"].params["weight"].data
for fmt in (pruning.to_bitmask(w), pruning.to_csr(w)):
    assert np.array_equal(fmt.to_dense(), w)  # lossless

# %%
rng = np.random.default_rng(SEED)
densities = np.array([0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.7, 0.95])
measured = {"bitmask": [], "CSR": []}
for dens in densities:
    wd = rng.standard_normal((200, 784)).astype(np.float32) * (rng.random((200, 784)) < dens)
    measured["bitmask"].append(pruning.to_bitmask(wd).nbytes)
    measured["CSR"].append(pruning.to_csr(wd).nbytes)
fig, ax = plt.subplots(figsize=(7, 3.8))
for fmt, b in measured.items():
    ax.plot(100 * densities, np.array(b) / 1024, "o-", label=fmt)
ax.axhline(200 * 784 * 4 / 1024, color="black", ls=":", label="dense float32")
ax.set(
    xlabel="weights kept (%)", ylabel="KiB", xscale="log", yscale="log", title="a 200 x 784 layer"
)
ax.legend()
ax.grid(alpha=0.3)
assert measured["CSR"][0] < measured["bitmask"][0]  # 1% kept: CSR wins
assert measured["bitmask"][3] < measured["CSR"][3]  # 10% kept: the bitmask wins

# %% [markdown]
# ## 5. Channel pruning: making layers smaller
#
# Removing output channel `c` of a layer (its filter) means removing everything that
# touches it: the batchnorm after it, a depthwise convolution, and input channel `c` of the
# next convolution -- or, after a `Flatten`, the `H*W` columns of the next linear layer that
# came from channel `c`. `pruning.channel_groups` finds these groups by walking the model;
# inside a residual block the channels on both sides of the addition must stay aligned, so
# only groups inside one block (or outside all blocks) are formed. For MCUNet's inverted
# residual blocks, that is the expanded "hidden" width, where most of the computation is:

# %%
for name in ("lenet5", "mcunet_tiny"):
    print(name)
    for g in pruning.channel_groups(getattr(models, name)(seed=SEED), SHAPE):
        via = f" via {', '.join(g.followers)}" if g.followers else ""
        cols = f" ({g.spatial} columns each)" if g.spatial > 1 else ""
        print(f"  {g.channels:>4} channels of {g.producer}{via} -> {g.consumer}{cols}")

# %% [markdown]
# A strong check that the slicing is right: if the next layer does not *read* some channels
# (its weights for them are zero), removing those channels must not change the output at
# all. On `mcunet_tiny`, through batchnorm, depthwise convolutions and residual additions:

# %%
mcu = models.mcunet_tiny(seed=SEED).eval()
for _, layer in mcu.named_layers():  # non-trivial batchnorm statistics
    if isinstance(layer, nn.BatchNorm2d):
        layer.buffers["running_mean"][...] = rng.normal(0, 0.3, layer.num_features)
        layer.buffers["running_var"][...] = rng.uniform(0.5, 2, layer.num_features)
keep_plan = {}
for g in pruning.channel_groups(mcu, SHAPE):
    drop = rng.choice(g.channels, g.channels // 2, replace=False)
    mcu[g.consumer].params["weight"].data[:, drop] = 0  # the consumer ignores these channels
    keep_plan[g.producer] = np.setdiff1d(np.arange(g.channels), drop)
xb = rng.random((8, *SHAPE)).astype(np.float32)
before = mcu.forward(xb)
small = copy.deepcopy(mcu)
for g in pruning.channel_groups(small, SHAPE):
    pruning.prune_group(small, g, keep_plan[g.producer])
diff = np.abs(small.forward(xb) - before).max()
print(
    f"mcunet_tiny {mcu.num_params():,} -> {small.num_params():,} parameters; "
    f"largest output change {diff:.1e}"
)
assert diff < 1e-4 and small.num_params() < 0.6 * mcu.num_params()

# %% [markdown]
# Now prune half the channels of every group by the L1 norm of their filters (Li et al.
# 2017) and *measure* what it buys: parameters and multiply-accumulates from the shapes, and
# the forward time as a ratio of two timings taken in this process, the two models timed in
# alternation and each keeping its fastest round (`pruning.speedup`; absolute times depend
# on the machine and its load, and the notebook may share the machine with other work).

# %%
x_time = rng.random((32 if QUICK else 256, *SHAPE)).astype(np.float32)
speed = {}
for name in ("lenet5", "mcunet_tiny"):
    net = getattr(models, name)(seed=SEED)
    half = pruning.channel_prune(net, 0.5, SHAPE)
    speed[name], t_dense, t_half = pruning.speedup(net, half, x_time, rounds=2 if QUICK else 7)
    print(
        f"{name:<12} params {net.num_params():>7,} -> {half.num_params():>7,}; MACs "
        f"{pruning.count_macs(net, SHAPE):>9,} -> {pruning.count_macs(half, SHAPE):>9,}; "
        f"forward {1e3 * t_dense:.1f} ms -> {1e3 * t_half:.1f} ms ({speed[name]:.2f}x)"
    )
    assert half.forward(x_time[:2], train=False).shape == (2, 10)
    assert pruning.count_macs(half, SHAPE) < 0.6 * pruning.count_macs(net, SHAPE)

# %% [markdown]
# Halving the channels of every group roughly halves (`mcunet_tiny`: only the hidden widths
# shrink) or quarters (LeNet-5: both sides of a layer shrink) the work, and the forward pass
# gets faster with the very same dense kernels. The speed-up is below the MAC ratio: small
# layers spend part of their time in overheads that do not shrink.
#
# ## 6. Both kinds, at the same fraction of weights removed
#
# Channel pruning removes weights in blocks the network cannot choose, so at the same number
# of weights removed it loses more accuracy than magnitude pruning; in exchange it is
# *actually* faster. Trained LeNet-5, pruned both ways to the same fraction of weights, each
# fine-tuned:

# %%
lenet = train(models.lenet5(seed=SEED), x, y, EPOCHS // 2 + 1, 0.05)
lenet_acc = accuracy(lenet)
compare = []
for frac in [0.5] if QUICK else [0.25, 0.5, 0.75]:
    ch = pruning.channel_prune(lenet, frac, SHAPE)
    removed = 1 - ch.num_params() / lenet.num_params()
    ch_one_shot = accuracy(ch)
    train(ch, x, y, LENET_FINETUNE_EPOCHS, 0.05, SEED + 2)
    mag = copy.deepcopy(lenet)
    steps = LENET_FINETUNE_EPOCHS * int(np.ceil(N_TRAIN / 64))
    pruning.prune_and_finetune(
        mag,
        nn.SGD(mag, lr=0.05, momentum=0.9, nesterov=True),
        x,
        y,
        final_sparsity=removed,
        epochs=LENET_FINETUNE_EPOCHS,
        batch_size=64,
        seed=SEED + 2,
        prune_fraction=0.5,
        schedule=schedules.Cosine(0.05, steps),
    )
    x_bench = x_time[:64]
    t_ratio = pruning.speedup(lenet, ch, x_bench, rounds=2 if QUICK else 5)[0]
    t_mag = pruning.speedup(lenet, mag, x_bench, rounds=2 if QUICK else 5)[0]
    compare.append((removed, ch_one_shot, accuracy(ch), accuracy(mag), t_ratio, t_mag))
print(f"LeNet-5 dense: {lenet_acc:.4f}")
print(
    f"{'removed':>8} {'channel, one-shot':>18} {'channel + ft':>13} {'magnitude + ft':>15} "
    f"{'speed-up ch.':>13} {'speed-up mag.':>14}"
)
for removed, a0, a1, a2, s1, s2 in compare:
    print(f"{removed:>8.1%} {a0:>18.4f} {a1:>13.4f} {a2:>15.4f} {s1:>12.2f}x {s2:>13.2f}x")
assert all(a1 > a0 for _, a0, a1, *_ in compare)  # fine-tuning repairs channel pruning

# %% [markdown]
# The magnitude-pruned LeNet-5 keeps a dense shape, so dense kernels run it at the dense speed
# (a ratio near 1): its sparsity pays off only in storage (section 4) or with sparse kernels
# at very high sparsity. The channel-pruned one is a smaller dense network. On a device, the
# two combine: channel-prune for speed, then magnitude-prune what remains for storage.
#
# **Summary.** Magnitude pruning with a global threshold, masks kept through training and a
# gradual schedule removes 90% of the 2NN's weights within a point of its dense accuracy
# (`tinyodl bench pruning`); the zeros are saved by a bitmask (best down to about 6% density)
# or CSR. Channel pruning shrinks the layers themselves, through batchnorm, flattening and
# residual blocks, and is faster with the same kernels, at a higher accuracy cost per weight
# removed.
