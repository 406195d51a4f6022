"""The federated server: Algorithm 1 against oracles, determinism, faults, accounting, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

from tinyodl import models, nn
from tinyodl.data import load_mnist, to_float
from tinyodl.federated import (
    ClientUpdate,
    DeviceProfile,
    FaultPlan,
    Faults,
    FedAvgM,
    FederatedServer,
    Hook,
    LocalSGD,
    RandomSelection,
    ResourceAwareSelection,
    RoundFailedError,
    SplitModel,
    TopK,
    WeightedMean,
    iid_partition,
    make_clients,
    pathological_partition,
    rounds_to_target,
)


def tiny_model(seed=0):
    return nn.Sequential(
        {
            "features": nn.Sequential([nn.Flatten(), nn.Linear(784, 16, seed=seed), nn.ReLU()]),
            "classifier": nn.Sequential([nn.Linear(16, 10, seed=seed + 1)]),
        }
    )


@pytest.fixture(scope="module")
def data():
    images, labels = load_mnist("train")
    timages, tlabels = load_mnist("test")
    return (
        to_float(images[:2000]),
        labels[:2000].astype(np.int64),
        to_float(timages[:500]),
        tlabels[:500],
    )


def _server(data, k=10, seed=0, **kwargs):
    x, y = data[0], data[1]
    clients = make_clients(
        iid_partition(len(y), k, seed=seed), seed=seed, profiles=kwargs.pop("profiles", None)
    )
    model = kwargs.pop("model", None) or tiny_model(seed)
    return FederatedServer(model, x, y, clients, seed=seed, **kwargs)


class Capture(Hook):
    def __init__(self):
        self.updates, self.before = {}, {}

    def on_round_start(self, server, ctx):
        self.before[ctx.round] = server.global_params_.copy()

    def on_updates(self, server, ctx, updates):
        self.updates[ctx.round] = [
            ClientUpdate(u.cid, u.delta.copy(), u.num_examples) for u in updates
        ]
        return updates


# ------------------------------------------------------------------------------ Algorithm 1


def test_fedsgd_round_is_a_gradient_step_on_the_selected_clients_union(data):
    lr = 0.5
    server = _server(data, update_fn=LocalSGD(1, None, lr), selection=RandomSelection(0.3))
    w0 = server.global_params_.copy()
    server.run(1, progress=False)
    chosen = server.history_[0]["selected"]
    assert len(chosen) == 3
    idx = np.concatenate([server.clients[c].indices for c in chosen])
    model = tiny_model(0)
    _, dlogits = nn.softmax_cross_entropy(model.forward(data[0][idx]), data[1][idx])
    model.backward(dlogits)
    grad = np.concatenate([p.grad.ravel() for p in model.parameters()])
    np.testing.assert_allclose(server.global_params_, w0 - lr * grad, rtol=1e-4, atol=1e-6)


def _torch_fedavg(data, clients, seed, rounds, fraction, epochs, batch, lr):
    """Algorithm 1 written directly in PyTorch (the oracle), same sampling conventions."""
    import torch

    model = tiny_model(seed)
    ws = [torch.tensor(p.data.copy(), dtype=torch.float64) for p in model.parameters()]
    x = torch.tensor(data[0].reshape(len(data[0]), -1), dtype=torch.float64)
    y = torch.tensor(data[1])
    K = len(clients)
    m = max(int(round(fraction * K)), 1)
    for t in range(1, rounds + 1):
        chosen = sorted(np.random.default_rng([seed, 1, t]).choice(K, size=m, replace=False))
        new, counts = [], []
        for k in chosen:
            c = clients[k]
            w = [v.clone().requires_grad_(True) for v in ws]
            rng = np.random.default_rng([c.seed, t])
            for _ in range(epochs):
                order = rng.permutation(len(c.indices))
                for s in range(0, len(order), batch):
                    b = torch.tensor(c.indices[order[s : s + batch]])
                    h = torch.relu(x[b] @ w[0].T + w[1])
                    loss = torch.nn.functional.cross_entropy(h @ w[2].T + w[3], y[b])
                    grads = torch.autograd.grad(loss, w)
                    with torch.no_grad():
                        for p, g in zip(w, grads, strict=True):
                            p -= lr * g
            new.append([p.detach() for p in w])
            counts.append(len(c.indices))
        total = sum(counts)
        ws = [
            sum(n / total * nw[i] for n, nw in zip(counts, new, strict=True))
            for i in range(len(ws))
        ]
    return np.concatenate([w.numpy().ravel() for w in ws])


@pytest.mark.torch
def test_fedavg_matches_algorithm_1_written_in_torch(data):
    x, y = data[0][:600], data[1][:600]
    clients = make_clients(pathological_partition(y, 6, 2, seed=1), seed=3)
    server = FederatedServer(
        tiny_model(0), x, y, clients, LocalSGD(2, 7, 0.05), selection=RandomSelection(0.5), seed=0
    )
    server.run(2, progress=False)
    expected = _torch_fedavg((x, y), clients, 0, 2, 0.5, 2, 7, 0.05)
    np.testing.assert_allclose(server.global_params_, expected, rtol=1e-4, atol=2e-6)


def test_fedprox_adds_mu_times_the_distance_to_the_global_model(data):
    lr, mu = 0.3, 2.0
    server = _server(
        data, k=4, update_fn=LocalSGD(2, None, lr, prox_mu=mu), selection=RandomSelection(0.25)
    )
    w0 = server.global_params_.copy()
    server.run(1, progress=False)
    c = server.clients[server.history_[0]["selected"][0]]
    model = tiny_model(0)
    for _ in range(2):  # two full-batch steps of the proximal objective, by hand
        model.zero_grad()
        _, d = nn.softmax_cross_entropy(model.forward(data[0][c.indices]), data[1][c.indices])
        model.backward(d)
        w = nn.parameters_to_vector(model)
        g = np.concatenate([p.grad.ravel() for p in model.parameters()]) + mu * (w - w0)
        nn.vector_to_parameters(w - lr * g, model)
    np.testing.assert_allclose(
        server.global_params_, nn.parameters_to_vector(model), rtol=1e-4, atol=1e-6
    )


def test_results_do_not_depend_on_execution_order_or_threads(data):
    a = _server(data, selection=RandomSelection(0.5), aggregator=FedAvgM(0.9))
    a.run(3, progress=False)
    b = _server(data, selection=RandomSelection(0.5), aggregator=FedAvgM(0.9), workers=2)
    b._shuffle_execution = True
    b.run(3, progress=False)
    np.testing.assert_array_equal(a.global_params_, b.global_params_)
    c = _server(data, seed=1, selection=RandomSelection(0.5))
    c.run(1, progress=False)
    assert not np.array_equal(
        a.history_[0]["selected"], c.history_[0]["selected"]
    ) or not np.array_equal(a.global_params_, c.global_params_)


def test_a_thousand_clients_without_a_model_copy_each(data):
    x, y = data[0], data[1]
    clients = make_clients(iid_partition(len(y), 1000, seed=0), seed=0)
    model = models.mlp_2nn(0)
    model_bytes = sum(p.data.nbytes for p in model.parameters())
    server = FederatedServer(
        model, x, y, clients, LocalSGD(1, 2, 0.05), selection=RandomSelection(0.01)
    )
    tracemalloc.start()
    try:
        server.run(2, progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert server.round_ == 2 and len(server.history_[-1]["reported"]) == 10
    # 1,000 model copies would be 1,000 x 0.8 MB; one round holds a few (updates, worker, global)
    assert peak < 30 * model_bytes, (peak, model_bytes)
    assert all(vars(c).keys() == {"cid", "indices", "seed", "profile"} for c in clients[:5])


# ------------------------------------------------------------------------------ faults


def test_drops_and_crashes_leave_a_round_of_survivors(data):
    cap = Capture()
    server = _server(data, selection=RandomSelection(1.0), faults=Faults(0.3, 0.3), hooks=[cap])
    server.run(2, progress=False)
    for record in server.history_:
        failed = {int(c) for c in record["failed"]}
        assert failed and set(record["reported"]) == set(record["selected"]) - failed
        reasons = " ".join(record["failed"].values())
        t = record["round"]
        step = WeightedMean().aggregate(cap.updates[t], None)
        after = cap.before[t + 1] if t + 1 in cap.before else server.global_params_
        np.testing.assert_array_equal(after, cap.before[t] + step)
    all_reasons = " ".join(" ".join(r["failed"].values()) for r in server.history_)
    assert "dropped out" in all_reasons and "SimulatedCrash" in all_reasons
    assert reasons


def test_fault_plans_are_seeded_per_round():
    f = Faults(drop_prob=0.5, crash_prob=0.2)
    p1 = f.plan(list(range(20)), np.random.default_rng([0, 2, 1]))
    p2 = f.plan(list(range(20)), np.random.default_rng([0, 2, 1]))
    assert (
        p1 == p2
        and any(p.drop for p in p1.values())
        and any(p.crash_after_steps is not None for p in p1.values())
    )
    assert FaultPlan() == FaultPlan(drop=False, crash_after_steps=None)


def test_too_few_reports_fail_the_round_and_change_nothing(data):
    server = _server(
        data,
        selection=RandomSelection(0.5),
        faults=Faults(drop_prob=0.7),
        min_reports=4,
        error_feedback=True,
        compressor=TopK(k=5),
    )
    w0 = server.global_params_.copy()
    with pytest.raises(
        RoundFailedError, match=r"round 1 failed: \d client\(s\) reported, at least 4"
    ) as info:
        server.run(3, progress=False)
    assert "dropped out" in str(info.value) and info.value.round == 1
    np.testing.assert_array_equal(server.global_params_, w0)
    assert server.round_ == 0 and server.history_ == [] and server.client_state_ == {}
    assert server.bytes_up_ == 0
    server.run(3, on_failure="skip", progress=False)
    assert server.round_ == 3 and any("round_failed" in r for r in server.history_)


def test_stragglers_miss_the_deadline(data):
    fast = DeviceProfile("fast", 1e6, 1e9, 1e9)
    slow = DeviceProfile("slow", 1.0, 1e9, 1e9)  # 200 examples take 200 s
    profiles = [slow if k % 3 == 0 else fast for k in range(10)]
    server = _server(data, selection=RandomSelection(1.0), deadline=60.0, profiles=profiles)
    record = server.run_round()
    assert set(int(c) for c in record["failed"]) == {0, 3, 6, 9}
    assert all("straggler" in r for r in record["failed"].values())
    assert record["sim_seconds"] == 60.0  # the server waited for the deadline
    assert server.clock_ == 60.0


def test_resource_aware_selection_skips_unavailable_flat_and_slow_devices(data):
    good = DeviceProfile("ok", 1e5, 1e7, 1e7)
    profiles = [good] * 10
    profiles[1] = DeviceProfile("night only", 1e5, 1e7, 1e7, available_from=22, available_to=6)
    profiles[2] = DeviceProfile("flat", 1e5, 1e7, 1e7, battery=0.05)
    profiles[3] = DeviceProfile("slow", 0.5, 1e7, 1e7)
    server = _server(
        data,
        selection=ResourceAwareSelection(1.0),
        deadline=100.0,
        profiles=profiles,
        round_period=3600.0,
    )
    record = server.run_round()  # clock 0 = midnight: the night-only device is available
    assert set(record["selected"]) == set(range(10)) - {2, 3}
    server.round_ = 11  # round 12 starts at 11:00
    record = server.run_round()
    assert set(record["selected"]) == set(range(10)) - {1, 2, 3}


# ------------------------------------------------------------------------------ accounting


def test_bytes_are_accounted_per_round(data):
    server = _server(data, selection=RandomSelection(0.4), compressor=TopK(k=10))
    record = server.run_round()
    d = server.num_params
    assert record["bytes_down"] == 4 * d * 4
    assert record["bytes_up"] == 4 * 10 * 8  # 10 int32 indices + 10 float32 values per client
    plain = _server(data, selection=RandomSelection(0.4))
    assert plain.run_round()["bytes_up"] == 4 * 4 * d


def test_error_feedback_keeps_a_residual_per_client(data):
    server = _server(
        data, selection=RandomSelection(0.3), compressor=TopK(k=10), error_feedback=True
    )
    record = server.run_round()
    for cid in record["reported"]:
        r = server.client_state_[cid]["residual"]
        assert r.shape == (server.num_params,) and np.count_nonzero(r) > 10


def test_split_model_on_the_server(data):
    split = SplitModel("features", private_on="server", activations_per_client=8)
    server = _server(data, split=split, selection=RandomSelection(0.3))
    head0 = split.server_private_.copy()
    lower_size = 784 * 16 + 16
    assert server.num_params == lower_size
    record = server.run_round()
    assert record["bytes_up"] == 3 * (4 * lower_size + 8 * 16 * 4 + 8)
    assert record["bytes_down"] == 3 * 4 * (lower_size + 16 * 10 + 10)
    assert record["server_examples"] == 24
    assert not np.array_equal(split.server_private_, head0)  # trained on the server


def test_split_model_with_private_heads(data):
    split = SplitModel("features", private_on="client")
    server = _server(data, split=split, selection=RandomSelection(0.3))
    record = server.run_round()
    heads = [server.client_state_[c]["private"] for c in record["reported"]]
    assert all(h.shape == (170,) for h in heads) and not np.array_equal(heads[0], heads[1])
    assert record["bytes_up"] == 3 * 4 * server.num_params


# ------------------------------------------------------------------------------ resume

BUILD = """
import numpy as np
from tinyodl import nn
from tinyodl.data import load_mnist, to_float
from tinyodl.federated import *

