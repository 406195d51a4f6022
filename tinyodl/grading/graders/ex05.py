"""Grader of exercise 05 (layer-wise training).

The oracles are written here differently from the exercise's solution: blocks with
``einsum`` and ``np.where`` instead of matrix products and mask multiplication, the loss with
``logaddexp`` instead of a max shift, and the memory count from a table of what each layer
keeps. They use numpy only and run in the grading process.
"""

from __future__ import annotations

import numpy as np

from tinyodl.grading.api import task
from tinyodl.grading.checks import check_array, check_close, check_equal, check_true

EXERCISE = "05_layerwise"
ALLOW: tuple[str, ...] = ()
DENY = ("tinyodl.layerwise",)

# -- oracles ----------------------------------------------------------------------------------


def oracle_block(h, w, b):
    z = np.einsum("nd,od->no", h, w) + b
    return np.where(z > 0, z, 0.0), z > 0


def oracle_block_backward(dout, h, mask, w):
    g = np.where(mask, dout, 0.0)
    return np.einsum("no,od->nd", g, w), np.einsum("no,nd->od", g, h), np.einsum("no->o", g)


def oracle_loss(logits, y):
    n, k = logits.shape
    log_z = np.logaddexp.reduce(logits, axis=1)
    loss = float(np.mean(log_z - logits[np.arange(n), y]))
    return loss, (np.exp(logits - log_z[:, None]) - np.eye(k)[y]) / n


def oracle_stage_step(x, y, frozen, block, head, lr):
    """Returns (loss, new block, new head) without touching the inputs."""
    h = x
    for w, b in frozen:
        h, _ = oracle_block(h, w, b)
    (w, b), (v, c) = block, head
    out, mask = oracle_block(h, w, b)
    logits = np.einsum("no,ko->nk", out, v) + c
    loss, dlogits = oracle_loss(logits, y)
    dv, dc = np.einsum("nk,no->ko", dlogits, out), dlogits.sum(axis=0)
    _, dw, db = oracle_block_backward(np.einsum("nk,ko->no", dlogits, v), h, mask, w)
    return loss, [w - lr * dw, b - lr * db], [v - lr * dv, c - lr * dc]


def oracle_saved(widths, batch, stage):
    """A table of what each trained part keeps, summed."""
    keeps = []  # (layer, floats kept, booleans kept)
    for j in range(len(widths) - 1):
        keeps.append((f"block{j}", batch * widths[j], batch * widths[j + 1]))
        keeps.append((f"head{j}", batch * widths[j + 1], 0))
    last = len(widths) - 2
    trained = (
        {f"block{j}" for j in range(last + 1)} | {f"head{last}"}
        if stage is None
        else {f"block{stage}", f"head{stage}"}
    )
    return sum(4 * floats + booleans for name, floats, booleans in keeps if name in trained)


def problem(rng, widths=(12, 10, 8, 8), classes=5, batch=16):
    x = rng.standard_normal((batch, widths[0]))
    y = rng.integers(0, classes, batch)
    blocks = [
        [rng.standard_normal((widths[j + 1], widths[j])) / np.sqrt(widths[j]),
         0.1 * rng.standard_normal(widths[j + 1])]
        for j in range(len(widths) - 1)
    ]  # fmt: skip
    heads = [
        [0.3 * rng.standard_normal((classes, widths[j + 1])), 0.1 * rng.standard_normal(classes)]
        for j in range(len(widths) - 1)
    ]
    return x, y, blocks, heads


def _items(value, n: int, what: str) -> tuple:
    if not isinstance(value, tuple | list) or len(value) != n:
        raise AssertionError(f"must return {what}, got {type(value).__name__}")
    return tuple(value)


def _copy(params):
    return [[p.copy() for p in pair] for pair in params]


# -- Task 1 -----------------------------------------------------------------------------------


@task(
    "Task 1: block_forward and block_backward",
    checks={"forward output": 0.5, "cache: (h, mask), or None": 0.5, "backward gradients": 1},
)
def block(t):
    rng = np.random.default_rng(50)
    h, w, b = rng.standard_normal((6, 5)), rng.standard_normal((4, 5)), rng.standard_normal(4)
    want, mask = oracle_block(h, w, b)
    with t.check("forward output"):
        out, _ = _items(t.call("block_forward", h, w, b), 2, "(out, cache)")
        check_close("block_forward(h, w, b): out", check_array("out", out, (6, 4)), want)
    with t.check("cache: (h, mask), or None"):
        _, cache = _items(t.call("block_forward", h, w, b), 2, "(out, cache)")
        kept_h, kept_mask = _items(cache, 2, "a cache (h, mask)")
        check_close("the cached h", check_array("cached h", kept_h, h.shape), h)
        check_array("the cached mask", kept_mask, (6, 4), np.bool_)
        check_equal("the cached mask", kept_mask, mask)
        out, cache = _items(t.call("block_forward", h, w, b, save=False), 2, "(out, cache)")
        check_true("block_forward(..., save=False)", cache is None, "the cache must be None")
        check_close("block_forward(..., save=False): out", out, want)
    with t.check("backward gradients"):
        dout = rng.standard_normal((6, 4))
        got = _items(t.call("block_backward", dout, (h, mask), w), 3, "(dh, dw, db)")
        for label, value, expected in zip(
            ("dh", "dw", "db"), got, oracle_block_backward(dout, h, mask, w), strict=True
        ):
            check_close(f"block_backward: {label}", value, expected)


