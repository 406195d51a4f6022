"""Memory of one training step of the int8 graph: measured and analytic (chapter 03).

The float model's training memory is :mod:`tinyodl.memory`'s job; the int8 graph has its own
categories (Lin et al. 2022, Fig. 1 and 6):

* **parameters**: int8 weights, int32 biases, per-channel multipliers/shifts/scales;
* **shadow**: the fp32 copy of the trainable integers (``store="shadow"`` only);
* **optimizer state**: fp32 momentum (SGD-M) or two moments (Adam) per trainable integer;
* **activations**: int8 tensors kept for backward -- the output of every conv (its clamp
  mask for the straight-through estimator) and of every residual add, and the input of
  every layer whose weight trains (one byte per value, a quarter of fp32);
* **gradients**: fp32 ``dL/dW_q``, ``dL/db_q`` of the trainable tensors, alive from the
  layer's backward until the update;
* **transients**: the fp32 gradient flowing back (``dL/dy``, the masked and rescaled
  ``dL/dacc``, ``dL/dx``) of the layer being processed.

:func:`measure_int8_training_step` runs one step under :class:`tinyodl.memory.MemoryProbe`;
:func:`analytic_int8_training_memory` adds the categories up from shapes, with the kernels'
scratch per backend (the compiled forward's: :func:`_int8_forward_scratch`). The compiled
backward (``kernels/int8_backward.pyx``) allocates, per call (``W`` = weight values,
``X`` = input values, ``NR`` = the float GEMM's tile width):

* ``dx`` and ``dW`` of a pointwise convolution (1x1, stride 1, unpadded; SIMD builds):
  the int8 operand is read in place (``kernels/simd/float_s8a.h``): ``4 F MR`` bytes of
  widened weights for ``dx``; for ``dW`` when ``F <= C``, the smaller of two paths with
  the same bits: on AVX-512 builds a panel of 32 input rows of a block of at most 256
  pixels, widened and transposed; or, per block of ``KB`` (at most 1024) pixels, ``dout``
  transposed (``4 KB F``) and ``MR`` widened input rows (``4 MR KB``; ``MR`` = the float
  tile's rows), plus the ``C x F`` sums when the batch has more than ``KB`` pixels; for
  ``dW`` when ``F > C`` (an expansion, any build): ``4 X`` (``float32(x_q - zp)``) and one
  BLAS product per image accumulated into ``dW``; ``dx`` otherwise as the other
  convolutions below;
* ``dx`` of a depthwise layer on AVX-512 builds: one zeroed plane of ``dout`` (gather
  form, ``(H + PH + KH - 1) (W + PW + KW - 1)`` floats); of other convolutions: ``4 W``
  (``float32(W_q)``) live while conv.pyx's float ``_backward_input`` runs, whose scratch
  :mod:`tinyodl.memory._rules` models (the implicit GEMM path builds its flipped copy
  ``4 W`` straight from ``W_q``, plus the packed filters, about ``4 W`` more);
* ``dW`` of a depthwise layer: the phase planes of one thread (no converted input); of
  a convolution without groups (not 1x1) on AVX-512 builds: one image's phase planes of
  ``x_q - zp``, ``dout`` transposed and the ``K x F`` sums (``kernels/simd/float_s8c.h``);
  of other convolutions: ``4 X`` (``float32(x_q - zp)``) beside conv.pyx's float
  ``_backward_weight``; under a sparse update, the selected channels of ``dL/dacc``;
* linear layers (SIMD builds read the int8 matrix in place): one widened column panel of
  ``4 K NR`` bytes (``K`` = the reduction length: ``F`` for ``dx``, ``N`` for ``dW``);
  other builds convert the int8 operand once (``4 W`` or ``4 X``).

The numpy reference is modelled from its float64 columns. The forward's requantization
temporaries of the numpy reference (int64 chains) are not modelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from tinyodl._shapes import padding4
from tinyodl.memory import _rules
from tinyodl.quantization.qmodel import QConv, QGlobalAvgPool, QResidual, QuantizedModel


@dataclass
class Int8StepMemory:
    """Bytes of one int8 training step: what was resident, and the step's peak above it."""

    resident_bytes: int
    peak_bytes: int
    parameters: int
    shadow_and_state: int
    input: int
    activations: int = 0
    gradients: int = 0

    @property
    def total_peak_bytes(self) -> int:
        return self.resident_bytes + self.peak_bytes


