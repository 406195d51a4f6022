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
# # Exercise 11 — Security of on-device learning: attacks and their measures
#
# Chapter 11 attacks a model in every way the textbook lists (section 12.6) and measures
# each defense. In this exercise you write the core of seven of those tools, in numpy:
#
# 1. **FGSM**, the one-step evasion attack;
# 2. the **projections** onto the L∞ and L2 balls that keep an attack within its budget;
# 3. **PGD**, the iterated attack, given a function that returns input gradients;
# 4. **label flipping**, the simplest data-poisoning attack;
# 5. a **CUSUM** chart, the drift detector that guards a training stream;
# 6. **gradient inversion**: recover a client's input from its federated update;
# 7. the **scores of a membership-inference attack** (ROC AUC and advantage) and the bound
#    differential privacy puts on the advantage.
#
# **Points: 14** (task 1: 1.5, task 2: 2, task 3: 2.5, task 4: 2, task 5: 2, task 6: 1.5,
# task 7: 2.5).
#
# **How you are graded.** The autograder calls your functions *by name* on its own inputs in
# a fresh, sandboxed Python process, and compares the results in its own process with
# reference implementations; keep the names and signatures, and add cells or helpers as you
# like. Each task has several checks worth part of its points. Cells that start with
# `### grader: skip` (self-checks, demos, plots) are not run by the grader. While grading,
# your code can import the standard library, numpy and scipy, and nothing from `tinyodl`
# (the point is to write it).
#
# The checks enforce what the task texts say: shapes and dtypes (a float32 input gives a
# float32 output wherever the text says "same dtype"), and inputs left unmodified where it
# says so. Images are `(N, C, H, W)` float arrays with values in `[0, 1]`.

# %%
# tinyodl-exercise: 11_security
import numpy as np

rng = np.random.default_rng(0)

# %% [markdown]
# ## Part 1 — Evasion
#
# **FGSM** (Goodfellow et al. 2015) moves every pixel by ε in the direction that increases
# the loss, then clips to the valid range:
#
# $$x' = \mathrm{clip}_{[lo,\,hi]}\big(x + \varepsilon\,\mathrm{sign}(g)\big),
#   \qquad g = \nabla_x L(x, y).$$
#
# A *targeted* attack wants the model to output a chosen class $t$, so it *decreases* the
# loss of $t$: $x' = \mathrm{clip}(x - \varepsilon\,\mathrm{sign}(g_t))$ with
# $g_t = \nabla_x L(x, t)$.
#
# **Task 1 (1.5 points).** `fgsm(x, grad, eps, targeted=False, clip=(0.0, 1.0))`. `grad` is
# the gradient of the loss (of the true labels, or of the targets when `targeted`) with
# respect to `x`, the same shape. Return a new array of the same shape and dtype as `x`;
# do not modify `x` or `grad`. A pixel whose gradient is exactly 0 does not move
# (`np.sign(0) == 0`).


# %%
def fgsm(x, grad, eps, targeted=False, clip=(0.0, 1.0)):
    """One FGSM step. x, grad: (N, ...) -> (N, ...), same dtype as x."""
    ### BEGIN SOLUTION
    direction = -np.sign(grad) if targeted else np.sign(grad)
    out = x + np.asarray(eps, dtype=x.dtype) * direction.astype(x.dtype)
    return np.clip(out, clip[0], clip[1]).astype(x.dtype, copy=False)
    ### END SOLUTION


# %% [markdown]
# An attack's budget is a ball around the clean input: $\|x' - x\| \le \varepsilon$. After
# each step, PGD projects the perturbation $\delta = x' - x$ back onto the ball, **one
# example (row) at a time**:
#
# * L∞: clip every entry of $\delta$ to $[-\varepsilon, \varepsilon]$;
# * L2: if $\|\delta_n\|_2 > \varepsilon$, rescale the row to length ε,
#   $\delta_n \leftarrow \varepsilon\,\delta_n / \|\delta_n\|_2$; rows inside the ball (and
#   zero rows) are unchanged.
#
# **Task 2 (2 points).** `project_linf(delta, eps)` and `project_l2(delta, eps)`. `delta` is
# `(N, ...)` of any number of trailing dimensions; the L2 norm of a row is over all its
# entries. Return new arrays of the same shape and dtype; do not modify `delta`.


# %%
def project_linf(delta, eps):
    """Project each row of delta onto the L-infinity ball of radius eps."""
    ### BEGIN SOLUTION
    return np.clip(delta, -eps, eps).astype(delta.dtype, copy=False)
    ### END SOLUTION


def project_l2(delta, eps):
    """Project each row of delta onto the L2 ball of radius eps."""
    ### BEGIN SOLUTION
    flat = delta.reshape(len(delta), -1).astype(np.float64)
    norms = np.sqrt((flat**2).sum(axis=1))
    scale = np.where(norms > eps, eps / np.where(norms > 0, norms, 1.0), 1.0)
    shape = (len(delta),) + (1,) * (delta.ndim - 1)
    return (delta * scale.reshape(shape)).astype(delta.dtype)
    ### END SOLUTION


