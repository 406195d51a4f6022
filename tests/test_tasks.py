"""The on-device tasks (tinyodl.tasks): samples, the writer shift, cloud data, pretrained models."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyodl import tasks
from tinyodl.data import load_mnist

MNIST_DIR = os.environ.get("TINYODL_MNIST_DIR")
needs_full = pytest.mark.skipif(
    not (MNIST_DIR and os.path.isdir(MNIST_DIR)), reason="full MNIST not available"
)


def test_task_a_is_100_per_class_of_5_to_9_and_tests_on_5_to_9():
    task = tasks.load_task("A")
    assert task.x_train.shape == (500, 1, 28, 28) and task.x_train.dtype == np.float32
    assert np.array_equal(np.bincount(task.y_train, minlength=10)[5:], [100] * 5)
    assert set(np.unique(task.y_test)) == {5, 6, 7, 8, 9}
    assert len(task.y_test) == 1000  # 200 shipped test images per class
    assert task.shift is None and task.classes == (5, 6, 7, 8, 9)
    assert 0.0 <= task.x_train.min() and task.x_train.max() <= 1.0


def test_task_b_is_20_per_class_of_every_digit_under_the_writer_shift():
    task = tasks.load_task("B")
    assert np.array_equal(np.bincount(task.y_train, minlength=10), [20] * 10)
    images, _ = load_mnist("train")
    index = {int(i): k for k, i in enumerate(tasks.shipped_train_index())}
    raw = images[[index[int(i)] for i in task.train_index]]
    expected = tasks.WriterShift()(raw).astype(np.float32)[:, None] / 255
    np.testing.assert_array_equal(task.x_train, expected)
    test_images, _ = load_mnist("test")
    assert not np.allclose(task.x_test[:, 0], test_images / 255)  # the test set is shifted too


def test_samples_are_seeded():
    a0, a0b, a1 = (
        tasks.load_task("A", seed=0),
        tasks.load_task("A", seed=0),
        tasks.load_task("A", seed=1),
    )
    np.testing.assert_array_equal(a0.train_index, a0b.train_index)
    assert len(np.intersect1d(a0.train_index, a1.train_index)) < 100  # mostly different images
    small = tasks.load_task("A", per_class=3, seed=0)
    assert len(small.y_train) == 15


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown task 'C'"):
        tasks.load_task("C")
    with pytest.raises(ValueError, match="class 5 has 1200 images, need 5000"):
        tasks.load_task("A", per_class=5000)
    with pytest.raises(ValueError, match="per_class must be >= 1"):
        tasks.load_task("B", per_class=0)
    with pytest.raises(ValueError, match="WriterShift: expected uint8 images"):
        tasks.WriterShift()(np.zeros((2, 28, 28), dtype=np.float32))


# ----------------------------------------------------------------------------- writer shift


def test_writer_shift_is_deterministic_and_order_independent():
    images, _ = load_mnist("test", subset=40)
    shift = tasks.WriterShift(seed=3)
    out = shift(images)
    np.testing.assert_array_equal(out, tasks.WriterShift(seed=3)(images))
    np.testing.assert_array_equal(shift(images[::-1])[::-1], out)  # no per-position randomness
    np.testing.assert_array_equal(shift(images[5:6])[0], out[5])
    assert not np.array_equal(out, tasks.WriterShift(seed=4)(images))  # another writer


def test_writer_shift_thickens_strokes_and_changes_the_images():
    images, _ = load_mnist("test", subset=40)
    out = tasks.WriterShift()(images)
    assert out.dtype == np.uint8 and out.shape == images.shape
    ink_before = (images > 127).sum(axis=(1, 2))
    ink_after = (out > 127).sum(axis=(1, 2))
    assert np.all(ink_after > 1.3 * ink_before)  # a thicker pen on every image


def _identity_shift(**kw):
    base = {"rotation": 0.0, "shear": 0.0, "elastic_alpha": 0.0, "thickness": 1}
    return tasks.WriterShift(**{**base, **kw})


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_writer_shift_without_distortion_is_the_identity(seed):
    images = np.random.default_rng(seed).integers(0, 256, (3, 12, 12)).astype(np.uint8)
    np.testing.assert_array_equal(_identity_shift(seed=seed)(images), images)


def test_writer_shift_rotation_turns_clockwise_about_the_centre():
    images = np.random.default_rng(0).integers(0, 256, (2, 10, 10)).astype(np.uint8)
    quarter = _identity_shift(rotation=90.0)(images)
    # clockwise by 90 degrees on screen (rows down) is numpy's rot90 with k=-1
    np.testing.assert_array_equal(quarter, np.rot90(images, k=-1, axes=(1, 2)))


def test_writer_shift_thickness_is_a_max_filter():
    image = np.zeros((1, 9, 9), dtype=np.uint8)
    image[0, 4, 4] = 200
    out = _identity_shift(thickness=3)(image)
    assert out[0, 3:6, 3:6].tolist() == [[200] * 3] * 3 and out.sum() == 9 * 200


# ----------------------------------------------------------------------------- cloud data


@needs_full
def test_cloud_data_leaves_out_the_devices_images():
    x, y = tasks.cloud_data("A", MNIST_DIR)
    full_images, full_labels = load_mnist("train", path=MNIST_DIR)
    source = np.isin(full_labels, range(5))
    assert (
        len(y) == source.sum() - np.isin(full_labels[tasks.shipped_train_index()], range(5)).sum()
    )
    assert set(np.unique(y)) == set(range(5))
    kept = np.flatnonzero(source)
    kept = kept[~np.isin(kept, tasks.shipped_train_index())]
    np.testing.assert_array_equal((x[:, 0] * 255).round().astype(np.uint8), full_images[kept])
    xb, _ = tasks.cloud_data("B", MNIST_DIR)
    assert len(xb) == 48_000


@needs_full
def test_task_with_full_mnist_tests_on_the_full_split_and_keeps_the_adaptation_set():
    shipped, full = tasks.load_task("A"), tasks.load_task("A", path=MNIST_DIR)
    np.testing.assert_array_equal(shipped.x_train, full.x_train)
    assert len(full.y_test) == 892 + 958 + 1028 + 974 + 1009  # MNIST test counts of 5..9
    images, _ = load_mnist("train", path=MNIST_DIR)
    np.testing.assert_array_equal(
        images[full.train_index], (full.x_train[:, 0] * 255).round().astype(np.uint8)
    )