class Counter(Hook):
    def __init__(self, kill_at=None):
        self.count, self.kill_at = np.zeros(1), kill_at
    def on_round_start(self, server, ctx):
        if ctx.round == self.kill_at:
            import os, signal
            os.kill(os.getpid(), signal.SIGKILL)
    def on_round_end(self, server, record):
        self.count = self.count + 1
    def state_dict(self):
        return {"count": self.count}
    def load_state_dict(self, state):
        self.count = state["count"]

def build(kill_at=None):
    images, labels = load_mnist("train")
    x, y = to_float(images[:1000]), labels[:1000].astype(np.int64)
    model = nn.Sequential({
        "features": nn.Sequential([nn.Flatten(), nn.Linear(784, 16, seed=0), nn.ReLU()]),
        "classifier": nn.Sequential([nn.Linear(16, 10, seed=1)]),
    })
    clients = make_clients(dirichlet_partition(y, 8, 0.5, seed=0), seed=0)
    return FederatedServer(
        model, x, y, clients, LocalSGD(1, 16, 0.1), aggregator=FedAvgM(0.9),
        selection=RandomSelection(0.5), compressor=TopK(0.1), error_feedback=True,
        faults=Faults(drop_prob=0.2), hooks=[Counter(kill_at)], seed=0,
    )
