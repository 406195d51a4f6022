"""Grader of exercise 00 (foundations): one ``@graded`` test per task.

Every check compares the student's function with an independent oracle written here in a
different way from the exercise's solution (explicit loops instead of im2col, ``logaddexp``
instead of a max shift, ...), on randomized inputs from fixed seeds. The oracles use numpy
only, so grading does not depend on tinyodl's kernels or backend.

Run with pytest::

    pytest -p tinyodl.grading.pytest_plugin --notebook NB.ipynb --pyargs tinyodl.grading.tests_ex00
"""

from __future__ import annotations

import numpy as np

from tinyodl.grading.tasks import check_array, check_close, graded, student_function

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


# -- tasks ------------------------------------------------------------------------------------


def _smooth(a: np.ndarray):
    """A smooth test function with a known gradient: sum(a * sin(x)) + 0.5 * sum(x**2)."""
    return lambda x: float(np.sum(a * np.sin(x)) + 0.5 * np.sum(x * x))


@graded(points=2, name="Task 1: numerical_gradient and relative_error")
def test_gradient_check(student):
    numerical_gradient = student_function(student, "numerical_gradient")
    relative_error = student_function(student, "relative_error")
    rng = np.random.default_rng(1000)
    for shape in [(5,), (3, 4), (2, 3, 2)]:
        a, x = rng.standard_normal(shape), rng.standard_normal(shape)
        before = x.copy()
        grad = numerical_gradient(_smooth(a), x)
        check_close(f"numerical_gradient {shape}", grad, a * np.cos(before) + before, 1e-7, 1e-8)
        if not np.array_equal(x, before):
            raise AssertionError("numerical_gradient: x must hold its original values afterwards")
    a, x = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    expected = oracle_numerical_gradient(_smooth(a), x, 1e-2)
    grad = numerical_gradient(_smooth(a), x.copy(), h=1e-2)
    check_close("numerical_gradient with h=1e-2 (use the step h)", grad, expected, 1e-9, 1e-11)

    for size in [1, 7, 30]:
        u, v = rng.standard_normal(size), rng.standard_normal(size)
        check_close(
            f"relative_error (size {size})", relative_error(u, v), oracle_relative_error(u, v)
        )
        near = u * (1 + 1e-6 * rng.standard_normal(size))
        check_close(
            "relative_error of nearly equal arrays",
            relative_error(u, near),
            oracle_relative_error(u, near),
        )
    zeros = np.zeros(4)
    check_close("relative_error of two zero arrays", relative_error(zeros, zeros), 0.0)
    tiny = np.array([0.0, 1e-12])
    check_close(
        "relative_error with a 1e-8 floor",
        relative_error(tiny, -tiny),
        oracle_relative_error(tiny, -tiny),
    )


@graded(points=1, name="Task 2: linear_forward")
def test_linear_forward(student):
    linear_forward = student_function(student, "linear_forward")
    rng = np.random.default_rng(2000)
    for (n, d_in, d_out), dtype in [
        ((4, 5, 3), np.float64),
        ((1, 7, 2), np.float64),
        ((6, 3, 8), np.float32),
    ]:
        x = rng.standard_normal((n, d_in)).astype(dtype)
        w = rng.standard_normal((d_out, d_in)).astype(dtype)
        b = rng.standard_normal(d_out).astype(dtype)
        out = linear_forward(x, w, b)
        check_array(f"linear_forward output for x {x.shape}, w {w.shape}", out, (n, d_out), dtype)
        expected = np.einsum("ni,oi->no", x.astype(np.float64), w.astype(np.float64)) + b
        tol = 1e-5 if dtype == np.float32 else 1e-10
        check_close(f"linear_forward for x {x.shape}, w {w.shape}", out, expected, tol, tol)


@graded(points=2, name="Task 3: linear_backward")
def test_linear_backward(student):
    linear_backward = student_function(student, "linear_backward")
    rng = np.random.default_rng(3000)
    for n, d_in, d_out in [(4, 5, 3), (1, 2, 6), (9, 4, 4)]:
        x, w = rng.standard_normal((n, d_in)), rng.standard_normal((d_out, d_in))
        dout = rng.standard_normal((n, d_out))
        result = linear_backward(dout, x, w)
        if not isinstance(result, tuple | list) or len(result) != 3:
            raise AssertionError("linear_backward must return a tuple (dx, dw, db)")
        dx, dw, db = result
        check_close(f"linear_backward dx for x {x.shape}", dx, np.einsum("no,oi->ni", dout, w))
        check_close(f"linear_backward dw for w {w.shape}", dw, np.einsum("no,ni->oi", dout, x))
        check_close(f"linear_backward db for b ({d_out},)", db, np.einsum("no->o", dout))


