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
# # Exercise 01 — Classic on-device learners: learning from a stream
#
# A microcontroller that learns on its own keeps a model whose whole state is one weight
# matrix or a few statistics, and updates it as each example arrives. In this exercise you
# write the updates of chapter 01:
#
# 1. one **SGD step of multinomial logistic regression** (with a stable softmax);
# 2. one **Pegasos step** of a binary linear SVM, with the optional projection;
# 3. the exact **merge of running statistics** (count, mean, variance) with a new batch;
# 4. an **incremental Gaussian naive Bayes** classifier with scikit-learn's `partial_fit`
#    conventions;
# 5. a **nearest class mean** classifier with running class means;
# 6. the **Page–Hinkley** test, which notices that a stream has changed;
# 7. the **trigger policy** that decides when a device adapts, and with which method.
#
# **How you are graded.** The autograder looks up your functions and classes *by name*;
# keep the names and signatures. You may add cells and helper functions. Each task is graded
# in a fresh, sandboxed Python process with a time limit; the grader calls your code on its
# own inputs and compares the results in its own process. Each task has several checks worth
# part of its points. Cells starting with `### grader: skip` (self-checks, demos) are not run
# by the grader. While grading, your code can import the standard library, numpy and scipy,
# but not `tinyodl` (you are writing `tinyodl.classic` yourself) nor plotting libraries.
#
# The checks enforce exactly what the task text and the docstrings say: shapes and dtypes
# (float64 everywhere in this exercise), arrays updated **in place** where it says so, inputs
# left as they were where it says so.

# %%
# tinyodl-exercise: 01_classic
import numpy as np

rng = np.random.default_rng(0)

# %% [markdown]
# ## Part 1 — Online multinomial logistic regression
#
# The model scores the K classes with `p = W x + b` (`W` of shape `(K, D)`, `b` of shape
# `(K,)`) and turns scores into probabilities with the softmax
# `softmax(p)_k = exp(p_k) / sum_j exp(p_j)`. Large scores overflow `exp`: subtract the largest
# score first (it cancels in the ratio).
#
# The loss of one example `(x, y)` is `-log softmax(p)_y + alpha/2 ||W||^2`. One SGD step
# with step size `eta`, using the scores computed with the weights **before** the update:
#
# $$g = \mathrm{softmax}(Wx + b) - e_y,\qquad
#   W \leftarrow (1 - \eta\alpha)\,W - \eta\, g\, x^\top,\qquad
#   b \leftarrow b - \eta\, g$$
#
# (`e_y` is the one-hot vector of the label; the intercept is not penalised.)
#
# **Task 1 (2 points).** `softmax(z)` for a 1-D array of scores (returns an array of the
# same shape summing to 1, finite even for scores of +-1000), and `logistic_sgd_step(W, b,
# x, y, eta, alpha)`, which updates `W` and `b` **in place** and returns nothing.


# %%
def softmax(z):
    """Softmax of a 1-D array of scores, computed without overflow. (K,) -> (K,)."""
    ### BEGIN SOLUTION
    e = np.exp(z - np.max(z))
    return e / e.sum()
    ### END SOLUTION


def logistic_sgd_step(W, b, x, y, eta, alpha):
    """One SGD step of L2-penalised multinomial logistic regression, in place.

    W : (K, D) float64, b : (K,) float64 -- updated in place.
    x : (D,) one example; y : int, its class in 0..K-1; eta : step size; alpha : L2 weight.
    """
    ### BEGIN SOLUTION
    g = softmax(W @ x + b)
    g[y] -= 1.0
    W *= 1.0 - eta * alpha
    W -= eta * np.outer(g, x)
    b -= eta * g
    ### END SOLUTION


# %%
### grader: skip
# Self-check: the step lowers the loss of the example it learned from.
W, b = np.zeros((3, 4)), np.zeros(3)
x, y = rng.standard_normal(4), 2
before = -np.log(softmax(W @ x + b)[y])
logistic_sgd_step(W, b, x, y, eta=0.5, alpha=0.0)
print("loss before", before, "after", -np.log(softmax(W @ x + b)[y]))
print("softmax of huge scores:", softmax(np.array([1000.0, 0.0, -1000.0])))

