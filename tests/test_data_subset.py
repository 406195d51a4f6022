"""The MNIST subset shipped in tinyodl/datasets: integrity, provenance, reproducibility."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import pytest

from tinyodl.data import read_idx
from tinyodl.data.mnist import ENV_VAR, SUBSET_PREFIX, mnist_files, shipped_dir

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = shipped_dir()
README = SHIPPED / "README.md"


def _full_mnist_dir() -> Path | None:
    candidate = Path(os.environ.get(ENV_VAR) or ROOT.parent / "shared" / "data" / "mnist")
    return candidate if (candidate / mnist_files("train")[0]).is_file() else None


needs_full = pytest.mark.skipif(_full_mnist_dir() is None, reason="full MNIST not available")


def _readme_hashes() -> dict[str, str]:
    rows = re.findall(r"^\| (\S+\.gz) \| ([0-9a-f]{64}) \|$", README.read_text(), re.MULTILINE)
    return dict(rows)


def test_shipped_files_match_readme_hashes():
    hashes = _readme_hashes()
    shipped = sorted(p.name for p in SHIPPED.glob("*.gz"))
    assert sorted(hashes) == shipped and len(shipped) == 6
    for name, digest in hashes.items():
        assert hashlib.sha256((SHIPPED / name).read_bytes()).hexdigest() == digest, name


def test_readme_credits_the_authors_and_licence():
    text = README.read_text()
    for needed in ("LeCun", "Cortes", "Burges", "CC BY-SA 3.0", "make_mnist_subset.py"):
        assert needed in text


def test_shipped_size_is_small():
    total = sum(p.stat().st_size for p in SHIPPED.glob("*.gz"))
    assert total < 4_000_000


@needs_full
def test_builder_reproduces_shipped_files(tmp_path):
    from tinyodl.data.subset import build_subset

    hashes = build_subset(_full_mnist_dir(), tmp_path)
    assert hashes == _readme_hashes()
    for name in hashes:
        assert (tmp_path / name).read_bytes() == (SHIPPED / name).read_bytes(), name
    assert (tmp_path / "README.md").read_text() == README.read_text()


@needs_full
@pytest.mark.parametrize("split", ["train", "test"])
def test_every_shipped_image_is_in_mnist_with_its_label(split):
    image_name, label_name = mnist_files(split)
    full_images = read_idx(_full_mnist_dir() / image_name)
    full_labels = read_idx(_full_mnist_dir() / label_name)
    labels_of = {}
    for image, label in zip(full_images, full_labels, strict=True):
        labels_of.setdefault(image.tobytes(), set()).add(int(label))
    images = read_idx(SHIPPED / (SUBSET_PREFIX + image_name))
    labels = read_idx(SHIPPED / (SUBSET_PREFIX + label_name))
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        assert int(label) in labels_of.get(image.tobytes(), set()), f"{split} example {i}"
    # the recorded source positions point at the same examples
    stem = image_name.replace("images-idx3-ubyte", "indices-idx1-int")
    index = read_idx(SHIPPED / (SUBSET_PREFIX + stem))
    assert len(np.unique(index)) == len(index)
    np.testing.assert_array_equal(full_images[index], images)
    np.testing.assert_array_equal(full_labels[index], labels)
