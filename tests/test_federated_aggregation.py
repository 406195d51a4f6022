"""Aggregators and compressors, against oracles written differently (scipy, loops)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from tinyodl.federated import (
    ClientUpdate,
    ClippedMean,
    CoordinateMedian,
    FedAvgM,
    Int8Quantization,
    Krum,
    NoCompression,
    TopK,
    TrimmedMean,
    WeightedMean,
    payload_bytes,
)


def _updates(rng, m=7, d=13, scale=1.0):
    return [
        ClientUpdate(
            k, (scale * rng.standard_normal(d)).astype(np.float32), int(rng.integers(1, 50))
        )
        for k in range(m)
    ]


def test_weighted_mean_is_algorithm_1(rng):
    ups = _updates(rng)
    n = np.array([u.num_examples for u in ups], dtype=np.float64)
    expected = sum(nk / n.sum() * u.delta.astype(np.float64) for nk, u in zip(n, ups, strict=True))
    got = WeightedMean().aggregate(ups, None)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_clipped_mean_bounds_every_client(rng):
    ups = _updates(rng, scale=10.0)
    ups[0].delta[:] = 1000.0
    got = ClippedMean(1.0).aggregate(ups, None)
    assert np.linalg.norm(got) <= 1.0 + 1e-5  # a convex combination of vectors of norm <= 1
    clipped = [u.delta / max(1.0, np.linalg.norm(u.delta)) for u in ups]
    n = np.array([u.num_examples for u in ups], float)
    np.testing.assert_allclose(got, np.tensordot(n / n.sum(), clipped, axes=1), rtol=1e-5)


def test_fedavgm_recurrence_and_state(rng):
    agg = FedAvgM(momentum=0.5, server_lr=2.0)
    v = np.zeros(13)
    for _ in range(3):
        ups = _updates(rng)
        mean = WeightedMean().aggregate(ups, None)
        v = 0.5 * v + mean
        np.testing.assert_allclose(agg.aggregate(ups, None), 2.0 * v, rtol=1e-5, atol=1e-6)
    twin = FedAvgM(momentum=0.5, server_lr=2.0)
    twin.load_state_dict(agg.state_dict())
    ups = _updates(rng)
    np.testing.assert_array_equal(twin.aggregate(ups, None), agg.aggregate(ups, None))


def test_median_and_trimmed_mean_match_scipy(rng):
    ups = _updates(rng, m=10)
    stack = np.stack([u.delta for u in ups]).astype(np.float64)
    np.testing.assert_allclose(
        CoordinateMedian().aggregate(ups, None), np.median(stack, 0), rtol=1e-6
    )
    np.testing.assert_allclose(
        TrimmedMean(0.2).aggregate(ups, None), stats.trim_mean(stack, 0.2, axis=0), rtol=1e-5
    )


def _krum_by_loops(deltas, f):
    m = len(deltas)
    scores = []
    for i in range(m):
        dists = sorted(float(np.sum((deltas[i] - deltas[j]) ** 2)) for j in range(m) if j != i)
        scores.append(sum(dists[: m - f - 2]))
    return np.array(scores)


def test_krum_picks_the_most_central_update(rng):
    ups = _updates(rng, m=9)
    ups[3].delta[:] += 50.0  # an outlier
    ups[6].delta[:] -= 50.0
    deltas = np.stack([u.delta.astype(np.float64) for u in ups])
    scores = _krum_by_loops(deltas, 2)
    agg = Krum(2)
    got = agg.aggregate(ups, None)
    np.testing.assert_array_equal(got, ups[int(np.argmin(scores))].delta)
    assert agg.last_selected_ == [int(np.argmin(scores))]
    best3 = sorted(np.argsort(scores)[:3])
    np.testing.assert_allclose(
        Krum(2, multi=3).aggregate(ups, None), deltas[best3].mean(0), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ValueError, match="2f \\+ 2"):
        Krum(4).aggregate(ups, None)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), m=st.integers(3, 12))
def test_robust_rules_stay_inside_the_coordinate_range_and_ignore_order(seed, m):
    rng = np.random.default_rng(seed)
    ups = _updates(rng, m=m, d=5)
    stack = np.stack([u.delta for u in ups])
    perm = rng.permutation(m)
    shuffled = [ClientUpdate(i, ups[j].delta, ups[j].num_examples) for i, j in enumerate(perm)]
    for agg in (CoordinateMedian(), TrimmedMean(0.2)):
        got = agg.aggregate(ups, None)
        assert (got >= stack.min(0) - 1e-6).all() and (got <= stack.max(0) + 1e-6).all()
        np.testing.assert_allclose(agg.aggregate(shuffled, None), got, rtol=1e-6, atol=1e-7)


def test_aggregators_refuse_mismatched_shapes(rng):
    ups = _updates(rng)
    ups[2] = ClientUpdate(2, np.zeros(5, np.float32), 3)
    with pytest.raises(ValueError, match="client 2"):
        WeightedMean().aggregate(ups, None)


# ------------------------------------------------------------------------------ compression


def test_no_compression_is_float32_bytes(rng):
    v = rng.standard_normal(100).astype(np.float32)
    c = NoCompression()
    p = c.compress(v, rng)
    assert payload_bytes(p) == 400
    np.testing.assert_array_equal(c.decompress(p, 100), v)


@pytest.mark.parametrize("chunk", [None, 7])
def test_int8_error_is_at_most_half_a_step(rng, chunk):
    v = rng.standard_normal(50).astype(np.float32)
    c = Int8Quantization(chunk_size=chunk)
    p = c.compress(v, rng)
    assert p["q"].dtype == np.int8 and payload_bytes(p) == 50 + 4 * (1 if chunk is None else 8)
    back = c.decompress(p, 50)
    steps = np.repeat(p["scale"], chunk or 50)[:50]
    assert (np.abs(back - v) <= steps / 2 + 1e-7).all()
    assert np.abs(back).max() == pytest.approx(np.abs(v).max(), rel=1e-6)


def test_int8_stochastic_rounding_is_unbiased():
    v = np.array([0.3, -0.71, 0.05, 1.0], dtype=np.float32)
    c = Int8Quantization(stochastic=True)
    rng = np.random.default_rng(1)
    mean = np.mean([c.decompress(c.compress(v, rng), 4) for _ in range(4000)], axis=0)
    step = 1.0 / 127
    np.testing.assert_allclose(mean, v, atol=0.05 * step)  # nearest rounding is off by up to step/2
    nearest = Int8Quantization().decompress(Int8Quantization().compress(v, rng), 4)
    assert np.abs(nearest - v).max() > 0.1 * step


def test_topk_keeps_the_largest_magnitudes(rng):
    v = rng.standard_normal(1000).astype(np.float32)
    c = TopK(0.05)
    p = c.compress(v, rng)
    assert len(p["indices"]) == 50 and payload_bytes(p) == 400
    back = c.decompress(p, 1000)
    kept = np.abs(v[back != 0])
    assert kept.min() >= np.abs(v[back == 0]).max()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), steps=st.integers(1, 6))
def test_error_feedback_loses_nothing(seed, steps):
    """Sum of what was sent + the residual = sum of the true deltas (telescoping)."""
    rng = np.random.default_rng(seed)
    c = TopK(k=3)
    residual = np.zeros(20, np.float32)
    sent = np.zeros(20, np.float64)
    truth = np.zeros(20, np.float64)
    for _ in range(steps):
        delta = rng.standard_normal(20).astype(np.float32)
        v = delta + residual
        received = c.decompress(c.compress(v, rng), 20)
        residual = v - received
        sent += received
        truth += delta
    np.testing.assert_allclose(sent + residual, truth, rtol=1e-5, atol=1e-5)
