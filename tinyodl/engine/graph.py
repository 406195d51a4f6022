"""Tracing an int8 model into a graph, and what its backward must compute (chapter 12).

The first two stages of a compile-time training engine (Lin et al. 2022, section 2.3):

1. :func:`trace` walks a :class:`~tinyodl.quantization.QuantizedModel` (its ``ops`` and
   their ``output_shape``, the same walk as ``describe()``) and returns a :class:`Graph`:
   one :class:`Node` per operation, tensors named after the node that produces them.
2. :func:`resolve_scheme` decides, per conv/linear layer, which output channels of the
   weight and whether the bias train (from an update scheme or the layers' own
   ``weight_trainable`` / ``bias_trainable`` flags), and :func:`requires_grad` propagates
   "some trainable tensor lies at or below this tensor" forward through the graph. A
   backward node whose result serves only frozen tensors is *pruned*: it is never planned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinyodl.quantization.qmodel import (
    QConv,
    QFlatten,
    QGlobalAvgPool,
    QResidual,
    QuantizedModel,
)

__all__ = ["Graph", "LayerUpdate", "Node", "requires_grad", "resolve_scheme", "trace"]


@dataclass(eq=False)
class Node:
    """One forward operation of the traced graph.

    Attributes
    ----------
    name : str
        The operation's name in the model (``"features.4.expand"``; ``"<block>.add"`` for
        a residual's addition).
    kind : {"conv", "add", "gap", "flatten"}
    op : object
        The model's operation (``QConv``, ``QAdd``, ``QGlobalAvgPool``, ``QFlatten``); its
        arrays (weights, qparams) are used, never its ``saved`` dict.
    inputs : list of str
        Tensor names read (``"add"`` reads the body's output, then the skip input).
    output : str
        Tensor name written (= ``name``).
    in_shapes, out_shape : shapes of the int8 tensors.
    """

    name: str
    kind: str
    op: Any
    inputs: list[str]
    output: str
    in_shapes: list[tuple[int, ...]]
    out_shape: tuple[int, ...]


@dataclass
class Graph:
    """The traced forward graph: nodes in execution order and the shapes of every tensor."""

    nodes: list[Node]
    shapes: dict[str, tuple[int, ...]]
    qmodel: QuantizedModel
    input_shape: tuple[int, ...]

    def consumers(self, tensor: str) -> list[Node]:
        """Forward nodes that read ``tensor``, in order."""
        return [n for n in self.nodes if tensor in n.inputs]

    def convs(self) -> list[Node]:
        """The conv/depthwise/linear nodes, in forward order."""
        return [n for n in self.nodes if n.kind == "conv"]


def trace(qmodel: QuantizedModel, input_shape: tuple[int, ...]) -> Graph:
    """Trace ``qmodel``'s forward for inputs of ``input_shape`` (N, C, H, W) into a graph.

    Raises
    ------
    TypeError
        If ``qmodel`` is not a ``QuantizedModel`` (the engine compiles the int8 graph: run
        ``tinyodl.quantization.quantize_model`` first).
    NotImplementedError
        For an operation type the engine has no backward rule for (naming it).
    """
    if not isinstance(qmodel, QuantizedModel):
        raise TypeError(
            "engine.trace: expected a tinyodl.quantization.QuantizedModel (the engine "
            f"compiles the int8 graph; quantize the model first), got {type(qmodel).__name__}"
        )
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 4:
        raise ValueError(f"engine.trace: input_shape must be (N, C, H, W), got {shape}")
    nodes: list[Node] = []
    shapes = {"input": shape}
    current = "input"
    for op in qmodel.ops:
        current = _trace_op(op, current, shapes, nodes)
    return Graph(nodes, shapes, qmodel, shape)


def _add_node(nodes, shapes, name, kind, op, inputs) -> str:
    in_shapes = [shapes[t] for t in inputs]
    if kind == "conv":
        out = op.output_shape(in_shapes[0])
    elif kind == "add":
        out = in_shapes[0]
    else:
        out = op.output_shape(in_shapes[0])
    if name in shapes:
        raise ValueError(f"engine.trace: two operations are named {name!r}")
    shapes[name] = tuple(int(s) for s in out)
    nodes.append(Node(name, kind, op, list(inputs), name, in_shapes, shapes[name]))
    return name


def _trace_op(op, current, shapes, nodes) -> str:
    if isinstance(op, QConv):
        return _add_node(nodes, shapes, op.name, "conv", op, [current])
    if isinstance(op, QResidual):
        skip, h = current, current
        for inner in op.body:
            h = _trace_op(inner, h, shapes, nodes)
        return _add_node(nodes, shapes, op.add.name, "add", op.add, [h, skip])
    if isinstance(op, QGlobalAvgPool):
        return _add_node(nodes, shapes, op.name, "gap", op, [current])
    if isinstance(op, QFlatten):
        return _add_node(nodes, shapes, op.name, "flatten", op, [current])
    raise NotImplementedError(
        f"engine.trace: no backward rule for operation {getattr(op, 'name', '?')!r} "
        f"of type {type(op).__name__}"
    )


# ----------------------------------------------------------------------------- what trains


@dataclass
class LayerUpdate:
    """What one conv/linear layer updates: weight output channels and the bias.

    ``channels`` is None (the weight is frozen), or a sorted int64 array of output
    channels (all of them for a full update). ``bias`` says whether the bias trains.
    """

    channels: np.ndarray | None = None
    bias: bool = False
    full: bool = field(default=False)

    @property
    def weight(self) -> bool:
        return self.channels is not None


def top_l2_channels(conv: QConv, ratio: float) -> np.ndarray:
    """The ``ceil(ratio * F)`` output channels of largest real-weight L2 norm, sorted.

    The paper's rule for a partial-channel update (Lin et al. 2022, section 2.2); the same
    choice as :func:`tinyodl.sparse_update.select_channels` (which this calls), so the
    engine and chapter 04's sparse update train the same channels.
    """
    from tinyodl.sparse_update import select_channels

    return select_channels(conv, ratio)


def resolve_scheme(graph: Graph, scheme: Any = None) -> dict[str, LayerUpdate]:
    """Per conv node: which weight channels and whether the bias train.

    Parameters
    ----------
    graph : Graph
    scheme : UpdateScheme, optional
        ``bias_depth`` (the biases of the last k conv/linear layers train), ``weights``
        (layer name -> channel ratio in (0, 1]; channels by weight L2 norm unless the
        scheme has a ``channels`` dict name -> indices, as TinyTrain's does). None: the
        layers' own ``weight_trainable`` / ``bias_trainable`` flags and
        ``update_channels`` (as :func:`tinyodl.sparse_update.apply_scheme` sets them).

    Raises
    ------
    KeyError
        If the scheme names a layer that is not a conv/linear layer of the model.
    """
    convs = graph.convs()
    updates: dict[str, LayerUpdate] = {}
    if scheme is None:
        for node in convs:
            conv = node.op
            ch = getattr(conv, "update_channels", None)
            if ch is None:
                ch = np.arange(conv.out_channels, dtype=np.int64)
            ch = np.asarray(ch, dtype=np.int64) if conv.weight_trainable else None
            updates[node.name] = LayerUpdate(ch, bool(conv.bias_trainable))
    else:
        names = [n.name for n in convs]
        unknown = sorted(set(scheme.weights) - set(names))
        if unknown:
            raise KeyError(
                f"engine: the update scheme names unknown layers {unknown}; known: {names}"
            )
        depth = int(scheme.bias_depth)
        if depth < 0:
            raise ValueError(f"engine: bias_depth must be >= 0, got {depth}")
        chosen = dict(getattr(scheme, "channels", None) or {})
        for i, node in enumerate(convs):
            ratio = float(scheme.weights.get(node.name, 0.0))
            if not 0.0 <= ratio <= 1.0:
                raise ValueError(f"engine: ratio of {node.name!r} must lie in [0, 1], got {ratio}")
            ch = None
            if node.name in chosen:
                ch = np.unique(np.asarray(chosen[node.name], dtype=np.int64))
            elif ratio >= 1:
                ch = np.arange(node.op.out_channels, dtype=np.int64)
            elif ratio > 0:
                ch = top_l2_channels(node.op, ratio)
            updates[node.name] = LayerUpdate(ch, i >= len(convs) - depth)
    for node in convs:
        u = updates[node.name]
        u.full = u.channels is not None and len(u.channels) == node.op.out_channels
    return updates


def requires_grad(graph: Graph, updates: dict[str, LayerUpdate]) -> dict[str, bool]:
    """``tensor -> bool``: does backward need ``dL/d tensor``?

    It does when some trainable tensor lies at or before the node producing it (a gradient
    must reach that node). The input image never needs one.
    """
    req = {"input": False}
    for node in graph.nodes:
        own = node.kind == "conv" and (updates[node.name].weight or updates[node.name].bias)
        req[node.output] = own or any(req[t] for t in node.inputs)
    return req
