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
# # Chapter 01 — Classic on-device learners: learning from a stream in constant memory
#
# Chapter 00 showed that training a network needs memory for gradients, optimizer state and
# activations, all at once. Long before deep networks ran on phones, devices learned with
# models whose *whole state* is a handful of statistics or one weight matrix, updated as each
# example arrives and then thrown away. They are still the first thing to try on a
# microcontroller, and the baseline every on-device deep-learning method must beat.
#
# This chapter builds five of them in `tinyodl.classic`, each with a streaming `partial_fit`:
#
# 1. **Online logistic regression**: one SGD step per example on the softmax log loss.
# 2. **A linear SVM** trained by **Pegasos**: subgradient steps on the hinge loss.
# 3. **Incremental naive Bayes** (Gaussian and multinomial): learning is counting.
# 4. **Nearest class mean** on the features of a frozen network.
# 5. Their **cost**: model bytes, update time, and *measured* update memory, against a small
#    CNN trained by SGD on the same stream.
# 6. **Concept drift**: the writer changes half-way through the stream.
# 7. **Drift → trigger → adapt**: detectors notice the change (`tinyodl.lifecycle`), a
#    trigger policy decides when the device has enough new labelled data to adapt.
#
# The estimators follow scikit-learn's conventions, and the tests hold them to scikit-learn
# (`tests/test_classic.py`: the same weights as `SGDClassifier` for the SVM, the same
# statistics as `GaussianNB`, `MultinomialNB` and `NearestCentroid`). The headline figures of
# the chapter come from `tinyodl bench classic --json benchmarks/results/classic.json`
# (`benchmarks/README.md`).

# %%
import copy
import os
import time

import matplotlib.pyplot as plt
import numpy as np
from threadpoolctl import threadpool_limits

from tinyodl import classic, models, nn
from tinyodl.data import load_mnist, to_float
from tinyodl.memory import format_bytes, measure_peak
from tinyodl.tasks import WriterShift
from tinyodl.train import evaluate, fit

QUICK = os.environ.get("TINYODL_QUICK") == "1"  # smaller runs under test; same code paths
N_STREAM = 2000 if QUICK else 8000  # examples on the device's stream
N_CLOUD = 1000 if QUICK else 4000  # examples the frozen extractor is trained on (digits 0-4)
N_TEST = 1000 if QUICK else 2000
SEED = 0
CLASSES = np.arange(10)
threadpool_limits(1)  # one thread: comparable timings

images, labels = load_mnist("train")
test_images, test_labels = load_mnist("test")
order = np.random.default_rng(SEED).permutation(len(labels))[: N_CLOUD + N_STREAM]
cloud_images, cloud_y = images[order[:N_CLOUD]], labels[order[:N_CLOUD]].astype(np.int64)
stream_images, y = images[order[N_CLOUD:]], labels[order[N_CLOUD:]].astype(np.int64)
test_images, y_test = test_images[:N_TEST], test_labels[:N_TEST].astype(np.int64)


def flat(imgs):
    """uint8 images (N, 28, 28) -> float rows (N, 784) in [0, 1], what the learners see."""
    return to_float(imgs).reshape(len(imgs), -1)


X, X_test = flat(stream_images), flat(test_images)
print(f"stream {X.shape}, test {X_test.shape}; classes per stream: {np.bincount(y)}")

# %% [markdown]
# ## 1. Online logistic regression
#
# Multinomial logistic regression scores each class with a linear function, `p = W x + b`,
# and turns the scores into probabilities with the softmax. Its loss on one example is
# `-log softmax(p)_y`, whose gradient with respect to the scores is `softmax(p) - onehot(y)`.
# Online learning takes **one SGD step per example**, in the order the stream delivers them:
#
# $$W \leftarrow (1 - \eta_t \alpha)\, W - \eta_t\, (\mathrm{softmax}(Wx + b) - e_y)\, x^\top,
# \qquad b \leftarrow b - \eta_t\, (\mathrm{softmax}(Wx+b) - e_y)$$
#
# The factor `(1 - eta alpha)` is the L2 penalty `alpha/2 ||W||^2` ("weight decay"). The step
# size follows scikit-learn's default "optimal" schedule `eta_t = 1 / (alpha (t0 + t))`. The
# state is `W` (10 x 784) and `b`: 7,850 numbers whatever the length of the stream.
#
# `partial_fit` follows scikit-learn's conventions: the first call names every class the
# stream may contain (`classes=`), because a stream cannot know them in advance; it returns
# the estimator, and what it learns ends in `_`.

