"""Int8 model -> ONNX with quantized operators (QOperator format; chapter 13).

Every :class:`~tinyodl.quantization.QConv` becomes a ``QLinearConv`` with per-channel int8
weights (zero point 0), an int32 bias and the tensors' scales and zero points, so the
integer arithmetic is the same as tinyodl's. What differs is the requantization's rounding:
ONNX defines ``QLinearConv``'s output as ``saturate(round(acc * s_x s_w / s_y) + z_y)`` with
round half to even in float, and onnxruntime's x86 kernels compute it with a float32
multiplier; tinyodl (like TFLite) uses a fixed-point multiplier and rounds half away from
zero (GUIDE section 3). **This export targets the ONNX semantics**: expect a difference of
one step in a small fraction of the int8 outputs (measured in ``tests/test_export_onnx.py``
and reported in the README).

Mapping:

* input: ``QuantizeLinear`` (the model's input scale and zero point);
* conv / depthwise: ``QLinearConv`` (``group`` = channels for depthwise; asymmetric
  ``pads`` are native in ONNX); a fused ReLU/ReLU6 whose clamp is narrower than the int8
  range adds an int8 ``Clip``;
* fully connected: ``QLinearConv`` 1x1 between two ``Reshape`` (``QLinearMatMul`` has no
  bias);
* residual sum and global average pooling: ``DequantizeLinear`` -> float ``Add`` /
  ``GlobalAveragePool`` -> ``QuantizeLinear`` (the standard ops have no int8 version);
* outputs: ``logits_q`` (int8) and ``logits`` (``DequantizeLinear`` of it).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from tinyodl.export._onnx_common import (
    ExportError,
    GraphBuilder,
    require_onnx,
    save_model,
    value_info,
)
from tinyodl.quantization.qmodel import (
    QConv,
    QFlatten,
    QGlobalAvgPool,
    QParams,
    QResidual,
    QuantizedModel,
)


def _qp(g: GraphBuilder, hint: str, qp: QParams) -> tuple[str, str]:
    return (
        g.const(f"{hint}.scale", np.float32(qp.scale)),
        g.const(f"{hint}.zero_point", np.int8(qp.zero_point)),
    )


def _qconv(g: GraphBuilder, conv: QConv, x: str) -> str:
    name = conv.name
    xs, xz = _qp(g, f"{name}.x", conv.input)
    ys, yz = _qp(g, f"{name}.y", conv.output)
    w = conv.weight if conv.kind != "linear" else conv.weight[:, :, None, None]
    ws = g.const(f"{name}.weight_scale", conv.weight_scale.astype(np.float32))
    wz = g.const(f"{name}.weight_zero_point", np.zeros(conv.out_channels, dtype=np.int8))
    inputs = [x, xs, xz, g.const(f"{name}.weight", w), ws, wz, ys, yz]
    inputs.append(g.const(f"{name}.bias", conv.bias.astype(np.int32)))
    if conv.kind == "linear":
        shape4 = g.const(f"{name}.shape4", np.array([0, -1, 1, 1], dtype=np.int64))
        x4 = g.node("Reshape", [x, shape4], f"{name}.x4")
        inputs[0] = x4
        y4 = g.node("QLinearConv", inputs, name, kernel_shape=[1, 1])
        shape2 = g.const(f"{name}.shape2", np.array([0, -1], dtype=np.int64))
        y = g.node("Reshape", [y4, shape2], f"{name}.y")
    else:
        top, bottom, left, right = conv.pads
        y = g.node(
            "QLinearConv",
            inputs,
            name,
            kernel_shape=list(conv.weight.shape[2:]),
            strides=list(conv.stride),
            pads=[top, left, bottom, right],
            group=conv._groups(),
        )
    if (conv.act_min, conv.act_max) != (-128, 127):  # a fused activation that clamps
        lo = g.const(f"{name}.act_min", np.int8(conv.act_min))
        hi = g.const(f"{name}.act_max", np.int8(conv.act_max))
        y = g.node("Clip", [y, lo, hi], f"{name}.act")
    return y


def _dq(g: GraphBuilder, x: str, qp: QParams, hint: str) -> str:
    return g.node("DequantizeLinear", [x, *_qp(g, hint, qp)], f"{hint}.float")


def _q(g: GraphBuilder, x: str, qp: QParams, hint: str) -> str:
    return g.node("QuantizeLinear", [x, *_qp(g, hint, qp)], hint)


def _round_half_away(g: GraphBuilder, v: str, hint: str) -> str:
    """``sign(v) * floor(|v| + 1/2)`` in float (ONNX's Round and QuantizeLinear tie to even)."""
    half = g.const(f"{hint}.half", np.float64(0.5))
    magnitude = g.node("Floor", [g.node("Add", [g.node("Abs", [v], hint), half], hint)], hint)
    return g.node("Mul", [g.node("Sign", [v], hint), magnitude], hint)


def _add(g: GraphBuilder, add: Any, a: str, b: str) -> str:
    """Residual sum: ``round_half_away(r_a (a - z_a) + r_b (b - z_b)) + z_y`` in float64.

    TFLite (and tinyodl) compute it in fixed point; ONNX has no int8 Add, and
    DequantizeLinear -> Add -> QuantizeLinear would round ties to even, which residual sums
    hit often. ``r = s / s_y``.
    """
    name, s_y = add.name, add.output.scale

    def term(x: str, qp: QParams, tag: str) -> str:
        xf = g.node("Cast", [x], f"{name}.{tag}", to=11)
        centred = g.node("Sub", [xf, g.const(f"{name}.{tag}.zp", np.float64(qp.zero_point))], name)
        return g.node(
            "Mul",
            [centred, g.const(f"{name}.{tag}.r", np.float64(qp.scale) / np.float64(s_y))],
            name,
        )

    v = g.node("Add", [term(a, add.a, "a"), term(b, add.b, "b")], name)
    y = g.node(
        "Add",
        [_round_half_away(g, v, name), g.const(f"{name}.zy", np.float64(add.output.zero_point))],
        name,
    )
    lo, hi = g.const(f"{name}.lo", np.float64(-128)), g.const(f"{name}.hi", np.float64(127))
    return g.node("Cast", [g.node("Clip", [y, lo, hi], name)], f"{name}.q", to=3)


def _global_avgpool(g: GraphBuilder, op: QGlobalAvgPool, x: str, hw: int) -> str:
    """Exact integer mean as TFLite's AVERAGE_POOL_2D: ``sign(s) (|s| + n // 2) // n``."""
    name = op.name
    total = g.node(
        "ReduceSum",
        [g.node("Cast", [x], name, to=6), g.const(f"{name}.axes", np.array([2, 3], np.int64))],
        f"{name}.sum",
        keepdims=0,
    )
    n = g.const(f"{name}.count", np.int32(hw))
    half = g.const(f"{name}.half", np.int32(hw // 2))
    magnitude = g.node("Div", [g.node("Add", [g.node("Abs", [total], name), half], name), n], name)
    mean = g.node("Mul", [g.node("Sign", [total], name), magnitude], name)
    return g.node("Cast", [mean], f"{name}.q", to=3)


def _emit(g: GraphBuilder, op: Any, x: str, qp: QParams, hw: int = 0) -> tuple[str, QParams]:
    if isinstance(op, QConv):
        return _qconv(g, op, x), op.output
    if isinstance(op, QResidual):
        h, hq = x, qp
        for inner in op.body:
            h, hq = _emit(g, inner, h, hq, hw)
        return _add(g, op.add, h, x), op.add.output
    if isinstance(op, QGlobalAvgPool):
        return _global_avgpool(g, op, x, hw), op.qparams
    if isinstance(op, QFlatten):
        return g.node("Flatten", [x], op.name), qp
    raise ExportError(
        f"to_onnx_int8: operation {getattr(op, 'name', op)!r} of type {type(op).__name__} "
        "has no int8 ONNX export"
    )


def to_onnx_int8(
    model: QuantizedModel,
    input_shape: tuple[int, ...],
    path: str | os.PathLike | None = None,
    *,
    dynamic_batch: bool = True,
) -> Any:
    """Export an int8 :class:`~tinyodl.quantization.QuantizedModel` to ONNX (QOperator).

    Parameters
    ----------
    model : QuantizedModel
    input_shape : tuple
        NCHW shape of one input batch, e.g. ``(1, 1, 28, 28)``.
    path : path, optional
        Also write the model there (atomically).
    dynamic_batch : bool, default True

    Returns
    -------
    onnx.ModelProto
        Input ``"input"`` (float32, quantized inside the graph), outputs ``"logits_q"``
        (int8, compare with ``model.forward_int``) and ``"logits"`` (float32).
    """
    onnx = require_onnx()
    if not isinstance(model, QuantizedModel):
        raise ExportError(
            f"to_onnx_int8: expected a QuantizedModel (tinyodl.quantization.quantize_model), "
            f"got {type(model).__name__}"
        )
    shape = tuple(int(s) for s in input_shape)
    g = GraphBuilder()
    x = g.name("input")
    h, qp = _q(g, x, model.input, "input.q"), model.input
    in_shape = shape
    for op in model.ops:
        hw = int(np.prod(in_shape[2:])) if len(in_shape) == 4 else 0
        h, qp = _emit(g, op, h, qp, hw)
        in_shape = op.output_shape(in_shape)
    yq = g.node("Identity", [h], "logits_q")
    y = g.node("DequantizeLinear", [yq, *_qp(g, "logits", qp)], "logits")
    batch = (None,) if dynamic_batch else (shape[0],)
    model_proto = g.model(
        [value_info(x, onnx.TensorProto.FLOAT, batch + shape[1:])],
        [
            value_info(yq, onnx.TensorProto.INT8, batch + tuple(in_shape[1:])),
            value_info(y, onnx.TensorProto.FLOAT, batch + tuple(in_shape[1:])),
        ],
        "tinyodl_int8",
        doc="exported by tinyodl.export.to_onnx_int8 (QLinearConv; ONNX rounding semantics)",
    )
    if path is not None:
        save_model(model_proto, path)
    return model_proto