# %% [markdown]
# ## Part 2 — Pegasos, a linear SVM trained online
#
# For a binary label `y = +1` or `-1`, the SVM loss of one example is
# `alpha/2 ||w||^2 + max(0, 1 - y w.x)` (no bias, as in the paper). Pegasos (Shalev-Shwartz
# et al. 2007) uses the step `eta_t = 1 / (alpha t)` at step `t = 1, 2, ...` and a
# subgradient of the hinge:
#
# $$w \leftarrow (1 - \eta_t\alpha)\,w + \eta_t\, y\, x\ \ \text{if}\ \ y\, w\cdot x < 1,
#   \qquad w \leftarrow (1 - \eta_t\alpha)\,w\ \ \text{otherwise},$$
#
# where the margin `y w.x` uses `w` *before* the step. The optional projection then scales
# `w` back into the ball of radius `1 / sqrt(alpha)`:
# `w <- w * min(1, (1/sqrt(alpha)) / ||w||)`.
#
# **Task 2 (2 points).** `pegasos_step(w, x, y, t, alpha, project)` updates `w` **in place**
# and returns nothing.


# %%
def pegasos_step(w, x, y, t, alpha, project=False):
    """One Pegasos step on example (x, y), in place.

    w : (D,) float64, updated in place; x : (D,); y : +1 or -1; t : the step number (1, 2, ...);
    alpha : the regularisation; project : scale w back into ||w|| <= 1/sqrt(alpha).
    """
    ### BEGIN SOLUTION
    eta = 1.0 / (alpha * t)
    violated = y * (w @ x) < 1.0
    w *= 1.0 - eta * alpha
    if violated:
        w += eta * y * x
    if project:
        norm = np.linalg.norm(w)
        radius = 1.0 / np.sqrt(alpha)
        if norm > radius:
            w *= radius / norm
    ### END SOLUTION


# %%
### grader: skip
# Self-check: Pegasos separates two blobs.
X2 = np.concatenate([rng.normal(2, 1, (50, 2)), rng.normal(-2, 1, (50, 2))])
y2 = np.array([1] * 50 + [-1] * 50)
w2 = np.zeros(2)
for t_, i in enumerate(rng.permutation(100), start=1):
    pegasos_step(w2, X2[i], y2[i], t_, alpha=0.1, project=True)
print("training accuracy:", np.mean(np.sign(X2 @ w2) == y2), "w =", w2)

# %% [markdown]
# ## Part 3 — Merging running statistics
#
# Naive Bayes and nearest class mean learn by keeping, per class, the count `n`, the mean
# and the (biased, divide-by-n) variance of each feature. A new batch `X` of `m` examples
# with mean `mu` and variance `s2` merges exactly (Chan, Golub & LeVeque 1979):
#
# $$n' = n + m,\quad \text{mean}' = \frac{n\,\text{mean} + m\,\mu}{n'},\quad
#   \text{var}' = \frac{n\,\text{var} + m\,s^2 + \frac{n\,m}{n'}(\text{mean}-\mu)^2}{n'}$$
#
# The result is the mean and variance of all `n + m` examples, whatever the batch sizes.
#
# **Task 3 (2 points).** `merge_stats(n, mean, var, X)` returns `(n_new, mean_new, var_new)`
# (a number and two new `(D,)` float64 arrays) and does not modify `mean` or `var`. With
# `n = 0` the result is the batch's own statistics.


# %%
def merge_stats(n, mean, var, X):
    """Merge a batch X (m, D) into the statistics of n earlier examples.

    Returns (n + m, new mean (D,), new variance (D,)); mean and var are not modified.
    """
    ### BEGIN SOLUTION
    m = len(X)
    mu, s2 = X.mean(axis=0), X.var(axis=0)
    total = n + m
    new_mean = (n * mean + m * mu) / total
    new_var = (n * var + m * s2 + (n * m / total) * (mean - mu) ** 2) / total
    return total, new_mean, new_var
    ### END SOLUTION


# %%
### grader: skip
# Self-check: three batches merged equal numpy on everything.
data = rng.standard_normal((30, 3)) * 2 + 1
n_, mean_, var_ = 0, np.zeros(3), np.zeros(3)
for part in (data[:7], data[7:8], data[8:]):
    n_, mean_, var_ = merge_stats(n_, mean_, var_, part)