# %%
logreg = classic.OnlineLogisticRegression(dtype="float32")
curve = []  # prequential accuracy: test each batch *before* learning from it
for start in range(0, N_STREAM, 32):
    xb, yb = X[start : start + 32], y[start : start + 32]
    if start:
        curve.append(float(np.mean(logreg.predict(xb) == yb)))
    assert logreg.partial_fit(xb, yb, classes=CLASSES) is logreg
print(
    "learned:",
    sorted(k for k in vars(logreg) if k.endswith("_")),
    f"coef_ {logreg.coef_.shape} {logreg.coef_.dtype}",
)
acc_logreg = logreg.score(X_test, y_test)
print(f"after one pass over {N_STREAM} examples: test accuracy {acc_logreg:.3f}")
assert acc_logreg > 0.75

window = 10
smooth = np.convolve(curve, np.ones(window) / window, mode="valid")
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(32 * np.arange(1, len(smooth) + 1) + 32 * window, smooth)
ax.set(
    xlabel="examples seen",
    ylabel="accuracy on the next batch",
    title="online logistic regression, test-then-train",
)
ax.grid(alpha=0.3)

# %% [markdown]
# Asking "how well does it predict the *next* batch, before learning from it" (prequential
# evaluation) is the natural measure for a stream: no example is used twice and nothing is
# held back.
#
# ## 2. A linear SVM trained by Pegasos
#
# The linear SVM replaces the log loss by the **hinge loss** `max(0, 1 - y p)` for a binary
# label `y = +-1`; with K classes it trains K one-vs-rest SVMs. The hinge loss has a kink, so
# the step uses a *subgradient*: `-y x` when the margin `y p` is below 1, nothing otherwise.
# **Pegasos** (Shalev-Shwartz et al. 2007) takes `eta_t = 1 / (alpha t)` and may project
# each weight vector back into the ball `||w|| <= 1 / sqrt(alpha)`, where the optimum lies.
# Its first step is `1/alpha`, huge with an unpenalised intercept, so scikit-learn's
# "optimal" schedule shifts it by `t0` (Bottou's heuristic): `1 / (alpha (t0 + t))`. Compare
# them on the same stream:

# %%
svms = {
    "Pegasos, no bias": classic.LinearSVM(learning_rate="pegasos", alpha=1e-3, fit_intercept=False),
    "Pegasos, no bias, projected": classic.LinearSVM(
        learning_rate="pegasos", alpha=1e-3, fit_intercept=False, project=True
    ),
    "Pegasos with a bias": classic.LinearSVM(learning_rate="pegasos", alpha=1e-3),
    "shifted schedule, with a bias": classic.LinearSVM(learning_rate="optimal", alpha=1e-4),
}
svm_acc = {}
for name, svm in svms.items():
    for start in range(0, N_STREAM, 32):
        svm.partial_fit(X[start : start + 32], y[start : start + 32], classes=CLASSES)
    svm_acc[name] = svm.score(X_test, y_test)
    print(f"{name:<30} first step {svm.eta(1):>7.0f}   test accuracy {svm_acc[name]:.3f}")
projected = svms["Pegasos, no bias, projected"]
norms = np.linalg.norm(projected.coef_, axis=1)
radius = 1 / np.sqrt(projected.alpha)
print(f"projected: largest ||w_k|| = {norms.max():.1f} <= 1/sqrt(alpha) = {radius:.1f}")
assert norms.max() <= radius * (1 + 1e-9)
assert svm_acc["Pegasos, no bias"] > 0.7 and svm_acc["shifted schedule, with a bias"] > 0.7
assert svm_acc["Pegasos with a bias"] == min(svm_acc.values())

