"""Structured (channel) pruning: remove whole filters, so the layers physically shrink.

A zero weight still costs a multiply in a dense kernel; unstructured sparsity pays off only
with sparse kernels and at high sparsity. Removing a whole output *channel* of a
convolution (a row of a linear layer) instead gives a smaller dense layer that every
kernel runs faster (Li et al., ICLR 2017, "Pruning filters for efficient ConvNets"; He et
al., ICCV 2017, "Channel pruning for accelerating very deep neural networks").

Removing channel ``c`` of a *producer* layer touches every layer that reads it:

* the producer: its filter ``c`` (``W[c]``, ``b[c]``);
* per-channel *followers*: the batchnorm after it (``gamma[c]``, ``beta[c]`` and the
  running statistics), a depthwise convolution (its filter ``c``);
* the *consumer*, the next Conv2d/Linear: its input channel ``c`` (``W[:, c]``). After a
  ``Flatten`` of (C, H, W) feature maps, channel ``c`` is the ``H*W`` consecutive columns
  ``c*H*W ... (c+1)*H*W - 1`` of the next linear layer.

Layers in between that act on each channel separately (ReLU, pooling, dropout) are left
alone. A residual connection adds a block's input to its output, so the channels on either
side of the addition must stay aligned: :func:`channel_groups` only forms groups whose
producer, followers and consumer sit inside the same residual block (or all outside
any), which in an inverted residual block is the expanded "hidden" width -- where
MobileNetV2/MCUNet keep most of their computation. Channels are ranked by the L1 norm of
their filters (Li et al.) or by the batchnorm scale ``|gamma|`` (Liu et al., ICCV 2017,
"network slimming"). Chapter 02 (pruning).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinyodl.nn import (
    Add,
    AvgPool2d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Flatten,
    GlobalAvgPool,
    Identity,
    InvertedResidual,
    Layer,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
)

#: Layers that act on each channel separately: the channel index passes through unchanged.
PASS_THROUGH = (ReLU, MaxPool2d, AvgPool2d, GlobalAvgPool, Dropout, Identity)
CRITERIA = ("l1", "l2", "bn_gamma")


@dataclass
class ChannelGroup:
    """Channels that can be removed together.

    Attributes
    ----------
    producer : str
        Dotted name of the Conv2d/Linear whose output channels these are.
    followers : list of str
        BatchNorm2d and depthwise convolutions that act per channel in between.
    consumer : str
        The next Conv2d/Linear, whose input channels these are.
    channels : int
        Number of channels now.
    spatial : int
        Columns per channel in the consumer (``H*W`` after a Flatten, else 1).
    """

    producer: str
    followers: list[str]
    consumer: str
    channels: int
    spatial: int = 1


def _is_depthwise(layer: Layer) -> bool:
    return (
        isinstance(layer, Conv2d)
        and layer.groups > 1
        and layer.groups == layer.in_channels == layer.out_channels
    )


def _leaves(layer: Layer, prefix: str = "", scope: str = "") -> list[tuple[str, Layer, str]]:
    """Leaf layers in execution order with the residual scope each belongs to."""
    out = []
    for local, child in layer.children().items():
        name = f"{prefix}.{local}" if prefix else local
        if isinstance(child, Add):
            for part, sub in child.children().items():  # body and shortcut run side by side
                out += _leaves(sub, f"{name}.{part}", f"{name}.{part}")
        elif isinstance(child, InvertedResidual):
            out += _leaves(child, name, name)
        elif child.children():
            out += _leaves(child, name, scope)
        else:
            out.append((name, child, scope))
    return out


def channel_groups(model: Layer, input_shape: tuple[int, ...]) -> list[ChannelGroup]:
    """Every group of channels that can be pruned, in model order.

    Parameters
    ----------
    model : tinyodl.nn.Sequential
    input_shape : tuple
        Shape of one input without the batch, e.g. ``(1, 28, 28)`` (needed to know how many
        columns of a linear layer after a Flatten belong to one channel).

    Returns
    -------
    list of ChannelGroup
    """
    shapes = {r["name"]: r["input_shape"] for r in model.describe((1, *input_shape))}
    leaves = _leaves(model)
    groups = []
    for i, (pname, producer, scope) in enumerate(leaves):
        if not isinstance(producer, (Conv2d, Linear)) or _is_depthwise(producer):
            continue
        if isinstance(producer, Conv2d) and producer.groups != 1:
            continue
        followers, spatial = [], 1
        channels = producer.out_features if isinstance(producer, Linear) else producer.out_channels
        for name, layer, sc in leaves[i + 1 :]:
            if sc != scope:
                break
            if isinstance(layer, BatchNorm2d) or _is_depthwise(layer):
                followers.append(name)
            elif isinstance(layer, Flatten):
                spatial = int(np.prod(shapes[name][2:], dtype=np.int64))
            elif isinstance(layer, PASS_THROUGH):
                continue
            elif (
                isinstance(layer, Conv2d)
                and layer.groups == 1
                and spatial == 1
                and layer.in_channels == channels
            ) or (isinstance(layer, Linear) and layer.in_features == channels * spatial):
                groups.append(ChannelGroup(pname, followers, name, channels, spatial))
                break
            else:
                break  # a layer we cannot see through: the channels stay
    return groups


def get_layer(model: Layer, name: str) -> Layer:
    """The sub-layer at a dotted name (through any container, ``Add`` included)."""
    layer = model
    for part in name.split("."):
        kids = layer.children()
        if part not in kids:
            raise KeyError(f"get_layer: no layer {name!r} (no child {part!r})")
        layer = kids[part]
    return layer


def _set_layer(model: Layer, name: str, new: Layer) -> None:
    parent_name, _, local = name.rpartition(".")
    parent = get_layer(model, parent_name) if parent_name else model
    if isinstance(parent, Sequential):
        parent.replace(local, new)
    else:  # Add: body / shortcut attributes
        setattr(parent, local, new)
        parent._adopt(local, new)


def _rebuild(layer: Layer, cfg: dict[str, Any], arrays: dict[str, np.ndarray]) -> Layer:
    """A new layer of the same type from ``cfg``, with ``arrays`` as parameters/buffers."""
    new = type(layer)(**cfg)
    for key, value in arrays.items():
        target = new.params[key].data if key in new.params else new.buffers[key]
        target[...] = value
    for key, p in layer.params.items():
        new.params[key].trainable = p.trainable
    new.training = layer.training
    return new


def _slice(layer: Layer, out_keep=None, in_keep=None) -> Layer:
    """``layer`` with only the output channels ``out_keep`` / input columns ``in_keep``."""
    cfg = layer.config()
    arrays = {k: p.data for k, p in layer.params.items()}
    arrays.update(layer.buffers)
    if isinstance(layer, BatchNorm2d):
        cfg["num_features"] = len(out_keep)
        return _rebuild(layer, cfg, {k: v[out_keep] for k, v in arrays.items()})
    if _is_depthwise(layer):
        n = len(out_keep)
        if "channels" in cfg:
            cfg["channels"] = n
        else:
            cfg.update(in_channels=n, out_channels=n, groups=n)
        return _rebuild(layer, cfg, {k: v[out_keep] for k, v in arrays.items()})
    out_key, in_key = (
        ("out_features", "in_features")
        if isinstance(layer, Linear)
        else ("out_channels", "in_channels")
    )
    if out_keep is not None:
        cfg[out_key] = len(out_keep)
        arrays = {k: v[out_keep] for k, v in arrays.items()}
    if in_keep is not None:
        cfg[in_key] = len(in_keep)
        arrays["weight"] = arrays["weight"][:, in_keep]
    return _rebuild(layer, cfg, arrays)


def channel_scores(model: Layer, group: ChannelGroup, criterion: str = "l1") -> np.ndarray:
    """Importance of each channel of ``group`` (larger = more important), shape (C,)."""
    if criterion not in CRITERIA:
        raise ValueError(f"channel_scores: criterion must be one of {CRITERIA}, got {criterion!r}")
    if criterion == "bn_gamma":
        bns = [f for f in group.followers if isinstance(get_layer(model, f), BatchNorm2d)]
        if not bns:
            raise ValueError(
                f"channel_scores: criterion 'bn_gamma' needs a BatchNorm2d after "
                f"{group.producer!r}; it has none (use 'l1')"
            )
        return np.abs(get_layer(model, bns[0]).params["weight"].data).astype(np.float64)
    w = get_layer(model, group.producer).params["weight"].data.reshape(group.channels, -1)
    w = w.astype(np.float64)
    return np.abs(w).sum(axis=1) if criterion == "l1" else np.sqrt((w**2).sum(axis=1))


def prune_group(model: Layer, group: ChannelGroup, keep: np.ndarray) -> ChannelGroup:
    """Keep only the channels ``keep`` of ``group``, in place; returns the shrunk group.

    Parameters
    ----------
    model : tinyodl.nn.Layer
    group : ChannelGroup
        From :func:`channel_groups` on this model.
    keep : array of int
        Channel indices to keep (sorted, unique, at least one).
    """
    keep = np.unique(np.asarray(keep, dtype=np.int64))
    if keep.size == 0 or keep[0] < 0 or keep[-1] >= group.channels:
        raise ValueError(
            f"prune_group: keep must hold 1 to {group.channels} channel indices of "
            f"{group.producer!r} in [0, {group.channels}), got {keep.tolist()}"
        )
    _set_layer(model, group.producer, _slice(get_layer(model, group.producer), out_keep=keep))
    for name in group.followers:
        _set_layer(model, name, _slice(get_layer(model, name), out_keep=keep))
    columns = (keep[:, None] * group.spatial + np.arange(group.spatial)).ravel()
    _set_layer(model, group.consumer, _slice(get_layer(model, group.consumer), in_keep=columns))
    return ChannelGroup(group.producer, group.followers, group.consumer, len(keep), group.spatial)


def channel_prune(
    model: Layer,
    amount: float | dict[str, float],
    input_shape: tuple[int, ...],
    criterion: str = "l1",
) -> Layer:
    """A copy of ``model`` with a fraction of the channels of each group removed.

    Parameters
    ----------
    model : tinyodl.nn.Layer
        Not modified.
    amount : float or dict producer name -> float
        Fraction of channels to remove (rounded; at least one channel stays). A float
        applies to every group of :func:`channel_groups`; a dict to the groups it names.
    input_shape : tuple
        One input's shape without the batch, e.g. ``(1, 28, 28)``.
    criterion : {"l1", "l2", "bn_gamma"}, default "l1"

    Returns
    -------
    tinyodl.nn.Layer
        The pruned copy (smaller dense layers, the same interface).
    """
    pruned = copy.deepcopy(model)
    groups = {g.producer: g for g in channel_groups(pruned, input_shape)}
    plan = {name: amount for name in groups} if not isinstance(amount, dict) else amount
    unknown = [n for n in plan if n not in groups]
    if unknown:
        raise KeyError(f"channel_prune: {unknown} are not prunable groups; groups: {list(groups)}")
    for name, frac in plan.items():
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"channel_prune: amount for {name!r} must be in [0, 1), got {frac}")
        group = groups[name]
        n_keep = max(1, group.channels - int(round(frac * group.channels)))
        if n_keep == group.channels:
            continue
        scores = channel_scores(pruned, group, criterion)
        keep = np.sort(np.argsort(-scores, kind="stable")[:n_keep])
        prune_group(pruned, group, keep)
    return pruned
