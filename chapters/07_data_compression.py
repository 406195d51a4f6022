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
# # Chapter 07 — Data compression: keeping training data small on the device
#
# A device that learns from what it sees has to keep some of it: to train for more than one
# pass, to replay old classes while learning new ones, to adapt again later. Its storage is
# counted in kilobytes. Given **B bytes**, what training set should it keep?
#
# 1. **Fewer pixels per example**: store each pixel in 8, 4, 2 or 1 bits.
# 2. **Fewer, better examples**: herding and k-center *coresets*, and *loss-based*
#    selection, instead of a random sample.
# 3. **A learned code**: a dictionary of atoms learned once, and each example stored as a
#    sparse code of a few atoms (OMP or ISTA).
#
# Every method is charged for *everything* it stores -- pixels or codes, one byte per label,
# and the dictionary itself -- and compared with random subsampling of 8-bit images at the
# same byte budget, by training the same small CNN on what was kept. The full comparison is
# `tinyodl bench data_compression --json benchmarks/results/data_compression.json`
# (`benchmarks/README.md`); this notebook builds each piece and runs a smaller version.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np
from threadpoolctl import threadpool_limits

from tinyodl import data_compression as dc
from tinyodl import models, nn, schedules
from tinyodl.data import load_mnist, to_float
from tinyodl.memory import format_bytes
from tinyodl.nn import softmax
from tinyodl.train import evaluate, fit

QUICK = os.environ.get("TINYODL_QUICK") == "1"  # smaller runs under test; same code paths
N_POOL = 1500 if QUICK else 12000  # what the device has seen
N_TEST = 500 if QUICK else 2000
SEED = 0
threadpool_limits(1)

images, labels = load_mnist("train")
test_images, test_labels = load_mnist("test")
pick = np.random.default_rng(SEED).permutation(len(labels))[:N_POOL]
pool, y_pool = images[pick], labels[pick].astype(np.int64)
x_test, y_test = to_float(test_images[:N_TEST]), test_labels[:N_TEST].astype(np.int64)
P = 28 * 28
print(f"pool {pool.shape} uint8 = {format_bytes(pool.nbytes)} of pixels; test {x_test.shape}")

# %% [markdown]
# ## 1. Fewer bits per pixel
#
# A pixel in [0, 1] stored with `b` bits keeps one of `2^b` grey levels,
# `q = round(x (2^b - 1))`, and reads back as `q / (2^b - 1)`: the error is at most half a
# level. Packed tightly, 4-bit pixels go two to a byte and 1-bit (binarised) pixels eight to
# a byte, so the same bytes hold 2 or 8 times as many images as 8-bit storage.

# %%
fig, axes = plt.subplots(1, 4, figsize=(7, 2))
for ax, bits in zip(axes, [8, 4, 2, 1], strict=True):
    store = dc.LowBitImages.encode(pool[:5], bits)
    back = store.decode()
    err = np.abs(back - pool[:5] / 255.0).max()
    ax.imshow(back[0], cmap="gray_r")
    ax.set(title=f"{bits} bit: {store.nbytes // 5} B", xticks=[], yticks=[])
    assert store.nbytes == 5 * P * bits // 8
    assert err <= 0.5 / (2**bits - 1) + 1e-6
packed = dc.pack_bits(np.array([0xA, 0x3, 0xF], dtype=np.uint8), 4)
print("three 4-bit values 0xA, 0x3, 0xF packed:", [hex(v) for v in packed])
assert packed.tolist() == [0xA3, 0xF0]

# %% [markdown]
# Even the binarised digit is perfectly readable; the question is whether a network trained
# on crude images does as well on real ones (section 4).
#
# ## 2. Choosing which examples to keep
#
# Selection needs a view of the examples. On a device that view is the model it already
# runs; here a LeNet-5 trained for **one epoch** on the pool (the stream, seen once) gives
# each image an 84-dimensional feature vector (its penultimate layer) and a predicted
# probability vector.

# %%
scorer = models.lenet5(seed=SEED + 100)
fit(
    scorer,
    nn.SGD(scorer, lr=0.05, momentum=0.9),
    to_float(pool),
    y_pool,
    epochs=1,
    batch_size=32,
    seed=SEED,
    progress=False,
)
scorer.eval()
head = list(scorer["classifier"])
h = scorer["features"].forward(to_float(pool))
for layer in head[:-1]:
    h = layer.forward(h)
