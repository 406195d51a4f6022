"""ONNX -> a trainable tinyodl model (chapter 13): the "bring your own model" direction.

:func:`from_onnx` reads an ONNX graph made of the operators below and rebuilds it as an
``nn.Sequential`` whose layers hold the graph's weights as trainable parameters (float32).
The graph is walked from its input; a tensor read by two nodes that meet again in an
``Add`` is a residual block and becomes ``nn.Add(body, shortcut)`` (identity shortcut when
one of the two readers is the ``Add`` itself).

================================  ============================================================
ONNX operator                     tinyodl layer
================================  ============================================================
Conv                              Conv2d / DepthwiseConv2d (dilation 1); asymmetric pads
                                  (TFLite's SAME) stay native: padding (top, bottom, left,
                                  right)
Pad (constant 0, H and W only)    folded into the Conv it feeds (PyTorch's ZeroPad2d + conv,
                                  the usual "same" at stride 2); otherwise Pad2d
Gemm, MatMul (+ Add of a const)   Linear (``transA=0``, ``alpha=beta=1``)
Relu; Clip(0, 6) / Clip(0, inf)   ReLU; ReLU6 / ReLU
MaxPool, AveragePool              MaxPool2d, AvgPool2d (``ceil_mode``, ``count_include_pad``)
GlobalAveragePool                 GlobalAvgPool (the following Flatten/Reshape to (N, C) is
                                  then a no-op)
ReduceMean over axes (2, 3)       GlobalAvgPool (PyTorch's ``x.mean(dim=(2, 3))``)
Flatten (axis 1), Reshape (N, K)  Flatten
Add                               residual: nn.Add; with a constant: the bias of a Linear
BatchNormalization                BatchNorm2d / BatchNorm1d (``momentum = 1 - ONNX momentum``)
Identity, Dropout                 nothing
================================  ============================================================

Any other operator raises :class:`UnsupportedOperatorError` naming the operator and the
node.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from tinyodl import nn
from tinyodl._shapes import padding4
from tinyodl.export._onnx_common import require_onnx
from tinyodl.export.layers import Pad2d

SUPPORTED_OPS = (
    "Conv",
    "Gemm",
    "MatMul",
    "Relu",
    "Clip",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "ReduceMean",
    "Flatten",
    "Reshape",
    "Add",
    "BatchNormalization",
    "Identity",
    "Dropout",
    "Pad",
)


class UnsupportedOperatorError(ValueError):
    """An ONNX node :func:`from_onnx` cannot turn into a tinyodl layer (names op and node)."""


class _Graph:
    """Constants, nodes and readers of an ONNX graph."""

    def __init__(self, model: Any) -> None:
        onnx = require_onnx()
        graph = model.graph
        self.const: dict[str, np.ndarray] = {
            t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer
        }
        self.nodes = []
        for node in graph.node:
            if node.op_type == "Constant":
                self.const[node.output[0]] = _constant_value(node)
            elif node.op_type in FOLDABLE_OPS and all(n in self.const for n in node.input if n):
                self.const[node.output[0]] = _fold(node, self.const)
            else:
                self.nodes.append(node)
        self.inputs = [i for i in graph.input if i.name not in self.const]
        self.outputs = {o.name for o in graph.output}
        self.readers: dict[str, list] = {}
        for node in self.nodes:
            for name in node.input:
                if name and name not in self.const:
                    self.readers.setdefault(name, []).append(node)

    def dynamic(self, node) -> list[str]:
        return [n for n in node.input if n and n not in self.const]

    def value(self, node, i: int) -> np.ndarray | None:
        if i >= len(node.input) or not node.input[i]:
            return None
        name = node.input[i]
        if name not in self.const:
            raise UnsupportedOperatorError(
                f"from_onnx: input {i} ({name!r}) of {node.op_type} node {node.name!r} must be "
                "a constant (initializer) to become a parameter"
            )
        return self.const[name]


#: shape arithmetic on constants (PyTorch computes a Pad's pads this way): evaluated at import
FOLDABLE_OPS = ("Cast", "Concat", "ConstantOfShape", "Gather", "Reshape", "Slice", "Squeeze",
                "Transpose", "Unsqueeze")  # fmt: skip


def _fold(node, const: dict) -> np.ndarray:
    """Evaluate a node whose inputs are all constants with ONNX's reference evaluator."""
    from onnx.reference import ReferenceEvaluator

    feeds = {n: const[n] for n in node.input if n}
    return np.asarray(ReferenceEvaluator(node).run(None, feeds)[0])


