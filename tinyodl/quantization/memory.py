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
) -> Int8StepMemory:
    """Predict the memory of one int8 training step (steady state) from shapes alone.

    Parameters
    ----------
    qmodel : QuantizedModel
        Read only: shapes and which tensors train.
    batch_size : int
    input_shape : tuple, default (1, 28, 28)
    kind, momentum, store : as in :class:`tinyodl.qas.Int8Optimizer`

    Returns
    -------
    Int8StepMemory
        ``activations`` = int8 bytes kept for backward, ``gradients`` = fp32 gradient bytes;
        ``peak_bytes`` = the largest of (forward: activations + logits) and, layer by layer
        in backward, (activations not yet released + gradients so far + the layer's fp32
        ``dL/dy``, ``dL/dacc`` and ``dL/dx``).
    """
    n = int(batch_size)
    trainable = sum(_trainable_elements(c) for _, c in qmodel.named_convs())
    per_element = {"sgd": 4 if momentum else 0, "adam": 8}[kind] + (4 if store == "shadow" else 0)
    inputs = n * int(np.prod(input_shape)) * 4 + n * 8
    params = qmodel.nbytes()
    # Walk the graph: (saved int8 bytes, output elements, input elements, grad bytes) per step.
    steps: list[tuple[int, int, int, int]] = []
    shape = (n, *input_shape)
    first = True
    for op in qmodel.ops:
        shape = _walk(op, shape, steps, first)
        first = False
    activations = sum(s[0] for s in steps)
    gradients = sum(s[3] for s in steps)
    logits = n * qmodel.ops[-1].out_channels * 4
    forward_peak = activations + 3 * logits
    backward_peak, released, grads = 0, 0, 0
    for saved, out_elems, in_elems, grad in reversed(steps):
        transient = 4 * (2 * out_elems + in_elems)  # dL/dy, dL/dacc, dL/dx (fp32)
        grads += grad
        backward_peak = max(backward_peak, activations - released + grads + transient)
        released += saved
    peak = max(forward_peak, backward_peak, gradients + 2 * 4 * max(trainable, 1))
    return Int8StepMemory(
        params + trainable * per_element + inputs,
        peak,
        params,
        trainable * per_element,
        inputs,
        activations,
        gradients,
    )


def _walk(op, shape, steps, first: bool) -> tuple[int, ...]:
    n = shape[0]
    elems_in = int(np.prod(shape))
    if isinstance(op, QConv):
        out = op.output_shape(shape)
        elems_out = int(np.prod(out))
        saved = elems_out  # the int8 output (clamp mask)
        if op.weight_trainable and first:
            saved += elems_in  # the quantized image is kept only for the first layer's dW
        grad = 4 * _trainable_elements(op)
        steps.append((saved, elems_out, elems_in, grad))
        return out
    if isinstance(op, QResidual):
        h = shape
        for i, inner in enumerate(op.body):
            h = _walk(inner, h, steps, first and i == 0)
        elems = int(np.prod(h))
        steps.append((elems, elems, elems, 0))  # the add's int8 output; dL/da, dL/db
        return h
    if isinstance(op, QGlobalAvgPool):
        out = (n, shape[1])
        steps.append((int(np.prod(out)), int(np.prod(out)), elems_in, 0))
        return out
    out = (n, elems_in // n)
    steps.append((0, 0, 0, 0))
    return out
