"""Grader of exercise 10 (differential privacy): calibrated noise, DP-SGD, the accountant.

Every oracle here is written differently from the exercise's solution: Brent's method on a
``log``-domain profile instead of bisection, a linear solve instead of the closed-form
debiasing, loops over examples and kernel taps instead of einsum/im2col, materialised
per-example gradients instead of ghost norms, ``math.lgamma`` with a running log-sum instead of
vectorized ``logsumexp``. They use numpy/scipy only and run in the grading process.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, special

from tinyodl.grading.api import task
from tinyodl.grading.checks import check_array, check_close, check_true

EXERCISE = "10_privacy"
ALLOW: tuple[str, ...] = ()
DENY = ("tinyodl.privacy", "tinyodl.nn", "tinyodl.ops", "tinyodl.reference")

# -- oracles ----------------------------------------------------------------------------------


def oracle_gaussian_delta(sigma: float, sensitivity: float, epsilon: float) -> float:
    """Balle & Wang's profile through log Phi (no cancellation in the second term)."""
    a, b = sensitivity / (2 * sigma), epsilon * sigma / sensitivity
    first = math.exp(special.log_ndtr(a - b))
    second = math.exp(epsilon + special.log_ndtr(-a - b))
    return first - second


def oracle_sigma(sensitivity: float, epsilon: float, delta: float) -> float:
    def f(log_s):
        return math.log(max(oracle_gaussian_delta(math.exp(log_s), sensitivity, epsilon), 1e-300))

    target = math.log(delta)
    return math.exp(optimize.brentq(lambda s: f(s) - target, -12, 12, xtol=1e-13, rtol=1e-13))


def oracle_frequencies(reports: np.ndarray, epsilon: float, k: int) -> np.ndarray:
    """Solve E[observed] = M f with M = r 1 1^T + (p - r) I."""
    p = 1 / (1 + (k - 1) * math.exp(-epsilon))
    r = (1 - p) / (k - 1)
    observed = np.array([np.mean(reports == j) for j in range(k)])
    m = np.full((k, k), r) + (p - r) * np.eye(k)
    return np.linalg.solve(m, observed)


def oracle_conv_per_example(x, dout, kernel, stride, padding):
    """dW[n, f, c, i, j] = sum over output positions of dout * the input under tap (i, j)."""
    kh, kw = kernel
    (sh, sw), (ph, pw) = stride, padding
    n, c, h, w = x.shape
    f, oh, ow = dout.shape[1:]
    padded = np.zeros((n, c, h + 2 * ph, w + 2 * pw))
    padded[:, :, ph : ph + h, pw : pw + w] = x
    dw = np.zeros((n, f, c, kh, kw))
    for i in range(kh):
        for j in range(kw):
            window = padded[:, :, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw]
            for e in range(n):
                dw[e, :, :, i, j] = np.tensordot(dout[e], window[e], axes=([1, 2], [1, 2]))
    return dw, dout.sum(axis=(2, 3))


def oracle_clip(grad_samples, clip):
    n = len(grad_samples[0])
    sums = [np.zeros(g.shape[1:]) for g in grad_samples]
    norms = np.zeros(n)
    for e in range(n):
        norms[e] = math.sqrt(sum(float(np.sum(g[e].astype(np.float64) ** 2)) for g in grad_samples))
        scale = min(1.0, clip / norms[e]) if norms[e] > 0 else 1.0
        for s, g in zip(sums, grad_samples, strict=True):
            s += scale * g[e]
    return sums, norms


def oracle_rdp(q: float, sigma: float, alpha: int) -> float:
    log_total = -math.inf
    for k in range(alpha + 1):
        log_term = (
            math.lgamma(alpha + 1)
            - math.lgamma(k + 1)
            - math.lgamma(alpha - k + 1)
            + (alpha - k) * math.log1p(-q)
            + k * math.log(q)
            + (k * k - k) / (2 * sigma**2)
        )
        log_total = np.logaddexp(log_total, log_term)
    return float(log_total) / (alpha - 1)


def oracle_epsilon(q, sigma, steps, delta, orders) -> float:
    a = np.asarray(orders, dtype=np.float64)
    r = steps * np.array([oracle_rdp(q, sigma, int(o)) for o in orders])
    eps = r + np.log1p(-1 / a) - (np.log(delta) + np.log(a)) / (a - 1)
    return max(0.0, float(eps.min()))


def _items(value, n: int, what: str) -> tuple:
    if not isinstance(value, tuple | list) or len(value) != n:
        got = type(value).__name__ + (
            f" of length {len(value)}" if isinstance(value, tuple | list) else ""
        )
        raise AssertionError(f"must return {what}, got a {got}")
    return tuple(value)