# %% [markdown]
# Pegasos learns well without a bias. Give it an intercept and its first steps (of size
# `1/alpha`) throw the intercepts far off, which a single pass never repairs: hence the
# shifted schedule for the variant with a bias. The projection bounds the weights; on one
# pass it costs some accuracy here, because it cuts the large early steps short.
# `tests/test_classic.py` checks that `LinearSVM` reproduces scikit-learn's
# `SGDClassifier(loss="hinge")` weight for weight (to 1e-9) over several `partial_fit` calls.
#
# ## 3. Naive Bayes: learning is counting
#
# Naive Bayes assumes the pixels independent given the class, so a class is described by
# per-pixel statistics. **Gaussian** NB keeps, per class, the count, the mean and the variance
# of each pixel. Merging a new batch (m examples, mean `mu`, variance `s2`) into what was seen
# (n examples, mean `theta`, variance `var`) is exact (Chan, Golub & LeVeque 1979):
#
# $$\theta' = \frac{n\theta + m\mu}{n+m},\qquad
# \mathrm{var}' = \frac{n\,\mathrm{var} + m\, s^2 + \frac{nm}{n+m}(\theta-\mu)^2}{n+m}$$
#
# **Multinomial** NB treats the intensities as counts and keeps their per-class sums. Either
# way the result of a stream does not depend on how it was cut into batches, which is easy to
# check:

# %%
gnb_stream = classic.GaussianNB()
for start in range(0, N_STREAM, 7):  # odd-sized batches
    gnb_stream.partial_fit(X[start : start + 7], y[start : start + 7], classes=CLASSES)
gnb_once = classic.GaussianNB().fit(X, y)
gap = max(
    np.abs(gnb_stream.theta_ - gnb_once.theta_).max(), np.abs(gnb_stream.var_ - gnb_once.var_).max()
)
print(f"streamed in batches of 7 vs all at once: largest difference {gap:.1e}")
assert gap < 1e-10

mnb = classic.MultinomialNB()
for start in range(0, N_STREAM, 32):
    mnb.partial_fit(X[start : start + 32], y[start : start + 32], classes=CLASSES)
acc_gnb, acc_mnb = gnb_stream.score(X_test, y_test), mnb.score(X_test, y_test)
print(f"Gaussian NB {acc_gnb:.3f}, multinomial NB {acc_mnb:.3f}")
assert acc_mnb > acc_gnb

# %% [markdown]
# Gaussian NB does poorly on MNIST: a background pixel of a class has nearly zero variance,
# so a single stray stroke there costs an enormous log-likelihood. The multinomial model,
# which only rewards ink where a class usually has ink, is far better suited to pixel
# intensities. If scikit-learn is installed (it is a test dependency), we can see the
# agreement directly:

# %%
try:
    from sklearn import naive_bayes as sk_nb
except ImportError:  # scikit-learn is optional: `pip install -e ".[test]"`
    sk_nb = None
if sk_nb is not None:
    sk = sk_nb.MultinomialNB()
    for start in range(0, N_STREAM, 32):
        sk.partial_fit(X[start : start + 32], y[start : start + 32], classes=CLASSES)
    agree = np.mean(sk.predict(X_test) == mnb.predict(X_test))
    print(f"MultinomialNB: same predictions as scikit-learn on {agree:.1%} of the test images")
    assert agree == 1.0

# %% [markdown]
# ## 4. Nearest class mean on frozen features
#
# A network trained elsewhere ("in the cloud") can serve as a fixed feature extractor `f`;
# the device then only keeps **one mean feature vector per class** and predicts the class
# whose mean is nearest (Mensink et al. 2013; the classifier of iCaRL). Learning is a running
# mean, so it is as exact and order-free as naive Bayes, and it needs no backward pass.
#
# To make the point sharply, the extractor here is a LeNet-5 trained on **digits 0-4 only**,
# on images the device never sees; the device learns all ten digits from its stream.

