"""Convolution and pooling layers (NCHW): Conv2d, DepthwiseConv2d, pools (chapter 00).

Thin classes around :mod:`tinyodl.nn.functional`; the im2col/matmul work runs in the
active :mod:`tinyodl.ops` backend. A Conv2d with a frozen weight saves nothing for backward:
``dx`` needs only the weights and the input *shape*.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinyodl._shapes import conv_output_shape, padding4, pair, pool_output_size
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


def conv_padding(padding) -> tuple[int, ...]:
    """A conv layer's padding: ``(ph, pw)`` when symmetric, else ``(top, bottom, left, right)``.

    The asymmetric form is TFLite's/ONNX's SAME padding when the padded total is odd (a 3x3
    stride-2 conv on an even input pads only the bottom/right; chapter 13). The kernels take
    both forms.
    """
    top, bottom, left, right = padding4(padding)
    if min(top, bottom, left, right) < 0:
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    return (top, left) if (top == bottom and left == right) else (top, bottom, left, right)


class Conv2d(Layer):
    """2-D convolution (cross-correlation, as in PyTorch), optionally grouped.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride : int or (int, int)
    padding : int, (int, int) or (top, bottom, left, right)
        Stored as ``(ph, pw)`` when symmetric, else as the 4-tuple (see :func:`conv_padding`).
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
        padding: int | tuple[int, ...] = 0,
        groups: int = 1,
        bias: bool = True,
        seed: SeedLike = 0,
        init: str = "kaiming_normal",
        dtype: str = "float32",
    ) -> None:
        super().__init__(dtype)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride, self.padding = pair(stride, "stride"), conv_padding(padding)
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
        dx, dw, db = F.conv2d_backward(dout, cache, self.needs_input_grad)
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
    """Depthwise convolution: ``channel_multiplier`` ``KH x KW`` filters per input channel.

    ``groups = channels``, ``F = channels * channel_multiplier`` (PyTorch:
    ``Conv2d(C, C*m, k, groups=C)``; TensorFlow: ``DepthwiseConv2D(depth_multiplier=m)``).
    Output channel ``c*m + j`` is filter ``j`` of input channel ``c``.

    Parameters
    ----------
    channels : int
        Input channels C.
    kernel_size, stride, padding, bias, seed, init, dtype : as in :class:`Conv2d`
    channel_multiplier : int, default 1
        Filters per input channel m (MobileNet's depth multiplier inside the layer).

    ``weight`` has shape (C*m, 1, KH, KW). With m = 1 the Cython backend takes its direct
    depthwise loops; m > 1 runs the generic grouped convolution (im2col per group).
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, ...] = 0,
        bias: bool = True,
        seed: SeedLike = 0,
        init: str = "kaiming_normal",
        dtype: str = "float32",
        channel_multiplier: int = 1,
    ) -> None:
        m = int(channel_multiplier)
        if m < 1 or m != channel_multiplier:
            raise ValueError(
                f"DepthwiseConv2d: channel_multiplier must be a positive int, "
                f"got {channel_multiplier!r}"
            )
        self.channel_multiplier = m
        super().__init__(
            channels, channels * m, kernel_size, stride, padding, channels, bias, seed, init, dtype
        )

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        del cfg["in_channels"], cfg["out_channels"], cfg["groups"]
        return {"channels": self.in_channels, **cfg, "channel_multiplier": self.channel_multiplier}


class _Pool2d(Layer):
    """Shared constructor and shape logic of the two pooling layers."""

    def __init__(
        self, kernel_size, stride=None, padding=0, dtype: str = "float32", *, ceil_mode=False
    ) -> None:
        super().__init__(dtype)
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else pair(stride, "stride")
        self.padding = pair(padding, "padding")
        self.ceil_mode = bool(ceil_mode)
        self._cache: dict = {}

    def config(self) -> dict[str, Any]:
        return {
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": self.padding,
            "dtype": self.dtype.name,
            "ceil_mode": self.ceil_mode,
        }

    def output_shape(self, input_shape):
        check_shape(self, "input", input_shape, (None, None, None, None), "(N, C, H, W)")
        oh, ow = _window_output(self, input_shape, self.kernel_size, self.stride, self.padding)
        if self.ceil_mode:
            oh = pool_output_size(
                int(input_shape[2]), self.kernel_size[0], self.stride[0], self.padding[0], True
            )
            ow = pool_output_size(
                int(input_shape[3]), self.kernel_size[1], self.stride[1], self.padding[1], True
            )
        return (int(input_shape[0]), int(input_shape[1]), oh, ow)


class MaxPool2d(_Pool2d):
    """Max pooling; saves the int64 argmax of each window (``stride`` defaults to the window).

    Parameters
    ----------
    kernel_size, stride, padding : int or (int, int); padding at most half the window
    dtype : default "float32"
    ceil_mode : bool, default False
        Round the output size up (PyTorch's ``ceil_mode``).
    """

    def _forward(self, x, train):
        self.output_shape(x.shape)
        y, cache = F.maxpool2d_forward(
            x, self.kernel_size, self.stride, self.padding, self.ceil_mode
        )
        self._x_shape = x.shape
        self._save(argmax=cache["argmax"])
        return y

    def _backward(self, dout, per_example):
        return F.maxpool2d_backward(
            dout, {"argmax": self.saved["argmax"], "x_shape": self._x_shape}
        )


class AvgPool2d(_Pool2d):
    """Average pooling; saves nothing but the input shape.

    Parameters
    ----------
    kernel_size, stride, padding : int or (int, int); padding at most half the window
    dtype : default "float32"
    ceil_mode : bool, default False
        Round the output size up (PyTorch's ``ceil_mode``).
    count_include_pad : bool, default True
        Padding counts as zeros in the mean (PyTorch's default); False averages over the
        real pixels of each window.
    """

    def __init__(
        self,
        kernel_size,
        stride=None,
        padding=0,
        dtype: str = "float32",
        *,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
    ) -> None:
        super().__init__(kernel_size, stride, padding, dtype, ceil_mode=ceil_mode)
        self.count_include_pad = bool(count_include_pad)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "count_include_pad": self.count_include_pad}

    def _forward(self, x, train):
        self.output_shape(x.shape)
        y, self._cache = F.avgpool2d_forward(
            x,
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
        )
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
