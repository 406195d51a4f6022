"""Grader of exercise 11 (security): evasion, poisoning, privacy attacks and their measures.

Every oracle is written here differently from the exercise's solution: FGSM with
``np.where`` on the gradient's sign, the L2 projection one row at a time with
``np.linalg.norm``, the CUSUM through its closed form ``S_t = C_t - min(0, min_j<=t C_j)``
(``C`` the cumulative sum of ``z - k``), the dense-layer inversion with ``np.linalg.lstsq``,
the ROC AUC from sorted ranks. Label flipping is random, so its checks test the properties
the text states (how many, never the same label, reproducible, uniform over the other
classes) on plain data.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from tinyodl.grading.api import Fn, StudentError, task
from tinyodl.grading.checks import check_array, check_close, check_equal, check_true

EXERCISE = "11_security"
ALLOW: tuple[str, ...] = ()
DENY = ("tinyodl.attacks", "tinyodl.defenses")

# -- oracles ------------------------------------------------------------------------------


def oracle_fgsm(x, grad, eps, targeted=False, clip=(0.0, 1.0)):
    step = np.where(grad > 0, eps, np.where(grad < 0, -eps, 0.0))
    if targeted:
        step = -step
    return np.minimum(np.maximum(x.astype(np.float64) + step, clip[0]), clip[1])


def oracle_project_l2(delta, eps):
    out = delta.astype(np.float64).copy()
    for n in range(len(out)):
        norm = np.linalg.norm(out[n].ravel())
        if norm > eps:
            out[n] *= eps / norm
    return out


#: The model behind the PGD task's ``grad_fn``: linear softmax on 2x3x3 inputs, 4 classes.
GRAD_FN = """lambda x, y: (lambda p: (p - np.eye(W.shape[0])[y]) @ W)(
    (lambda z: np.exp(z - z.max(1, keepdims=True)) / np.exp(z - z.max(1, keepdims=True)).sum(
        1, keepdims=True))(x.reshape(len(x), -1) @ W.T)).reshape(x.shape).astype(x.dtype)"""


def oracle_grad(w, x, y):
    z = x.reshape(len(x), -1).astype(np.float64) @ w.T
    z = z - np.logaddexp.reduce(z, axis=1, keepdims=True)
    p = np.exp(z)
    p[np.arange(len(y)), y] -= 1.0
    return (p @ w).reshape(x.shape)


def oracle_pgd(w, x, y, eps, alpha, steps, x_start=None):
    cur = (x if x_start is None else x_start).astype(np.float64)
    for _ in range(steps):
        cur = np.minimum(np.maximum(cur + alpha * np.sign(oracle_grad(w, cur, y)), 0.0), 1.0)
        cur = np.minimum(np.maximum(cur, x - eps), x + eps)
    return cur


def oracle_cusum(stats, k, h, mean, std):
    c = np.cumsum((np.asarray(stats, np.float64) - mean) / std - k)
    s = c - np.minimum(0.0, np.minimum.accumulate(c))
    alarms = np.flatnonzero(s > h)
    return s, (int(alarms[0]) if len(alarms) else None)


def oracle_auc(a, b):
    ranks = rankdata(np.concatenate([a, b]))
    return float((ranks[: len(a)].sum() - len(a) * (len(a) + 1) / 2) / (len(a) * len(b)))


def oracle_advantage(a, b):
    taus = np.sort(np.concatenate([a, b]))
    tpr = 1.0 - np.searchsorted(np.sort(a), taus, side="left") / len(a)
    fpr = 1.0 - np.searchsorted(np.sort(b), taus, side="left") / len(b)
    return float(max(0.0, np.max(tpr - fpr)))


def _pair(value, what: str) -> tuple:
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise AssertionError(f"must return {what}, got a {type(value).__name__}")
    return tuple(value)


# -- Task 1 -------------------------------------------------------------------------------


@task(
    "Task 1: fgsm",
    checks={
        "values (untargeted)": 0.5,
        "targeted goes against the gradient": 0.25,
        "clip range and zero gradients": 0.25,
        "same dtype, inputs unmodified": 0.5,
    },
)
def fgsm(t):
    rng = np.random.default_rng(1100)
    with t.check("values (untargeted)"):
        for shape, eps in [((4, 1, 3, 3), 0.1), ((2, 5), 0.3)]:
            x, g = rng.uniform(0, 1, shape), rng.standard_normal(shape)
            got = t.call("fgsm", x, g, eps)
            check_close(f"fgsm(x {shape}, grad, eps={eps})", got, oracle_fgsm(x, g, eps), 0, 1e-12)
    with t.check("targeted goes against the gradient"):
        x, g = rng.uniform(0, 1, (3, 6)), rng.standard_normal((3, 6))
        got = t.call("fgsm", x, g, 0.2, targeted=True)
        check_close("fgsm(..., targeted=True)", got, oracle_fgsm(x, g, 0.2, True), 0, 1e-12)
    with t.check("clip range and zero gradients"):
        x, g = rng.uniform(-1, 1, (3, 8)), rng.standard_normal((3, 8))
        g[:, ::3] = 0.0
        got = t.call("fgsm", x, g, 0.4, clip=(-1.0, 1.0))
        expected = oracle_fgsm(x, g, 0.4, clip=(-1.0, 1.0))
        check_close(
            "fgsm(x in [-1, 1], clip=(-1, 1)) with some zero gradients", got, expected, 0, 1e-12
        )
    with t.check("same dtype, inputs unmodified"):
        x = rng.uniform(0, 1, (2, 1, 4, 4)).astype(np.float32)
        g = rng.standard_normal((2, 1, 4, 4)).astype(np.float32)
        out = t.run("fgsm", x.copy(), g.copy(), 0.1)
        check_array("fgsm(float32 x, float32 grad)", out.value, x.shape, np.float32)
        check_close("fgsm float32 values", out.value, oracle_fgsm(x, g, 0.1), 1e-6, 1e-6)
        check_equal("x after fgsm", out.args[0], x)
        check_equal("grad after fgsm", out.args[1], g)


# -- Task 2 -------------------------------------------------------------------------------


@task(
    "Task 2: project_linf and project_l2",
    checks={
        "project_linf": 0.5,
        "project_l2 shrinks long rows to length eps": 0.5,
        "project_l2 leaves rows inside the ball unchanged": 0.5,
        "same shape and dtype, delta unmodified": 0.5,
    },
)
def projections(t):
    rng = np.random.default_rng(1200)
    with t.check("project_linf"):
        d = rng.standard_normal((3, 2, 4))
        got = t.call("project_linf", d, 0.5)
        check_close("project_linf(delta (3, 2, 4), 0.5)", got, np.minimum(np.maximum(d, -0.5), 0.5))
    with t.check("project_l2 shrinks long rows to length eps"):
        d = 3 * rng.standard_normal((4, 1, 3, 3))
        got = t.call("project_l2", d, 1.5)
        check_close("project_l2(delta (4, 1, 3, 3), 1.5)", got, oracle_project_l2(d, 1.5))
    with t.check("project_l2 leaves rows inside the ball unchanged"):
        d = rng.standard_normal((5, 6))
        d[1] *= 0.01
        d[3] = 0.0
        got = t.call("project_l2", d, 1.0)
        check_close("project_l2 with short and zero rows", got, oracle_project_l2(d, 1.0))
    with t.check("same shape and dtype, delta unmodified"):
        for name in ("project_linf", "project_l2"):
            d = rng.standard_normal((2, 3, 3)).astype(np.float32)
            out = t.run(name, d.copy(), 0.3)
            check_array(f"{name}(float32 delta (2, 3, 3))", out.value, d.shape, np.float32)
            check_equal(f"delta after {name}", out.args[0], d)


# -- Task 3 -------------------------------------------------------------------------------


@task(
    "Task 3: pgd_linf",
    checks={
        "stays within eps of x and in [0, 1]": 0.5,
        "matches the reference trajectory": 1.0,
        "starts from x_start": 0.5,
        "same dtype (float32)": 0.5,
    },
)
def pgd_linf(t):
    rng = np.random.default_rng(1300)
    w = rng.standard_normal((4, 18))
    grad_fn = Fn(GRAD_FN, W=w)
    x = rng.uniform(0, 1, (6, 2, 3, 3))
    y = rng.integers(0, 4, 6)
    out = t.call("pgd_linf", grad_fn, x, y, 0.1, 0.03, 7)
    with t.check("stays within eps of x and in [0, 1]"):
        check_array("pgd_linf(...)", out, x.shape)
        check_true("pgd_linf", np.abs(out - x).max() <= 0.1 + 1e-9, "some |x' - x| exceed eps")
        check_true("pgd_linf", out.min() >= 0 and out.max() <= 1, "some x' are outside [0, 1]")
    with t.check("matches the reference trajectory"):
        check_close(
            "pgd_linf(eps=0.1, alpha=0.03, steps=7)",
            out,
            oracle_pgd(w, x, y, 0.1, 0.03, 7),
            0,
            1e-9,
        )
        more = t.call("pgd_linf", grad_fn, x, y, 0.25, 0.05, 3)
        check_close(
            "pgd_linf(eps=0.25, alpha=0.05, steps=3)",
            more,
            oracle_pgd(w, x, y, 0.25, 0.05, 3),
            0,
            1e-9,
        )
    with t.check("starts from x_start"):
        start = np.clip(x + rng.uniform(-0.1, 0.1, x.shape), 0, 1)
        got = t.call("pgd_linf", grad_fn, x, y, 0.1, 0.02, 2, x_start=start)
        check_close(
            "pgd_linf(..., x_start=...)", got, oracle_pgd(w, x, y, 0.1, 0.02, 2, start), 0, 1e-9
        )
    with t.check("same dtype (float32)"):
        x32 = x.astype(np.float32)
        got = t.call("pgd_linf", grad_fn, x32, y, 0.1, 0.03, 2)
        check_array("pgd_linf(float32 x)", got, x.shape, np.float32)


# -- Task 4 -------------------------------------------------------------------------------


@task(
    "Task 4: flip_labels",
    checks={
        "flips exactly round(fraction * N) labels to other classes": 0.75,
        "returns a copy of y's dtype and the right mask": 0.5,
        "reproducible with the seed": 0.25,
        "uniform over examples and over the other classes": 0.5,
    },
)
def flip_labels(t):
    rng = np.random.default_rng(1400)
    y = rng.integers(0, 10, 333).astype(np.int64)
    with t.check("flips exactly round(fraction * N) labels to other classes"):
        for fraction in (0.1, 0.25, 1.0, 0.0):
            y_new, mask = _pair(t.call("flip_labels", y, fraction, 10, 3), "(y_new, flipped)")
            y_new, mask = np.asarray(y_new), np.asarray(mask)
            label = f"flip_labels(y of 333, fraction={fraction})"
            check_equal(f"{label}: labels changed", int(np.sum(y_new != y)), round(fraction * 333))
            check_true(label, y_new.min() >= 0 and y_new.max() < 10, "labels outside [0, 10)")
    with t.check("returns a copy of y's dtype and the right mask"):
        y8 = y.astype(np.uint8)
        out = t.run("flip_labels", y8.copy(), 0.3, 10, 5)
        y_new, mask = _pair(out.value, "(y_new, flipped)")
        check_array("y_new", y_new, y.shape, np.uint8)
        check_array("flipped", mask, y.shape, np.bool_)
        check_equal("flipped mask", mask, y_new != y8)
        check_equal("y after flip_labels", out.args[0], y8)
    with t.check("reproducible with the seed"):
        a = _pair(t.call("flip_labels", y, 0.4, 10, 11), "(y_new, flipped)")[0]
        b = _pair(t.call("flip_labels", y, 0.4, 10, 11), "(y_new, flipped)")[0]
        c = _pair(t.call("flip_labels", y, 0.4, 10, 12), "(y_new, flipped)")[0]
        check_equal("two calls with seed 11", a, b)
        check_true("flip_labels", not np.array_equal(a, c), "seeds 11 and 12 gave the same result")
    with t.check("uniform over examples and over the other classes"):
        big = np.repeat(np.arange(4), 5000).astype(np.int64)
        y_new, mask = _pair(t.call("flip_labels", big, 0.5, 4, 0), "(y_new, flipped)")
        y_new, mask = np.asarray(y_new), np.asarray(mask)
        per_class = [mask[big == c].mean() for c in range(4)]
        check_true(
            "flip_labels",
            max(abs(r - 0.5) for r in per_class) < 0.03,
            f"flip rates per true class {np.round(per_class, 3)}, expected about 0.5 each",
        )
        shift = (y_new[mask] - big[mask]) % 4
        freq = np.bincount(shift, minlength=4)[1:] / mask.sum()
        check_true(
            "flip_labels",
            np.abs(freq - 1 / 3).max() < 0.03,
            f"new labels are not uniform over the other classes: {np.round(freq, 3)}",
        )


# -- Task 5 -------------------------------------------------------------------------------


@task(
    "Task 5: cusum",
    checks={"S values": 1.0, "first alarm index (or None)": 0.5, "returns float64 S": 0.5},
)
def cusum(t):
    rng = np.random.default_rng(1500)
    stats = np.concatenate([rng.normal(0.05, 0.02, 40), rng.normal(0.09, 0.02, 40)])
    out = t.call("cusum", stats, 0.5, 5.0, 0.05, 0.02)
    with t.check("returns float64 S"):
        s, _ = _pair(out, "(S, first_alarm)")
        check_array("cusum S", s, (80,), np.float64)
    with t.check("S values"):
        s, _ = _pair(out, "(S, first_alarm)")
        check_close(
            "cusum(stats, k=0.5, h=5, mean=0.05, std=0.02)",
            s,
            oracle_cusum(stats, 0.5, 5.0, 0.05, 0.02)[0],
        )
        s2, _ = _pair(t.call("cusum", stats[:30], 0.0, 3.0, 0.06, 0.01), "(S, first_alarm)")
        check_close(
            "cusum(..., k=0, h=3, mean=0.06, std=0.01)",
            s2,
            oracle_cusum(stats[:30], 0.0, 3.0, 0.06, 0.01)[0],
        )
    with t.check("first alarm index (or None)"):
        _, first = _pair(out, "(S, first_alarm)")
        expected = oracle_cusum(stats, 0.5, 5.0, 0.05, 0.02)[1]
        check_equal("first alarm", None if first is None else int(first), expected)
        _, none = _pair(t.call("cusum", stats[:20], 0.5, 50.0, 0.05, 0.02), "(S, first_alarm)")
        check_equal("first alarm with h = 50 (no alarm)", none, None)


# -- Task 6 -------------------------------------------------------------------------------


def _dense_gradients(rng, n_in=12, n_hidden=7, classes=3):
    """dL/dW1, dL/db1 of a 2-layer ReLU net with softmax cross-entropy, one example."""
    x = rng.uniform(0, 1, n_in)
    w1, b1 = rng.standard_normal((n_hidden, n_in)), rng.standard_normal(n_hidden)
    w2 = rng.standard_normal((classes, n_hidden))
    a = w1 @ x + b1
    h = np.maximum(a, 0)
    z = w2 @ h
    p = np.exp(z - np.logaddexp.reduce(z))
    p[1] -= 1.0  # label 1
    da = (w2.T @ p) * (a > 0)
    return x, np.outer(da, x), da


@task(
    "Task 6: invert_dense_gradient",
    checks={
        "recovers a single input exactly": 0.75,
        "least squares over all rows": 0.5,
        "ValueError on a zero bias gradient": 0.25,
    },
)
def invert_dense_gradient(t):
    rng = np.random.default_rng(1600)
    with t.check("recovers a single input exactly"):
        for _ in range(3):
            x, gw, gb = _dense_gradients(rng)
            got = t.call("invert_dense_gradient", gw, gb)
            check_array("invert_dense_gradient(...)", got, x.shape, np.float64)
            check_close("the recovered input", got, x, 1e-9, 1e-12)
    with t.check("least squares over all rows"):
        gw, gb = rng.standard_normal((6, 5)), rng.standard_normal(6)
        gb[2] = 1e-9  # a nearly dead unit: dividing by it alone would be unstable
        expected = np.linalg.lstsq(gb[:, None], gw, rcond=None)[0][0]
        check_close(
            "invert_dense_gradient of noisy gradients",
            t.call("invert_dense_gradient", gw, gb),
            expected,
            1e-9,
            1e-12,
        )
    with t.check("ValueError on a zero bias gradient"):
        try:
            t.call("invert_dense_gradient", np.ones((3, 4)), np.zeros(3))
        except StudentError as err:
            check_true(
                "invert_dense_gradient(gw, zeros)",
                "ValueError" in str(err),
                "expected a ValueError when every bias gradient is 0",
            )
        else:
            raise AssertionError("invert_dense_gradient(gw, zeros) returned instead of raising")


# -- Task 7 -------------------------------------------------------------------------------


@task(
    "Task 7: membership_scores and dp_advantage_bounds",
    checks={"ROC AUC (with ties)": 1.0, "advantage": 0.75, "DP bounds": 0.75},
)
def membership(t):
    rng = np.random.default_rng(1700)
    cases = [
        (rng.normal(1.0, 1.0, 120), rng.normal(0.0, 1.0, 90)),
        (rng.integers(0, 4, 50).astype(float), rng.integers(0, 4, 70).astype(float)),  # ties
        (np.array([0.2, 0.9]), np.array([0.5])),
    ]
    outs = [_pair(t.call("membership_scores", a, b), "(auc, advantage)") for a, b in cases]
    with t.check("ROC AUC (with ties)"):
        for (a, b), (auc, _) in zip(cases, outs, strict=True):
            check_close(f"AUC of {len(a)} members vs {len(b)} non-members", auc, oracle_auc(a, b))
    with t.check("advantage"):
        for (a, b), (_, adv) in zip(cases, outs, strict=True):
            check_close(
                f"advantage of {len(a)} members vs {len(b)} non-members",
                adv,
                oracle_advantage(a, b),
            )
        _, worse = _pair(t.call("membership_scores", cases[0][1], cases[0][0]), "(auc, advantage)")
        check_close(
            "advantage of an attack worse than chance (at least 0)",
            worse,
            oracle_advantage(cases[0][1], cases[0][0]),
        )
    with t.check("DP bounds"):
        for eps, delta in [(0.1, 0.0), (0.5, 1e-5), (1.0, 1e-3), (3.0, 1e-5)]:
            e = np.exp(eps)
            got = _pair(t.call("dp_advantage_bounds", eps, delta), "(yeom, tight)")
            label = f"dp_advantage_bounds({eps}, {delta})"
            check_close(f"{label} yeom", got[0], min(1.0, e - 1))
            check_close(f"{label} tight", got[1], min(1.0, (e - 1 + 2 * delta) / (e + 1)))
