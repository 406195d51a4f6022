"""Data for tinyodl: the IDX reader, the shipped MNIST subset, batching and splits.

Chapter 00 (foundations). See ``tinyodl/datasets/README.md`` for the data's provenance and
licence (MNIST by Y. LeCun, C. Cortes, C. J. C. Burges, CC BY-SA 3.0).
"""

from tinyodl.data.batching import BatchSampler, batches, train_val_split
from tinyodl.data.idx import DataFormatError, read_idx, write_idx
from tinyodl.data.mnist import MNIST_MEAN, MNIST_STD, load_mnist, to_float

__all__ = [
    "BatchSampler",
    "DataFormatError",
    "MNIST_MEAN",
    "MNIST_STD",
    "batches",
    "load_mnist",
    "read_idx",
    "to_float",
    "train_val_split",
    "write_idx",
]
