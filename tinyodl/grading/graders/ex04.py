"""Grader of exercise 04 (sparse update): channel selection, partial weight gradients, the
in-place update, the paper's memory accounting, exact and evolutionary search.

Oracles are written differently from the solution: channel norms with ``np.linalg.norm``
and a sort of (norm, -index) pairs; the partial gradient as rows of the full outer-product
sum over examples; the memory by a per-layer flag pass; the search by dynamic programming
over (candidate, budget used).
"""

from __future__ import annotations

import math

import numpy as np

from tinyodl.grading.api import task
from tinyodl.grading.checks import check_array, check_close, check_equal, check_true

EXERCISE = "04_sparse_update"
ALLOW: tuple[str, ...] = ()
DENY = ("tinyodl.sparse_update",)

RATIOS = (0.0, 0.125, 0.25, 0.5, 1.0)


# -- oracles ----------------------------------------------------------------------------------


def oracle_select(w: np.ndarray, ratio: float) -> np.ndarray:
    f = w.shape[0]
    k = math.ceil(round(ratio * f, 9))
    norms = [float(np.linalg.norm(w[o].ravel())) for o in range(f)]
    ranked = sorted(range(f), key=lambda o: (-norms[o], o))
    return np.array(sorted(ranked[:k]), dtype=np.int64)


