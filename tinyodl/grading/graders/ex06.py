"""Grader of exercise 06 (checkpointing).

The oracles are written here differently from the exercise's solution: segment lengths from
``np.array_split``, the memory model as an explicit walk over the layers, backpropagation
with ``einsum`` and masks computed from pre-activations, and the planner checked against
brute force over every segmentation. They use numpy only and run in the grading process.
"""

from __future__ import annotations

import itertools

import numpy as np

from tinyodl.grading.api import StudentError, StudentGone, task
from tinyodl.grading.checks import check_array, check_close, check_equal, check_true

EXERCISE = "06_checkpointing"
ALLOW: tuple[str, ...] = ()
DENY = ("tinyodl.checkpointing",)

# -- oracles ----------------------------------------------------------------------------------


def oracle_segments(n: int, k: int) -> tuple[int, ...]:
    lengths = [len(part) for part in np.array_split(np.arange(n), k)]
    return tuple(int(b) for b in itertools.accumulate(lengths[:-1]))


def oracle_peak(sizes, boundaries) -> int:
    """Walk the layers; a segment's memory is its layers' inputs plus earlier boundaries."""
    cuts = set(boundaries)
    peak, kept, current = 0, 0, 0
    for layer, size in enumerate(sizes):
        if layer in cuts:  # a new segment starts: the previous one is done
            peak = max(peak, kept + current)
            kept += sizes[max(c for c in [0, *cuts] if c < layer)]
            current = 0
        current += size
    return int(max(peak, kept + current))


def oracle_recompute(costs, boundaries) -> float:
    return float(np.sum(costs[: max(boundaries, default=0)]))


def oracle_backprop(x, weights, dout, masks=None, p=0.0):
    """Plain backprop with einsum; optional dropout masks (one per layer)."""
    inputs, pre, h = [], [], x
    for i, w in enumerate(weights):
        inputs.append(h)
        z = np.einsum("nd,od->no", h, w)
        pre.append(z)
        h = np.where(z > 0, z, 0.0)
        if masks is not None:
            h = h * masks[i] / (1 - p)
    g, grads = dout, [None] * len(weights)
    for i in range(len(weights) - 1, -1, -1):
        if masks is not None:
            g = g * masks[i] / (1 - p)
        g = np.where(pre[i] > 0, g, 0.0)
        grads[i] = np.einsum("no,nd->od", g, inputs[i])
        g = np.einsum("no,od->nd", g, weights[i])
    return g, grads


def dropout_masks(x, weights, p, seed):
    """The masks of the first forward pass: one rng.random call per layer, in layer order."""
    generator = np.random.default_rng(seed)
    return [generator.random((x.shape[0], w.shape[0])) >= p for w in weights]


def brute_force(sizes, costs, budget):
    """(least recompute, plans achieving it) over all segmentations that fit, or None."""
    n, best, plans = len(sizes), None, []
    for mask in range(2 ** (n - 1)):
        boundaries = tuple(i + 1 for i in range(n - 1) if mask >> i & 1)
        if oracle_peak(sizes, boundaries) > budget:
            continue
        cost = oracle_recompute(costs, boundaries)
        if best is None or cost < best:
            best, plans = cost, [boundaries]
        elif cost == best:
            plans.append(boundaries)
    return None if best is None else (best, plans)


def chain(rng, n, width=6, batch=4):
    x = rng.standard_normal((batch, width))
    weights = [rng.standard_normal((width, width)) / np.sqrt(width) for _ in range(n)]
    return x, weights, rng.standard_normal((batch, width))


def _items(value, n: int, what: str) -> tuple:
    if not isinstance(value, tuple | list) or len(value) != n:
        raise AssertionError(f"must return {what}, got {type(value).__name__}")
    return tuple(value)


def raises(t, error: str, name: str, *args) -> bool:
    """Whether ``name(*args)`` raises ``error`` (by class name) in the student's process."""
    try:
        t.call(name, *args)
    except StudentGone:
        raise
    except StudentError as err:
        return str(err).split(":", 1)[0].strip() == error
    return False


def _check_grads(label, got, want, exact):
    got = _items(got, len(want), f"a list of {len(want)} gradients")
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        check_array(f"{label}, gradient of W_{i}", g, w.shape)
        if exact:
            check_equal(f"{label}, gradient of W_{i}", g, w)
        else:
            check_close(f"{label}, gradient of W_{i}", g, w, 1e-10, 1e-12)


# -- Task 1 -----------------------------------------------------------------------------------


