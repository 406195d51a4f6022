"""Float model -> ONNX (chapter 13): one ONNX node per tinyodl layer.

A :class:`tinyodl.nn.Sequential` is walked in forward order; every layer becomes the ONNX
operator that computes the same function (NCHW layouts and weight layouts are the same in
both, so weights are copied as they are):

=====================================  ==============================================
tinyodl layer                          ONNX
=====================================  ==============================================
Conv2d, DepthwiseConv2d                Conv (``group``, ``pads``)
Linear                                 Gemm (``transB=1``)
BatchNorm2d / BatchNorm1d              BatchNormalization (inference: running stats)
ReLU, ReLU6                            Relu, Clip(0, 6)
MaxPool2d, AvgPool2d                   MaxPool, AveragePool (``ceil_mode``,
                                       ``count_include_pad``)
GlobalAvgPool, Flatten                 GlobalAveragePool + Flatten, Flatten
Add, InvertedResidual (with skip)      the body's nodes + Add
Identity, Dropout                      nothing (inference)
Softmax                                Softmax(axis=1)
tinyodl.export.Pad2d                   Pad (constant 0)
=====================================  ==============================================

The exported graph is what the model computes in evaluation mode.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from tinyodl import nn
from tinyodl._shapes import padding4
from tinyodl.export._onnx_common import (
    ExportError,
    GraphBuilder,
    require_onnx,
    save_model,
    value_info,
)
from tinyodl.export.layers import Pad2d


def _conv(g: GraphBuilder, layer: nn.Conv2d, x: str, name: str) -> str:
    top, bottom, left, right = padding4(layer.padding)
    inputs = [x, g.const(f"{name}.weight", layer.params["weight"].data, np.float32)]
    if "bias" in layer.params:
        inputs.append(g.const(f"{name}.bias", layer.params["bias"].data, np.float32))
    return g.node(
        "Conv",
        inputs,
        name,
        kernel_shape=list(layer.kernel_size),
        strides=list(layer.stride),
        pads=[top, left, bottom, right],  # ONNX: begins, then ends
        group=layer.groups,
    )


def _linear(g: GraphBuilder, layer: nn.Linear, x: str, name: str) -> str:
    inputs = [x, g.const(f"{name}.weight", layer.params["weight"].data, np.float32)]
    if "bias" in layer.params:
        inputs.append(g.const(f"{name}.bias", layer.params["bias"].data, np.float32))
    return g.node("Gemm", inputs, name, transB=1)


def _batchnorm(g: GraphBuilder, layer: Any, x: str, name: str) -> str:
    arrays = [
        layer.params["weight"].data,
        layer.params["bias"].data,
        layer.buffers["running_mean"],
        layer.buffers["running_var"],
    ]
    inputs = [x] + [
        g.const(f"{name}.{k}", a, np.float32)
        for k, a in zip(("weight", "bias", "running_mean", "running_var"), arrays, strict=True)
    ]
    return g.node("BatchNormalization", inputs, name, epsilon=float(layer.eps))


def _pool(g: GraphBuilder, layer: Any, x: str, name: str) -> str:
    ph, pw = layer.padding
    attrs = {
        "kernel_shape": list(layer.kernel_size),
        "strides": list(layer.stride),
        "pads": [ph, pw, ph, pw],
        "ceil_mode": int(layer.ceil_mode),
    }
    if isinstance(layer, nn.AvgPool2d):
        attrs["count_include_pad"] = int(layer.count_include_pad)
        return g.node("AveragePool", [x], name, **attrs)
    return g.node("MaxPool", [x], name, **attrs)


def _add_layer(g: GraphBuilder, layer: Any, x: str, name: str) -> str:
    """Emit the nodes of ``layer`` applied to tensor ``x``; returns the output tensor."""
    if isinstance(layer, nn.InvertedResidual):
        y = _sequence(g, layer, x, name)
        return g.node("Add", [y, x], f"{name}.add") if layer.use_residual else y
    if isinstance(layer, nn.Sequential):
        return _sequence(g, layer, x, name)
    if isinstance(layer, nn.Add):
        y = _add_layer(g, layer.body, x, f"{name}.body")
        s = x if layer.shortcut is None else _add_layer(g, layer.shortcut, x, f"{name}.shortcut")
        return g.node("Add", [y, s], name)
    if isinstance(layer, nn.Conv2d):  # DepthwiseConv2d too
        return _conv(g, layer, x, name)
    if isinstance(layer, nn.Linear):
        return _linear(g, layer, x, name)
    if isinstance(layer, (nn.BatchNorm2d, nn.BatchNorm1d)):
        return _batchnorm(g, layer, x, name)
    if isinstance(layer, nn.ReLU6):
        lo, hi = g.const(f"{name}.min", 0.0, np.float32), g.const(f"{name}.max", 6.0, np.float32)
        return g.node("Clip", [x, lo, hi], name)
    if isinstance(layer, nn.ReLU):
        return g.node("Relu", [x], name)
    if isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
        return _pool(g, layer, x, name)
    if isinstance(layer, nn.GlobalAvgPool):
        return g.node("Flatten", [g.node("GlobalAveragePool", [x], name)], f"{name}.flatten")
    if isinstance(layer, nn.Flatten):
        return g.node("Flatten", [x], name, axis=1)
    if isinstance(layer, nn.Softmax):
        return g.node("Softmax", [x], name, axis=int(getattr(layer, "dim", 1)))
    if isinstance(layer, (nn.Identity, nn.Dropout)):
        return x
    if isinstance(layer, Pad2d):
        t, b, left, r = layer.pads
        pads = g.const(f"{name}.pads", np.array([0, 0, t, left, 0, 0, b, r], dtype=np.int64))
        return g.node("Pad", [x, pads], name)
    raise ExportError(
        f"to_onnx: layer {name!r} of type {type(layer).__name__} has no ONNX export; supported: "
        "Conv2d, DepthwiseConv2d, Linear, BatchNorm1d/2d, ReLU, ReLU6, MaxPool2d, AvgPool2d, "
        "GlobalAvgPool, Flatten, Add, InvertedResidual, Identity, Dropout, Softmax, Pad2d"
    )


def _sequence(g: GraphBuilder, seq: nn.Sequential, x: str, prefix: str) -> str:
    for local, child in seq.children().items():
        x = _add_layer(g, child, x, f"{prefix}.{local}" if prefix else local)
    return x


def to_onnx(
    model: nn.Layer,
    input_shape: tuple[int, ...],
    path: str | os.PathLike | None = None,
    *,
    dynamic_batch: bool = True,
) -> Any:
    """Export a float tinyodl model to ONNX (its evaluation-mode function).

    Parameters
    ----------
    model : nn.Layer
        Usually an ``nn.Sequential`` such as ``tinyodl.tasks.pretrained("A")``.
    input_shape : tuple
        One input's shape with the batch, e.g. ``(1, 1, 28, 28)``.
    path : path, optional
        Also write the model there (atomically).
    dynamic_batch : bool, default True
        Declare the batch dimension symbolic (``N``).

    Returns
    -------
    onnx.ModelProto
        Input ``"input"`` (float32), output ``"logits"``; opset :data:`OPSET`.

    Raises
    ------
    ExportError
        For a layer ONNX export does not know, naming it.
    """
    onnx = require_onnx()
    shape = tuple(int(s) for s in input_shape)
    out_shape = model.output_shape(shape)
    g = GraphBuilder()
    x = g.name("input")
    y = _add_layer(g, model, x, "")
    y = g.node("Identity", [y], "logits")
    batch = (None,) if dynamic_batch else (shape[0],)
    model_proto = g.model(
        [value_info(x, onnx.TensorProto.FLOAT, batch + shape[1:])],
        [value_info(y, onnx.TensorProto.FLOAT, batch + tuple(out_shape[1:]))],
        "tinyodl_float",
        doc="exported by tinyodl.export.to_onnx (float, evaluation mode)",
    )
    if path is not None:
        save_model(model_proto, path)
    return model_proto