# %%
extractor_net = models.lenet5(seed=SEED + 1)
keep = cloud_y < 5
fit(
    extractor_net,
    nn.SGD(extractor_net, lr=0.05, momentum=0.9),
    to_float(cloud_images[keep]),
    cloud_y[keep],
    epochs=1 if QUICK else 3,
    batch_size=32,
    seed=SEED,
    progress=False,
)
frozen = classic.FrozenFeatures(extractor_net, part="features")  # 400 features per image
to_images = lambda rows: rows.reshape(-1, 1, 28, 28)  # noqa: E731


def features(rows):
    return frozen(to_images(rows))


ncm_pixels, ncm_frozen = classic.NearestClassMean(), classic.NearestClassMean(features)
for start in range(0, N_STREAM, 32):
    for ncm in (ncm_pixels, ncm_frozen):
        ncm.partial_fit(X[start : start + 32], y[start : start + 32], classes=CLASSES)
new_digits = y_test >= 5
for name, ncm in [("pixels", ncm_pixels), ("frozen features", ncm_frozen)]:
    pred = ncm.predict(X_test)
    print(
        f"NCM on {name:<16} all digits {np.mean(pred == y_test):.3f}, digits 5-9 (never seen "
        f"by the extractor) {np.mean(pred[new_digits] == y_test[new_digits]):.3f}"
    )
assert ncm_frozen.score(X_test, y_test) > ncm_pixels.score(X_test, y_test)

# %% [markdown]
# Even features learned on other classes separate the new digits better than raw pixels:
# the extractor learned strokes and shapes, not just "0-4". (Chapter 08 goes further and
# fine-tunes parts of the network itself.)
#
# ## 5. What an update costs: bytes, time, memory
#
# Every learner above has a state whose size is fixed by the number of classes K and
# features D. `classic.measure_update_memory` runs `partial_fit` along a stream under
# `tracemalloc` and reports, for each update, the peak of the memory it allocated and what
# it left behind. For a constant-memory learner, the first update allocates the model and
# the later ones, all together, leave nothing behind (measured once everything has been
# garbage-collected), with a peak that does not grow with the number of examples seen:

# %%
mem = classic.measure_update_memory(
    classic.OnlineLogisticRegression(dtype="float32"),
    X,
    y,
    CLASSES,
    batch_size=32,
    n_updates=40,
)
print(
    f"model {format_bytes(mem.model_bytes)}; first update keeps "
    f"{format_bytes(mem.retained_bytes[0])}; peak per update "
    f"{format_bytes(mem.peak_bytes[1:].min())} .. {format_bytes(mem.peak_bytes[1:].max())}"
)
stored = 32 * np.arange(1, 41) * X[:1].nbytes  # a learner that stores its stream instead
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(32 * np.arange(1, 41), mem.peak_bytes / 1024, "o-", ms=3, label="peak of each update")
ax.plot(32 * np.arange(1, 41), stored / 1024, "--", label="keeping the stream (float32)")
ax.set(xlabel="examples seen", ylabel="KiB", title="online logistic regression")
ax.legend()
ax.grid(alpha=0.3)
# the first update allocates the model; the 39 others together keep nothing (a learner
# that stored its examples would keep 39 x 32 x 784 x 4 bytes = 3.9 MB)
print(f"kept by updates 2..40 together: {mem.stream_retained_bytes} bytes")
assert mem.retained_bytes[0] >= mem.model_bytes
assert mem.stream_retained_bytes < X[0].nbytes  # less than one example (not its stream)
assert mem.peak_bytes[-1] <= mem.peak_bytes[1] + 1024

# %% [markdown]
# Now the comparison the chapter is about: each learner takes **one pass** over the stream in
# batches of 32 (float32 state), against a small CNN, LeNet-5, trained by SGD on the same
# single pass. Update time is measured here, in the same process, and reported as a ratio
# to the CNN's step; the peak memory of one update of 32 examples is measured with
# `tracemalloc`.


