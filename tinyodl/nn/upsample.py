"""Bilinear upsampling (chapter 08: the last step of TinyTL's lite residual branch).

Bilinear interpolation is separable: along each axis, output ``o`` reads the two input
pixels around ``src = (o + 0.5) * in / out - 0.5`` (clamped at 0), weighted by their
distance -- PyTorch's ``interpolate(mode="bilinear", align_corners=False)``. Writing it as
an (out x in) matrix per axis, ``A_h`` and ``A_w``, gives the whole layer as two matrix
products, and its backward as the transposed products::

    y  = A_h  @ x  @ A_w^T          (N, C, H, W) -> (N, C, OH, OW)
    dx = A_h^T @ dy @ A_w

Nothing but the input shape is saved for backward: the layer is linear in ``x``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinyodl._shapes import pair
from tinyodl.nn.layer import Layer
from tinyodl.nn.utils import check_shape


def interpolation_matrix(in_size: int, out_size: int, dtype=np.float64) -> np.ndarray:
    """The (out_size, in_size) matrix of 1-D linear interpolation (half-pixel centres).

    Row ``o`` has weight ``1 - l`` at ``i0 = floor(src)`` and ``l`` at ``min(i0 + 1, in - 1)``
    with ``src = max((o + 0.5) * in_size / out_size - 0.5, 0)`` and ``l = src - i0``.
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"interpolation_matrix: sizes must be positive, got {in_size, out_size}")
    src = np.maximum((np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    frac = src - i0
    a = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    np.add.at(a, (rows, i0), 1.0 - frac)
    np.add.at(a, (rows, i1), frac)
    return a.astype(dtype)


def bilinear_upsample_forward(x: np.ndarray, size: tuple[int, int]):
    """``(N, C, H, W) -> (N, C, OH, OW)``; the cache holds the two matrices and ``x.shape``."""
    a_h = interpolation_matrix(x.shape[2], size[0], x.dtype)
    a_w = interpolation_matrix(x.shape[3], size[1], x.dtype)
    y = np.matmul(np.matmul(a_h, x), a_w.T)
    return y, {"a_h": a_h, "a_w": a_w, "x_shape": x.shape}


def bilinear_upsample_backward(dout: np.ndarray, cache: dict) -> np.ndarray:
    """``dx = A_h^T @ dout @ A_w``."""
    return np.matmul(np.matmul(cache["a_h"].T, dout), cache["a_w"])


class BilinearUpsample(Layer):
    """Resize feature maps to ``size`` by bilinear interpolation (PyTorch's semantics with
    ``align_corners=False``); works for any sizes, up or down.

    Parameters
    ----------
    size : int or (int, int)
        Output height and width.
    dtype : default "float32"
    """

    def __init__(self, size: int | tuple[int, int], dtype: str = "float32") -> None:
        super().__init__(dtype)
        self.size = pair(size, "size")
        if min(self.size) < 1:
            raise ValueError(f"BilinearUpsample: size must be positive, got {self.size}")
        self._cache: dict = {}

    def config(self) -> dict[str, Any]:
        return {"size": self.size, "dtype": self.dtype.name}

    def output_shape(self, input_shape):
        check_shape(self, "input", input_shape, (None, None, None, None), "(N, C, H, W)")
        return (int(input_shape[0]), int(input_shape[1]), *self.size)

    def _forward(self, x, train):
        self.output_shape(x.shape)
        y, self._cache = bilinear_upsample_forward(x, self.size)
        return y

    def _backward(self, dout, per_example):
        return bilinear_upsample_backward(dout, self._cache)
