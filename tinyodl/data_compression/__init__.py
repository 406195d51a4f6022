"""Data compression: keeping the training data small on the device (chapter 07).

A device that learns from what it sees must keep some of it -- to train in epochs, to
replay old classes, to adapt later -- in a memory measured in kilobytes. At a fixed number
of bytes there are three ways to keep more (or better) training signal:

* **keep fewer, better examples** (:mod:`~tinyodl.data_compression.selection`): herding and
  k-center coresets, and loss-based selection (EL2N), against random subsampling;
* **store each example in fewer bytes, approximately**
  (:mod:`~tinyodl.data_compression.dictionary`): a learned dictionary plus a sparse code
  (OMP or ISTA) of a few atoms per example;
* **store each pixel in fewer bits** (:mod:`~tinyodl.data_compression.lowbit`): 8-bit, 4-bit
  packed, down to 1-bit (binarised) images.

The notebook (``chapters/07_data_compression.py``) and ``tinyodl bench data_compression``
train the same small CNN on what each method keeps at the same byte budget
(:func:`keep_within_budget`) and plot test accuracy against the bytes of stored training
data.
"""

from tinyodl.data_compression.budget import (
    METHODS,
    Kept,
    bytes_per_example,
    keep_within_budget,
)
from tinyodl.data_compression.dictionary import SparseCodeStore, ista, learn_dictionary, omp
from tinyodl.data_compression.lowbit import (
    LowBitImages,
    dequantize,
    pack_bits,
    quantize,
    unpack_bits,
)
from tinyodl.data_compression.selection import (
    covering_radius,
    el2n_scores,
    herding,
    k_center_greedy,
    loss_selection,
    per_class,
    random_selection,
)

__all__ = [
    "METHODS",
    "Kept",
    "bytes_per_example",
    "keep_within_budget",
    "LowBitImages",
    "SparseCodeStore",
    "covering_radius",
    "dequantize",
    "el2n_scores",
    "herding",
    "ista",
    "k_center_greedy",
    "learn_dictionary",
    "loss_selection",
    "omp",
    "pack_bits",
    "per_class",
    "quantize",
    "random_selection",
    "unpack_bits",
]
