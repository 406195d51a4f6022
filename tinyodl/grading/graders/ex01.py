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

from tinyodl.grading.api import Ref, StudentError, StudentGone, task
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


# -- Task 6 -----------------------------------------------------------------------------------


def oracle_page_hinkley(xs, delta, threshold, min_instances, mode):
    """Alarm steps, segment by segment, with cumulative sums (no per-sample loop)."""
    xs, alarms, start = np.asarray(xs, dtype=np.float64), [], 0
    while start < len(xs):
        seg = xs[start:]
        n = np.arange(1, len(seg) + 1)
        mean = np.cumsum(seg) / n
        if mode == "up":
            m = np.cumsum(seg - mean - delta)
            gap = m - np.minimum.accumulate(m)
        else:
            m = np.cumsum(seg - mean + delta)
            gap = np.maximum.accumulate(m) - m
        hits = np.flatnonzero((n >= min_instances) & (gap > threshold))
        if len(hits) == 0:
            break
        alarms.append(start + int(hits[0]))
        start += int(hits[0]) + 1
    return alarms


def _ph_alarms(t, xs, **kwargs):
    ref = t.new("PageHinkley", **kwargs)
    out = [t.method(ref, "update", float(x)) for x in xs]
    check_true(
        "PageHinkley.update",
        all(isinstance(o, bool) or (np.ndim(o) == 0 and np.asarray(o).dtype == bool) for o in out),
        "update must return True or False",
    )
    return [i for i, o in enumerate(out) if bool(o)]


@task(
    "Task 6: PageHinkley",
    checks={"no alarm on a constant stream": 0.5, "an increase: the alarm step": 1,
            "a decrease with mode='down'": 0.5, "min_instances and the restart after an alarm": 1},
)  # fmt: skip
def page_hinkley(t):
    rng = np.random.default_rng(606)
    with t.check("no alarm on a constant stream"):
        for value in (0.0, 3.5):
            got = _ph_alarms(t, np.full(80, value), threshold=1.0, min_instances=5)
            check_equal(f"alarm steps on 80 samples equal to {value}", got, [])
    with t.check("an increase: the alarm step"):
        for delta, lam in [(0.05, 5.0), (0.0, 8.0)]:
            xs = np.concatenate([rng.normal(0, 0.5, 120), rng.normal(1.0, 0.5, 60)])
            got = _ph_alarms(t, xs, delta=delta, threshold=lam, min_instances=10)
            expected = oracle_page_hinkley(xs, delta, lam, 10, "up")
            check_equal(f"alarm steps (delta={delta}, threshold={lam}, mean + 1 at step 120)",
                        got, expected)  # fmt: skip
    with t.check("a decrease with mode='down'"):
        xs = np.concatenate([rng.normal(0, 0.5, 100), rng.normal(-1.2, 0.5, 60)])
        got = _ph_alarms(t, xs, delta=0.05, threshold=5.0, min_instances=10, mode="down")
        check_equal("alarm steps, mode='down' (decrease at 100)", got,
                    oracle_page_hinkley(xs, 0.05, 5.0, 10, "down"))  # fmt: skip
        got_up = _ph_alarms(t, xs, delta=0.05, threshold=5.0, min_instances=10)
        check_equal("alarm steps, mode='up' on the same decreasing stream", got_up,
                    oracle_page_hinkley(xs, 0.05, 5.0, 10, "up"))  # fmt: skip
    with t.check("min_instances and the restart after an alarm"):
        xs = np.concatenate([np.zeros(3), np.full(40, 5.0)])  # a jump at step 3
        got = _ph_alarms(t, xs, delta=0.0, threshold=2.0, min_instances=8)
        check_equal("alarm steps with min_instances=8 (jump at step 3)", got,
                    oracle_page_hinkley(xs, 0.0, 2.0, 8, "up"))  # fmt: skip
        xs = np.concatenate([rng.normal(0, 0.3, 60), rng.normal(2, 0.3, 60),
                             rng.normal(4, 0.3, 60)])  # fmt: skip
        got = _ph_alarms(t, xs, delta=0.05, threshold=3.0, min_instances=5)
        check_equal("every alarm step of a stream whose mean rises twice", got,
                    oracle_page_hinkley(xs, 0.05, 3.0, 5, "up"))  # fmt: skip


# -- Task 7 -----------------------------------------------------------------------------------


