"""MNIST loading, scaling, splits, batches and the resumable sampler."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyodl.data import (
    BatchSampler,
    DataFormatError,
    batches,
    load_mnist,
    to_float,
    train_val_split,
    write_idx,
)
from tinyodl.data.mnist import ENV_VAR, mnist_files


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


def _fake_full_mnist(folder, split="train", n_per_class=30, seed=0):
    """A folder laid out like full MNIST, with random pixels and balanced labels."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(10, dtype=np.uint8), n_per_class))
    images = rng.integers(0, 256, (labels.size, 28, 28), dtype=np.uint8)
    image_name, label_name = mnist_files(split)
    write_idx(folder / image_name, images)
    write_idx(folder / label_name, labels)
    return images, labels


@pytest.mark.parametrize(("split", "per_class"), [("train", 1200), ("test", 200)])
def test_shipped_subset(split, per_class):
    images, labels = load_mnist(split)
    assert images.shape == (10 * per_class, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10 * per_class,) and labels.dtype == np.uint8
    assert np.bincount(labels).tolist() == [per_class] * 10
    # Real digits: dark background, some ink in every image.
    assert np.median(images) == 0
    assert (images.max(axis=(1, 2)) > 128).all()


def test_subset_argument_is_balanced_and_deterministic():
    images, labels = load_mnist("test", subset=55)
    assert len(labels) == 55
    assert np.bincount(labels, minlength=10).tolist() == [6] * 5 + [5] * 5
    images2, labels2 = load_mnist("test", subset=55)
    np.testing.assert_array_equal(images, images2)
    with pytest.raises(ValueError, match="subset"):
        load_mnist("test", subset=0)


def test_path_and_env_var(tmp_path, monkeypatch):
    images, labels = _fake_full_mnist(tmp_path, "test")
    got_images, got_labels = load_mnist("test", path=tmp_path)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    np.testing.assert_array_equal(load_mnist("test", full=True)[1], labels)
    # the variable says where the full MNIST is; it does not change the default
    assert len(load_mnist("test")[1]) == 2000


def test_full_without_a_folder_is_a_clear_error():
    with pytest.raises(DataFormatError, match="full=True needs path= or \\$TINYODL_MNIST_DIR"):
        load_mnist("test", full=True)


def test_missing_folder_and_file(tmp_path):
    with pytest.raises(DataFormatError, match="not a folder"):
        load_mnist("train", path=tmp_path / "absent")
    _fake_full_mnist(tmp_path, "test")
    with pytest.raises(DataFormatError, match="missing train-images"):
        load_mnist("train", path=tmp_path)


def test_implausible_labels_are_refused(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((20, 28, 28), np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(20, np.uint8))
    with pytest.raises(DataFormatError, match="implausible label counts"):
        load_mnist("test", path=tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(20, 12, np.uint8))
    with pytest.raises(DataFormatError, match="label 12 outside"):
        load_mnist("test", path=tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(19, np.uint8))
    with pytest.raises(DataFormatError, match="20 images but 19 labels"):
        load_mnist("test", path=tmp_path)


def test_bad_split():
    with pytest.raises(ValueError, match="'train' or 'test'"):
        load_mnist("validation")


def test_to_float():
    images = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)
    x = to_float(images)
    assert x.shape == (1, 1, 2, 2) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, 0], [[0.0, 1.0], [0.2, 0.4]], rtol=1e-6)
    z = to_float(images, mean=0.5, std=0.25)
    np.testing.assert_allclose(z, (x - 0.5) / 0.25, rtol=1e-6)
    with pytest.raises(ValueError, match="both mean and std"):
        to_float(images, mean=0.5)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        to_float(np.zeros(5, np.uint8))