def _resident(qmodel: QuantizedModel, optimizer: Any, x: np.ndarray, y: np.ndarray):
    params = qmodel.nbytes()
    state = optimizer.state_nbytes()
    return params, state, x.nbytes + y.nbytes


def measure_int8_training_step(
    qmodel: QuantizedModel, optimizer: Any, x: np.ndarray, y: np.ndarray, step_fn: Any = None
) -> Int8StepMemory:
    """Run one :func:`tinyodl.qas.int8_train_step` (or ``step_fn``, same signature) under
    tracemalloc (a real update).

    Run one step before measuring so the optimizer state exists (the steady state).
    """
    from tinyodl.memory import MemoryProbe
    from tinyodl.qas import int8_train_step

    int8_train_step = step_fn or int8_train_step  # noqa: N806
    params, state, inputs = _resident(qmodel, optimizer, x, y)
    with MemoryProbe() as probe:
        int8_train_step(qmodel, optimizer, x, y)
    return Int8StepMemory(params + state + inputs, probe.peak_bytes, params, state, inputs)


def _weight_elements(conv: QConv) -> int:
    """Elements of the weight that train (only the selected rows under a sparse update)."""
    sel = conv.update_channels
    per_row = conv.weight.size // conv.weight.shape[0]
    return conv.weight.size if sel is None else len(sel) * per_row


def _trainable_elements(conv: QConv) -> int:
    return (_weight_elements(conv) if conv.weight_trainable else 0) + (
        conv.bias.size if conv.bias_trainable else 0
    )


