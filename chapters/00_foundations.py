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
# # Chapter 00 — Foundations: training a network by hand, and where its memory goes
#
# On-device learning means updating a model on the phone, sensor or microcontroller that
# collects the data, instead of shipping the data to a server. The first thing that goes wrong
# when you try is not speed but **memory**: a microcontroller has a few hundred kilobytes of
# SRAM, and a training step needs far more than running the model does.
#
# This chapter builds the vocabulary and the tools for the rest of the course, and checks every
# claim by computing it:
#
# 1. **Where training memory goes**: parameters, gradients, optimizer state and activations.
# 2. **A layer is a forward/backward pair**: the linear layer, then convolution through
#    *im2col* (and what im2col costs in memory).
# 3. **Gradient checking**: how to know a backward pass is right.
# 4. **Two backends**: a readable numpy reference and compiled Cython kernels that give the
#    same numbers.
# 5. **Training from scratch** on a subset of MNIST with `tinyodl.train.fit`.
# 6. **Measured memory** of one training step, compared with an analytic model.
# 7. **Freezing weights**: the bias-only update of TinyTL and what it saves.
#
# Everything below runs in well under a minute on a laptop. Cells that print numbers also
# `assert` what the text says about them, so if a later change breaks a claim, the notebook
# stops there.

# %%
import time
import timeit

import matplotlib.pyplot as plt
import numpy as np
from threadpoolctl import threadpool_limits

import tinyodl
from tinyodl import backend, models, nn, ops
from tinyodl.data import load_mnist, to_float, train_val_split
from tinyodl.memory import (
    analytic_training_memory,
    compare,
    format_bytes,
    measure_peak,
    measure_training_step,
    plot_memory_breakdown,
)
from tinyodl.train import evaluate, fit

# Load the compiled kernels (if they are built) *before* limiting threads, so that the BLAS
# library they link is limited too. One thread makes the numpy and Cython timings below
# comparable (the Cython kernels run on one thread by default), and on small matrices
# multithreaded BLAS is often slower anyway.
BACKENDS = backend.available_backends()
threadpool_limits(1)

SEED = 0
rng = np.random.default_rng(SEED)
notebook_start = time.perf_counter()
print(
    f"tinyodl {tinyodl.__version__}; backends available: {BACKENDS}; "
    f"active: {backend.get_backend()}"
)

# %% [markdown]
# ## 1. Why on-device training is memory-bound
#
# Running a trained model (inference) needs the parameters plus, at any moment, roughly the
# input and output of the layer being computed: each activation can be thrown away as soon
# as the next layer has consumed it. Training needs much more, all at the same time:
#
# * **parameters**: the weights and biases; their size is fixed by the architecture;
# * **gradients**: one buffer per *trainable* parameter, the same size;
# * **optimizer state**: momentum keeps one more copy of the trainable parameters, Adam two;
# * **activations**: what each layer *saves during forward* because its backward needs it;
#   this grows with the batch size and the image size;
# * **scratch**: short-lived buffers such as im2col columns and the gradient flowing
#   backward; this grows with the batch size too.
#
# The first three do not depend on the batch; the last two grow with it. The
# `tinyodl.memory` package has an **analytic model** that predicts each category layer by
# layer from the shapes alone (section 6 checks it against a measurement). Here it is for
# LeNet-5 (62k parameters) trained with SGD + momentum, for a range of batch sizes:

# %%
lenet = models.lenet5(seed=SEED)
print(
    f"LeNet-5: {lenet.num_params():,} parameters = {format_bytes(4 * lenet.num_params())} "
    "in float32"
)

batch_sizes = [1, 2, 4, 8, 16, 32, 64, 128]
predicted = {
    n: analytic_training_memory(lenet, (1, 28, 28), n, optimizer="sgd_momentum")
    for n in batch_sizes
}
print(
    f"{'batch':>5} {'params':>10} {'grads':>10} {'opt state':>10} {'activations':>12} "
    f"{'scratch':>10} {'total peak':>11}"
)
for n, a in predicted.items():
    parts = a.breakdown()
    print(
        f"{n:>5} {format_bytes(parts['parameters']):>10} {format_bytes(parts['gradients']):>10} "
        f"{format_bytes(parts['optimizer_state']):>10} {format_bytes(parts['activations']):>12} "
        f"{format_bytes(parts['scratch']):>10} {format_bytes(a.total_peak_bytes):>11}"
    )

# %%
# With SGD + momentum, parameters, gradients and momentum are three arrays of the same size.
b1 = predicted[1].breakdown()
assert b1["parameters"] == b1["gradients"] == b1["optimizer_state"]
curves = {
    "parameters = gradients = momentum (each)": "parameters",
    "activations": "activations",
    "scratch": "scratch",
}
fig, ax = plt.subplots(figsize=(7, 4))
for label, category in curves.items():
    kib = [predicted[n].breakdown()[category] / 2**10 for n in batch_sizes]
    ax.plot(batch_sizes, kib, "o-", label=label)
