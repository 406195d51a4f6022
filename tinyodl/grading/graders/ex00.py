"""Grader of exercise 00 (foundations): layers as forward/backward pairs.

Every check compares what the student's function returns with an oracle written here in a
different way from the exercise's solution (explicit loops instead of im2col, ``logaddexp``
instead of a max shift, einsum instead of matmul), on inputs from fixed seeds. The oracles
use numpy only and run in the grading process; the student's process only computes.
"""

from __future__ import annotations

import numpy as np

from tinyodl.grading.api import Fn, task
from tinyodl.grading.checks import check_array, check_close, check_true

EXERCISE = "00_foundations"
ALLOW: tuple[str, ...] = ()
DENY = ("tinyodl.nn", "tinyodl.ops", "tinyodl.reference")

# -- oracles ----------------------------------------------------------------------------------


def _pair(value) -> tuple[int, int]:
    return (int(value), int(value)) if np.isscalar(value) else (int(value[0]), int(value[1]))


def oracle_numerical_gradient(f, x: np.ndarray, h: float) -> np.ndarray:
    """Centered differences on a copy of x (flat loop)."""
    flat = x.astype(np.float64).ravel()
    grad = np.empty_like(flat)
    for i in range(flat.size):
        step = np.zeros_like(flat)
        step[i] = h
        grad[i] = (f((flat + step).reshape(x.shape)) - f((flat - step).reshape(x.shape))) / (2 * h)
    return grad.reshape(x.shape)


def oracle_relative_error(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))


def oracle_im2col(x: np.ndarray, kernel_size, stride, padding) -> np.ndarray:
    """One output position at a time: column oh*OW + ow is the flattened receptive field."""
    (kh, kw), (sh, sw), (ph, pw) = _pair(kernel_size), _pair(stride), _pair(padding)
    n, c, h, w = x.shape
    padded = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
    padded[:, :, ph : ph + h, pw : pw + w] = x
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    cols = np.empty((n, c * kh * kw, oh * ow), dtype=x.dtype)
    for r in range(oh):
        for q in range(ow):
            patch = padded[:, :, r * sh : r * sh + kh, q * sw : q * sw + kw]
            cols[:, :, r * ow + q] = patch.reshape(n, -1)
    return cols


