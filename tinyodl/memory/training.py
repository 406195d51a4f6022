"""Measured memory of one training step, split into forward, loss, backward and update.

:func:`measure_training_step` runs ``forward -> loss -> backward -> optimizer.step()`` once
under :class:`~tinyodl.memory.MemoryProbe` and reports two kinds of numbers:

* **read** from array sizes (``nbytes``), exact: parameters, buffers, the input batch, what
  the layers saved for backward (right after forward), gradient buffers (after backward),
  optimizer state (after the step);
* **measured** with tracemalloc: the peak of the whole step and of each phase, above the
  memory that was already allocated when the step began. Only arrays allocated during the
  step are seen (see :mod:`tinyodl.memory.measure`).

The total training memory is ``resident_bytes + peak_bytes``: what existed before the step
(parameters, buffers, the batch, gradients and optimizer state kept from earlier steps) plus
the highest extra memory the step needed.

Chapter 00 (foundations); the categories follow TinyTL (Cai et al. 2020), Fig. 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinyodl.memory.measure import MemoryProbe, Phase, format_bytes

LossFn = Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]]

#: Short loss names accepted by :func:`measure_training_step` (as in ``tinyodl.train``).
LOSS_ALIASES = {"cross_entropy": "softmax_cross_entropy", "mse": "mse_loss"}

#: Order of the categories in tables and plots.
CATEGORIES = ("parameters", "buffers", "input", "gradients", "optimizer_state", "activations")


def resolve_loss(loss: str | LossFn) -> LossFn:
    """``f(logits, y) -> (loss, dlogits)`` from a name of :mod:`tinyodl.nn` or a callable."""
    if callable(loss):
        return loss
    from tinyodl import nn

    fn = getattr(nn, LOSS_ALIASES.get(loss, loss), None) if isinstance(loss, str) else None
    if not callable(fn) or str(loss).startswith("_"):
        raise ValueError(
            f"measure_training_step: unknown loss {loss!r}; use {sorted(LOSS_ALIASES)}, a loss "
            "of tinyodl.nn, or a callable f(logits, y) -> (loss, dlogits)"
        )
    return fn


def _root(a: np.ndarray) -> np.ndarray:
    """The array that owns the memory ``a`` views (``a`` itself if it owns it)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def unique_nbytes(arrays: Iterable[np.ndarray], exclude: Iterable[np.ndarray] = ()) -> int:
    """Bytes of the distinct memory blocks behind ``arrays``, skipping those of ``exclude``.

    Two views of one buffer count once; an array that views one of ``exclude`` (e.g. the
    input batch, allocated before the measurement) counts zero.
    """
    seen = {id(_root(a)) for a in exclude}
    total = 0
    for a in arrays:
        root = _root(a)
        if id(root) not in seen:
            seen.add(id(root))
            total += root.nbytes
    return total


def parameter_bytes(model: Any) -> int:
    """Bytes of all parameter values (trainable or frozen)."""
    return sum(p.data.nbytes for p in model.parameters())


def gradient_bytes(model: Any) -> int:
    """Bytes of the gradient buffers that currently exist (``param.grad is not None``)."""
    return sum(p.grad.nbytes for p in model.parameters() if p.grad is not None)


def buffer_bytes(model: Any) -> int:
    """Bytes of the non-trained buffers (batchnorm running statistics)."""
    return sum(b.nbytes for _, b in model.named_buffers())


def optimizer_state_bytes(optimizer: Any) -> int:
    """Bytes of the per-parameter state arrays of an optimizer (momentum, Adam moments)."""
    state = getattr(optimizer, "state", {})
    return sum(a.nbytes for slots in state.values() for a in slots.values())


def saved_arrays(model: Any) -> dict[str, list[np.ndarray]]:
    """``{layer name: [arrays in layer.saved]}`` for every layer that saved something."""
    out = {}
    for name, layer in model.named_layers():
        arrays = [a for a in layer.saved.values() if isinstance(a, np.ndarray)]
        if arrays:
            out[name] = arrays
    return out


