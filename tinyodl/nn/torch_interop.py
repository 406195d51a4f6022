"""Moving weights between PyTorch and tinyodl (chapter 00; deployment in chapter 13).

Both libraries store a model as a flat dict of named arrays with the same layouts: linear
weights (out, in), convolution weights (F, C/groups, KH, KW), batchnorm ``weight``/``bias``
(gamma/beta) and ``running_mean``/``running_var`` buffers, NCHW activations (so a
``Flatten`` before a ``Linear`` orders features the same way). Only the *names* can differ,
and PyTorch's batchnorm has one more buffer, ``num_batches_tracked``, that tinyodl does not
keep (it only matters for ``momentum=None``); it is skipped on import and written on export.

* :func:`load_torch_state_dict` copies a PyTorch ``state_dict()`` into a tinyodl model;
* :func:`torch_state_dict` returns a tinyodl model's weights as a PyTorch ``state_dict``.

Names are matched in one of three ways (``mapping=``): ``"names"`` -- the PyTorch module
mirrors the tinyodl model's structure (``features.0.weight`` on both sides); ``"order"`` --
entries are paired in order (both libraries list a layer's parameters, then its buffers,
layer after layer), for a PyTorch model built with other names; or an explicit dict / a
function from PyTorch names to tinyodl names. Shapes are always checked, and nothing is
written unless every entry fits.

PyTorch is never imported by tinyodl itself: tensors are read through their ``detach()``,
``cpu()`` and ``numpy()`` methods, and ``torch`` is imported only when
:func:`torch_state_dict` is asked for tensors.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from tinyodl.nn.errors import StateDictError

__all__ = ["load_torch_state_dict", "torch_state_dict"]

#: The PyTorch-only batchnorm buffer, skipped on import and added on export.
NUM_BATCHES_TRACKED = "num_batches_tracked"

NameMap = str | Mapping[str, str] | Callable[[str], str | None]


def _to_numpy(value: Any, name: str) -> np.ndarray:
    """A PyTorch tensor (any device, with or without grad) or array-like as an ndarray."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        tensor = value.detach().cpu()
        try:
            value = tensor.numpy()
        except TypeError:  # bfloat16 and other types numpy lacks: go through float32
            value = tensor.float().numpy()
    array = np.asarray(value)
    if array.dtype.kind not in "fiu":
        raise StateDictError(
            f"load_torch_state_dict: {name!r} must be a numeric tensor, got dtype {array.dtype}"
        )
    return array


def _ours(model: Any) -> dict[str, np.ndarray]:
    """tinyodl's entries (parameters and buffers) by dotted name, in model order."""
    return model.state_dict()


def _pair_by_order(theirs: list[str], ours: list[str], shapes: dict, mine: dict) -> dict:
    if len(theirs) != len(ours):
        raise StateDictError(
            f"load_torch_state_dict: mapping='order' needs as many entries on both sides; "
            f"the PyTorch state dict has {len(theirs)} (without {NUM_BATCHES_TRACKED}), "
            f"the tinyodl model {len(ours)}"
        )
    for t, o in zip(theirs, ours, strict=True):
        if shapes[t] != mine[o].shape:
            raise StateDictError(
                f"load_torch_state_dict: mapping='order' pairs PyTorch {t!r} {shapes[t]} "
                f"with tinyodl {o!r} {mine[o].shape}: the shapes differ, so the two models "
                "do not list their layers in the same order; give an explicit mapping"
            )
    return dict(zip(theirs, ours, strict=True))


def _name_pairs(mapping: NameMap, theirs: list[str], mine: dict, shapes: dict) -> dict:
    """PyTorch name -> tinyodl name (entries mapped to None are left out)."""
    if mapping == "names":
        return {t: t for t in theirs}
    if mapping == "order":
        return _pair_by_order(theirs, list(mine), shapes, mine)
    if isinstance(mapping, Mapping):
        return {t: mapping.get(t, t) for t in theirs}
    if callable(mapping):
        pairs = {t: mapping(t) for t in theirs}
        return {t: o for t, o in pairs.items() if o is not None}
    raise ValueError(
        f"load_torch_state_dict: mapping must be 'names', 'order', a dict or a function, "
        f"got {mapping!r}"
    )


def _tracked_counts(model: Any, state_dict: Mapping[str, Any], inverse: dict) -> list:
    """(batchnorm layer, PyTorch's num_batches_tracked) for every batchnorm given one."""
    found = []
    for name, layer in [("", model), *model.named_layers()]:
        if "running_mean" not in layer.buffers:
            continue
        source = inverse.get(f"{name}.running_mean" if name else "running_mean")
        if source is None:
            continue
        key = source[: -len("running_mean")] + NUM_BATCHES_TRACKED
        if key in state_dict:
            found.append((layer, int(_to_numpy(state_dict[key], key))))
    return found