# -- Task 1 -----------------------------------------------------------------------------------


@task(
    "Task 1: gaussian_delta and calibrate_gaussian",
    checks={
        "gaussian_delta": 1,
        "calibrate_gaussian, epsilon < 1": 0.5,
        "calibrate_gaussian, epsilon >= 1": 0.5,
    },
)
def gaussian(t):
    with t.check("gaussian_delta"):
        for sigma, sens, eps in [
            (1.0, 1.0, 0.5),
            (3.7, 1.0, 1.0),
            (0.8, 2.0, 0.1),
            (9.0, 4.0, 3.0),
        ]:
            got = t.call("gaussian_delta", sigma, sens, eps)
            label = f"gaussian_delta(sigma={sigma}, sensitivity={sens}, epsilon={eps})"
            check_close(label, got, oracle_gaussian_delta(sigma, sens, eps), 1e-7, 1e-12)
    for label, cases in [
        ("calibrate_gaussian, epsilon < 1", [(1.0, 0.5, 1e-5), (2.5, 0.9, 1e-6)]),
        ("calibrate_gaussian, epsilon >= 1", [(1.0, 2.0, 1e-5), (0.5, 6.0, 1e-8)]),
    ]:
        with t.check(label):
            for sens, eps, delta in cases:
                got = t.call("calibrate_gaussian", sens, eps, delta)
                call = f"calibrate_gaussian(sensitivity={sens}, epsilon={eps}, delta={delta})"
                check_close(call, got, oracle_sigma(sens, eps, delta), 1e-5, 0)


# -- Task 2 -----------------------------------------------------------------------------------


def _rr(truth, eps, k, seed):
    gen = np.random.default_rng(seed)
    p = 1 / (1 + (k - 1) * math.exp(-eps))
    keep = gen.random(truth.size) < p
    shifted = (truth + gen.integers(1, k, truth.size)) % k
    return np.where(keep, truth, shifted).astype(np.int64)


@task("Task 2: estimate_frequencies", checks={"two values": 0.5, "k values": 0.5})
def frequencies(t):
    gen = np.random.default_rng(2000)
    for label, k, eps in [("two values", 2, 0.7), ("k values", 4, 1.5), ("k values", 7, 0.3)]:
        with t.check(label):
            truth = gen.integers(0, k, 3000)
            reports = _rr(truth, eps, k, int(gen.integers(1 << 30)))
            got = t.call("estimate_frequencies", reports, eps, k)
            call = f"estimate_frequencies(reports of {reports.size}, epsilon={eps}, k={k})"
            check_array(call, got, (k,), np.float64)
            check_close(call, got, oracle_frequencies(reports, eps, k), 1e-9, 1e-12)


# -- Tasks 3 and 4 ----------------------------------------------------------------------------


@task("Task 3: linear_per_example_grads", checks={"shapes and dtype": 0.5, "values": 0.5})
def linear_grads(t):
    gen = np.random.default_rng(3000)
    cases = []
    for n, d_in, d_out, dtype in [
        (5, 4, 3, np.float64),
        (1, 6, 2, np.float64),
        (7, 3, 5, np.float32),
    ]:
        x = gen.standard_normal((n, d_in)).astype(dtype)
        dout = gen.standard_normal((n, d_out)).astype(dtype)
        cases.append((x, dout, t.call("linear_per_example_grads", x, dout)))
    with t.check("shapes and dtype"):
        for x, dout, out in cases:
            dw, db = _items(out, 2, "(dw, db)")
            call = f"linear_per_example_grads(x {x.shape} {x.dtype}, dout {dout.shape})"
            check_array(f"{call} dw", dw, (len(x), dout.shape[1], x.shape[1]), x.dtype)
            check_array(f"{call} db", db, dout.shape, x.dtype)
    with t.check("values"):
        for x, dout, out in cases:
            dw, db = _items(out, 2, "(dw, db)")
            expected = np.stack([np.outer(dout[e], x[e]) for e in range(len(x))])
            tol = 1e-5 if x.dtype == np.float32 else 1e-12
            check_close(f"dw for x {x.shape}", dw, expected, tol, tol)
            check_close(f"db for x {x.shape}", db, dout, tol, tol)