class StepMemoryCategories:
    """The category sums shared by the measured and the analytic report of a training step.

    Both reports hold ``parameters``, ``buffers``, ``input``, ``gradients``,
    ``optimizer_state``, ``saved_new_bytes`` (the activations), ``resident_bytes`` and
    ``peak_bytes``; this mixin derives the totals from them the same way for both, so a
    prediction and a measurement can be compared category by category.
    """

    parameters: int
    buffers: int
    input: int
    gradients: int
    optimizer_state: int
    saved_new_bytes: int
    resident_bytes: int
    peak_bytes: int

    @property
    def total_peak_bytes(self) -> int:
        """Resident memory plus the peak of the step."""
        return self.resident_bytes + self.peak_bytes

    @property
    def scratch_bytes(self) -> int:
        """Total peak minus every category (negative if categories never coexist)."""
        return self.total_peak_bytes - sum(self.categories().values())

    def categories(self) -> dict[str, int]:
        """The named categories (read from array sizes), in :data:`CATEGORIES` order."""
        return {
            "parameters": self.parameters,
            "buffers": self.buffers,
            "input": self.input,
            "gradients": self.gradients,
            "optimizer_state": self.optimizer_state,
            "activations": self.saved_new_bytes,
        }

    def breakdown(self) -> dict[str, int]:
        """Categories plus ``scratch`` (clipped at 0): sums to at least the total peak."""
        return {**self.categories(), "scratch": max(self.scratch_bytes, 0)}


@dataclass
class TrainingMemoryReport(StepMemoryCategories):
    """Memory of one training step (all values in bytes).

    Read from array sizes (exact):

    * ``parameters``, ``buffers``, ``input`` (x and y), ``gradients`` (grad buffers after
      backward), ``optimizer_state`` (after the step);
    * ``saved_per_layer`` / ``saved_bytes``: ``sum(a.nbytes for a in layer.saved.values())``
      right after forward, per layer and in total (a saved view of the input counts here);
    * ``saved_new_bytes``: the same arrays, de-duplicated and without the memory of the input
      batch -- the activation memory the step itself allocated;
    * ``resident_bytes``: what existed before the step (parameters, buffers, input, and
      gradients and optimizer state kept from an earlier step).

    Measured with tracemalloc (above the memory allocated when the step began):

    * ``peak_bytes``: the highest point of the whole step; ``phases``: forward, loss,
      backward, step, each with its start, end and peak;
    * ``activations_measured``: net growth of the forward phase minus the output (logits).

    Derived: ``total_peak_bytes = resident_bytes + peak_bytes`` and ``scratch_bytes``, the
    part of the total peak that no category explains (transient buffers: im2col columns,
    temporaries, the largest dout/dx pair).
    """

    backend: str
    batch_size: int
    parameters: int
    buffers: int
    input: int
    gradients: int
    optimizer_state: int
    saved_bytes: int
    saved_new_bytes: int
    resident_bytes: int
    peak_bytes: int
    activations_measured: int
    output_bytes: int
    phases: list[Phase] = field(default_factory=list)
    saved_per_layer: dict[str, int] = field(default_factory=dict)
    gradients_before: int = 0
    optimizer_state_before: int = 0

    @property
    def steady_state(self) -> bool:
        """True if gradients and optimizer state already existed before the step."""
        return (
            self.gradients_before == self.gradients
            and self.optimizer_state_before == self.optimizer_state
        )

    def phase(self, name: str) -> Phase:
        """The measured phase ``"forward"``, ``"loss"``, ``"backward"`` or ``"step"``."""
        for phase in self.phases:
            if phase.name == name:
                return phase
        raise KeyError(f"TrainingMemoryReport.phase: no phase {name!r}")

    def to_table(self, analytic: Any = None) -> str:
        """A plain-text table of every number, marked (read), (measured) or (derived).

        Parameters
        ----------
        analytic : AnalyticMemory, optional
            Adds a column with the prediction of :func:`analytic_training_memory`.
        """
        a = analytic
        rows = [(k, v, "read", a and a.categories()[k]) for k, v in self.categories().items()]
        rows += [
            ("activations (fwd net - output)", self.activations_measured, "measured", None),
            ("scratch (total - categories)", self.scratch_bytes, "derived", a and a.scratch_bytes),
            ("resident before the step", self.resident_bytes, "read", a and a.resident_bytes),
            ("peak of the step", self.peak_bytes, "measured", a and a.peak_bytes),
            ("total peak", self.total_peak_bytes, "read + measured", a and a.total_peak_bytes),
        ]
        rows += [
            (
                f"  phase {p.name}: peak above step start",
                p.peak_bytes,
                "measured",
                a and a.phase_peaks.get(p.name, 0),
            )
            for p in self.phases
        ]
        head = f"training step memory (backend {self.backend}, batch {self.batch_size})"
        lines = [head, "-" * len(head)]
        if analytic is not None:
            lines.append(f"{'':<40} {'measured':>12} {'analytic':>12}")
        for name, value, how, predicted in rows:
            pred = "" if analytic is None else f" {format_bytes(predicted or 0):>12}"
            if analytic is not None and predicted is None:
                pred = f" {'':>12}"
            lines.append(f"{name:<40} {format_bytes(value):>12}{pred}  ({how})")
        return "\n".join(lines)

    def plot(self, path: Any = None, analytic: Any = None, **kwargs: Any):
        """Stacked bars of this report (and a prediction): see :func:`plot_memory_breakdown`."""
        from tinyodl.memory.plot import plot_memory_breakdown

        reports = [self] if analytic is None else [self, analytic]
        return plot_memory_breakdown(reports, path, **kwargs)

    @property
    def peak(self) -> int:
        """Alias of :attr:`total_peak_bytes`."""
        return self.total_peak_bytes

    __str__ = to_table