def _constant_value(node) -> np.ndarray:
    onnx = require_onnx()
    for attr in node.attribute:
        if attr.name == "value":
            return onnx.numpy_helper.to_array(attr.t)
        if attr.name in ("value_float", "value_int"):
            return np.asarray(onnx.helper.get_attribute_value(attr))
        if attr.name in ("value_floats", "value_ints"):
            return np.asarray(list(onnx.helper.get_attribute_value(attr)))
    raise UnsupportedOperatorError(f"from_onnx: Constant node {node.name!r} has no value")


def _attrs(node) -> dict[str, Any]:
    onnx = require_onnx()
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _refuse(node, why: str) -> UnsupportedOperatorError:
    return UnsupportedOperatorError(f"from_onnx: {node.op_type} node {node.name!r}: {why}")


def _symmetric_pads(node, attrs: dict) -> tuple[int, int] | None:
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad not in ("NOTSET", "VALID"):
        raise _refuse(node, f"auto_pad={auto_pad} is not supported (give explicit pads)")
    pads = [int(p) for p in attrs.get("pads", [0, 0, 0, 0])]
    if len(pads) != 4:
        raise _refuse(node, f"pads {pads} are not 2-D pads")
    if any(d != 1 for d in attrs.get("dilations", [1, 1])):
        raise _refuse(node, f"dilations {list(attrs['dilations'])} are not supported")
    if pads[0] != pads[2] or pads[1] != pads[3]:
        if node.op_type != "Conv":
            raise _refuse(node, f"pads {pads} are not symmetric (supported for Conv only)")
        return None  # asymmetric: Conv takes it natively (see _conv)
    return pads[0], pads[1]


def _load(layer: nn.Layer, **arrays: np.ndarray | None) -> nn.Layer:
    for name, value in arrays.items():
        if value is None:
            continue
        target = layer.params[name].data if name in layer.params else layer.buffers[name]
        if target.shape != value.shape:
            raise ValueError(
                f"from_onnx: {type(layer).__name__}.{name}: expected shape {target.shape}, "
                f"got {value.shape}"
            )
        target[...] = value
    return layer


def _conv(g: _Graph, node, attrs, extra=(0, 0, 0, 0)) -> nn.Layer:
    """The conv layer of ``node``; ``extra`` is a folded Pad's (top, bottom, left, right)."""
    w, b = g.value(node, 1), g.value(node, 2)
    f, c_per_group, kh, kw = w.shape
    groups = int(attrs.get("group", 1))
    stride = tuple(int(s) for s in attrs.get("strides", [1, 1]))
    padding = _symmetric_pads(node, attrs)
    if padding is None:  # ONNX pads: begins (top, left), then ends (bottom, right)
        top, left, bottom, right = (int(p) for p in attrs["pads"])
        padding = (top, bottom, left, right)
    padding = tuple(a + e for a, e in zip(padding4(padding), extra, strict=True))
    c = c_per_group * groups
    if groups > 1 and groups == c == f:
        layer = nn.DepthwiseConv2d(c, (kh, kw), stride, padding, bias=b is not None)
    else:
        layer = nn.Conv2d(c, f, (kh, kw), stride, padding, groups, bias=b is not None)
    return _load(layer, weight=w, bias=b)