"""


def test_a_killed_run_resumes_to_the_same_result(tmp_path):
    ckpt = tmp_path / "fl.npz"
    script = tmp_path / "run.py"
    script.write_text(
        BUILD + f"\nbuild(kill_at=4).run(6, checkpoint_path={str(ckpt)!r}, progress=False)\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    from tinyodl.checkpoint import load_checkpoint

    assert load_checkpoint(ckpt)[1]["round"] == 3  # the last completed round before the kill
    namespace: dict = {}
    exec(textwrap.dedent(BUILD), namespace)
    resumed = namespace["build"]()
    resumed.run(6, checkpoint_path=ckpt, resume=True, progress=False)
    assert resumed.history_[3]["round"] == 4  # rounds 1-3 came from the checkpoint
    straight = namespace["build"]()
    straight.run(6, progress=False)
    np.testing.assert_array_equal(resumed.global_params_, straight.global_params_)
    np.testing.assert_array_equal(resumed.aggregator.velocity_, straight.aggregator.velocity_)
    assert resumed.client_state_.keys() == straight.client_state_.keys()
    for cid, state in straight.client_state_.items():
        np.testing.assert_array_equal(resumed.client_state_[cid]["residual"], state["residual"])
    assert resumed.hooks[0].count[0] == 6
    assert resumed.bytes_up_ == straight.bytes_up_ and resumed.clock_ == straight.clock_
    assert os.path.exists(ckpt) and not list(tmp_path.glob(".fl.npz.*"))


def test_a_checkpoint_of_another_federation_is_refused(tmp_path, data):
    a = _server(data, k=10)
    a.run(1, progress=False)
    a.save(tmp_path / "a.npz")
    with pytest.raises(ValueError, match="is for"):
        _server(data, k=5).load(tmp_path / "a.npz")


# ------------------------------------------------------------------------------ misc


def test_hooks_can_drop_updates(data):
    class DropFirst(Hook):
        def on_updates(self, server, ctx, updates):
            return updates[1:]

    server = _server(data, selection=RandomSelection(0.3), hooks=[DropFirst()])
    record = server.run_round()
    assert len(record["reported"]) == 2 and record["reported"] == record["selected"][1:]


def test_rounds_to_target_uses_the_monotone_curve():
    assert rounds_to_target([0.5, None, 0.97, 0.9, 0.98], 0.97) == 3
    assert rounds_to_target([0.5, 0.96], 0.97) is None
    assert rounds_to_target([0.99], 0.97) == 1


def test_bad_federations_are_refused(data):
    x, y = data[0], data[1]
    clients = make_clients(iid_partition(len(y), 4), seed=0)
    with pytest.raises(ValueError, match="clients\\[0\\] has cid 1"):
        FederatedServer(tiny_model(), x, y, clients[1:])
    with pytest.raises(ValueError, match="integer labels"):
        FederatedServer(tiny_model(), x, y.astype(np.float32), clients)
    bad = make_clients([np.array([0, 5000])], seed=0)
    with pytest.raises(ValueError, match="outside"):
        FederatedServer(tiny_model(), x, y, bad)

    def broken(job):
        return type("R", (), {"delta": np.zeros(3, np.float32), "num_examples": 1, "metrics": {}})()

    server = FederatedServer(tiny_model(), x, y, clients, broken, selection=RandomSelection(1.0))
    with pytest.raises(RoundFailedError, match="delta of float32 \\(3,\\)"):
        server.run_round()


def test_power_of_choice_trains_the_highest_loss_candidates_and_pays_for_it(data):
    from tinyodl.federated import PoissonSelection, PowerOfChoice, SelectionContext

    ctx = SelectionContext(
        round=1,
        rng=np.random.default_rng(0),
        clients=make_clients(iid_partition(100, 20), seed=0),
        clock=0.0,
        deadline=None,
        model_bytes=0,
        local_loss=lambda cid: float((cid * 7) % 20),  # a known loss per client
        estimate_seconds=lambda cid: 0.0,
    )
    chosen = PowerOfChoice(0.2, d=10).select(ctx)
    rng = np.random.default_rng(0)
    candidates = rng.choice(20, size=10, replace=False, p=np.full(20, 1 / 20))
    expected = sorted(sorted(candidates, key=lambda c: -((c * 7) % 20))[:4])
    assert chosen == [int(c) for c in expected]
    server = _server(data, selection=PowerOfChoice(0.2, d=6))
    record = server.run_round()
    assert record["bytes_down"] == (2 + 6) * 4 * server.num_params  # 2 trained + 6 probed
    assert record["bytes_up"] == 2 * 4 * server.num_params + 6 * 4
    picks = [len(PoissonSelection(0.3).select(ctx)) for _ in range(200)]
    assert 4 < np.mean(picks) < 8  # 0.3 x 20 = 6 on average
