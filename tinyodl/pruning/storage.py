"""Storing a sparse weight tensor: dense, bitmask, or compressed sparse rows (CSR).

A pruned tensor with ``n`` entries, ``nnz`` of them non-zero, values of ``b`` bytes:

==========  =========================================  ==========================================
format      what is stored                             bytes
==========  =========================================  ==========================================
dense       every value                                ``n b``
bitmask     1 bit per entry (kept or not) + the        ``ceil(n / 8) + nnz b``
            non-zero values in row-major order
CSR         the non-zero values, the column of each,   ``nnz (b + i) + (rows + 1) p``
            and where each row starts (``rows + 1``)
==========  =========================================  ==========================================

``i`` and ``p`` are the smallest unsigned integer widths that hold a column index and
``nnz`` (1, 2 or 4 bytes). So a bitmask beats dense storage once more than ``1 / (8 b)`` of
the weights are pruned (3% for float32), and CSR beats the bitmask only when the density is
below about ``1 / (8 i)`` (6% with 2-byte column indices): at 90% sparsity a bitmask is the
smaller of the two for most layers (CSR, with its row pointers, is what sparse matrix
kernels want). A conv weight (F, C, KH, KW) is stored as the matrix (F, C*KH*KW).
Chapter 02 (pruning); Han et al. (ICLR 2016, "Deep compression") for the idea of
relative indices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def smallest_uint(max_value: int) -> np.dtype:
    """The narrowest of uint8/uint16/uint32 that holds ``max_value``."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if max_value <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"smallest_uint: {max_value} does not fit in 32 bits")


@dataclass
class BitmaskTensor:
    """A sparse tensor as a packed bitmask of the non-zeros plus their values.

    Attributes
    ----------
    shape : tuple
    bits : ndarray of uint8, shape (ceil(n / 8),)
        ``np.packbits`` of the flat mask ``w != 0`` (first entry in the highest bit).
    values : ndarray (nnz,)
        The non-zero values in row-major order.
    """

    shape: tuple[int, ...]
    bits: np.ndarray
    values: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.bits.nbytes + self.values.nbytes)

    def to_dense(self) -> np.ndarray:
        n = int(np.prod(self.shape))
        mask = np.unpackbits(self.bits, count=n).astype(bool)
        out = np.zeros(n, dtype=self.values.dtype)
        out[mask] = self.values
        return out.reshape(self.shape)


@dataclass
class CSRTensor:
    """A sparse tensor as compressed sparse rows of its (shape[0], rest) matrix view.

    Attributes
    ----------
    shape : tuple
    values : ndarray (nnz,)
    col_index : ndarray (nnz,) of the smallest unsigned dtype that holds a column
    row_ptr : ndarray (rows + 1,)
        Row ``r`` holds ``values[row_ptr[r]:row_ptr[r + 1]]`` (the same as SciPy's
        ``indptr``).
    """

    shape: tuple[int, ...]
    values: np.ndarray
    col_index: np.ndarray
    row_ptr: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes + self.col_index.nbytes + self.row_ptr.nbytes)

    def to_dense(self) -> np.ndarray:
        rows = self.shape[0]
        cols = int(np.prod(self.shape[1:])) if len(self.shape) > 1 else 1
        out = np.zeros((rows, cols), dtype=self.values.dtype)
        row_of = np.repeat(np.arange(rows), np.diff(self.row_ptr.astype(np.int64)))
        out[row_of, self.col_index.astype(np.int64)] = self.values
        return out.reshape(self.shape)


def to_bitmask(w: np.ndarray) -> BitmaskTensor:
    """Store ``w`` as a bitmask of its non-zeros and their values."""
    w = np.asarray(w)
    mask = (w != 0).ravel()
    return BitmaskTensor(tuple(w.shape), np.packbits(mask), w.ravel()[mask].copy())


def to_csr(w: np.ndarray) -> CSRTensor:
    """Store ``w`` (1-D is one row; N-D is viewed as (shape[0], rest)) in CSR form."""
    w = np.asarray(w)
    matrix = w.reshape(w.shape[0], -1) if w.ndim > 1 else w.reshape(1, -1)
    rows, cols = np.nonzero(matrix)  # row-major order
    counts = np.bincount(rows, minlength=matrix.shape[0])
    row_ptr = np.concatenate([[0], np.cumsum(counts)])
    return CSRTensor(
        tuple(w.shape) if w.ndim > 1 else (1, w.shape[0]),
        matrix[rows, cols].copy(),
        cols.astype(smallest_uint(max(matrix.shape[1] - 1, 0))),
        row_ptr.astype(smallest_uint(int(row_ptr[-1]))),
    )


def storage_bytes(w: np.ndarray) -> dict[str, int]:
    """Bytes of ``w`` stored dense, as a bitmask and as CSR."""
    w = np.asarray(w)
    return {"dense": int(w.nbytes), "bitmask": to_bitmask(w).nbytes, "csr": to_csr(w).nbytes}


def model_storage(model: Any) -> list[dict[str, Any]]:
    """Per prunable weight (:func:`~tinyodl.pruning.prunable_weights`): its sparsity and
    its bytes in each format; a last row ``"total"`` sums them (biases and other
    parameters are not included)."""
    from tinyodl.pruning.magnitude import prunable_weights

    rows = []
    for name, p in prunable_weights(model).items():
        rows.append(
            {
                "name": name,
                "sparsity": 1 - np.count_nonzero(p.data) / p.size,
                **storage_bytes(p.data),
            }
        )
    total = {k: sum(r[k] for r in rows) for k in ("dense", "bitmask", "csr")}
    n = sum(p.size for p in prunable_weights(model).values())
    zeros = sum(p.size - np.count_nonzero(p.data) for p in prunable_weights(model).values())
    rows.append({"name": "total", "sparsity": zeros / max(n, 1), **total})
    return rows
