"""Int8 model -> ONNX that computes tinyodl's integer arithmetic **exactly** (chapter 13).

``to_onnx_int8`` writes ONNX's quantized operators, whose requantization rounds the exact
product (ties to even): a few outputs per layer differ from TFLite's fixed point by one
step. This exporter shows that rounding is the *only* difference: it spells tinyodl's
requantization out with ONNX's integer operators, so onnxruntime reproduces
``model.forward_int`` bit for bit, whatever the layers' rounding mode.

* Accumulator: ``ConvInteger`` (the fully connected layer as a 1x1 conv) with uint8 operands
  -- the int8 input plus 128 with zero point ``z_x + 128``, the weights plus 128 with zero
  point 128 -- which gives ``sum (w)(x - z_x)`` exactly in int32 (uint8 x uint8 kernels do not
  saturate), then ``+ bias``.
* ``"double"`` rounding: ``SRDHM(acc * 2^left, M0) = floor((x M0 + 2^30) / 2^31)`` and
  ``RoundingDivideByPOT`` in int64, floors written as ``(v - Mod(v, 2^k)) / 2^k``;
  ``"single"``: ``floor((acc M0 + 2^(30 - shift)) / 2^(31 - shift))``; ``"float"``:
  ``round_half_away(acc * M)`` in float64.
* Residual ``ADD``: TFLite's fixed-point sum (``left_shift = 20``) with the same pieces;
  global average pooling: the exact integer mean.

It is a teaching artifact (a few dozen integer nodes per layer), not a fast model.
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
from tinyodl.export.onnx_int8 import _global_avgpool
from tinyodl.quantization.qmodel import QConv, QFlatten, QGlobalAvgPool, QResidual, QuantizedModel

_I64, _F64, _I8, _U8, _I32 = 7, 11, 3, 2, 6  # TensorProto element types


def _c(g: GraphBuilder, hint: str, value, dtype=np.int64) -> str:
    return g.const(hint, np.asarray(value, dtype=dtype))


def _floor_div_pot(g: GraphBuilder, v: str, k, shape, hint: str) -> str:
    """``floor(v / 2^k)`` for int64 ``v`` (``k`` scalar or per channel)."""
    p = _c(g, f"{hint}.pot", (np.int64(1) << np.asarray(k, dtype=np.int64)).reshape(shape))
    rem = g.node("Mod", [v, p], hint, fmod=0)  # in [0, 2^k): the sign of the divisor
    return g.node("Div", [g.node("Sub", [v, rem], hint), p], hint)


def _mbqm(g: GraphBuilder, x: str, m0, shift, shape, rounding: str, hint: str) -> str:
    """MultiplyByQuantizedMultiplier of int64 ``x`` (GUIDE section 3), int64 out."""
    m0 = np.asarray(m0, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    if rounding == "single":
        total = 31 - shift
        nudge = _c(g, f"{hint}.nudge", (np.int64(1) << (total - 1)).reshape(shape))
        prod = g.node("Mul", [x, _c(g, f"{hint}.m0", m0.reshape(shape))], hint)
        return _floor_div_pot(g, g.node("Add", [prod, nudge], hint), total, shape, hint)
    left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
    x = g.node("Mul", [x, _c(g, f"{hint}.left", (np.int64(1) << left).reshape(shape))], hint)
    x = g.node("Max", [x, _c(g, f"{hint}.lo", -(2**31))], hint)  # saturate to int32
    x = g.node("Min", [x, _c(g, f"{hint}.hi", 2**31 - 1)], hint)
    prod = g.node("Mul", [x, _c(g, f"{hint}.m0", m0.reshape(shape))], hint)
    high = _floor_div_pot(
        g, g.node("Add", [prod, _c(g, f"{hint}.half", 1 << 30)], hint), 31, (), hint
    )
    # RoundingDivideByPOT(high, right): floor + (remainder > (mask >> 1) + (high < 0))
    pot = _c(g, f"{hint}.rpot", (np.int64(1) << right).reshape(shape))
    rem = g.node("Mod", [high, pot], hint, fmod=0)
    floor = g.node("Div", [g.node("Sub", [high, rem], hint), pot], hint)
    negative = g.node(
        "Cast", [g.node("Less", [high, _c(g, f"{hint}.zero", 0)], hint)], hint, to=_I64
    )
    threshold = g.node(
        "Add",
        [_c(g, f"{hint}.thr", (((np.int64(1) << right) - 1) >> 1).reshape(shape)), negative],
        hint,
    )
    up = g.node("Cast", [g.node("Greater", [rem, threshold], hint)], hint, to=_I64)
    return g.node("Add", [floor, up], hint)


def _to_int8(g: GraphBuilder, v: str, zp: int, lo: int, hi: int, hint: str) -> str:
    v = g.node("Add", [v, _c(g, f"{hint}.zp", zp)], hint)
    v = g.node(
        "Max", [g.node("Min", [v, _c(g, f"{hint}.max", hi)], hint), _c(g, f"{hint}.min", lo)], hint
    )
    return g.node("Cast", [v], f"{hint}.q", to=_I8)


def _conv(g: GraphBuilder, conv: QConv, x: str) -> str:
    name = conv.name
    linear = conv.kind == "linear"
    w = conv.weight[:, :, None, None] if linear else conv.weight
    xu = g.node(
        "Cast",
        [
            g.node(
                "Add", [g.node("Cast", [x], name, to=_I32), _c(g, f"{name}.u", 128, np.int32)], name
            )
        ],
        name,
        to=_U8,
    )
    if linear:
        xu = g.node("Reshape", [xu, _c(g, f"{name}.shape4", [0, -1, 1, 1])], name)
    attrs: dict[str, Any] = {"kernel_shape": list(w.shape[2:])}
    if not linear:
        top, bottom, left, right = conv.pads
        attrs.update(
            strides=list(conv.stride), pads=[top, left, bottom, right], group=conv._groups()
        )
    inputs = [
        xu,
        g.const(f"{name}.weight_u8", (w.astype(np.int16) + 128).astype(np.uint8)),
        g.const(f"{name}.x_zero_point", np.uint8(conv.input.zero_point + 128)),
        g.const(f"{name}.w_zero_point", np.uint8(128)),
    ]
    acc = g.node("ConvInteger", inputs, name, **attrs)
    if linear:
        acc = g.node("Reshape", [acc, _c(g, f"{name}.shape2", [0, -1])], name)
    shape = (1, -1) if linear else (1, -1, 1, 1)
    acc = g.node(
        "Add",
        [g.node("Cast", [acc], name, to=_I64), _c(g, f"{name}.bias", conv.bias.reshape(shape))],
        name,
    )
    if conv.rounding == "float":
        v = g.node(
            "Mul",
            [
                g.node("Cast", [acc], name, to=_F64),
                g.const(f"{name}.m", conv.real_multiplier.reshape(shape)),
            ],
            name,
        )
        half = g.const(f"{name}.halfd", np.float64(0.5))
        mag = g.node("Floor", [g.node("Add", [g.node("Abs", [v], name), half], name)], name)
        y = g.node("Cast", [g.node("Mul", [g.node("Sign", [v], name), mag], name)], name, to=_I64)
    else:
        y = _mbqm(g, acc, conv.multiplier, conv.shift, shape, conv.rounding, name)
    return _to_int8(g, y, conv.output.zero_point, conv.act_min, conv.act_max, name)


def _add(g: GraphBuilder, add, a: str, b: str) -> str:
    p, name = add.params, add.name
    parts = []
    for tag, x, zp in (("a", a, add.a.zero_point), ("b", b, add.b.zero_point)):
        v = g.node("Sub", [g.node("Cast", [x], name, to=_I64), _c(g, f"{name}.{tag}.zp", zp)], name)
        v = g.node("Mul", [v, _c(g, f"{name}.{tag}.shift", 1 << p["left_shift"])], name)
        parts.append(
            _mbqm(g, v, p[f"{tag}_multiplier"], p[f"{tag}_shift"], (), "double", f"{name}.{tag}")
        )
    total = g.node("Add", parts, name)
    y = _mbqm(g, total, p["output_multiplier"], p["output_shift"], (), "double", f"{name}.out")
    return _to_int8(g, y, add.output.zero_point, -128, 127, name)


def to_onnx_int8_exact(
    model: QuantizedModel, input_shape: tuple[int, ...], path: str | os.PathLike | None = None
) -> Any:
    """ONNX graph (integer operators only) bit-exact with ``model.forward_int``.

    Input ``"input_q"`` (int8 NCHW, already quantized), output ``"logits_q"`` (int8).
    """
    onnx = require_onnx()
    if not isinstance(model, QuantizedModel):
        raise ExportError(
            f"to_onnx_int8_exact: expected a QuantizedModel, got {type(model).__name__}"
        )
    g = GraphBuilder()
    x = g.name("input_q")
    h, shape = x, tuple(int(s) for s in input_shape)
    for op in model.ops:
        if isinstance(op, QConv):
            h = _conv(g, op, h)
        elif isinstance(op, QResidual):
            block = h
            for inner in op.body:
                h = _conv(g, inner, h)
            h = _add(g, op.add, h, block)
        elif isinstance(op, QGlobalAvgPool):
            h = _global_avgpool(g, op, h, int(np.prod(shape[2:])))
        elif isinstance(op, QFlatten):
            h = g.node("Flatten", [h], op.name)
        else:
            raise ExportError(f"to_onnx_int8_exact: {type(op).__name__} has no exact export")
        shape = op.output_shape(shape)
    y = g.node("Identity", [h], "logits_q")
    proto = g.model(
        [value_info(x, onnx.TensorProto.INT8, (None, *(int(s) for s in input_shape[1:])))],
        [value_info(y, onnx.TensorProto.INT8, (None, *shape[1:]))],
        "tinyodl_int8_exact",
        doc="exported by tinyodl.export.to_onnx_int8_exact (integer operators, bit-exact)",
    )
    if path is not None:
        save_model(proto, path)
    return proto
