"""``Sequential``: an ordered, named list of layers that is itself a layer (chapter 00).

Children are named ``"0"``, ``"1"``, ... when given as a list, or by the keys of a dict.
Nested containers give dotted names (``"features.0.weight"``), which is what
``named_parameters``, ``state_dict``, ``freeze`` and ``describe`` use. A container can be
edited like a list -- ``model[2]``, ``model["classifier"]``, ``model["features.0"]``,
``model[1:3]`` (a view sharing the layers), ``model[0] = layer``, ``insert``, ``append``,
``replace`` -- which is how later chapters swap layers (pruning, quantization, TinyTL).

Config: ``Sequential(**seq.config())`` rebuilds the architecture with freshly initialised
layers (each child is stored as ``{"type": ..., "config": ...}``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from tinyodl.nn.errors import LayerNotFoundError
from tinyodl.nn.layer import LAYER_TYPES, Layer
from tinyodl.nn.state import describe_row
from tinyodl.nn.utils import join_name, layer_label

LayerLike = Layer | Mapping[str, Any]


def build_layer(obj: LayerLike) -> Layer:
    """A Layer as is, or one built from a spec ``{"type": "Conv2d", "config": {...}}``."""
    if isinstance(obj, Layer):
        return obj
    if isinstance(obj, Mapping) and "type" in obj:
        kind = obj["type"]
        if kind not in LAYER_TYPES:
            raise ValueError(f"build_layer: unknown layer type {kind!r}")
        return LAYER_TYPES[kind](**obj.get("config", {}))
    raise TypeError(f"expected a Layer or a {{'type', 'config'}} spec, got {type(obj).__name__}")


def layer_spec(layer: Layer) -> dict[str, Any]:
    """``{"type": ..., "config": ...}`` of a layer (the inverse of :func:`build_layer`)."""
    return {"type": type(layer).__name__, "config": layer.config()}


class Sequential(Layer):
    """Layers applied one after the other; ``backward`` runs them in reverse.

    Parameters
    ----------
    layers : list of Layer, dict name -> Layer, or list of (name, Layer) pairs
        A layer may also be given as a spec ``{"type": ..., "config": ...}``.
    """

    def __init__(self, layers: Iterable | Mapping = ()) -> None:
        items = list(layers.items()) if isinstance(layers, Mapping) else list(layers)
        named = []
        for i, item in enumerate(items):
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
                named.append((item[0], build_layer(item[1])))
            else:
                named.append((str(i), build_layer(item)))
        super().__init__(named[0][1].dtype if named else "float32")
        self._layers: dict[str, Layer] = {}
        for local, layer in named:
            self._add(local, layer)

    def _check_name(self, local: str) -> None:
        if not isinstance(local, str) or "." in local or not local:
            raise ValueError(
                f"{layer_label(self)}: child names must be non-empty strings without '.', "
                f"got {local!r}"
            )
        if local in self._layers:
            raise ValueError(f"{layer_label(self)}: there is already a child named {local!r}")

    def _add(self, local: str, layer: Layer) -> None:
        self._check_name(local)
        self._adopt(local, layer)
        self._layers[local] = layer

    # ------------------------------------------------------------------ Layer API
    def children(self) -> dict[str, Layer]:
        return dict(self._layers)

    def config(self) -> dict[str, Any]:
        return {"layers": {local: layer_spec(child) for local, child in self._layers.items()}}

    def output_shape(self, input_shape):
        shape = tuple(int(s) for s in input_shape)
        for layer in self._layers.values():
            shape = layer.output_shape(shape)
        return shape

    def _forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        for layer in self._layers.values():
            x = layer.forward(x, self._requested_train)  # None: each child follows its mode
        return x

    def _backward(self, dout: np.ndarray, per_example: bool) -> np.ndarray:
        for layer in reversed(self._layers.values()):
            dout = layer.backward(dout, per_example)
        return dout

    def _describe(self, name, in_shape, rows):
        index = len(rows)
        if name:
            rows.append({})  # placeholder, filled once the output shape is known
        shape = in_shape
        for local, child in self._layers.items():
            shape = child._describe(join_name(name, local), shape, rows)
        if name:
            rows[index] = describe_row(self, name, in_shape, shape)
        return shape

    # ------------------------------------------------------------------ list-like editing
    def __len__(self) -> int:
        return len(self._layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(list(self._layers.values()))

    def names(self) -> list[str]:
        """Local names of the children, in order."""
        return list(self._layers)

    def _local(self, key: int | str) -> str:
        """Local child name for an index or a name."""
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            names = list(self._layers)
            if not -len(names) <= key < len(names):
                raise IndexError(f"{layer_label(self)}: index {key} out of range ({len(names)})")
            return names[key]
        if isinstance(key, str) and key in self._layers:
            return key
        raise LayerNotFoundError(
            f"{layer_label(self)}: no child {key!r}; children are {list(self._layers)}"
        )

    def __getitem__(self, key: int | str | slice) -> Layer:
        if isinstance(key, slice):
            return self._view(list(self._layers.items())[key])
        if isinstance(key, str) and "." in key:
            head, rest = key.split(".", 1)
            child = self[head]
            if not isinstance(child, Sequential):
                raise LayerNotFoundError(f"{layer_label(self)}: {head!r} has no children")
            return child[rest]
        return self._layers[self._local(key)]

    def __setitem__(self, key: int | str, layer: LayerLike) -> None:
        self.replace(key, layer)

    def __delitem__(self, key: int | str) -> None:
        del self._layers[self._local(key)]

    def replace(self, key: int | str, layer: LayerLike) -> Layer:
        """Put ``layer`` where ``key`` (index, name or dotted name) is; return the old layer."""
        if isinstance(key, str) and "." in key:
            parent_name, local = key.rsplit(".", 1)
            parent = self[parent_name]
            if not isinstance(parent, Sequential):
                raise LayerNotFoundError(f"{layer_label(self)}: {parent_name!r} has no children")
            return parent.replace(local, layer)
        local = self._local(key)
        old = self._layers[local]
        layer = build_layer(layer)
        self._adopt(local, layer)
        self._layers[local] = layer
        return old

    def insert(self, index: int, layer: LayerLike, name: str | None = None) -> None:
        """Insert ``layer`` before position ``index``; the default name is the next free int."""
        layer = build_layer(layer)
        local = name if name is not None else self._free_name()
        self._check_name(local)
        self._adopt(local, layer)
        items = list(self._layers.items())
        items.insert(index, (local, layer))
        self._layers = dict(items)

    def append(self, layer: LayerLike, name: str | None = None) -> None:
        """Add ``layer`` at the end (default name: the next free int)."""
        self.insert(len(self._layers), layer, name)

    def _free_name(self) -> str:
        i = len(self._layers)
        while str(i) in self._layers:
            i += 1
        return str(i)

    @classmethod
    def _view(cls, items: list[tuple[str, Layer]]) -> Sequential:
        """A Sequential over existing layers, keeping their names (used by slicing)."""
        view = Sequential.__new__(Sequential)
        Layer.__init__(view, items[0][1].dtype if items else "float32")
        view._layers = dict(items)
        return view