def oracle_conv2d(x: np.ndarray, w: np.ndarray, b, stride, padding) -> np.ndarray:
    """Direct convolution: accumulate one kernel tap (i, j) at a time."""
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    n, c, h, width = x.shape
    f, _, kh, kw = w.shape
    padded = np.zeros((n, c, h + 2 * ph, width + 2 * pw), dtype=np.float64)
    padded[:, :, ph : ph + h, pw : pw + width] = x
    oh, ow = (h + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1
    out = np.zeros((n, f, oh, ow))
    for i in range(kh):
        for j in range(kw):
            window = padded[:, :, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw]
            out += np.einsum("nchw,fc->nfhw", window, w[:, :, i, j])
    if b is not None:
        out += np.asarray(b, dtype=np.float64).reshape(1, f, 1, 1)
    return out


def oracle_softmax_cross_entropy(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    n, k = logits.shape
    log_z = np.logaddexp.reduce(logits, axis=1)
    loss = float(np.mean(log_z - logits[np.arange(n), y]))
    probs = np.exp(logits - log_z[:, None])
    return loss, (probs - np.eye(k)[y]) / n


def _items(value, n: int, what: str) -> tuple:
    """``value`` as a tuple of ``n`` items, or an AssertionError naming what was expected."""
    if not isinstance(value, tuple | list) or len(value) != n:
        got = f"a {type(value).__name__}" + (
            f" of length {len(value)}" if isinstance(value, tuple | list) else ""
        )
        raise AssertionError(f"must return {what}, got {got}")
    return tuple(value)


# -- Task 1 -----------------------------------------------------------------------------------

SMOOTH = "lambda x: float(np.sum(a * np.sin(x)) + 0.5 * np.sum(x * x))"


def _smooth(a: np.ndarray):
    """The grader's copy of SMOOTH: sum(a * sin(x)) + 0.5 * sum(x**2)."""
    return lambda x: float(np.sum(a * np.sin(x)) + 0.5 * np.sum(x * x))


@task(
    "Task 1: numerical_gradient and relative_error",
    checks={
        "numerical_gradient of a smooth function": 0.5,
        "numerical_gradient uses the step h": 0.5,
        "numerical_gradient leaves x as it was": 0.5,
        "relative_error": 0.5,
    },
)
def gradient_check(t):
    rng = np.random.default_rng(1000)
    with t.check("numerical_gradient of a smooth function"):
        for shape in [(5,), (3, 4), (2, 3, 2)]:
            a, x = rng.standard_normal(shape), rng.standard_normal(shape)
            grad = t.call("numerical_gradient", Fn(SMOOTH, a=a), x.copy())
            label = f"numerical_gradient(f, x of shape {shape})"
            check_array(label, grad, shape, np.float64)
            check_close(label, grad, a * np.cos(x) + x, 1e-7, 1e-8)
    with t.check("numerical_gradient uses the step h"):
        a, x = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
        grad = t.call("numerical_gradient", Fn(SMOOTH, a=a), x.copy(), h=1e-2)
        expected = oracle_numerical_gradient(_smooth(a), x, 1e-2)
        check_close("numerical_gradient(f, x, h=1e-2)", grad, expected, 1e-9, 1e-11)
    with t.check("numerical_gradient leaves x as it was"):
        a, x = rng.standard_normal((3, 3)), rng.standard_normal((3, 3))
        after = t.run("numerical_gradient", Fn(SMOOTH, a=a), x.copy()).args[1]
        check_true(
            "numerical_gradient(f, x)",
            isinstance(after, np.ndarray) and np.array_equal(after, x),
            "x must hold its original values when the function returns "
            "(put each entry back after perturbing it)",
        )
    with t.check("relative_error"):
        for size in [1, 7, 30]:
            u, v = rng.standard_normal(size), rng.standard_normal(size)
            got = t.call("relative_error", u, v)
            check_close(f"relative_error(a, b) of size {size}", got, oracle_relative_error(u, v))
            near = u * (1 + 1e-6 * rng.standard_normal(size))
            got = t.call("relative_error", u, near)
            check_close(
                "relative_error of nearly equal arrays", got, oracle_relative_error(u, near)
            )
        zeros = np.zeros(4)
        check_close("relative_error of two zero arrays", t.call("relative_error", zeros, zeros), 0)
        tiny = np.array([0.0, 1e-12])
        check_close(
            "relative_error with the 1e-8 floor",
            t.call("relative_error", tiny, -tiny),
            oracle_relative_error(tiny, -tiny),
        )


# -- Tasks 2 and 3 ----------------------------------------------------------------------------

_LINEAR = [((4, 5, 3), np.float64), ((1, 7, 2), np.float64), ((6, 3, 8), np.float32)]


@task(
    "Task 2: linear_forward",
    checks={"shape and dtype (float32 in, float32 out)": 0.5, "values": 0.5},
)
def linear_forward(t):
    rng = np.random.default_rng(2000)
    cases = []
    for (n, d_in, d_out), dtype in _LINEAR:
        x = rng.standard_normal((n, d_in)).astype(dtype)
        w = rng.standard_normal((d_out, d_in)).astype(dtype)
        b = rng.standard_normal(d_out).astype(dtype)
        cases.append((x, w, b))
    outs = [t.call("linear_forward", x, w, b) for x, w, b in cases]
    with t.check("shape and dtype (float32 in, float32 out)"):
        for (x, w, _), out in zip(cases, outs, strict=True):
            label = f"linear_forward(x {x.shape} {x.dtype}, w {w.shape}, b)"
            check_array(label, out, (x.shape[0], w.shape[0]), x.dtype)
    with t.check("values"):
        for (x, w, b), out in zip(cases, outs, strict=True):
            expected = np.einsum("ni,oi->no", x.astype(np.float64), w.astype(np.float64)) + b
            tol = 1e-5 if x.dtype == np.float32 else 1e-10
            check_close(f"linear_forward(x {x.shape}, w {w.shape}, b)", out, expected, tol, tol)


@task(
    "Task 3: linear_backward",
    checks={"returns (dx, dw, db) with the shapes of x, w and b": 0.5, "dx": 0.5, "dw": 0.5,
            "db": 0.5},
)  # fmt: skip
def linear_backward(t):
    rng = np.random.default_rng(3000)
    cases = []
    for n, d_in, d_out in [(4, 5, 3), (1, 2, 6), (9, 4, 4)]:
        x, w = rng.standard_normal((n, d_in)), rng.standard_normal((d_out, d_in))
        dout = rng.standard_normal((n, d_out))
        cases.append((dout, x, w))
    outs = [t.call("linear_backward", dout, x, w) for dout, x, w in cases]
    what = "a tuple (dx, dw, db)"
    with t.check("returns (dx, dw, db) with the shapes of x, w and b"):
        for (dout, x, w), out in zip(cases, outs, strict=True):
            dx, dw, db = _items(out, 3, what)
            label = f"linear_backward(dout {dout.shape}, x {x.shape}, w {w.shape})"
            check_array(f"{label} dx", dx, x.shape)
            check_array(f"{label} dw", dw, w.shape)
            check_array(f"{label} db", db, (w.shape[0],))
    oracles = {
        "dx": lambda dout, x, w: np.einsum("no,oi->ni", dout, w),
        "dw": lambda dout, x, w: np.einsum("no,ni->oi", dout, x),
        "db": lambda dout, x, w: np.einsum("no->o", dout),
    }
    for index, (name, oracle) in enumerate(oracles.items()):
        with t.check(name):
            for (dout, x, w), out in zip(cases, outs, strict=True):
                got = _items(out, 3, what)[index]
                label = f"linear_backward {name} for x {x.shape}, w {w.shape}"
                check_close(label, got, oracle(dout, x, w))


# -- Tasks 4 and 5 ----------------------------------------------------------------------------

_IM2COL_PLAIN = [((2, 3, 5, 5), 3, 1, 0), ((1, 4, 3, 3), 1, 1, 0)]
_IM2COL_HARD = [((1, 2, 6, 7), 3, 2, 1), ((2, 1, 4, 6), (2, 3), (1, 2), (1, 0))]


def _im2col_label(shape, kernel, stride, padding) -> str:
    return f"im2col(x {shape}, kernel_size={kernel}, stride={stride}, padding={padding})"


@task(
    "Task 4: im2col",
    checks={
        "shape and dtype (float32 stays float32)": 0.5,
        "values with stride 1 and no padding": 1,
        "values with stride, padding and rectangular kernels": 0.5,
    },
)
def im2col(t):
    rng = np.random.default_rng(4000)
    with t.check("shape and dtype (float32 stays float32)"):
        for dtype in (np.float64, np.float32):
            x = rng.standard_normal((1, 2, 4, 4)).astype(dtype)
            check_array(_im2col_label(x.shape, 2, 2, 0), t.call("im2col", x, 2, 2, 0),
                        (1, 8, 4), dtype)  # fmt: skip
    for label, cases in [
        ("values with stride 1 and no padding", _IM2COL_PLAIN),
        ("values with stride, padding and rectangular kernels", _IM2COL_HARD),
    ]:
        with t.check(label):
            for shape, kernel, stride, padding in cases:
                x = rng.standard_normal(shape)
                expected = oracle_im2col(x, kernel, stride, padding)
                got = t.call("im2col", x, kernel, stride, padding)
                check_close(_im2col_label(shape, kernel, stride, padding), got, expected, 0, 0)


_CONV = [((2, 3, 5, 5), (4, 3), 1, 0), ((1, 2, 7, 6), (3, 3), 2, 1), ((3, 1, 4, 4), (2, 1), 1, 0)]


@task("Task 5: conv2d_forward", checks={"output shape": 0.5, "values": 1.5})
def conv2d_forward(t):
    rng = np.random.default_rng(5000)
    cases = []
    for (n, c, h, w), (f, k), stride, padding in _CONV:
        x, weight = rng.standard_normal((n, c, h, w)), rng.standard_normal((f, c, k, k))
        cases.append((x, weight, rng.standard_normal(f), stride, padding))
    outs = [
        t.call("conv2d_forward", x, weight, b, stride=stride, padding=padding)
        for x, weight, b, stride, padding in cases
    ]
    for label in ("output shape", "values"):
        with t.check(label):
            for (x, weight, b, stride, padding), out in zip(cases, outs, strict=True):
                expected = oracle_conv2d(x, weight, b, stride, padding)
                call = (
                    f"conv2d_forward(x {x.shape}, w {weight.shape}, stride={stride}, "
                    f"padding={padding})"
                )
                if label == "output shape":
                    check_array(call, out, expected.shape)
                else:
                    check_close(call, out, expected)


@task(
    "Task 5 (hidden): conv2d_forward on more shapes",
    checks={"float32, asymmetric stride and padding, no bias": 1},
    hidden=True,
)
def conv2d_forward_hidden(t):
    rng = np.random.default_rng(5500)
    x = rng.standard_normal((2, 3, 7, 5)).astype(np.float32)
    weight = rng.standard_normal((4, 3, 3, 2)).astype(np.float32)
    with t.check("float32, asymmetric stride and padding, no bias"):
        out = t.call("conv2d_forward", x, weight, None, stride=(2, 1), padding=(1, 2))
        expected = oracle_conv2d(x, weight, None, (2, 1), (1, 2))
        check_array("conv2d_forward float32", out, expected.shape, np.float32)
        check_close("conv2d_forward float32", out, expected, 1e-4, 1e-4)


# -- Task 6 -----------------------------------------------------------------------------------


@task(
    "Task 6: softmax_cross_entropy",
    checks={"loss": 0.5, "dlogits": 0.5, "large logits (no overflow)": 1},
)
def softmax_cross_entropy(t):
    rng = np.random.default_rng(6000)
    cases = {"loss": [], "dlogits": [], "large logits (no overflow)": []}
    for n, k, scale in [(5, 4, 1.0), (1, 3, 1.0), (8, 10, 3.0), (6, 5, 1000.0)]:
        logits = scale * rng.standard_normal((n, k))
        y = rng.integers(0, k, size=n)
        out = t.call("softmax_cross_entropy", logits, y)
        keys = ["large logits (no overflow)"] if scale > 100 else ["loss", "dlogits"]
        for key in keys:
            cases[key].append((logits, y, out, scale))
    for label, entries in cases.items():
        with t.check(label):
            for logits, y, out, scale in entries:
                loss, dlogits = _items(out, 2, "a tuple (loss, dlogits)")
                expected_loss, expected_grad = oracle_softmax_cross_entropy(logits, y)
                call = f"softmax_cross_entropy(logits {logits.shape} of magnitude ~{scale:g}, y)"
                if label != "dlogits":
                    check_close(f"{call}: loss", loss, expected_loss, 1e-8, 1e-10)
                if label != "loss":
                    check_close(f"{call}: dlogits", dlogits, expected_grad, 1e-7, 1e-10)


# -- Task 7 -----------------------------------------------------------------------------------


@task(
    "Task 7: sgd_momentum_step",
    checks={"updates w and velocity in place and returns them": 0.5, "values": 0.5},
)
def sgd_momentum_step(t):
    rng = np.random.default_rng(7000)
    in_place, values = [], []
    for momentum in [0.9, 0.0, 0.5]:
        w, v = rng.standard_normal((3, 4)), np.zeros((3, 4))
        for step, lr in enumerate([0.1, 0.05, 0.2]):
            g = rng.standard_normal(w.shape)
            out = t.run("sgd_momentum_step", w.copy(), g, v.copy(), lr=lr, momentum=momentum)
            in_place.append(
                out.returned_arg("value[0]", "args[0]") and out.returned_arg("value[1]", "args[2]")
            )
            v = momentum * v + g  # each step starts from the correct state of the last one
            w = w - lr * v
            label = f"after step {step + 1} with lr={lr}, momentum={momentum}"
            values.append((label, out.value, w, v))
    with t.check("updates w and velocity in place and returns them"):
        check_true(
            "sgd_momentum_step(w, grad, velocity, lr, momentum)",
            all(in_place),
            "must update w and velocity in place and return those same arrays "
            "(use *=, +=, -= instead of w = w - ...)",
        )
    with t.check("values"):
        for label, value, w_ref, v_ref in values:
            w_got, v_got = _items(value, 2, "(w, velocity)")
            check_close(f"velocity {label}", v_got, v_ref, 1e-12, 1e-12)
            check_close(f"w {label}", w_got, w_ref, 1e-12, 1e-12)
