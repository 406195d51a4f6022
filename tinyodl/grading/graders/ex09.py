"""Grader of exercise 09 (federated learning).

Every oracle here is written differently from the exercise's solution (Python sorts with
explicit keys instead of ``argsort``, loops instead of broadcasting, Python integers modulo
2^32 instead of uint32 wrap-around) and runs in the grading process on fixed-seed inputs.
"""

from __future__ import annotations

import numpy as np

from tinyodl.grading.api import Fn, StudentError, task
from tinyodl.grading.checks import check_array, check_close, check_equal, check_true

EXERCISE = "09_federated"
ALLOW: tuple[str, ...] = ()
DENY = ("tinyodl.federated",)

# -- oracles ----------------------------------------------------------------------------------


def oracle_partition(labels, num_clients, spc, seed):
    order = sorted(range(len(labels)), key=lambda i: (int(labels[i]), i))
    shards = num_clients * spc
    size = len(labels) // shards
    deal = np.random.default_rng(seed).permutation(shards)
    parts = []
    for k in range(num_clients):
        mine = []
        for s in deal[k * spc : (k + 1) * spc]:
            mine += order[s * size : (s + 1) * size]
        parts.append(sorted(mine))
    return parts


GRAD = """def grad(w, x, y):
    W = w.reshape(x.shape[1], 3)
    z = x @ W
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1
    return (x.T @ p / len(y)).ravel()
"""


def oracle_grad(w, x, y):
    logits = x @ w.reshape(x.shape[1], 3)
    log_z = np.logaddexp.reduce(logits, axis=1, keepdims=True)
    p = np.exp(logits - log_z) - np.eye(3)[y]
    return np.einsum("nd,nc->dc", x, p).ravel() / len(y)


def oracle_client_update(w, x, y, epochs, batch, lr, seed):
    rng = np.random.default_rng(seed)
    cur = w.astype(np.float64).copy()
    for _ in range(epochs):
        order = list(range(len(y))) if batch is None else list(rng.permutation(len(y)))
        step = len(y) if batch is None else batch
        for i in range(0, len(order), step):
            b = np.array(order[i : i + step])
            cur = cur - lr * oracle_grad(cur, x[b], y[b])
    return cur - w


def oracle_topk(v, k):
    chosen = sorted(sorted(range(len(v)), key=lambda i: (-abs(float(v[i])), i))[:k])
    rest = v.copy()
    rest[chosen] = 0
    return np.array(chosen), v[chosen], rest


def oracle_trimmed(d, beta):
    m = len(d)
    c = int(np.floor(beta * m))
    out = []
    for j in range(d.shape[1]):
        col = sorted(d[:, j].tolist())
        out.append(sum(col[c : m - c]) / (m - 2 * c))
    return np.array(out)


def oracle_krum(d, f):
    m = len(d)
    scores = []
    for i in range(m):
        dist = sorted(float(np.dot(d[i] - d[j], d[i] - d[j])) for j in range(m) if j != i)
        scores.append(sum(dist[: m - f - 2]))
    best = min(scores)
    return scores.index(best)


def oracle_prg(seed, size):
    g = np.random.Generator(np.random.PCG64(seed))
    return [int(v) for v in g.integers(0, 2**32, size=size, dtype=np.uint64)]


def oracle_mask(x, uid, pairs):
    y = [int(v) for v in x]
    for v, seed in pairs:
        sign = 1 if v > uid else -1 if v < uid else 0
        y = [(a + sign * b) % 2**32 for a, b in zip(y, oracle_prg(seed, len(y)), strict=True)]
    return np.array(y, dtype=np.uint64)


def _items(value, n: int, what: str) -> tuple:
    if not isinstance(value, tuple | list) or len(value) != n:
        raise AssertionError(f"must return {what}, got a {type(value).__name__}")
    return tuple(value)


# -- Task 1 -----------------------------------------------------------------------------------