ax.axhline(256, color="black", ls=":", label="256 KiB of SRAM")
ax.set(
    xscale="log",
    yscale="log",
    xlabel="batch size",
    ylabel="KiB",
    title="LeNet-5, one training step (analytic model)",
)
ax.legend(fontsize="small")
ax.grid(alpha=0.3)

# %%
# The activations grow with the batch, the parameter-sized categories do not.
a1, a64 = predicted[1].breakdown(), predicted[64].breakdown()
assert a64["activations"] == 64 * a1["activations"]
assert a64["parameters"] == a1["parameters"] and a64["gradients"] == a1["gradients"]
first_batch_over = next(
    n for n in batch_sizes if predicted[n].breakdown()["activations"] > a1["parameters"]
)
print(
    f"activations exceed the parameters from batch size {first_batch_over} on; at batch 64 "
    f"they are {a64['activations'] / a64['parameters']:.1f}x the parameters"
)
print(
    f"batch size 1 needs {format_bytes(predicted[1].total_peak_bytes)} in total, "
    f"{predicted[1].total_peak_bytes / 2**18:.1f}x a 256 KiB SRAM"
)
assert predicted[1].total_peak_bytes > 256 * 2**10

# %% [markdown]
# Beyond a modest batch size the activations outweigh the parameters, and even a single image
# of this 62k-parameter model does not fit in 256 KB once gradients and momentum are counted.
# Most of what the course teaches (sparse updates, bias-only updates,
# quantized training, recomputation, layer-wise training) attacks one of these categories.
#
# ## 2. A layer is a forward/backward pair
#
# Without an autograd framework, every layer is two functions. The **forward** computes the
# output; the **backward** receives the gradient of the loss with respect to the output,
# `dout = dL/dy`, and returns the gradients with respect to its input and its parameters
# (chain rule). For the **linear layer** `y = x W^T + b` with `x` of shape (N, in) and `W` of
# shape (out, in):
#
# * `dx = dout @ W` — needs the weights,
# * `dW = dout^T @ x` — needs the **input `x`**, which must therefore be kept from the forward
#   pass until the backward pass: this is the activation memory of section 1,
# * `db = dout.sum(axis=0)` — needs nothing but `dout`.
#
# `tinyodl.nn.functional` writes layers exactly like this: `*_forward` returns the output and a
# `cache` of what backward will need.

# %%
F = nn.functional
x = rng.standard_normal((4, 5))
w = rng.standard_normal((3, 5))
b = rng.standard_normal(3)
y, cache = F.linear_forward(x, w, b)
dout = rng.standard_normal(y.shape)  # pretend this came from the layers above
dx, dw, db = F.linear_backward(dout, cache)

assert np.allclose(y, x @ w.T + b)
assert np.allclose(dx, dout @ w) and np.allclose(dw, dout.T @ x)
assert np.allclose(db, dout.sum(axis=0))
print("cache:", {k: v.shape for k, v in cache.items()})

# %% [markdown]
# If the weights are **frozen** (not trained), `dW` is not needed, so neither is `x`: the layer
# can forget its input. Leave `"x"` out of the cache and backward still produces `dx` (to keep
# the chain rule going to earlier layers) and `db`. This observation is the heart of TinyTL
# (section 7).

# %%
dx_frozen, dw_frozen, db_frozen = F.linear_backward(dout, {"w": w})
assert dw_frozen is None
assert np.array_equal(dx_frozen, dx) and np.array_equal(db_frozen, db)

# The layer classes do the same bookkeeping: `layer.saved` holds what forward kept.
trained, frozen = nn.Linear(784, 200, seed=SEED), nn.Linear(784, 200, seed=SEED)
frozen.freeze(kind="weight")
batch = rng.standard_normal((64, 784)).astype(np.float32)
trained.forward(batch)
frozen.forward(batch)
for name, layer in [("weight trained", trained), ("weight frozen", frozen)]:
    kept = sum(a.nbytes for a in layer.saved.values())
    print(f"Linear(784, 200), {name}: saves {list(layer.saved)} = {format_bytes(kept)}")
assert not frozen.saved and trained.saved["x"].nbytes == batch.nbytes

# %% [markdown]
# ### Convolution as one matrix product: im2col
#
# A convolution output pixel is the dot product of a filter (Cin x KH x KW numbers) with the
# patch of the input under it. **im2col** copies every patch into a column of a matrix; the
# whole convolution is then a single matrix product
# `W.reshape(F, Cin*KH*KW) @ cols`, which BLAS computes fast. On a 1x4x4 input with a 3x3
# kernel there are four patches, so four columns of nine values each:

# %%
tiny = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
print("input:\n", tiny[0, 0])
print("im2col, one column per 3x3 patch:\n", ops.im2col(tiny, kernel_size=3)[0])

# %%
# A convolution computed by hand with im2col equals the library's conv2d_forward.
xc = rng.standard_normal((2, 3, 8, 8))
wc = rng.standard_normal((4, 3, 3, 3))
cols = ops.im2col(xc, kernel_size=3, padding=1)  # (N, Cin*KH*KW, OH*OW)
by_hand = (wc.reshape(4, -1) @ cols).reshape(2, 4, 8, 8)
assert np.allclose(by_hand, ops.conv2d_forward(xc, wc, padding=1))
print("cols:", cols.shape, "-> output", by_hand.shape)

# %% [markdown]
# The price is memory. Every input pixel is copied once for each filter tap that covers it, so
# the column matrix of one image holds **OH x OW x KH x KW x Cin** numbers. For a 3x3
# convolution with "same" padding and stride 1 (OH = H, OW = W) that is **9 times the input**.
# Let us check the formula on a few geometries:

# %%
print(
    f"{'Cin':>4} {'H':>4} {'kernel':>6} {'stride':>6} {'pad':>4} {'OH*OW*KH*KW*Cin':>16} "
    f"{'cols.size':>10} {'bytes cols/x':>12}"
)
for cin, h, k, s, p in [(8, 28, 3, 1, 1), (8, 28, 5, 1, 2), (16, 14, 3, 2, 1), (1, 28, 5, 1, 0)]:
    xi = np.zeros((1, cin, h, h), dtype=np.float32)
    out_hw = (h + 2 * p - k) // s + 1
    formula = out_hw * out_hw * k * k * cin
    cols = ops.im2col(xi, kernel_size=k, stride=s, padding=p)
    assert cols.size == formula
    print(
        f"{cin:>4} {h:>4} {k:>4}x{k} {s:>6} {p:>4} {formula:>16,} {cols.size:>10,} "
        f"{cols.nbytes / xi.nbytes:>12.2f}"
    )
    if (k, s, p) == (3, 1, 1):
        assert cols.nbytes == 9 * xi.nbytes

# %% [markdown]
# How much of this is really allocated depends on the implementation. `measure_peak` traces
# every allocation (with Python's `tracemalloc`) while a call runs and reports the highest
# point. The numpy reference builds the columns for the whole batch at once; the Cython
# kernel builds them for one image at a time and reuses the buffer:

# %%
x16 = rng.standard_normal((16, 8, 28, 28)).astype(np.float32)
w16 = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
conv_peak = {}
for name in BACKENDS:
    with backend.use_backend(name):
        conv_peak[name] = measure_peak(ops.conv2d_forward, x16, w16, None, 1, 1).peak_bytes
    print(
        f"{name:>6}: conv2d_forward peak = {format_bytes(conv_peak[name])} "
        f"= {conv_peak[name] / x16.nbytes:.1f}x the input batch"
    )
# the numpy backend holds the columns of the whole batch: at least 9x the input
assert conv_peak["numpy"] >= 9 * x16.nbytes

# %% [markdown]
# On a microcontroller even the Cython approach is too generous: CMSIS-NN builds only two
# columns at a time, and 1x1 (pointwise) convolutions need no im2col at all.
#
# ## 3. Gradient checking
#
# A backward pass can be wrong in ways that still let training "work", only worse. The
# standard test compares it with a **numerical gradient** from central differences,
#
# $$\frac{\partial f}{\partial x_i} \approx \frac{f(x + h e_i) - f(x - h e_i)}{2h},$$
#
# whose error shrinks like $h^2$. The two are compared with the **relative error**
# `max |a - b| / max(1e-8, |a| + |b|)`, which does not depend on the scale of the gradient.
# In float64, a correct backward gives a relative error many orders of magnitude below
# `1e-2`; a bug gives `1e-2` or more. To check a layer whose output is an array, we check the
# scalar `sum(forward(x) * dout)` for a random `dout`: its gradient is exactly what backward
# returns. First by hand, for `dW` of the linear layer above, next to a buggy backward and a
# float32 attempt:


# %%
def linear_output(w_):
    return F.linear_forward(x, w_, b)[0]


numeric_dw = nn.numerical_gradient(linear_output, w.copy(), h=1e-6, df=dout)
err_correct = nn.rel_error(dw, numeric_dw)


def buggy_linear_backward(dout_, cache_):
    """A plausible bug: averaging dW over the batch, while the loss above is a sum."""
    dx_, dw_, db_ = F.linear_backward(dout_, cache_)
    return dx_, dw_ / len(dout_), db_


err_bug = nn.rel_error(buggy_linear_backward(dout, cache)[1], numeric_dw)