def analytic_int8_training_memory(
    qmodel: QuantizedModel,
    batch_size: int,
    input_shape: tuple[int, ...] = (1, 28, 28),
    kind: str = "sgd",
    momentum: float = 0.9,
    store: str = "shadow",
    backend: str | None = None,
    start: int = 0,
) -> Int8StepMemory:
    """Predict the memory of one int8 training step (steady state) from shapes alone.

    Replays :func:`tinyodl.qas.int8_train_step` on the allocation simulator of
    :mod:`tinyodl.memory` (``_tape.Tape``): quantizing the input (float64 temporaries),
    the integer forward (int8 outputs, the saved tensors, the kernels' per-image scratch),
    the loss, the backward (fp32 ``dL/dy`` through the clamp mask, ``dL/dacc``, the
    gradient buffers, ``dL/dx``, and the gradient of each residual's skip kept alive while
    its body runs backward), the update and the release of the gradients.

    Parameters
    ----------
    qmodel : QuantizedModel
        Read only: shapes and which tensors train.
    batch_size : int
    input_shape : tuple, default (1, 28, 28)
    kind, momentum, store : as in :class:`tinyodl.qas.Int8Optimizer`
    backend : {"numpy", "cython"}, optional
        Whose kernel scratch to model (default: the active backend).
    start : int, default 0
        First operation on the backward path: the operations before it keep nothing and
        backward stops there (:func:`tinyodl.sparse_update.sparse_train_step`).

    Returns
    -------
    Int8StepMemory
        ``activations`` = int8 bytes kept for backward, ``gradients`` = fp32 gradient bytes.
    """
    from tinyodl.backend import get_backend
    from tinyodl.memory._tape import Tape

    n = int(batch_size)
    trainable = sum(_trainable_elements(c) for _, c in qmodel.named_convs())
    per_element = {"sgd": 4 if momentum else 0, "adam": 8}[kind] + (4 if store == "shadow" else 0)
    n_in = n * int(np.prod(input_shape))
    params = qmodel.nbytes()
    ctx = _Replay(_HeaderTape(Tape()), backend or get_backend())
    tape = ctx.tape
    tape.spike(8 * n_in, 8 * n_in, 8 * n_in)  # quantize: x / s, |.|, floor (float64)
    x = tape.new(n_in)
    shapes = [(n, *input_shape)]
    outs, h = [], x
    for i, op in enumerate(qmodel.ops):
        out = ctx.forward(op, h, shapes[-1])
        if i < start:  # run as at inference: nothing kept
            for key in list(ctx.saved):
                tape.drop(*ctx.saved.pop(key))
        shapes.append(ctx.shape)
        tape.drop(h)  # the caller's reference; saved tensors keep their own
        outs.append(out)
        h = out
    activations = tape.live
    tape.set_phase("loss")
    logits = n * qmodel.ops[-1].out_channels
    tape.spike(8 * logits, 8 * logits, 4 * logits)  # dequantize (float64) and softmax
    g = tape.new(4 * logits)
    tape.drop(h)
    tape.set_phase("backward")
    for i in reversed(range(start, len(qmodel.ops))):
        g_in = ctx.backward(qmodel.ops[i], g, shapes[i], input_grad=i > start)
        tape.drop(g)
        g = g_in
    tape.drop(g)
    gradients = sum(b.nbytes for b in ctx.grads)
    tape.set_phase("step")
    extra = {"sgd": 0, "adam": 12}[kind]  # Adam: the two bias corrections and the ratio
    for conv in (c for _, c in qmodel.named_convs()):
        for size, trains in (
            (_weight_elements(conv), conv.weight_trainable),
            (conv.bias.size, conv.bias_trainable),
        ):
            if trains:  # scaled gradient, -lr * direction, the rounding, the int copy, moved
                tape.spike(4 * size, 4 * size, 4 * size, 4 * size, 2 * size, extra * size)
    tape.drop(*ctx.grads)
    return Int8StepMemory(
        params + trainable * per_element + n_in * 4 + n * 8,
        tape.peak,
        params,
        trainable * per_element,
        n_in * 4 + n * 8,
        activations,
        gradients,
    )


#: What tracemalloc counts for one ndarray besides its data (the object, shape, strides):
#: the value :data:`tinyodl.engine.schedule.ARRAY_HEADER_BYTES` measured. At batch 1 a step
#: holds a few dozen arrays of a few KiB, so the replay counts it for every buffer.
ARRAY_HEADER_BYTES = 192


class _HeaderTape:
    """A :class:`tinyodl.memory._tape.Tape` whose every new buffer carries an array header."""

    def __init__(self, tape) -> None:
        self._tape = tape

    def __getattr__(self, name):
        return getattr(self._tape, name)

    def new(self, nbytes: int, kind: str = "scratch"):
        return self._tape.new(int(nbytes) + ARRAY_HEADER_BYTES, kind)

    def spike(self, *nbytes: int) -> None:
        self._tape.drop(*[self.new(n) for n in nbytes])

    def chain(self, nbytes: int, ops: int, kind: str = "scratch"):
        return self._tape.chain(int(nbytes) + ARRAY_HEADER_BYTES, ops, kind)