_IM2COL_CASES = [  # (x shape, kernel_size, stride, padding)
    ((2, 3, 5, 5), 3, 1, 0),
    ((1, 2, 6, 7), 3, 2, 1),
    ((2, 1, 4, 6), (2, 3), (1, 2), (1, 0)),
    ((1, 4, 3, 3), 1, 1, 0),
]


@graded(points=2, name="Task 4: im2col")
def test_im2col(student):
    im2col = student_function(student, "im2col")
    rng = np.random.default_rng(4000)
    for shape, kernel, stride, padding in _IM2COL_CASES:
        x = rng.standard_normal(shape)
        expected = oracle_im2col(x, kernel, stride, padding)
        label = f"im2col(x {shape}, kernel_size={kernel}, stride={stride}, padding={padding})"
        check_close(label, im2col(x, kernel, stride, padding), expected, 0, 0)
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    check_array("im2col of a float32 input", im2col(x, 2, 2, 0), (1, 8, 4), np.float32)


@graded(points=2, name="Task 5: conv2d_forward")
def test_conv2d_forward(student):
    conv2d_forward = student_function(student, "conv2d_forward")
    rng = np.random.default_rng(5000)
    for (n, c, h, w), (f, k), stride, padding in [
        ((2, 3, 5, 5), (4, 3), 1, 0),
        ((1, 2, 7, 6), (3, 3), 2, 1),
        ((3, 1, 4, 4), (2, 1), 1, 0),
    ]:
        x, weight = rng.standard_normal((n, c, h, w)), rng.standard_normal((f, c, k, k))
        b = rng.standard_normal(f)
        expected = oracle_conv2d(x, weight, b, stride, padding)
        out = conv2d_forward(x, weight, b, stride=stride, padding=padding)
        check_close(
            f"conv2d_forward(x {x.shape}, w {weight.shape}, stride={stride}, padding={padding})",
            out,
            expected,
        )


@graded(points=1, name="Task 5 (hidden): conv2d_forward on more shapes", hidden=True)
def test_conv2d_forward_hidden(student):
    conv2d_forward = student_function(student, "conv2d_forward")
    rng = np.random.default_rng(5500)
    x = rng.standard_normal((2, 3, 7, 5)).astype(np.float32)
    weight = rng.standard_normal((4, 3, 3, 2)).astype(np.float32)
    out = conv2d_forward(x, weight, None, stride=(2, 1), padding=(1, 2))
    expected = oracle_conv2d(x, weight, None, (2, 1), (1, 2))
    check_array("conv2d_forward float32", out, expected.shape, np.float32)
    check_close("conv2d_forward float32", out, expected, 1e-4, 1e-4)


@graded(points=2, name="Task 6: softmax_cross_entropy")
def test_softmax_cross_entropy(student):
    softmax_cross_entropy = student_function(student, "softmax_cross_entropy")
    rng = np.random.default_rng(6000)
    for n, k, scale in [(5, 4, 1.0), (1, 3, 1.0), (8, 10, 3.0), (6, 5, 1000.0)]:
        logits = scale * rng.standard_normal((n, k))
        y = rng.integers(0, k, size=n)
        result = softmax_cross_entropy(logits, y)
        if not isinstance(result, tuple | list) or len(result) != 2:
            raise AssertionError("softmax_cross_entropy must return a tuple (loss, dlogits)")
        loss, dlogits = result
        expected_loss, expected_grad = oracle_softmax_cross_entropy(logits, y)
        label = f"softmax_cross_entropy for logits {logits.shape} of magnitude ~{scale:g}"
        check_close(f"{label}: loss", loss, expected_loss, 1e-8, 1e-10)
        check_close(f"{label}: dlogits", dlogits, expected_grad, 1e-7, 1e-10)


@graded(points=1, name="Task 7: sgd_momentum_step")
def test_sgd_momentum_step(student):
    sgd_momentum_step = student_function(student, "sgd_momentum_step")
    rng = np.random.default_rng(7000)
    for momentum in [0.9, 0.0, 0.5]:
        w = rng.standard_normal((3, 4))
        v = np.zeros_like(w)
        w_ref, v_ref = w.copy(), v.copy()
        for step, lr in enumerate([0.1, 0.05, 0.2]):
            g = rng.standard_normal(w.shape)
            result = sgd_momentum_step(w, g, v, lr=lr, momentum=momentum)
            if not isinstance(result, tuple | list) or len(result) != 2:
                raise AssertionError("sgd_momentum_step must return (w, velocity)")
            if result[0] is not w or result[1] is not v:
                raise AssertionError(
                    "sgd_momentum_step must update w and velocity in place and return the same "
                    "array objects (use -=, +=, *= instead of w = w - ...)"
                )
            v_ref = momentum * v_ref + g
            w_ref = w_ref - lr * v_ref
            label = f"after step {step + 1} with lr={lr}, momentum={momentum}"
            check_close(f"velocity {label}", v, v_ref, 1e-12, 1e-12)
            check_close(f"w {label}", w, w_ref, 1e-12, 1e-12)