# float32 has about 7 significant digits: for |w| near 1, w + 1e-6 is only a handful of float32
# steps away from w, so the difference quotient is mostly rounding; a larger h helps, but the
# rounding error of f(w + h) - f(w - h) stays large.
x32, w32, b32 = x.astype(np.float32), w.astype(np.float32), b.astype(np.float32)


def linear_output32(w_):
    return F.linear_forward(x32, w_, b32)[0]


err_f32 = {
    h: nn.rel_error(dw, nn.numerical_gradient(linear_output32, w32.copy(), h=h, df=dout))
    for h in (1e-6, 1e-3)
}

print(f"correct backward, float64, h=1e-6: rel error {err_correct:.1e}")
print(f"buggy backward (dW / N),  float64: rel error {err_bug:.1e}")
for h, e in err_f32.items():
    print(f"correct backward, float32, h={h:g}: rel error {e:.1e}")
assert err_correct < 1e-6
assert err_bug > 1e-2
assert all(e > 100 * err_correct for e in err_f32.values())

# %% [markdown]
# Lesson: **gradient-check in float64**, and read the magnitude of the relative error, not
# just whether it is "small". `nn.check_layer_gradients` does this for a whole layer or
# model: it makes a float64 copy, draws a random `dout` and checks the gradient with respect
# to the input and to every trainable parameter.
#
# Which step `h`? Two errors pull in opposite directions. A large `h` lets curvature (and the
# kinks of ReLU and max pooling, when `x +- h` crosses one) into the difference quotient; a
# small `h` divides the rounding error of `f(x + h) - f(x - h)` (about `1e-16 * |f|`) by a
# tiny number. Sweeping `h` on a small conv-ReLU-pool-linear model shows both sides:

# %%
small = rng.standard_normal((2, 3, 8, 8))
tiny_cnn = nn.Sequential(
    [
        nn.Conv2d(3, 4, 3, padding=1, seed=3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3, seed=4),
    ]
)
steps = 10.0 ** -np.arange(1, 10)
sweep = [max(nn.check_layer_gradients(tiny_cnn, small, seed=SEED, h=h).values()) for h in steps]
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.loglog(steps, sweep, "o-")
ax.set(
    xlabel="step h",
    ylabel="worst relative error",
    title="Central differences: kinks and curvature vs rounding",
)
ax.grid(alpha=0.3)
best_h = steps[int(np.argmin(sweep))]
print(
    f"smallest error {min(sweep):.0e} at h = {best_h:g}; "
    f"h = 1e-1: {sweep[0]:.0e}, h = 1e-9: {sweep[-1]:.0e}"
)
assert min(sweep) < 1e-6 and sweep[0] > 1e-3 and sweep[-1] > 1e-6
assert sweep[4] < 1e-6  # h = 1e-5, the step used below

# %% [markdown]
# The error is smallest in the middle of the range. For a smooth function the classical best
# step of central differences balances the two errors at about the cube root of the machine
# epsilon, `2.2e-16 ** (1/3)`, roughly `6e-6` in float64; `h = 1e-5` sits safely on the flat
# bottom of the curve above, and we use it to check every layer type of `tinyodl.nn`:

# %%
H = 1e-5
cases = {
    "Linear(12, 5)": (nn.Linear(12, 5, seed=1), rng.standard_normal((3, 12))),
    "Conv2d(3, 4, 3, stride 2, pad 1)": (nn.Conv2d(3, 4, 3, stride=2, padding=1, seed=2), small),
    "MaxPool2d(2)": (nn.MaxPool2d(2), small),
    "AvgPool2d(2)": (nn.AvgPool2d(2), small),
    "ReLU": (nn.ReLU(), small),
    "BatchNorm2d(3)": (nn.BatchNorm2d(3), small),
    "conv-relu-pool-linear": (tiny_cnn, small),
}
worst = 0.0
for name, (layer, inp) in cases.items():
    errors = nn.check_layer_gradients(layer, inp, seed=SEED + 1, h=H)
    worst = max(worst, *errors.values())
    print(f"{name:<34}" + "  ".join(f"d{k}: {v:.1e}" for k, v in errors.items()))
assert worst < 1e-6, worst

# %% [markdown]
# ## 4. Two backends, one answer
#
# Every kernel in `tinyodl.ops` exists twice with the same signature: a pure-numpy
# **reference** in `tinyodl/reference/` that reads like the maths, and a compiled **Cython**
# version in `kernels/`. `tinyodl.backend.use_backend` switches between them. The reference is
# the specification: the Cython kernels must give the same results (up to the order of
# floating-point additions).

