"""MNIST loading: the shipped stratified subset or a full copy of the database.

tinyodl ships 12,000 training and 2,000 test images of MNIST (1,200 / 200 per class) inside
the package (``tinyodl/datasets``), so every lab works offline. The full database (60,000 /
10,000 images) is read from a local folder: ``load_mnist(split, path=FOLDER)``, or
``load_mnist(split, full=True)`` with the folder in the ``TINYODL_MNIST_DIR`` environment
variable. Nothing is downloaded.

MNIST: Y. LeCun, C. Cortes, C. J. C. Burges, licence CC BY-SA 3.0. Chapter 00 (foundations).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tinyodl.data.idx import DataFormatError, read_idx

__all__ = [
    "ENV_VAR",
    "MNIST_MEAN",
    "MNIST_STD",
    "SUBSET_PREFIX",
    "load_mnist",
    "mnist_files",
    "shipped_dir",
    "to_float",
]

#: Environment variable naming a folder that holds the full MNIST IDX files.
ENV_VAR = "TINYODL_MNIST_DIR"
#: File-name prefix of the shipped subset (``mnist-subset-train-images-idx3-ubyte.gz``, ...).
SUBSET_PREFIX = "mnist-subset-"
#: Mean and standard deviation of the full MNIST training pixels scaled to [0, 1].
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

_SPLITS = {"train": "train", "test": "t10k"}
_N_CLASSES = 10


def mnist_files(split: str) -> tuple[str, str]:
    """Return the standard (images, labels) file names of ``split`` ("train" or "test")."""
    if split not in _SPLITS:
        raise ValueError(f"mnist_files: split must be 'train' or 'test', got {split!r}")
    stem = _SPLITS[split]
    return f"{stem}-images-idx3-ubyte.gz", f"{stem}-labels-idx1-ubyte.gz"


def shipped_dir() -> Path:
    """Folder of the data files shipped inside the package (``tinyodl/datasets``)."""
    return Path(__file__).resolve().parent.parent / "datasets"


def _find(folder: Path, name: str) -> Path:
    """Find ``name`` in ``folder``, also accepting the uncompressed file."""
    for candidate in (name, name.removesuffix(".gz")):
        if (folder / candidate).is_file():
            return folder / candidate
    raise DataFormatError(f"load_mnist: {folder}: missing {name} (or its uncompressed form)")


def _check(images: np.ndarray, labels: np.ndarray, source: str, full: bool) -> None:
    """Sanity checks: shapes, dtypes, label range and class balance."""
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise DataFormatError(
            f"load_mnist: {source}: expected uint8 images (N, 28, 28), got "
            f"{images.dtype} {images.shape}"
        )
    if labels.shape != (images.shape[0],) or labels.dtype != np.uint8:
        raise DataFormatError(
            f"load_mnist: {source}: expected {images.shape[0]} uint8 labels, got "
            f"{labels.dtype} {labels.shape}"
        )
    if labels.size and labels.max() >= _N_CLASSES:
        raise DataFormatError(f"load_mnist: {source}: label {labels.max()} outside 0..9")
    counts = np.bincount(labels, minlength=_N_CLASSES)
    # Every MNIST class holds between 8.9% and 11.4% of a split; allow some slack.
    share = counts / max(labels.size, 1)
    if full and (share.min() < 0.05 or share.max() > 0.15):
        raise DataFormatError(
            f"load_mnist: {source}: implausible label counts {counts.tolist()} for MNIST"
        )


def _stratified_head(labels: np.ndarray, n: int) -> np.ndarray:
    """Indices of the first ``n // 10`` examples of each class (remainder to low classes)."""
    if not 0 < n <= labels.size:
        raise ValueError(f"load_mnist: subset must be in 1..{labels.size}, got {n}")
    per_class = np.full(_N_CLASSES, n // _N_CLASSES)
    per_class[: n % _N_CLASSES] += 1
    chosen = [np.flatnonzero(labels == c)[: per_class[c]] for c in range(_N_CLASSES)]
    if sum(len(c) for c in chosen) < n:
        raise ValueError(f"load_mnist: not enough examples per class for subset={n}")
    return np.sort(np.concatenate(chosen))


def load_mnist(
    split: str = "train",
    path: str | os.PathLike | None = None,
    subset: int | None = None,
    full: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Load MNIST images and labels.

    Parameters
    ----------
    split : {"train", "test"}
        Which split to load.
    path : str or path-like, optional
        Folder holding the full MNIST IDX files (``train-images-idx3-ubyte.gz``, ...).
        Without it (and without ``full``) the subset shipped with tinyodl is loaded
        (12,000 train / 2,000 test images): the default everywhere, so that everything
        runs offline.
    subset : int, optional
        Keep only ``subset`` examples: the first ``subset // 10`` of each class in file
        order (deterministic and class-balanced), for quick experiments.
    full : bool, default False
        Load the full MNIST from ``path`` or, when ``path`` is not given, from the folder
        named by the ``TINYODL_MNIST_DIR`` environment variable.

    Returns
    -------
    images : ndarray of uint8, shape (N, 28, 28)
        Pixel intensities 0..255 (0 = background).
    labels : ndarray of uint8, shape (N,)
        Digit classes 0..9.
    """
    image_name, label_name = mnist_files(split)
    if full and path is None:
        path = os.environ.get(ENV_VAR)
        if not path:
            raise DataFormatError(f"load_mnist: full=True needs path= or ${ENV_VAR}")
    if path is None:
        folder, prefix, full = shipped_dir(), SUBSET_PREFIX, False
    else:
        folder, prefix, full = Path(path), "", True
        if not folder.is_dir():
            raise DataFormatError(f"load_mnist: {folder}: not a folder (path= or ${ENV_VAR})")
    images = read_idx(_find(folder, prefix + image_name))
    labels = read_idx(_find(folder, prefix + label_name))
    if labels.shape[:1] != images.shape[:1]:
        raise DataFormatError(
            f"load_mnist: {folder}: {images.shape[0]} images but {labels.shape[0]} labels"
        )
    _check(images, labels, str(folder), full)
    if subset is not None:
        keep = _stratified_head(labels, int(subset))
        images, labels = images[keep], labels[keep]
    return images, labels


def to_float(images: np.ndarray, mean: float | None = None, std: float | None = None) -> np.ndarray:
    """Scale uint8 images to float32 in [0, 1], NCHW, optionally standardised.

    Parameters
    ----------
    images : ndarray, shape (N, H, W) or (N, C, H, W)
        uint8 pixels 0..255 (other dtypes are taken as already in [0, 1]).
    mean, std : float, optional
        When given, return ``(x - mean) / std`` (e.g. :data:`MNIST_MEAN`, :data:`MNIST_STD`).

    Returns
    -------
    ndarray of float32, shape (N, 1, H, W) or (N, C, H, W)
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise ValueError(f"to_float: expected images (N, H, W) or (N, C, H, W), got {images.shape}")
    x = images.astype(np.float32)
    if images.dtype == np.uint8:
        x /= np.float32(255.0)
    if (mean is None) != (std is None):
        raise ValueError("to_float: give both mean and std, or neither")
    if mean is not None:
        if std <= 0:
            raise ValueError(f"to_float: std must be positive, got {std}")
        x = (x - np.float32(mean)) / np.float32(std)
    return x