# %%
class CNNStream:
    """LeNet-5 trained by one SGD step per batch, behind the same partial_fit."""

    def __init__(self):
        self.model = models.lenet5(seed=SEED)
        self.opt = nn.SGD(self.model, lr=0.05, momentum=0.9)

    def partial_fit(self, xb, yb, classes=None):
        self.opt.zero_grad()
        _, dlogits = nn.softmax_cross_entropy(self.model.forward(to_images(xb), train=True), yb)
        self.model.backward(dlogits)
        self.opt.step()
        return self

    def score(self, xs, ys):
        return evaluate(self.model, to_images(xs), ys)[1]


makers = {
    "logistic regression": lambda: classic.OnlineLogisticRegression(dtype="float32"),
    "linear SVM (Pegasos)": lambda: classic.LinearSVM(dtype="float32"),
    "Gaussian NB": lambda: classic.GaussianNB(dtype="float32"),
    "multinomial NB": lambda: classic.MultinomialNB(dtype="float32"),
    "NCM, pixels": lambda: classic.NearestClassMean(dtype="float32"),
    "NCM, frozen features": lambda: classic.NearestClassMean(features, dtype="float32"),
    "LeNet-5, SGD": CNNStream,
}
results = {}
for name, make in makers.items():
    learner = make()
    start = time.perf_counter()
    for s in range(0, N_STREAM, 32):
        learner.partial_fit(X[s : s + 32], y[s : s + 32], classes=CLASSES)
    seconds = (time.perf_counter() - start) / N_STREAM
    probe = make().partial_fit(X[:32], y[:32], classes=CLASSES)  # allocated state
    peak = measure_peak(probe.partial_fit, X[32:64], y[32:64], classes=CLASSES).peak_bytes
    state = learner.model if isinstance(learner, CNNStream) else learner
    results[name] = dict(
        accuracy=learner.score(X_test, y_test),
        bytes=classic.model_bytes(state),
        seconds=seconds,
        peak=peak,
    )
cnn = results["LeNet-5, SGD"]
print(f"{'learner':<22} {'accuracy':>8} {'model':>10} {'update time':>12} {'update peak':>12}")
for name, r in results.items():
    print(
        f"{name:<22} {r['accuracy']:>8.3f} {format_bytes(r['bytes']):>10} "
        f"{r['seconds'] / cnn['seconds']:>10.3f}x {format_bytes(r['peak']):>12}"
    )

# %%
names = list(results)
fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), sharey=True)
panels = [
    ("accuracy", "test accuracy"),
    ("bytes", "model bytes"),
    ("seconds", "update time / CNN step"),
]
for ax, (key, label) in zip(axes, panels, strict=True):
    values = [results[n][key] / (cnn["seconds"] if key == "seconds" else 1) for n in names]
    ax.barh(range(len(names)), values)
    ax.set(xlabel=label, xscale="linear" if key == "accuracy" else "log")
    ax.grid(alpha=0.3, axis="x")
axes[0].set_yticks(range(len(names)), names)
axes[0].invert_yaxis()
axes[0].set_xlim(0.5, 1.0)
fig.tight_layout()
classic_only = [n for n in names if n != "LeNet-5, SGD"]
assert all(results[n]["bytes"] < cnn["bytes"] / 3 for n in classic_only)
assert max(results[n]["accuracy"] for n in classic_only) < cnn["accuracy"] + 0.02
assert results["multinomial NB"]["seconds"] < cnn["seconds"]

# %% [markdown]
# Every classic learner is several times smaller than LeNet-5 (62k parameters) and most
# update in a fraction of an SGD step; the CNN is more accurate once it has seen enough
# data. Nearest class mean and multinomial naive Bayes update by adding numbers, the
# cheapest possible learning. (The NCM on frozen features pays for the extractor's
# *forward* pass, which inference needs anyway; it never runs a backward pass.) The full-size
# run with a multi-epoch CNN reference is `tinyodl bench classic` (`benchmarks/README.md`).
#
# ## 6. Concept drift: a new writer arrives mid-stream
#
# A stream is not stationary. Here the second half of the stream is written by **task B's
# new writer** (`tinyodl.tasks.WriterShift`: a slant, a rotation, a fixed elastic warp and a
# thicker pen; the same shift chapters 03 and 08 adapt to). A learner frozen at the half-way
# point stays at its half-way accuracy on the new writer; continued updates recover.

