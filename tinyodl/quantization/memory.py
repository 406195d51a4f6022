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
:func:`analytic_int8_training_memory` adds the categories up from shapes. The analytic model
leaves out the kernels' own scratch (im2col and packing buffers, which depend on the
backend) and numpy's temporaries in quantizing the input, so it is a lower bound; the
benchmark reports both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

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
    qmodel: QuantizedModel, optimizer: Any, x: np.ndarray, y: np.ndarray
) -> Int8StepMemory:
    """Run one :func:`tinyodl.qas.int8_train_step` under tracemalloc (a real update).

    Run one step before measuring so the optimizer state exists (the steady state).
    """
    from tinyodl.memory import MemoryProbe
    from tinyodl.qas import int8_train_step

    params, state, inputs = _resident(qmodel, optimizer, x, y)
    with MemoryProbe() as probe:
        int8_train_step(qmodel, optimizer, x, y)
    return Int8StepMemory(params + state + inputs, probe.peak_bytes, params, state, inputs)


def _trainable_elements(conv: QConv) -> int:
    return (conv.weight.size if conv.weight_trainable else 0) + (
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
    ctx = _Replay(Tape(), backend or get_backend())
    tape = ctx.tape
    tape.spike(8 * n_in, 8 * n_in, 8 * n_in)  # quantize: x / s, |.|, floor (float64)
    x = tape.new(n_in)
    shapes = [(n, *input_shape)]
    outs, h = [], x
    for op in qmodel.ops:
        out = ctx.forward(op, h, shapes[-1])
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
    for i in reversed(range(len(qmodel.ops))):
        g_in = ctx.backward(qmodel.ops[i], g, shapes[i], input_grad=i > 0)
        tape.drop(g)
        g = g_in
    tape.drop(g)
    gradients = sum(b.nbytes for b in ctx.grads)
    tape.set_phase("step")
    extra = {"sgd": 0, "adam": 12}[kind]  # Adam: the two bias corrections and the ratio
    for conv in (c for _, c in qmodel.named_convs()):
        for size, trains in (
            (conv.weight.size, conv.weight_trainable),
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
            if self.backend == "cython":  # packed int16 weights, int32 accumulators, one image
                tape.spike(2 * op.weight.size, 4 * out_shape[1] * p, 2 * int(np.prod(shape[1:])))
            else:  # int8 im2col, then float64 columns minus the zero point, whole batch
                cols = shape[0] * k * p * (op.groups if op.kind == "conv" else 1)
                tape.spike(cols, 8 * cols, 8 * cols)
            out = tape.new(int(np.prod(out_shape)))
            keep = [tape.ref(out)]
            if op.weight_trainable:
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
            tape.spike(*[8 * int(np.prod(s))] * 3)  # add_s8's int64 temporaries (numpy)
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
            tape.drop(masked)
            saved = self.saved.pop(id(op))
            if op.weight_trainable:
                self.grads.append(tape.new(4 * op.weight.size))
                tape.spike(*self._scratch(op, shape, k, p))
            if op.bias_trainable:
                self.grads.append(tape.new(4 * op.bias.size))
            tape.drop(*saved)
            dx = None
            if input_grad:
                dx = tape.new(4 * int(np.prod(shape)))
                tape.spike(4 * op.weight.size, *self._scratch(op, shape, k, p))
            tape.drop(g_acc)
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


def _conv_k_p(op: QConv, shape, out_shape) -> tuple[int, int]:
    """Reduction length per group and output pixels per image of a QConv."""
    if op.kind == "linear":
        return int(shape[1]), 1
    return int(np.prod(op.weight.shape[1:])), int(out_shape[2] * out_shape[3])
