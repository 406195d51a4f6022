"""Small helpers shared by the ONNX exporters (chapter 13): a graph under construction."""

from __future__ import annotations

from typing import Any

import numpy as np

#: The ONNX opset tinyodl writes (onnx 1.17+ and onnxruntime 1.20+ run it).
OPSET = 18


class ExportError(ValueError):
    """A model (or one of its layers) that a format cannot hold; the message names it."""


def require_onnx():
    """Import ``onnx`` or explain which extra installs it."""
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "tinyodl.export: ONNX export needs the 'onnx' package; "
            "install it with: pip install 'tinyodl[deploy]'"
        ) from exc
    return onnx


class GraphBuilder:
    """Nodes, initializers and fresh tensor names of an ONNX graph being written."""

    def __init__(self) -> None:
        self.onnx = require_onnx()
        self.nodes: list = []
        self.initializers: list = []
        self._used: set[str] = set()

    def name(self, hint: str) -> str:
        """A tensor/node name based on ``hint`` that is not taken yet."""
        base = hint.replace("/", ".") or "t"
        name, i = base, 1
        while name in self._used:
            name, i = f"{base}_{i}", i + 1
        self._used.add(name)
        return name

    def const(self, hint: str, value: Any, dtype: Any = None) -> str:
        """Add an initializer; returns its name."""
        arr = np.asarray(value, dtype=dtype)
        name = self.name(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(arr, name))
        return name

    def node(self, op: str, inputs: list[str], hint: str, **attrs: Any) -> str:
        """Add a node with one output; returns the output's name."""
        out = self.name(hint)
        self.nodes.append(
            self.onnx.helper.make_node(op, inputs, [out], name=self.name(f"{hint}/{op}"), **attrs)
        )
        return out

    def model(self, inputs: list, outputs: list, graph_name: str, doc: str = ""):
        """The finished, checked ``onnx.ModelProto``."""
        helper = self.onnx.helper
        graph = helper.make_graph(self.nodes, graph_name, inputs, outputs, self.initializers)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="tinyodl",
            doc_string=doc,
        )
        model.ir_version = min(model.ir_version, 10)
        self.onnx.checker.check_model(model, full_check=True)
        return model


def value_info(name: str, elem_type: int, shape: tuple) -> Any:
    """A graph input/output declaration; a ``None`` dimension becomes the symbol ``N``."""
    onnx = require_onnx()
    dims = ["N" if d is None else int(d) for d in shape]
    return onnx.helper.make_tensor_value_info(name, elem_type, dims)


def save_model(model: Any, path: Any) -> None:
    """Write an ONNX model atomically (temporary file, fsync, rename)."""
    from tinyodl.export._files import write_bytes_atomic

    write_bytes_atomic(path, model.SerializeToString())
