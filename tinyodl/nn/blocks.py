"""Residual building blocks: ``Add`` and MobileNetV2's ``InvertedResidual`` (chapter 00).

* :class:`Add` computes ``body(x) + shortcut(x)`` (identity shortcut by default). Its
  backward adds the two input gradients; the skip itself saves nothing.
* :class:`InvertedResidual` (Sandler et al. 2018, used by MCUNet): 1x1 expansion + BN +
  ReLU6, depthwise kxk + BN + ReLU6, 1x1 linear projection + BN, and ``+ x`` when the stride
  is 1 and the input and output channels agree.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinyodl.nn.container import LayerLike, Sequential, build_layer, layer_spec
from tinyodl.nn.conv_layers import Conv2d, DepthwiseConv2d
from tinyodl.nn.errors import LayerShapeError
from tinyodl.nn.layer import Layer
from tinyodl.nn.layers import ReLU6
from tinyodl.nn.norm import BatchNorm2d
from tinyodl.nn.state import describe_row
from tinyodl.nn.utils import SeedLike, as_generator, join_name, layer_label


class Add(Layer):
    """Residual sum ``y = body(x) + shortcut(x)``; ``shortcut=None`` is the identity.

    Parameters
    ----------
    body : Layer (or spec)
    shortcut : Layer (or spec), optional
        E.g. TinyTL's lite residual branch; its output must have the body's shape.
    """

    def __init__(self, body: LayerLike, shortcut: LayerLike | None = None) -> None:
        body = build_layer(body)
        super().__init__(body.dtype)
        self.body = body
        self.shortcut = None if shortcut is None else build_layer(shortcut)
        for local, child in self.children().items():
            self._adopt(local, child)

    def children(self) -> dict[str, Layer]:
        kids = {"body": self.body}
        if self.shortcut is not None:
            kids["shortcut"] = self.shortcut
        return kids

    def config(self) -> dict[str, Any]:
        short = None if self.shortcut is None else layer_spec(self.shortcut)
        return {"body": layer_spec(self.body), "shortcut": short}

    def output_shape(self, input_shape):
        out = self.body.output_shape(input_shape)
        short = (
            tuple(input_shape) if self.shortcut is None else self.shortcut.output_shape(input_shape)
        )
        if tuple(out) != tuple(short):
            raise LayerShapeError(
                f"{layer_label(self)}: body output {tuple(out)} and shortcut output "
                f"{tuple(short)} must have the same shape"
            )
        return tuple(out)

    def _forward(self, x, train):
        y = self.body.forward(x, self._requested_train)  # None: children follow their mode
        s = x if self.shortcut is None else self.shortcut.forward(x, self._requested_train)
        if y.shape != s.shape:
            self.output_shape(x.shape)  # raises the shape error
        return y + s

    def _backward(self, dout, per_example):
        dx = self.body.backward(dout, per_example)
        if self.shortcut is None:
            return dx + dout
        return dx + self.shortcut.backward(dout, per_example)

    def _describe(self, name, in_shape, rows):
        index = len(rows)
        if name:
            rows.append({})
        out = self.output_shape(in_shape)
        for local, child in self.children().items():
            child._describe(join_name(name, local), in_shape, rows)
        if name:
            rows[index] = describe_row(self, name, in_shape, out)
        return out


class InvertedResidual(Sequential):
    """MobileNetV2 inverted residual block (also MCUNet's building block).

    Parameters
    ----------
    in_channels, out_channels : int
    stride : int, default 1
        Stride of the depthwise convolution.
    expand_ratio : int, default 6
        Hidden width = ``in_channels * expand_ratio``; 1 skips the expansion conv.
    kernel_size : int, default 3
        Depthwise kernel (odd; padding ``kernel_size // 2``).
    seed : int or Generator, default 0
    dtype : default "float32"

    Children: ``expand``, ``expand_bn``, ``expand_act`` (if expand_ratio > 1), ``depthwise``,
    ``depthwise_bn``, ``depthwise_act``, ``project``, ``project_bn``. Convs have no bias (BN
    follows). ``use_residual`` is True when stride == 1 and in_channels == out_channels.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        expand_ratio: int = 6,
        kernel_size: int = 3,
        seed: SeedLike = 0,
        dtype: str = "float32",
    ) -> None:
        if expand_ratio < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"InvertedResidual: need expand_ratio >= 1 and an odd kernel_size, got "
                f"expand_ratio={expand_ratio}, kernel_size={kernel_size}"
            )
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.stride, self.expand_ratio, self.kernel_size = stride, expand_ratio, kernel_size
        self.seed = seed
        self.use_residual = stride == 1 and in_channels == out_channels
        super().__init__(self._build_layers(as_generator(seed), dtype))

    def _build_layers(self, rng: np.random.Generator, dtype: str) -> list[tuple[str, Layer]]:
        hidden = self.in_channels * self.expand_ratio
        k = self.kernel_size

        def seed() -> int:
            return int(rng.integers(2**31))

        layers: list[tuple[str, Layer]] = []
        if self.expand_ratio != 1:
            layers += [
                (
                    "expand",
                    Conv2d(self.in_channels, hidden, 1, bias=False, seed=seed(), dtype=dtype),
                ),
                ("expand_bn", BatchNorm2d(hidden, dtype=dtype)),
                ("expand_act", ReLU6(dtype=dtype)),
            ]
        dw = DepthwiseConv2d(hidden, k, self.stride, k // 2, bias=False, seed=seed(), dtype=dtype)
        layers += [
            ("depthwise", dw),
            ("depthwise_bn", BatchNorm2d(hidden, dtype=dtype)),
            ("depthwise_act", ReLU6(dtype=dtype)),
            ("project", Conv2d(hidden, self.out_channels, 1, bias=False, seed=seed(), dtype=dtype)),
            ("project_bn", BatchNorm2d(self.out_channels, dtype=dtype)),
        ]
        return layers

    def config(self) -> dict[str, Any]:
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "stride": self.stride,
            "expand_ratio": self.expand_ratio,
            "kernel_size": self.kernel_size,
            "seed": self.seed,
            "dtype": self.dtype.name,
        }

    def _forward(self, x, train):
        y = super()._forward(x, train)
        return y + x if self.use_residual else y

    def _backward(self, dout, per_example):
        dx = super()._backward(dout, per_example)
        return dx + dout if self.use_residual else dx
