"""Grader of exercise 13 (deployment): layouts, SAME padding, requantization rounding,
manifest checksums, model differences and their compression.

Oracles are written differently from the solution: layouts by einsum index strings, SAME
padding as the smallest padding that gives the output size, the rounding with exact
rational arithmetic (``fractions.Fraction``; Python's ``round`` ties to even), checksums
from ``memoryview`` bytes, top-k by sorting Python tuples.
"""

from __future__ import annotations

import hashlib
import math
from fractions import Fraction

import numpy as np

from tinyodl.grading.api import StudentError, StudentGone, task
from tinyodl.grading.checks import check_array, check_equal, check_true

EXERCISE = "13_export"
ALLOW: tuple[str, ...] = ()
DENY = ("tinyodl.export", "tinyodl.quantization", "tinyodl.quant")


def _pair(value, what: str) -> tuple:
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise AssertionError(f"must return {what}, got a {type(value).__name__}")
    return tuple(value)


# -- oracles ----------------------------------------------------------------------------------


def oracle_same(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    out = math.ceil(size / stride)
    total = 0
    while (size + total - kernel) // stride + 1 < out:  # smallest padding that fits
        total += 1
    return out, total // 2, total - total // 2


def oracle_requantize(acc, multiplier, zp, mode) -> np.ndarray:
    out = np.zeros(acc.shape, dtype=np.int64)
    for i in range(acc.shape[0]):
        for j in range(acc.shape[1]):
            v = Fraction(int(acc[i, j])) * Fraction(float(multiplier[j]))
            if mode == "onnx":
                r = round(v)  # ties to even
            else:
                r = math.floor(abs(v) + Fraction(1, 2)) * (1 if v >= 0 else -1)
            out[i, j] = min(127, max(-128, r + zp))
    return out


def oracle_sha(a: np.ndarray) -> str:
    return hashlib.sha256(memoryview(np.require(a, requirements="C")).cast("B")).hexdigest()


def oracle_topk(d: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    flat = d.ravel().tolist()
    ranked = sorted(((-abs(v), i) for i, v in enumerate(flat)))[:k]
    index = sorted(i for _, i in ranked)
    return np.array(index), np.array([flat[i] for i in index], dtype=np.float32)


# -- tasks ------------------------------------------------------------------------------------


@task("Task 1: TFLite weight layouts", checks={"conv layout": 1, "depthwise layout": 1})
def layout(t):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((5, 3, 2, 4)).astype(np.float32)
    with t.check("conv layout"):
        got = check_array("OHWI weight", t.call("to_tflite_layout", w, False), (5, 2, 4, 3))
        check_equal("OHWI weight", got, np.einsum("fcij->fijc", w))
        check_true("dtype", got.dtype == np.float32, "the dtype must stay float32")
    dw = rng.integers(-127, 128, (6, 1, 3, 2)).astype(np.int8)
    with t.check("depthwise layout"):
        got = check_array("1HWC weight", t.call("to_tflite_layout", dw, True), (1, 3, 2, 6))
        check_equal("1HWC weight", got, np.einsum("cxij->xijc", dw))
        check_true("dtype", got.dtype == np.int8, "the dtype must stay int8")


@task("Task 2: SAME padding", checks={"stride 1": 1, "stride 2": 1})
def padding(t):
    with t.check("stride 1"):
        for size, kernel in ((7, 3), (8, 5), (5, 1), (4, 4)):
            got = t.call("same_padding", size, kernel, 1)
            check_equal(f"same_padding({size}, {kernel}, 1)", got, oracle_same(size, kernel, 1))
    with t.check("stride 2"):
        for size, kernel in ((28, 3), (14, 3), (7, 3), (9, 5), (2, 1)):
            got = t.call("same_padding", size, kernel, 2)
            check_equal(f"same_padding({size}, {kernel}, 2)", got, oracle_same(size, kernel, 2))


@task(
    "Task 3: requantization (TFLite reference FC, ONNX)",
    checks={"tflite rounding": 1, "onnx rounding": 1, "int8 and clamped": 0.5, "unknown mode": 0.5},
)
def requant(t):
    rng = np.random.default_rng(3)
    acc = rng.integers(-5000, 5000, (6, 4)).astype(np.int32)
    acc[0] = [5, -5, 7, -7]  # ties: 2.5, -2.5, 3.5, -3.5 with multiplier 0.5
    acc[1] = [1, 3, -1, -3]
    mult = np.array([0.5, 0.5, 0.5, 0.5])
    mult_random = rng.uniform(0.001, 0.05, 4)
    for mode, label in (("tflite", "tflite rounding"), ("onnx", "onnx rounding")):
        with t.check(label):
            for m, zp in ((mult, 0), (mult_random, -3)):
                got = t.call("requantize", acc, m, zp, mode)
                check_array("output", got, acc.shape)
                check_equal(f"{mode} output", got, oracle_requantize(acc, m, zp, mode))
    with t.check("int8 and clamped"):
        big = np.array([[100000, -100000, 254]], dtype=np.int32)
        got = check_array(
            "output",
            t.call("requantize", big, np.array([0.5, 0.5, 0.5]), 1, "onnx"),
            (1, 3),
            np.int8,
        )
        check_equal("clamped output", got, np.array([[127, -128, 127]]))
    with t.check("unknown mode"):
        try:
            t.call("requantize", acc, mult, 0, "floor")
        except StudentGone:
            raise
        except StudentError as err:
            kind = str(err).split(":", 1)[0].strip()
            check_true("error type", kind == "ValueError", f"expected ValueError, got {kind}")
        else:
            raise AssertionError("requantize(..., mode='floor') must raise ValueError")


@task("Task 4: manifest entries", checks={"entry": 1, "detects changes": 1})
def manifest(t):
    rng = np.random.default_rng(4)
    a = rng.standard_normal((3, 5)).astype(np.float32)
    b = np.asfortranarray(rng.integers(0, 9, (4, 2)).astype(np.int64))
    with t.check("entry"):
        for name, arr in (("float32 array", a), ("Fortran-ordered int64 array", b)):
            want = {"dtype": arr.dtype.str, "shape": list(arr.shape), "sha256": oracle_sha(arr)}
            check_equal(f"manifest_entry of a {name}", t.call("manifest_entry", arr), want)
    with t.check("detects changes"):
        entry = {"dtype": a.dtype.str, "shape": list(a.shape), "sha256": oracle_sha(a)}
        check_equal("matches(same array)", t.call("matches", a.copy(), entry), True)
        tampered = a.copy()
        tampered[1, 2] = np.nextafter(tampered[1, 2], np.float32(np.inf))
        check_equal(
            "matches(one value changed by one ulp)", t.call("matches", tampered, entry), False
        )
        check_equal(
            "matches(same bytes, another shape)", t.call("matches", a.reshape(5, 3), entry), False
        )
        check_equal(
            "matches(same bytes, another dtype)", t.call("matches", a.view(np.int32), entry), False
        )


def _dicts():
    rng = np.random.default_rng(5)
    base = {
        "w": rng.standard_normal((4, 3)).astype(np.float32),
        "tiny": np.array([1e-8, -3e-9, 1.0, 0.0], dtype=np.float32),
    }
    trained = {
        "w": (base["w"] + rng.normal(0, 0.01, (4, 3))).astype(np.float32),
        "tiny": np.array([1.0, 1.0, 1e-8, -2.0], dtype=np.float32),
    }
    return base, trained


@task("Task 5: exact model differences", checks={"diff values": 1, "apply is exact": 1})
def differences(t):
    base, trained = _dicts()
    with t.check("diff values"):
        run = t.run("compute_diff", base, trained)
        got = run.value
        check_true("keys", isinstance(got, dict) and set(got) == set(base), "one entry per array")
        for k in base:
            check_array(f"delta[{k!r}]", got[k], base[k].shape, np.float64)
            check_equal(
                f"delta[{k!r}]", got[k], trained[k].astype(np.float64) - base[k].astype(np.float64)
            )
        check_equal("base after compute_diff", run.args[0]["w"], base["w"])
    with t.check("apply is exact"):
        delta = {k: trained[k].astype(np.float64) - base[k].astype(np.float64) for k in base}
        run = t.run("apply_diff", base, delta)
        for k in base:
            check_array(f"applied[{k!r}]", run.value[k], base[k].shape, np.float32)
            check_equal(f"applied[{k!r}] (bit for bit)", run.value[k], trained[k])
        check_equal("base after apply_diff", run.args[0]["tiny"], base["tiny"])


@task("Task 6: int8 and top-k compression", checks={"int8": 1.5, "topk": 1.5})
def compression(t):
    rng = np.random.default_rng(6)
    d = rng.standard_normal((5, 7))
    ties = np.array([127.0, 0.5, -0.5, 1.5, -2.5, 0.0, 126.5])  # scale 1: exact ties
    with t.check("int8"):
        for arr in (d, ties, np.zeros(4)):
            q, scale = _pair(t.call("compress_int8", arr), "(q, scale)")
            peak = np.max(np.abs(arr))
            want_scale = peak / 127 if peak > 0 else 1.0
            check_true(
                "scale",
                isinstance(scale, float) and abs(scale - want_scale) <= 1e-12 * want_scale,
                "scale must be max|d| / 127 as a float (1.0 for zeros)",
            )
            check_array("q", q, arr.shape, np.int8)
            v = arr / want_scale
            check_equal("q", q, np.trunc(v + np.copysign(0.5, v)))
    with t.check("topk"):
        d2 = d.copy()
        d2[0, :3] = 9.0  # ties in |d|: smaller index first
        d2[1, 0] = -9.0
        for k in (1, 3, 5, 35):
            index, value = _pair(t.call("compress_topk", d2, k), "(index, value)")
            want_i, want_v = oracle_topk(d2, k)
            check_array("index", index, (k,), np.int64)
            check_array("value", value, (k,), np.float32)
            check_equal(f"index (k={k})", index, want_i)
            check_equal(f"value (k={k})", value, want_v)