class _Replay:
    """Forward and backward rules of the integer operations on a :class:`Tape`."""

    def __init__(self, tape, backend: str) -> None:
        self.tape, self.backend = tape, backend
        self.saved: dict[int, list] = {}
        self.grads: list = []
        self.shape: tuple[int, ...] = ()

    # -- forward: returns the output Buf (one reference for the caller) ----------------------
    def forward(self, op, x, shape):
        tape = self.tape
        if isinstance(op, QConv):
            out_shape = op.output_shape(shape)
            k, p = _conv_k_p(op, shape, out_shape)
            if self.backend == "cython":
                tape.spike(*_int8_forward_scratch(op, shape, out_shape))
            else:  # int8 im2col, then float64 columns minus the zero point, whole batch
                cols = shape[0] * k * p * (op.groups if op.kind == "conv" else 1)
                tape.spike(cols, 8 * cols, 8 * cols)
            out = tape.new(int(np.prod(out_shape)))
            keep = [tape.ref(out)]
            if op.weight_trainable and op.kind == "depthwise" and op.update_channels is not None:
                keep.append(tape.new(x.nbytes * len(op.update_channels) // shape[1]))
            elif op.weight_trainable:
                keep.append(tape.ref(x))
            self.saved[id(op)] = keep
            self.shape = out_shape
            return out
        if isinstance(op, QResidual):
            h, s = tape.ref(x), shape
            for inner in op.body:
                out = self.forward(inner, h, s)
                tape.drop(h)
                h, s = out, self.shape
            y = tape.new(int(np.prod(s)))
            if self.backend == "numpy":  # add_s8's int64 temporaries
                tape.spike(*[8 * int(np.prod(s))] * 3)
            tape.drop(h)
            self.saved[id(op)] = [tape.ref(y)]
            self.shape = s
            return y
        if isinstance(op, QGlobalAvgPool):
            self.shape = (shape[0], shape[1])
            return tape.new(shape[0] * shape[1])
        self.shape = (shape[0], int(np.prod(shape[1:])))
        return tape.ref(x)  # flatten: a view

    # -- backward: returns dL/dx (a new Buf, or None when not needed) ------------------------
    def backward(self, op, g, shape, input_grad=True):
        tape = self.tape
        if isinstance(op, QConv):
            out_shape = op.output_shape(shape)
            out_f32 = 4 * int(np.prod(out_shape))
            k, p = _conv_k_p(op, shape, out_shape)
            masked = tape.new(out_f32)  # ste_clamp_backward
            if self.backend == "numpy":
                tape.spike(out_f32 // 4, out_f32 // 4)  # the boolean masks
            g_acc = tape.new(out_f32)
            if op.kind != "linear":  # numpy's buffer for the per-channel broadcast M * g
                tape.spike(4 * min(int(np.prod(out_shape[1:])), 8192))
            saved = self.saved.pop(id(op))
            if op.weight_trainable:
                if self.backend == "cython":
                    self.grads.append(self._weight_grad_cython(op, shape, out_shape))
                else:
                    self.grads.append(tape.new(4 * _weight_elements(op)))
                    tape.spike(*self._scratch(op, shape, k, p))
            if op.bias_trainable:
                self.grads.append(tape.new(4 * op.bias.size))
            tape.drop(*saved)
            dx = None
            if input_grad and self.backend == "cython":
                dx = self._input_grad_cython(op, shape, out_shape)
            elif input_grad:
                dx = tape.new(4 * int(np.prod(shape)))
                tape.spike(4 * op.weight.size, *self._scratch(op, shape, k, p))
            tape.drop(g_acc, masked)  # QConv.backward's local g holds the masked one
            return dx
        if isinstance(op, QResidual):
            y = self.saved.pop(id(op))
            masked = tape.new(4 * int(np.prod(self._body_out(op, shape))))
            ga, gb = tape.new(masked.nbytes), tape.new(masked.nbytes)
            tape.drop(masked, *y)
            shapes = [shape]
            for inner in op.body:
                shapes.append(inner.output_shape(shapes[-1]))
            for inner, s in zip(reversed(op.body), reversed(shapes[:-1]), strict=True):
                nxt = self.backward(inner, ga, s)
                tape.drop(ga)
                ga = nxt
            dx = tape.new(4 * int(np.prod(shape)))  # ga + gb
            tape.drop(ga, gb)
            return dx
        if isinstance(op, QGlobalAvgPool):
            tape.spike(4 * shape[0] * shape[1])  # g / (H W)
            return tape.new(4 * int(np.prod(shape)))  # broadcast copy
        return tape.ref(g)  # flatten

    # -- the compiled int8 backward (kernels/int8_backward.pyx) on the float32 kernels -------
    def _input_grad_cython(self, op, shape, out_shape):
        """``dx``: linear layers read W_q in place (one widened column panel of F x NR floats
        per thread) or convert it once; convolutions convert W_q to float32 once (4 bytes a
        weight) and run conv.pyx's float backward, whose scratch ``tinyodl.memory`` models."""
        tape = self.tape
        if op.kind == "linear":
            dx = tape.new(4 * int(np.prod(shape)))
            tape.spike(self._s8_panel(op.weight.shape[0]) if _s8_gemm() else 4 * op.weight.size)
            return dx
        if _pointwise(op) and _s8_pointwise():  # F x MR widened weights per thread
            dx = tape.new(4 * int(np.prod(shape)))
            tape.spike(4 * op.weight.shape[0] * _rules._sgemm_tile()[1])
            return dx
        if op.kind == "depthwise" and _s8_depthwise_gather():  # one zeroed plane of dout
            dx = tape.new(4 * int(np.prod(shape)))
            tape.spike(4 * _depthwise_up_scratch(op, shape))
            return dx
        layer = _FloatConv(op, op._groups(), op.weight.shape[0])
        # the implicit-GEMM path builds its flipped float filters straight from W_q (the copy
        # the rules count); the others convert W_q first
        flipped = op.kind == "conv" and shape[1] >= _rules._sgemm_tile()[1]
        flipped = flipped and _rules._implicit_same(self._ctx(), layer, shape, out_shape)
        w_f = tape.new(0 if flipped else 4 * op.weight.size)  # _as_float(w)
        dx = _rules.conv_backward_input(self._ctx(), layer, shape, out_shape)
        tape.drop(w_f)
        return dx

    def _weight_grad_cython(self, op, shape, out_shape):
        """``dW`` (the gradient buffer, returned): the selected channels' ``dL/dacc`` copied
        out under a sparse update; linear layers as in ``_input_grad_cython``; depthwise
        layers read the int8 input (float32 phase planes, ``tinyodl.memory``'s depthwise
        weight scratch); a pointwise expansion (F > C) converts ``x_q - zp`` and calls BLAS
        per image; other convolutions convert ``x_q - zp`` to float32 once (4 bytes an
        input value) and run conv.pyx's float weight gradient."""
        tape, sel = self.tape, op.update_channels
        filters = op.weight.shape[0] if sel is None else len(sel)
        g_w = tape.new(0 if sel is None else 4 * filters * int(np.prod(out_shape)) // out_shape[1])
        if op.kind == "linear":
            dw = tape.new(4 * filters * op.weight.shape[1])
            tape.spike(self._s8_panel(shape[0]) if _s8_gemm() else 4 * int(np.prod(shape)))
            tape.drop(g_w)
            return dw
        if _pointwise(op) and _s8_pointwise() and filters <= shape[1]:
            dw = tape.new(4 * filters * op.weight.shape[1])
            tape.spike(4 * _pointwise_weight_scratch(shape, filters))
            tape.drop(g_w)
            return dw
        if _pointwise(op) and filters > shape[1]:  # float32(x_q - zp), BLAS per image
            dw = tape.new(4 * filters * op.weight.shape[1])
            tape.spike(4 * int(np.prod(shape)))
            tape.drop(g_w)
            return dw
        if op.kind == "conv" and op.groups == 1 and not _pointwise(op) and _s8_conv_planes():
            dw = tape.new(4 * filters * int(np.prod(op.weight.shape[1:])))
            tape.spike(4 * _conv_planes_scratch(op, shape, out_shape, filters))
            tape.drop(g_w)
            return dw
        if op.kind == "depthwise":
            in_shape = (shape[0], filters, *shape[2:]) if sel is not None else shape
            layer = _FloatConv(op, filters, filters)
            x_f = tape.new(0)
        else:
            in_shape = shape
            layer = _FloatConv(op, op.groups, filters)
            x_f = tape.new(4 * int(np.prod(shape)))  # _as_float(x, zp)
        w_out = (out_shape[0], filters, *out_shape[2:])
        dw = _rules.conv_backward_weight(self._ctx(), layer, in_shape, w_out)
        tape.drop(x_f, g_w)
        return dw

    def _ctx(self):
        return _rules.Context(self.tape, "cython", 4, grads_resident=True)

    @staticmethod
    def _s8_panel(k: int) -> int:
        """One thread's widened int8 column panel (K x NR float32) of ``_gemm_s8b``."""
        return 4 * k * _rules._sgemm_tile()[2]

    def _scratch(self, op, shape, k, p) -> tuple[int, ...]:
        """Columns of one image (Cython, float32) or of the batch (numpy, float64)."""
        if self.backend == "cython":
            return (4 * k * p,)
        groups = op.weight.shape[0] if op.kind == "depthwise" else op.groups
        cols = shape[0] * k * p * groups
        return (8 * cols, 8 * cols)

    @staticmethod
    def _body_out(op, shape):
        for inner in op.body:
            shape = inner.output_shape(shape)
        return shape


class _FloatConv:
    """The float32 convolution that the compiled int8 backward runs for ``op``: what the
    rules of :mod:`tinyodl.memory._rules` read of a ``tinyodl.nn.Conv2d``."""

    def __init__(self, op: QConv, groups: int, filters: int) -> None:
        self.kernel_size = tuple(int(v) for v in op.weight.shape[2:])
        self.stride, self.padding = tuple(op.stride), tuple(op.padding)
        self.groups, self.out_channels = int(groups), int(filters)
        size = filters * int(np.prod(op.weight.shape[1:]))
        self.params = {"weight": SimpleNamespace(data=SimpleNamespace(size=size))}


def _pointwise(op: QConv) -> bool:
    """1x1, stride 1, unpadded, no groups: the compiled backward's in-place int8 path."""
    return (
        op.kind == "conv"
        and op.groups == 1
        and op.weight.shape[2:] == (1, 1)
        and tuple(op.stride) == (1, 1)
        and tuple(op.padding) == (0, 0)
    )


def _s8_pointwise() -> bool:
    """Whether the compiled conv backward reads int8 operands in place (pointwise layers)."""
    try:
        from tinyodl._kernels.int8_backward import POINTWISE_DX_IN_PLACE
    except ImportError:
        return False
    return bool(POINTWISE_DX_IN_PLACE)


#: Upper bounds of the int8 micro-kernel's tile (kernels/simd/int8_ukernels.h: 8 x 32 on
#: AVX-512 VNNI; AVX2 and portable are smaller), for the forward scratch below.
INT8_MR, INT8_NR = 8, 32


def _int8_forward_scratch(op: QConv, shape, out_shape) -> tuple[int, ...]:
    """Scratch of the compiled int8 forward (``kernels/int8.pyx``), one call, one thread.

    * conv: the (i, j, c) copy of the weights, K padded to 4 (none for a pointwise layer
      with C a multiple of 4: its rows are read in place), one packed panel of im2col
      columns read straight from NCHW (K x NR bytes), one MR x NR block of int32
      accumulators (requantized as it completes) and the folded bias (int64 per filter);
    * depthwise: one thread's int16 phase planes, int32 accumulators and int8 outputs;
    * linear: the packed weights (F rounded up to NR, x K) and the per-column constants.
    """
    n = int(shape[0])
    if op.kind == "linear":
        k4, f = -(-int(shape[1]) // 4) * 4, int(op.weight.shape[0])
        return (-(-f // INT8_NR) * INT8_NR * k4, 4 * n * k4 + 24 * f + 4 * INT8_MR * INT8_NR)
    kh, kw = (int(v) for v in op.weight.shape[2:])
    sh, sw = tuple(op.stride)
    oh, ow = int(out_shape[2]), int(out_shape[3])
    if op.kind == "depthwise":
        hq, wq = oh + (kh - 1) // sh + 1, ow + (kw - 1) // sw
        return (2 * sh * sw * hq * wq + 5 * oh * wq,)
    f, k = int(op.weight.shape[0]), int(np.prod(op.weight.shape[1:]))
    k4 = -(-k // 4) * 4
    w_copy = 0 if _pointwise(op) and k == k4 else f * k4
    return (w_copy, INT8_NR * k4 + 4 * INT8_MR * INT8_NR + 8 * f)


def _pointwise_weight_scratch(shape, filters: int) -> int:
    """Floats of scratch of the in-place pointwise dW (``kernels/simd/float_s8a.h``), one
    array: the kernel's own count (``pointwise_weight_scratch``: the smaller of its two
    paths, panels of 32 widened and transposed input rows, or dout transposed per block of
    pixels beside MR widened input rows, plus the C x F sums when the batch takes several
    blocks)."""
    from tinyodl._kernels.int8_backward import pointwise_weight_scratch

    n, c, h, w = (int(v) for v in shape)
    return int(pointwise_weight_scratch(n, c, filters, h * w)[1])


def _s8_depthwise_gather() -> bool:
    """Whether the compiled depthwise dx runs in gather form (AVX-512 builds)."""
    try:
        from tinyodl._kernels.int8_backward import DEPTHWISE_DX_GATHER
    except ImportError:
        return False
    return bool(DEPTHWISE_DX_GATHER)


def _depthwise_up_scratch(op: QConv, shape) -> int:
    """Floats of the depthwise dx's zeroed dout plane (``tod_dw_up_size``, one thread)."""
    kh, kw = (int(v) for v in op.weight.shape[2:])
    ph, _, pw, _ = padding4(op.padding)
    return (int(shape[2]) + ph + kh - 1) * (int(shape[3]) + pw + kw - 1)


def _s8_conv_planes() -> bool:
    """Whether the compiled conv dW (groups 1) reads int8 phase planes (AVX-512 builds)."""
    try:
        from tinyodl._kernels.int8_backward import CONV_WEIGHT_PLANES
    except ImportError:
        return False
    return bool(CONV_WEIGHT_PLANES)


def _conv_planes_scratch(op: QConv, shape, out_shape, filters: int) -> int:
    """Floats of scratch of the phase-plane conv dW (``kernels/simd/float_s8c.h``): one
    image's C phase planes, dout^T (OH OW x F), the K x F sums."""
    kh, kw = (int(v) for v in op.weight.shape[2:])
    sh, sw = tuple(op.stride)
    oh, ow = int(out_shape[2]), int(out_shape[3])
    hq, wq = oh + (kh - 1) // sh + 1, ow + (kw - 1) // sw
    c = int(shape[1])
    return c * sh * sw * hq * wq + oh * ow * filters + c * kh * kw * filters


def _s8_gemm() -> bool:
    """Whether the compiled linear backward reads int8 operands in place (SIMD builds)."""
    try:
        from tinyodl._kernels.int8_backward import INT8_OPERAND_GEMM
    except ImportError:
        return False
    return bool(INT8_OPERAND_GEMM)


def _conv_k_p(op: QConv, shape, out_shape) -> tuple[int, int]:
    """Reduction length per group and output pixels per image of a QConv."""
    if op.kind == "linear":
        return int(shape[1]), 1
    return int(np.prod(op.weight.shape[1:])), int(out_shape[2] * out_shape[3])