def load_torch_state_dict(
    model: Any, state_dict: Mapping[str, Any], mapping: NameMap = "names", strict: bool = True
) -> Any:
    """Copy a PyTorch ``state_dict()`` into the equivalent tinyodl model, in place.

    Parameters
    ----------
    model : tinyodl.nn.Layer
        The tinyodl model (its parameters keep their dtype; values are cast).
    state_dict : mapping of str -> torch.Tensor or array-like
        E.g. ``torch_model.state_dict()``. ``*.num_batches_tracked`` entries are skipped.
    mapping : "names", "order", dict or callable, default "names"
        How PyTorch names become tinyodl names (see the module docstring). A dict maps
        PyTorch names to tinyodl names (unlisted names stay as they are); a function
        returns the tinyodl name, or None to skip the entry.
    strict : bool, default True
        Every tinyodl parameter and buffer must be given, and every PyTorch entry used.

    Returns
    -------
    model
        The same model, for chaining.

    Raises
    ------
    StateDictError
        Naming the entries that are missing, unexpected or of the wrong shape (both names
        and both shapes). Nothing is written unless everything fits.
    """
    mine = _ours(model)
    arrays = {
        name: _to_numpy(value, name)
        for name, value in state_dict.items()
        if name.rsplit(".", 1)[-1] != NUM_BATCHES_TRACKED
    }
    shapes = {name: a.shape for name, a in arrays.items()}
    pairs = _name_pairs(mapping, list(arrays), mine, shapes)
    converted: dict[str, np.ndarray] = {}
    for theirs, ours in pairs.items():
        if ours in converted:
            raise StateDictError(f"load_torch_state_dict: two PyTorch entries map to {ours!r}")
        if ours in mine and arrays[theirs].shape != mine[ours].shape:
            raise StateDictError(
                f"load_torch_state_dict: PyTorch {theirs!r} has shape {arrays[theirs].shape}, "
                f"tinyodl {ours!r} has shape {mine[ours].shape}"
            )
        converted[ours] = arrays[theirs]
    unexpected = [t for t, o in pairs.items() if o not in mine]
    missing = [o for o in mine if o not in converted]
    if strict and (unexpected or missing):
        raise StateDictError(
            f"load_torch_state_dict: PyTorch entries with no tinyodl counterpart {unexpected}, "
            f"tinyodl entries not given {missing} (mapping={mapping!r}; the tinyodl model "
            f"has {list(mine)})"
        )
    tracked = _tracked_counts(model, state_dict, {o: t for t, o in pairs.items()})
    model.load_state_dict({o: a for o, a in converted.items() if o in mine}, strict=False)
    for layer, count in tracked:
        layer.num_batches_tracked = count
    return model


def _order_mapping(model: Any, names: list[str]) -> dict[str, str]:
    """tinyodl name -> PyTorch name, pairing ``names`` with the model's entries in order."""
    theirs = [n for n in names if n.rsplit(".", 1)[-1] != NUM_BATCHES_TRACKED]
    ours = list(model.state_dict())
    if len(theirs) != len(ours):
        raise StateDictError(
            f"torch_state_dict: {len(theirs)} PyTorch names (without {NUM_BATCHES_TRACKED}) "
            f"for the {len(ours)} entries of the tinyodl model"
        )
    return dict(zip(ours, theirs, strict=True))


def torch_state_dict(
    model: Any,
    mapping: Mapping[str, str] | Callable[[str], str] | list[str] | None = None,
    as_numpy: bool = False,
) -> OrderedDict:
    """The weights of a tinyodl model as a PyTorch ``state_dict``.

    Parameters
    ----------
    model : tinyodl.nn.Layer
    mapping : dict, callable or list of str, optional
        tinyodl name -> PyTorch name (default: the same names). A list of PyTorch names
        (e.g. ``list(torch_model.state_dict())``) is paired with the model's entries in
        order, like ``mapping="order"`` of :func:`load_torch_state_dict`.
    as_numpy : bool, default False
        Return numpy arrays instead of ``torch.Tensor`` (then PyTorch is not imported).

    Returns
    -------
    OrderedDict
        In model order; every batchnorm also gets ``<name>.num_batches_tracked`` (int64), so
        ``torch_model.load_state_dict(torch_state_dict(model))`` works with ``strict=True``.
    """

    if isinstance(mapping, list | tuple):
        mapping = _order_mapping(model, list(mapping))

    def rename(name: str) -> str:
        if mapping is None:
            return name
        return mapping(name) if callable(mapping) else mapping.get(name, name)

    out: OrderedDict = OrderedDict()
    for name, layer in [("", model), *model.named_layers()]:
        prefix = f"{name}." if name else ""
        for local, p in layer.params.items():
            out[rename(prefix + local)] = np.array(p.data, copy=True)
        for local, b in layer.buffers.items():
            out[rename(prefix + local)] = np.array(b, copy=True)
        if "running_mean" in layer.buffers:
            tracked = rename(prefix + "running_mean").rsplit(".", 1)
            key = (
                f"{tracked[0]}.{NUM_BATCHES_TRACKED}" if len(tracked) == 2 else NUM_BATCHES_TRACKED
            )
            out[key] = np.array(getattr(layer, NUM_BATCHES_TRACKED, 0), dtype=np.int64)
    if as_numpy:
        return out
    import torch

    return OrderedDict((k, torch.from_numpy(v)) for k, v in out.items())