@task(
    "Task 1: pathological_partition",
    checks={
        "a list of sorted int64 index arrays": 0.5,
        "disjoint shards of whole label-sorted runs": 0.5,
        "the paper's deal (default_rng(seed).permutation)": 1,
    },
)
def partition(t):
    rng = np.random.default_rng(900)
    cases = [
        (rng.integers(0, 10, 600), 10, 2, 3),
        (np.repeat(np.arange(5), 40), 5, 2, 7),
        (rng.integers(0, 4, 103), 4, 3, 11),  # 103 = 12 shards of 8 + 7 left over
    ]
    outs = [t.call("pathological_partition", lab, k, spc, seed) for lab, k, spc, seed in cases]
    with t.check("a list of sorted int64 index arrays"):
        for (_, k, _, _), out in zip(cases, outs, strict=True):
            check_true("pathological_partition", isinstance(out, list), "must return a list")
            check_true("pathological_partition", len(out) == k, f"expected {k} clients")
            for p in out:
                check_array("a client's indices", p, (p.shape[0],), np.int64)
                check_true("a client's indices", bool(np.all(np.diff(p) > 0)), "must be sorted")
    with t.check("disjoint shards of whole label-sorted runs"):
        for (lab, k, spc, _), out in zip(cases, outs, strict=True):
            rank = np.empty(len(lab), dtype=np.int64)
            rank[[i for i in sorted(range(len(lab)), key=lambda i: (lab[i], i))]] = np.arange(
                len(lab)
            )
            size = len(lab) // (k * spc)
            flat = np.concatenate(out)
            check_true("pathological_partition", len(set(flat.tolist())) == len(flat),
                       "an example is on two clients")  # fmt: skip
            check_true("pathological_partition", len(flat) == k * spc * size,
                       f"expected {k * spc * size} examples in all")  # fmt: skip
            for p in out:
                blocks = set((rank[p] // size).tolist())
                check_true("a client's indices", len(blocks) == spc and len(p) == spc * size,
                           "must be exactly shards_per_client whole shards")  # fmt: skip
    with t.check("the paper's deal (default_rng(seed).permutation)"):
        for (lab, k, spc, seed), out in zip(cases, outs, strict=True):
            for i, (p, q) in enumerate(zip(out, oracle_partition(lab, k, spc, seed), strict=True)):
                check_equal(f"client {i}'s indices (seed {seed})", p, np.array(q, dtype=np.int64))


# -- Task 2 -----------------------------------------------------------------------------------


@task(
    "Task 2: client_update",
    checks={
        "returns a float64 difference, w unchanged": 0.5,
        "B = infinity: full-batch steps (FedSGD)": 1,
        "mini-batches from one permutation per epoch": 1.5,
    },
)
def client_update(t):
    rng = np.random.default_rng(901)
    x = rng.standard_normal((37, 4))
    y = rng.integers(0, 3, 37)
    w = 0.1 * rng.standard_normal(12)
    grad = Fn(GRAD)
    with t.check("returns a float64 difference, w unchanged"):
        out = t.run("client_update", w.copy(), x, y, 1, 10, 0.5, 3, grad)
        check_array("client_update(...)", out.value, (12,), np.float64)
        check_equal("w after the call", out.args[0], w)
    with t.check("B = infinity: full-batch steps (FedSGD)"):
        for epochs in (1, 3):
            got = t.call("client_update", w.copy(), x, y, epochs, None, 0.7, 4, grad)
            expected = oracle_client_update(w, x, y, epochs, None, 0.7, 4)
            check_close(f"client_update(E={epochs}, B=None)", got, expected, 1e-9, 1e-12)
    with t.check("mini-batches from one permutation per epoch"):
        for epochs, batch, seed in [(1, 10, 5), (2, 8, 6), (3, 37, 7), (2, 5, 8)]:
            got = t.call("client_update", w.copy(), x, y, epochs, batch, 0.3, seed, grad)
            expected = oracle_client_update(w, x, y, epochs, batch, 0.3, seed)
            check_close(f"client_update(E={epochs}, B={batch}, seed={seed})", got, expected,
                        1e-9, 1e-12)  # fmt: skip


# -- Task 3 -----------------------------------------------------------------------------------


@task("Task 3: fedavg_step", checks={"weighted by n_k / m_t": 1})
def fedavg_step(t):
    rng = np.random.default_rng(902)
    with t.check("weighted by n_k / m_t"):
        for m, d in [(3, 5), (7, 2), (1, 4)]:
            deltas = rng.standard_normal((m, d))
            n = rng.integers(1, 500, m)
            got = t.call("fedavg_step", deltas, n)
            expected = sum(float(n[k]) * deltas[k] for k in range(m)) / float(n.sum())
            check_array("fedavg_step", got, (d,), np.float64)
            check_close(f"fedavg_step of {m} clients", got, expected, 1e-12, 1e-14)


# -- Task 4 -----------------------------------------------------------------------------------


@task(
    "Task 4: int8 quantization",
    checks={"quantize_int8 (q, scale)": 1, "dequantize_int8 and the zero vector": 0.5},
)
def int8(t):
    rng = np.random.default_rng(903)
    vectors = [rng.standard_normal(50).astype(np.float32), np.array([0.5, -1.0, 0.25], np.float32)]
    with t.check("quantize_int8 (q, scale)"):
        for v in vectors:
            q, scale = _items(t.call("quantize_int8", v), 2, "(q, scale)")
            check_array("q", q, v.shape, np.int8)
            check_array("scale", scale, (), np.float32)
            s = np.float32(max(abs(float(a)) for a in v) / 127.0)
            check_close("scale", scale, s, 1e-6, 0)
            expected = np.array([min(127, max(-127, round(float(a) / float(s)))) for a in v])
            diff = np.abs(q.astype(np.int64) - expected)
            check_true("q", int(diff.max()) <= 1 and np.mean(diff) < 0.05,
                       "q must be round(v / scale), clipped to [-127, 127]")  # fmt: skip
    with t.check("dequantize_int8 and the zero vector"):
        q = np.array([-127, 0, 5, 127], dtype=np.int8)
        back = t.call("dequantize_int8", q, np.float32(0.02))
        check_array("dequantize_int8", back, (4,), np.float32)
        check_close("dequantize_int8", back, [-2.54, 0.0, 0.1, 2.54], 1e-6, 1e-7)
        q, scale = _items(t.call("quantize_int8", np.zeros(6, np.float32)), 2, "(q, scale)")
        check_equal("q of a zero vector", q, np.zeros(6, np.int8))
        check_close("scale of a zero vector", scale, 0.0)


# -- Task 5 -----------------------------------------------------------------------------------


@task(
    "Task 5: top-k with error feedback",
    checks={
        "indices (sorted int32) and values": 1,
        "the new residual": 0.5,
        "inputs unchanged; ties go to the lower index": 0.5,
    },
)
def topk(t):
    rng = np.random.default_rng(904)
    cases = []
    for d, k in [(30, 4), (12, 12), (9, 1)]:
        cases.append((rng.standard_normal(d).astype(np.float32),
                      0.3 * rng.standard_normal(d).astype(np.float32), k))  # fmt: skip
    outs = [_items(t.call("topk_error_feedback", dl, r, k), 3, "(indices, values, residual)")
            for dl, r, k in cases]  # fmt: skip
    with t.check("indices (sorted int32) and values"):
        for (dl, r, k), (idx, val, _) in zip(cases, outs, strict=True):
            v = (dl + r).astype(np.float32)
            e_idx, e_val, _ = oracle_topk(v, k)
            check_array("indices", idx, (k,), np.int32)
            check_equal("indices", idx, e_idx.astype(np.int32))
            check_array("values", val, (k,), np.float32)
            check_close("values", val, e_val, 1e-6, 1e-7)
    with t.check("the new residual"):
        for (dl, r, k), (_, _, res) in zip(cases, outs, strict=True):
            _, _, e_res = oracle_topk((dl + r).astype(np.float32), k)
            check_array("new residual", res, dl.shape, np.float32)
            check_close("new residual", res, e_res, 1e-6, 1e-7)
    with t.check("inputs unchanged; ties go to the lower index"):
        dl = np.array([1.0, -2.0, 2.0, 0.5, -2.0], np.float32)
        r = np.zeros(5, np.float32)
        out = t.run("topk_error_feedback", dl.copy(), r.copy(), 2)
        check_equal("delta after the call", out.args[0], dl)
        check_equal("residual after the call", out.args[1], r)
        idx = _items(out.value, 3, "(indices, values, residual)")[0]
        check_equal("indices with ties |-2| = |2| = |-2|", idx, np.array([1, 2], np.int32))


# -- Task 6 -----------------------------------------------------------------------------------


@task("Task 6: median and trimmed mean", checks={"coordinate_median": 0.5, "trimmed_mean": 1})
def robust(t):
    rng = np.random.default_rng(905)
    with t.check("coordinate_median"):
        for m in (5, 6):
            d = rng.standard_normal((m, 7))
            got = t.call("coordinate_median", d)
            cols = [sorted(d[:, j]) for j in range(7)]
            mid = [c[m // 2] if m % 2 else (c[m // 2 - 1] + c[m // 2]) / 2 for c in cols]
            check_array("coordinate_median", got, (7,), np.float64)
            check_close(f"coordinate_median of {m} updates", got, mid, 1e-12, 1e-14)
    with t.check("trimmed_mean"):
        for m, beta in [(10, 0.2), (7, 0.15), (9, 0.0), (5, 0.39)]:
            d = rng.standard_normal((m, 6))
            d[0] += 100.0  # an outlier the trimmed mean must drop when beta m >= 1
            got = t.call("trimmed_mean", d, beta)
            check_array("trimmed_mean", got, (6,), np.float64)
            check_close(
                f"trimmed_mean(m={m}, beta={beta})", got, oracle_trimmed(d, beta), 1e-12, 1e-14
            )


# -- Task 7 -----------------------------------------------------------------------------------


@task("Task 7: krum", checks={"the lowest score": 1, "m <= 2f + 2 is refused": 0.5})
def krum(t):
    rng = np.random.default_rng(906)
    with t.check("the lowest score"):
        for m, f in [(7, 2), (8, 1), (10, 3)]:
            d = rng.standard_normal((m, 5))
            d[rng.integers(m)] += 10.0
            got = t.call("krum", d, f)
            check_true(
                "krum", isinstance(got, int) and not isinstance(got, bool), "must return an int"
            )
            check_equal(f"krum(m={m}, f={f})", got, oracle_krum(d, f))
        # a case where counting the distance to itself changes the choice
        d = np.random.default_rng(1).standard_normal((7, 3))
        check_equal("krum(m=7, f=2) on a close call", t.call("krum", d, 2), oracle_krum(d, 2))
        same = np.zeros((6, 3))
        check_equal("krum of identical updates (ties: the lower index)", t.call("krum", same, 1), 0)
    with t.check("m <= 2f + 2 is refused"):
        out = None
        try:
            out = t.call("krum", rng.standard_normal((6, 3)), 2)
        except Exception as err:  # StudentError carries the student's exception
            check_true(
                "krum(m=6, f=2)", "ValueError" in str(err), f"expected ValueError, got {err}"
            )
        else:
            check_true("krum(m=6, f=2)", False, f"expected ValueError, got {out!r}")


# -- Task 8 -----------------------------------------------------------------------------------


@task(
    "Task 8: pairwise masks",
    checks={"y_u for one user": 1, "masks cancel in the sum; x unchanged": 1},
)
def masks(t):
    rng = np.random.default_rng(907)
    users = [0, 1, 2, 3]
    seeds = {(u, v): int(rng.integers(2**40)) for u in users for v in users if u < v}
    pairs = {u: [[v, seeds[min(u, v), max(u, v)]] for v in users if v != u] for u in users}
    xs = {u: rng.integers(0, 2**32, 20, dtype=np.uint64).astype(np.uint32) for u in users}
    outs = {u: t.run("mask_input", xs[u].copy(), u, pairs[u]) for u in users}
    with t.check("y_u for one user"):
        for u in (0, 2, 3):
            y = outs[u].value
            check_array(f"mask_input(x, {u}, pairs)", y, (20,), np.uint32)
            check_equal(
                f"mask_input(x, {u}, pairs)", y.astype(np.uint64), oracle_mask(xs[u], u, pairs[u])
            )
    with t.check("masks cancel in the sum; x unchanged"):
        total = [0] * 20
        for u in users:
            check_equal(f"x of user {u} after the call", outs[u].args[0], xs[u])
            total = [(a + int(b)) for a, b in zip(total, outs[u].value.tolist(), strict=True)]
        expected = [sum(int(xs[u][i]) for u in users) % 2**32 for i in range(20)]
        check_equal("sum of the masked inputs mod 2^32", np.array([a % 2**32 for a in total]),
                    np.array(expected))  # fmt: skip


# -- Task 9 -----------------------------------------------------------------------------------


def _mlp_counts_oracle(sizes, batch):
    """MACs from tinyodl.energy's counter on a real model; bytes by an explicit loop."""
    from tinyodl import energy, nn

    layers = [nn.Linear(sizes[i], sizes[i + 1], seed=i) for i in range(len(sizes) - 1)]
    model = nn.Sequential(layers)
    costs = energy.layer_costs(model, (sizes[0],))
    macs = energy.training_step_counts(costs, energy.trainable_from_model(model), batch).macs_fp32
    values = 0
    for i in range(len(sizes) - 1):
        params = sizes[i] * sizes[i + 1] + sizes[i + 1]
        values += 3 * params  # read forward, read backward, gradient written
        values += batch * sizes[i] + batch * sizes[i + 1]  # input read, output written
    return int(macs), 4 * values


@task(
    "Task 9: energy of a training step",
    checks={
        "MACs: forward, weight and input gradients (none for the first layer's input)": 1,
        "bytes: 3 P parameter values and the forward activations, 4 bytes each": 0.5,
        "energy = MACs * e_mac + bytes * e_byte": 0.5,
    },
)
def step_energy(t):
    cases = [([784, 200, 200, 10], 10), ([5, 3], 1), ([16, 8, 4, 2], 7), ([3, 9, 1], 32)]
    outs = [_items(t.call("step_counts", list(s), b), 2, "(macs, nbytes)") for s, b in cases]
    oracles = [_mlp_counts_oracle(s, b) for s, b in cases]
    with t.check("MACs: forward, weight and input gradients (none for the first layer's input)"):
        for (s, b), (macs, _), (o_macs, _) in zip(cases, outs, oracles, strict=True):
            check_true("macs", isinstance(macs, int), f"must be an int, got {type(macs).__name__}")
            check_equal(f"MACs of step_counts({s}, {b})", macs, o_macs)
    with t.check("bytes: 3 P parameter values and the forward activations, 4 bytes each"):
        for (s, b), (_, nbytes), (_, o_bytes) in zip(cases, outs, oracles, strict=True):
            check_true("nbytes", isinstance(nbytes, int), "must be an int")
            check_equal(f"bytes of step_counts({s}, {b})", nbytes, o_bytes)
    with t.check("energy = MACs * e_mac + bytes * e_byte"):
        for (s, b), (o_macs, o_bytes) in zip(cases, oracles, strict=True):
            for e_mac, e_byte in ((4.6e-12, 2.5e-12), (3e-13, 1e-10)):
                got = t.call("step_energy", list(s), b, e_mac, e_byte)
                check_true("step_energy", isinstance(got, float), "must return a float")
                check_close(f"step_energy({s}, {b}, {e_mac}, {e_byte})", got,
                            o_macs * e_mac + o_bytes * e_byte, 1e-9, 0)  # fmt: skip


# -- Task 10 ----------------------------------------------------------------------------------


def _payload_oracle(d, compression, k):
    """Bytes the chapter-09 compressors really produce for a vector of d values."""
    from tinyodl.federated import Int8Quantization, TopK, payload_bytes

    comp = {"int8": Int8Quantization(), "topk": TopK(k=k) if k else None}.get(compression)
    vec = np.linspace(-1, 1, d, dtype=np.float32)
    if comp is None:
        return 4 * d
    return payload_bytes(comp.compress(vec, np.random.default_rng(0)))


@task(
    "Task 10: radio energy of federated rounds vs the raw upload",
    checks={"update bytes as the compressors send them": 1, "rounds vs the raw upload": 1},
)
def radio(t):
    from tinyodl import energy

    cases = [(199210, "float32", None), (199210, "int8", None), (1000, "topk", 10),
             (37, "topk", 5), (50, "int8", None)]  # fmt: skip
    with t.check("update bytes as the compressors send them"):
        for d, comp, k in cases:
            got = t.call("update_bytes", d, comp, k)
            check_true("update_bytes", isinstance(got, int), "must return an int")
            check_equal(f"update_bytes({d}, {comp!r}, {k})", got, _payload_oracle(d, comp, k))
        try:
            out = t.call("update_bytes", 10, "fp16", None)
        except StudentError as err:
            check_true("update_bytes(10, 'fp16')", "ValueError" in str(err),
                       f"expected ValueError, got {err}")  # fmt: skip
        else:
            check_true("update_bytes(10, 'fp16')", False, f"expected ValueError, got {out!r}")
    with t.check("rounds vs the raw upload"):
        for (d, comp, k), rounds, n, sb in zip(cases, (20, 5, 1, 3, 7), (120, 10, 1, 60, 2),
                                               (785, 785, 3, 10, 1000), strict=True):  # fmt: skip
            e_tx, e_rx = 1.8e-7, 1.7e-7
            c = energy.with_constants(ble_tx_per_byte=e_tx, ble_rx_per_byte=e_rx)
            fed = rounds * energy.radio_energy(_payload_oracle(d, comp, k), 4 * d, "ble", c)
            raw = energy.radio_energy(n * sb, 4 * d, "ble", c)
            got = t.call("federated_vs_raw", d, comp, k, rounds, n, sb, e_tx, e_rx)
            check_true("federated_vs_raw", isinstance(got, dict), "must return a dict")
            check_close(f"federated_vs_raw(...)['federated'] ({comp}, {rounds} rounds)",
                        got.get("federated"), fed, 1e-9, 0)  # fmt: skip
            check_close(f"federated_vs_raw(...)['raw'] ({n} x {sb} bytes)", got.get("raw"),
                        raw, 1e-9, 0)  # fmt: skip