def _pad(g: _Graph, node, attrs, rank: int) -> Pad2d:
    """A constant-zero Pad of the two spatial axes of an NCHW tensor."""
    mode = attrs.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    value = g.value(node, 2) if len(node.input) > 2 and node.input[2] else None
    if mode != "constant" or (value is not None and np.any(np.asarray(value) != 0)):
        raise _refuse(node, f"only constant zero padding is supported (mode {mode!r})")
    pads = g.value(node, 1) if len(node.input) > 1 else attrs.get("pads")
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    axes = g.value(node, 3) if len(node.input) > 3 and node.input[3] else None
    axes = list(range(rank)) if axes is None else [int(a) % rank for a in np.asarray(axes)]
    full = [0] * (2 * rank)  # ONNX: all begins, then all ends
    for i, a in enumerate(axes):
        full[a], full[rank + a] = pads[i], pads[len(axes) + i]
    if rank != 4 or any(full[a] or full[rank + a] for a in (0, 1)) or min(full) < 0:
        raise _refuse(node, f"only non-negative padding of H and W is supported, got {pads}")
    return Pad2d((full[2], full[6], full[3], full[7]))


def _gemm(g: _Graph, node, attrs) -> nn.Layer:
    if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
        raise _refuse(node, "only transA=0, alpha=1, beta=1 are supported")
    w = g.value(node, 1)
    w = w if attrs.get("transB", 0) else w.T
    b = g.value(node, 2)
    if b is not None and b.shape != (w.shape[0],):
        raise _refuse(node, f"bias of shape {b.shape} is not a per-output vector")
    layer = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    return _load(layer, weight=np.ascontiguousarray(w), bias=b)


def _clip(g: _Graph, node, attrs) -> nn.Layer:
    lo = attrs.get("min", g.value(node, 1) if len(node.input) > 1 else None)
    hi = attrs.get("max", g.value(node, 2) if len(node.input) > 2 else None)
    lo = None if lo is None else float(np.asarray(lo))
    hi = None if hi is None or not np.isfinite(np.asarray(hi)) else float(np.asarray(hi))
    if lo == 0.0 and hi == 6.0:
        return nn.ReLU6()
    if lo == 0.0 and hi is None:
        return nn.ReLU()
    raise _refuse(node, f"Clip({lo}, {hi}) is neither ReLU (0, inf) nor ReLU6 (0, 6)")


def _pool(node, attrs) -> nn.Layer:
    kernel = tuple(int(k) for k in attrs["kernel_shape"])
    stride = tuple(int(s) for s in attrs.get("strides", [1, 1]))
    padding = _symmetric_pads(node, attrs)
    ceil = bool(attrs.get("ceil_mode", 0))
    if node.op_type == "MaxPool":
        if len(node.output) > 1 and node.output[1]:
            raise _refuse(node, "the Indices output is not supported")
        return nn.MaxPool2d(kernel, stride, padding, ceil_mode=ceil)
    include = bool(attrs.get("count_include_pad", 0))
    return nn.AvgPool2d(kernel, stride, padding, ceil_mode=ceil, count_include_pad=include)


def _batchnorm(g: _Graph, node, attrs, rank: int) -> nn.Layer:
    gamma, beta, mean, var = (g.value(node, i) for i in range(1, 5))
    cls = nn.BatchNorm2d if rank == 4 else nn.BatchNorm1d
    momentum = 1.0 - float(attrs.get("momentum", 0.9))
    layer = cls(len(gamma), eps=float(attrs.get("epsilon", 1e-5)), momentum=momentum)
    return _load(layer, weight=gamma, bias=beta, running_mean=mean, running_var=var)