features, probs = h, softmax(head[-1].forward(h))
print(
    f"features {features.shape}; scorer's accuracy on its own pool "
    f"{np.mean(probs.argmax(1) == y_pool):.3f}"
)

# %% [markdown]
# **Herding** (Welling 2009; iCaRL's exemplars) adds, one at a time, the example that brings
# the mean of the chosen features closest to the mean of all of them:
# `i_k = argmin_i || mu - (s_{k-1} + f_i) / k ||`. The chosen mean then approaches the true
# mean like `1/k`, where a random sample only manages `1/sqrt(k)`:

# %%
sevens = np.flatnonzero(y_pool == 7)
f7, mu = features[sevens], features[sevens].mean(0)
order_h = dc.herding(f7, 40)
order_r = dc.random_selection(len(sevens), 40, seed=SEED)
ks = np.arange(1, 41)
err_h = [np.linalg.norm(f7[order_h[:k]].mean(0) - mu) for k in ks]
err_r = [np.linalg.norm(f7[order_r[:k]].mean(0) - mu) for k in ks]
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.loglog(ks, err_h, label="herding")
ax.loglog(ks, err_r, label="random")
ax.set(xlabel="examples kept (digit 7)", ylabel="|| mean of kept - mean of all ||")
ax.legend()
ax.grid(alpha=0.3)
print(f"after 40: herding {err_h[-1]:.3f}, random {err_r[-1]:.3f}")
assert err_h[-1] < err_r[-1] / 2

# %% [markdown]
# **k-center** (Sener & Savarese 2018) covers the feature space instead: each new example is
# the one farthest from all chosen so far. The *covering radius* (the distance from the
# worst-covered example to the chosen set) it reaches is at most twice the best possible.
# It spreads out -- and so it also collects the odd, atypical examples.
#
# **Loss-based selection** scores each example by how wrong the scorer is about it, the EL2N
# score `|| softmax(f(x)) - onehot(y) ||` (Paul et al. 2021), and keeps the hardest or the
# easiest. Sorscher et al. (2022) predict that with little data, *easy* examples are the
# better choice, and hard ones only pay off at large budgets.

# %%
chosen_kc = dc.k_center_greedy(f7, 40, seed=SEED)
print(
    f"covering radius of 40 sevens: k-center {dc.covering_radius(f7, chosen_kc):.2f}, "
    f"herding {dc.covering_radius(f7, order_h):.2f}, random "
    f"{dc.covering_radius(f7, order_r):.2f}"
)
assert dc.covering_radius(f7, chosen_kc) < dc.covering_radius(f7, order_r)
scores = dc.el2n_scores(probs, y_pool)
fig, axes = plt.subplots(2, 8, figsize=(8, 2.4))
for row, keep in enumerate(["easy", "hard"]):
    for ax, i in zip(axes[row], dc.loss_selection(scores, 8, keep), strict=True):
        ax.imshow(pool[i], cmap="gray_r")
        ax.set(xticks=[], yticks=[])
        ax.set_title(f"{y_pool[i]}", fontsize=8)
    axes[row, 0].set_ylabel(keep, fontsize=9)
fig.suptitle("lowest and highest EL2N scores", fontsize=9)

# %% [markdown]
# The easiest examples are prototypical digits; the hardest are ambiguous, badly written or
# mislabelled ones.
#
# ## 3. A learned dictionary and sparse codes
#
# A dictionary `D` of A atoms (rows, unit norm) is learned from the pool; each example `x` is
# then stored as a code `c` with only `k` non-zeros, `x ~ c D`.
#
# * **Orthogonal matching pursuit** finds `c` greedily: add the atom most correlated with the
#   residual, refit all chosen coefficients by least squares, repeat `k` times.
# * **ISTA** solves the lasso `1/2 ||x - cD||^2 + lam ||c||_1` by gradient steps followed by
#   soft thresholding, `c <- soft(c - (cD - x) D^T / L, lam / L)`; FISTA adds momentum.
#
# `learn_dictionary` alternates OMP codes with the method of optimal directions, the
# least-squares dictionary for fixed codes `D = (C^T C)^{-1} C^T X`.

