"""Chapter 10: DP-FedAvg on the chapter 09 engine -- clipping, noise, adaptive clip, accountant."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from tinyodl import nn, privacy
from tinyodl.privacy.fedavg import DPFedAvg, PrivacyHook, dpfedavg_epsilon, split_noise_multiplier

federated = pytest.importorskip("tinyodl.federated")


def _updates(norms, d=6, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for cid, norm in enumerate(norms):
        v = rng.standard_normal(d)
        v *= norm / np.linalg.norm(v)
        out.append(federated.ClientUpdate(cid, v.astype(np.float32), 10, {}, 0, 0.0))
    return out


def _ctx(d=6, seed=0, round_=1):
    return SimpleNamespace(round=round_, global_params=np.zeros(d, np.float32),
                           rng=np.random.default_rng(seed))  # fmt: skip


def test_split_noise_multiplier_keeps_the_total_gaussian():
    z, sb = 1.0, 6.0
    zd = split_noise_multiplier(z, sb)
    # the pair (update, count) is one Gaussian mechanism with multiplier z
    assert 1 / zd**2 + 1 / (2 * sb) ** 2 == pytest.approx(1 / z**2)
    assert zd > z
    with pytest.raises(ValueError, match="budget"):
        split_noise_multiplier(1.0, 0.4)


def test_noise_free_step_is_the_clipped_sum_over_the_expected_count():
    updates = _updates([0.5, 0.99, 3.0, 0.2])
    agg = DPFedAvg(clip_norm=1.0, noise_multiplier=0.0, expected_clients=8.0)
    step = agg.aggregate(updates, _ctx())
    expected = sum(u.delta.astype(np.float64) * min(1.0, 1.0 / np.linalg.norm(u.delta))
                   for u in updates) / 8.0  # fmt: skip
    np.testing.assert_allclose(step, expected, rtol=1e-6)
    assert agg.history_[-1]["unclipped_fraction"] == 0.75  # norms <= C: 0.5, 0.99, 0.2


def test_noise_has_the_split_scale():
    agg = DPFedAvg(clip_norm=2.0, noise_multiplier=1.0, expected_clients=100.0, adaptive=True)
    zd = split_noise_multiplier(1.0, 100.0 / 20)
    d = 200_000
    step = agg.aggregate([], _ctx(d=d))
    expected = zd * 2.0 / 100.0
    assert abs(step.std() - expected) < 5 * expected / math.sqrt(2 * d)


def test_adaptive_clip_counts_unclipped_updates_and_moves_geometrically():
    # sigma_b tiny: the released count is (almost) the true fraction of NOT clipped updates
    agg = DPFedAvg(clip_norm=1.0, noise_multiplier=0.0, expected_clients=4.0, adaptive=True,
                   target_quantile=0.5, clip_learning_rate=0.2)  # fmt: skip
    agg.aggregate(_updates([0.5, 0.8, 0.9, 3.0]), _ctx())  # 3 of 4 unclipped
    assert agg.clip_norm_ == pytest.approx(math.exp(-0.2 * (0.75 - 0.5)))
    c = agg.clip_norm_
    agg.aggregate(_updates([5.0, 6.0, 7.0, 0.1]), _ctx(round_=2))  # 1 of 4 unclipped
    assert agg.clip_norm_ == pytest.approx(c * math.exp(-0.2 * (0.25 - 0.5)))
    # the clip converges to the target quantile of a fixed norm distribution
    agg = DPFedAvg(clip_norm=0.01, noise_multiplier=0.0, expected_clients=200.0, adaptive=True,
                   target_quantile=0.3, clip_learning_rate=0.5)  # fmt: skip
    norms = np.random.default_rng(1).lognormal(0.0, 0.5, 200)
    for t in range(200):
        agg.aggregate(_updates(norms, d=3, seed=t), _ctx(d=3, seed=t, round_=t + 1))
    assert agg.clip_norm_ == pytest.approx(np.quantile(norms, 0.3), rel=0.05)


def test_accountant_is_the_subsampled_gaussian_per_round():
    assert dpfedavg_epsilon(0.02, 1.0, 300, 1e-5) == privacy.epsilon(
        q=0.02, noise_multiplier=1.0, steps=300, delta=1e-5
    )


def _server(aggregator, hooks=(), seed=0):
    from tinyodl.data import load_mnist, to_float

    images, labels = load_mnist("train")
    x, y = to_float(images[:2000]).reshape(2000, -1), labels[:2000].astype(np.int64)
    clients = federated.make_clients(federated.iid_partition(2000, 200, seed=0), seed=0)
    model = nn.Sequential([nn.Linear(784, 16, seed=0), nn.ReLU(), nn.Linear(16, 10, seed=1)])
    return federated.FederatedServer(
        model, x, y, clients, update_fn=federated.LocalSGD(1, 10, 0.1), aggregator=aggregator,
        selection=federated.PoissonSelection(0.1), hooks=hooks, min_reports=0, seed=seed,
    )  # fmt: skip


def test_dp_fedavg_runs_on_the_engine_and_records_epsilon():
    agg = DPFedAvg(clip_norm=0.5, noise_multiplier=1.0, expected_clients=20.0, adaptive=True)
    hook = PrivacyHook(0.1, 1.0, 1e-5)
    server = _server(agg, [hook])
    server.run(4, progress=False)
    assert [r["epsilon"] for r in server.history_] == sorted(r["epsilon"] for r in server.history_)
    assert server.history_[-1]["epsilon"] == pytest.approx(dpfedavg_epsilon(0.1, 1.0, 4, 1e-5))
    assert len(agg.history_) == 4 and agg.clip_norm_ != 0.5


def test_dp_fedavg_resumes_bit_equal(tmp_path):
    def make():
        return DPFedAvg(clip_norm=0.5, noise_multiplier=1.0, expected_clients=20.0, adaptive=True)

    full = _server(make())
    full.run(4, progress=False)
    first = _server(make())
    first.run(2, progress=False, checkpoint_path=tmp_path / "ck.npz")
    agg = make()
    resumed = _server(agg)
    resumed.run(4, progress=False, checkpoint_path=tmp_path / "ck.npz", resume=True)
    np.testing.assert_array_equal(resumed.global_params_, full.global_params_)
    assert agg.clip_norm_ == full.aggregator.clip_norm_
