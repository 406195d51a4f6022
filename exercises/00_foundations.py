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
# # Exercise 00 — Foundations: layers as forward/backward pairs
#
# On a microcontroller there is no autograd: every layer is a pair of functions, a *forward*
# that computes the output and a *backward* that turns the gradient of the loss with respect
# to the output into gradients with respect to the input and the parameters. In this exercise
# you write the pieces that chapter 00 builds on:
#
# 1. a **gradient checker** (centered differences and the relative error), to test everything
#    else;
# 2. a **fully connected (linear) layer**, forward and backward;
# 3. a **2-D convolution** through **im2col**, the layout trick that turns a convolution into
#    one matrix multiplication;
# 4. the **softmax cross-entropy** loss and its gradient, computed without overflow;
# 5. one step of **SGD with momentum**, updating the weights in place.
#
# **How you are graded.** The autograder looks up your functions *by name*; keep the names
# and signatures. You may add cells, split cells, and write helper functions. Each task is
# graded in a fresh, sandboxed Python process with a time limit, so an infinite loop costs
# only that task; the grader calls your functions on its own inputs and compares the results
# in its own process. Each task has several checks worth part of its points (shown in the
# feedback), so a partly right task earns part of its points. Cells starting with
# `### grader: skip` (the self-checks and demos) are not run by the grader. While grading,
# your code can import the standard library, numpy and scipy, but not `tinyodl` (the point
# is to write it yourself) nor plotting libraries: put plots in `### grader: skip` cells.
# Some tasks have an extra hidden test whose result you see after grades are published.
#
# The checks enforce exactly what the task text and the docstrings say: the shapes and
# dtypes of what you return (float32 inputs give float32 outputs wherever a docstring says
# "same dtype"), arrays updated in place where it says so, and inputs left as they were.
#
# Conventions (the same as PyTorch and tinyodl): images are `(N, C, H, W)`, convolution
# weights `(F, C, KH, KW)`, linear weights `(out_features, in_features)`.

# %%
# tinyodl-exercise: 00_foundations
import numpy as np

rng = np.random.default_rng(0)

# %% [markdown]
# ## Part 1 — Gradient checking
#
# The centered difference
#
# $$\frac{\partial f}{\partial x_i} \approx \frac{f(x + h e_i) - f(x - h e_i)}{2h}$$
#
# has error $O(h^2)$, against $O(h)$ for the one-sided difference. With float64 and
# $h = 10^{-5}$ it agrees with a correct analytic gradient to about $10^{-8}$ relative error.
#
# We compare two arrays with the **relative error**
# $\max_i |a_i - b_i| / \max(10^{-8}, |a_i| + |b_i|)$: around $10^{-7}$ or below means
# the gradients agree; $10^{-2}$ or above means a bug.
#
# **Task 1 (2 points).** Implement `numerical_gradient(f, x, h)` (perturb one entry at a
# time, in place, and put it back afterwards!) and `relative_error(a, b)`. The gradient is a
# float64 array of the shape of `x`, computed with the step `h` you are given, and `x` holds
# its original values when the function returns.


# %%
def numerical_gradient(f, x, h=1e-5):
    """Centered-difference gradient of a scalar function.

    Parameters
    ----------
    f : callable
        ``f(x) -> float``.
    x : ndarray, float64, any shape
        Point at which to differentiate. May be modified during the call but must hold its
        original values when the function returns.
    h : float
        Step size.

    Returns
    -------
    grad : ndarray, same shape as x, float64
    """
    ### BEGIN SOLUTION
    grad = np.zeros(x.shape, dtype=np.float64)
    for index in np.ndindex(x.shape):
        original = x[index]
        x[index] = original + h
        f_plus = f(x)
        x[index] = original - h
        f_minus = f(x)
        x[index] = original
        grad[index] = (f_plus - f_minus) / (2 * h)
    return grad
    ### END SOLUTION


def relative_error(a, b):
    """Largest elementwise relative error ``|a - b| / max(1e-8, |a| + |b|)`` as a float."""
    ### BEGIN SOLUTION
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))
    ### END SOLUTION


# %%
### grader: skip
# Self-check: d/dx sum(x**3) = 3 x**2.
x = rng.standard_normal((3, 4))
print("relative error:", relative_error(numerical_gradient(lambda v: np.sum(v**3), x), 3 * x**2))

# %% [markdown]
# ## Part 2 — The linear layer
#
# Forward: $y = x W^\top + b$ with $x$ of shape `(N, in)`, $W$ of shape `(out, in)`,
# $b$ of shape `(out,)`. Given $\partial L / \partial y$ (`dout`, shape `(N, out)`) the
# backward pass returns
#
# $$\frac{\partial L}{\partial x} = \text{dout}\, W, \qquad
#   \frac{\partial L}{\partial W} = \text{dout}^\top x, \qquad
#   \frac{\partial L}{\partial b} = \textstyle\sum_n \text{dout}_n.$$
#
# **Task 2 (1 point).** `linear_forward`. **Task 3 (2 points).** `linear_backward`.
# Keep the input dtype (float32 in, float32 out).


