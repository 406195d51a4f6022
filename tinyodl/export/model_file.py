"""A float model in one ``.npz`` file: its layer spec (JSON) and its state (chapter 13).

The file is a :func:`tinyodl.checkpoint.save_checkpoint` file (atomic write, loaded without
unpickling) whose metadata says how to rebuild the model: either ``"spec"`` (the
``nn.layer_spec`` of any ``Sequential``) or ``"architecture"`` + ``"architecture_kwargs"``
(a builder of :mod:`tinyodl.models`; the shipped pretrained files use this form).
``tinyodl export MODEL.npz`` reads both.
"""

from __future__ import annotations

import os
from typing import Any

from tinyodl import nn
from tinyodl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

MODEL_FORMAT = "tinyodl-model"


def _freeze_order(obj: Any) -> Any:
    """Sequential children as ``[[name, spec], ...]``: JSON metadata is written key-sorted."""
    if isinstance(obj, dict):
        out = {k: _freeze_order(v) for k, v in obj.items()}
        if obj.get("type") in ("Sequential",) and isinstance(
            obj.get("config", {}).get("layers"), dict
        ):
            out["config"] = {
                **out["config"],
                "layers": [[k, _freeze_order(v)] for k, v in obj["config"]["layers"].items()],
            }
        return out
    if isinstance(obj, (list, tuple)):
        return [_freeze_order(v) for v in obj]
    return obj


def _thaw_order(obj: Any) -> Any:
    """Inverse of :func:`_freeze_order`: ``[name, spec]`` pairs become tuples again."""
    if isinstance(obj, dict):
        out = {k: _thaw_order(v) for k, v in obj.items()}
        layers = out.get("config", {}).get("layers") if obj.get("type") == "Sequential" else None
        if isinstance(layers, list):
            out["config"]["layers"] = [(str(k), v) for k, v in layers]
        return out
    if isinstance(obj, list):
        return [_thaw_order(v) for v in obj]
    return obj


def save_model(
    path: str | os.PathLike,
    model: nn.Layer,
    input_shape: tuple[int, ...] | None = None,
    **metadata: Any,
) -> None:
    """Write ``model`` (spec + ``state_dict()``) to ``path`` atomically.

    ``input_shape`` (with the batch, e.g. ``(1, 1, 28, 28)``) is stored for exporters.
    """
    meta = {
        "format": MODEL_FORMAT,
        "version": 1,
        "spec": _freeze_order(nn.layer_spec(model)),
        "input_shape": None if input_shape is None else [int(s) for s in input_shape],
        **metadata,
    }
    save_checkpoint(path, model.state_dict(), meta)


def load_model(path: str | os.PathLike) -> tuple[nn.Layer, dict[str, Any]]:
    """``(model, metadata)`` from a file of :func:`save_model` or a pretrained file.

    The model is in evaluation mode. Raises :class:`~tinyodl.checkpoint.CheckpointError`
    naming the file when it describes no model or its arrays do not fit.
    """
    arrays, meta = load_checkpoint(path)
    try:
        if "spec" in meta:
            model = nn.build_layer(_thaw_order(meta["spec"]))
        elif "architecture" in meta:
            from tinyodl import models

            builder = getattr(models, str(meta["architecture"]), None)
            if builder is None:
                raise CheckpointError(
                    f"{path}: unknown architecture {meta['architecture']!r} in the metadata"
                )
            model = builder(**meta.get("architecture_kwargs", {}))
        else:
            raise CheckpointError(
                f"{path}: not a model file (its metadata has neither 'spec' nor "
                "'architecture'; write one with tinyodl.export.save_model)"
            )
        model.load_state_dict(arrays)
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot rebuild the model: {err}") from err
    return model.eval(), meta
