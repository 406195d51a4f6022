"""Grader of exercise 12 (training engines: liveness, planned peak, pruned and reordered
backward, in-place QAS update, Fisher potential, TinyTrain's scores and selection).

The oracles are written here differently from the exercise's solution: liveness by scanning
the schedule backwards, the planned peak as a replay with explicit frees, the backward
schedule from "which gradients does each layer need" sets, the QAS step through float64
with an explicit per-element rounding, the Fisher potential with ``einsum``, and the
selection by trying every ratio with an explicit remaining budget. Numpy only, in the
grading process.
"""

from __future__ import annotations

import numpy as np

from tinyodl.grading.api import StudentError, StudentGone, task
from tinyodl.grading.checks import check_array, check_close, check_equal, check_true

EXERCISE = "12_engine"
ALLOW: tuple[str, ...] = ()
DENY = ("tinyodl.engine", "tinyodl.tinytrain")

# -- oracles ----------------------------------------------------------------------------------


def oracle_liveness(steps) -> dict[str, tuple[int, int]]:
    free: dict[str, int] = {}
    for i in range(len(steps) - 1, -1, -1):  # backwards: the first sighting is the last use
        for name in [*steps[i].get("reads", []), *steps[i].get("allocs", [])]:
            free.setdefault(name, i)
    born = {n: i for i, s in enumerate(steps) for n in s.get("allocs", [])}
    return {n: (born[n], free[n]) for n in born}


def oracle_peak(steps, sizes, workspace) -> tuple[list[int], int, int]:
    spans = oracle_liveness(steps)
    live, current, best, best_at = [], 0, -1, 0
    for i, s in enumerate(steps):
        current += sum(sizes[n] for n in s.get("allocs", []))
        live.append(current)
        if current + workspace[i] > best:
            best, best_at = current + workspace[i], i
        current -= sum(sizes[n] for n, (_, f) in spans.items() if f == i)
    return live, best, best_at


def oracle_schedule(trainable, reorder) -> list[tuple[str, int]]:
    n = len(trainable)
    below = [any(trainable[:i]) for i in range(n)]  # does a layer before i train?
    steps, later = [], []
    for i in reversed(range(n)):
        if below[i]:
            steps.append(("dx", i))
        if trainable[i]:
            steps.append(("dw", i))
            (steps if reorder else later).append(("update", i))
    later.sort(key=lambda item: item[1])
    return steps + later


def oracle_qas(w_q, shadow, g, s_w, lr):
    f32 = (s_w.astype(np.float64) ** -2).astype(np.float32)
    f32 = f32.reshape((-1,) + (1,) * (w_q.ndim - 1))
    delta = np.float32(-lr) * (g * f32)
    new_shadow = np.clip(shadow + delta, np.float32(-127), np.float32(127)).astype(np.float32)
    flat = new_shadow.astype(np.float64).ravel()
    rounded = np.array([np.sign(v) * np.floor(abs(v) + 0.5) for v in flat]).reshape(w_q.shape)
    return rounded.astype(np.int8), new_shadow


def oracle_fisher(a, g) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    g = np.asarray(g, dtype=np.float64)
    a3 = a.reshape(a.shape[0], a.shape[1], -1)
    g3 = g.reshape(g.shape[0], g.shape[1], -1)
    s = np.einsum("ncd,ncd->nc", a3, g3)
    return np.einsum("nc,nc->c", s, s) / (2.0 * a.shape[0])


def oracle_scores(potentials, params, macs) -> dict[str, float]:
    big_p = float(max(params.values()))
    big_m = float(max(macs.values()))
    out = {}
    for name, p in potentials.items():
        cost = (params[name] / big_p) * (macs[name] / big_m)
        out[name] = float(np.asarray(p, dtype=np.float64).sum()) / cost
    return out


def oracle_select(scores, cost, budget) -> dict[str, float]:
    names = list(scores)
    order = sorted(range(len(names)), key=lambda i: (-scores[names[i]], i))
    remaining, out = float(budget), {}
    for i in order:
        name = names[i]
        fits = [r for r in (0.125, 0.25, 0.5, 1.0) if r * cost[name] <= remaining]
        if fits:
            out[name] = max(fits)
            remaining -= max(fits) * cost[name]
    return out


def raises(t, error: str, name: str, *args) -> bool:
    """Whether ``name(*args)`` raises ``error`` (by class name) in the student's process."""
    try:
        t.call(name, *args)
    except StudentGone:
        raise
    except StudentError as err:
        return str(err).split(":", 1)[0].strip() == error
    return False


def random_schedule(rng, n_steps: int) -> list[dict]:
    """A valid schedule: each step reads some existing buffers and makes 0-2 new ones."""
    steps, made = [], []
    for i in range(n_steps):
        k = int(rng.integers(0, min(3, len(made)) + 1))
        reads = [str(x) for x in rng.choice(made, size=k, replace=False)] if k else []
        allocs = [f"b{i}_{j}" for j in range(int(rng.integers(0 if made else 1, 3)))]
        made += allocs
        steps.append({"reads": reads, "allocs": allocs})
    return steps