# %%
X_pool = pool.reshape(len(pool), -1) / 255.0
N_ATOMS, K = (16, 6) if QUICK else (32, 8)
dictionary, errors = dc.learn_dictionary(X_pool, N_ATOMS, K, n_iter=2 if QUICK else 8, seed=SEED)
print("relative reconstruction error per iteration:", np.round(errors, 3))
assert errors[-1] < errors[0]
fig, axes = plt.subplots(2, 8, figsize=(8, 2.2))
for ax, atom in zip(axes.ravel(), dictionary[:16], strict=False):
    ax.imshow(atom.reshape(28, 28), cmap="RdBu_r")
    ax.set(xticks=[], yticks=[])
fig.suptitle("the first learned atoms", fontsize=9)

# %%
held_out = to_float(test_images[:200]).reshape(200, -1)
ks_code = [1, 2, 4, 8, 12] if not QUICK else [1, 2, 4, 6]
omp_err = [
    np.linalg.norm(held_out - dc.omp(held_out, dictionary, k) @ dictionary)
    / np.linalg.norm(held_out)
    for k in ks_code
]
lams = [2.0, 1.0, 0.5, 0.25]
ista_pts = []
for lam in lams:
    codes = dc.ista(held_out, dictionary, lam, n_iter=200)
    ista_pts.append(
        (
            np.count_nonzero(codes, 1).mean(),
            np.linalg.norm(held_out - codes @ dictionary) / np.linalg.norm(held_out),
        )
    )
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(ks_code, omp_err, "o-", label="OMP (k atoms)")
ax.plot(*zip(*ista_pts, strict=True), "s--", label="FISTA (lasso, decreasing lam)")
ax.set(xlabel="non-zeros per example", ylabel="relative error on test digits")
ax.legend()
ax.grid(alpha=0.3)
assert all(a > b for a, b in zip(omp_err, omp_err[1:], strict=False))

store = dc.SparseCodeStore.encode(X_pool[:100], dictionary, K)
print(
    f"k = {K}: {store.code_bytes // 100} bytes per example (indices, int8 values, scale) "
    f"+ {format_bytes(store.dictionary_bytes)} of int8 dictionary, vs {P} bytes of pixels"
)
fig, axes = plt.subplots(2, 6, figsize=(7, 2.5))
for j in range(6):
    axes[0, j].imshow(X_pool[j].reshape(28, 28), cmap="gray_r")
    axes[1, j].imshow(store.decode()[j].reshape(28, 28), cmap="gray_r")
    for ax in axes[:, j]:
        ax.set(xticks=[], yticks=[])
axes[0, 0].set_ylabel("pixels", fontsize=8)
axes[1, 0].set_ylabel(f"{K} atoms", fontsize=8)

# %% [markdown]
# OMP reaches a given error with fewer non-zeros than the lasso (which shrinks the
# coefficients it keeps). The reconstructions are blurry but keep the digit's shape; each
# costs about 1/40 of the pixels, once the dictionary is paid for.
#
# ## 4. Test accuracy against bytes of stored training data
#
# `dc.keep_within_budget(method, B, ...)` returns what a method keeps in B bytes, decoded as
# the device would read it back. A fresh LeNet-5 is trained on each with the same recipe
# (SGD, Nesterov momentum, cosine schedule, a fixed minimum number of steps so that tiny sets
# are trained as long as large ones) and tested on real test images.

# %%
BUDGETS = [16 * 1024, 64 * 1024] if QUICK else [16 * 1024, 64 * 1024, 256 * 1024]
MIN_STEPS = 40 if QUICK else 400


def train_and_test(kept):
    steps = max(MIN_STEPS, int(np.ceil(4 * len(kept.y) / 32)))
    model = models.lenet5(seed=SEED)
    fit(
        model,
        nn.SGD(model, lr=0.05, momentum=0.9, nesterov=True),
        kept.x,
        kept.y,
        epochs=int(np.ceil(steps / np.ceil(len(kept.y) / 32))),
        batch_size=32,
        seed=SEED,
        max_steps=steps,
        schedule=schedules.Cosine(0.05, steps),
        progress=False,
    )
    return evaluate(model, x_test, y_test)[1]