# %%
writer = WriterShift()
X_shift_stream, X_shift_test = flat(writer(stream_images)), flat(writer(test_images))
half = (N_STREAM // 2 // 32) * 32
X_drift = np.concatenate([X[:half], X_shift_stream[half:]])
fig, axes = plt.subplots(1, 4, figsize=(6, 1.8))
for ax, img, title in zip(
    axes,
    [
        stream_images[0],
        writer(stream_images[:1])[0],
        stream_images[1],
        writer(stream_images[1:2])[0],
    ],
    ["writer 1", "new writer", "writer 1", "new writer"],
    strict=True,
):
    ax.imshow(img, cmap="gray_r")
    ax.set(title=title, xticks=[], yticks=[])

# %%
drift_learners = {
    n: makers[n]()
    for n in ["logistic regression", "multinomial NB", "NCM, frozen features", "LeNet-5, SGD"]
}
checkpoints = sorted({*range(N_STREAM // 8, N_STREAM, N_STREAM // 8), half, N_STREAM})
track = {n: [] for n in drift_learners}
for name, learner in drift_learners.items():
    pos = 0
    for stop in checkpoints:
        for s in range(pos, stop, 32):
            learner.partial_fit(
                X_drift[s : min(s + 32, stop)], y[s : min(s + 32, stop)], classes=CLASSES
            )
        pos = stop
        track[name].append(learner.score(X_shift_test, y_test))
fig, ax = plt.subplots(figsize=(7, 4))
for name, accs in track.items():
    ax.plot(checkpoints, 100 * np.array(accs), "o-", ms=3, label=name)
ax.axvline(half, color="black", ls=":", label="the new writer arrives")
ax.set(
    xlabel="examples seen",
    ylabel="accuracy on the new writer (%)",
    title="frozen at the half-way point vs continued updates",
)
ax.legend(fontsize="small")
ax.grid(alpha=0.3)
at_half = {n: accs[checkpoints.index(half)] for n, accs in track.items()}
for name, accs in track.items():
    print(f"{name:<22} frozen at half-way {at_half[name]:.3f} -> continued {accs[-1]:.3f}")
    assert accs[-1] > at_half[name] + 0.1

# %% [markdown]
# All of them recover, and none needed the old data to do it. The learners differ in *how
# fast*: naive Bayes and nearest class mean weigh every example ever seen equally, so the
# old writer keeps half the say at the end of this stream; SGD's step size decays too, more
# slowly. A device expecting drift would use a constant step or exponentially forgetting
# statistics (a decay factor on the counts), trading stability for speed of adaptation.
#
# ## 7. Drift → trigger → adapt
#
# Continuing to learn on every example assumes every example comes with its label, at
# once. A deployed device usually runs a *frozen* model, gets a label only late (a user's
# correction), and can store only a few examples. It must first **notice** that the stream
# changed, then **decide** to adapt. `tinyodl.lifecycle` has the pieces:
#
# * **data drift**, no labels needed: a two-sample test between a reference window of
#   inputs and each new window -- the kernel MMD with a permutation p-value (Gretton et
#   al. 2012) or one Kolmogorov–Smirnov test per pixel with Holm's correction -- and the
#   streaming **Page–Hinkley** test (Page 1954; Hinkley 1971) on one number per input (here
#   its ink, the norm of its pixels; a network's confidence is another choice, chapter 04);
# * **concept drift**, on the 0/1 errors as the late labels arrive: **DDM** (Gama et al.
#   2004: the error rate rises three standard deviations above its best) and **ADWIN**
#   (Bifet & Gavaldà 2007: two sub-windows whose means differ by more than a
#   Hoeffding-style bound).
#
# The deployed model below is the logistic regression, trained on the first quarter of the
# stream and then frozen; it watches the rest, where the new writer arrives at step `half`.
# Labels arrive 50 steps late.

# %%
from tinyodl import lifecycle

deploy = N_STREAM // 4
deployed = classic.OnlineLogisticRegression(dtype="float32")
for s in range(0, deploy, 32):
    deployed.partial_fit(X[s : s + 32], y[s : s + 32], classes=CLASSES)
Xm, ym = X_drift[deploy:], y[deploy:]  # the monitored stream
switch, delay, ref_n = half - deploy, 50, 200
ink = np.linalg.norm(Xm, axis=1).astype(np.float64)  # one number per input, no label
errors = (deployed.predict(Xm) != ym).astype(np.float64)


def alarms_of(name):
    """Alarm steps of one detector on the monitored stream (late labels for DDM / ADWIN)."""
    if name in ("MMD (pixels)", "KS + Holm (pixels)"):
        test = "mmd" if name.startswith("MMD") else "ks"
        det = lifecycle.WindowDetector(Xm[:ref_n], test, window=100, alpha=0.01, seed=SEED)
        return [ref_n + i for i, x in enumerate(Xm[ref_n:]) if det.update(x)]
    if name == "Page-Hinkley (ink)":
        det = lifecycle.PageHinkley(delta=0.5, threshold=20.0, alpha=1.0, mode="up")
        return det.run(ink).tolist()
    det = lifecycle.DDM() if name == "DDM (errors)" else lifecycle.ADWIN()
    return [i + delay for i in det.run(errors).tolist()]  # error i is known at step i + delay


names = [
    "MMD (pixels)", "KS + Holm (pixels)", "Page-Hinkley (ink)", "DDM (errors)",
    "ADWIN (errors)",
]  # fmt: skip
found = {n: alarms_of(n) for n in names}
fig, ax = plt.subplots(figsize=(8, 3.8))
smooth = np.convolve(ink, np.ones(50) / 50, mode="valid")
ax.plot(np.arange(49, len(ink)), smooth, color="grey", lw=1, label="ink (average of 50)")
for k, (name, steps) in enumerate(found.items()):
    ax.plot(steps, np.full(len(steps), 5.0 + 0.6 * k), "|", ms=12, mew=2, label=name)
ax.axvline(switch, color="black", ls=":", label="the new writer arrives")
ax.set(xlabel="step of the monitored stream", ylabel="ink (pixel norm)", ylim=(4.5, 14))
ax.legend(fontsize="x-small", ncol=2, loc="lower left")
for name, steps in found.items():
    after = [s for s in steps if s >= switch]
    false = sum(s < switch for s in steps)
    print(f"{name:<27} delay {after[0] - switch if after else '-':>4} steps, "
          f"{false} false alarm(s) in {switch} steps")  # fmt: skip
assert all(any(s >= switch for s in steps) for steps in found.values())

# %% [markdown]
# Every detector finds the new writer. The unlabelled ones are fastest: a window test fires at the
# end of the first window that holds enough new images, Page–Hinkley as soon as the thicker pen has
# added enough ink. (The logistic regression's own confidence would not do here: its softmax is
# saturated near 1 on both writers.) DDM and ADWIN wait for labels (50 steps here) and then for
# enough errors. Thresholds trade delay for false alarms: a test run on every window at `alpha =
# 0.01` raises a false alarm once in a hundred windows on average.
#
# **When to adapt.** An alarm is not a training set. The trigger policy
# (`lifecycle.TriggerPolicy`) *arms* on an alarm and empties the buffer (it held the old
# writer), buffers the labels that arrive afterwards in a `LabelBuffer` of a fixed byte
# budget (chapter 07: 785 bytes per 8-bit image and its label), and adapts once
# `min_examples` are there. Here: 64 KB of storage (83 images), adapt on 80 of them with
# three passes of `partial_fit`. We compare it with never adapting and with adapting on a
# fixed schedule (every 300 steps, on the latest labels).


# %%
def run_policy(policy, detector=None):
    """Run the deployed learner over the monitored stream under a policy (online).

    After each adaptation the detector restarts on what the adapted learner sees: a window
    test takes the next ``ref_n`` inputs as its new reference, DDM / ADWIN restart on the
    adapted learner's errors. Returns (stream accuracy after the switch, new-writer test
    accuracy, adaptation steps).
    """
    learner = copy.deepcopy(deployed)
    buffer = lifecycle.LabelBuffer(64 * 1024)
    trigger = lifecycle.TriggerPolicy(80, buffer.capacity)
    det, ref_from, right, adapted = None, 0, [], []
    for t in range(len(ym)):
        right.append(learner.predict(Xm[t : t + 1])[0] == ym[t])
        if detector == "Page-Hinkley (ink)" and det is None:
            det = lifecycle.PageHinkley(delta=0.5, threshold=20.0, alpha=1.0, mode="up")
        if detector == "ADWIN (errors)" and det is None:
            det = lifecycle.ADWIN()
        if detector == "MMD (pixels)" and det is None and t == ref_from + ref_n:
            det = lifecycle.WindowDetector(Xm[ref_from:t], "mmd", window=100, seed=SEED)
        alarm = False
        if det is not None and detector == "Page-Hinkley (ink)":
            alarm = det.update(ink[t])
        elif det is not None and detector == "MMD (pixels)":
            alarm = det.update(Xm[t])
        elif det is not None and t >= delay + ref_from:  # the label of step t - delay arrives
            alarm = det.update(float(not right[t - delay]))
        if alarm:
            buffer.clear()
        if t >= delay:
            buffer.add(Xm[t - delay], ym[t - delay])
        if policy == "schedule":
            go = (t + 1) % 300 == 0 and len(buffer) >= 80
        else:
            go = policy == "trigger" and trigger.step(alarm, int(t >= delay))
        if go:
            bx, by = buffer.data()
            for _ in range(3):
                learner.partial_fit(bx.reshape(len(bx), -1), by)
            adapted.append(t)
            trigger.adapted()
            buffer.clear()
            det, ref_from = None, t + 1  # restart the detector on the adapted learner
    after = float(np.mean(right[switch:]))
    return after, learner.score(X_shift_test, y_test), adapted


results = {
    "never adapt": run_policy("never"),
    "fixed schedule (every 300)": run_policy("schedule"),
    "Page-Hinkley -> trigger": run_policy("trigger", "Page-Hinkley (ink)"),
    "MMD -> trigger": run_policy("trigger", "MMD (pixels)"),
    "ADWIN -> trigger": run_policy("trigger", "ADWIN (errors)"),
}
for name, (stream_acc, test_acc, adapted) in results.items():
    print(f"{name:<27} stream after the switch {stream_acc:.3f}, new-writer test {test_acc:.3f}, "
          f"adapted at {adapted}")  # fmt: skip
for name in ("Page-Hinkley -> trigger", "MMD -> trigger", "ADWIN -> trigger"):
    assert results[name][1] > results["never adapt"][1] + 0.05

# %% [markdown]
# One adaptation on 80 buffered examples of the new writer lifts the frozen model well
# above never adapting. The detector decides *when*: Page–Hinkley on the ink reacts within a
# few steps, ADWIN only once late labels show the errors. A fixed schedule adapts whether or
# not anything changed, on whatever the buffer holds -- and here it wins: a classic learner's
# update is nearly free and the new writer stays, so adapting every 300 steps (5 times in the
# quick run, 20 in the full one) simply uses 5-20 times more labelled data. On a stable
# stream those would be training runs spent for nothing, and on a network each run costs
# seconds of compute and the device's training memory. With the pretrained `mcunet_tiny`, the
# demo's adaptation methods chosen under a memory budget, and every detector (chapter 04's
# `tinyodl bench lifecycle`, README "Lifecycle"), one triggered adaptation matches a schedule
# of three, with less forgetting.
#
# **Summary.** A classic learner keeps a state of a few K x D arrays, updates in constant
# memory by one SGD step or by counting, is a fraction of a small CNN's size and of its update
# cost, and follows drift by simply continuing to learn -- or, when labels are late and few,
# by a drift detector arming a trigger that adapts once enough new examples are stored. What
# it gives up is accuracy: the frozen-feature learners show the way back, which chapter 08
# (transfer learning) takes.
