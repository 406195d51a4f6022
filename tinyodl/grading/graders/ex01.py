"""Grader of exercise 01 (classic on-device learners): streaming updates.

The oracles are written differently from the exercise's solution: the softmax through
``logaddexp``, the SGD and Pegasos steps with explicit per-class loops, the merged
statistics as numpy's mean and variance of the concatenated data, naive Bayes likelihoods
with ``scipy.stats.norm.logpdf``, nearest class mean with ``scipy.spatial.distance.cdist``.
They use numpy and scipy only and run in the grading process.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist
from scipy.stats import norm

from tinyodl.grading.api import Ref, task
from tinyodl.grading.checks import check_array, check_close, check_equal, check_true

EXERCISE = "01_classic"
ALLOW: tuple[str, ...] = ()
DENY = ("tinyodl.classic",)

# -- oracles ----------------------------------------------------------------------------------


def oracle_softmax(z: np.ndarray) -> np.ndarray:
    return np.exp(z - np.logaddexp.reduce(z))


def oracle_logistic_step(W, b, x, y, eta, alpha):
    W, b = W.copy(), b.copy()
    p = oracle_softmax(W @ x + b)
    newW, newb = np.empty_like(W), np.empty_like(b)
    for k in range(len(b)):
        target = 1.0 if k == y else 0.0
        newW[k] = W[k] - eta * (alpha * W[k] + (p[k] - target) * x)
        newb[k] = b[k] - eta * (p[k] - target)
    return newW, newb


def oracle_pegasos(w, x, y, t, alpha, project):
    eta = 1.0 / (alpha * t)
    grad = alpha * w - (y * x if y * np.dot(w, x) < 1 else 0.0)
    new = w - eta * grad
    if project:
        new = new * min(1.0, 1.0 / (np.sqrt(alpha) * max(np.linalg.norm(new), 1e-300)))
    return new


def oracle_gnb(X, y, classes, var_smoothing):
    """Counts, means, smoothed variances and epsilon from all the data at once."""
    counts = np.array([np.sum(y == c) for c in classes], dtype=np.float64)
    theta = np.array([X[y == c].mean(0) if np.any(y == c) else np.zeros(X.shape[1])
                      for c in classes])  # fmt: skip
    var = np.array([X[y == c].var(0) if np.any(y == c) else np.zeros(X.shape[1])
                    for c in classes])  # fmt: skip
    eps = var_smoothing * X.var(axis=0).max()
    return counts, theta, var + eps, eps


def oracle_gnb_predict(X, classes, counts, theta, var):
    scores = np.full((len(X), len(classes)), -np.inf)
    for k in range(len(classes)):
        if counts[k] > 0:
            logpdf = norm.logpdf(X, loc=theta[k], scale=np.sqrt(var[k])).sum(axis=1)
            scores[:, k] = np.log(counts[k] / counts.sum()) + logpdf
    return np.asarray(classes)[np.argmax(scores, axis=1)]


def _stream(t, ref, X, y, classes, batch):
    """partial_fit over the batches; the first call names the classes. Returns the results."""
    out = []
    for s in range(0, len(X), batch):
        kwargs = {"classes": classes} if s == 0 else {}
        out.append(t.method(ref, "partial_fit", X[s : s + batch], y[s : s + batch], **kwargs))
    return out


def _returns_self(results, ref, what):
    ok = all(isinstance(r, Ref) and r.id == ref.id for r in results)
    check_true(what, ok, "partial_fit must return self (the estimator itself)")


# -- Task 1 -----------------------------------------------------------------------------------


@task(
    "Task 1: softmax and logistic_sgd_step",
    checks={"softmax values": 0.5, "softmax of large scores": 0.5,
            "logistic_sgd_step updates W in place": 0.5,
            "logistic_sgd_step updates b in place": 0.5},
)  # fmt: skip
def logistic(t):
    rng = np.random.default_rng(101)
    with t.check("softmax values"):
        for k in (2, 5, 10):
            z = rng.standard_normal(k) * 3
            got = t.call("softmax", z)
            check_array(f"softmax(z of shape ({k},))", got, (k,))
            check_close(f"softmax(z of shape ({k},))", got, oracle_softmax(z), 1e-9, 1e-12)
    with t.check("softmax of large scores"):
        z = np.array([1000.0, 999.0, -1000.0, 0.0])
        got = t.call("softmax", z)
        check_true(
            "softmax([1000, 999, -1000, 0])",
            np.all(np.isfinite(got)),
            "the result must be finite (subtract the largest score first)",
        )
        check_close("softmax([1000, 999, -1000, 0])", got, oracle_softmax(z), 1e-9, 1e-12)
    cases = []
    for k, d, eta, alpha in [(3, 4, 0.5, 0.0), (5, 7, 0.1, 0.01), (2, 3, 2.0, 0.1)]:
        W, b = rng.standard_normal((k, d)), rng.standard_normal(k)
        x, y = rng.standard_normal(d), int(rng.integers(k))
        out = t.run("logistic_sgd_step", W.copy(), b.copy(), x, y, eta, alpha)
        cases.append((W, b, x, y, eta, alpha, out))
    for index, name in [(0, "W"), (1, "b")]:
        with t.check(f"logistic_sgd_step updates {name} in place"):
            for W, b, x, y, eta, alpha, out in cases:
                expected = oracle_logistic_step(W, b, x, y, eta, alpha)[index]
                label = f"{name} after logistic_sgd_step (K={len(b)}, eta={eta}, alpha={alpha})"
                check_close(label, out.args[index], expected, 1e-9, 1e-12)


# -- Task 2 -----------------------------------------------------------------------------------


@task(
    "Task 2: pegasos_step",
    checks={"margin violated": 0.5, "margin satisfied": 0.5, "projection": 0.5,
            "several steps in place": 0.5},
)  # fmt: skip
def pegasos(t):
    rng = np.random.default_rng(202)
    d = 5
    w = rng.standard_normal(d) * 0.1
    x = rng.standard_normal(d)
    with t.check("margin violated"):
        for y in (1, -1):
            out = t.run("pegasos_step", w.copy(), x, y, 3, 0.1)
            label = f"w after pegasos_step with y={y}, t=3, alpha=0.1 (margin < 1)"
            check_close(label, out.args[0], oracle_pegasos(w, x, y, 3, 0.1, False))
    with t.check("margin satisfied"):
        big = 5 * x / np.dot(x, x)  # y w.x = 5 for y = 1
        out = t.run("pegasos_step", big.copy(), x, 1, 4, 0.2)
        label = "w after pegasos_step with a margin of 5, t=4, alpha=0.2"
        check_close(label, out.args[0], oracle_pegasos(big, x, 1, 4, 0.2, False))
    with t.check("projection"):
        for wp, t_, alpha in [(w, 1, 0.01), (rng.standard_normal(d) * 0.01, 2, 4.0)]:
            out = t.run("pegasos_step", wp.copy(), x, -1, t_, alpha, project=True)
            label = f"w after pegasos_step(..., t={t_}, alpha={alpha}, project=True)"
            check_close(label, out.args[0], oracle_pegasos(wp, x, -1, t_, alpha, True))
    with t.check("several steps in place"):
        X = rng.standard_normal((12, d))
        y = np.where(X[:, 0] + 0.5 * X[:, 1] > 0, 1, -1)
        got, expected = np.zeros(d), np.zeros(d)
        for step in range(1, 13):
            got = t.run("pegasos_step", got, X[step - 1], int(y[step - 1]), step, 0.05,
                        project=True).args[0]  # fmt: skip
            expected = oracle_pegasos(expected, X[step - 1], y[step - 1], step, 0.05, True)
        check_close("w after 12 pegasos_step calls from w = 0", got, expected)


# -- Task 3 -----------------------------------------------------------------------------------


@task(
    "Task 3: merge_stats",
    checks={"statistics of all the examples": 1, "n = 0: the batch's own statistics": 0.5,
            "mean and var are not modified": 0.5},
)  # fmt: skip
def merge(t):
    rng = np.random.default_rng(303)
    with t.check("statistics of all the examples"):
        for n, m, d in [(5, 3, 4), (1, 1, 2), (40, 7, 3), (3, 20, 1)]:
            old = rng.standard_normal((n, d)) * 2 + 1
            new = rng.standard_normal((m, d)) - 1
            got = t.call("merge_stats", n, old.mean(0), old.var(0), new)
            both = np.concatenate([old, new])
            label = f"merge_stats(n={n}, mean, var, X of shape {new.shape})"
            check_true(
                label,
                isinstance(got, (tuple, list)) and len(got) == 3,
                "must return (n_new, mean_new, var_new)",
            )
            check_close(f"{label} n_new", float(np.asarray(got[0])), n + m)
            check_close(f"{label} mean_new", got[1], both.mean(0), 1e-10, 1e-12)
            check_close(f"{label} var_new", got[2], both.var(0), 1e-10, 1e-12)
    with t.check("n = 0: the batch's own statistics"):
        X = rng.standard_normal((6, 3))
        got = t.call("merge_stats", 0, np.zeros(3), np.zeros(3), X)
        check_close("merge_stats(0, zeros, zeros, X) mean_new", got[1], X.mean(0), 1e-12)
        check_close("merge_stats(0, zeros, zeros, X) var_new", got[2], X.var(0), 1e-12)
    with t.check("mean and var are not modified"):
        mean, var, X = rng.standard_normal(3), rng.uniform(1, 2, 3), rng.standard_normal((4, 3))
        out = t.run("merge_stats", 10, mean.copy(), var.copy(), X)
        check_equal("mean after merge_stats", out.args[1], mean)
        check_equal("var after merge_stats", out.args[2], var)


# -- Task 4 -----------------------------------------------------------------------------------


def _gnb_data(rng):
    classes = np.array([3, 5, 8, 9])  # 9 never appears in the stream
    y = rng.choice(classes[:3], size=60)
    X = rng.standard_normal((60, 4)) * np.array([1.0, 0.5, 2.0, 0.1]) + y[:, None] * 0.3
    X[:, 3] = 0.0  # a constant feature: only the smoothing keeps its variance positive
    X[y == 5, 3] = 0.2
    return X, y, classes


@task(
    "Task 4: IncrementalGaussianNB",
    checks={"partial_fit returns self": 0.5, "classes, counts and means": 1,
            "variances with epsilon from all the data": 1,
            "predictions (a class not seen is never predicted)": 0.5},
)  # fmt: skip
def gaussian_nb(t):
    rng = np.random.default_rng(404)
    X, y, classes = _gnb_data(rng)
    counts, theta, var, eps = oracle_gnb(X, y, classes, 1e-2)
    ref = t.new("IncrementalGaussianNB", var_smoothing=1e-2)
    with t.check("partial_fit returns self"):
        _returns_self(_stream(t, ref, X, y, classes[::-1].copy(), 13), ref,
                      "IncrementalGaussianNB.partial_fit")  # fmt: skip
    with t.check("classes, counts and means"):
        check_equal("classes_ (classes were given as [9, 8, 5, 3])",
                    t.attr(ref, "classes_"), classes)  # fmt: skip
        check_close("class_count_ after the stream", t.attr(ref, "class_count_"), counts)
        check_close("theta_ after the stream", t.attr(ref, "theta_"), theta, 1e-10, 1e-12)
    with t.check("variances with epsilon from all the data"):
        check_close("epsilon_ after the stream", t.attr(ref, "epsilon_"), eps, 1e-9, 1e-15)
        seen = counts > 0
        check_close("var_ of the classes seen", np.asarray(t.attr(ref, "var_"))[seen],
                    var[seen], 1e-9, 1e-12)  # fmt: skip
    with t.check("predictions (a class not seen is never predicted)"):
        Xt = rng.standard_normal((40, 4)) + rng.choice([0.9, 1.5, 2.4], size=(40, 1))
        Xt[:, 3] = rng.choice([0.0, 0.2], size=40)
        got = t.method(ref, "predict", Xt)
        check_equal("predict(X of shape (40, 4))", got,
                    oracle_gnb_predict(Xt, classes, counts, theta, var))  # fmt: skip


# -- Task 5 -----------------------------------------------------------------------------------


@task(
    "Task 5: NearestClassMean",
    checks={"partial_fit returns self": 0.5, "centroids and counts after a stream": 1,
            "predictions (a class not seen is never predicted)": 0.5},
)  # fmt: skip
def nearest_class_mean(t):
    rng = np.random.default_rng(505)
    classes = np.array([0, 1, 2, 7])  # 7 never appears
    y = rng.choice(classes[:3], size=50)
    X = rng.standard_normal((50, 6)) + y[:, None]
    ref = t.new("NearestClassMean")
    with t.check("partial_fit returns self"):
        _returns_self(_stream(t, ref, X, y, classes, 9), ref, "NearestClassMean.partial_fit")
    centroids = np.array([X[y == c].mean(0) if np.any(y == c) else np.zeros(6) for c in classes])
    with t.check("centroids and counts after a stream"):
        check_close("class_count_", t.attr(ref, "class_count_"),
                    [np.sum(y == c) for c in classes])  # fmt: skip
        check_close("centroids_ after the stream", t.attr(ref, "centroids_"), centroids,
                    1e-10, 1e-12)  # fmt: skip
    with t.check("predictions (a class not seen is never predicted)"):
        Xt = rng.standard_normal((30, 6)) * 3
        Xt[:5] = 0.0  # the origin is nearest to the (unseen) class 7's zero centroid
        d = cdist(Xt, centroids[:3])
        check_equal("predict(X of shape (30, 6))", t.method(ref, "predict", Xt),
                    classes[:3][np.argmin(d, axis=1)])  # fmt: skip