def oracle_memory(layers, bias_depth, ratios, n) -> dict[str, int]:
    count = len(layers)
    updates_anything = []
    for i, r in enumerate(ratios):
        updates_anything.append(r > 0 or i >= count - bias_depth)
    out = {"activations": 0, "gradients": 0, "masks": 0}
    on_path = False
    for i, (layer, r) in enumerate(zip(layers, ratios, strict=True)):
        f = layer["out_channels"]
        chosen = math.ceil(round(r * f, 9))
        size_in = n * math.prod(layer["in_shape"])
        if chosen:
            if layer["type"] == "depthwise":
                out["activations"] += (size_in // f) * chosen
            else:
                out["activations"] += size_in
            out["gradients"] += 4 * (layer["weight_size"] // f) * chosen
        if i >= count - bias_depth:
            out["gradients"] += 4 * f
        on_path = on_path or updates_anything[i]
        if on_path and layer["relu"]:
            out["masks"] += math.ceil(n * math.prod(layer["out_shape"]) / 8)
    out["total"] = sum(out.values())
    return out


def oracle_best_gain(costs, gains, budget) -> float:
    """Dynamic programming over integer budgets: best[b] = largest gain with cost <= b."""
    best = np.zeros(budget + 1)
    for opts_c, opts_g in zip(costs, gains, strict=True):
        new = np.full(budget + 1, -np.inf)
        for c, g in zip(opts_c, opts_g, strict=True):
            if c <= budget:
                new[c:] = np.maximum(new[c:], best[: budget + 1 - c] + g)
        best = new
    return float(best[budget])


def _choice(value, costs) -> list[int]:
    if not isinstance(value, list | tuple) or len(value) != len(costs):
        raise AssertionError(f"must return a list of {len(costs)} option indices, got {value!r}")
    for i, j in enumerate(value):
        if not isinstance(j, int | np.integer) or not 0 <= int(j) < len(costs[i]):
            raise AssertionError(f"option {j!r} of candidate {i} is not an index of its options")
    return [int(j) for j in value]


def _gain_cost(choice, costs, gains):
    return (
        sum(gains[i][j] for i, j in enumerate(choice)),
        sum(costs[i][j] for i, j in enumerate(choice)),
    )


def _problem(seed: int, candidates: int, options: int):
    rng = np.random.default_rng(seed)
    costs = [
        [0] + sorted(int(v) for v in rng.integers(1, 30, options - 1)) for _ in range(candidates)
    ]
    gains = [
        [0.0] + sorted(float(v) for v in rng.uniform(0, 0.05, options - 1))
        for _ in range(candidates)
    ]
    return costs, gains


# -- Task 1 -----------------------------------------------------------------------------------


@task(
    "Task 1: select_channels",
    checks={"int64, sorted, ceil(ratio * F) of them": 0.5, "largest norms": 1.0, "ties": 0.5},
)
def select(t):
    rng = np.random.default_rng(41)
    w = rng.standard_normal((12, 3, 2, 2))
    with t.check("int64, sorted, ceil(ratio * F) of them"):
        for r in RATIOS:
            got = t.call("select_channels", w, r)
            want = math.ceil(round(r * 12, 9))
            check_array(f"select_channels(w, {r})", got, (want,), np.int64)
            check_true(f"select_channels(w, {r})", bool(np.all(np.diff(got) > 0)), "not sorted")
    with t.check("largest norms"):
        for r in RATIOS[1:]:
            check_equal(
                f"select_channels(w, {r})", t.call("select_channels", w, r), oracle_select(w, r)
            )
        lin = rng.standard_normal((7, 5)) * np.arange(1, 8)[:, None]
        check_equal(
            "select_channels(linear weight, 0.5)",
            t.call("select_channels", lin, 0.5),
            oracle_select(lin, 0.5),
        )
    with t.check("ties"):
        tied = np.ones((8, 2))
        tied[5] = 2.0
        check_equal(
            "select_channels(tied, 0.25)",
            t.call("select_channels", tied, 0.25),
            oracle_select(tied, 0.25),
        )


# -- Task 2 and 3 -----------------------------------------------------------------------------


@task("Task 2: partial_weight_gradient", checks={"shape and dtype": 0.5, "values": 1.5})
def partial_gradient(t):
    rng = np.random.default_rng(42)
    x = rng.standard_normal((5, 6)).astype(np.float32)
    dout = rng.standard_normal((5, 8)).astype(np.float32)
    channels = np.array([1, 4, 6], dtype=np.int64)
    with t.check("shape and dtype"):
        got = t.call("partial_weight_gradient", x, dout, channels)
        check_array("partial_weight_gradient", got, (3, 6), np.float32)
    with t.check("values"):
        full = sum(np.outer(dout[i].astype(np.float64), x[i]) for i in range(5))
        got = t.call("partial_weight_gradient", x, dout, channels)
        check_close("partial_weight_gradient", got, full[channels], 1e-5, 1e-5)
        x64, d64 = x.astype(np.float64), dout.astype(np.float64)
        got = t.call("partial_weight_gradient", x64, d64, np.array([7], dtype=np.int64))
        check_close("partial_weight_gradient (one channel)", got, full[[7]], 1e-5, 1e-5)


@task("Task 3: sparse_sgd_step", checks={"selected rows updated in place": 0.5, "others kept": 0.5})
def sgd_step(t):
    rng = np.random.default_rng(43)
    w = rng.standard_normal((6, 4))
    grad = rng.standard_normal((2, 4))
    channels = np.array([0, 3], dtype=np.int64)
    out = t.run("sparse_sgd_step", w, grad, channels, 0.1)
    after = out.args[0]
    with t.check("selected rows updated in place"):
        check_true("sparse_sgd_step", out.value is None, "must return None (update w in place)")
        check_close("w[channels] after the step", after[channels], w[channels] - 0.1 * grad)
    with t.check("others kept"):
        rest = [1, 2, 4, 5]
        check_equal("the other rows of w", after[rest], w[rest])


# -- Task 4 -----------------------------------------------------------------------------------

NET = [
    {
        "type": "conv",
        "in_shape": (1, 28, 28),
        "out_shape": (16, 14, 14),
        "weight_size": 144,
        "out_channels": 16,
        "relu": True,
    },
    {
        "type": "depthwise",
        "in_shape": (16, 14, 14),
        "out_shape": (16, 7, 7),
        "weight_size": 144,
        "out_channels": 16,
        "relu": True,
    },
    {
        "type": "conv",
        "in_shape": (16, 7, 7),
        "out_shape": (24, 7, 7),
        "weight_size": 384,
        "out_channels": 24,
        "relu": False,
    },
    {
        "type": "conv",
        "in_shape": (24, 7, 7),
        "out_shape": (96, 7, 7),
        "weight_size": 2304,
        "out_channels": 96,
        "relu": True,
    },
    {
        "type": "depthwise",
        "in_shape": (96, 7, 7),
        "out_shape": (96, 4, 4),
        "weight_size": 864,
        "out_channels": 96,
        "relu": True,
    },
    {
        "type": "linear",
        "in_shape": (96,),
        "out_shape": (10,),
        "weight_size": 960,
        "out_channels": 10,
        "relu": False,
    },
]
KEYS = ("activations", "gradients", "masks", "total")


@task(
    "Task 4: scheme_memory",
    checks={"returns the four keys as ints": 0.5, "gradients and activations": 1.5, "masks": 1.0},
)
def memory(t):
    schemes = [
        (1, [0, 0, 0, 0, 0, 1.0], 1),
        (3, [0, 0, 0, 0.25, 0.5, 1.0], 2),
        (0, [0, 0.125, 0, 0, 0, 0], 4),
        (6, [1.0, 0.5, 0.5, 0.125, 0.25, 1.0], 1),
    ]
    with t.check("returns the four keys as ints"):
        got = t.call("scheme_memory", NET, *schemes[1])
        check_true(
            "scheme_memory",
            isinstance(got, dict) and set(got) == set(KEYS),
            f"expected a dict with keys {KEYS}",
        )
        check_true(
            "scheme_memory",
            all(isinstance(v, int) for v in got.values()),
            "values must be Python ints",
        )
    with t.check("gradients and activations"):
        for s in schemes:
            got, want = t.call("scheme_memory", NET, *s), oracle_memory(NET, *s)
            for key in ("activations", "gradients"):
                check_equal(
                    f"scheme_memory(net, bias_depth={s[0]}, ratios={s[1]}, n={s[2]})[{key!r}]",
                    got[key],
                    want[key],
                )
    with t.check("masks"):
        for s in [*schemes, (0, [0] * 6, 1), (2, [0] * 6, 3)]:
            got, want = t.call("scheme_memory", NET, *s), oracle_memory(NET, *s)
            for key in ("masks", "total"):
                check_equal(
                    f"scheme_memory(net, bias_depth={s[0]}, ratios={s[1]}, n={s[2]})[{key!r}]",
                    got[key],
                    want[key],
                )


# -- Task 5 and 6 -----------------------------------------------------------------------------


@task("Task 5: exact_search", checks={"within the budget": 0.5, "optimal": 1.5})
def exact(t):
    problems = [(_problem(s, 4, 4), b) for s, b in ((51, 40), (52, 25), (53, 70))]
    problems.append(((_problem(54, 3, 3)[0], [[0.0, -0.01, 0.02]] * 3), 30))
    with t.check("within the budget"):
        for (costs, gains), budget in problems:
            choice = _choice(t.call("exact_search", costs, gains, budget), costs)
            _, cost = _gain_cost(choice, costs, gains)
            check_true("exact_search", cost <= budget, f"cost {cost} exceeds the budget {budget}")
    with t.check("optimal"):
        for (costs, gains), budget in problems:
            choice = _choice(t.call("exact_search", costs, gains, budget), costs)
            gain, _ = _gain_cost(choice, costs, gains)
            check_close(
                f"summed gain at budget {budget}",
                gain,
                oracle_best_gain(costs, gains, budget),
                1e-9,
                1e-12,
            )


@task(
    "Task 6: evolutionary_search",
    checks={
        "within the budget": 0.5,
        "finds the optimum of small problems": 1.0,
        "deterministic for a seed": 0.5,
    },
)
def evolution(t):
    problems = [(_problem(s, 4, 3), b) for s, b in ((61, 30), (62, 45), (63, 20))]
    with t.check("within the budget"):
        for (costs, gains), budget in problems:
            choice = _choice(t.call("evolutionary_search", costs, gains, budget), costs)
            _, cost = _gain_cost(choice, costs, gains)
            check_true(
                "evolutionary_search", cost <= budget, f"cost {cost} exceeds the budget {budget}"
            )
    with t.check("finds the optimum of small problems"):
        for (costs, gains), budget in problems:
            kw = {"population": 60, "generations": 40, "seed": 3}
            choice = _choice(t.call("evolutionary_search", costs, gains, budget, **kw), costs)
            gain, _ = _gain_cost(choice, costs, gains)
            check_close(
                f"summed gain at budget {budget}",
                gain,
                oracle_best_gain(costs, gains, budget),
                1e-9,
                1e-12,
            )
    with t.check("deterministic for a seed"):
        (costs, gains), budget = _problem(64, 10, 5), 150
        kw = {"population": 6, "generations": 1}  # barely any search: the seed decides
        for seed in (5, 6, 7):
            a = t.call("evolutionary_search", costs, gains, budget, seed=seed, **kw)
            b = t.call("evolutionary_search", costs, gains, budget, seed=seed, **kw)
            check_equal(f"two runs with seed {seed}", list(a), list(b))