# %%
def linear_forward(x, w, b):
    """Fully connected layer: ``x @ w.T + b``.

    x : (N, in); w : (out, in); b : (out,). Returns (N, out).
    """
    ### BEGIN SOLUTION
    return x @ w.T + b
    ### END SOLUTION


def linear_backward(dout, x, w):
    """Gradients of the linear layer.

    dout : (N, out); x : (N, in); w : (out, in). Returns ``(dx, dw, db)`` with shapes
    (N, in), (out, in), (out,).
    """
    ### BEGIN SOLUTION
    dx = dout @ w
    dw = dout.T @ x
    db = dout.sum(axis=0)
    return dx, dw, db
    ### END SOLUTION


# %%
### grader: skip
# Self-check with your gradient checker: L = sum(linear_forward(x, w, b) * g).
x, w, b = rng.standard_normal((4, 5)), rng.standard_normal((3, 5)), rng.standard_normal(3)
g = rng.standard_normal((4, 3))
dx, dw, db = linear_backward(g, x, w)
loss_of_x = lambda v: np.sum(linear_forward(v, w, b) * g)  # noqa: E731
loss_of_w = lambda v: np.sum(linear_forward(x, v, b) * g)  # noqa: E731
loss_of_b = lambda v: np.sum(linear_forward(x, w, v) * g)  # noqa: E731
print("dx", relative_error(dx, numerical_gradient(loss_of_x, x)))
print("dw", relative_error(dw, numerical_gradient(loss_of_w, w)))
print("db", relative_error(db, numerical_gradient(loss_of_b, b)))

# %% [markdown]
# ## Part 3 — Convolution through im2col
#
# A convolution with a `(KH, KW)` kernel, stride $s$ and zero padding $p$ has output size
# $OH = \lfloor (H + 2p_h - KH) / s_h \rfloor + 1$ (the same for the width).
#
# **im2col** copies every receptive field into a column: for image $n$, column
# $oh \cdot OW + ow$ holds the `C*KH*KW` input values under the kernel at output position
# $(oh, ow)$, ordered channel first, then kernel row, then kernel column — the same order as
# `w.reshape(F, -1)`. Then the whole convolution is one matrix product per image:
#
# $$\text{out}_n = W_{\text{flat}}\, \text{cols}_n + b, \qquad
#   W_{\text{flat}} \in \mathbb{R}^{F \times C K_H K_W},\;
#   \text{cols}_n \in \mathbb{R}^{C K_H K_W \times OH\,OW}.$$
#
# This is how most CPU libraries compute convolutions (and why im2col's memory, `KH*KW`
# times the input, matters on a device with 256 KB of RAM).
#
# **Task 4 (2 points).** `im2col`. **Task 5 (2 points + 1 hidden).** `conv2d_forward` using
# your `im2col` and a matrix product. `kernel_size`, `stride` and `padding` are an int or an
# `(h, w)` pair; use the helpers below. Both keep the dtype of `x` (float32 in, float32 out).


# %%
def pair(value):
    """``3 -> (3, 3)``; ``(2, 1) -> (2, 1)``."""
    return (value, value) if np.isscalar(value) else tuple(value)


def conv_output_size(size, kernel, stride, padding):
    """Output length of a convolution along one axis."""
    return (size + 2 * padding - kernel) // stride + 1


# %%
def im2col(x, kernel_size, stride=1, padding=0):
    """Unfold image patches into columns.

    x : (N, C, H, W). Returns cols of shape (N, C*KH*KW, OH*OW), same dtype as x.
    Start with ``pair(kernel_size)``, ... and ``conv_output_size``; ``np.pad`` adds the zeros.
    """
    ### BEGIN SOLUTION
    (kh, kw), (sh, sw), (ph, pw) = pair(kernel_size), pair(stride), pair(padding)
    n, c, h, w = x.shape
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = padded[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw]
    return cols.reshape(n, c * kh * kw, oh * ow)
    ### END SOLUTION


def conv2d_forward(x, w, b=None, stride=1, padding=0):
    """2-D convolution (cross-correlation, as in PyTorch) via im2col.

    x : (N, C, H, W); w : (F, C, KH, KW); b : (F,) or None. Returns (N, F, OH, OW),
    same dtype as x.
    """
    ### BEGIN SOLUTION
    n, _, h, width = x.shape
    f, _, kh, kw = w.shape
    (sh, sw), (ph, pw) = pair(stride), pair(padding)
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(width, kw, sw, pw)
    cols = im2col(x, (kh, kw), stride, padding)
    out = np.matmul(w.reshape(f, -1), cols)
    if b is not None:
        out += b[:, None]
    return out.reshape(n, f, oh, ow)
    ### END SOLUTION


