"""Convolution and pooling layers (NCHW): Conv2d, DepthwiseConv2d, pools (chapter 00).

Thin classes around :mod:`tinyodl.nn.functional`; the im2col/matmul work runs in the
active :mod:`tinyodl.ops` backend. A Conv2d with a frozen weight saves nothing for backward:
``dx`` needs only the weights and the input *shape*.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinyodl._shapes import conv_output_shape, pair
from tinyodl.nn import functional as F
from tinyodl.nn.errors import LayerShapeError
from tinyodl.nn.init import initialize
from tinyodl.nn.layer import Layer
from tinyodl.nn.utils import SeedLike, check_shape, layer_label


def _window_output(layer: Layer, input_shape, kernel_size, stride, padding) -> tuple[int, int]:
    """``(OH, OW)`` of a window over ``input_shape``, with the layer named in the error."""
    try:
        return conv_output_shape(input_shape, kernel_size, stride, padding)
    except ValueError as err:
        raise LayerShapeError(f"{layer_label(layer)}: {err} (input {tuple(input_shape)})") from None


class Conv2d(Layer):
    """2-D convolution (cross-correlation, as in PyTorch), optionally grouped.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, padding : int or (int, int)
    groups : int, default 1
        ``groups == in_channels == out_channels`` is a depthwise convolution.
    bias : bool, default True
    seed : int or Generator, default 0
    init : str, default "kaiming_normal"
    dtype : default "float32"

    Shapes: x (N, C, H, W) -> y (N, F, OH, OW); ``weight`` (F, C/groups, KH, KW), ``bias`` (F,).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        groups: int = 1,
        bias: bool = True,
        seed: SeedLike = 0,
        init: str = "kaiming_normal",
        dtype: str = "float32",
    ) -> None:
        super().__init__(dtype)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride, self.padding = pair(stride, "stride"), pair(padding, "padding")
        self.groups, self.bias, self.seed, self.init = int(groups), bool(bias), seed, init
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"{type(self).__name__}: in_channels={in_channels} and "
                f"out_channels={out_channels} must both be divisible by groups={groups}"
            )
        shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        self._param("weight", initialize(init, shape, seed, self.dtype))
        if self.bias:
            self._param("bias", np.zeros(self.out_channels))
        self._x_shape: tuple[int, ...] | None = None

    def config(self) -> dict[str, Any]:
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": self.padding,
            "groups": self.groups,
            "bias": self.bias,
            "seed": self.seed,
            "init": self.init,
            "dtype": self.dtype.name,
        }

    def _geometry(self) -> tuple:
        return self.stride, self.padding, self.groups

    def output_shape(self, input_shape):
        c = self.in_channels
        check_shape(self, "input", input_shape, (None, c, None, None), f"(N, {c}, H, W)")
        oh, ow = _window_output(self, input_shape, self.kernel_size, self.stride, self.padding)
        return (int(input_shape[0]), self.out_channels, oh, ow)

    def _forward(self, x, train):
        self.output_shape(x.shape)
        b = self.params["bias"].data if self.bias else None
        y, cache = F.conv2d_forward(x, self.params["weight"].data, b, *self._geometry())
        self._x_shape = x.shape
        if self.params["weight"].trainable:  # x is needed only for dW
            self._save(x=cache["x"])
        return y

    def _backward(self, dout, per_example):
        weight = self.params["weight"]
        stride, padding, groups = self._geometry()
        cache = {"w": weight.data, "x_shape": self._x_shape, "stride": stride}
        cache.update(padding=padding, groups=groups, **self.saved)
        dx, dw, db = F.conv2d_backward(dout, cache)
        if dw is not None:
            weight.accumulate_grad(dw)
        if self.bias:
            self.params["bias"].accumulate_grad(db)
        if per_example:
            self._fill_grad_samples(dout)
        return dx

    def _fill_grad_samples(self, dout: np.ndarray) -> None:
        """Per-example gradients (DP-SGD) from im2col of each example's input."""
        weight = self.params["weight"]
        if weight.trainable:
            weight.grad_sample, _ = F.conv2d_per_example_grads(
                dout, self.saved["x"], weight.shape, *self._geometry()
            )
        if self.bias and self.params["bias"].trainable:
            self.params["bias"].grad_sample = dout.sum(axis=(2, 3))


class DepthwiseConv2d(Conv2d):
    """Depthwise convolution: one ``KH x KW`` filter per channel (``groups = channels``).

    Parameters
    ----------
    channels : int
    kernel_size, stride, padding, bias, seed, init, dtype : as in :class:`Conv2d`

    ``weight`` has shape (C, 1, KH, KW).
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        bias: bool = True,
        seed: SeedLike = 0,
        init: str = "kaiming_normal",
        dtype: str = "float32",
    ) -> None:
        super().__init__(
            channels, channels, kernel_size, stride, padding, channels, bias, seed, init, dtype
        )

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        del cfg["in_channels"], cfg["out_channels"], cfg["groups"]
        return {"channels": self.in_channels, **cfg}


class _Pool2d(Layer):
    """Shared constructor and shape logic of the two pooling layers."""

    def __init__(self, kernel_size, stride=None, padding=0, dtype: str = "float32") -> None:
        super().__init__(dtype)
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else pair(stride, "stride")
        self.padding = pair(padding, "padding")
        self._cache: dict = {}

    def config(self) -> dict[str, Any]:
        return {
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": self.padding,
            "dtype": self.dtype.name,
        }

    def output_shape(self, input_shape):
        check_shape(self, "input", input_shape, (None, None, None, None), "(N, C, H, W)")
        oh, ow = _window_output(self, input_shape, self.kernel_size, self.stride, self.padding)
        return (int(input_shape[0]), int(input_shape[1]), oh, ow)


class MaxPool2d(_Pool2d):
    """Max pooling; saves the int64 argmax of each window (``stride`` defaults to the window)."""

    def _forward(self, x, train):
        self.output_shape(x.shape)
        y, cache = F.maxpool2d_forward(x, self.kernel_size, self.stride, self.padding)
        self._x_shape = x.shape
        self._save(argmax=cache["argmax"])
        return y

    def _backward(self, dout, per_example):
        return F.maxpool2d_backward(
            dout, {"argmax": self.saved["argmax"], "x_shape": self._x_shape}
        )


class AvgPool2d(_Pool2d):
    """Average pooling (padding counts as zeros); saves nothing but the input shape."""

    def _forward(self, x, train):
        self.output_shape(x.shape)
        y, self._cache = F.avgpool2d_forward(x, self.kernel_size, self.stride, self.padding)
        return y

    def _backward(self, dout, per_example):
        return F.avgpool2d_backward(dout, self._cache)


class GlobalAvgPool(Layer):
    """Mean over the spatial axes: ``(N, C, H, W) -> (N, C)``; saves nothing."""

    def __init__(self, dtype: str = "float32") -> None:
        super().__init__(dtype)
        self._x_shape: tuple[int, ...] | None = None

    def config(self) -> dict[str, Any]:
        return {"dtype": self.dtype.name}

    def output_shape(self, input_shape):
        check_shape(self, "input", input_shape, (None, None, None, None), "(N, C, H, W)")
        return (int(input_shape[0]), int(input_shape[1]))

    def _forward(self, x, train):
        self.output_shape(x.shape)
        self._x_shape = x.shape
        y, _ = F.global_avgpool_forward(x)
        return y

    def _backward(self, dout, per_example):
        return F.global_avgpool_backward(dout, {"x_shape": self._x_shape})