def _spans(value) -> dict[str, tuple[int, int]]:
    if not isinstance(value, dict):
        raise AssertionError(f"must return a dict, got {type(value).__name__}")
    return {str(k): tuple(int(x) for x in v) for k, v in value.items()}


# -- Task 1 -----------------------------------------------------------------------------------


@task("Task 1: liveness", checks={"alloc and last use of every buffer": 1.5, "errors": 0.5})
def liveness(t):
    rng = np.random.default_rng(120)
    cases = [
        [{"allocs": ["x"]}, {"reads": ["x"], "allocs": ["h"]}, {"reads": ["h"], "allocs": ["y"]}],
        [{"allocs": ["a", "b"]}, {"reads": ["a"]}, {"reads": ["a"]}, {"allocs": ["c"]}],
    ]
    cases += [random_schedule(rng, int(rng.integers(3, 12))) for _ in range(6)]
    with t.check("alloc and last use of every buffer"):
        for steps in cases:
            got = _spans(t.call("liveness", steps))
            check_equal(f"liveness of a {len(steps)}-step schedule", got, oracle_liveness(steps))
    with t.check("errors"):
        bad_read = [{"allocs": ["a"]}, {"reads": ["z"]}]
        twice = [{"allocs": ["a"]}, {"reads": ["a"], "allocs": ["a"]}]
        for steps, what in ((bad_read, "reading a missing buffer"), (twice, "allocating twice")):
            check_true(what, raises(t, "ValueError", "liveness", steps), "must raise ValueError")


# -- Task 2 -----------------------------------------------------------------------------------


@task("Task 2: planned_peak", checks={"live bytes per step": 1, "peak and its first step": 1})
def planned_peak(t):
    rng = np.random.default_rng(121)
    cases = []
    for _ in range(6):
        steps = random_schedule(rng, int(rng.integers(3, 12)))
        names = [n for s in steps for n in s["allocs"]]
        sizes = {n: int(rng.integers(1, 100)) for n in names}
        work = [int(w) for w in rng.integers(0, 60, len(steps))]
        cases.append((steps, sizes, work))
    # a tie: the same peak at steps 1 and 3 -> the first
    tie = [
        {"allocs": ["a"]},
        {"allocs": ["b"]},
        {"reads": ["b"]},
        {"reads": ["a"], "allocs": ["c"]},
    ]
    cases.append((tie, {"a": 10, "b": 5, "c": 5}, [0, 0, 0, 0]))
    results = []
    with t.check("live bytes per step"):
        for steps, sizes, work in cases:
            got = t.call("planned_peak", steps, sizes, work)
            if not isinstance(got, tuple | list) or len(got) != 3:
                raise AssertionError("must return (live, peak, peak_step)")
            results.append(got)
            want = oracle_peak(steps, sizes, work)[0]
            check_equal("live", [int(v) for v in got[0]], want)
    with t.check("peak and its first step"):
        for (steps, sizes, work), got in zip(cases, results, strict=False):
            _, peak, at = oracle_peak(steps, sizes, work)
            check_equal("(peak, peak_step)", (int(got[1]), int(got[2])), (peak, at))
        if len(results) < len(cases):
            raise AssertionError("planned_peak failed on some schedules")


# -- Task 3 -----------------------------------------------------------------------------------


@task(
    "Task 3: backward_schedule",
    checks={"reordered (update right after dw)": 1, "updates at the end": 1, "pruning": 1},
)
def backward_schedule(t):
    rng = np.random.default_rng(122)
    cases = [[False, True, False, True], [True] * 4, [False] * 3 + [True], [True, False, False]]
    cases += [[bool(b) for b in rng.random(int(rng.integers(2, 9))) < 0.4] for _ in range(5)]

    def got(trainable, reorder):
        out = t.call("backward_schedule", trainable, reorder)
        return [(str(k), int(i)) for k, i in out]

    with t.check("reordered (update right after dw)"):
        for tr in cases:
            check_equal(f"backward_schedule({tr}, True)", got(tr, True), oracle_schedule(tr, True))
    with t.check("updates at the end"):
        for tr in cases:
            want = oracle_schedule(tr, False)
            check_equal(f"backward_schedule({tr}, False)", got(tr, False), want)
    with t.check("pruning"):
        for tr in ([False] * 5, [False, False, False, True], [False, True]):
            dx = [s for s in got(tr, True) if s[0] == "dx"]
            check_equal(
                f"dx steps of {tr}", dx, [s for s in oracle_schedule(tr, True) if s[0] == "dx"]
            )


# -- Task 4 -----------------------------------------------------------------------------------