@task(
    "Task 4: conv2d_per_example_grads",
    checks={
        "shapes and dtype": 0.5,
        "values, stride 1 and no padding": 0.5,
        "values with stride and padding": 1,
    },
)
def conv_grads(t):
    gen = np.random.default_rng(4000)
    plain = [((3, 2, 5, 5), 4, (3, 3), (1, 1), (0, 0))]
    hard = [((2, 3, 7, 6), 2, (3, 2), (2, 1), (1, 0)), ((4, 1, 6, 6), 3, (3, 3), (2, 2), (1, 1))]
    with t.check("shapes and dtype"):
        x = gen.standard_normal((2, 2, 5, 5)).astype(np.float32)
        dout = gen.standard_normal((2, 3, 3, 3)).astype(np.float32)
        out = t.call("conv2d_per_example_grads", x, dout, 3, 1, 0)
        dw, db = _items(out, 2, "(dw, db)")
        check_array("conv2d_per_example_grads float32 dw", dw, (2, 3, 2, 3, 3), np.float32)
        check_array("conv2d_per_example_grads float32 db", db, (2, 3), np.float32)
    for label, cases in [
        ("values, stride 1 and no padding", plain),
        ("values with stride and padding", hard),
    ]:
        with t.check(label):
            for shape, f, kernel, stride, padding in cases:
                x = gen.standard_normal(shape)
                oh = (shape[2] + 2 * padding[0] - kernel[0]) // stride[0] + 1
                ow = (shape[3] + 2 * padding[1] - kernel[1]) // stride[1] + 1
                dout = gen.standard_normal((shape[0], f, oh, ow))
                out = t.call("conv2d_per_example_grads", x, dout, kernel, stride, padding)
                dw, db = _items(out, 2, "(dw, db)")
                e_dw, e_db = oracle_conv_per_example(x, dout, kernel, stride, padding)
                call = (
                    f"conv2d_per_example_grads(x {shape}, kernel_size={kernel}, "
                    f"stride={stride}, padding={padding})"
                )
                check_array(f"{call} dw", dw, e_dw.shape)
                check_close(f"{call} dw", dw, e_dw, 1e-10, 1e-10)
                check_close(f"{call} db", db, e_db, 1e-10, 1e-10)


# -- Tasks 5 and 6 ----------------------------------------------------------------------------


def _grad_samples(gen, n, scales):
    shapes = [(3, 4), (3,), (2, 2, 2)]
    return [gen.standard_normal((n, *s)) * scales.reshape((n,) + (1,) * len(s)) for s in shapes]


@task(
    "Task 5: clip_and_sum",
    checks={"shapes and dtypes": 0.5, "norms before clipping": 0.5, "clipped sums": 1},
)
def clipping(t):
    gen = np.random.default_rng(5000)
    cases = []
    for n, clip in [(6, 1.0), (9, 0.3), (4, 50.0)]:
        grads = _grad_samples(gen, n, gen.uniform(0.05, 3.0, n))
        cases.append((grads, clip, t.call("clip_and_sum", grads, clip)))
    f32 = [g.astype(np.float32) for g in _grad_samples(gen, 5, np.ones(5))]
    out32 = t.call("clip_and_sum", f32, 1.0)
    with t.check("shapes and dtypes"):
        sums, norms = _items(out32, 2, "(sums, norms)")
        check_true(
            "clip_and_sum",
            isinstance(sums, list | tuple) and len(sums) == 3,
            "sums must be a list with one array per parameter",
        )
        for s, g in zip(sums, f32, strict=True):
            check_array("clip_and_sum sum of a float32 parameter", s, g.shape[1:], np.float32)
        check_array("clip_and_sum norms", norms, (5,), np.float64)
    for label in ("norms before clipping", "clipped sums"):
        with t.check(label):
            for grads, clip, out in cases:
                sums, norms = _items(out, 2, "(sums, norms)")
                e_sums, e_norms = oracle_clip(grads, clip)
                call = f"clip_and_sum({len(grads[0])} examples, clip_norm={clip})"
                if label == "norms before clipping":
                    check_close(f"{call} norms", norms, e_norms, 1e-10, 1e-12)
                else:
                    for i, (s, e) in enumerate(zip(sums, e_sums, strict=True)):
                        check_close(f"{call} sum of parameter {i}", s, e, 1e-10, 1e-12)


