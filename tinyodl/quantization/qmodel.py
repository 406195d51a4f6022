"""The quantized model: int8 tensors, quantization parameters, integer-only forward (and back).

Chapter 03. A :class:`QuantizedModel` is a list of integer operations; between
:meth:`QuantizedModel.quantize_input` and :meth:`QuantizedModel.dequantize_output` every
value is int8 (activations, weights) or int32 (biases, accumulators), and every operation
runs through :mod:`tinyodl.ops` -- ``conv2d_s8``, ``depthwise_conv2d_s8``, ``linear_s8``,
``add_s8`` and ``avgpool2d_s8`` -- with TFLite's semantics (GUIDE section 3):

==================  ===========================================================  =========
operation           what it holds                                                kernel
==================  ===========================================================  =========
:class:`QConv`      int8 weights (per-channel symmetric), int32 bias, scales,    conv2d_s8,
                    fused activation (clamp bounds), multipliers/shifts          ...
:class:`QResidual`  a body of operations + :class:`QAdd` (the skip connection)   add_s8
:class:`QGlobalAvgPool`  nothing: input and output share scale and zero point    avgpool2d_s8
:class:`QFlatten`   nothing                                                      (reshape)
==================  ===========================================================  =========

Training the real int8 graph (Lin et al. 2022) uses the same objects: ``forward_int(xq,
save=True)`` keeps what backward needs (int8 inputs of layers whose weights train, int8
outputs for the straight-through clamp mask), and ``backward(g)`` sends a float gradient
back through the integer graph with the int8 backward kernels, accumulating the gradients
of the *integer* weights and biases (``dL/dW_q = s_W dL/dW``). :mod:`tinyodl.qas` turns
them into updates.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinyodl import ops
from tinyodl.quant import (
    activation_range,
    dequantize,
    quantize,
    quantize_add_params,
    requantize_params,
)


@dataclass(frozen=True)
class QParams:
    """Per-tensor affine quantization of an activation: ``real = scale * (q - zero_point)``."""

    scale: float
    zero_point: int

    def __post_init__(self) -> None:
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"QParams: scale must be positive and finite, got {self.scale}")
        if not -128 <= int(self.zero_point) <= 127:
            raise ValueError(f"QParams: zero_point must lie in [-128, 127], got {self.zero_point}")

    def quantize(self, x: np.ndarray) -> np.ndarray:
        return quantize(x, self.scale, self.zero_point)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return dequantize(q, self.scale, self.zero_point)


# ----------------------------------------------------------------------------- operations


@dataclass(eq=False)
class QConv:
    """An int8 convolution, depthwise convolution or fully connected layer (fused activation).

    ``kind`` is ``"conv"`` (weight (F, C/groups, KH, KW)), ``"depthwise"`` (weight
    (C, 1, KH, KW)) or ``"linear"`` (weight (F, K)). Weights are int8 in [-127, 127] with one
    scale per output channel (``weight_scale``), the bias int32 with scale
    ``input.scale * weight_scale``. ``activation`` (None, "relu", "relu6") becomes the clamp
    bounds ``act_min, act_max``. Multipliers and clamp bounds are derived in
    :meth:`refresh`; call it after changing a scale.

    ``rounding`` is the requantization's rounding: ``"double"`` (TFLite's reference kernels,
    the default) or ``"single"`` (``TFLITE_SINGLE_ROUNDING``, XNNPACK; GUIDE section 3).

    For training: ``weight_trainable`` / ``bias_trainable``, the accumulated gradients
    ``weight_grad`` / ``bias_grad`` (float32, in integer units) and ``saved``.
    """

    name: str
    kind: str
    weight: np.ndarray
    bias: np.ndarray
    weight_scale: np.ndarray
    input: QParams
    output: QParams
    activation: str | None = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1
    rounding: str = "double"
    weight_trainable: bool = True
    bias_trainable: bool = True
    weight_grad: np.ndarray | None = field(default=None, repr=False)
    bias_grad: np.ndarray | None = field(default=None, repr=False)
    saved: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in ("conv", "depthwise", "linear"):
            raise ValueError(f"QConv {self.name!r}: unknown kind {self.kind!r}")
        if self.weight.dtype != np.int8 or self.bias.dtype != np.int32:
            raise TypeError(
                f"QConv {self.name!r}: need int8 weights and int32 bias, got "
                f"{self.weight.dtype} and {self.bias.dtype}"
            )
        self.weight_scale = np.asarray(self.weight_scale, dtype=np.float64)
        self.refresh()

    def refresh(self) -> None:
        """Recompute ``multiplier``, ``shift``, ``act_min``, ``act_max`` and ``real_multiplier``."""
        self.multiplier, self.shift = requantize_params(
            self.input.scale, self.weight_scale, self.output.scale
        )
        self.act_min, self.act_max = activation_range(
            self.output.scale, self.output.zero_point, self.activation
        )
        # M = s_in s_w / s_out: d y_q / d acc, used by backward (float, not fixed point)
        self.real_multiplier = self.input.scale * self.weight_scale / self.output.scale
        self._multiplier32 = self.real_multiplier.astype(np.float32)

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        from tinyodl._shapes import conv_output_shape

        if self.kind == "linear":
            return (shape[0], self.out_channels)
        oh, ow = conv_output_shape(shape, self.weight.shape[2:], self.stride, self.padding)
        return (shape[0], self.out_channels, oh, ow)

    def forward(self, xq: np.ndarray, save: bool = False) -> np.ndarray:
        """Integer forward: int8 in, int8 out, through :mod:`tinyodl.ops`."""
        rq = (self.multiplier, self.shift)
        zi, zo = self.input.zero_point, self.output.zero_point
        clamp = (self.act_min, self.act_max, self.rounding)
        if self.kind == "linear":
            y = ops.linear_s8(xq, self.weight, self.bias, zi, zo, *rq, *clamp)
        elif self.kind == "depthwise":
            geometry = (self.stride, self.padding)
            y = ops.depthwise_conv2d_s8(xq, self.weight, self.bias, zi, zo, *rq, *geometry, *clamp)
        else:
            geometry = (self.stride, self.padding, self.groups)
            y = ops.conv2d_s8(xq, self.weight, self.bias, zi, zo, *rq, *geometry, *clamp)
        if save:
            self.saved = {"y": y, "x_shape": xq.shape}
            if self.weight_trainable:  # x_q is needed only for dW_q
                self.saved["x"] = xq
        return y

    def backward(self, g: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """``g = dL/dy_q`` (float) -> ``dL/dx_q``; accumulates ``dL/dW_q`` and ``dL/db_q``.

        The clamp is passed with the straight-through estimator (zero where the output sat
        on ``act_min``/``act_max``), rounding as the identity; ``dL/dacc = M * g`` with
        ``M = s_in s_w / s_out`` per channel.
        """
        y = self.saved.pop("y")
        g = ops.ste_clamp_backward(np.asarray(g, dtype=np.float32), y, self.act_min, self.act_max)
        channel = (1, -1) if self.kind == "linear" else (1, -1, 1, 1)
        g_acc = g * self._multiplier32.reshape(channel)  # float32 throughout
        x, x_shape = self.saved.pop("x", None), self.saved.pop("x_shape")
        if self.weight_trainable and x is not None:
            if self.kind == "linear":
                dw = ops.linear_s8_backward_weight(g_acc, x, self.input.zero_point)
            else:
                dw = ops.conv2d_s8_backward_weight(
                    g_acc,
                    x,
                    self.input.zero_point,
                    self.weight.shape,
                    self.stride,
                    self.padding,
                    self._groups(),
                )
            self.weight_grad = dw if self.weight_grad is None else self.weight_grad + dw
        if self.bias_trainable:
            db = g_acc.sum(axis=0 if self.kind == "linear" else (0, 2, 3))
            self.bias_grad = db if self.bias_grad is None else self.bias_grad + db
        if not input_grad:
            return None
        if self.kind == "linear":
            return ops.linear_s8_backward_input(g_acc, self.weight)
        return ops.conv2d_s8_backward_input(
            g_acc, self.weight, x_shape, self.stride, self.padding, self._groups()
        )

    def _groups(self) -> int:
        return self.weight.shape[0] if self.kind == "depthwise" else self.groups

    def zero_grad(self) -> None:
        self.weight_grad = self.bias_grad = None

    def arrays(self) -> dict[str, np.ndarray]:
        """What a device stores for this layer: int8 weights, int32 bias, requant params."""
        return {
            "weight": self.weight,
            "bias": self.bias,
            "multiplier": self.multiplier,
            "shift": self.shift,
            "weight_scale": self.weight_scale.astype(np.float32),
        }

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "activation": self.activation,
            "stride": self.stride,
            "padding": self.padding,
            "groups": self._groups(),
            "input": (self.input.scale, self.input.zero_point),
            "output": (self.output.scale, self.output.zero_point),
            "act_range": (self.act_min, self.act_max),
            "rounding": self.rounding,
        }


@dataclass(eq=False)
class QAdd:
    """Int8 sum of two tensors with their own qparams (TFLite ADD), ``a + b -> output``."""

    name: str
    a: QParams
    b: QParams
    output: QParams
    saved: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.params = quantize_add_params(self.a.scale, self.b.scale, self.output.scale)

    def forward(self, aq: np.ndarray, bq: np.ndarray, save: bool = False) -> np.ndarray:
        p = self.params
        y = ops.add_s8(
            aq,
            bq,
            self.a.zero_point,
            p["a_multiplier"],
            p["a_shift"],
            self.b.zero_point,
            p["b_multiplier"],
            p["b_shift"],
            self.output.zero_point,
            p["output_multiplier"],
            p["output_shift"],
            p["left_shift"],
        )
        if save:
            self.saved = {"y": y}
        return y

    def backward(self, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(dL/da_q, dL/db_q)``: ``g * s_a / s_y`` and ``g * s_b / s_y`` (STE at the clamp)."""
        g = ops.ste_clamp_backward(np.asarray(g, dtype=np.float32), self.saved.pop("y"), -128, 127)
        s = self.output.scale
        return (g * np.float32(self.a.scale / s), g * np.float32(self.b.scale / s))