print(n_, np.abs(mean_ - data.mean(0)).max(), np.abs(var_ - data.var(0)).max())

# %% [markdown]
# ## Part 4 — Incremental Gaussian naive Bayes
#
# Gaussian naive Bayes predicts the class with the largest joint log-likelihood
#
# $$\log \pi_k - \frac12 \sum_d \log(2\pi\, v_{kd}) - \frac12 \sum_d
#   \frac{(x_d - \theta_{kd})^2}{v_{kd}},\qquad \pi_k = \frac{n_k}{\sum_j n_j},$$
#
# where `theta_k` and `v_k = var_k + epsilon` are the mean and smoothed variance of class
# `k`. The smoothing `epsilon = var_smoothing * max_d var_d` uses the variance of each feature
# over **all** examples seen so far (every class together), so that constant pixels do not
# give zero variances.
#
# Write it with scikit-learn's streaming conventions:
#
# * `partial_fit(X, y, classes=None)`: the **first** call must receive `classes` (every label
#   the stream will contain; keep them sorted in `classes_`); later calls may omit it.
#   It merges each class's examples of the batch into that class's statistics (Part 3) and
#   **returns `self`**.
# * Learned attributes end in `_`: `classes_` (K,), `class_count_` (K,) float64,
#   `theta_` (K, D) the means, `var_` (K, D) the variances **including** `epsilon`, and
#   `epsilon_`.
# * `predict(X)` returns the labels (taken from `classes_`) of largest joint
#   log-likelihood; a class not seen yet (count 0) is never predicted.
#
# **Task 4 (3 points).**


# %%
class IncrementalGaussianNB:
    """Gaussian naive Bayes learned from a stream with partial_fit."""

    def __init__(self, var_smoothing=1e-9):
        self.var_smoothing = var_smoothing

    def partial_fit(self, X, y, classes=None):
        """Learn from one batch X (N, D), y (N,); returns self."""
        ### BEGIN SOLUTION
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        if not hasattr(self, "classes_"):
            self.classes_ = np.unique(classes)
            k, d = len(self.classes_), X.shape[1]
            self.class_count_ = np.zeros(k)
            self.theta_ = np.zeros((k, d))
            self.var_ = np.zeros((k, d))
            self.epsilon_ = 0.0
        raw = self.var_ - self.epsilon_
        for k, label in enumerate(self.classes_):
            Xk = X[y == label]
            if len(Xk):
                n, mean, var = merge_stats(self.class_count_[k], self.theta_[k], raw[k], Xk)
                self.class_count_[k], self.theta_[k], raw[k] = n, mean, var
        w = self.class_count_ / self.class_count_.sum()
        overall = w @ (raw + self.theta_**2) - (w @ self.theta_) ** 2
        self.epsilon_ = self.var_smoothing * overall.max()
        self.var_ = raw + self.epsilon_
        return self
        ### END SOLUTION

    def predict(self, X):
        """Labels (N,) of largest joint log-likelihood."""
        ### BEGIN SOLUTION
        X = np.asarray(X, dtype=np.float64)
        seen = self.class_count_ > 0
        jll = np.full((len(X), len(self.classes_)), -np.inf)
        for k in np.flatnonzero(seen):
            v = self.var_[k]
            jll[:, k] = (
                np.log(self.class_count_[k] / self.class_count_.sum())
                - 0.5 * np.sum(np.log(2 * np.pi * v))
                - 0.5 * np.sum((X - self.theta_[k]) ** 2 / v, axis=1)
            )
        return self.classes_[np.argmax(jll, axis=1)]
        ### END SOLUTION


# %%
### grader: skip
# Self-check on two Gaussian blobs with three declared classes (class 2 never appears).
nb = IncrementalGaussianNB()
for i in range(0, 100, 10):
    nb.partial_fit(X2[i : i + 10], (y2[i : i + 10] > 0).astype(int), classes=[0, 1, 2])
print("counts", nb.class_count_, "accuracy", np.mean(nb.predict(X2) == (y2 > 0)))

