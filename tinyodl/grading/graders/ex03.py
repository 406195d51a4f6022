"""Grader of exercise 03 (quantization): int8 arithmetic, folding, fake quantization, QAS.

The oracles are written here, from the definitions, differently from the exercise's
solution: rounding through Python's ``decimal`` (ROUND_HALF_UP is half away from zero),
``math.frexp`` and exact integers for the fixed-point multiplier, a batchnorm applied after a
direct convolution to check the folded one. Inputs come from fixed seeds and include exact
ties (x.5), where numpy's ``np.round`` (half to even) differs from the required rule.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal

import numpy as np

from tinyodl.grading.api import task
from tinyodl.grading.checks import check_array, check_close, check_equal, check_true

EXERCISE = "03_quantization"
ALLOW: tuple[str, ...] = ()
DENY = ("tinyodl.quant", "tinyodl.quantization", "tinyodl.qas", "tinyodl.reference")

# -- oracles ----------------------------------------------------------------------------------


def _round(v: float) -> int:
    """Half away from zero, exactly (Decimal of the float's exact value)."""
    return int(Decimal(float(v)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


_round_all = np.vectorize(_round, otypes=[np.int64])


def oracle_weights(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scales = []
    q = np.empty(w.shape, dtype=np.int64)
    for c in range(w.shape[0]):
        top = float(np.max(np.abs(w[c])))
        s = top / 127 if top > 0 else 1.0
        scales.append(s)
        q[c] = np.clip(_round_all(w[c] / s), -127, 127)
    return q, np.array(scales)


def oracle_qparams(x_min: float, x_max: float) -> tuple[float, int]:
    lo, hi = min(x_min, 0.0), max(x_max, 0.0)
    if hi == lo:
        return 1.0, 0
    s = (hi - lo) / 255
    return s, max(-128, min(127, -128 - _round(lo / s)))


def oracle_quantize(x: np.ndarray, s: float, zp: int) -> np.ndarray:
    return np.clip(_round_all(x / s) + zp, -128, 127)


def oracle_multiplier(m: float) -> tuple[int, int]:
    if m == 0:
        return 0, 0
    frac, shift = math.frexp(m)
    m0 = _round(frac * 2**31)
    if m0 == 2**31:
        m0, shift = m0 // 2, shift + 1
    return m0, shift


def oracle_mbqm(x: int, m0: int, shift: int) -> int:
    """Double rounding with Python ints: SRDHM (round half up), then half away from zero."""
    left, right = max(shift, 0), max(-shift, 0)
    xs = max(-(2**31), min(2**31 - 1, x * 2**left))
    high = (xs * m0 + 2**30) // 2**31  # floor division == arithmetic shift
    q, r = divmod(abs(high), 2**right)
    if 2 * r >= 2**right and right > 0:
        q += 1
    return q if high >= 0 else -q


def oracle_linear(x, w, b, zp_in, zp_out, m0, shift, lo, hi) -> np.ndarray:
    n, f = x.shape[0], w.shape[0]
    out = np.empty((n, f), dtype=np.int64)
    for i in range(n):
        for j in range(f):
            acc = sum(int(w[j, k]) * (int(x[i, k]) - zp_in) for k in range(x.shape[1]))
            y = oracle_mbqm(acc + int(b[j]), int(m0[j]), int(shift[j])) + zp_out
            out[i, j] = min(max(y, lo), hi)
    return out


def _conv(x, w, b):
    """Direct 3x3 'valid' convolution, one output pixel at a time."""
    n, c, h, width = x.shape
    f, _, kh, kw = w.shape
    out = np.zeros((n, f, h - kh + 1, width - kw + 1))
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            patch = x[:, :, i : i + kh, j : j + kw]
            out[:, :, i, j] = np.tensordot(patch, w, axes=([1, 2, 3], [1, 2, 3]))
    return out + (0 if b is None else np.asarray(b).reshape(1, -1, 1, 1))


def _items(value, n: int, what: str) -> tuple:
    if not isinstance(value, tuple | list) or len(value) != n:
        kind = type(value).__name__
        raise AssertionError(f"must return {what}, got a {kind}")
    return tuple(value)


def _ties(rng, f: int) -> np.ndarray:
    """Weights whose channel scale is a power of two, with exact .5 ties after division."""
    w = rng.integers(-250, 251, size=(f, 2, 3, 3)) / 2.0  # multiples of 0.5
    w[:, 0, 0, 0] = 127.0  # max |w| = 127 -> scale 1, ties stay ties
    return w * 2.0**-7


# -- Task 1 -----------------------------------------------------------------------------------


@task(
    "Task 1: per-channel weight quantization",
    checks={
        "returns int8 q and float64 scales of the right shapes": 0.5,
        "scales": 0.5,
        "values (round half away, clamp)": 1.0,
    },
)
def weights(t):
    rng = np.random.default_rng(31)
    w = rng.standard_normal((5, 3, 3, 3)) * np.array([0.1, 1, 3, 0.01, 2]).reshape(-1, 1, 1, 1)
    w[3] = 0.0  # an all-zero channel
    result = t.call("quantize_weights_per_channel", w)
    want_q, want_s = oracle_weights(w)
    with t.check("returns int8 q and float64 scales of the right shapes"):
        q, s = _items(result, 2, "(q, scales)")
        check_array("q", q, w.shape, np.int8)
        check_array("scales", s, (5,), np.float64)
    with t.check("scales"):
        q, s = _items(result, 2, "(q, scales)")
        check_close("scales (an all-zero channel gets 1)", s, want_s, 1e-12, 0)
    with t.check("values (round half away, clamp)"):
        q, _ = _items(result, 2, "(q, scales)")
        check_equal("q", np.asarray(q, dtype=np.int64), want_q)
        tie = _ties(rng, 3)
        q2, _ = _items(t.call("quantize_weights_per_channel", tie), 2, "(q, scales)")
        check_equal(
            "q of weights with exact .5 ties", np.asarray(q2, np.int64), oracle_weights(tie)[0]
        )


# -- Task 2 -----------------------------------------------------------------------------------


@task(
    "Task 2: activation qparams and quantize",
    checks={"choose_activation_qparams": 1.0, "quantize": 1.0},
)
def activations(t):
    with t.check("choose_activation_qparams"):
        for lo, hi in [(-1.0, 3.0), (0.0, 6.0), (0.5, 2.0), (-4.0, -1.0), (-0.3, 0.2), (0, 0)]:
            got = _items(t.call("choose_activation_qparams", lo, hi), 2, "(scale, zero_point)")
            s, zp = oracle_qparams(lo, hi)
            check_close(f"scale for range [{lo}, {hi}]", got[0], s, 1e-12, 0)
            check_true(
                f"zero_point for range [{lo}, {hi}]",
                isinstance(got[1], int) and got[1] == zp,
                f"expected the int {zp}, got {got[1]!r}",
            )
    with t.check("quantize"):
        rng = np.random.default_rng(32)
        x = rng.uniform(-2, 2, (4, 7))
        x[0, :3] = [0.25, -0.25, 0.75]  # ties at scale 0.5
        for s, zp in [(0.5, 0), (0.02, -10), (0.013, 5)]:
            q = t.call("quantize", x, s, zp)
            check_array(f"quantize(x, {s}, {zp})", q, x.shape, np.int8)
            check_equal(
                f"quantize(x, {s}, {zp})", np.asarray(q, np.int64), oracle_quantize(x, s, zp)
            )


# -- Task 3 -----------------------------------------------------------------------------------


@task(
    "Task 3: fold_batchnorm",
    checks={
        "folded conv equals conv then batchnorm": 0.5,
        "without a conv bias; inputs unchanged": 0.5,
    },
)
def folding(t):
    rng = np.random.default_rng(33)
    w, b = rng.standard_normal((4, 2, 3, 3)), rng.standard_normal(4)
    gamma, beta = rng.uniform(0.5, 2, 4), rng.standard_normal(4)
    mean, var = rng.standard_normal(4), rng.uniform(0.2, 3, 4)
    x = rng.standard_normal((2, 2, 6, 6))

    def reference(bias):
        conv = _conv(x, w, bias)
        shape = (1, -1, 1, 1)
        return gamma.reshape(shape) * (conv - mean.reshape(shape)) / np.sqrt(
            var.reshape(shape) + 1e-3
        ) + beta.reshape(shape)

    with t.check("folded conv equals conv then batchnorm"):
        wf, bf = _items(
            t.call("fold_batchnorm", w, b, gamma, beta, mean, var, 1e-3), 2, "(w_folded, b_folded)"
        )
        check_array("w_folded", wf, w.shape)
        check_array("b_folded", bf, (4,))
        check_close("conv with the folded weights", _conv(x, wf, bf), reference(b), 1e-9, 1e-9)
    with t.check("without a conv bias; inputs unchanged"):
        outcome = t.run("fold_batchnorm", w, None, gamma, beta, mean, var, 1e-3)
        wf, bf = _items(outcome.value, 2, "(w_folded, b_folded)")
        check_close(
            "conv (b=None) with the folded weights", _conv(x, wf, bf), reference(None), 1e-9, 1e-9
        )
        names = ("w", "b", "gamma", "beta", "mean", "var")
        values = (w, None, gamma, beta, mean, var)
        for i, (name, value) in enumerate(zip(names, values, strict=True)):
            if value is not None:
                check_equal(f"{name} after the call", outcome.args[i], value)


# -- Task 4 -----------------------------------------------------------------------------------


@task(
    "Task 4: the fixed-point multiplier",
    checks={"quantize_multiplier": 1.0, "multiply_by_quantized_multiplier": 1.0},
)
def multiplier(t):
    rng = np.random.default_rng(34)
    m = np.concatenate([rng.uniform(1e-4, 0.9, 12), [0.0, 0.5, 1.0, 1.5, 0.99999999999]])
    with t.check("quantize_multiplier"):
        m0, shift = _items(t.call("quantize_multiplier", m), 2, "(m0, shift)")
        check_array("m0", m0, m.shape)
        check_array("shift", shift, m.shape)
        want = np.array([oracle_multiplier(float(v)) for v in m])
        check_equal("m0", np.asarray(m0, np.int64), want[:, 0])
        check_equal("shift", np.asarray(shift, np.int64), want[:, 1])
    with t.check("multiply_by_quantized_multiplier"):
        x = rng.integers(-(2**20), 2**20, 40)
        x[:4] = [0, 1, -1, 2**31 - 1]
        for mult in (0.3, 0.0041, 0.7, 1.3):
            m0, shift = oracle_multiplier(mult)
            got = t.call("multiply_by_quantized_multiplier", x, m0, shift)
            check_array(f"result (multiplier {mult})", got, x.shape)
            want = np.array([oracle_mbqm(int(v), m0, shift) for v in x])
            check_equal(
                f"multiply_by_quantized_multiplier (multiplier {mult})",
                np.asarray(got, np.int64),
                want,
            )
        # values where single rounding and double rounding differ
        m0, shift = oracle_multiplier(1 / 256)
        ties = np.arange(-1000, 1000) * 2 + 1  # odd numbers: x/256 hits .5 after SRDHM
        got = t.call("multiply_by_quantized_multiplier", ties, m0, shift)
        want = np.array([oracle_mbqm(int(v), m0, shift) for v in ties])
        check_equal(
            "multiply_by_quantized_multiplier at half-way points", np.asarray(got, np.int64), want
        )


# -- Task 5 -----------------------------------------------------------------------------------


def _linear_case(rng, n, k, f, zp_in, zp_out):
    x = rng.integers(-128, 128, (n, k)).astype(np.int8)
    w = rng.integers(-127, 128, (f, k)).astype(np.int8)
    b = rng.integers(-5000, 5000, f).astype(np.int32)
    pairs = [oracle_multiplier(v) for v in rng.uniform(2e-4, 5e-3, f)]
    m0 = np.array([p[0] for p in pairs], dtype=np.int64)
    shift = np.array([p[1] for p in pairs], dtype=np.int64)
    return x, w, b, zp_in, zp_out, m0, shift


@task("Task 5: linear_s8", checks={"shape and dtype": 0.5, "values": 1.0, "fused clamp": 0.5})
def linear(t):
    rng = np.random.default_rng(35)
    case = _linear_case(rng, 3, 20, 4, -7, 3)
    with t.check("shape and dtype"):
        check_array("linear_s8(...)", t.call("linear_s8", *case), (3, 4), np.int8)
    with t.check("values"):
        got = t.call("linear_s8", *case)
        check_equal("linear_s8", np.asarray(got, np.int64), oracle_linear(*case, -128, 127))
    with t.check("fused clamp"):
        got = t.call("linear_s8", *case, act_min=3, act_max=40)
        check_equal(
            "linear_s8 with act_min=3, act_max=40",
            np.asarray(got, np.int64),
            oracle_linear(*case, 3, 40),
        )


@task(
    "Task 5 (hidden): linear_s8 with long rows and extreme zero points",
    checks={"long rows, zero point -128 and 127": 1.0},
    hidden=True,
)
def linear_hidden(t):
    rng = np.random.default_rng(36)
    with t.check("long rows, zero point -128 and 127"):
        for zp_in in (-128, 127):
            case = _linear_case(rng, 2, 300, 3, zp_in, -20)
            got = t.call("linear_s8", *case)
            check_equal(
                f"linear_s8 (K=300, zp_in={zp_in})",
                np.asarray(got, np.int64),
                oracle_linear(*case, -128, 127),
            )


# -- Task 6 -----------------------------------------------------------------------------------


@task(
    "Task 6: fake quantization and the straight-through estimator",
    checks={"forward": 0.5, "mask and backward": 0.5},
)
def fake_quant(t):
    rng = np.random.default_rng(37)
    x = rng.uniform(-3, 3, (5, 6)).astype(np.float32)
    x[0, :3] = [0.3, -0.3, 2.55]  # clamped at the bounds below
    s, zp, lo, hi = 0.05, 4, -40, 50
    q = np.clip(_round_all(x.astype(np.float64) / s) + zp, lo, hi)
    raw = _round_all(x.astype(np.float64) / s) + zp
    with t.check("forward"):
        y, mask = _items(t.call("fake_quantize_forward", x, s, zp, lo, hi), 2, "(y, mask)")
        check_array("y", y, x.shape, np.float32)
        check_close("y", y, s * (q - zp), 1e-6, 1e-6)
    with t.check("mask and backward"):
        _, mask = _items(t.call("fake_quantize_forward", x, s, zp, lo, hi), 2, "(y, mask)")
        check_array("mask", mask, x.shape, np.bool_)
        check_equal("mask (values on a bound count as clamped)", mask, (raw > lo) & (raw < hi))
        dout = rng.standard_normal(x.shape)
        got = t.call("fake_quantize_backward", dout, (raw > lo) & (raw < hi))
        check_close("fake_quantize_backward", got, np.where((raw > lo) & (raw < hi), dout, 0))


# -- Task 7 -----------------------------------------------------------------------------------


@task("Task 7: QAS and the pure int8 update", checks={"qas_scale": 1.0, "int8_update": 1.0})
def qas(t):
    rng = np.random.default_rng(38)
    g_w, g_b = rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)
    s_w, s_x = rng.uniform(1e-3, 2e-2, 3), 0.037
    with t.check("qas_scale"):
        a, b = _items(t.call("qas_scale", g_w, g_b, s_w, s_x), 2, "(g_w_scaled, g_b_scaled)")
        want_w = np.stack([g_w[c] / s_w[c] ** 2 for c in range(3)])
        check_close("g_w_scaled", a, want_w, 1e-10, 0)
        check_close("g_b_scaled", b, g_b / (s_w * s_x) ** 2, 1e-10, 0)
    with t.check("int8_update"):
        w_q = rng.integers(-127, 128, 40).astype(np.int8)
        w_q[:4] = [120, -120, 5, 5]
        delta = rng.uniform(-3, 3, 40)
        delta[:4] = [10.0, -10.0, 0.5, -0.49]  # clamp, clamp, a tie (away), lost
        outcome = t.run("int8_update", w_q.copy(), delta)
        check_array("int8_update(w_q, delta)", outcome.value, w_q.shape, np.int8)
        want = np.clip(w_q.astype(np.int64) + _round_all(delta), -127, 127)
        check_equal("int8_update", np.asarray(outcome.value, np.int64), want)
        check_equal("w_q after the call (not modified)", outcome.args[0], w_q)