# -- Task 2 -----------------------------------------------------------------------------------


@task("Task 2: softmax_cross_entropy", checks={"loss and gradient": 0.5, "large logits": 0.5})
def loss(t):
    rng = np.random.default_rng(51)
    logits, y = rng.standard_normal((7, 5)), rng.integers(0, 5, 7)
    with t.check("loss and gradient"):
        value, grad = _items(t.call("softmax_cross_entropy", logits, y), 2, "(loss, dlogits)")
        want_loss, want_grad = oracle_loss(logits, y)
        check_close("softmax_cross_entropy: loss", value, want_loss)
        check_close("softmax_cross_entropy: dlogits", grad, want_grad)
    with t.check("large logits"):
        big = logits * 1000.0
        value, grad = _items(t.call("softmax_cross_entropy", big, y), 2, "(loss, dlogits)")
        want_loss, want_grad = oracle_loss(big, y)
        check_close("softmax_cross_entropy of logits around 1000: loss", value, want_loss)
        check_close("softmax_cross_entropy of logits around 1000: dlogits", grad, want_grad)


# -- Task 3 -----------------------------------------------------------------------------------


@task("Task 3: frozen_forward", checks={"output of the frozen blocks": 1})
def frozen(t):
    rng = np.random.default_rng(52)
    x, _, blocks, _ = problem(rng)
    with t.check("output of the frozen blocks"):
        for j in range(len(blocks) + 1):
            h = x
            for w, b in blocks[:j]:
                h, _ = oracle_block(h, w, b)
            got = t.call("frozen_forward", x, blocks[:j])
            check_close(f"frozen_forward with {j} frozen blocks", got, h)


# -- Task 4 -----------------------------------------------------------------------------------


@task(
    "Task 4: stage_step",
    checks={
        "returns the loss before the update": 0.5,
        "block updated in place": 1,
        "head updated in place": 1,
        "frozen blocks unchanged": 0.5,
    },
)
def stage(t):
    rng = np.random.default_rng(53)
    x, y, blocks, heads = problem(rng)
    j, lr = 2, 0.3
    want_loss, want_block, want_head = oracle_stage_step(x, y, blocks[:j], blocks[j], heads[j], lr)
    run = t.run("stage_step", x, y, _copy(blocks[:j]), _copy([blocks[j]])[0],
                _copy([heads[j]])[0], lr)  # fmt: skip
    frozen_after, block_after, head_after = run.args[2], run.args[3], run.args[4]
    with t.check("returns the loss before the update"):
        check_close("stage_step: loss", run.value, want_loss)
    with t.check("block updated in place"):
        for name, got, want in zip(("W", "b"), block_after, want_block, strict=True):
            check_close(f"block {name} after stage_step", got, want)
    with t.check("head updated in place"):
        for name, got, want in zip(("V", "c"), head_after, want_head, strict=True):
            check_close(f"head {name} after stage_step", got, want)
    with t.check("frozen blocks unchanged"):
        same = all(
            np.array_equal(a, b)
            for pair_a, pair_b in zip(frozen_after, blocks[:j], strict=True)
            for a, b in zip(pair_a, pair_b, strict=True)
        )
        check_true("stage_step", same, "the frozen blocks must not change")


# -- Task 5 -----------------------------------------------------------------------------------


@task(
    "Task 5: greedy_layerwise",
    checks={"parameters after training": 1.5, "last loss of every stage": 0.5},
)
def greedy(t):
    rng = np.random.default_rng(54)
    x, y, blocks, heads = problem(rng)
    steps, lr = 3, 0.2
    want_blocks, want_heads, want_losses = _copy(blocks), _copy(heads), []
    for j in range(len(blocks)):
        for _ in range(steps):
            value, want_blocks[j], want_heads[j] = oracle_stage_step(
                x, y, want_blocks[:j], want_blocks[j], want_heads[j], lr
            )
        want_losses.append(value)
    run = t.run("greedy_layerwise", x, y, _copy(blocks), _copy(heads), steps, lr)
    with t.check("parameters after training"):
        for kind, got, want in (
            ("block", run.args[2], want_blocks),
            ("head", run.args[3], want_heads),
        ):
            for j, (pair_got, pair_want) in enumerate(zip(got, want, strict=True)):
                for got_p, want_p in zip(pair_got, pair_want, strict=True):
                    check_close(f"{kind} {j} after greedy_layerwise", got_p, want_p)
    with t.check("last loss of every stage"):
        losses = _items(run.value, len(blocks), f"a list of {len(blocks)} losses")
        check_close(
            "greedy_layerwise: losses", np.array(losses, dtype=float), np.array(want_losses)
        )


# -- Task 6 -----------------------------------------------------------------------------------


@task("Task 6: saved_bytes", checks={"end to end": 1, "one stage": 1})
def memory(t):
    cases = [([784, 256, 256, 256, 256], 64), ([20, 32, 16], 8), ([5, 7, 9, 11, 13, 15], 3)]
    with t.check("end to end"):
        for widths, batch in cases:
            got = t.call("saved_bytes", widths, batch)
            check_close(f"saved_bytes({widths}, {batch})", got, oracle_saved(widths, batch, None))
    with t.check("one stage"):
        for widths, batch in cases:
            for j in range(len(widths) - 1):
                got = t.call("saved_bytes", widths, batch, j)
                want = oracle_saved(widths, batch, j)
                check_close(f"saved_bytes({widths}, {batch}, stage={j})", got, want)
