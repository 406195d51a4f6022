"""MNIST for the chapter benchmarks (01 classic, 02 pruning, 07 data compression).

The shipped subset by default (12,000 / 2,000 images), full MNIST from ``--data FOLDER``;
``--quick`` takes a class-balanced slice of the training set. Pixels are scaled to [0, 1]
(``tinyodl.data.to_float``) so that every method sees the same inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def add_data_argument(parser: Any) -> None:
    """``--data FOLDER``: full MNIST instead of the shipped subset."""
    parser.add_argument(
        "--data", default=None, help="folder with the full MNIST files (default: shipped subset)"
    )


def balanced_slice(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of ``n`` examples, as equal a share of each class as possible, shuffled."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per = int(np.ceil(n / len(classes)))
    idx = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per] for c in classes])
    return rng.permutation(idx)[:n]


def load(data: str | None, n_train: int | None, seed: int) -> dict[str, Any]:
    """Train/validation/test arrays.

    Returns
    -------
    dict
        ``images`` uint8 (N, 28, 28) and ``labels`` (training pool, N = n_train or all),
        ``x``/``y`` the same as float32 (N, 1, 28, 28) in [0, 1], ``x_test``/``y_test``,
        and ``source`` (a description for the JSON).
    """
    from tinyodl.data import load_mnist, to_float

    images, labels = load_mnist("train", path=data)
    test_images, test_labels = load_mnist("test", path=data)
    if n_train is not None and n_train < len(labels):
        idx = balanced_slice(labels, n_train, seed)
        images, labels = images[idx], labels[idx]
    return {
        "images": images,
        "labels": labels.astype(np.int64),
        "x": to_float(images),
        "y": labels.astype(np.int64),
        "test_images": test_images,
        "x_test": to_float(test_images),
        "y_test": test_labels.astype(np.int64),
        "source": data or "shipped subset",
    }
