"""Post-training quantization: fold batchnorm, calibrate activation ranges, convert (ch. 03).

The three steps of PTQ (Jacob et al. 2018; Krishnamoorthi 2018, "Quantizing deep
convolutional networks for efficient inference"):

1. :func:`fold_model` merges every Conv -> BatchNorm pair into one conv with a bias
   (:func:`tinyodl.nn.fold_batchnorm`); the batchnorm becomes an ``Identity``.
2. :func:`calibrate` runs the folded float model on a few hundred images and records the
   range of every tensor that will be quantized: the input, the output of each conv/linear
   *after* its activation (ReLU6 is fused: it becomes the clamp of the int8 output), and
   each residual sum. ``"minmax"`` keeps the extreme values; ``"percentile"`` the p-th and
   (100-p)-th percentiles of each batch, averaged over batches, which ignores rare outliers
   and spends the 256 levels on the bulk of the values.
3. :func:`quantize_model` converts: per-channel symmetric int8 weights
   (``s_W[c] = max|W_c| / 127``), per-tensor asymmetric int8 activations (scale and zero
   point covering the calibrated range, widened to include 0), int32 biases with scale
   ``s_x s_W[c]``, and the requantization multipliers/shifts of :mod:`tinyodl.quant`.

The model is described by a *plan*: a list of :class:`Unit` (conv + fused activation,
residual block, global average pool, flatten) built by :func:`plan_units` from the layer
tree. Supported layers: Conv2d, DepthwiseConv2d, Linear, BatchNorm2d after a conv,
ReLU/ReLU6 after a conv or linear, InvertedResidual, Add without a shortcut branch,
GlobalAvgPool, Flatten, Identity, Dropout (identity at inference).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinyodl import nn
from tinyodl.quant import choose_activation_qparams, quantize_bias, quantize_weights_per_channel
from tinyodl.quantization.qmodel import (
    QAdd,
    QConv,
    QFlatten,
    QGlobalAvgPool,
    QParams,
    QResidual,
    QuantizedModel,
)

CALIBRATION_METHODS = ("minmax", "percentile")
#: Range of the float input of the shipped models (``tinyodl.data.to_float``).
UNIT_INTERVAL = (0.0, 1.0)


# ----------------------------------------------------------------------------- folding


def _fold_children(container: nn.Sequential) -> None:
    names = container.names()
    for i, local in enumerate(names):
        child = container[local]
        nxt = container[names[i + 1]] if i + 1 < len(names) else None
        if isinstance(child, nn.Conv2d) and isinstance(nxt, nn.BatchNorm2d):
            container.replace(local, nn.fold_batchnorm(child, nxt))
            container.replace(names[i + 1], nn.Identity(dtype=child.dtype.name))
        elif isinstance(child, nn.Sequential):
            _fold_children(child)
        elif isinstance(child, nn.Add):
            for branch in (child.body, child.shortcut):
                if isinstance(branch, nn.Sequential):
                    _fold_children(branch)


def fold_model(model: nn.Sequential) -> nn.Sequential:
    """A copy of ``model`` with every Conv -> BatchNorm2d pair folded, in evaluation mode.

    The folded conv gets a bias; the batchnorm is replaced by ``nn.Identity`` so layer
    names stay as they were. ``fold_model(m).forward(x)`` equals ``m.eval().forward(x)``
    up to float rounding. The input model is not modified.
    """
    folded = copy.deepcopy(model)
    _fold_children(folded)
    for name, layer in folded.named_layers():
        if isinstance(layer, nn.BatchNorm2d):
            raise ValueError(
                f"fold_model: batchnorm {name!r} does not follow a convolution; it cannot be "
                "folded (PTQ needs every batchnorm right after a Conv2d)"
            )
    return folded.eval()


# ----------------------------------------------------------------------------- the plan


@dataclass(eq=False)
class Unit:
    """One quantized operation of the plan.

    ``kind``: ``"conv"`` (layer = Conv2d/DepthwiseConv2d/Linear, ``activation`` fused),
    ``"residual"`` (``body`` = units; the skip adds the block input), ``"gap"``,
    ``"flatten"``. ``name`` is the dotted name of the layer (or of the block).
    """

    kind: str
    name: str
    layer: Any = None
    activation: str | None = None
    body: list = field(default_factory=list)


_SKIP = (nn.Identity, nn.Dropout)


def _activation_of(layer) -> str | None:
    if type(layer) is nn.ReLU6:
        return "relu6"
    if type(layer) is nn.ReLU:
        return "relu"
    return None


def _plan_sequence(items: list[tuple[str, Any]]) -> list[Unit]:
    units: list[Unit] = []
    for name, layer in items:
        act = _activation_of(layer)
        if isinstance(layer, _SKIP):
            continue
        if act is not None:
            if not units or units[-1].kind != "conv" or units[-1].activation is not None:
                raise NotImplementedError(
                    f"plan_units: activation {name!r} must directly follow a conv or linear "
                    "layer to be fused into its int8 output"
                )
            units[-1].activation = act
        elif isinstance(layer, (nn.Conv2d, nn.Linear)):
            units.append(Unit("conv", name, layer))
        elif isinstance(layer, nn.InvertedResidual):
            body = _plan_sequence(_named_children(layer, name))
            units += [Unit("residual", name, layer, body=body)] if layer.use_residual else body
        elif isinstance(layer, nn.Add) and layer.shortcut is None:
            body = _plan_layer(layer.body, f"{name}.body")
            units.append(Unit("residual", name, layer, body=body))
        elif type(layer) is nn.Sequential:
            units += _plan_sequence(_named_children(layer, name))
        elif isinstance(layer, nn.GlobalAvgPool):
            units.append(Unit("gap", name, layer))
        elif isinstance(layer, nn.Flatten):
            units.append(Unit("flatten", name, layer))
        else:
            raise NotImplementedError(
                f"plan_units: layer {name!r} of type {type(layer).__name__} has no int8 "
                "implementation in tinyodl.quantization"
            )
    return units


def _named_children(layer, prefix: str) -> list[tuple[str, Any]]:
    return [(f"{prefix}.{k}" if prefix else k, v) for k, v in layer.children().items()]


def _plan_layer(layer, name: str) -> list[Unit]:
    if isinstance(layer, nn.Sequential):
        return _plan_sequence(_named_children(layer, name))
    return _plan_sequence([(name, layer)])


def plan_units(model: nn.Sequential) -> list[Unit]:
    """The list of quantizable units of a *folded* model (see :class:`Unit`)."""
    units = _plan_sequence(_named_children(model, ""))
    if not units or units[-1].kind != "conv" or units[-1].activation is not None:
        raise NotImplementedError("plan_units: the model must end with a linear layer (logits)")
    return units


# ----------------------------------------------------------------------------- float run


def _act(x: np.ndarray, activation: str | None) -> np.ndarray:
    if activation == "relu6":
        return np.clip(x, 0, 6)
    return np.maximum(x, 0) if activation == "relu" else x


def run_units(units: list[Unit], x: np.ndarray, observe=None) -> np.ndarray:
    """Float forward pass through the plan; ``observe(name, tensor)`` sees each quant point."""
    for u in units:
        if u.kind == "conv":
            x = _act(u.layer.forward(x, train=False), u.activation)
            if observe:
                observe(u.name, x)
        elif u.kind == "residual":
            x = run_units(u.body, x, observe) + x
            if observe:
                observe(u.name, x)
        elif u.kind == "gap":
            x = x.mean(axis=(2, 3))
        else:
            x = x.reshape(x.shape[0], -1)
    return x


class _RangeObserver:
    """Collects per-tensor ranges: global min/max, or batch percentiles averaged."""

    def __init__(self, method: str, percentile: float) -> None:
        if method not in CALIBRATION_METHODS:
            raise ValueError(
                f"calibrate: method must be one of {CALIBRATION_METHODS}, got {method!r}"
            )
        if not 50.0 < percentile <= 100.0:
            raise ValueError(f"calibrate: percentile must be in (50, 100], got {percentile}")
        self.method, self.percentile = method, percentile
        self.stats: dict[str, list[tuple[float, float]]] = {}

    def __call__(self, name: str, x: np.ndarray) -> None:
        if self.method == "minmax":
            lo, hi = float(x.min()), float(x.max())
        else:
            lo, hi = (float(v) for v in np.percentile(x, [100 - self.percentile, self.percentile]))
        self.stats.setdefault(name, []).append((lo, hi))

    def ranges(self) -> dict[str, tuple[float, float]]:
        out = {}
        for name, pairs in self.stats.items():
            lows, highs = np.array(pairs).T
            if self.method == "minmax":
                out[name] = (float(lows.min()), float(highs.max()))
            else:
                out[name] = (float(lows.mean()), float(highs.mean()))
        return out


def calibrate(
    units: list[Unit],
    x: np.ndarray,
    method: str = "minmax",
    percentile: float = 99.99,
    batch_size: int = 128,
) -> dict[str, tuple[float, float]]:
    """Activation ranges ``{name: (lo, hi)}`` of every quantization point of the plan.

    Parameters
    ----------
    units : list of Unit
        From :func:`plan_units` of a folded model.
    x : float array (N, ...)
        Calibration inputs (a few hundred typical images; labels are not needed).
    method : {"minmax", "percentile"}
    percentile : float, default 99.99
        For ``"percentile"``: the upper percentile (the lower is ``100 - percentile``).
    batch_size : int
    """
    observer = _RangeObserver(method, percentile)
    for start in range(0, len(x), batch_size):
        run_units(units, x[start : start + batch_size], observer)
    return observer.ranges()


# ----------------------------------------------------------------------------- convert


def _qparams(lo: float, hi: float) -> QParams:
    scale, zp = choose_activation_qparams(lo, hi)
    return QParams(scale, zp)


def _convert(units: list[Unit], ranges: dict, x_q: QParams) -> tuple[list, QParams]:
    ops: list = []
    for u in units:
        if u.kind == "conv":
            op = convert_layer(u.name, u.layer, x_q, _qparams(*ranges[u.name]), u.activation)
            ops.append(op)
            x_q = op.output
        elif u.kind == "residual":
            body, body_q = _convert(u.body, ranges, x_q)
            out_q = _qparams(*ranges[u.name])
            ops.append(QResidual(u.name, body, QAdd(f"{u.name}.add", body_q, x_q, out_q)))
            x_q = out_q
        elif u.kind == "gap":
            ops.append(QGlobalAvgPool(u.name, x_q))
        else:
            ops.append(QFlatten(u.name))
    return ops, x_q


def convert_layer(
    name: str, layer: Any, input_q: QParams, output_q: QParams, activation: str | None
) -> QConv:
    """One float Conv2d/DepthwiseConv2d/Linear (bias optional) -> :class:`QConv`."""
    w = layer.params["weight"].data
    b = layer.params["bias"].data if "bias" in layer.params else np.zeros(w.shape[0])
    wq, w_scale = quantize_weights_per_channel(w, axis=0)
    bq = quantize_bias(b, input_q.scale, w_scale)
    if isinstance(layer, nn.Linear):
        kind, geometry = "linear", {}
    else:
        depthwise = layer.groups == layer.in_channels == layer.out_channels and layer.groups > 1
        kind = "depthwise" if depthwise else "conv"
        geometry = {"stride": layer.stride, "padding": layer.padding, "groups": layer.groups}
    return QConv(name, kind, wq, bq, w_scale, input_q, output_q, activation, **geometry)


def quantize_model(
    model: nn.Sequential,
    x_calib: np.ndarray,
    method: str = "minmax",
    percentile: float = 99.99,
    input_range: tuple[float, float] = UNIT_INTERVAL,
    output_range: tuple[float, float] | None = None,
    rounding: str = "double",
) -> QuantizedModel:
    """Post-training quantization of a float model: fold, calibrate, convert.

    Parameters
    ----------
    model : nn.Sequential
        Float model (e.g. ``tinyodl.tasks.pretrained("B")``); not modified.
    x_calib : float array (N, C, H, W)
        Calibration images (a few hundred; no labels).
    method, percentile
        See :func:`calibrate`.
    input_range : (float, float), default (0, 1)
        Range of the model input; (0, 1) gives scale 1/255 and zero point -128, which
        represents every ``to_float`` MNIST pixel exactly.
    output_range : (float, float), optional
        Use this range for the logits instead of the calibrated one -- for a freshly
        initialised head, whose calibrated range (a few tenths) would clamp the logits as
        soon as training makes them grow (and a clamped logit passes no gradient).
    rounding : {"double", "single"}
        Requantization rounding (see :class:`~tinyodl.quantization.QConv`).

    Returns
    -------
    QuantizedModel
    """
    units = plan_units(fold_model(model))
    ranges = calibrate(units, np.asarray(x_calib, dtype=np.float32), method, percentile)
    if output_range is not None:
        ranges[units[-1].name] = tuple(float(v) for v in output_range)
    input_q = _qparams(*input_range)
    ops, _ = _convert(units, ranges, input_q)
    return QuantizedModel(ops, input_q).set_rounding(rounding)


def float_nbytes(model: nn.Layer) -> int:
    """Bytes of a float model's parameters and buffers (what it stores)."""
    return sum(p.data.nbytes for p in model.parameters()) + sum(
        b.nbytes for _, b in model.named_buffers()
    )