# %% [markdown]
# **PGD** (Madry et al. 2018) repeats a small FGSM step of size α and projects back:
#
# $$x_{k+1} = x + P_\varepsilon\big(\mathrm{clip}_{[0,1]}(x_k + \alpha\,\mathrm{sign}(g_k))
#   - x\big), \qquad g_k = \nabla_x L(x_k, y).$$
#
# **Task 3 (2.5 points).** `pgd_linf(grad_fn, x, y, eps, alpha, steps, x_start=None)`, the
# untargeted L∞ version. `grad_fn(x_k, y)` returns the loss gradient at `x_k` (same shape).
# Start from `x_start` if it is given (a random point of the ball, say), else from `x`; take
# exactly `steps` steps in the order above: step, clip to `[0, 1]`, then project onto the
# ball around the **clean** `x` (use your `project_linf`). Return the adversarial examples,
# same shape and dtype as `x`; every one must satisfy `|x' - x| <= eps` and `0 <= x' <= 1`.


# %%
def pgd_linf(grad_fn, x, y, eps, alpha, steps, x_start=None):
    """Untargeted L-infinity PGD. x: (N, ...) in [0, 1] -> (N, ...), same dtype."""
    ### BEGIN SOLUTION
    x_adv = np.array(x if x_start is None else x_start, dtype=x.dtype, copy=True)
    for _ in range(steps):
        g = grad_fn(x_adv, y)
        x_adv = np.clip(x_adv + np.asarray(alpha, x.dtype) * np.sign(g).astype(x.dtype), 0, 1)
        x_adv = x + project_linf(x_adv - x, eps)
    return x_adv.astype(x.dtype, copy=False)
    ### END SOLUTION


# %%
### grader: skip
# Self-check on a linear softmax model, whose input gradient is W^T (softmax(Wx) - onehot).
W = rng.standard_normal((3, 8))
x_demo = rng.uniform(0, 1, size=(5, 8))
y_demo = rng.integers(0, 3, size=5)


def softmax_grad(x, y):
    z = x @ W.T
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y] -= 1
    return p @ W


adv = pgd_linf(softmax_grad, x_demo, y_demo, eps=0.1, alpha=0.02, steps=10)
print(
    "max |x' - x| =", np.abs(adv - x_demo).max(), "; in [0, 1]:", adv.min() >= 0 and adv.max() <= 1
)
print(
    "prediction before", (x_demo @ W.T).argmax(1), "after", (adv @ W.T).argmax(1), "labels", y_demo
)

# %% [markdown]
# ## Part 2 — Poisoning and its detection
#
# **Label flipping**: an attacker who can label some of the device's training examples
# gives a fraction of them a *wrong* label.
#
# **Task 4 (2 points).** `flip_labels(y, fraction, num_classes, seed)`: choose exactly
# `round(fraction * N)` distinct examples at random (use
# `np.random.default_rng(seed)`), give each a label drawn uniformly from the
# `num_classes - 1` **other** classes, and return `(y_new, flipped)`: a new int array of the
# same dtype as `y`, and a boolean mask of shape `(N,)`, True exactly where the label
# changed. The same seed must give the same result; `y` must not be modified.


# %%
def flip_labels(y, fraction, num_classes, seed):
    """Random label flipping. y: (N,) int -> (y_new (N,) same dtype, flipped (N,) bool)."""
    ### BEGIN SOLUTION
    rng = np.random.default_rng(seed)
    n = len(y)
    chosen = rng.choice(n, size=int(round(fraction * n)), replace=False)
    y_new = y.copy()
    y_new[chosen] = (y[chosen] + rng.integers(1, num_classes, size=len(chosen))) % num_classes
    return y_new, y_new != y
    ### END SOLUTION


# %% [markdown]
# A device can guard its training stream by computing, for every batch, a statistic $s_t$
# (chapter 11 uses the fraction of examples a class-conditional PCA finds suspicious) and
# watching it with a **CUSUM** chart (Page 1954). With the in-control mean μ and standard
# deviation σ measured on trusted data,
#
# $$z_t = (s_t - \mu) / \sigma, \qquad S_0 = 0, \qquad S_t = \max(0,\ S_{t-1} + z_t - k),$$
#
# and the chart is in **alarm** at batch $t$ when $S_t > h$. Small shifts that no single batch
# reveals accumulate in $S_t$.
#
# **Task 5 (2 points).** `cusum(stats, k, h, mean, std)` returns `(S, first_alarm)`: `S` a
# float64 array of the $S_t$, one per statistic, and `first_alarm` the index (0-based, a
# Python `int`) of the first batch in alarm, or `None` if there is none.


