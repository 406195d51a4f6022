"""Grader of exercise 07 (data compression): low bits, packing, coresets, EL2N, OMP.

Oracles written differently from the solution: quantization with ``floor(x + 1/2)``, packing
byte by byte in Python, herding and k-center with explicit loops that recompute every
distance, EL2N from an identity matrix, per-class ordering with Python's ``sorted``, and OMP
with projections through ``np.linalg.pinv``. numpy only, in the grading process.
"""

from __future__ import annotations

import numpy as np

from tinyodl.grading.api import task
from tinyodl.grading.checks import check_array, check_close, check_equal, check_true

EXERCISE = "07_data_compression"
ALLOW: tuple[str, ...] = ()
DENY = ("tinyodl.data_compression",)

# -- oracles ----------------------------------------------------------------------------------


def oracle_quantize(x, bits):
    top = (1 << bits) - 1
    return np.floor(np.minimum(np.maximum(x, 0.0), 1.0) * top + 0.5).astype(np.uint8)


def oracle_pack(values) -> np.ndarray:
    values = [int(v) for v in values]
    if len(values) % 2:
        values.append(0)
    return np.array([values[i] * 16 + values[i + 1] for i in range(0, len(values), 2)],
                    dtype=np.uint8)  # fmt: skip


def oracle_herding(F, n):
    mu = F.mean(axis=0)
    picked = []
    for k in range(1, n + 1):
        best, best_gap = -1, np.inf
        for i in range(len(F)):
            if i in picked:
                continue
            mean = (F[picked].sum(axis=0) + F[i]) / k if picked else F[i].copy()
            gap = float(np.sqrt(np.sum((mu - mean) ** 2)))
            if gap < best_gap:
                best, best_gap = i, gap
        picked.append(best)
    return np.array(picked)


def oracle_k_center(F, n, first):
    picked = [first]
    while len(picked) < n:
        dist = [min(np.sqrt(np.sum((F[i] - F[j]) ** 2)) for j in picked) for i in range(len(F))]
        picked.append(int(np.argmax(dist)))
    return np.array(picked)


def oracle_omp(x, D, k):
    support = []
    for _ in range(k):
        if support:
            A = D[support].T  # (P, s)
            residual = x - A @ (np.linalg.pinv(A) @ x)
        else:
            residual = x
        corr = [abs(float(D[j] @ residual)) if j not in support else -1.0 for j in range(len(D))]
        support.append(int(np.argmax(corr)))
    A = D[support].T
    code = np.zeros(len(D))
    code[support] = np.linalg.pinv(A) @ x
    return code


def _unit_rows(rng, a, p):
    D = rng.standard_normal((a, p))
    return D / np.linalg.norm(D, axis=1, keepdims=True)


# -- Task 1 -----------------------------------------------------------------------------------


@task(
    "Task 1: quantize and dequantize",
    checks={"quantize: uint8 levels": 1, "quantize clips to [0, 1]": 0.5,
            "dequantize: float32 in [0, 1]": 0.5},
)  # fmt: skip
def lowbit(t):
    rng = np.random.default_rng(71)
    with t.check("quantize: uint8 levels"):
        for bits, shape in [(8, (3, 5)), (4, (20,)), (2, (2, 2, 3)), (1, (9,))]:
            x = rng.random(shape)
            got = t.call("quantize", x, bits)
            check_array(f"quantize(x {shape}, {bits})", got, shape, np.uint8)
            check_equal(f"quantize(x {shape}, {bits})", got, oracle_quantize(x, bits))
    with t.check("quantize clips to [0, 1]"):
        x = np.array([-0.3, 1.7, 0.24, 0.76, 2.0])
        check_equal("quantize([-0.3, 1.7, 0.24, 0.76, 2.0], 4)", t.call("quantize", x, 4),
                    oracle_quantize(x, 4))  # fmt: skip
    with t.check("dequantize: float32 in [0, 1]"):
        for bits in (8, 4, 1):
            q = rng.integers(0, 2**bits, size=12).astype(np.uint8)
            got = t.call("dequantize", q, bits)
            check_array(f"dequantize(q, {bits})", got, (12,), np.float32)
            check_close(f"dequantize(q, {bits})", got, q / (2**bits - 1), 1e-6, 1e-7)


# -- Task 2 -----------------------------------------------------------------------------------