@dataclass(eq=False)
class QResidual:
    """``y = add(body(x), x)``: an inverted residual block with its skip connection."""

    name: str
    body: list
    add: QAdd

    def output_shape(self, shape):
        for op in self.body:
            shape = op.output_shape(shape)
        return shape

    def forward(self, xq: np.ndarray, save: bool = False) -> np.ndarray:
        h = xq
        for op in self.body:
            h = op.forward(h, save)
        return self.add.forward(h, xq, save)

    def backward(self, g: np.ndarray, input_grad: bool = True) -> np.ndarray:
        ga, gb = self.add.backward(g)
        for op in reversed(self.body):
            ga = op.backward(ga)
        return ga + gb


@dataclass(eq=False)
class QGlobalAvgPool:
    """Mean over H and W, ``(N, C, H, W) -> (N, C)``; input and output share qparams."""

    name: str
    qparams: QParams
    saved: dict[str, Any] = field(default_factory=dict, repr=False)

    def output_shape(self, shape):
        return (shape[0], shape[1])

    def forward(self, xq: np.ndarray, save: bool = False) -> np.ndarray:
        n, c, h, w = xq.shape
        if save:
            self.saved = {"x_shape": xq.shape}
        return ops.avgpool2d_s8(xq, (h, w)).reshape(n, c)

    def backward(self, g: np.ndarray, input_grad: bool = True) -> np.ndarray:
        n, c, h, w = self.saved.pop("x_shape")
        share = (np.asarray(g, dtype=np.float32) / np.float32(h * w))[:, :, None, None]
        return np.broadcast_to(share, (n, c, h, w)).copy()