@task(
    "Task 1: equal_segments",
    checks={"k near-equal segments, longer first": 0.5, "default sqrt(n) and errors": 0.5},
)
def segments(t):
    with t.check("k near-equal segments, longer first"):
        for n, k in [(10, 3), (16, 4), (7, 7), (5, 1), (23, 5)]:
            got = t.call("equal_segments", n, k)
            check_equal(f"equal_segments({n}, {k})", tuple(got), oracle_segments(n, k))
    with t.check("default sqrt(n) and errors"):
        for n in (16, 10, 30, 2, 8, 7):
            got = t.call("equal_segments", n)
            check_equal(f"equal_segments({n})", tuple(got), oracle_segments(n, round(n**0.5)))
        for n, k in [(4, 5), (4, 0)]:
            raised = raises(t, "ValueError", "equal_segments", n, k)
            check_true(f"equal_segments({n}, {k})", raised, "must raise ValueError")


# -- Task 2 -----------------------------------------------------------------------------------


@task("Task 2: peak_memory and recompute_cost", checks={"peak_memory": 1, "recompute_cost": 1})
def cost_model(t):
    rng = np.random.default_rng(60)
    cases = [([1] * 16, (4, 8, 12)), ([1] * 16, ()), ([1] * 16, tuple(range(1, 16)))]
    for _ in range(6):
        n = int(rng.integers(2, 12))
        sizes = rng.integers(1, 50, n).tolist()
        cut = rng.random(n - 1) < 0.4
        cases.append((sizes, tuple(int(i) + 1 for i in np.flatnonzero(cut))))
    with t.check("peak_memory"):
        for sizes, boundaries in cases:
            got = t.call("peak_memory", sizes, boundaries)
            check_close(f"peak_memory({sizes}, {boundaries})", got, oracle_peak(sizes, boundaries))
    with t.check("recompute_cost"):
        for sizes, boundaries in cases:
            costs = [float(c) for c in rng.random(len(sizes))]
            got = t.call("recompute_cost", costs, boundaries)
            check_close(
                f"recompute_cost(costs, {boundaries})", got, oracle_recompute(costs, boundaries)
            )


# -- Task 3 -----------------------------------------------------------------------------------


@task(
    "Task 3: plain and checkpointed backpropagation",
    checks={
        "plain_backprop": 1,
        "checkpointed gradients bit-identical to plain": 1,
        "number of layer forwards": 0.5,
        "inputs left as they were": 0.5,
    },
)
def recompute(t):
    rng = np.random.default_rng(61)
    x, weights, dout = chain(rng, 9)
    with t.check("plain_backprop"):
        dx, grads = _items(t.call("plain_backprop", x, weights, dout), 2, "(dx, grads)")
        want_dx, want_grads = oracle_backprop(x, weights, dout)
        check_close("plain_backprop: dx", check_array("dx", dx, x.shape), want_dx, 1e-10, 1e-12)
        _check_grads("plain_backprop", grads, want_grads, exact=False)
    with t.check("checkpointed gradients bit-identical to plain"):
        dx_p, grads_p = _items(t.call("plain_backprop", x, weights, dout), 2, "(dx, grads)")
        for boundaries in [(), (3, 6), (1, 2, 3, 4, 5, 6, 7, 8), (8,), (2, 7)]:
            got = _items(
                t.call("checkpointed_backprop", x, weights, dout, boundaries),
                3,
                "(dx, grads, forwards)",
            )
            label = f"checkpointed_backprop(boundaries={boundaries})"
            check_equal(f"{label}: dx", check_array("dx", got[0], x.shape), dx_p)
            _check_grads(label, got[1], grads_p, exact=True)
    with t.check("number of layer forwards"):
        for boundaries in [(), (3, 6), (8,), (1, 2, 3, 4, 5, 6, 7, 8)]:
            got = _items(
                t.call("checkpointed_backprop", x, weights, dout, boundaries), 3, "a triple"
            )
            want = 9 + max(boundaries, default=0)
            check_close(f"forwards with boundaries {boundaries}", got[2], want)
    with t.check("inputs left as they were"):
        out = t.run(
            "checkpointed_backprop", x.copy(), [w.copy() for w in weights], dout.copy(), (3, 6)
        )
        after_x, after_w, after_d = out.args[0], out.args[1], out.args[2]
        unchanged = (
            np.array_equal(after_x, x)
            and np.array_equal(after_d, dout)
            and all(np.array_equal(a, w) for a, w in zip(after_w, weights, strict=True))
        )
        check_true("checkpointed_backprop", unchanged, "x, weights and dout must not change")