@task("Task 4: qas_shadow_step", checks={"values": 1, "in place, g unchanged": 1})
def qas_step(t):
    rng = np.random.default_rng(123)
    cases = []
    for shape in [(4, 3), (3, 2, 3, 3), (5, 1, 3, 3)]:
        w = rng.integers(-127, 128, shape).astype(np.int8)
        w[0].flat[0] = 127  # something that clips
        shadow = w.astype(np.float32) + rng.uniform(-0.49, 0.49, shape).astype(np.float32)
        g = rng.standard_normal(shape).astype(np.float32) * np.float32(3e-4)
        g[0].flat[0] = np.float32(1.0)  # w 127 -> clipped at -127
        s_w = rng.uniform(0.005, 0.05, shape[0])
        cases.append((w, shadow, g, s_w, 0.05))
    outcomes = []
    with t.check("values"):
        for w, shadow, g, s_w, lr in cases:
            out = t.run("qas_shadow_step", w.copy(), shadow.copy(), g.copy(), s_w, lr)
            outcomes.append(out)
            want_w, want_shadow = oracle_qas(w, shadow, g, s_w, lr)
            check_array("w_q after the step", out.args[0], w.shape, np.int8)
            check_equal("w_q after the step", out.args[0], want_w)
            check_close("shadow after the step", out.args[1], want_shadow, 1e-6, 1e-5)
    with t.check("in place, g unchanged"):
        if len(outcomes) < len(cases):
            raise AssertionError("qas_shadow_step failed on some inputs")
        for (w, shadow, g, s_w, lr), out in zip(cases, outcomes, strict=True):
            want_w, _ = oracle_qas(w, shadow, g, s_w, lr)
            check_true("return value", out.value is None, "must return None (work in place)")
            check_true("w_q", np.array_equal(out.args[0], want_w), "w_q must be updated in place")
            check_true("shadow", not np.array_equal(out.args[1], shadow), "shadow must change")
            check_equal("g after the call", out.args[2], g)


# -- Task 5 -----------------------------------------------------------------------------------


@task("Task 5: fisher_potential", checks={"conv activations (N, C, H, W)": 1, "linear (N, C)": 1})
def fisher(t):
    rng = np.random.default_rng(124)
    with t.check("conv activations (N, C, H, W)"):
        for shape in [(4, 3, 2, 2), (1, 5, 3, 3), (6, 2, 4, 1)]:
            a = rng.standard_normal(shape).astype(np.float32)
            g = rng.standard_normal(shape).astype(np.float32)
            got = t.call("fisher_potential", a, g)
            check_array(f"fisher_potential of {shape}", got, (shape[1],), np.float64)
            check_close(f"fisher_potential of {shape}", got, oracle_fisher(a, g), 1e-9, 1e-12)
    with t.check("linear (N, C)"):
        for shape in [(5, 7), (1, 3)]:
            a, g = rng.standard_normal(shape), rng.standard_normal(shape)
            got = t.call("fisher_potential", a, g)
            check_array(f"fisher_potential of {shape}", got, (shape[1],), np.float64)
            check_close(f"fisher_potential of {shape}", got, oracle_fisher(a, g), 1e-9, 1e-12)


# -- Task 6 -----------------------------------------------------------------------------------


@task("Task 6: layer_scores and select_layers", checks={"layer_scores": 1, "select_layers": 1})
def tinytrain_select(t):
    rng = np.random.default_rng(125)
    with t.check("layer_scores"):
        for n in (2, 5, 8):
            names = [f"layer{i}" for i in range(n)]
            pots = {k: rng.random(int(rng.integers(1, 6))) for k in names}
            params = {k: int(rng.integers(10, 5000)) for k in names}
            macs = {k: int(rng.integers(100, 10**6)) for k in names}
            got = t.call("layer_scores", pots, params, macs)
            want = oracle_scores(pots, params, macs)
            check_true("layer_scores keys", isinstance(got, dict) and set(got) == set(want),
                       "must return a dict with one score per layer")  # fmt: skip
            for k in want:
                check_close(f"score of {k}", got[k], want[k], 1e-9, 1e-12)
    with t.check("select_layers"):
        cases = [({"a": 16.0, "b": 4.0}, {"a": 100, "b": 60}, 130)]
        cases.append(({"a": 1.0, "b": 1.0, "c": 2.0}, {"a": 80, "b": 80, "c": 10}, 100))  # a tie
        for _ in range(5):
            names = [f"l{i}" for i in range(int(rng.integers(2, 8)))]
            scores = {k: float(rng.random()) for k in names}
            cost = {k: int(rng.integers(8, 400)) for k in names}
            cases.append((scores, cost, int(rng.integers(50, 600))))
        for scores, cost, budget in cases:
            got = t.call("select_layers", scores, cost, budget)
            want = oracle_select(scores, cost, budget)
            check_true("select_layers", isinstance(got, dict), "must return a dict name -> ratio")
            check_equal(
                f"select_layers(budget={budget})", {k: float(v) for k, v in got.items()}, want
            )