@dataclass(eq=False)
class QFlatten:
    """``(N, ...) -> (N, -1)``, a reshape."""

    name: str
    saved: dict[str, Any] = field(default_factory=dict, repr=False)

    def output_shape(self, shape):
        return (shape[0], int(np.prod(shape[1:])))

    def forward(self, xq: np.ndarray, save: bool = False) -> np.ndarray:
        if save:
            self.saved = {"x_shape": xq.shape}
        return xq.reshape(xq.shape[0], -1)

    def backward(self, g: np.ndarray, input_grad: bool = True) -> np.ndarray:
        return g.reshape(self.saved.pop("x_shape"))


# ----------------------------------------------------------------------------- the model


class QuantizedModel:
    """An int8 model: quantize the input, integer operations, dequantize the logits.

    Parameters
    ----------
    ops : list
        :class:`QConv`, :class:`QResidual`, :class:`QGlobalAvgPool`, :class:`QFlatten`.
    input : QParams
        How the float input is quantized (e.g. scale 1/255, zero point -128 for [0, 1]).

    ``forward(x)`` takes and returns float arrays (so :func:`tinyodl.train.evaluate` and
    :meth:`tinyodl.tasks.Task.accuracy` work on it); ``forward_int(xq)`` is the
    integer-only part. Build one with :func:`tinyodl.quantization.quantize_model`.
    """

    def __init__(self, ops_: list, input: QParams) -> None:  # noqa: A002
        if not ops_ or not isinstance(ops_[-1], QConv):
            raise ValueError("QuantizedModel: the last operation must be a QConv (the logits)")
        self.ops, self.input = list(ops_), input
        self.training = False

    @property
    def output(self) -> QParams:
        return self.ops[-1].output

    # -- inference
    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Float input -> int8 (round half away from zero, clamp)."""
        return self.input.quantize(x)

    def dequantize_output(self, q: np.ndarray) -> np.ndarray:
        """Int8 logits -> float32."""
        return self.output.dequantize(q)

    def forward_int(self, xq: np.ndarray, save: bool = False) -> np.ndarray:
        """Integer-only forward pass: int8 input -> int8 logits."""
        if not isinstance(xq, np.ndarray) or xq.dtype != np.int8:
            got = xq.dtype if isinstance(xq, np.ndarray) else type(xq).__name__
            raise TypeError(f"QuantizedModel.forward_int: expected an int8 input, got {got}")
        h = xq
        for op in self.ops:
            h = op.forward(h, save)
        return h

    def forward(self, x: np.ndarray, train: bool | None = None) -> np.ndarray:
        """Float logits of a float input (quantize, integer forward, dequantize)."""
        return self.dequantize_output(self.forward_int(self.quantize_input(x)))

    __call__ = forward

    def eval(self) -> QuantizedModel:
        return self

    # -- training (tinyodl.qas)
    def backward(self, dlogits: np.ndarray) -> None:
        """Backward from ``dL/dlogits`` (float) through the int graph (after a saving forward).

        ``dL/dq_out = s_out dL/dlogits`` with the straight-through estimator at the output
        range; no gradient is computed for the input image.
        """
        g = np.asarray(dlogits, dtype=np.float32) * np.float32(self.output.scale)
        for i, op in reversed(list(enumerate(self.ops))):
            g = op.backward(g, input_grad=i > 0)

    def named_convs(self) -> Iterator[tuple[str, QConv]]:
        """Every :class:`QConv` (also inside residual blocks), in forward order."""
        for op in self.ops:
            for inner in op.body if isinstance(op, QResidual) else [op]:
                if isinstance(inner, QConv):
                    yield inner.name, inner

    def zero_grad(self) -> None:
        for _, conv in self.named_convs():
            conv.zero_grad()

    def set_rounding(self, rounding: str) -> QuantizedModel:
        """Use ``"double"`` (TFLite reference) or ``"single"`` rounding in every layer."""
        if rounding not in ("double", "single"):
            raise ValueError(f"set_rounding: expected 'double' or 'single', got {rounding!r}")
        for _, conv in self.named_convs():
            conv.rounding = rounding
        return self

    # -- inspection
    def describe(self, input_shape: tuple[int, ...]) -> list[dict[str, Any]]:
        """One row per operation: name, type, input/output shape, bytes, config, qparams."""
        rows: list[dict[str, Any]] = []
        shape = tuple(int(s) for s in input_shape)
        for op in self.ops:
            shape = self._describe(op, shape, rows)
        return rows

    def _describe(self, op, shape, rows) -> tuple[int, ...]:
        out = op.output_shape(shape)
        row = {"name": op.name, "type": type(op).__name__, "input_shape": shape}
        row.update(output_shape=out, num_params=0, nbytes=0, config={})
        rows.append(row)
        if isinstance(op, QConv):
            arrays = op.arrays()
            row.update(num_params=op.weight.size + op.bias.size, config=op.describe())
            row["nbytes"] = sum(a.nbytes for a in arrays.values())
        elif isinstance(op, QResidual):
            inner = shape
            for child in op.body:
                inner = self._describe(child, inner, rows)
            rows.append(
                {
                    "name": op.add.name,
                    "type": "QAdd",
                    "input_shape": inner,
                    "output_shape": out,
                    "num_params": 0,
                    "nbytes": 0,
                    "config": {k: v for k, v in op.add.params.items()},
                }
            )
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array a device must store, by ``"<layer>.<name>"``."""
        out = {}
        for name, conv in self.named_convs():
            out.update({f"{name}.{k}": v for k, v in conv.arrays().items()})
        return out

    def nbytes(self) -> int:
        """Bytes of :meth:`arrays` (int8 weights, int32 biases, multipliers, shifts, scales)."""
        return sum(a.nbytes for a in self.arrays().values())

    def num_params(self) -> int:
        return sum(c.weight.size + c.bias.size for _, c in self.named_convs())

    def __repr__(self) -> str:
        return (
            f"QuantizedModel({len(list(self.named_convs()))} int8 layers, "
            f"{self.num_params():,} parameters, {self.nbytes():,} bytes)"
        )
