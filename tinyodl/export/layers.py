"""The one layer ONNX import needs that ``tinyodl.nn`` does not have: a zero-padding layer.

Convolutions pad natively, also asymmetrically (``nn.Conv2d(padding=(top, bottom, left,
right))``), and :func:`tinyodl.export.from_onnx` folds an ONNX ``Pad`` into the ``Conv``
it feeds (PyTorch's ``ZeroPad2d`` + conv). A ``Pad`` before anything else becomes this
layer, which ``to_onnx`` writes back as ``Pad``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinyodl.nn import Layer
from tinyodl.nn.utils import check_shape


class Pad2d(Layer):
    """Zero padding of an NCHW tensor by ``pads = (top, bottom, left, right)``.

    Forward ``np.pad`` with zeros; backward crops the border off the gradient. Saves only
    the input shape.
    """

    def __init__(self, pads: tuple[int, int, int, int], dtype: str = "float32") -> None:
        super().__init__(dtype)
        pads = tuple(int(p) for p in pads)
        if len(pads) != 4 or min(pads) < 0:
            raise ValueError(f"Pad2d: pads must be 4 non-negative ints, got {pads}")
        self.pads = pads

    def config(self) -> dict[str, Any]:
        return {"pads": list(self.pads), "dtype": self.dtype.name}

    def output_shape(self, input_shape):
        check_shape(self, "input", input_shape, (None, None, None, None), "(N, C, H, W)")
        t, b, left, r = self.pads
        n, c, h, w = (int(s) for s in input_shape)
        return (n, c, h + t + b, w + left + r)

    def _forward(self, x, train):
        self.output_shape(x.shape)
        t, b, left, r = self.pads
        return np.pad(x, ((0, 0), (0, 0), (t, b), (left, r)))

    def _backward(self, dout, per_example):
        t, b, left, r = self.pads
        h, w = dout.shape[2], dout.shape[3]
        return np.ascontiguousarray(dout[:, :, t : h - b, left : w - r])
