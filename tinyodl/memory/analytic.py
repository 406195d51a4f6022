"""Analytic training memory: predict, layer by layer, what a training step needs.

:func:`analytic_training_memory` walks the model (shapes from ``model.describe``) and replays
one step -- forward, loss, backward, optimizer update -- on a small allocation simulator,
using the rules of :mod:`tinyodl.memory._rules` for what each layer and kernel allocates,
saves and frees. The result splits the memory the way TinyTL (Cai et al. 2020) and the
"256KB" paper (Lin et al. 2022) do:

* **parameters** (and batchnorm **buffers**) -- resident;
* **gradients** -- one buffer per *trainable* parameter;
* **optimizer state** -- SGD: none; momentum: 1x; Adam: 2x the trainable parameters;
* **activations** -- what layers save for backward (the input of a Linear/Conv only when its
  weight trains, a 1-byte mask for ReLU, int64 indices for max pooling...);
* **scratch** -- transients such as im2col columns and the dout/dx pair of backward.

:func:`compare` gives the relative error against a measured
:class:`~tinyodl.memory.training.TrainingMemoryReport`.

Chapter 00 (foundations); chapter 08 (transfer learning: TinyTL) uses it to show why a
bias-only update saves memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinyodl.memory import _rules
from tinyodl.memory._replay import (
    OPTIMIZERS,
    backward,
    forward,
    loss_gradient,
    resolve_optimizer,
    update,
)
from tinyodl.memory._tape import Tape
from tinyodl.memory.measure import format_bytes
from tinyodl.memory.training import CATEGORIES, StepMemoryCategories


@dataclass
class AnalyticMemory(StepMemoryCategories):
    """Predicted memory of one training step (bytes). See :func:`analytic_training_memory`.

    ``resident_bytes`` existed before the step (parameters, buffers, the batch, and in the
    steady state gradients and optimizer state); ``peak_bytes`` is the predicted highest
    extra memory during the step; ``total_peak_bytes`` their sum. ``peak_phase`` is the phase
    ("forward", "loss", "backward", "step") where the peak falls and ``at_peak`` what was
    alive then besides the resident memory, by kind. ``phase_peaks`` gives each phase's peak
    above the start of the step, like the measured phases.

    ``per_layer`` has one dict per leaf layer with keys ``name``, ``type``, ``input_shape``,
    ``output_shape``, ``num_params``, ``trainable`` (names of the trainable parameters),
    ``saved`` (what is kept for backward, e.g. ``"mask bool[32, 200]"``), ``saved_bytes``,
    ``grad_bytes``, ``state_bytes`` (optimizer state of its parameters), ``forward_peak`` and
    ``backward_peak`` (the most memory the layer's forward/backward call had allocated at
    once, above what was alive before it, output included).
    """

    backend: str
    batch_size: int
    input_shape: tuple[int, ...]
    optimizer: str
    steady_state: bool
    parameters: int
    buffers: int
    input: int
    gradients: int
    optimizer_state: int
    saved_bytes: int
    saved_new_bytes: int
    resident_bytes: int
    peak_bytes: int
    peak_phase: str
    phase_peaks: dict[str, int] = field(default_factory=dict)
    at_peak: dict[str, int] = field(default_factory=dict)
    per_layer: list[dict[str, Any]] = field(default_factory=list)

    @property
    def peak(self) -> int:
        """Alias of :attr:`total_peak_bytes`."""
        return self.total_peak_bytes

    @property
    def saved_per_layer(self) -> dict[str, int]:
        """``{layer name: bytes saved for backward}`` for layers that save something."""
        return {r["name"]: r["saved_bytes"] for r in self.per_layer if r["saved_bytes"]}

    def to_table(self) -> str:
        """Per-layer table followed by the totals."""
        cols = ("name", "type", "output_shape", "trainable", "saved", "saved_bytes")
        cols += ("grad_bytes", "forward_peak", "backward_peak")
        text = [[str(r.get(c, "")) for c in cols] for r in self.per_layer]
        for row in text:
            for i in (5, 6, 7, 8):
                row[i] = format_bytes(int(row[i] or 0))
        widths = [max([len(c), *(len(t[i]) for t in text)]) for i, c in enumerate(cols)]
        line = "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))
        lines = [
            f"analytic training memory (backend {self.backend}, batch {self.batch_size}, "
            f"{self.optimizer}, {'steady state' if self.steady_state else 'first step'})",
            line,
            "-" * len(line),
        ]
        lines += ["  ".join(t.ljust(w) for t, w in zip(r, widths, strict=True)) for r in text]
        lines.append("")
        for name, value in self.breakdown().items():
            lines.append(f"{name:<24} {format_bytes(value):>12}")
        lines.append(f"{'resident':<24} {format_bytes(self.resident_bytes):>12}")
        lines.append(
            f"{'peak of the step':<24} {format_bytes(self.peak_bytes):>12}  (in {self.peak_phase})"
        )
        lines.append(f"{'total peak':<24} {format_bytes(self.total_peak_bytes):>12}")
        return "\n".join(lines)

    __str__ = to_table


# ----------------------------------------------------------------------------- public API


def analytic_training_memory(
    model: Any,
    input_shape: tuple[int, ...],
    batch_size: int,
    optimizer: Any = "sgd",
    dtype: Any = np.float32,
    loss: str = "cross_entropy",
    backend: str | None = None,
    steady_state: bool = True,
    train: bool | None = None,
) -> AnalyticMemory:
    """Predict the memory of one training step of ``model``, layer by layer.

    Parameters
    ----------
    model : tinyodl.nn.Sequential
        Read only (shapes, trainable flags); nothing is computed.
    input_shape : tuple
        Shape of one example, e.g. ``(1, 28, 28)``.
    batch_size : int
    optimizer : {"sgd", "sgd_momentum", "adam"} or a tinyodl.nn optimizer
        An instance also gives weight decay and Nesterov.
    dtype : numpy dtype, default float32
        The model's float type (inputs are assumed to be given in it).
    loss : {"cross_entropy", "mse"}
        Cross-entropy assumes int64 class labels of shape (N,).
    backend : {"numpy", "cython"}, optional
        Whose kernel scratch to model; default the active backend.
    steady_state : bool, default True
        Gradients and optimizer state already exist (every step after the first in
        :func:`tinyodl.train.fit`, which zero-fills gradients). False models the first step
        of a fresh model and optimizer, which allocates them during the step.
    train : bool, optional
        None (the default) follows each layer's mode (``layer.training``), as
        :func:`~tinyodl.memory.measure_training_step` and :func:`tinyodl.train.fit` do;
        True/False forces training mode (batchnorm batch statistics, dropout active) or
        evaluation mode for every layer.

    Returns
    -------
    AnalyticMemory
    """
    from tinyodl.backend import get_backend

    if batch_size < 1:
        raise ValueError(f"analytic_training_memory: batch_size must be >= 1, got {batch_size}")
    if loss not in ("cross_entropy", "mse"):
        raise ValueError(
            f"analytic_training_memory: loss must be 'cross_entropy' or 'mse', got {loss!r}"
        )
    backend = backend or get_backend()
    if backend not in ("numpy", "cython"):
        raise ValueError(f"analytic_training_memory: unknown backend {backend!r}")
    kind, wd, nesterov = resolve_optimizer(optimizer)
    itemsize = np.dtype(dtype).itemsize
    shape = (int(batch_size), *(int(s) for s in input_shape))
    layers = dict(model.named_layers())
    rows = {
        r["name"]: _row(r, layers[r["name"]]) for r in model.describe(shape) if r.get("leaf", True)
    }
    ctx = _rules.Context(Tape(), backend, itemsize, steady_state, train, rows)
    updated = _updated_parameters(model, optimizer)
    saved_bytes, saved_new_bytes = _replay_step(
        ctx, model, shape, loss, updated, kind, wd, nesterov
    )

    grads = sum(p.data.nbytes for p in model.parameters() if p.trainable)
    state_factor = {"sgd": 0, "sgd_momentum": 1, "adam": 2}[kind]
    state = sum(state_factor * p.data.nbytes + (8 if kind == "adam" else 0) for p in updated)
    for name, row in rows.items():
        row["state_bytes"] = sum(
            state_factor * p.data.nbytes for p in layers[name].params.values() if p in updated
        )
    params = sum(p.data.nbytes for p in model.parameters())
    buffers = sum(b.nbytes for _, b in model.named_buffers())
    out_shape = model.output_shape(shape)
    label_bytes = shape[0] * 8 if loss == "cross_entropy" else _rules.numel(out_shape) * itemsize
    inputs = _rules.numel(shape) * itemsize + label_bytes
    resident = params + buffers + inputs + (grads + state if steady_state else 0)
    tape = ctx.tape
    return AnalyticMemory(
        backend=backend,
        batch_size=int(batch_size),
        input_shape=tuple(int(s) for s in input_shape),
        optimizer=kind,
        steady_state=steady_state,
        parameters=params,
        buffers=buffers,
        input=inputs,
        gradients=grads,
        optimizer_state=state,
        saved_bytes=saved_bytes,
        saved_new_bytes=saved_new_bytes,
        resident_bytes=resident,
        peak_bytes=tape.peak,
        peak_phase=tape.peak_phase,
        phase_peaks=dict(tape.phase_peaks),
        at_peak=dict(tape.at_peak),
        per_layer=list(rows.values()),
    )


def _updated_parameters(model: Any, optimizer: Any) -> list[Any]:
    """Trainable parameters the optimizer updates (all of the model's for a name)."""
    if isinstance(optimizer, str):
        return [p for p in model.parameters() if p.trainable]
    return [p for _, p in optimizer.params if p.trainable]


def _replay_step(ctx, model, shape, loss, updated, kind, wd, nesterov) -> tuple[int, int]:
    """Forward, loss, backward and update on ``ctx.tape``; returns the saved-bytes summary."""
    tape = ctx.tape
    out = forward(ctx, "", model, tape.resident(_rules.numel(shape) * ctx.itemsize), shape)
    saved = _saved_summary(ctx)
    tape.set_phase("loss")
    dlogits = loss_gradient(ctx, loss, model.output_shape(shape))
    tape.drop(out)
    tape.set_phase("backward")
    dx = backward(ctx, "", model, dlogits, shape)
    tape.drop(dx, dlogits)
    tape.set_phase("step")
    for p in updated:  # new optimizer state (first step) stays allocated
        update(ctx, kind, wd, nesterov, p.data.size * ctx.itemsize)
    return saved


def _row(described: dict, layer: Any) -> dict[str, Any]:
    """A per-layer table row from a ``describe`` row plus trainability."""
    trainable = [k for k, p in layer.params.items() if p.trainable]
    return {
        "name": described["name"],
        "type": described["type"],
        "input_shape": tuple(described["input_shape"]),
        "output_shape": tuple(described["output_shape"]),
        "num_params": int(described["num_params"]),
        "trainable": ",".join(trainable) or "-",
        "saved": "",
        "saved_bytes": 0,
        "grad_bytes": sum(layer.params[k].data.nbytes for k in trainable),
        "state_bytes": 0,
        "forward_peak": 0,
        "backward_peak": 0,
    }


def _saved_summary(ctx: _rules.Context) -> tuple[int, int]:
    """Fill the rows' ``saved`` columns; return (sum over layers, unique non-resident bytes)."""
    total, unique, seen = 0, 0, set()
    for name, items in ctx.saved.items():
        row = ctx.rows[name]
        row["saved"] = ", ".join(f"{key} {dtype}{list(shape)}" for key, _, shape, dtype in items)
        row["saved_bytes"] = sum(
            _rules.numel(shape) * _itemsize(dtype) for _, _, shape, dtype in items
        )
        total += row["saved_bytes"]
        for _, buf, _, _ in items:
            if id(buf) not in seen and not buf.resident:
                seen.add(id(buf))
                unique += buf.nbytes
    return total, unique


def _itemsize(dtype: str) -> int:
    return np.dtype(dtype).itemsize


def compare(analytic: AnalyticMemory, measured: Any) -> dict[str, float]:
    """Relative errors ``(analytic - measured) / measured`` of the main quantities.

    Parameters
    ----------
    analytic : AnalyticMemory
    measured : TrainingMemoryReport

    Returns
    -------
    dict
        ``total_peak``, ``step_peak``, ``activations``, ``saved``, ``gradients``,
        ``optimizer_state``, ``parameters`` and one ``phase_<name>`` per measured phase.
        0.0 when both are 0; ``inf`` when only the measurement is 0.
    """
    pairs = {
        "total_peak": (analytic.total_peak_bytes, measured.total_peak_bytes),
        "step_peak": (analytic.peak_bytes, measured.peak_bytes),
        "activations": (analytic.saved_new_bytes, measured.saved_new_bytes),
        "saved": (analytic.saved_bytes, measured.saved_bytes),
        "gradients": (analytic.gradients, measured.gradients),
        "optimizer_state": (analytic.optimizer_state, measured.optimizer_state),
        "parameters": (analytic.parameters, measured.parameters),
    }
    for phase in measured.phases:
        pairs[f"phase_{phase.name}"] = (analytic.phase_peaks.get(phase.name, 0), phase.peak_bytes)
    return {k: _rel(a, m) for k, (a, m) in pairs.items()}


def _rel(a: float, m: float) -> float:
    if m == 0:
        return 0.0 if a == 0 else float("inf")
    return (a - m) / m


__all__ = ["CATEGORIES", "OPTIMIZERS", "AnalyticMemory", "analytic_training_memory", "compare"]