def oracle_adaptation_steps(alarms, labels, min_examples):
    """Jump from alarm to alarm with cumulative label counts (capacity cannot matter when
    min_examples <= capacity: a capped count reaches min_examples when the sum does)."""
    alarm_steps = np.flatnonzero(alarms)
    steps, i = [], 0
    while i < len(alarm_steps):
        a = int(alarm_steps[i])
        counts = np.cumsum(labels[a:])
        reached = np.flatnonzero(counts >= min_examples)
        done = a + int(reached[0]) if len(reached) else None
        later = alarm_steps[(alarm_steps > a) & (alarm_steps <= (done if done is not None
                                                                   else len(labels)))]  # fmt: skip
        if len(later):  # re-armed before adapting: the count starts again there
            i = int(np.searchsorted(alarm_steps, later[0]))
            continue
        if done is None:
            break
        steps.append(done)
        i = int(np.searchsorted(alarm_steps, done, side="right"))
    return steps


def oracle_choose(costs, budget):
    names = sorted(n for n in costs if costs[n]["peak_bytes"] <= budget)
    if not names:
        return None
    best_acc = max(costs[n]["accuracy"] for n in names)
    top = [n for n in names if costs[n]["accuracy"] == best_acc]
    return min(top, key=lambda n: costs[n]["peak_bytes"])


@task(
    "Task 7: adaptation_steps and choose_method",
    checks={"adaptation steps": 1, "an alarm while armed restarts the count": 0.5,
            "min_examples outside 1..capacity is a ValueError": 0.5,
            "choose_method": 1},
)  # fmt: skip
def trigger_policy(t):
    rng = np.random.default_rng(707)
    with t.check("adaptation steps"):
        for T, m, cap in [(60, 5, 8), (120, 12, 12), (80, 1, 3)]:
            alarms = np.zeros(T, dtype=bool)
            alarms[rng.choice(T, 3, replace=False)] = True
            labels = rng.integers(0, 3, T)
            got = t.call("adaptation_steps", alarms, labels, m, cap)
            expected = oracle_adaptation_steps(alarms, labels, m)
            label = f"adaptation_steps (T={T}, min_examples={m}, capacity={cap})"
            check_equal(label, [int(v) for v in got], expected)
        none = t.call("adaptation_steps", np.zeros(20, dtype=bool), np.ones(20, dtype=np.int64),
                      2, 4)  # fmt: skip
        check_equal("adaptation_steps without any alarm", list(none), [])
    with t.check("an alarm while armed restarts the count"):
        alarms = np.zeros(30, dtype=bool)
        alarms[[2, 5, 20]] = True
        labels = np.ones(30, dtype=np.int64)
        got = t.call("adaptation_steps", alarms, labels, 4, 10)
        check_equal("adaptation_steps (alarms at 2, 5 and 20, one label a step, min 4)",
                    [int(v) for v in got], oracle_adaptation_steps(alarms, labels, 4))  # fmt: skip
    with t.check("min_examples outside 1..capacity is a ValueError"):
        for m, cap in [(5, 4), (0, 4)]:
            label = f"adaptation_steps(..., min_examples={m}, capacity={cap})"
            try:
                out = t.call("adaptation_steps", np.zeros(5, dtype=bool),
                             np.ones(5, dtype=np.int64), m, cap)  # fmt: skip
            except StudentGone:
                raise
            except StudentError as err:
                kind = str(err).split(":", 1)[0].strip()
                check_true(label, kind == "ValueError", f"expected a ValueError, got {kind}")
                continue
            check_true(label, False, f"expected a ValueError, it returned {out!r}")
    with t.check("choose_method"):
        costs = {
            "fp32_full": {"peak_bytes": 2_000_000, "accuracy": 0.77},
            "last_layer": {"peak_bytes": 190_000, "accuracy": 0.80},
            "sparse": {"peak_bytes": 208_000, "accuracy": 0.83},
            "tinytrain": {"peak_bytes": 220_000, "accuracy": 0.83},
            "int8_full": {"peak_bytes": 1_600_000, "accuracy": 0.90},
        }
        for budget in (10_000, 190_000, 215_000, 262_144, 1_600_000, 10**7):
            got = t.call("choose_method", costs, budget)
            check_equal(f"choose_method(demo-like costs, budget_bytes={budget})", got,
                        oracle_choose(costs, budget))  # fmt: skip