class _Builder:
    """Walks the graph from the input, turning nodes into layers."""

    def __init__(self, g: _Graph) -> None:
        self.g = g
        self.names: set[str] = set()
        self.pooled = False  # a GlobalAvgPool made the tensor (N, C) where ONNX has (N, C, 1, 1)
        self.pad_out: str | None = None  # output of the last Pad (folded into a next Conv)

    def name(self, node) -> str:
        base = re.sub(r"[^A-Za-z0-9_]", "_", node.name or node.op_type).strip("_")
        base = base or node.op_type
        name, i = base, 1
        while name in self.names:
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        return name

    def walk(self, tensor: str, rank: int) -> tuple[list, str, Any, int]:
        """Layers from ``tensor`` until a residual ``Add`` or the end.

        Returns ``(layers, last tensor, the Add node that stopped the walk or None, rank)``.
        """
        layers: list[tuple[str, nn.Layer]] = []
        while True:
            readers = self.g.readers.get(tensor, [])
            if not readers:
                return layers, tensor, None, rank
            if len(readers) == 1:
                node = readers[0]
                if node.op_type == "Add" and len(self.g.dynamic(node)) == 2:
                    return layers, tensor, node, rank
                tensor, rank = self.convert(node, layers, rank)
                continue
            if len(readers) == 2:
                tensor = self.residual(tensor, readers, layers, rank)
                continue
            names = ", ".join(repr(n.name) for n in readers)
            raise UnsupportedOperatorError(
                f"from_onnx: tensor {tensor!r} is read by {len(readers)} nodes ({names}); only "
                "chains and two-branch residual blocks are supported"
            )

    def branch(self, node, rank: int) -> tuple[list, Any]:
        layers: list = []
        tensor, rank = self.convert(node, layers, rank)
        more, _, add, _ = self.walk(tensor, rank)
        return layers + more, add

    def residual(self, tensor: str, readers: list, layers: list, rank: int) -> str:
        dyn_add = [n for n in readers if n.op_type == "Add" and len(self.g.dynamic(n)) == 2]
        others = [n for n in readers if n not in dyn_add]
        pooled = self.pooled
        if len(others) == 1 and dyn_add:  # identity shortcut
            body, add = self.branch(others[0], rank)
            shortcut = None
            if add is not dyn_add[0]:
                raise _refuse(others[0], "its branch does not end in the Add that reads its input")
        elif len(others) == 2:
            body, add = self.branch(others[0], rank)
            self.pooled = pooled
            shortcut_layers, add2 = self.branch(others[1], rank)
            if add is None or add is not add2:
                raise _refuse(others[0], "the two branches of a fork must meet in one Add")
            shortcut = nn.Sequential(shortcut_layers) if shortcut_layers else None
        else:
            raise _refuse(readers[0], "unsupported fork in the graph")
        layer = nn.Add(nn.Sequential(body), shortcut)
        layers.append((self.name(add), layer))
        return add.output[0]

    def convert(self, node, layers: list, rank: int) -> tuple[str, int]:
        """Append the layer of ``node`` (if any); returns (output tensor, output rank)."""
        op, attrs = node.op_type, _attrs(node)
        out = node.output[0]
        if op in ("Identity", "Dropout"):
            return out, rank
        if op not in SUPPORTED_OPS:
            raise UnsupportedOperatorError(
                f"from_onnx: operator {op} (node {node.name!r}) is not supported; supported: "
                f"{', '.join(SUPPORTED_OPS)}"
            )
        needs_map = op in (
            "Conv",
            "Pad",
            "MaxPool",
            "AveragePool",
            "GlobalAveragePool",
            "ReduceMean",
        )
        if needs_map and self.pooled:
            raise _refuse(node, "a spatial operator after GlobalAveragePool is not supported")
        if op == "Conv":
            extra = (0, 0, 0, 0)
            if layers and self.pad_out == node.input[0] and isinstance(layers[-1][1], Pad2d):
                extra = layers.pop()[1].pads  # Pad -> Conv: one conv, padded natively
            layer = _conv(self.g, node, attrs, extra)
        elif op == "Pad":
            layer, self.pad_out = _pad(self.g, node, attrs, rank), out
        elif op in ("Gemm", "MatMul"):
            layer = _gemm(self.g, node, attrs if op == "Gemm" else {"transB": 0})
            rank = 2
        elif op == "Relu":
            layer = nn.ReLU()
        elif op == "Clip":
            layer = _clip(self.g, node, attrs)
        elif op in ("MaxPool", "AveragePool"):
            layer = _pool(node, attrs)
        elif op == "GlobalAveragePool":
            layer, self.pooled = nn.GlobalAvgPool(), True
        elif op == "ReduceMean":
            layer = self.reduce_mean(node, attrs, rank)
            self.pooled, rank = bool(attrs.get("keepdims", 1)), 2
        elif op in ("Flatten", "Reshape"):
            return self.flatten(node, attrs, layers, out), 2
        elif op == "BatchNormalization":
            if len(node.output) > 1 and any(node.output[1:]):
                raise _refuse(node, "training-mode outputs (running statistics) are not supported")
            layer = _batchnorm(self.g, node, attrs, 2 if self.pooled else rank)
        else:  # Add with a constant: the bias of the Linear before it
            return self.bias_add(node, layers), rank
        layers.append((self.name(node), layer))
        return out, rank

    def reduce_mean(self, node, attrs, rank: int) -> nn.Layer:
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1:
            axes = self.g.value(node, 1).tolist()
        axes = sorted(int(a) % rank for a in (axes or []))
        if rank != 4 or axes != [2, 3]:
            raise _refuse(
                node, f"only a mean over the spatial axes (2, 3) is supported, got {axes}"
            )
        return nn.GlobalAvgPool()

    def flatten(self, node, attrs, layers: list, out: str) -> str:
        if node.op_type == "Flatten" and int(attrs.get("axis", 1)) != 1:
            raise _refuse(node, "only axis=1 is supported")
        if node.op_type == "Reshape":
            shape = self.g.value(node, 1).tolist()
            if len(shape) != 2 or shape[0] not in (0, -1, 1) and shape[1] != -1:
                raise _refuse(node, f"only a reshape to (N, features) is supported, got {shape}")
        if not self.pooled:
            layers.append((self.name(node), nn.Flatten()))
        self.pooled = False
        return out

    def bias_add(self, node, layers: list) -> str:
        const = [self.g.const[n] for n in node.input if n in self.g.const]
        prev = layers[-1][1] if layers else None
        if len(const) != 1 or not isinstance(prev, nn.Linear) or "bias" in prev.params:
            raise _refuse(node, "an Add of a constant is supported only as a bias after MatMul")
        bias = np.asarray(const[0], dtype=np.float32).reshape(-1)
        fresh = nn.Linear(prev.in_features, prev.out_features, bias=True)
        _load(fresh, weight=prev.params["weight"].data, bias=bias)
        layers[-1] = (layers[-1][0], fresh)
        return node.output[0]