@settings(max_examples=25, deadline=None)
@given(
    counts=st.lists(st.integers(4, 40), min_size=2, max_size=5),
    fraction=st.floats(0.1, 0.6),
    seed=st.integers(0, 2**31),
)
def test_train_val_split_is_a_stratified_partition(counts, fraction, seed):
    y = np.repeat(np.arange(len(counts)), counts)
    x = np.arange(len(y)) * 10
    x_tr, y_tr, x_va, y_va = train_val_split(x, y, fraction, seed)
    # a partition of the examples, pairs kept together, original order kept
    assert sorted(np.concatenate([x_tr, x_va]).tolist()) == x.tolist()
    np.testing.assert_array_equal(y[x_tr // 10], y_tr)
    np.testing.assert_array_equal(y[x_va // 10], y_va)
    assert (np.diff(x_tr) > 0).all() and (np.diff(x_va) > 0).all()
    for c, n_c in enumerate(counts):
        assert (y_va == c).sum() == round(fraction * n_c)
    again = train_val_split(x, y, fraction, np.random.default_rng(seed))
    np.testing.assert_array_equal(again[2], x_va)


def test_train_val_split_errors():
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(np.zeros(4), np.zeros(4), 1.0, 0)
    with pytest.raises(ValueError, match="4 examples but y has 3"):
        train_val_split(np.zeros(4), np.zeros(3), 0.5, 0)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 50), batch_size=st.integers(1, 20), drop_last=st.booleans())
def test_batches_cover_each_example_once(n, batch_size, drop_last):
    x = np.arange(n)
    got = list(batches(x, -x, batch_size, rng=3, drop_last=drop_last))
    sizes = [len(xb) for xb, _ in got]
    if drop_last:
        assert sizes == [batch_size] * (n // batch_size)
    else:
        assert sum(sizes) == n and all(s == batch_size for s in sizes[:-1])
    seen = np.concatenate([xb for xb, _ in got]) if got else np.array([], int)
    assert len(set(seen.tolist())) == len(seen)
    for xb, yb in got:
        np.testing.assert_array_equal(yb, -xb)


def test_batches_seeded_and_unshuffled():
    x = np.arange(30)
    a = [xb for xb, _ in batches(x, x, 7, rng=1)]
    b = [xb for xb, _ in batches(x, x, 7, rng=np.random.default_rng(1))]
    c = [xb for xb, _ in batches(x, x, 7, rng=2)]
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    assert not all(np.array_equal(u, v) for u, v in zip(a, c, strict=True))
    plain = np.concatenate([xb for xb, _ in batches(x, x, 7, shuffle=False)])
    np.testing.assert_array_equal(plain, x)
    with pytest.raises(ValueError, match="seed or a numpy Generator"):
        next(batches(x, x, 7))


def _drain(sampler, epochs):
    out = []
    for _ in range(epochs):
        out.append([b.copy() for b in sampler])
    return out


def test_sampler_epochs_are_permutations_and_differ():
    sampler = BatchSampler(23, 5, seed=4)
    assert len(sampler) == 5
    epochs = _drain(sampler, 3)
    orders = [np.concatenate(e) for e in epochs]
    for order in orders:
        assert sorted(order.tolist()) == list(range(23))
    assert not np.array_equal(orders[0], orders[1])
    assert sampler.epoch == 3 and sampler.position == 0
    assert BatchSampler(23, 5, seed=4, drop_last=True).__len__() == 4


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 40),
    batch_size=st.integers(1, 9),
    stop=st.integers(0, 30),
    drop_last=st.booleans(),
)
def test_sampler_resumes_exactly(n, batch_size, stop, drop_last):
    """Stop after `stop` batches, save the state, restore it in a new sampler: the rest of
    the batch sequence is the same as in an uninterrupted run."""
    if drop_last and n < batch_size:
        return
    reference = [
        b for e in _drain(BatchSampler(n, batch_size, 9, drop_last=drop_last), 3) for b in e
    ]
    first = BatchSampler(n, batch_size, 9, drop_last=drop_last)
    taken = []
    while len(taken) < min(stop, len(reference)):
        for b in first:
            taken.append(b)
            if len(taken) == stop:
                break
    state = first.state_dict()
    second = BatchSampler(n, batch_size, 0)
    second.load_state_dict(state)
    rest = []
    while second.epoch < 3:
        rest.extend(second)
    combined = taken + rest
    assert len(combined) == len(reference)
    for a, b in zip(combined, reference, strict=True):
        np.testing.assert_array_equal(a, b)


def test_sampler_state_mismatch():
    state = BatchSampler(10, 3, 0).state_dict()
    with pytest.raises(ValueError, match="batch_size=3"):
        BatchSampler(10, 4, 0).load_state_dict(state)
