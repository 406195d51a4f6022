"""Whole-model state: state dicts, freezing, describe rows, flat parameter vectors.

These functions work on any :class:`~tinyodl.nn.layer.Layer` through its tree-walking
methods (``named_layers``, ``named_parameters``, ``named_buffers``); the Layer methods of
the same names call them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tinyodl.nn.errors import LayerNotFoundError, StateDictError
from tinyodl.nn.parameter import Parameter
from tinyodl.nn.utils import join_name

# ----------------------------------------------------------------------------- state dicts


def _entries(model) -> dict[str, tuple[str, object, str]]:
    """Dotted name -> (kind, owner, local key) for every parameter and buffer."""
    entries: dict[str, tuple[str, object, str]] = {}
    layers = [("", model), *model.named_layers()]
    for lname, layer in layers:
        for local, p in layer.params.items():
            entries[join_name(lname, local)] = ("param", p, local)
        for local in layer.buffers:
            entries[join_name(lname, local)] = ("buffer", layer, local)
    return entries


def state_dict(model) -> dict[str, np.ndarray]:
    """Copies of all parameters and buffers, keyed by dotted name, in model order."""
    out: dict[str, np.ndarray] = {}
    for name, (kind, owner, local) in _entries(model).items():
        value = owner.data if kind == "param" else owner.buffers[local]
        out[name] = np.array(value, copy=True)
    return out


def check_state_dict(
    model, state: dict[str, np.ndarray], strict: bool = True
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Validate ``state`` against ``model`` without writing anything.

    Returns the ``(target, value)`` pairs that :func:`load_state_dict` copies. Raises
    :class:`StateDictError` naming every missing/unexpected key (if strict), or the first
    entry with a wrong shape or a non-numeric dtype.
    """
    if not isinstance(state, dict):
        raise StateDictError(
            f"load_state_dict: expected a dict name -> array, got {type(state).__name__}"
        )
    entries = _entries(model)
    missing = [k for k in entries if k not in state]
    unexpected = [k for k in state if k not in entries]
    if strict and (missing or unexpected):
        raise StateDictError(
            f"load_state_dict: missing keys {missing}, unexpected keys {unexpected} "
            f"(the model has {list(entries)})"
        )
    pairs = []
    for name, (kind, owner, local) in entries.items():
        if name not in state:
            continue
        value = np.asarray(state[name])
        target = owner.data if kind == "param" else owner.buffers[local]
        if value.shape != target.shape:
            raise StateDictError(
                f"load_state_dict: {name!r} expected shape {target.shape}, got {value.shape}"
            )
        if value.dtype.kind not in "fiu":
            raise StateDictError(
                f"load_state_dict: {name!r} must be a numeric array, got dtype {value.dtype}"
            )
        pairs.append((target, value))
    return pairs


def load_state_dict(model, state: dict[str, np.ndarray], strict: bool = True) -> None:
    """Copy ``state`` into ``model`` in place, checking keys (if strict) and shapes.

    All or nothing: every entry is validated before the first one is written, so a state
    that does not fit leaves the model untouched.
    """
    for target, value in check_state_dict(model, state, strict):
        np.copyto(target, value, casting="unsafe")


# ----------------------------------------------------------------------------- freezing


def _matches(target, lname: str, pname: str, layer) -> bool:
    if callable(target):
        return bool(target(lname, layer))
    if not isinstance(target, str):
        raise TypeError(f"freeze: targets must be names or callables, got {target!r}")
    if target == "":
        return True
    for name in (lname, pname):
        if name == target or name.startswith(target + "."):
            return True
    return False


def set_trainable(
    model,
    targets: tuple[str | Callable, ...],
    kind: str | None,
    trainable: bool,
    fn: str,
) -> None:
    """Set ``trainable`` on the parameters selected by ``targets`` and ``kind``."""
    if kind is not None and kind not in ("weight", "bias"):
        raise ValueError(f"{fn}: kind must be 'weight', 'bias' or None, got {kind!r}")
    hits = {t: 0 for t in targets if isinstance(t, str)}
    for lname, layer in [("", model), *model.named_layers()]:
        for local, p in layer.params.items():
            pname = join_name(lname, local)
            chosen = [t for t in targets if _matches(t, lname, pname, layer)]
            for t in chosen:
                if isinstance(t, str):
                    hits[t] += 1
            if (chosen or not targets) and (kind is None or local == kind):
                p.trainable = trainable
    unknown = [t for t, n in hits.items() if n == 0]
    if unknown:
        names = [n for n, _ in model.named_layers()]
        raise LayerNotFoundError(f"{fn}: no layer or parameter named {unknown}; layers are {names}")


# ----------------------------------------------------------------------------- describe


def describe_row(layer, name: str, in_shape, out_shape) -> dict[str, Any]:
    """One row of :meth:`Layer.describe`."""
    children = list(layer.children())
    return {
        "name": name,
        "type": type(layer).__name__,
        "config": layer.config(),
        "input_shape": tuple(in_shape),
        "output_shape": tuple(out_shape),
        "num_params": layer.num_params(),
        "leaf": not children,
        "children": children,
    }


# ----------------------------------------------------------------------------- flat vectors


def _param_list(params) -> list[Parameter]:
    if hasattr(params, "parameters"):
        return list(params.parameters())
    return list(params)


def parameters_to_vector(params: object, trainable_only: bool = False) -> np.ndarray:
    """Concatenate parameters (a model or an iterable of Parameters) into one 1-D array.

    The order is model order (:meth:`Layer.named_parameters`); the dtype is that of the
    parameters. Used for federated updates and model differences (chapters 09, 13).
    """
    plist = [p for p in _param_list(params) if p.trainable or not trainable_only]
    if not plist:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate([p.data.ravel() for p in plist])


def vector_to_parameters(vec: np.ndarray, params: object, trainable_only: bool = False) -> None:
    """Copy a flat vector back into the parameters, in place (inverse of the above)."""
    plist = [p for p in _param_list(params) if p.trainable or not trainable_only]
    vec = np.asarray(vec)
    total = sum(p.size for p in plist)
    if vec.ndim != 1 or vec.size != total:
        raise ValueError(
            f"vector_to_parameters: expected a 1-D vector of {total} values, got shape {vec.shape}"
        )
    offset = 0
    for p in plist:
        p.data[...] = vec[offset : offset + p.size].reshape(p.shape)
        offset += p.size