# %% [markdown]
# ## Part 5 — Nearest class mean
#
# Nearest class mean keeps one mean vector per class (in chapter 01, of features from a
# frozen network) and predicts the class whose mean is nearest in Euclidean distance.
#
# **Task 5 (2 points).** `NearestClassMean` with `partial_fit(X, y, classes=None)` (same
# conventions as Task 4: `classes` required on the first call, sorted into `classes_`;
# returns `self`), learned attributes `classes_`, `class_count_` (K,) and `centroids_` (K, D)
# (the mean of every example of the class seen so far; zeros for a class not seen yet), and
# `predict(X)`, which never predicts a class not seen yet.


# %%
class NearestClassMean:
    """Nearest class mean with running class means."""

    def partial_fit(self, X, y, classes=None):
        """Learn from one batch X (N, D), y (N,); returns self."""
        ### BEGIN SOLUTION
        X, y = np.asarray(X, dtype=np.float64), np.asarray(y)
        if not hasattr(self, "classes_"):
            self.classes_ = np.unique(classes)
            self.class_count_ = np.zeros(len(self.classes_))
            self.centroids_ = np.zeros((len(self.classes_), X.shape[1]))
        for k, label in enumerate(self.classes_):
            Xk = X[y == label]
            if len(Xk):
                total = self.class_count_[k] + len(Xk)
                self.centroids_[k] += (Xk.sum(axis=0) - len(Xk) * self.centroids_[k]) / total
                self.class_count_[k] = total
        return self
        ### END SOLUTION

    def predict(self, X):
        """Labels (N,) of the nearest class mean."""
        ### BEGIN SOLUTION
        X = np.asarray(X, dtype=np.float64)
        d2 = ((X[:, None, :] - self.centroids_[None, :, :]) ** 2).sum(axis=2)
        d2[:, self.class_count_ == 0] = np.inf
        return self.classes_[np.argmin(d2, axis=1)]
        ### END SOLUTION


# %%
### grader: skip
ncm = NearestClassMean()
for i in range(0, 100, 25):
    ncm.partial_fit(X2[i : i + 25], y2[i : i + 25], classes=[-1, 1])
print("centroids", ncm.centroids_, "accuracy", np.mean(ncm.predict(X2) == y2))


# %% [markdown]
# ## Part 6 — Noticing drift: the Page–Hinkley test
#
# A deployed learner must notice when its stream changes (a new writer, a new sensor) before
# it can react. The Page–Hinkley test (Page 1954; Hinkley 1971) watches one number per
# example -- the model's confidence, or its 0/1 error once a label arrives -- and raises an
# alarm when its mean moves. With `n` the samples seen since the last restart and
# `xbar_n` their running mean **including** the current sample `x_n`:
#
# $$m^{up}_n = m^{up}_{n-1} + (x_n - \bar x_n - \delta),\qquad
#   M^{up}_n = \min_{i \le n} m^{up}_i,\qquad \text{alarm if } m^{up}_n - M^{up}_n > \lambda$$
#
# for an **increase** of the mean (`mode="up"`), and for a **decrease** (`mode="down"`)
#
# $$m^{down}_n = m^{down}_{n-1} + (x_n - \bar x_n + \delta),\qquad
#   M^{down}_n = \max_{i \le n} m^{down}_i,\qquad
#   \text{alarm if } M^{down}_n - m^{down}_n > \lambda,$$
#
# starting from `m_0 = 0` (the minimum / maximum run over `m_1 .. m_n`). No alarm is raised
# while `n < min_instances`. After an alarm the test **restarts**: the next sample is the
# first of a new stream (`n = 1`, fresh mean and sums). `delta` is the change tolerated;
# `lambda = threshold` trades false alarms for delay.
#
# **Task 6 (3 points).** `PageHinkley(delta=0.005, threshold=50.0, min_instances=30,
# mode="up")` with `update(x)`, which feeds one sample (a Python float) and returns `True`
# if it raises an alarm, `False` otherwise.