@task("Task 6: noisy_average", checks={"values": 1})
def noise(t):
    gen = np.random.default_rng(6000)
    with t.check("values"):
        for clip, sigma, lot, seed in [
            (1.0, 1.1, 8.0, 3),
            (0.5, 0.0, 2.0, 4),
            (4.0, 2.0, 600.0, 5),
        ]:
            sums = [gen.standard_normal((4, 3)), gen.standard_normal(5).astype(np.float32)]
            got = t.call("noisy_average", sums, clip, sigma, lot, seed)
            draw = np.random.default_rng(seed)
            call = (
                f"noisy_average(clip_norm={clip}, noise_multiplier={sigma}, L={lot}, seed={seed})"
            )
            check_true(
                call,
                isinstance(got, list | tuple) and len(got) == 2,
                "must return a list with one array per parameter",
            )
            for i, s in enumerate(sums):
                expected = (
                    s.astype(np.float64) + sigma * clip * draw.standard_normal(s.shape)
                ) / lot
                check_array(f"{call} parameter {i}", got[i], s.shape, s.dtype)
                tol = 1e-6 if s.dtype == np.float32 else 1e-12
                check_close(f"{call} parameter {i}", got[i], expected, tol, tol)


# -- Task 7 -----------------------------------------------------------------------------------


@task("Task 7: linear_ghost_sq_norms", checks={"values": 1})
def ghost(t):
    gen = np.random.default_rng(7000)
    with t.check("values"):
        for n, d_in, d_out in [(6, 5, 3), (1, 2, 4), (40, 30, 10)]:
            x, dout = gen.standard_normal((n, d_in)), gen.standard_normal((n, d_out))
            got = t.call("linear_ghost_sq_norms", x, dout)
            per_example = [
                np.concatenate([np.outer(dout[e], x[e]).ravel(), dout[e]]) for e in range(n)
            ]
            expected = np.array([float(v @ v) for v in per_example])
            check_array(
                f"linear_ghost_sq_norms(x {x.shape}, dout {dout.shape})", got, (n,), np.float64
            )
            check_close(f"linear_ghost_sq_norms(x {x.shape})", got, expected, 1e-10, 1e-12)


# -- Tasks 8 and 9 ----------------------------------------------------------------------------


@task(
    "Task 8: rdp_subsampled_gaussian",
    checks={"closed form at alpha = 2": 0.5, "values": 1, "large orders (no overflow)": 0.5},
)
def rdp(t):
    with t.check("closed form at alpha = 2"):
        for q, sigma in [(0.01, 1.1), (0.3, 0.8)]:
            got = t.call("rdp_subsampled_gaussian", q, sigma, 2)
            check_close(
                f"rdp_subsampled_gaussian(q={q}, sigma={sigma}, alpha=2)",
                got,
                math.log1p(q**2 * math.expm1(1 / sigma**2)),
                1e-9,
                1e-14,
            )
    with t.check("values"):
        for q, sigma, alpha in [(0.01, 1.1, 5), (0.06, 2.0, 17), (0.5, 3.0, 9), (0.001, 0.9, 3)]:
            got = t.call("rdp_subsampled_gaussian", q, sigma, alpha)
            check_close(
                f"rdp_subsampled_gaussian(q={q}, sigma={sigma}, alpha={alpha})",
                got,
                oracle_rdp(q, sigma, alpha),
                1e-9,
                1e-14,
            )
    with t.check("large orders (no overflow)"):
        for q, sigma, alpha in [(0.01, 0.7, 256), (0.2, 0.5, 64)]:
            got = t.call("rdp_subsampled_gaussian", q, sigma, alpha)
            label = f"rdp_subsampled_gaussian(q={q}, sigma={sigma}, alpha={alpha})"
            check_true(
                label,
                isinstance(got, float | int) and math.isfinite(got),
                "must be a finite float (sum the terms in the log domain)",
            )
            check_close(label, got, oracle_rdp(q, sigma, alpha), 1e-9, 1e-12)


@task("Task 9: dpsgd_epsilon", checks={"few steps": 1, "MNIST setting": 1})
def accountant(t):
    orders = list(range(2, 40)) + [64, 128]
    with t.check("few steps"):
        for q, sigma, steps, delta in [(0.1, 1.0, 10, 1e-5), (0.02, 2.0, 100, 1e-6)]:
            got = t.call("dpsgd_epsilon", q, sigma, steps, delta, orders)
            check_close(
                f"dpsgd_epsilon(q={q}, sigma={sigma}, steps={steps}, delta={delta})",
                got,
                oracle_epsilon(q, sigma, steps, delta, orders),
                1e-8,
                1e-12,
            )
    with t.check("MNIST setting"):
        for sigma, steps in [(1.1, 6000), (4.0, 10_000)]:
            got = t.call("dpsgd_epsilon", 0.01, sigma, steps, 1e-5, orders)
            check_close(
                f"dpsgd_epsilon(q=0.01, sigma={sigma}, steps={steps}, delta=1e-5)",
                got,
                oracle_epsilon(0.01, sigma, steps, 1e-5, orders),
                1e-8,
                1e-12,
            )