# %%
### grader: skip
# Self-check: a 1x1 convolution is a linear layer applied at every pixel.
x, w = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((6, 3, 1, 1))
expected = np.einsum("nchw,fc->nfhw", x, w[:, :, 0, 0])
print("1x1 conv:", relative_error(conv2d_forward(x, w), expected))
out = conv2d_forward(x, rng.standard_normal((6, 3, 3, 3)), stride=2, padding=1)
print("output shape with a 3x3 kernel, stride 2, padding 1:", out.shape, "expected (2, 6, 2, 3)")

# %% [markdown]
# ## Part 4 — Softmax cross-entropy
#
# For logits $z \in \mathbb{R}^{N \times K}$ and labels $y$, the mean loss is
# $L = \frac{1}{N} \sum_n \big(\log \sum_k e^{z_{nk}} - z_{n y_n}\big)$ and its gradient is
# $\partial L / \partial z = (\text{softmax}(z) - \text{onehot}(y)) / N$.
#
# $e^{z}$ overflows float64 for $z > 709$. Subtract the row maximum first (it cancels out)
# so that large logits give a finite, exact answer.
#
# **Task 6 (2 points).** `softmax_cross_entropy(logits, y)` returning `(loss, dlogits)`.


# %%
def softmax_cross_entropy(logits, y):
    """Mean softmax cross-entropy and its gradient.

    logits : (N, K) float; y : (N,) int labels in [0, K). Returns ``(loss, dlogits)``:
    a float and an array of shape (N, K), both finite even for logits of magnitude 1000.
    """
    ### BEGIN SOLUTION
    n = logits.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_probs[np.arange(n), y].mean()
    dlogits = np.exp(log_probs)
    dlogits[np.arange(n), y] -= 1
    return float(loss), dlogits / n
    ### END SOLUTION


# %%
### grader: skip
z, labels = rng.standard_normal((5, 4)), rng.integers(0, 4, size=5)
loss, dz = softmax_cross_entropy(z, labels)
numeric = numerical_gradient(lambda v: softmax_cross_entropy(v, labels)[0], z)
print("loss", loss, "(about log 4 =", np.log(4), "for random logits)")
print("gradient:", relative_error(dz, numeric))
print("large logits:", softmax_cross_entropy(1000 * z, labels)[0])

# %% [markdown]
# ## Part 5 — SGD with momentum
#
# PyTorch's momentum SGD keeps a velocity buffer $v$ per parameter:
#
# $$v \leftarrow \mu v + g, \qquad w \leftarrow w - \eta v.$$
#
# On a device every byte counts, so the update happens **in place**: no new arrays for $w$
# or $v$ (use `*=`, `+=`, `-=`, or `out=`).
#
# **Task 7 (1 point).** `sgd_momentum_step(w, grad, velocity, lr, momentum)`; update `w` and
# `velocity` in place and return them (the same array objects you were given).


# %%
def sgd_momentum_step(w, grad, velocity, lr, momentum=0.9):
    """One in-place step of SGD with momentum (PyTorch semantics, no dampening).

    w, grad, velocity : arrays of the same shape. Returns ``(w, velocity)``, the same objects.
    """
    ### BEGIN SOLUTION
    velocity *= momentum
    velocity += grad
    w -= lr * velocity
    return w, velocity
    ### END SOLUTION


# %% [markdown]
# ## Part 6 — Putting it together
#
# A softmax classifier trained with your layer, loss and optimizer on three Gaussian blobs.
# The loss should fall from about $\log 3 \approx 1.1$ to below 0.1.

# %%
### grader: skip
centers = np.array([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
labels = rng.integers(0, 3, size=300)
points = centers[labels] + 0.5 * rng.standard_normal((300, 2))
weight, bias = np.zeros((3, 2)), np.zeros(3)
v_weight, v_bias = np.zeros_like(weight), np.zeros_like(bias)
for step in range(101):
    logits = linear_forward(points, weight, bias)
    loss, dlogits = softmax_cross_entropy(logits, labels)
    _, dweight, dbias = linear_backward(dlogits, points, weight)
    sgd_momentum_step(weight, dweight, v_weight, lr=0.1)
    sgd_momentum_step(bias, dbias, v_bias, lr=0.1)
    if step % 20 == 0:
        print(f"step {step:3d}  loss {loss:.4f}")

# %% [markdown]
# **Next.** `tinyodl.nn` packages these pairs into layers with `forward`/`backward` methods,
# and `tinyodl.ops.im2col` has a Cython twin of your im2col; chapter 00 compares their speed.