# %%
def cusum(stats, k, h, mean, std):
    """One-sided CUSUM. stats: (T,) -> (S (T,) float64, first alarm index or None)."""
    ### BEGIN SOLUTION
    s, history, first = 0.0, [], None
    for t, value in enumerate(np.asarray(stats, dtype=np.float64)):
        s = max(0.0, s + (value - mean) / std - k)
        history.append(s)
        if first is None and s > h:
            first = t
    return np.array(history, dtype=np.float64), first
    ### END SOLUTION


# %% [markdown]
# ## Part 3 — Privacy
#
# In federated learning (FedSGD) a client sends the gradient of its loss. If the first layer
# is dense with a bias, $a = Wx + b$, and the client used **one** example, then
# $\partial L/\partial W_{i,:} = (\partial L/\partial a_i)\,x$ and
# $\partial L/\partial b_i = \partial L/\partial a_i$: every row with a non-zero bias
# gradient is the input, scaled.
#
# **Task 6 (1.5 points).** `invert_dense_gradient(grad_w, grad_b)` with `grad_w` of shape
# `(out, in)` and `grad_b` of shape `(out,)` returns the input `x` of shape `(in,)`, float64.
# Use all rows, not one: the least-squares solution
# $x = \sum_i g_{b,i}\, g_{W,i} / \sum_i g_{b,i}^2$ is exact for a batch of one and the most
# stable when some bias gradients are tiny. Raise `ValueError` when every bias gradient is 0.


# %%
def invert_dense_gradient(grad_w, grad_b):
    """Recover the input of a dense layer (batch of one) from its gradients."""
    ### BEGIN SOLUTION
    gw, gb = np.asarray(grad_w, np.float64), np.asarray(grad_b, np.float64)
    denom = gb @ gb
    if denom == 0:
        raise ValueError("invert_dense_gradient: the bias gradient is zero")
    return gb @ gw / denom
    ### END SOLUTION


# %% [markdown]
# A **membership-inference** attack gives every example a score (higher = "more likely a
# member of the training set"; for the loss-threshold attack, the negative loss). Two
# numbers summarise it:
#
# * the **ROC AUC**: the probability that a random member scores higher than a random
#   non-member, ties counting one half;
# * the **advantage**: $\max_\tau \mathrm{TPR}(\tau) - \mathrm{FPR}(\tau)$ for the rule
#   "member if score ≥ τ", where TPR is the fraction of members and FPR the fraction of
#   non-members with score ≥ τ. (τ = +∞ gives 0, so the advantage is at least 0.)
#
# A training algorithm that is (ε, δ)-differentially private bounds every attack's
# advantage. Yeom et al. (2018) give $e^\varepsilon - 1$ for pure ε-DP; from the
# hypothesis-testing form of DP, $\mathrm{TPR} \le e^\varepsilon\,\mathrm{FPR} + \delta$ and
# $1 - \mathrm{FPR} \le e^\varepsilon (1 - \mathrm{TPR}) + \delta$, the tighter bound is
# $(e^\varepsilon - 1 + 2\delta) / (e^\varepsilon + 1)$. Neither can exceed 1.
#
# **Task 7 (2.5 points).** `membership_scores(scores_members, scores_nonmembers)` returns
# `(auc, advantage)` as Python floats. `dp_advantage_bounds(epsilon, delta)` returns
# `(yeom, tight)`, each capped at 1.0.


# %%
def membership_scores(scores_members, scores_nonmembers):
    """ROC AUC (ties count 1/2) and the best advantage TPR - FPR over thresholds."""
    ### BEGIN SOLUTION
    a = np.asarray(scores_members, dtype=np.float64)
    b = np.asarray(scores_nonmembers, dtype=np.float64)
    wins = (a[:, None] > b[None, :]).sum() + 0.5 * (a[:, None] == b[None, :]).sum()
    auc = float(wins / (len(a) * len(b)))
    best = 0.0
    for tau in np.concatenate([a, b]):
        best = max(best, float(np.mean(a >= tau) - np.mean(b >= tau)))
    return auc, best
    ### END SOLUTION


def dp_advantage_bounds(epsilon, delta):
    """(min(1, e^eps - 1), min(1, (e^eps - 1 + 2 delta) / (e^eps + 1)))."""
    ### BEGIN SOLUTION
    e = np.exp(epsilon)
    return float(min(1.0, e - 1.0)), float(min(1.0, (e - 1.0 + 2.0 * delta) / (e + 1.0)))
    ### END SOLUTION


# %%
### grader: skip
# Self-check: a perfect attack has AUC 1 and advantage 1; a useless one about 0.5 and 0.
print(membership_scores([3.0, 4.0], [1.0, 2.0]), membership_scores([1.0, 2.0], [1.0, 2.0]))
print("bounds at eps = 0.5, delta = 1e-5:", dp_advantage_bounds(0.5, 1e-5))
