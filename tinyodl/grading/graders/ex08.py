"""Grader of exercise 08 (transfer learning): bias-only backward, memory accounting, what
trains, group convolution and bilinear upsampling.

Oracles are written differently from the solution: gradients by finite differences of the
forward map (linear in the input, so exact up to rounding), bilinear upsampling by explicit
per-pixel interpolation, the backward by the adjoint identity <dy, A x> = <A^T dy, x>, the
group convolution as separate ordinary convolutions on channel slices.
"""

from __future__ import annotations

import numpy as np

from tinyodl.grading.api import task
from tinyodl.grading.checks import check_array, check_close, check_equal, check_true

EXERCISE = "08_transfer"
ALLOW: tuple[str, ...] = ()
DENY = ("tinyodl.transfer", "tinyodl.nn", "tinyodl.ops", "tinyodl.memory")


def _items(value, n: int, what: str) -> tuple:
    if not isinstance(value, tuple | list) or len(value) != n:
        raise AssertionError(f"must return {what}, got a {type(value).__name__}")
    return tuple(value)


# -- oracles ----------------------------------------------------------------------------------


def oracle_upsample(x: np.ndarray, size) -> np.ndarray:
    """Per output pixel: the four neighbours and their weights, computed directly."""
    n, c, h, w = x.shape
    out = np.zeros((n, c, *size))

    def coords(o, out_size, in_size):
        src = (o + 0.5) * in_size / out_size - 0.5
        src = 0.0 if src < 0 else src
        lo = min(int(src), in_size - 1)
        return lo, min(lo + 1, in_size - 1), src - lo

    for r in range(size[0]):
        y0, y1, fy = coords(r, size[0], h)
        for q in range(size[1]):
            x0, x1, fx = coords(q, size[1], w)
            out[:, :, r, q] = (
                (1 - fy) * (1 - fx) * x[:, :, y0, x0]
                + (1 - fy) * fx * x[:, :, y0, x1]
                + fy * (1 - fx) * x[:, :, y1, x0]
                + fy * fx * x[:, :, y1, x1]
            )
    return out


def _conv(x, w, padding):
    """Plain convolution by loops over output pixels."""
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    f, _, kh, kw = w.shape
    oh, ow = xp.shape[2] - kh + 1, xp.shape[3] - kw + 1
    out = np.zeros((x.shape[0], f, oh, ow))
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = np.tensordot(
                xp[:, :, i : i + kh, j : j + kw], w, axes=([1, 2, 3], [1, 2, 3])
            )
    return out


def oracle_group_conv(x, w, groups, padding):
    cg, fg = x.shape[1] // groups, w.shape[0] // groups
    parts = [
        _conv(x[:, g * cg : (g + 1) * cg], w[g * fg : (g + 1) * fg], padding) for g in range(groups)
    ]
    return np.concatenate(parts, axis=1)


def oracle_kept(layers, n) -> list[int]:
    out = []
    for layer in layers:
        numel = n * int(np.prod(layer["shape"]))
        t = layer["type"]
        if t in ("conv", "linear") and layer["weight_trainable"]:
            out.append(4 * numel)
        elif t == "relu":
            out.append(numel)
        elif t == "bn":
            out.append(4 * layer["shape"][0] + 4 * numel * bool(layer["gamma_trainable"]))
        else:
            out.append(0)
    return out


# -- Task 1 -----------------------------------------------------------------------------------


@task("Task 1: linear_backward_bias_only", checks={"dx": 0.5, "db": 0.5})
def bias_only(t):
    rng = np.random.default_rng(81)
    x, w, dout = (
        rng.standard_normal((4, 6)),
        rng.standard_normal((3, 6)),
        rng.standard_normal((4, 3)),
    )
    result = t.call("linear_backward_bias_only", dout, w)
    # the layer is linear in x and b: directional derivatives are exact
    with t.check("dx"):
        dx, _ = _items(result, 2, "(dx, db)")
        check_array("dx", dx, x.shape)
        want = np.array([[np.sum(dout * (np.eye(6)[k] @ w.T)) for k in range(6)]] * 4)
        want = np.stack([np.array([np.sum(dout[i] * w[:, k]) for k in range(6)]) for i in range(4)])
        check_close("dx", dx, want, 1e-10, 1e-12)
    with t.check("db"):
        _, db = _items(result, 2, "(dx, db)")
        check_array("db", db, (3,))
        check_close("db", db, np.array([dout[:, j].sum() for j in range(3)]), 1e-10, 1e-12)