# %%
xk = rng.standard_normal((8, 6, 14, 14))
wk = rng.standard_normal((16, 6, 5, 5))
dk = rng.standard_normal((8, 16, 10, 10))
xl, wl, dl = (
    rng.standard_normal((64, 400)),
    rng.standard_normal((120, 400)),
    rng.standard_normal((64, 120)),
)
problems = {
    "conv2d_forward": lambda k, t: k.conv2d_forward(xk.astype(t), wk.astype(t)),
    "conv2d_backward_input": lambda k, t: k.conv2d_backward_input(
        dk.astype(t), wk.astype(t), xk.shape
    ),
    "conv2d_backward_weight": lambda k, t: k.conv2d_backward_weight(
        dk.astype(t), xk.astype(t), wk.shape
    ),
    "linear_forward": lambda k, t: k.linear_forward(xl.astype(t), wl.astype(t)),
    "linear_backward_weight": lambda k, t: k.linear_backward_weight(dl.astype(t), xl.astype(t)),
    "maxpool2d_forward": lambda k, t: k.maxpool2d_forward(xk.astype(t), 2)[0],
}
if "cython" in BACKENDS:
    ref, fast = backend.implementation("numpy"), backend.implementation("cython")
    print(f"{'kernel':<24} {'max |diff| f64':>15} {'max |diff| f32':>15} {'max |value|':>12}")
    for name, run in problems.items():
        diffs = {}
        for t in (np.float64, np.float32):
            r, c = run(ref, t), run(fast, t)
            assert c.dtype == r.dtype == t
            diffs[t] = float(np.max(np.abs(r.astype(np.float64) - c)))
        scale = float(np.max(np.abs(r)))
        print(f"{name:<24} {diffs[np.float64]:>15.1e} {diffs[np.float32]:>15.1e} {scale:>12.1f}")
        assert diffs[np.float64] <= 1e-12 * scale and diffs[np.float32] <= 1e-5 * scale
else:
    print("The Cython kernels are not built (pip install -e .); only the numpy reference runs.")

# %% [markdown]
# Compare each difference with the size of the values: where it is not zero, it is at the
# level of rounding of the data type. A kernel may add the same products in a different order
# than the reference (blocking, one image at a time), and floating-point addition is not
# associative, so tests compare backends with a tolerance, never with `==`:

# %%
a, b_, c = 0.1, 0.2, 0.3
print(f"(0.1 + 0.2) + 0.3 = {(a + b_) + c!r}; 0.1 + (0.2 + 0.3) = {a + (b_ + c)!r}")
assert (a + b_) + c != a + (b_ + c)

# %% [markdown]
# Speed is a different matter. Timings depend on the machine and on what else is running, so
# they are printed here but never asserted; the ratio, measured in the same process one right
# after the other, is the more stable number.


# %%
def best_time(fn, repeat=5):
    """Seconds of the fastest of `repeat` calls (the least disturbed by other work)."""
    fn()  # warm-up
    return min(timeit.repeat(fn, number=1, repeat=repeat))


if "cython" in BACKENDS:
    print(f"{'kernel (float32)':<24} {'numpy ms':>9} {'cython ms':>10} {'ratio':>6}")
    for name, run in problems.items():
        t_ref = best_time(lambda run=run: run(ref, np.float32))
        t_fast = best_time(lambda run=run: run(fast, np.float32))
        print(f"{name:<24} {1e3 * t_ref:>9.2f} {1e3 * t_fast:>10.2f} {t_ref / t_fast:>6.1f}")

# %% [markdown]
# Matrix products (linear layers, and convolutions once im2col is done) are already fast in
# numpy because numpy calls BLAS; the compiled kernels win most where the reference has to
# build large temporaries (the im2col columns of a whole batch, the windows and index arrays
# of max pooling) that a loop in C does not need.
#
# ## 5. Training from scratch
#
# `tinyodl.data.load_mnist` returns a class-balanced subset of MNIST shipped with the package
# (12,000 training and 2,000 test images), so nothing is downloaded. We hold out 10% of the
# training images for validation and train the "2NN" of the federated-learning paper
# (784-200-200-10, ReLU) with SGD and momentum. `fit` shuffles with its own seed, so the run
# is reproducible.
#
# As in PyTorch, every layer has a training mode and an evaluation mode (`model.train()`,
# `model.eval()`; `model.forward(x)` follows the mode). They differ for batchnorm (batch
# statistics and updated running averages, or the fixed running averages) and dropout (on or
# off). `fit` trains in training mode; `evaluate` and `predict` always run in evaluation mode,
# so measuring accuracy never changes the model.

# %%
images, labels = load_mnist("train")
test_images, test_labels = load_mnist("test")
x_all, y_all = to_float(images), labels.astype(np.int64)
x_test, y_test = to_float(test_images), test_labels.astype(np.int64)
x_train, y_train, x_val, y_val = train_val_split(x_all, y_all, 0.1, rng=SEED)
print(
    f"train {x_train.shape}, validation {x_val.shape}, test {x_test.shape}; "
    f"images in [{x_train.min()}, {x_train.max()}]"
)
print("training examples per class:", np.bincount(y_train))