# %%
class PageHinkley:
    """Page–Hinkley test for an increase (mode "up") or a decrease ("down") of the mean."""

    def __init__(self, delta=0.005, threshold=50.0, min_instances=30, mode="up"):
        self.delta, self.threshold = delta, threshold
        self.min_instances, self.mode = min_instances, mode
        ### BEGIN SOLUTION
        self.n, self.mean, self.m, self.extreme = 0, 0.0, 0.0, None
        ### END SOLUTION

    def update(self, x):
        """Feed one sample; True if it raises an alarm (the test then restarts)."""
        ### BEGIN SOLUTION
        self.n += 1
        self.mean += (x - self.mean) / self.n
        if self.mode == "up":
            self.m += x - self.mean - self.delta
            self.extreme = self.m if self.extreme is None else min(self.extreme, self.m)
            gap = self.m - self.extreme
        else:
            self.m += x - self.mean + self.delta
            self.extreme = self.m if self.extreme is None else max(self.extreme, self.m)
            gap = self.extreme - self.m
        if self.n >= self.min_instances and gap > self.threshold:
            self.n, self.mean, self.m, self.extreme = 0, 0.0, 0.0, None
            return True
        return False
        ### END SOLUTION


# %%
### grader: skip
# Self-check: the mean of a noisy stream rises by 1 at step 500.
ph = PageHinkley(delta=0.05, threshold=10.0)
stream = np.concatenate([rng.normal(0, 0.5, 500), rng.normal(1, 0.5, 300)])
print("alarms at", [i for i, v in enumerate(stream) if ph.update(float(v))])

# %% [markdown]
# ## Part 7 — When to adapt, and with what: the trigger policy
#
# An alarm alone is not enough to adapt: the device needs labelled examples of the *new*
# data, and it can store only a few (chapter 07's storage budget). The policy of
# `tinyodl.lifecycle`, which you now write, works step by step. At each step `t`:
#
# 1. if a detector raised an alarm (`alarms[t]`), the trigger is **armed** and the buffer
#    is **emptied** (what it held describes the old data; an alarm while already armed
#    empties it again);
# 2. if armed, the `labels[t]` labels arriving at this step are buffered, the buffer
#    holding at most `capacity` examples;
# 3. if armed and the buffer holds at least `min_examples`, the device **adapts at step
#    `t`**; the trigger disarms and the buffer is emptied.
#
# Labels arriving while the trigger is not armed are not counted.
#
# Which method? `costs` maps each method's name to `{"peak_bytes": ..., "accuracy": ...}`
# (the demo's measured peak training memory and accuracy). The device runs the **most
# accurate** method whose peak fits the memory budget (`peak_bytes <= budget_bytes`); on a
# tie in accuracy, the one with the smaller peak; `None` if no method fits.
#
# **Task 7 (3 points).** `adaptation_steps(alarms, labels, min_examples, capacity)`
# (`alarms` a bool array (T,), `labels` an int array (T,)) returns the list of steps (Python
# ints, increasing) at which the device adapts, and raises `ValueError` unless
# `1 <= min_examples <= capacity`; `choose_method(costs, budget_bytes)` returns the name of
# the method to run, or `None`.


# %%
def adaptation_steps(alarms, labels, min_examples, capacity):
    """Steps at which the trigger policy adapts (list of int)."""
    ### BEGIN SOLUTION
    if not 1 <= min_examples <= capacity:
        raise ValueError(f"need 1 <= min_examples <= capacity, got {min_examples}, {capacity}")
    armed, buffered, steps = False, 0, []
    for t in range(len(alarms)):
        if alarms[t]:
            armed, buffered = True, 0
        if armed:
            buffered = min(capacity, buffered + int(labels[t]))
            if buffered >= min_examples:
                steps.append(t)
                armed, buffered = False, 0
    return steps
    ### END SOLUTION


def choose_method(costs, budget_bytes):
    """The most accurate method that fits the budget (ties: smaller peak), or None."""
    ### BEGIN SOLUTION
    best = None
    for name, c in costs.items():
        if c["peak_bytes"] > budget_bytes:
            continue
        key = (-c["accuracy"], c["peak_bytes"])
        if best is None or key < best[0]:
            best = (key, name)
    return None if best is None else best[1]
    ### END SOLUTION


# %%
### grader: skip
demo = {
    "fp32_full": {"peak_bytes": 2_043_793, "accuracy": 0.772},
    "fp32_last_layer": {"peak_bytes": 189_648, "accuracy": 0.802},
    "sparse_update_engine": {"peak_bytes": 208_067, "accuracy": 0.833},
}
print(choose_method(demo, 256 * 1024), choose_method(demo, 200_000), choose_method(demo, 1000))
alarm = np.zeros(30, dtype=bool)
alarm[[3, 12]] = True
print(adaptation_steps(alarm, np.ones(30, dtype=int), 5, 10))