# -- Task 4 -----------------------------------------------------------------------------------


@task(
    "Task 4: dropout inside recomputed segments",
    checks={"gradients with the masks of the first pass": 1.5, "p = 0 is plain ReLU": 0.5},
)
def dropout(t):
    rng = np.random.default_rng(62)
    x, weights, dout = chain(rng, 8, width=10, batch=6)
    with t.check("gradients with the masks of the first pass"):
        for boundaries, p, seed in [
            ((3, 6), 0.5, 0),
            ((2, 4, 6), 0.3, 7),
            ((), 0.5, 3),
            ((7,), 0.2, 1),
        ]:
            got = _items(
                t.call("checkpointed_backprop_dropout", x, weights, dout, boundaries, p, seed),
                2,
                "(dx, grads)",
            )
            masks = dropout_masks(x, weights, p, seed)
            want_dx, want_grads = oracle_backprop(x, weights, dout, masks, p)
            label = f"dropout p={p}, seed={seed}, boundaries={boundaries}"
            check_close(f"{label}: dx", check_array("dx", got[0], x.shape), want_dx, 1e-10, 1e-12)
            _check_grads(label, got[1], want_grads, exact=False)
    with t.check("p = 0 is plain ReLU"):
        got = _items(
            t.call("checkpointed_backprop_dropout", x, weights, dout, (4,), 0.0, 5), 2, "a pair"
        )
        want_dx, want_grads = oracle_backprop(x, weights, dout)
        check_close("p = 0: dx", check_array("dx", got[0], x.shape), want_dx, 1e-10, 1e-12)
        _check_grads("p = 0", got[1], want_grads, exact=False)


# -- Task 5 -----------------------------------------------------------------------------------


@task(
    "Task 5: plan_checkpoints",
    checks={
        "fits the budget": 0.5,
        "least recomputation (against brute force)": 1.5,
        "raises when nothing fits": 0.5,
        "60 layers in well under a second": 0.5,
    },
    timeout=20,
)
def planner(t):
    rng = np.random.default_rng(63)
    cases = [([1] * 12, [1.0] * 12, 7), ([1] * 12, [1.0] * 12, 6), ([1] * 12, [1.0] * 12, 12)]
    for _ in range(10):
        n = int(rng.integers(2, 12))
        sizes = rng.integers(1, 30, n).tolist()
        costs = [float(c) for c in rng.integers(0, 5, n)]
        lowest = min(oracle_peak(sizes, b) for b in [(), tuple(range(1, n))])
        cases.append((sizes, costs, int(rng.integers(lowest // 2, sum(sizes) + 1))))
    best = {i: brute_force(*case) for i, case in enumerate(cases)}  # brute force, once
    feasible = [(case, best[i][0]) for i, case in enumerate(cases) if best[i] is not None]
    with t.check("fits the budget"):
        for (sizes, costs, budget), _ in feasible:
            plan = tuple(t.call("plan_checkpoints", sizes, costs, budget))
            check_true(
                f"plan_checkpoints({sizes}, budget={budget}) = {plan}",
                all(0 < b < len(sizes) for b in plan) and list(plan) == sorted(set(plan)),
                "boundaries must be increasing layer indices in (0, n)",
            )
            check_true(
                f"plan_checkpoints({sizes}, budget={budget}) = {plan}",
                oracle_peak(sizes, plan) <= budget,
                f"its peak is {oracle_peak(sizes, plan)}, above the budget",
            )
    with t.check("least recomputation (against brute force)"):
        for (sizes, costs, budget), least in feasible:
            plan = tuple(t.call("plan_checkpoints", sizes, costs, budget))
            check_close(
                f"recompute_cost of plan_checkpoints({sizes}, {costs}, {budget})",
                oracle_recompute(costs, plan),
                least,
            )
    with t.check("raises when nothing fits"):
        for sizes, budget in [([1] * 16, 5), ([10, 1, 10], 9)]:
            raised = raises(t, "ValueError", "plan_checkpoints", sizes, [1.0] * len(sizes), budget)
            check_true(
                f"plan_checkpoints({sizes}, budget={budget})", raised, "must raise ValueError"
            )
    with t.check("60 layers in well under a second"):
        sizes = np.random.default_rng(64).integers(1, 100, 60).tolist()
        budget = int(0.4 * sum(sizes))
        plan = tuple(t.call("plan_checkpoints", sizes, [1.0] * 60, budget))
        check_true(
            "plan_checkpoints on 60 layers",
            oracle_peak(sizes, plan) <= budget,
            "the plan does not fit its budget",
        )