# %%
model = models.mlp_2nn(seed=SEED)
optimizer = nn.SGD(model, lr=0.05, momentum=0.9)
start = time.perf_counter()
history = fit(
    model,
    optimizer,
    x_train,
    y_train,
    epochs=2,
    batch_size=64,
    seed=SEED,
    x_val=x_val,
    y_val=y_val,
    progress=False,
)
seconds = time.perf_counter() - start
test_loss, test_acc = evaluate(model, x_test, y_test)
print(
    f"{len(history.step_loss)} steps in {seconds:.1f} s; validation accuracy per epoch: "
    f"{[round(a, 4) for a in history.val_accuracy]}; test accuracy {test_acc:.4f}"
)
assert test_acc > 0.9
assert history.step_loss[-1] < history.step_loss[0]

# %%
history.plot()

# %% [markdown]
# ## 6. Measured memory of a training step
#
# Section 1 *predicted* memory. Now we *measure* it. `measure_training_step` runs one real
# step (forward, loss, backward, optimizer update) under `tracemalloc` and reports:
#
# * the categories read from array sizes: parameters, gradients, optimizer state, the input
#   batch, and the activations the layers saved during forward (right when forward ends);
# * the measured peak of the step and of each phase, above what existed before the step;
# * `scratch`: whatever part of the total peak the categories do not explain.
#
# The first step of a fresh model is special (it allocates the gradient buffers and the
# momentum), so we take one step first and measure the second, the steady state that every
# later step repeats. Then we ask the analytic model for the same configuration.

# %%
batch_x, batch_y = x_train[:64], y_train[:64]
lenet = models.lenet5(seed=SEED)
lenet_opt = nn.SGD(lenet, lr=0.05, momentum=0.9)
measure_training_step(lenet, lenet_opt, batch_x, batch_y)  # warm-up: allocates grads, momentum
measured = measure_training_step(lenet, lenet_opt, batch_x, batch_y)
analytic = analytic_training_memory(lenet, (1, 28, 28), 64, optimizer=lenet_opt)
assert measured.steady_state

print(f"backend {measured.backend}, batch 64, SGD with momentum")
print(f"{'category':<16} {'measured':>10} {'analytic':>10}")
for category, value in measured.breakdown().items():
    print(
        f"{category:<16} {format_bytes(value):>10} "
        f"{format_bytes(analytic.breakdown()[category]):>10}"
    )
print(
    f"{'total peak':<16} {format_bytes(measured.total_peak_bytes):>10} "
    f"{format_bytes(analytic.total_peak_bytes):>10}"
)
print(
    "\nphase peaks (above the step's start):",
    {p.name: format_bytes(p.peak_bytes) for p in measured.phases},
)

# %%
errors = compare(analytic, measured)
print({k: f"{v:+.1%}" for k, v in errors.items()})
TOLERANCE = 0.10  # the analytic model is stated to be within 10% of the measured peak
assert abs(errors["total_peak"]) < TOLERANCE and abs(errors["step_peak"]) < TOLERANCE
for category in ("parameters", "gradients", "optimizer_state", "activations"):
    assert errors[category] == 0, category  # read from shapes: exact

# %%
categories = list(measured.breakdown())
positions = np.arange(len(categories))
fig, ax = plt.subplots(figsize=(9, 4))
ax.bar(
    positions - 0.2,
    [measured.breakdown()[c] / 2**10 for c in categories],
    0.4,
    label="measured (tracemalloc)",
)
ax.bar(
    positions + 0.2,
    [analytic.breakdown()[c] / 2**10 for c in categories],
    0.4,
    label="analytic model",
)
ax.set_xticks(positions, [c.replace("_", "\n") for c in categories])
ax.set(ylabel="KiB", title=f"LeNet-5 training step, batch 64 ({measured.backend} backend)")
ax.legend()
ax.grid(axis="y", alpha=0.3)

# %%
parts = measured.breakdown()
param_like = parts["parameters"] + parts["gradients"] + parts["optimizer_state"]
batch_like = parts["activations"] + parts["scratch"]
print(
    f"parameters + gradients + momentum: {format_bytes(param_like)} "
    f"({param_like / measured.total_peak_bytes:.0%} of the peak); "
    f"activations + scratch: {format_bytes(batch_like)} "
    f"({batch_like / measured.total_peak_bytes:.0%})"
)
assert batch_like > param_like

# %% [markdown]
# For a small CNN at batch 64, the memory that scales with the batch (saved activations and
# the scratch of the kernels) dominates. The kernels matter too: the analytic model knows what
# each backend allocates, so we can ask it about the backend we did not measure:

# %%
by_backend = {
    name: analytic_training_memory(lenet, (1, 28, 28), 64, optimizer=lenet_opt, backend=name)
    for name in ("numpy", "cython")
}
for name, pred in by_backend.items():
    print(
        f"{name:>6} backend: scratch {format_bytes(pred.breakdown()['scratch']):>9}, "
        f"total peak {format_bytes(pred.total_peak_bytes):>9} (peak during {pred.peak_phase})"
    )
