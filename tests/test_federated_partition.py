"""Partitions of a dataset over clients (tinyodl.federated.partition)."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyodl.federated import (
    dirichlet_partition,
    iid_partition,
    label_histogram,
    pathological_partition,
    plot_label_histograms,
    quantity_skew_partition,
)

matplotlib.use("Agg")


def _check_disjoint(parts, n, cover=True):
    allidx = np.concatenate(parts)
    assert len(np.unique(allidx)) == len(allidx), "an example is on two clients"
    assert allidx.min() >= 0 and allidx.max() < n
    if cover:
        assert len(allidx) == n
    for p in parts:
        assert p.dtype == np.int64 and np.all(np.diff(p) > 0)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(10, 500), k=st.integers(1, 10), seed=st.integers(0, 100))
def test_iid_partition_is_an_equal_split(n, k, seed):
    parts = iid_partition(n, k, seed=seed)
    _check_disjoint(parts, n)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert [list(p) for p in parts] == [list(p) for p in iid_partition(n, k, seed=seed)]


def test_pathological_partition_matches_the_paper():
    labels = np.repeat(np.arange(10), 6000)  # 60,000 examples, 6,000 per class
    parts = pathological_partition(labels, 100, 2, seed=0)
    _check_disjoint(parts, 60000)
    assert all(len(p) == 600 for p in parts)
    hist = label_histogram(parts, labels)
    # shards of 300 never straddle a class boundary here, so each client sees 1 or 2 labels
    assert ((hist > 0).sum(axis=1) <= 2).all()
    assert set(np.unique(hist)) <= {0, 300, 600}


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 1000), k=st.integers(2, 20), spc=st.integers(1, 3))
def test_pathological_shards_are_contiguous_in_label_order(seed, k, spc):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=600)
    parts = pathological_partition(labels, k, spc, seed=seed)
    _check_disjoint(parts, 600, cover=(600 % (k * spc) == 0))
    rank = np.empty(600, dtype=np.int64)
    rank[np.argsort(labels, kind="stable")] = np.arange(600)
    shard = 600 // (k * spc)
    for p in parts:
        blocks = np.unique(rank[p] // shard)
        assert len(blocks) == spc  # exactly spc whole shards
        assert len(p) == spc * shard


def test_dirichlet_alpha_controls_label_skew():
    labels = np.repeat(np.arange(10), 500)
    skewed = label_histogram(dirichlet_partition(labels, 20, 0.1, seed=0), labels)
    uniform = label_histogram(dirichlet_partition(labels, 20, 1000.0, seed=0), labels)
    share = lambda h: (h / h.sum(axis=1, keepdims=True)).max(axis=1).mean()  # noqa: E731
    assert share(skewed) > 0.5  # a dominant class per client
    assert share(uniform) < 0.2  # close to 1/10
    parts = dirichlet_partition(labels, 20, 0.5, seed=3, min_size=10)
    _check_disjoint(parts, len(labels))
    assert min(len(p) for p in parts) >= 10


def test_dirichlet_says_when_min_size_cannot_be_met():
    labels = np.repeat(np.arange(2), 10)
    with pytest.raises(ValueError, match="dirichlet_partition.*min_size"):
        dirichlet_partition(labels, 10, 0.01, seed=0, min_size=5, max_tries=5)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(50, 1000), k=st.integers(1, 10), beta=st.floats(0.1, 10), seed=st.integers(0, 99)
)
def test_quantity_skew_covers_everything_with_min_size(n, k, beta, seed):
    parts = quantity_skew_partition(n, k, beta, seed=seed, min_size=3)
    _check_disjoint(parts, n)
    assert min(len(p) for p in parts) >= 3


def test_quantity_skew_is_skewed_for_small_beta():
    sizes = [len(p) for p in quantity_skew_partition(10000, 50, 0.2, seed=0)]
    assert max(sizes) > 10 * np.median(sizes)


def test_bad_inputs_name_the_function():
    with pytest.raises(ValueError, match="iid_partition"):
        iid_partition(5, 10)
    with pytest.raises(ValueError, match="pathological_partition: labels"):
        pathological_partition(np.zeros(10, dtype=np.float32), 2)
    with pytest.raises(ValueError, match="alpha"):
        dirichlet_partition(np.zeros(10, dtype=np.int64), 2, 0.0)


def test_plot_label_histograms():
    labels = np.repeat(np.arange(10), 100)
    fig = plot_label_histograms(
        {"IID": iid_partition(1000, 10), "shards": pathological_partition(labels, 10)}, labels
    )
    assert len(fig.axes) == 2
    heights = sum(p.get_height() for p in fig.axes[0].patches)
    assert heights == 1000
