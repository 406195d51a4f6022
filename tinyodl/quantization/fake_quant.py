"""Fake quantization: the float-simulated twin of a quantized model, and QAT (chapter 03).

A fake-quantized layer computes in float but rounds and clamps where the integer model does,
so its outputs land on the same int8 grid (Jacob et al. 2018, section 3)::

    W~  = s_W * clamp(round(W / s_W), -127, 127)       s_W = max|W_c| / 127 per channel
    b~  = s_x s_W * round(b / (s_x s_W))                (int32 bias)
    y_q = clamp(round((conv(x, W~) + b~) / s_y) + zp_y, act_min, act_max)
    y   = s_y * (y_q - zp_y)

Built from a :class:`~tinyodl.quantization.QuantizedModel` (:func:`to_fake_quant`), it is
the model's *twin*: same weights, same scales; its outputs agree with the integer-only path
within one step of the grid (the integer path rounds the multiplier to 31 bits and rounds
twice). Trained (fake-quant QAT), gradients use the straight-through estimator (Bengio et
al. 2013): ``round`` is treated as the identity, so ``dL/dW = dL/dW~`` and a clamped output
passes no gradient -- the same mask the int8 graph uses (``ops.ste_clamp_backward``).
:func:`to_quantized` converts the trained twin back to an integer model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinyodl import nn
from tinyodl.nn import functional as F
from tinyodl.quant import WEIGHT_QMAX, choose_weight_scales, round_half_away
from tinyodl.quantization.qmodel import (
    QAdd,
    QConv,
    QFlatten,
    QGlobalAvgPool,
    QParams,
    QResidual,
    QuantizedModel,
)


def fake_quantize(
    x: np.ndarray,
    scale,
    zero_point,
    qmin: int,
    qmax: int,
    axis: int | None = None,
    rounding: bool = True,
):
    """``(s * (clamp(round(x / s) + zp, qmin, qmax) - zp), pass-mask)`` in ``x``'s dtype.

    The mask is True where ``qmin < q < qmax`` (the straight-through estimator's support).
    ``rounding=False`` skips the rounding: the *surrogate* function whose exact gradient is
    what the straight-through estimator computes (used to gradient-check the backward).
    """
    s = np.asarray(scale, dtype=np.float64)
    zp = np.asarray(zero_point, dtype=np.float64)
    if axis is not None and s.ndim:
        shape = [1] * x.ndim
        shape[axis] = -1
        s, zp = s.reshape(shape), zp.reshape(shape) if zp.ndim else zp
    q = (round_half_away(x / s) if rounding else x / s) + zp
    mask = (q > qmin) & (q < qmax)
    return (s * (np.clip(q, qmin, qmax) - zp)).astype(x.dtype), mask


class FakeQuantInput(nn.Layer):
    """Quantize-dequantize the float input onto the input grid (STE inside the range)."""

    def __init__(self, scale: float, zero_point: int, dtype: str = "float32") -> None:
        super().__init__(dtype)
        self.scale, self.zero_point = float(scale), int(zero_point)
        self.rounding = True  # False: the straight-through surrogate (gradient checks)

    def config(self) -> dict[str, Any]:
        return {"scale": self.scale, "zero_point": self.zero_point, "dtype": self.dtype.name}

    def _forward(self, x, train):
        y, mask = fake_quantize(x, self.scale, self.zero_point, -128, 127, rounding=self.rounding)
        self._save(mask=mask)
        return y

    def _backward(self, dout, per_example):
        return dout * self.saved["mask"]


class FakeQuantConv(nn.Layer):
    """A conv / depthwise conv / linear layer with fake-quantized weights, bias and output.

    Parameters
    ----------
    kind : {"conv", "depthwise", "linear"}
    weight_shape : tuple
        Shape of the float ``weight`` parameter (the ``bias`` has ``weight_shape[0]``).
    input_scale : float
        Scale of the (already fake-quantized) input; sets the bias grid ``s_x s_W``.
    output_scale, output_zero_point : the output's qparams
    act_min, act_max : int clamp bounds of the output (fused activation)
    stride, padding, groups : conv geometry
    """

    def __init__(
        self,
        kind: str,
        weight_shape: tuple[int, ...],
        input_scale: float,
        output_scale: float,
        output_zero_point: int,
        act_min: int = -128,
        act_max: int = 127,
        stride=(1, 1),
        padding=(0, 0),
        groups: int = 1,
        activation: str | None = None,
        dtype: str = "float32",
    ) -> None:
        super().__init__(dtype)
        self.kind, self.weight_shape = kind, tuple(int(s) for s in weight_shape)
        self.input_scale = float(input_scale)
        self.output_scale, self.output_zero_point = float(output_scale), int(output_zero_point)
        self.act_min, self.act_max, self.activation = int(act_min), int(act_max), activation
        self.stride, self.padding, self.groups = tuple(stride), tuple(padding), int(groups)
        self._param("weight", np.zeros(self.weight_shape))
        self._param("bias", np.zeros(self.weight_shape[0]))
        self._x_shape = None
        self.rounding = True  # False: the straight-through surrogate (gradient checks)

    def config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "weight_shape": self.weight_shape,
            "input_scale": self.input_scale,
            "output_scale": self.output_scale,
            "output_zero_point": self.output_zero_point,
            "act_min": self.act_min,
            "act_max": self.act_max,
            "stride": self.stride,
            "padding": self.padding,
            "groups": self.groups,
            "activation": self.activation,
            "dtype": self.dtype.name,
        }

    def quantized_parameters(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(W~, b~, s_W)``: the weights and bias on their grids, and the weight scales."""
        w, b = self.params["weight"].data, self.params["bias"].data
        s_w = choose_weight_scales(w, axis=0)
        w_fq, _ = fake_quantize(
            w, s_w, 0, -WEIGHT_QMAX - 1, WEIGHT_QMAX + 1, axis=0, rounding=self.rounding
        )
        if not self.rounding:
            return w_fq, b, s_w
        s_b = self.input_scale * s_w
        b_fq = (s_b * round_half_away(b / s_b)).astype(b.dtype)
        return w_fq, b_fq, s_w

    def output_shape(self, input_shape):
        if self.kind == "linear":
            return (int(input_shape[0]), self.params["weight"].data.shape[0])
        from tinyodl._shapes import conv_output_shape

        kh, kw = self.params["weight"].data.shape[2:]
        oh, ow = conv_output_shape(input_shape, (kh, kw), self.stride, self.padding)
        return (int(input_shape[0]), self.params["weight"].data.shape[0], oh, ow)

    def _forward(self, x, train):
        w_fq, b_fq, _ = self.quantized_parameters()
        if self.kind == "linear":
            acc, _ = F.linear_forward(x, w_fq, b_fq)
        else:
            acc, _ = F.conv2d_forward(x, w_fq, b_fq, self.stride, self.padding, self.groups)
        y, mask = fake_quantize(
            acc,
            self.output_scale,
            self.output_zero_point,
            self.act_min,
            self.act_max,
            rounding=self.rounding,
        )
        self._x_shape = x.shape
        self._save(mask=mask, w_fq=w_fq)
        if self.params["weight"].trainable:  # x is needed only for dW
            self._save(x=x)
        return y

    def _backward(self, dout, per_example):
        g = dout * self.saved["mask"]  # STE: rounding is the identity, the clamp is not
        cache = {"w": self.saved["w_fq"]}
        if "x" in self.saved:
            cache["x"] = self.saved["x"]
        if self.kind == "linear":
            dx, dw, db = F.linear_backward(g, cache)
        else:
            cache.update(x_shape=self._x_shape, stride=self.stride, padding=self.padding)
            dx, dw, db = F.conv2d_backward(g, {**cache, "groups": self.groups})
        if dw is not None:
            self.params["weight"].accumulate_grad(dw)  # straight through to the float weights
        self.params["bias"].accumulate_grad(db)
        return dx


class FakeQuantAdd(nn.Layer):
    """``y = fq(body(x) + x)``: a residual block whose sum lands on the output grid."""

    def __init__(self, body, scale: float, zero_point: int, dtype: str = "float32") -> None:
        super().__init__(dtype)
        self.body = nn.build_layer(body)
        self.scale, self.zero_point = float(scale), int(zero_point)
        self.rounding = True  # False: the straight-through surrogate (gradient checks)
        self._adopt("body", self.body)

    def children(self):
        return {"body": self.body}

    def config(self):
        return {
            "body": nn.layer_spec(self.body),
            "scale": self.scale,
            "zero_point": self.zero_point,
            "dtype": self.dtype.name,
        }

    def output_shape(self, input_shape):
        return self.body.output_shape(input_shape)

    def _forward(self, x, train):
        total = self.body.forward(x, self._requested_train) + x
        y, mask = fake_quantize(total, self.scale, self.zero_point, -128, 127, None, self.rounding)
        self._save(mask=mask)
        return y

    def _backward(self, dout, per_example):
        g = dout * self.saved["mask"]
        return self.body.backward(g, per_example) + g


class FakeQuantGlobalAvgPool(nn.GlobalAvgPool):
    """Global average pool rounded as ``avgpool2d_s8`` rounds: the mean of the integer
    values ``q`` (zero point included), half away from zero, on the input's grid."""

    def __init__(self, scale: float, zero_point: int, dtype: str = "float32") -> None:
        super().__init__(dtype)
        self.scale, self.zero_point = float(scale), int(zero_point)
        self.rounding = True  # False: the straight-through surrogate (gradient checks)

    def config(self):
        return {"scale": self.scale, "zero_point": self.zero_point, "dtype": self.dtype.name}

    def _forward(self, x, train):
        if not self.rounding:
            return super()._forward(x, train)
        self.output_shape(x.shape)
        self._x_shape = x.shape
        q = round_half_away(x / self.scale) + self.zero_point  # x is on the grid: exact
        q_mean = round_half_away(q.mean(axis=(2, 3)))
        return (self.scale * (q_mean - self.zero_point)).astype(x.dtype)  # never clamped


# ----------------------------------------------------------------------------- conversion


def _conv_to_layer(op: QConv) -> FakeQuantConv:
    layer = FakeQuantConv(
        op.kind,
        op.weight.shape,
        op.input.scale,
        op.output.scale,
        op.output.zero_point,
        op.act_min,
        op.act_max,
        op.stride,
        op.padding,
        op._groups(),
        op.activation,
    )
    s_w = op.weight_scale.reshape((-1,) + (1,) * (op.weight.ndim - 1))
    layer.params["weight"].data[...] = op.weight * s_w
    layer.params["bias"].data[...] = op.bias * (op.input.scale * op.weight_scale)
    return layer


def _ops_to_layers(ops: list) -> list[tuple[str, nn.Layer]]:
    layers = []
    for op in ops:
        if isinstance(op, QConv):
            layer = _conv_to_layer(op)
        elif isinstance(op, QResidual):
            body = nn.Sequential(_ops_to_layers(op.body))
            layer = FakeQuantAdd(body, op.add.output.scale, op.add.output.zero_point)
        elif isinstance(op, QGlobalAvgPool):
            layer = FakeQuantGlobalAvgPool(op.qparams.scale, op.qparams.zero_point)
        else:
            layer = nn.Flatten()
        layer.op_name = op.name  # the integer operation's name, kept for to_quantized
        layers.append((op.name.replace(".", "_"), layer))
    return layers


def to_fake_quant(qmodel: QuantizedModel) -> nn.Sequential:
    """The float-simulated twin of ``qmodel`` (dequantized weights, same scales), trainable.

    Children are named after the integer operations (dots become underscores); the first
    child, ``"input"``, fake-quantizes the float input.
    """
    layers = [("input", FakeQuantInput(qmodel.input.scale, qmodel.input.zero_point))]
    return nn.Sequential(layers + _ops_to_layers(qmodel.ops)).eval()


def _layers_to_ops(items: list[tuple[str, nn.Layer]], x_q: QParams) -> tuple[list, QParams]:
    ops: list = []
    for local, layer in items:
        name = getattr(layer, "op_name", local)
        if isinstance(layer, FakeQuantConv):
            w = layer.params["weight"].data
            _, b_fq, s_w = layer.quantized_parameters()
            wq = np.clip(round_half_away(w / s_w.reshape((-1,) + (1,) * (w.ndim - 1))), -127, 127)
            bq = round_half_away(b_fq.astype(np.float64) / (x_q.scale * s_w))
            out_q = QParams(layer.output_scale, layer.output_zero_point)
            geometry = (layer.stride, layer.padding, layer.groups)
            wq, bq = wq.astype(np.int8), bq.astype(np.int32)
            op = QConv(name, layer.kind, wq, bq, s_w, x_q, out_q, layer.activation, *geometry)
            ops.append(op)
            x_q = out_q
        elif isinstance(layer, FakeQuantAdd):
            body, body_q = _layers_to_ops(list(layer.body.children().items()), x_q)
            out_q = QParams(layer.scale, layer.zero_point)
            ops.append(QResidual(name, body, QAdd(f"{name}.add", body_q, x_q, out_q)))
            x_q = out_q
        elif isinstance(layer, FakeQuantGlobalAvgPool):
            ops.append(QGlobalAvgPool(name, x_q))
        else:
            ops.append(QFlatten(name))
    return ops, x_q


def to_quantized(fq_model: nn.Sequential) -> QuantizedModel:
    """Convert a (trained) fake-quant model from :func:`to_fake_quant` to integers.

    Weights are re-quantized per channel from their current values; activation qparams are
    the fixed ones the twin was built with.
    """
    children = fq_model.children()
    first = children.get("input")
    if not isinstance(first, FakeQuantInput):
        raise TypeError(
            "to_quantized: expected a model built by to_fake_quant (first child 'input')"
        )
    rest = [(k, v) for k, v in children.items() if k != "input"]
    input_q = QParams(first.scale, first.zero_point)
    ops, _ = _layers_to_ops(rest, input_q)
    return QuantizedModel(ops, input_q)
