"""Fill a byte budget with training data, by each method of the chapter.

Every method answers the same question: *given B bytes, what training set do I keep?*
The bytes counted are everything the device must store to train again later: the pixels
(or codes), one byte per label, and for the dictionary method the dictionary itself.

===============  ============================================  ===========================
method           keeps                                         bytes
===============  ============================================  ===========================
"random"         random examples, 8-bit pixels                 n (P + 1)
"random-4bit"    random examples, 4-bit packed pixels          n (P/2 + 1)
"random-1bit"    random examples, binarised, 8 pixels a byte   n (P/8 + 1)
"herding"        herding on model features, per class, 8-bit   n (P + 1)
"k-center"       greedy k-center on model features, per class  n (P + 1)
"el2n-easy"      smallest EL2N scores, per class, 8-bit        n (P + 1)
"el2n-hard"      largest EL2N scores, per class, 8-bit         n (P + 1)
"dictionary"     random examples as k-sparse codes (OMP)       A P + 2A + n (2k + 3)
===============  ============================================  ===========================

(P = 784 pixels, A atoms, k non-zeros.) :func:`keep_within_budget` returns the decoded
training set, ready for training, and the bytes it used. Chapter 07 (data compression).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tinyodl.data_compression.dictionary import SparseCodeStore
from tinyodl.data_compression.lowbit import LowBitImages
from tinyodl.data_compression.selection import (
    herding,
    k_center_greedy,
    loss_selection,
    per_class,
    random_selection,
)

METHODS = (
    "random",
    "random-4bit",
    "random-1bit",
    "herding",
    "k-center",
    "el2n-easy",
    "el2n-hard",
    "dictionary",
)
LABEL_BYTES = 1
_BITS = {"random-4bit": 4, "random-1bit": 1}


@dataclass
class Kept:
    """What a method keeps within a budget.

    Attributes
    ----------
    method : str
    x : ndarray float32 (n, 1, H, W)
        The stored examples as the device would read them back (decoded), in [0, 1].
    y : ndarray int64 (n,)
    nbytes : int
        Bytes stored (data, labels and any dictionary).
    indices : ndarray (n,)
        Which pool examples were kept.
    """

    method: str
    x: np.ndarray
    y: np.ndarray
    nbytes: int
    indices: np.ndarray


def bytes_per_example(method: str, pixels: int, n_nonzero: int = 8) -> int:
    """Bytes one stored example costs (label included), dictionary not included."""
    if method not in METHODS:
        raise ValueError(f"bytes_per_example: method must be one of {METHODS}, got {method!r}")
    if method == "dictionary":
        return 2 * n_nonzero + 2 + LABEL_BYTES  # k indices, k int8 values, float16 scale
    return pixels * _BITS.get(method, 8) // 8 + LABEL_BYTES


def keep_within_budget(
    method: str,
    budget: int,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    features: np.ndarray | None = None,
    scores: np.ndarray | None = None,
    dictionary: np.ndarray | None = None,
    n_nonzero: int = 8,
    seed: int = 0,
) -> Kept | None:
    """The training set ``method`` keeps in ``budget`` bytes (None if nothing fits).

    Parameters
    ----------
    method : one of :data:`METHODS`
    budget : int
        Bytes available.
    images : ndarray uint8 (N, H, W)
        The pool the device has seen.
    labels : ndarray (N,)
    features : ndarray (N, F), optional
        Needed by "herding" and "k-center" (e.g. a model's penultimate activations).
    scores : ndarray (N,), optional
        EL2N scores, needed by "el2n-easy" and "el2n-hard".
    dictionary : ndarray (A, P), optional
        Needed by "dictionary"; its int8 copy counts against the budget.
    n_nonzero : int
        Atoms per example for "dictionary".
    seed : int
        For the random choices.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    pixels = int(np.prod(images.shape[1:]))
    fixed = (
        0 if dictionary is None or method != "dictionary" else dictionary.shape[0] * (pixels + 2)
    )
    n = min(len(labels), (budget - fixed) // bytes_per_example(method, pixels, n_nonzero))
    if n < 1:
        return None
    idx = _select(method, n, labels, features, scores, dictionary, seed)
    x, nbytes = _store(method, images[idx], dictionary, n_nonzero)
    return Kept(method, x, labels[idx].astype(np.int64), nbytes + LABEL_BYTES * len(idx), idx)


def _need(value: Any, what: str, method: str) -> Any:
    if value is None:
        raise ValueError(f"keep_within_budget: method {method!r} needs {what}")
    return value


def _select(method, n, labels, features, scores, dictionary, seed) -> np.ndarray:
    if method in ("random", "random-4bit", "random-1bit", "dictionary"):
        if method == "dictionary":
            _need(dictionary, "dictionary=", method)
        rng = np.random.default_rng(seed)
        return per_class(labels, n, lambda idx, m: random_selection(len(idx), m, rng))
    if method == "herding":
        f = _need(features, "features=", method)
        return per_class(labels, n, lambda idx, m: herding(f[idx], m))
    if method == "k-center":
        f = _need(features, "features=", method)
        return per_class(labels, n, lambda idx, m: k_center_greedy(f[idx], m, seed))
    s = _need(scores, "scores=", method)
    keep = "easy" if method == "el2n-easy" else "hard"
    return per_class(labels, n, lambda idx, m: loss_selection(s[idx], m, keep))


def _store(method, images, dictionary, n_nonzero) -> tuple[np.ndarray, int]:
    """Encode the chosen images as the method stores them; decode them back."""
    shape = (len(images), 1, *images.shape[1:])
    if method == "dictionary":
        store = SparseCodeStore.encode(
            images.reshape(len(images), -1) / 255.0, dictionary, n_nonzero
        )
        x = np.clip(store.decode(), 0.0, 1.0).reshape(shape)
        return x.astype(np.float32), store.nbytes
    store = LowBitImages.encode(images, _BITS.get(method, 8))
    return store.decode().reshape(shape), store.nbytes