# whole-batch im2col (numpy) against one image at a time (Cython)
assert by_backend["numpy"].total_peak_bytes > by_backend["cython"].total_peak_bytes

# %% [markdown]
# ## 7. Freezing weights: the bias-only update (TinyTL)
#
# Section 2 showed that a linear or convolution layer keeps its input only to compute `dW`.
# TinyTL (Cai et al., NeurIPS 2020) exploits this for transfer learning: **freeze the weights,
# train only the biases**. The gradient of a bias is the sum of `dout`, so frozen layers store
# no inputs; what remains are the ReLU masks (1 byte per element here, 1 bit in a tight
# implementation) and the max-pooling indices. Gradients and optimizer state shrink to the size
# of the biases. Let us measure it on LeNet-5, both variants in their steady state:


# %%
def steady_report(net):
    """Measured and predicted memory of a steady-state step of `net` (SGD with momentum)."""
    opt = nn.SGD(net, lr=0.05, momentum=0.9)
    measure_training_step(net, opt, batch_x, batch_y)  # warm-up
    report = measure_training_step(net, opt, batch_x, batch_y)
    return report, analytic_training_memory(net, (1, 28, 28), 64, optimizer=opt)


full_net = models.lenet5(seed=SEED)
bias_net = models.lenet5(seed=SEED).freeze(kind="weight")
(full, full_pred), (bias_only, bias_pred) = steady_report(full_net), steady_report(bias_net)

rows = [
    ("trainable parameters", full_net.num_params(True), bias_net.num_params(True), str),
    ("gradients", full.gradients, bias_only.gradients, format_bytes),
    ("optimizer state", full.optimizer_state, bias_only.optimizer_state, format_bytes),
    ("saved activations", full.saved_new_bytes, bias_only.saved_new_bytes, format_bytes),
    ("peak of the step", full.peak_bytes, bias_only.peak_bytes, format_bytes),
    ("total peak", full.total_peak_bytes, bias_only.total_peak_bytes, format_bytes),
]
print(f"{'':<22} {'full update':>12} {'bias only':>12}")
for label, f_value, b_value, fmt in rows:
    print(f"{label:<22} {fmt(f_value):>12} {fmt(b_value):>12}")
print("\nwhat bias-only still saves, per layer (measured bytes; contents from the analytic model):")
described = {row["name"]: row for row in bias_pred.per_layer}
for name, nbytes in bias_only.saved_per_layer.items():
    print(
        f"  {name:<13} {described[name]['type']:<10} {format_bytes(nbytes):>10}  "
        f"{described[name]['saved']}"
    )

# %%
assert bias_only.gradients < full.gradients / 100
largest = max(bias_only.saved_per_layer, key=bias_only.saved_per_layer.get)
assert isinstance(bias_net[largest], nn.MaxPool2d)
assert all(
    isinstance(bias_net[name], (nn.ReLU, nn.MaxPool2d)) for name in bias_only.saved_per_layer
)
assert bias_only.saved_new_bytes < full.saved_new_bytes
assert bias_only.total_peak_bytes < full.total_peak_bytes
for pred, report in [(full_pred, full), (bias_pred, bias_only)]:
    assert abs(compare(pred, report)["total_peak"]) < TOLERANCE

# %% [markdown]
# Gradients and momentum almost vanish, and so do the saved layer inputs. Of the activations,
# only the ReLU masks and the pooling indices are left, and the largest of them is the argmax
# of the first max pooling: int64, 8 bytes per pooled value, where 2 bits would do for a 2x2
# window (a compact engine would pack them).
#
# The peak of the step, however, barely moves. The phases tell why:

# %%
for label, report in [("full update", full), ("bias only", bias_only)]:
    peak_phase = max(report.phases, key=lambda phase: phase.peak_bytes)
    print(
        f"{label:<12} step peak in {peak_phase.name!r}: "
        + ", ".join(f"{p.name} {format_bytes(p.peak_bytes)}" for p in report.phases)
    )
peak_change = abs(full.peak_bytes - bias_only.peak_bytes) / full.peak_bytes
resident_change = full.resident_bytes - bias_only.resident_bytes
total_change = full.total_peak_bytes - bias_only.total_peak_bytes
print(
    f"step peak changes by {peak_change:.1%}; the total peak drops by "
    f"{format_bytes(total_change)}, of which {format_bytes(resident_change)} are the "
    "gradient and momentum buffers"
)
assert peak_change < 0.05
for report, pred in [(full, full_pred), (bias_only, bias_pred)]:
    assert max(report.phases, key=lambda phase: phase.peak_bytes).name == "backward"
    assert pred.peak_phase == "backward"