results = {}
for budget in BUDGETS:
    for method in dc.METHODS:
        kept = dc.keep_within_budget(
            method,
            budget,
            pool,
            y_pool,
            features=features,
            scores=scores,
            dictionary=dictionary,
            n_nonzero=K,
            seed=SEED,
        )
        if kept is None:
            continue
        assert kept.nbytes <= budget
        results[(method, budget)] = (train_and_test(kept), len(kept.y))
print(f"{'method':<12}" + "".join(f"{b // 1024:>10} KiB" for b in BUDGETS))
for method in dc.METHODS:
    cells = [results.get((method, b)) for b in BUDGETS]
    print(
        f"{method:<12}"
        + "".join(f"{100 * c[0]:>7.1f}% ({c[1]:>4})" if c else f"{'-':>14}" for c in cells)
    )

# %%
fig, ax = plt.subplots(figsize=(7, 4.5))
for method in dc.METHODS:
    pts = [(b / 1024, 100 * results[(method, b)][0]) for b in BUDGETS if (method, b) in results]
    ax.plot(*zip(*pts, strict=True), "k--" if method == "random" else "o-", label=method)
ax.set(
    xscale="log",
    xlabel="bytes of stored training data (KiB)",
    ylabel="test accuracy (%)",
    title="LeNet-5 trained on what fits in the budget",
)
ax.legend(fontsize="small")
ax.grid(alpha=0.3)
for budget in BUDGETS:
    best = max(
        (m for m in dc.METHODS if (m, budget) in results), key=lambda m: results[(m, budget)][0]
    )
    print(
        f"{budget // 1024} KiB: best {best}, {100 * results[(best, budget)][0]:.1f}% vs "
        f"random 8-bit {100 * results[('random', budget)][0]:.1f}%"
    )
small = BUDGETS[0]
# at the smallest budget, eight times as many binarised images beat the 8-bit ones
assert results[("random-1bit", small)][0] > results[("random", small)][0]
assert results[("el2n-easy", small)][0] > results[("el2n-hard", small)][0]

# %% [markdown]
# What the full run says (`tinyodl bench data_compression --json
# benchmarks/results/data_compression.json`: the 12,000 shipped training images, budgets of
# 16 KiB to 1 MiB, one seed; its `summary.winner_by_budget` names the best method per
# budget; this notebook's smaller run agrees on the large effects, while differences of a
# point or two between runs are the noise of a single seed):
#
# * **Quantity beats fidelity.** Binarised images win at every budget but one: at 16 KiB,
#   165 one-bit digits give 82.8% where 20 eight-bit ones give 52.6%; even at 1 MiB, 10,591
#   binarised digits (97.8%) beat 1,335 grey ones (95.8%). The CNN needs many writers far
#   more than it needs grey levels; 4-bit storage sits in between.
# * **The dictionary has a fixed cost and a ceiling.** Its 25 KiB of int8 atoms do not fit in
#   16 KiB; at 64 KiB it keeps 2,125 sparse-coded digits and is the best method (93.9%, just
#   ahead of 1-bit's 93.2%); from 256 KiB on the whole pool fits, and the blur of 8-atom
#   codes caps it at 95.5%.
# * **Among the selection rules, which kind of example helps depends on the budget.**
#   Herding, which keeps typical examples spread like the whole class, beats random when
#   few fit (57% vs 53% at 16 KiB, 84% vs 77% at 64 KiB) and falls behind at 1 MiB (93.7% vs
#   95.8%), where its picks become redundant. k-center and EL2N-hard, which collect the
#   atypical and the ambiguous, are far worse than random when little fits and catch up
#   (96.5% and 96.0% against 95.8%) only at 1 MiB. EL2N-easy beats EL2N-hard at small budgets
#   and loses to it at large ones -- the crossover Sorscher et al. describe -- but the
#   easiest examples are too alike to beat a random sample at any budget here. Selection
#   moves accuracy by a few points; compression multiplies the number of examples.
#
# So a device with a few tens of kilobytes should store many crude examples (binarised, or
# sparse codes once the dictionary fits) rather than a few exact ones, and if it must choose
# which ones, choose typical ones when few fit and unusual ones only when many do.
