"""Int8 model -> TFLite flatbuffer (chapter 13), written without TensorFlow.

The file is a FlatBuffer of TFLite's schema (``schema.fbs``); we write it with the
``flatbuffers`` package and the Python code ``flatc`` generated from that schema (the
``tflite`` package). TFLite Micro reads the same file, so :func:`to_c_array` of it is what a
microcontroller project embeds.

How tinyodl's int8 graph maps to TFLite's (GUIDE section 3):

* Layout: TFLite is NHWC. Conv weights (F, C, KH, KW) become OHWI, depthwise weights
  (C, 1, KH, KW) become (1, KH, KW, C); fully connected weights stay (F, K). Input int8
  (N, H, W, C), output int8 (N, classes), with the model's quantization parameters.
* Quantization parameters are stored as float32 and TFLite derives its multipliers from
  them: :func:`tflite_compatible` rounds every scale of a copy of the model to float32
  first, so tinyodl and TFLite start from the same numbers.
* Padding: TFLite has only SAME and VALID. A layer whose padding is what SAME computes
  (same output size, same top/left padding) uses SAME; any other padding -- e.g. the
  symmetric padding 1 of a 3x3 stride-2 conv on an even input, where SAME pads only the
  bottom/right -- becomes an explicit PAD (padding with the input zero point) before a VALID
  convolution.
* Requantization: TFLite's conv and depthwise kernels use MultiplyByQuantizedMultiplier
  (tinyodl's ``rounding="double"``); its per-channel FULLY_CONNECTED requantizes in double
  precision (tinyodl's ``rounding="float"``). ``model.for_runtime("tflite")`` selects both.
* Fused ReLU/ReLU6 become the operator's fused activation; residual sums ADD; global
  average pooling AVERAGE_POOL_2D over the whole map + RESHAPE; a flatten of a feature map
  TRANSPOSE to NCHW + RESHAPE (tinyodl flattens in C, H, W order).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinyodl.export._onnx_common import ExportError
from tinyodl.quantization.qmodel import (
    QConv,
    QFlatten,
    QGlobalAvgPool,
    QParams,
    QResidual,
    QuantizedModel,
)

#: TFLite schema version written in ``Model.version``.
SCHEMA_VERSION = 3
_ACTIVATIONS = {None: 0, "relu": 1, "relu6": 3}  # ActivationFunctionType
_INT8, _INT32 = 9, 2  # TensorType
_SAME, _VALID = 0, 1  # Padding


def _require_tflite():
    try:
        import flatbuffers
        import tflite
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "tinyodl.export.to_tflite needs the 'flatbuffers' and 'tflite' packages; "
            "install them with: pip install 'tinyodl[deploy]'"
        ) from exc
    return flatbuffers, tflite


def tflite_compatible(model: QuantizedModel) -> QuantizedModel:
    """A copy of ``model`` whose scales are float32 numbers, with TFLite's rounding modes.

    TFLite stores every scale as float32 and computes the multipliers from those, so the
    integer model that a TFLite file describes is this copy, not the float64 original (the
    two differ by at most one step in rare outputs). Integer weights and biases are kept.
    """
    twin = copy.deepcopy(model)

    def f32(q: QParams) -> QParams:
        return QParams(float(np.float32(q.scale)), q.zero_point)

    twin.input = f32(twin.input)
    for op in twin.ops:
        for inner in op.body if isinstance(op, QResidual) else [op]:
            if isinstance(inner, QConv):
                inner.input, inner.output = f32(inner.input), f32(inner.output)
                inner.weight_scale = inner.weight_scale.astype(np.float32).astype(np.float64)
                inner.refresh()
            elif isinstance(inner, QGlobalAvgPool):
                inner.qparams = f32(inner.qparams)
        if isinstance(op, QResidual):
            add = op.add
            add.a, add.b, add.output = f32(add.a), f32(add.b), f32(add.output)
            add.__post_init__()
    return twin.for_runtime("tflite")


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: int
    buffer: int = 0
    scale: np.ndarray | None = None
    zero_point: np.ndarray | None = None
    axis: int = 0


@dataclass
class _Op:
    code: int
    inputs: list[int]
    outputs: list[int]
    options_type: int = 0
    options: dict[str, Any] = field(default_factory=dict)


class _Graph:
    """Tensors, buffers and operators of one subgraph, in plain Python."""

    def __init__(self) -> None:
        self.tensors: list[_Tensor] = []
        self.buffers: list[bytes] = [b""]  # buffer 0: the empty buffer of activations
        self.ops: list[_Op] = []

    def tensor(self, name, shape, dtype=_INT8, data=None, q=None, axis=0) -> int:
        t = _Tensor(name, tuple(int(s) for s in shape), dtype, axis=axis)
        if data is not None:
            self.buffers.append(np.ascontiguousarray(data).tobytes())
            t.buffer = len(self.buffers) - 1
        if q is not None:
            t.scale = np.atleast_1d(np.asarray(q[0], dtype=np.float32))
            t.zero_point = np.atleast_1d(np.asarray(q[1], dtype=np.int64))
        self.tensors.append(t)
        return len(self.tensors) - 1

    def activation(self, name: str, shape, qp: QParams) -> int:
        return self.tensor(name, shape, q=(qp.scale, qp.zero_point))

    def const_i32(self, name: str, values) -> int:
        arr = np.asarray(values, dtype=np.int32)
        return self.tensor(name, arr.shape, _INT32, data=arr)


def _same_padding(size: int, k: int, s: int) -> tuple[int, int]:
    """TFLite's SAME: output ``ceil(size / s)``, padding ``(total // 2, total - total // 2)``."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return out, total // 2