conv1_out = next(r for r in bias_net.describe((64, 1, 28, 28)) if r["name"] == "features.0")
conv1_grad_bytes = 4 * int(np.prod(conv1_out["output_shape"]))
print(
    f"the gradient of the first convolution's output, {conv1_out['output_shape']} in float32, "
    f"alone takes {format_bytes(conv1_grad_bytes)}"
)

# %% [markdown]
# The step peaks during **backward**, when the gradient reaches the first, largest layers:
# there the gradients are as large as the largest activations, and a layer's backward holds its
# output gradient and its input gradient at the same time (plus, on the numpy backend, the
# im2col columns of the whole batch). Because the two peaks are equal,
# both variants must hold the same arrays at that moment: the layer inputs that only the full
# update kept have already been used and freed. Bias-only training still needs the gradient
# all the way down, since the first convolution has a bias to train. So on this model the
# saving in the peak is essentially the gradient and optimizer buffers; the activation saving
# shows in what is alive at the end of forward (the "loss" phase).
#
# TinyTL's large savings come on big networks at high resolution where the stored activations
# themselves set the peak; chapters 04 (sparse update), 06 (recomputation) and 12 (training
# engines that skip backward work nobody needs) attack the rest.
#
# The cheapest choice of all is to train only the classifier. The body then runs in inference
# mode: it saves nothing for backward, so it can even process the batch **one image at a
# time**, and its output features are all the head needs. A `Sequential` runs backward through
# every layer it holds, so we split the model ourselves:

# %%
head_net = models.lenet5(seed=SEED)
body, head = head_net["features"], head_net["classifier"]
body.eval()  # inference mode, as in PyTorch: fixed batchnorm statistics, no dropout


def extract_features(images):
    """The body's output, one image at a time (nothing is kept for a backward pass)."""
    return np.concatenate([body.forward(images[i : i + 1]) for i in range(len(images))])


body_whole = measure_peak(body.forward, batch_x)
body_single = measure_peak(extract_features, batch_x)
features = body_single.result
assert np.allclose(features, body_whole.result, atol=1e-6)
head_opt = nn.SGD(head, lr=0.05, momentum=0.9)
measure_training_step(head, head_opt, features, batch_y)  # warm-up
head_report = measure_training_step(head, head_opt, features, batch_y)
head_pred = analytic_training_memory(head, features.shape[1:], 64, optimizer=head_opt)
head_total = max(body_single.peak_bytes + batch_x.nbytes, head_report.total_peak_bytes)
print(
    f"body, inference on the whole batch: peak {format_bytes(body_whole.peak_bytes)}; "
    f"one image at a time: {format_bytes(body_single.peak_bytes)}"
)
print(
    f"training the head on the features: total peak {format_bytes(head_report.total_peak_bytes)}"
    f" (analytic {format_bytes(head_pred.total_peak_bytes)})"
)
print(
    f"classifier only: about {format_bytes(head_total)}, "
    f"{head_total / full.total_peak_bytes:.0%} of the full update"
)
assert abs(compare(head_pred, head_report)["total_peak"]) < TOLERANCE
assert body_single.peak_bytes < body_whole.peak_bytes
assert head_total < bias_only.total_peak_bytes

# %%
plot_memory_breakdown(
    [full, bias_only, head_report],
    labels=["full\nupdate", "bias\nonly", "classifier\nonly (head)"],
    title=f"LeNet-5, batch 64 ({measured.backend} backend), measured",
)

# %% [markdown]
# (The "classifier only" bar shows the head's training step; the body's inference pass comes
# before it, one image at a time, and its memory is freed by then.) Training only the head is
# cheap but can only re-weight fixed features; the bias-only update adapts every layer a
# little. Chapter 08 measures the accuracy side of this trade-off.
#
# ## Summary
#
# * Training memory = parameters + gradients + optimizer state + saved activations +
#   scratch. The last two grow with the batch and dominate quickly.
# * A layer is a forward/backward pair; what its forward must save is decided by which
#   gradients its backward computes (`x` only for `dW`).
# * im2col turns a convolution into one matrix product at the cost of OH·OW·KH·KW·Cin numbers
#   per image (9x the input for a 3x3 "same" convolution).
# * Gradient-check every backward in float64 with a well-chosen step; a correct backward gives
#   relative errors far below `1e-6`, a bug `1e-2` or more.
# * The numpy reference and the Cython kernels agree to rounding error; speed is measured,
#   never assumed.
# * Memory can be *measured* (tracemalloc) and *predicted* (shapes); here they agree within
#   10%, and freezing weights is the first way to cut it.
#
# Next: exercise 00 (`exercises/student/00_foundations.ipynb`) has you write the gradient
# checker, the linear and convolution layers, the loss and the optimizer step yourself.

# %%
print(f"this notebook ran in {time.perf_counter() - notebook_start:.0f} s")
