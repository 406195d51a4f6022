"""Grader of exercise 02 (pruning): masks, schedule, masked SGD, CSR, channel pruning.

Oracles written differently from the solution: thresholds from a full sort, the schedule's
pruning step found by walking the events, CSR from ``scipy.sparse.csr_matrix``, channel
pruning with ``np.delete`` and per-filter loops. numpy and scipy only, in the grading
process.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from tinyodl.grading.api import task
from tinyodl.grading.checks import check_array, check_close, check_equal, check_true

EXERCISE = "02_pruning"
ALLOW: tuple[str, ...] = ()
DENY = ("tinyodl.pruning",)

# -- oracles ----------------------------------------------------------------------------------


def oracle_threshold_mask(values: np.ndarray, n_prune: int) -> np.ndarray:
    """Keep |v| strictly above the n_prune-th smallest magnitude (inputs have no ties)."""
    if n_prune == 0:
        return np.ones(values.shape, dtype=bool)
    threshold = np.sort(np.abs(values), axis=None)[n_prune - 1]
    return np.abs(values) > threshold


def oracle_gradual(step, final, begin, end, initial=0.0, frequency=1) -> float:
    if step < begin:
        return 0.0
    if step >= end:
        return float(final)
    last = begin
    while last + frequency <= step:  # walk the pruning events
        last += frequency
    remaining = (end - last) / (end - begin)
    return float(final - (final - initial) * remaining**3)


def _distinct(rng, shape, scale=1.0):
    """Random values whose magnitudes have no ties."""
    n = int(np.prod(shape))
    mags = (np.arange(1, n + 1) + rng.uniform(0.1, 0.9, n)) * scale / n
    return (rng.permutation(mags) * rng.choice([-1.0, 1.0], n)).reshape(shape)


# -- Task 1 -----------------------------------------------------------------------------------


@task(
    "Task 1: magnitude_mask",
    checks={"boolean mask of the weight's shape": 0.5, "prunes the smallest magnitudes": 1,
            "the weights are not modified": 0.5},
)  # fmt: skip
def magnitude(t):
    rng = np.random.default_rng(1)
    cases = [((10, 8), 0.5), ((4, 3, 3, 3), 0.9), ((7,), 0.0), ((20, 5), 0.33)]
    outs = []
    for shape, s in cases:
        w = _distinct(rng, shape)
        outs.append((w, s, t.run("magnitude_mask", w.copy(), s)))
    with t.check("boolean mask of the weight's shape"):
        for w, s, out in outs:
            check_array(f"magnitude_mask(w {w.shape}, {s})", out.value, w.shape, np.bool_)
    with t.check("prunes the smallest magnitudes"):
        for w, s, out in outs:
            expected = oracle_threshold_mask(w, int(round(s * w.size)))
            check_equal(f"magnitude_mask(w {w.shape}, {s})", out.value, expected)
    with t.check("the weights are not modified"):
        for w, s, out in outs:
            check_equal(f"w after magnitude_mask(w {w.shape}, {s})", out.args[0], w)


# -- Task 2 -----------------------------------------------------------------------------------


@task(
    "Task 2: global_masks",
    checks={"a mask per layer, same keys and shapes": 0.5, "one threshold for all layers": 1.5},
)
def global_(t):
    rng = np.random.default_rng(2)
    all_w = _distinct(rng, (200 + 30 + 12,))
    weights = {
        "features.0.weight": all_w[:200].reshape(20, 10) * 0.2,
        "features.3.weight": all_w[200:230].reshape(3, 10),
        "classifier.weight": all_w[230:].reshape(2, 2, 3) * 5,
    }
    cases = [(0.8, t.call("global_masks", weights, 0.8)), (0.5, t.call("global_masks",
             weights, 0.5))]  # fmt: skip
    with t.check("a mask per layer, same keys and shapes"):
        for s, got in cases:
            check_true(f"global_masks(weights, {s})", isinstance(got, dict) and
                       list(got) == list(weights), f"must return a dict with keys "
                       f"{list(weights)} in that order")  # fmt: skip
            for name, w in weights.items():
                check_array(f"global_masks(weights, {s})[{name!r}]", got[name], w.shape,
                            np.bool_)  # fmt: skip
    with t.check("one threshold for all layers"):
        flat = np.concatenate([w.ravel() for w in weights.values()])
        for s, got in cases:
            keep = oracle_threshold_mask(flat, int(round(s * flat.size)))
            offset = 0
            for name, w in weights.items():
                expected = keep[offset : offset + w.size].reshape(w.shape)
                check_equal(f"global_masks(weights, {s})[{name!r}]", got[name], expected)
                offset += w.size


# -- Task 3 -----------------------------------------------------------------------------------


@task(
    "Task 3: gradual_sparsity",
    checks={"before, at and after the schedule": 0.5, "the cubic curve": 1,
            "held between pruning steps, from an initial sparsity": 0.5},
)  # fmt: skip
def schedule(t):
    with t.check("before, at and after the schedule"):
        for step in (0, 9, 10, 110, 111, 1000):
            got = t.call("gradual_sparsity", step, 0.9, 10, 110)
            check_close(f"gradual_sparsity({step}, 0.9, 10, 110)", got,
                        oracle_gradual(step, 0.9, 10, 110), 1e-12)  # fmt: skip
        got = t.call("gradual_sparsity", 110, 0.9, 10, 110, frequency=30)
        check_close("gradual_sparsity(110, 0.9, 10, 110, frequency=30) (at the end)", got, 0.9)
    with t.check("the cubic curve"):
        for step in (11, 35, 60, 87, 109):
            got = t.call("gradual_sparsity", step, 0.75, 10, 110)
            check_close(f"gradual_sparsity({step}, 0.75, 10, 110)", got,
                        oracle_gradual(step, 0.75, 10, 110), 1e-12)  # fmt: skip
    with t.check("held between pruning steps, from an initial sparsity"):
        for step in (5, 19, 20, 44, 99):
            got = t.call("gradual_sparsity", step, 0.95, 0, 100, initial=0.3, frequency=20)
            expected = oracle_gradual(step, 0.95, 0, 100, 0.3, 20)
            label = f"gradual_sparsity({step}, 0.95, 0, 100, initial=0.3, frequency=20)"
            check_close(label, got, expected, 1e-12)


# -- Task 4 -----------------------------------------------------------------------------------


@task(
    "Task 4: masked_sgd_step",
    checks={"w and velocity after one step": 1, "pruned weights stay zero over many steps": 0.5,
            "grad is not modified": 0.5},
)  # fmt: skip
def masked_sgd(t):
    rng = np.random.default_rng(4)
    w = rng.standard_normal((6, 5))
    mask = rng.random((6, 5)) > 0.6
    w *= mask
    velocity = rng.standard_normal((6, 5))  # momentum from before the pruning: not masked
    grad = rng.standard_normal((6, 5))
    out = t.run("masked_sgd_step", w.copy(), grad.copy(), velocity.copy(), mask, 0.1, 0.9)
    with t.check("w and velocity after one step"):
        v_new = 0.9 * velocity + np.where(mask, grad, 0.0)
        w_new = np.where(mask, w - 0.1 * v_new, 0.0)
        check_close("velocity after masked_sgd_step (lr=0.1, momentum=0.9)", out.args[2], v_new)
        check_close("w after masked_sgd_step (lr=0.1, momentum=0.9)", out.args[0], w_new)
    with t.check("pruned weights stay zero over many steps"):
        wi, vi = w.copy(), np.zeros_like(w)
        for _ in range(5):
            step = t.run("masked_sgd_step", wi, rng.standard_normal(w.shape), vi, mask, 0.5, 0.9)
            wi, vi = step.args[0], step.args[2]
        check_true("w after 5 masked_sgd_step calls", np.all(wi[~mask] == 0),
                   "pruned weights (mask False) must be exactly 0 after every step")  # fmt: skip
        check_true(
            "velocity after 5 masked_sgd_step calls",
            np.all(vi[~mask] == 0),
            "the velocity of pruned weights must stay 0 (mask the gradient first)",
        )
    with t.check("grad is not modified"):
        check_equal("grad after masked_sgd_step", out.args[1], grad)


# -- Task 5 -----------------------------------------------------------------------------------


@task(
    "Task 5: to_csr and csr_matvec",
    checks={"to_csr values": 0.5, "to_csr col_index and row_ptr": 0.5, "csr_matvec": 1},
)
def csr(t):
    rng = np.random.default_rng(5)
    mats = []
    for shape, density in [((5, 7), 0.3), ((8, 3), 0.5), ((4, 10), 0.1)]:
        W = rng.standard_normal(shape) * (rng.random(shape) < density)
        W[1] = 0.0  # an empty row
        mats.append(W)
    outs = [t.call("to_csr", W) for W in mats]
    with t.check("to_csr values"):
        for W, out in zip(mats, outs, strict=True):
            check_true(f"to_csr(W {W.shape})", isinstance(out, (tuple, list)) and len(out) == 3,
                       "must return (values, col_index, row_ptr)")  # fmt: skip
            check_close(f"to_csr(W {W.shape}) values", out[0], sparse.csr_matrix(W).data, 0, 0)
    with t.check("to_csr col_index and row_ptr"):
        for W, out in zip(mats, outs, strict=True):
            ref = sparse.csr_matrix(W)
            check_equal(f"to_csr(W {W.shape}) col_index", np.asarray(out[1]), ref.indices)
            check_equal(f"to_csr(W {W.shape}) row_ptr", np.asarray(out[2]), ref.indptr)
    with t.check("csr_matvec"):
        for W in mats:
            ref = sparse.csr_matrix(W)
            x = rng.standard_normal(W.shape[1])
            got = t.call("csr_matvec", ref.data, ref.indices, ref.indptr, x)
            check_array(f"csr_matvec for W {W.shape}", got, (W.shape[0],))
            check_close(f"csr_matvec for W {W.shape}", got, np.einsum("rc,c->r", W, x))


# -- Task 6 -----------------------------------------------------------------------------------


@task(
    "Task 6: l1_keep and prune_conv_pair",
    checks={"l1_keep: the largest L1 norms, sorted": 1, "prune_conv_pair slices": 0.5,
            "prune_conv_pair leaves its inputs alone": 0.5},
)  # fmt: skip
def channels(t):
    rng = np.random.default_rng(6)
    with t.check("l1_keep: the largest L1 norms, sorted"):
        for f, n_keep in [(8, 5), (6, 1), (10, 10)]:
            w1 = rng.standard_normal((f, 3, 3, 3))
            norms = [float(np.sum(np.abs(w1[i]))) for i in range(f)]
            expected = sorted(sorted(range(f), key=lambda i: -norms[i])[:n_keep])
            got = t.call("l1_keep", w1, n_keep)
            check_equal(f"l1_keep(w1 {w1.shape}, {n_keep})", np.asarray(got), np.array(expected))
    w1, b1 = rng.standard_normal((8, 3, 3, 3)), rng.standard_normal(8)
    w2 = rng.standard_normal((4, 8, 3, 3))
    keep = np.array([0, 2, 3, 6])
    out = t.run("prune_conv_pair", w1.copy(), b1.copy(), w2.copy(), keep)
    with t.check("prune_conv_pair slices"):
        drop = np.setdiff1d(np.arange(8), keep)
        expected = (np.delete(w1, drop, 0), np.delete(b1, drop), np.delete(w2, drop, 1))
        check_true("prune_conv_pair(w1, b1, w2, keep)",
                   isinstance(out.value, (tuple, list)) and len(out.value) == 3,
                   "must return (w1', b1', w2')")  # fmt: skip
        for name, got, exp in zip(("w1'", "b1'", "w2'"), out.value, expected, strict=True):
            check_array(f"prune_conv_pair {name}", got, exp.shape)
            check_equal(f"prune_conv_pair {name}", got, exp)
    with t.check("prune_conv_pair leaves its inputs alone"):
        for name, after, before in zip(("w1", "b1", "w2"), out.args, (w1, b1, w2), strict=False):
            check_equal(f"{name} after prune_conv_pair", after, before)
        check_true("prune_conv_pair(w1, b1, w2, keep)",
                   not any(out.returned_arg(f"value[{i}]", f"args[{i}]") for i in range(3)),
                   "return new arrays, not the inputs")  # fmt: skip