# -- Task 2 -----------------------------------------------------------------------------------

NET = [
    {"type": "conv", "shape": (1, 28, 28), "weight_trainable": False},
    {"type": "bn", "shape": (16, 14, 14), "gamma_trainable": False},
    {"type": "relu", "shape": (16, 14, 14)},
    {"type": "conv", "shape": (16, 14, 14), "weight_trainable": True},
    {"type": "bn", "shape": (64, 14, 14), "gamma_trainable": True},
    {"type": "relu", "shape": (64, 14, 14)},
    {"type": "pool", "shape": (64, 14, 14)},
    {"type": "linear", "shape": (64,), "weight_trainable": True},
]


@task("Task 2: kept_bytes", checks={"returns one int per layer": 0.5, "bytes": 1.5})
def kept(t):
    with t.check("returns one int per layer"):
        got = t.call("kept_bytes", NET, 2)
        check_true(
            "kept_bytes(net, 2)",
            isinstance(got, list) and len(got) == len(NET) and all(isinstance(v, int) for v in got),
            f"expected a list of {len(NET)} ints",
        )
    with t.check("bytes"):
        for n in (1, 8):
            got = t.call("kept_bytes", NET, n)
            check_equal(f"kept_bytes(net, {n})", np.asarray(got), np.asarray(oracle_kept(NET, n)))
        frozen = [dict(layer, weight_trainable=False, gamma_trainable=False) for layer in NET]
        got = t.call("kept_bytes", frozen, 4)
        check_equal(
            "kept_bytes of a frozen net", np.asarray(got), np.asarray(oracle_kept(frozen, 4))
        )


# -- Task 3 -----------------------------------------------------------------------------------

NAMES = [
    "features.0.weight",
    "features.1.weight",
    "features.1.bias",
    "features.3.expand.weight",
    "features.3.expand_bn.weight",
    "features.3.expand_bn.bias",
    "features.10.weight",
    "features.11.weight",
    "features.11.bias",
    "features.12.weight",
    "features.12.bias",
    "classifier.0.weight",
    "classifier.0.bias",
]
STAGES = ["features.0", "features.1", "features.3", "features.10", "features.12"]


@task(
    "Task 3: trainable_names",
    checks={
        "feature_extraction and finetune_full": 0.5,
        "finetune_last_k": 1.0,
        "tinytl_bias": 0.5,
    },
)
def trainable(t):
    def expect(keep):
        return [n for n in NAMES if keep(n)]

    head = lambda n: n.startswith("classifier.")  # noqa: E731
    with t.check("feature_extraction and finetune_full"):
        check_equal(
            "feature_extraction",
            t.call("trainable_names", NAMES, "feature_extraction", STAGES, 2),
            expect(head),
        )
        check_equal(
            "finetune_full", t.call("trainable_names", NAMES, "finetune_full", STAGES), list(NAMES)
        )
    with t.check("finetune_last_k"):
        for k in (1, 2, 4):
            last = STAGES[-k:]
            want = expect(
                lambda n, last=last: head(n) or n.split(".")[0] + "." + n.split(".")[1] in last
            )
            got = t.call("trainable_names", NAMES, "finetune_last_k", STAGES, k)
            check_equal(f"finetune_last_k with k={k}", got, want)
    with t.check("tinytl_bias"):
        got = t.call("trainable_names", NAMES, "tinytl_bias", STAGES)
        check_equal("tinytl_bias", got, expect(lambda n: head(n) or n.endswith(".bias")))


# -- Task 4 -----------------------------------------------------------------------------------