def _padding_mode(conv: QConv, h: int, w: int) -> int | None:
    """VALID, SAME, or None when the padding needs an explicit PAD."""
    top, bottom, left, right = conv.pads
    if top == bottom == left == right == 0:
        return _VALID
    kh, kw = conv.weight.shape[2:]
    (oh, pt), (ow, pl) = _same_padding(h, kh, conv.stride[0]), _same_padding(w, kw, conv.stride[1])
    _, _, my_oh, my_ow = conv.output_shape((1, 1, h, w))
    if (oh, ow, pt, pl) == (my_oh, my_ow, top, left):
        return _SAME
    return None


def _emit_conv(g: _Graph, conv: QConv, x: int, shape: tuple) -> tuple[int, tuple]:
    """Append the operators of one QConv; ``shape`` is NHWC (or (N, K) for linear)."""
    B = _module("BuiltinOperator").BuiltinOperator

    s_w = conv.weight_scale.astype(np.float32)
    bias_q = (np.float32(conv.input.scale) * s_w, np.zeros(len(s_w)))
    act = _ACTIVATIONS[conv.activation]
    name = conv.name
    if conv.kind == "linear":
        w = g.tensor(f"{name}.weight", conv.weight.shape, data=conv.weight, q=(s_w, 0 * s_w))
        b = g.tensor(f"{name}.bias", conv.bias.shape, _INT32, conv.bias, bias_q)
        out_shape = (shape[0], conv.out_channels)
        y = g.activation(name, out_shape, conv.output)
        g.ops.append(_Op(B.FULLY_CONNECTED, [x, w, b], [y], 8, {"act": act}))
        return y, out_shape
    n, h, wd, c = shape
    mode = _padding_mode(conv, h, wd)
    if mode is None:  # explicit PAD with the input zero point, then VALID
        top, bottom, left, right = conv.pads
        pads = g.const_i32(f"{name}.pads", [[0, 0], [top, bottom], [left, right], [0, 0]])
        shape = (n, h + top + bottom, wd + left + right, c)
        xp = g.activation(f"{name}.padded", shape, conv.input)
        g.ops.append(_Op(B.PAD, [x, pads], [xp], 22))
        x, mode, h, wd = xp, _VALID, shape[1], shape[2]
    kh, kw = conv.weight.shape[2:]
    (sh, sw) = conv.stride
    if mode == _VALID:
        oh, ow = (h - kh) // sh + 1, (wd - kw) // sw + 1
    else:
        oh, ow = -(-h // sh), -(-wd // sw)
    out_shape = (n, oh, ow, conv.out_channels)
    b = g.tensor(f"{name}.bias", conv.bias.shape, _INT32, conv.bias, bias_q)
    y = g.activation(name, out_shape, conv.output)
    opts = {"padding": mode, "stride": conv.stride, "act": act}
    if conv.kind == "depthwise":
        wt = np.transpose(conv.weight, (1, 2, 3, 0))  # (1, KH, KW, C)
        w = g.tensor(f"{name}.weight", wt.shape, data=wt, q=(s_w, 0 * s_w), axis=3)
        g.ops.append(_Op(B.DEPTHWISE_CONV_2D, [x, w, b], [y], 2, opts))
    else:
        if conv.groups != 1:
            raise ExportError(
                f"to_tflite: layer {name!r} is a grouped convolution (groups={conv.groups}); "
                "TFLite's CONV_2D export supports groups=1 and depthwise convolutions"
            )
        wt = np.transpose(conv.weight, (0, 2, 3, 1))  # OHWI
        w = g.tensor(f"{name}.weight", wt.shape, data=wt, q=(s_w, 0 * s_w))
        g.ops.append(_Op(B.CONV_2D, [x, w, b], [y], 1, opts))
    return y, out_shape


def _emit(g: _Graph, op: Any, x: int, shape: tuple, qp: QParams) -> tuple[int, tuple, QParams]:
    B = _module("BuiltinOperator").BuiltinOperator

    if isinstance(op, QConv):
        if op.kind == "linear" and len(shape) != 2:
            raise ExportError(f"to_tflite: layer {op.name!r} needs a flattened (N, K) input")
        if op.kind != "linear" and len(shape) != 4:
            raise ExportError(f"to_tflite: layer {op.name!r} needs an (N, H, W, C) input")
        y, shape = _emit_conv(g, op, x, shape)
        return y, shape, op.output
    if isinstance(op, QResidual):
        h, hshape, hq = x, shape, qp
        for inner in op.body:
            h, hshape, hq = _emit(g, inner, h, hshape, hq)
        y = g.activation(op.add.name, hshape, op.add.output)
        g.ops.append(_Op(B.ADD, [h, x], [y], 11, {"act": 0}))
        return y, hshape, op.add.output
    if isinstance(op, QGlobalAvgPool):
        n, h, w, c = shape
        pooled = g.activation(f"{op.name}.pool", (n, 1, 1, c), op.qparams)
        opts = {"padding": _VALID, "stride": (1, 1), "filter": (h, w), "act": 0}
        g.ops.append(_Op(B.AVERAGE_POOL_2D, [x], [pooled], 5, opts))
        y = g.activation(op.name, (n, c), op.qparams)
        new_shape = g.const_i32(f"{op.name}.shape", [-1, c])
        g.ops.append(_Op(B.RESHAPE, [pooled, new_shape], [y], 17, {"new_shape": [-1, c]}))
        return y, (n, c), op.qparams
    if isinstance(op, QFlatten):
        if len(shape) == 2:
            return x, shape, qp
        n, h, w, c = shape
        perm = g.const_i32(f"{op.name}.perm", [0, 3, 1, 2])
        nchw = g.activation(f"{op.name}.nchw", (n, c, h, w), qp)
        g.ops.append(_Op(B.TRANSPOSE, [x, perm], [nchw], 26))
        y = g.activation(op.name, (n, c * h * w), qp)
        new_shape = g.const_i32(f"{op.name}.shape", [-1, c * h * w])
        g.ops.append(_Op(B.RESHAPE, [nchw, new_shape], [y], 17, {"new_shape": [-1, c * h * w]}))
        return y, (n, c * h * w), qp
    raise ExportError(
        f"to_tflite: operation {getattr(op, 'name', op)!r} of type "
        f"{type(op).__name__} has no TFLite export"
    )


# ----------------------------------------------------------------------------- serialization


def _module(name: str) -> Any:
    """A generated schema module (``tflite/<name>.py``; the package shadows it by a class)."""
    import importlib

    return importlib.import_module(f"tflite.{name}")


def _options(builder: Any, op: _Op) -> int | None:
    """Build the operator's builtin options table; returns its offset (or None)."""
    AddO = _module("AddOptions")
    ConvO = _module("Conv2DOptions")
    DwO = _module("DepthwiseConv2DOptions")
    FcO = _module("FullyConnectedOptions")
    PadO = _module("PadOptions")
    PoolO = _module("Pool2DOptions")
    ReshapeO = _module("ReshapeOptions")
    TransposeO = _module("TransposeOptions")

    o = op.options
    t = op.options_type
    if t == 17:  # reshape: the new shape vector first (nested objects before the table)
        vec = builder.CreateNumpyVector(np.asarray(o["new_shape"], dtype=np.int32))
        ReshapeO.Start(builder)
        ReshapeO.AddNewShape(builder, vec)
        return ReshapeO.End(builder)
    if t in (1, 2):
        mod = ConvO if t == 1 else DwO
        mod.Start(builder)
        mod.AddPadding(builder, o["padding"])
        mod.AddStrideH(builder, o["stride"][0])
        mod.AddStrideW(builder, o["stride"][1])
        if t == 2:
            mod.AddDepthMultiplier(builder, 1)
        mod.AddFusedActivationFunction(builder, o["act"])
        mod.AddDilationHFactor(builder, 1)
        mod.AddDilationWFactor(builder, 1)
        return mod.End(builder)
    if t == 5:
        PoolO.Start(builder)
        PoolO.AddPadding(builder, o["padding"])
        PoolO.AddStrideH(builder, o["stride"][0])
        PoolO.AddStrideW(builder, o["stride"][1])
        PoolO.AddFilterHeight(builder, o["filter"][0])
        PoolO.AddFilterWidth(builder, o["filter"][1])
        PoolO.AddFusedActivationFunction(builder, o["act"])
        return PoolO.End(builder)
    if t == 8:
        FcO.Start(builder)
        FcO.AddFusedActivationFunction(builder, o["act"])
        return FcO.End(builder)
    if t == 11:
        AddO.Start(builder)
        AddO.AddFusedActivationFunction(builder, o["act"])
        return AddO.End(builder)
    if t == 22:
        PadO.Start(builder)
        return PadO.End(builder)
    if t == 26:
        TransposeO.Start(builder)
        return TransposeO.End(builder)
    return None


#: Operator versions written (the lowest that covers per-channel int8).
_VERSIONS = {0: 2, 1: 2, 3: 3, 4: 3, 9: 4, 22: 1, 34: 2, 39: 2}


def _serialize(g: _Graph, inputs: list[int], outputs: list[int], description: str) -> bytes:
    flatbuffers, _ = _require_tflite()
    Buf = _module("Buffer")
    Mod = _module("Model")
    Op = _module("Operator")
    Code = _module("OperatorCode")
    QP = _module("QuantizationParameters")
    Sub = _module("SubGraph")
    Ten = _module("Tensor")

    b = flatbuffers.Builder(1024)

    def vector(arr: np.ndarray) -> int:
        return b.CreateNumpyVector(np.ascontiguousarray(arr))

    def table_vector(start, offsets: list[int]) -> int:
        start(b, len(offsets))
        for off in reversed(offsets):
            b.PrependUOffsetTRelative(off)
        return b.EndVector()

    # buffers (the data aligned to 16 bytes)
    buffers = []
    for data in g.buffers:
        data_off = None
        if data:
            b.StartVector(1, len(data), 16)
            b.head = b.head - len(data)
            b.Bytes[b.head : b.head + len(data)] = data
            b.vectorNumElems = len(data)
            data_off = b.EndVector()
        Buf.Start(b)
        if data_off is not None:
            Buf.AddData(b, data_off)
        buffers.append(Buf.End(b))
    # tensors
    tensors = []
    for t in g.tensors:
        name = b.CreateString(t.name)
        shape = vector(np.asarray(t.shape, dtype=np.int32))
        quant = None
        if t.scale is not None:
            scale, zp = vector(t.scale), vector(t.zero_point)
            QP.Start(b)
            QP.AddScale(b, scale)
            QP.AddZeroPoint(b, zp)
            QP.AddQuantizedDimension(b, t.axis)
            quant = QP.End(b)
        Ten.Start(b)
        Ten.AddShape(b, shape)
        Ten.AddType(b, t.dtype)
        Ten.AddBuffer(b, t.buffer)
        Ten.AddName(b, name)
        if quant is not None:
            Ten.AddQuantization(b, quant)
        tensors.append(Ten.End(b))
    # operator codes and operators
    codes = sorted({op.code for op in g.ops})
    code_offsets = []
    for c in codes:
        Code.Start(b)
        Code.AddDeprecatedBuiltinCode(b, min(c, 127))
        Code.AddBuiltinCode(b, c)
        Code.AddVersion(b, _VERSIONS.get(c, 1))
        code_offsets.append(Code.End(b))
    operators = []
    for op in g.ops:
        ins = vector(np.asarray(op.inputs, dtype=np.int32))
        outs = vector(np.asarray(op.outputs, dtype=np.int32))
        opts = _options(b, op)
        Op.Start(b)
        Op.AddOpcodeIndex(b, codes.index(op.code))
        Op.AddInputs(b, ins)
        Op.AddOutputs(b, outs)
        if opts is not None:
            Op.AddBuiltinOptionsType(b, op.options_type)
            Op.AddBuiltinOptions(b, opts)
        operators.append(Op.End(b))
    tensor_vec = table_vector(Sub.StartTensorsVector, tensors)
    op_vec = table_vector(Sub.StartOperatorsVector, operators)
    in_vec = vector(np.asarray(inputs, dtype=np.int32))
    out_vec = vector(np.asarray(outputs, dtype=np.int32))
    sub_name = b.CreateString("main")
    Sub.Start(b)
    Sub.AddTensors(b, tensor_vec)
    Sub.AddInputs(b, in_vec)
    Sub.AddOutputs(b, out_vec)
    Sub.AddOperators(b, op_vec)
    Sub.AddName(b, sub_name)
    subgraph = Sub.End(b)
    codes_vec = table_vector(Mod.StartOperatorCodesVector, code_offsets)
    subs_vec = table_vector(Mod.StartSubgraphsVector, [subgraph])
    bufs_vec = table_vector(Mod.StartBuffersVector, buffers)
    desc = b.CreateString(description)
    Mod.Start(b)
    Mod.AddVersion(b, SCHEMA_VERSION)
    Mod.AddOperatorCodes(b, codes_vec)
    Mod.AddSubgraphs(b, subs_vec)
    Mod.AddDescription(b, desc)
    Mod.AddBuffers(b, bufs_vec)
    b.Finish(Mod.End(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def to_tflite(
    model: QuantizedModel,
    input_shape: tuple[int, ...],
    path: str | os.PathLike | None = None,
) -> bytes:
    """Write an int8 :class:`~tinyodl.quantization.QuantizedModel` as a TFLite flatbuffer.

    Parameters
    ----------
    model : QuantizedModel
        Exported as :func:`tflite_compatible` of it (float32 scales; TFLite's rounding).
    input_shape : tuple
        NCHW shape of one input batch, e.g. ``(1, 1, 28, 28)``; the file's input is the
        int8 NHWC tensor ``(N, H, W, C)``, its output the int8 logits ``(N, classes)``
        (quantization parameters ``model.input`` / ``model.output``).
    path : path, optional
        Also write the bytes there (atomically).

    Returns
    -------
    bytes
        The ``.tflite`` file (file identifier ``TFL3``).

    Raises
    ------
    ExportError
        For an operation TFLite cannot hold, naming it.
    """
    _require_tflite()
    if not isinstance(model, QuantizedModel):
        raise ExportError(
            f"to_tflite: expected a QuantizedModel (tinyodl.quantization.quantize_model), "
            f"got {type(model).__name__}"
        )
    if len(input_shape) != 4:
        raise ExportError(f"to_tflite: input_shape must be (N, C, H, W), got {input_shape}")
    twin = tflite_compatible(model)
    n, c, h, w = (int(s) for s in input_shape)
    g = _Graph()
    x = g.activation("input", (n, h, w, c), twin.input)
    y, shape, qp = x, (n, h, w, c), twin.input
    for op in twin.ops:
        y, shape, qp = _emit(g, op, y, shape, qp)
    data = _serialize(g, [x], [y], "tinyodl int8 model (tinyodl.export.to_tflite)")
    if path is not None:
        from tinyodl.export._files import write_bytes_atomic

        write_bytes_atomic(path, data)
    return data