def from_onnx(model: Any) -> nn.Sequential:
    """Rebuild an ONNX model as a trainable ``nn.Sequential`` (training mode, float32).

    Parameters
    ----------
    model : onnx.ModelProto, bytes, or path
        One float input (N, C, H, W) or (N, K), one output.

    Returns
    -------
    nn.Sequential
        Every weight is a trainable parameter; batchnorm keeps the running statistics.

    Raises
    ------
    UnsupportedOperatorError
        For an operator outside :data:`SUPPORTED_OPS` (naming the operator and the node) or
        an unsupported attribute.
    """
    onnx = require_onnx()
    if isinstance(model, (str, os.PathLike)):
        model = onnx.load(os.fspath(model))
    elif isinstance(model, bytes):
        model = onnx.load_from_string(model)
    g = _Graph(model)
    if len(g.inputs) != 1 or len(g.outputs) != 1:
        raise UnsupportedOperatorError(
            f"from_onnx: expected one input and one output, got {len(g.inputs)} and "
            f"{len(g.outputs)}"
        )
    first = g.inputs[0]
    rank = len(first.type.tensor_type.shape.dim) or 4
    layers, last, add, _ = _Builder(g).walk(first.name, rank)
    if add is not None:
        raise _refuse(add, "this Add does not close a residual block of the input's branches")
    if last not in g.outputs:
        raise UnsupportedOperatorError(
            f"from_onnx: the walk from the input ended at {last!r}, not the graph output"
        )
    if not layers:
        raise UnsupportedOperatorError("from_onnx: the graph has no layers")
    return nn.Sequential(layers).train()