@task(
    "Task 2: pack_4bit and unpack_4bit",
    checks={"pack_4bit: high nibble first": 1, "pack_4bit pads an odd count": 0.5,
            "unpack_4bit": 0.5},
)  # fmt: skip
def packing(t):
    rng = np.random.default_rng(72)
    with t.check("pack_4bit: high nibble first"):
        for n in (2, 10, 64):
            q = rng.integers(0, 16, size=n).astype(np.uint8)
            got = t.call("pack_4bit", q)
            check_array(f"pack_4bit(q of {n} values)", got, (n // 2,), np.uint8)
            check_equal(f"pack_4bit(q of {n} values)", got, oracle_pack(q))
    with t.check("pack_4bit pads an odd count"):
        for q in (np.array([10, 3, 15], dtype=np.uint8), np.array([7], dtype=np.uint8)):
            got = t.call("pack_4bit", q)
            check_equal(f"pack_4bit({q.tolist()})", got, oracle_pack(q))
    with t.check("unpack_4bit"):
        for n in (1, 7, 30):
            q = rng.integers(0, 16, size=n).astype(np.uint8)
            got = t.call("unpack_4bit", oracle_pack(q), n)
            check_array(f"unpack_4bit(packed, {n})", got, (n,), np.uint8)
            check_equal(f"unpack_4bit(packed, {n})", got, q)


# -- Task 3 -----------------------------------------------------------------------------------


@task(
    "Task 3: herding",
    checks={"the picks, in order": 1.5, "F is not modified": 0.5},
)
def herd(t):
    rng = np.random.default_rng(73)
    cases = [(rng.standard_normal((30, 3)), 8), (rng.random((12, 5)) * 4, 12),
             (rng.standard_normal((50, 2)) + 3, 5)]  # fmt: skip
    outs = [t.run("herding", F.copy(), n) for F, n in cases]
    with t.check("the picks, in order"):
        for (F, n), out in zip(cases, outs, strict=True):
            check_equal(f"herding(F {F.shape}, {n})", np.asarray(out.value),
                        oracle_herding(F, n))  # fmt: skip
    with t.check("F is not modified"):
        for (F, n), out in zip(cases, outs, strict=True):
            check_equal(f"F after herding(F {F.shape}, {n})", out.args[0], F)


# -- Task 4 -----------------------------------------------------------------------------------


@task("Task 4: k_center", checks={"starts at first": 0.5, "the farthest point each time": 1.5})
def kcenter(t):
    rng = np.random.default_rng(74)
    cases = [(rng.standard_normal((25, 2)), 6, 3), (rng.random((40, 4)), 10, 0),
             (rng.standard_normal((15, 3)) * 5, 15, 14)]  # fmt: skip
    outs = [t.call("k_center", F, n, first) for F, n, first in cases]
    with t.check("starts at first"):
        for (F, n, first), got in zip(cases, outs, strict=True):
            got = np.asarray(got)
            check_array(f"k_center(F {F.shape}, {n}, first={first})", got, (n,))
            check_true(f"k_center(F {F.shape}, {n}, first={first})", got[0] == first,
                       "the first pick must be `first`")  # fmt: skip
    with t.check("the farthest point each time"):
        for (F, n, first), got in zip(cases, outs, strict=True):
            check_equal(f"k_center(F {F.shape}, {n}, first={first})", np.asarray(got),
                        oracle_k_center(F, n, first))  # fmt: skip


# -- Task 5 -----------------------------------------------------------------------------------


@task(
    "Task 5: el2n and easiest_per_class",
    checks={"el2n scores": 0.5, "el2n leaves P alone": 0.5, "easiest_per_class": 1},
)
def el2n_task(t):
    rng = np.random.default_rng(75)
    logits = rng.standard_normal((20, 4)) * 2
    P = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = rng.integers(0, 4, 20)
    out = t.run("el2n", P.copy(), y)
    with t.check("el2n scores"):
        expected = np.sqrt(((P - np.eye(4)[y]) ** 2).sum(axis=1))
        check_array("el2n(P (20, 4), y)", out.value, (20,))
        check_close("el2n(P (20, 4), y)", out.value, expected, 1e-10, 1e-12)
    with t.check("el2n leaves P alone"):
        check_equal("P after el2n", out.args[0], P)
    with t.check("easiest_per_class"):
        for m in (1, 3):
            y2 = np.repeat([2, 5, 9], 6)[rng.permutation(18)]
            scores = rng.random(18).round(1)  # ties: the smaller index comes first
            expected = [
                i
                for c in (2, 5, 9)
                for i in sorted(np.flatnonzero(y2 == c), key=lambda i: (scores[i], i))[:m]
            ]
            got = t.call("easiest_per_class", scores, y2, m)
            check_equal(f"easiest_per_class(scores, y, {m})", np.asarray(got),
                        np.array(expected))  # fmt: skip


# -- Task 6 -----------------------------------------------------------------------------------


@task(
    "Task 6: omp",
    checks={"float64 (A,) with at most k non-zeros": 0.5,
            "recovers an exactly sparse code": 1, "the greedy choices on any signal": 1.5},
)  # fmt: skip
def omp_task(t):
    rng = np.random.default_rng(76)
    D = _unit_rows(rng, 24, 40)
    truth = np.zeros(24)
    truth[[1, 9, 17, 20]] = [2.0, -1.5, 1.0, 0.8]
    with t.check("float64 (A,) with at most k non-zeros"):
        got = t.call("omp", rng.standard_normal(40), D, 5)
        check_array("omp(x (40,), D (24, 40), 5)", got, (24,), np.float64)
        check_true("omp(x, D, 5)", np.count_nonzero(got) <= 5, "at most k non-zeros")
    with t.check("recovers an exactly sparse code"):
        got = t.call("omp", truth @ D, D, 4)
        check_close("omp(x = code @ D with 4 non-zeros, D, 4)", got, truth, 1e-8, 1e-8)
    with t.check("the greedy choices on any signal"):
        for k in (1, 3, 6):
            x = rng.standard_normal(40)
            got = t.call("omp", x, D, k)
            check_close(f"omp(x (40,), D (24, 40), {k})", got, oracle_omp(x, D, k), 1e-8, 1e-8)
