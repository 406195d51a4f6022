"""Build the stratified MNIST subset shipped in ``tinyodl/datasets`` (reproducibly).

``scripts/make_mnist_subset.py`` is the command-line front end. Given the same full MNIST
files, :func:`build_subset` always writes byte-identical files: the choice uses a fixed
seed and the gzip streams carry no time stamp. Chapter 00 (foundations).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from tinyodl.data.idx import read_idx, write_idx
from tinyodl.data.mnist import SUBSET_PREFIX, mnist_files

__all__ = ["SUBSET_SEED", "SUBSET_SIZES", "build_subset", "sha256_file", "stratified_indices"]

#: Examples per class in the shipped subset.
SUBSET_SIZES = {"train": 1200, "test": 200}
#: Seed of the random choice of the shipped subset.
SUBSET_SEED = 20240601
COMMAND = "python scripts/make_mnist_subset.py ../shared/data/mnist"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def stratified_indices(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Choose ``per_class`` random examples of every class, returned in file order.

    Parameters
    ----------
    labels : ndarray of int, shape (N,)
    per_class : int
    rng : numpy.random.Generator

    Returns
    -------
    ndarray of int64, shape (n_classes * per_class,), sorted
    """
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise ValueError(
                f"stratified_indices: class {c} has {len(members)} examples, need {per_class}"
            )
        chosen.append(rng.choice(members, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _readme(hashes: dict[str, str]) -> str:
    rows = "\n".join(f"| {name} | {digest} |" for name, digest in sorted(hashes.items()))
    return f"""# Shipped MNIST subset

A stratified random subset of the MNIST database of handwritten digits, shipped so that
tinyodl works offline: {SUBSET_SIZES["train"]} training images per class
({10 * SUBSET_SIZES["train"]} in total) drawn from the 60,000 MNIST training images and
{SUBSET_SIZES["test"]} test images per class ({10 * SUBSET_SIZES["test"]}) drawn from the 10,000
test images. Images are 28x28 uint8, labels uint8, in the original IDX format, gzip-compressed.
The `*-indices-*` files hold the positions (int32) of the chosen examples in the full files;
within each split the examples keep their original order.

## Licence and credit

MNIST is by Yann LeCun, Corinna Cortes and Christopher J. C. Burges
(http://yann.lecun.com/exdb/mnist/) and is licensed under the Creative Commons
Attribution-Share Alike 3.0 licence (CC BY-SA 3.0). This subset is a derived work under the
same licence. Credit the authors wherever you redistribute it.

## How it was made

From the project root, with the full MNIST IDX files in `../shared/data/mnist`:

    {COMMAND}

The choice is `numpy.random.default_rng({SUBSET_SEED})`, then for each class 0..9 in turn
`rng.choice(<indices of that class>, size=<per class>, replace=False)`, training split first;
the gzip streams have no file name and mtime 0, so the output is byte-reproducible
(`tests/test_data_subset.py` checks this when the full data are available).

## sha256 of the shipped files

| file | sha256 |
|---|---|
{rows}
"""


def build_subset(source: str | os.PathLike, dest: str | os.PathLike) -> dict[str, str]:
    """Write the stratified subset of the MNIST files in ``source`` into ``dest``.

    Parameters
    ----------
    source : path-like
        Folder with the full MNIST ``*-ubyte.gz`` files.
    dest : path-like
        Output folder (created if needed); receives ``mnist-subset-*.gz`` and ``README.md``.

    Returns
    -------
    dict
        File name -> sha256 of each written data file.
    """
    source, dest = Path(source), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SUBSET_SEED)
    hashes = {}
    for split in ("train", "test"):
        image_name, label_name = mnist_files(split)
        images, labels = read_idx(source / image_name), read_idx(source / label_name)
        keep = stratified_indices(labels, SUBSET_SIZES[split], rng)
        index_name = image_name.replace("images-idx3-ubyte", "indices-idx1-int")
        outputs = {image_name: images[keep], label_name: labels[keep], index_name: keep}
        for name, array in outputs.items():
            if array.dtype == np.int64:
                array = array.astype(np.int32)
            target = dest / (SUBSET_PREFIX + name)
            write_idx(target, array)
            hashes[target.name] = sha256_file(target)
    (dest / "README.md").write_text(_readme(hashes), encoding="utf-8")
    return hashes