@task("Task 4: group_conv2d", checks={"shape and dtype": 0.5, "values": 1.5})
def group_conv(t):
    rng = np.random.default_rng(84)
    x = rng.standard_normal((2, 4, 6, 5))
    w = rng.standard_normal((6, 2, 5, 5))
    with t.check("shape and dtype"):
        check_array(
            "group_conv2d(x, w, 2, 2)", t.call("group_conv2d", x, w, 2, 2), (2, 6, 6, 5), np.float64
        )
    with t.check("values"):
        check_close(
            "group_conv2d (2 groups, padding 2)",
            t.call("group_conv2d", x, w, 2, 2),
            oracle_group_conv(x, w, 2, 2),
            1e-9,
            1e-9,
        )
        w4 = rng.standard_normal((4, 1, 3, 3))
        check_close(
            "group_conv2d (depthwise: 4 groups)",
            t.call("group_conv2d", x, w4, 4, 1),
            oracle_group_conv(x, w4, 4, 1),
            1e-9,
            1e-9,
        )
        w1 = rng.standard_normal((3, 4, 3, 3))
        check_close(
            "group_conv2d (1 group)",
            t.call("group_conv2d", x, w1, 1, 0),
            oracle_group_conv(x, w1, 1, 0),
            1e-9,
            1e-9,
        )


# -- Task 5 -----------------------------------------------------------------------------------


@task(
    "Task 5: interpolation_matrix and bilinear_upsample",
    checks={"interpolation_matrix": 1.0, "bilinear_upsample": 1.0},
)
def upsample(t):
    rng = np.random.default_rng(85)
    with t.check("interpolation_matrix"):
        for in_size, out_size in [(2, 4), (3, 4), (4, 4), (3, 7)]:
            a = t.call("interpolation_matrix", in_size, out_size)
            check_array(
                f"interpolation_matrix({in_size}, {out_size})", a, (out_size, in_size), np.float64
            )
            eye = np.eye(in_size).reshape(1, 1, in_size, in_size)
            want = oracle_upsample(eye, (out_size, in_size))[0, 0]  # rows: A @ I
            check_close(f"interpolation_matrix({in_size}, {out_size})", a, want, 1e-12, 1e-12)
    with t.check("bilinear_upsample"):
        x = rng.standard_normal((2, 3, 3, 4))
        for size in [(6, 8), (4, 4), (7, 5)]:
            y = t.call("bilinear_upsample", x, size)
            check_array(f"bilinear_upsample(x, {size})", y, (2, 3, *size), np.float64)
            check_close(f"bilinear_upsample(x, {size})", y, oracle_upsample(x, size), 1e-12, 1e-12)


@task(
    "Task 5 (hidden): bilinear_upsample when shrinking",
    checks={"output smaller than the input": 1.0},
    hidden=True,
)
def upsample_hidden(t):
    rng = np.random.default_rng(86)
    with t.check("output smaller than the input"):
        x = rng.standard_normal((1, 2, 7, 9))
        for size in [(3, 4), (2, 2), (5, 9)]:
            y = t.call("bilinear_upsample", x, size)
            check_close(
                f"bilinear_upsample(x of 7x9, {size})", y, oracle_upsample(x, size), 1e-12, 1e-12
            )


# -- Task 6 -----------------------------------------------------------------------------------


@task("Task 6: bilinear_upsample_backward", checks={"shape": 0.25, "adjoint of the forward": 0.75})
def upsample_backward(t):
    rng = np.random.default_rng(87)
    in_hw, size = (3, 5), (6, 7)
    dout = rng.standard_normal((2, 2, *size))
    with t.check("shape"):
        check_array(
            "bilinear_upsample_backward",
            t.call("bilinear_upsample_backward", dout, in_hw),
            (2, 2, *in_hw),
            np.float64,
        )
    with t.check("adjoint of the forward"):
        dx = t.call("bilinear_upsample_backward", dout, in_hw)
        check_array("dx", dx, (2, 2, *in_hw))
        # <dout, up(e_k)> for every unit input e_k: the exact gradient of a linear map
        want = np.zeros((2, 2, *in_hw))
        for i in range(in_hw[0]):
            for j in range(in_hw[1]):
                e = np.zeros((1, 1, *in_hw))
                e[0, 0, i, j] = 1.0
                want[:, :, i, j] = np.sum(dout * oracle_upsample(e, size), axis=(2, 3))
        check_close("bilinear_upsample_backward", dx, want, 1e-10, 1e-12)
