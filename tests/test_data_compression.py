"""Chapter 07: selection rules, sparse coding against scikit-learn, low-bit packing.

Oracles: scikit-learn's ``orthogonal_mp`` (OMP codes) and ``Lasso`` (the lasso solved by
ISTA/FISTA), ``numpy.packbits`` (1-bit packing), brute-force k-center for the
2-approximation bound, and straightforward loops for herding.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinyodl import data_compression as dc


@pytest.fixture(scope="module")
def digits():
    from tinyodl.data import load_mnist

    images, labels = load_mnist("train")
    return images[:600].reshape(600, -1) / 255.0, labels[:600].astype(np.int64)


def _unit_rows(rng, a, p):
    d = rng.standard_normal((a, p))
    return d / np.linalg.norm(d, axis=1, keepdims=True)


# ----------------------------------------------------------------------------- selection


def test_random_selection_is_distinct_and_seeded():
    a = dc.random_selection(100, 30, seed=3)
    assert len(set(a.tolist())) == 30 and a.max() < 100
    np.testing.assert_array_equal(a, dc.random_selection(100, 30, seed=3))
    with pytest.raises(ValueError, match="between 1 and the pool size 100"):
        dc.random_selection(100, 101)


def _herding_by_loops(f, n):
    """The definition, written out with Python loops."""
    mu = [sum(col) / len(f) for col in zip(*f.tolist(), strict=True)]
    chosen, total = [], [0.0] * f.shape[1]
    for k in range(1, n + 1):
        best, best_gap = None, None
        for i, row in enumerate(f.tolist()):
            if i in chosen:
                continue
            gap = sum((m - (t + r) / k) ** 2 for m, t, r in zip(mu, total, row, strict=True))
            if best_gap is None or gap < best_gap:
                best, best_gap = i, gap
        chosen.append(best)
        total = [t + r for t, r in zip(total, f[best].tolist(), strict=True)]
    return chosen


def test_herding_matches_its_definition_and_tracks_the_mean(rng):
    f = rng.standard_normal((40, 3))
    chosen = dc.herding(f, 12)
    assert chosen.tolist() == _herding_by_loops(f, 12)
    big = rng.standard_normal((2000, 5))
    mu = big.mean(0)
    herd = dc.herding(big, 50)
    rand = dc.random_selection(2000, 50, seed=0)
    err_herd = np.linalg.norm(big[herd].mean(0) - mu)
    err_rand = np.linalg.norm(big[rand].mean(0) - mu)
    assert err_herd < err_rand / 5  # O(1/k) against O(1/sqrt(k))


@settings(max_examples=30, deadline=None)
@given(
    points=hnp.arrays(np.float64, (9, 2), elements=st.floats(-10, 10, width=32)),
    k=st.integers(1, 4),
    seed=st.integers(0, 100),
)
def test_k_center_greedy_is_a_2_approximation(points, k, seed):
    chosen = dc.k_center_greedy(points, k, seed=seed)
    assert len(set(chosen.tolist())) == k
    best = min(dc.covering_radius(points, np.array(c)) for c in itertools.combinations(range(9), k))
    assert dc.covering_radius(points, chosen) <= 2 * best + 1e-9


def test_k_center_picks_the_farthest_point_next(rng):
    f = rng.standard_normal((50, 4))
    chosen = dc.k_center_greedy(f, 5, seed=1)
    for j in range(1, 5):
        d = np.linalg.norm(f[:, None] - f[None, chosen[:j]], axis=2).min(1)
        assert chosen[j] == np.argmax(d)


def test_el2n_and_loss_selection():
    p = np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8], [0.0, 1.0]])
    y = np.array([0, 0, 0, 1])
    scores = dc.el2n_scores(p, y)
    np.testing.assert_allclose(scores, np.sqrt([0.02, 0.5, 1.28, 0.0]))
    assert dc.loss_selection(scores, 2, "hard").tolist() == [2, 1]
    assert dc.loss_selection(scores, 2, "easy").tolist() == [3, 0]
    with pytest.raises(ValueError, match="keep must be"):
        dc.loss_selection(scores, 2, "medium")
    with pytest.raises(ValueError, match="labels"):
        dc.el2n_scores(p, y[:2])


def test_per_class_balances_the_budget(digits):
    _, y = digits
    idx = dc.per_class(y, 25, lambda i, m: np.arange(m))
    counts = np.bincount(y[idx], minlength=10)
    assert counts.sum() == 25 and counts.max() - counts.min() <= 1
    herd = dc.per_class(y, 20, lambda i, m: dc.herding(np.eye(len(i))[:, :3], m))
    assert np.all(np.bincount(y[herd], minlength=10) == 2)


# ----------------------------------------------------------------------------- sparse codes


def test_omp_equals_sklearn(digits, rng):
    linear_model = pytest.importorskip("sklearn.linear_model")
    X, _ = digits
    D = _unit_rows(rng, 48, X.shape[1])
    ours = dc.omp(X[:100], D, 7, chunk=33)
    ref = linear_model.orthogonal_mp(D.T, X[:100].T, n_nonzero_coefs=7).T
    np.testing.assert_allclose(ours, ref, atol=1e-10)
    assert np.all(np.count_nonzero(ours, axis=1) == 7)


def test_omp_recovers_an_exact_sparse_signal(rng):
    D = _unit_rows(rng, 30, 100)
    codes = np.zeros((5, 30))
    for row in codes:
        row[rng.choice(30, 3, replace=False)] = rng.uniform(1, 2, 3) * rng.choice([-1, 1], 3)
    np.testing.assert_allclose(dc.omp(codes @ D, D, 3), codes, atol=1e-10)


def test_ista_solves_the_lasso_like_sklearn(rng):
    linear_model = pytest.importorskip("sklearn.linear_model")
    D = _unit_rows(rng, 20, 60)
    x = rng.standard_normal((2, 60))
    lam = 0.5
    ours = dc.ista(x, D, lam, n_iter=3000)
    for i in range(2):
        # Lasso minimises 1/(2 P) ||x - D^T c||^2 + alpha ||c||_1: alpha = lam / P
        ref = linear_model.Lasso(alpha=lam / 60, fit_intercept=False, tol=1e-12, max_iter=100000)
        np.testing.assert_allclose(ours[i], ref.fit(D.T, x[i]).coef_, atol=1e-6)
    plain = dc.ista(x, D, lam, n_iter=3000, fista=False)
    np.testing.assert_allclose(plain, ours, atol=1e-4)
    assert np.count_nonzero(dc.ista(x, D, 5.0)) < np.count_nonzero(ours)  # sparser


def test_learned_dictionary_codes_better_than_random_atoms(digits):
    X, _ = digits
    D, errors = dc.learn_dictionary(X[:400], 32, 6, n_iter=5, seed=0)
    np.testing.assert_allclose(np.linalg.norm(D, axis=1), 1.0)
    assert errors[-1] < errors[0]
    rng = np.random.default_rng(0)
    random_atoms = _unit_rows(rng, 32, X.shape[1])
    held_out = X[400:]

    def rel_error(dictionary):
        return np.linalg.norm(held_out - dc.omp(held_out, dictionary, 6) @ dictionary) / (
            np.linalg.norm(held_out)
        )

    assert rel_error(D) < 0.8 * rel_error(random_atoms)


def test_sparse_code_store_bytes_and_reconstruction(digits):
    X, _ = digits
    D, _ = dc.learn_dictionary(X[:300], 40, 8, n_iter=3, seed=1)
    store = dc.SparseCodeStore.encode(X[300:400], D, 8)
    assert store.index.dtype == np.uint8 and store.value.dtype == np.int8
    assert store.code_bytes == 100 * (8 + 8 + 2)
    assert store.dictionary_bytes == 40 * 784 + 2 * 40
    assert store.nbytes == store.code_bytes + store.dictionary_bytes
    exact = dc.omp(X[300:400], D, 8) @ D
    err_store = np.linalg.norm(store.decode() - X[300:400])
    assert err_store < 1.05 * np.linalg.norm(exact - X[300:400])  # int8 costs little


# ----------------------------------------------------------------------------- low bits


@settings(max_examples=60, deadline=None)
@given(data=st.data(), bits=st.sampled_from([1, 2, 4, 8]))
def test_pack_unpack_round_trip_and_size(data, bits):
    n = data.draw(st.integers(0, 50))
    q = np.array(
        data.draw(st.lists(st.integers(0, 2**bits - 1), min_size=n, max_size=n)), dtype=np.uint8
    )
    packed = dc.pack_bits(q, bits)
    assert packed.dtype == np.uint8 and packed.size == -(-n * bits // 8)
    np.testing.assert_array_equal(dc.unpack_bits(packed, bits, n), q)


def test_one_bit_packing_equals_numpy_packbits_and_four_bit_nibbles(rng):
    q = rng.integers(0, 2, 37).astype(np.uint8)
    np.testing.assert_array_equal(dc.pack_bits(q, 1), np.packbits(q))
    assert dc.pack_bits(np.array([0xA, 0x3, 0xF], dtype=np.uint8), 4).tolist() == [0xA3, 0xF0]
    with pytest.raises(ValueError, match=r"values must be in \[0, 15\]"):
        dc.pack_bits(np.array([16]), 4)
    with pytest.raises(ValueError, match="bits must be one of"):
        dc.pack_bits(q, 3)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_low_bit_images_error_bound(digits, bits):
    X, _ = digits
    images = (X[:20] * 255).round().astype(np.uint8).reshape(20, 28, 28)
    store = dc.LowBitImages.encode(images, bits)
    assert store.nbytes == 20 * 784 * bits // 8
    back = store.decode()
    assert back.shape == (20, 28, 28) and back.dtype == np.float32
    assert np.abs(back - images / 255.0).max() <= 0.5 / (2**bits - 1) + 1e-6