def measure_training_step(
    model: Any,
    optimizer: Any,
    x: np.ndarray,
    y: np.ndarray,
    loss: str | LossFn = "cross_entropy",
    zero_grad: bool = True,
    train: bool | None = None,
) -> TrainingMemoryReport:
    """Run one training step and measure its memory, phase by phase.

    Parameters
    ----------
    model : tinyodl.nn.Layer
        Trained in place (this is a real step).
    optimizer : tinyodl.nn.Optimizer
        Its ``step()`` is called once.
    x : ndarray, shape (N, ...)
        Input batch; allocated before tracing, so it is resident, not measured.
    y : ndarray, shape (N,) or like the output
        Targets for ``loss``.
    loss : str or callable, default "cross_entropy"
        ``"cross_entropy"``, ``"mse"``, a loss name of :mod:`tinyodl.nn`, or
        ``f(logits, y) -> (loss, dlogits)``.
    zero_grad : bool, default True
        Call ``optimizer.zero_grad()`` first (fill existing gradients with 0, keeping the
        buffers), as :func:`tinyodl.train.fit` does.
    train : bool, optional
        Passed to ``model.forward``: None (the default) follows the layers' modes, as
        :func:`tinyodl.train.fit` does, so a batchnorm put in evaluation mode (fixed
        statistics while fine-tuning) is measured as it runs; True/False forces the mode.

    Returns
    -------
    TrainingMemoryReport

    Notes
    -----
    The first step of a fresh model allocates the gradient buffers and (momentum, Adam) the
    optimizer state during the step; later steps find them resident. Run one step first to
    measure the steady state (``report.steady_state``).
    """
    from tinyodl.backend import get_backend

    loss_fn = resolve_loss(loss)
    x, y = np.asarray(x), np.asarray(y)
    if zero_grad:
        optimizer.zero_grad()
    grads_before = gradient_bytes(model)
    state_before = optimizer_state_bytes(optimizer)
    params, buffers = parameter_bytes(model), buffer_bytes(model)
    resident = params + buffers + x.nbytes + y.nbytes + grads_before + state_before

    with MemoryProbe() as probe:
        logits = model.forward(x, train)
        probe.checkpoint("forward")
        # read the sizes now and keep no reference: backward must be free to release them
        saved = saved_arrays(model)
        saved_per_layer = {name: sum(a.nbytes for a in arrays) for name, arrays in saved.items()}
        saved_new = unique_nbytes([a for arrays in saved.values() for a in arrays], exclude=[x])
        del saved
        output_bytes = logits.nbytes
        _, dlogits = loss_fn(logits, y)
        del logits
        probe.checkpoint("loss")
        model.backward(dlogits)
        del dlogits
        probe.checkpoint("backward")
        grads = gradient_bytes(model)
        optimizer.step()
        probe.checkpoint("step")

    forward = probe.phase("forward")
    return TrainingMemoryReport(
        backend=get_backend(),
        batch_size=int(x.shape[0]),
        parameters=params,
        buffers=buffers,
        input=x.nbytes + y.nbytes,
        gradients=grads,
        optimizer_state=optimizer_state_bytes(optimizer),
        saved_bytes=sum(saved_per_layer.values()),
        saved_new_bytes=saved_new,
        resident_bytes=resident,
        peak_bytes=probe.peak_bytes,
        activations_measured=forward.net_bytes - output_bytes,
        output_bytes=output_bytes,
        phases=[p for p in probe.phases if p.name != "end"],
        saved_per_layer=saved_per_layer,
        gradients_before=grads_before,
        optimizer_state_before=state_before,
    )
