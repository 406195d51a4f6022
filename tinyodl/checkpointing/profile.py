"""From a model to planner numbers, and the measurement that checks them (chapter 06).

* :func:`profile_chain` runs each child of a ``Sequential`` once on an example batch and
  *reads* what the planner needs (:class:`~tinyodl.checkpointing.ChainProfile`): the bytes
  of its input and output, what it saves for backward (``layer.saved``, as chapter 00's
  memory report reads it), whether it keeps its input, and its forward cost in MACs from the
  shapes. The short-lived memory of each layer's backward (its *workspace*) is measured with
  tracemalloc.
* :func:`measure_backprop` *measures* the peak of one forward + backward pass with
  tracemalloc (:class:`tinyodl.memory.MemoryProbe`), to hold the planner's prediction
  (:func:`~tinyodl.checkpointing.simulate_plan`) against.

Both leave the model as they found it: running statistics, random generators and gradients
are put back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinyodl.checkpointing.planner import ChainProfile
from tinyodl.checkpointing.sequential import _generators, _get_state, _set_state, release_saved
from tinyodl.memory import MemoryProbe
from tinyodl.memory.training import unique_nbytes
from tinyodl.nn import Layer, Sequential

__all__ = ["BackpropMemory", "forward_macs", "measure_backprop", "preserved_state", "profile_chain"]


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))


def _leaf_cost(row: dict[str, Any]) -> int:
    """MACs of a Linear or convolution; one operation per output element for the rest."""
    cfg, out = row["config"], row["output_shape"]
    outputs = int(np.prod(out, dtype=np.int64))
    if row["type"] == "Linear":
        return outputs * int(cfg["in_features"])
    if row["type"] == "Conv2d":
        kh, kw = _pair(cfg["kernel_size"])
        return outputs * (int(cfg["in_channels"]) // int(cfg["groups"])) * kh * kw
    if row["type"] == "DepthwiseConv2d":
        kh, kw = _pair(cfg["kernel_size"])
        return outputs * kh * kw
    return outputs


def forward_macs(layer: Layer, input_shape: tuple[int, ...]) -> int:
    """Forward cost of ``layer`` on a batch of ``input_shape`` (batch included).

    Multiply-accumulates of its Linear and Conv2d layers, plus one operation per output
    element of every other leaf (activations, pooling, batchnorm).
    """
    if not layer.children():
        out = layer.output_shape(tuple(input_shape))
        row = {"type": type(layer).__name__, "config": layer.config(), "output_shape": out}
        return _leaf_cost(row)
    rows = layer.describe(tuple(input_shape))
    return sum(_leaf_cost(r) for r in rows if r["leaf"])


@contextmanager
def preserved_state(model: Layer) -> Iterator[None]:
    """Put back the buffers, random generators and gradients of ``model`` on exit."""
    buffers = [(b, b.copy()) for _, b in model.named_buffers()]
    generators = [(g, _get_state(g)) for g in _generators([model])]
    grads = [(p, None if p.grad is None else p.grad.copy()) for p in model.parameters()]
    try:
        yield
    finally:
        for buf, copy in buffers:
            buf[...] = copy
        for g, state in generators:
            _set_state(g, state)
        for p, grad in grads:
            p.grad = grad
            p.grad_sample = None
        release_saved(model)


def _saved_arrays(layer: Layer) -> list[np.ndarray]:
    arrays = []
    for sub in [layer, *(child for _, child in layer.named_layers())]:
        arrays += [a for a in sub.saved.values() if isinstance(a, np.ndarray)]
    return arrays


def _root(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def profile_chain(
    seq: Sequential,
    x: np.ndarray,
    train: bool | None = None,
    input_resident: bool = True,
    dout_resident: bool = True,
    seed: int = 0,
) -> ChainProfile:
    """Per-child numbers of ``seq`` on the batch ``x`` for the checkpoint planner.

    Parameters
    ----------
    seq : Sequential (or CheckpointedSequential)
        Each child is one link of the chain.
    x : ndarray
        An example batch (the batch size matters: activations grow with it).
    train : bool, optional
        Mode of the forward passes (default: each layer's own mode).
    input_resident, dout_resident : bool
        Passed to :class:`ChainProfile`.
    seed : int
        Seed of the random output gradients used to measure the backward workspace.

    Returns
    -------
    ChainProfile
        ``input_bytes``/``output_bytes``: ``nbytes`` of each child's input and output;
        ``saved_bytes``: distinct memory in ``layer.saved`` (sub-layers included) besides
        the child's input; ``saves_input``: whether a saved array shares the input's memory;
        ``forward_cost``: :func:`forward_macs`; ``workspace_bytes``: peak of the child's
        backward (tracemalloc, gradients already allocated) minus the ``dx`` it returns;
        ``forward_workspace_bytes``: peak of its forward minus its output and saved bytes.

    Notes
    -----
    Each child runs forward and backward twice (the first pass warms up); the model's
    running statistics, random generators and gradients are restored afterwards. An output
    that is a view of the input (``Flatten``) is counted as a new array, so the profile
    errs on the safe side. The measurement uses tracemalloc: do not call it inside another
    :class:`~tinyodl.memory.MemoryProbe` (probes do not nest).
    """
    rng = np.random.default_rng(seed)
    children = list(seq.children().items())
    keys = ("inp", "out", "saved", "keeps", "cost", "work", "fwork")
    fields: dict[str, list] = {k: [] for k in keys}
    # One tracemalloc session for the whole chain: each measured call is a phase of it (a
    # fresh measurement per call would garbage-collect the whole heap every time).
    with preserved_state(seq), MemoryProbe() as probe:
        h = np.asarray(x, dtype=seq.dtype)
        for _, child in children:
            y = child.forward(h, train)  # warm-up: one-time costs, gradient buffers
            dout = rng.standard_normal(y.shape).astype(y.dtype)
            child.backward(dout)
            del y
            probe.checkpoint("setup")
            y = child.forward(h, train)
            forward = probe.checkpoint("forward")
            arrays = _saved_arrays(child)
            saved = unique_nbytes(arrays, exclude=[h])
            fields["inp"].append(h.nbytes)
            fields["out"].append(y.nbytes)
            fields["saved"].append(saved)
            fields["keeps"].append(any(_root(a) is _root(h) for a in arrays))
            fields["cost"].append(forward_macs(child, h.shape))
            fields["fwork"].append(max(0, forward.transient_bytes - y.nbytes - saved))
            del arrays
            probe.checkpoint("bookkeeping")
            dx = child.backward(dout)
            backward = probe.checkpoint("backward")
            fields["work"].append(max(0, backward.transient_bytes - dx.nbytes))
            del dx, dout
            h = y
    return ChainProfile(
        input_bytes=fields["inp"],
        output_bytes=fields["out"],
        saved_bytes=fields["saved"],
        saves_input=fields["keeps"],
        forward_cost=fields["cost"],
        workspace_bytes=fields["work"],
        forward_workspace_bytes=fields["fwork"],
        input_resident=input_resident,
        dout_resident=dout_resident,
        names=[name for name, _ in children],
    )


@dataclass
class BackpropMemory:
    """Measured memory of one forward + backward pass (bytes, above the resident memory).

    Attributes
    ----------
    peak_bytes : int
        Highest traced memory over the forward and the backward pass (tracemalloc).
    kept_bytes : int
        Memory the forward pass left allocated for the backward pass (saved tensors and
        boundaries), the output excluded.
    forward_peak_bytes, backward_peak_bytes : int
        The peak of each pass.
    """

    peak_bytes: int
    kept_bytes: int
    forward_peak_bytes: int
    backward_peak_bytes: int


def measure_backprop(
    model: Layer, x: np.ndarray, dout: np.ndarray, train: bool | None = None
) -> BackpropMemory:
    """Measure forward + backward of ``model`` with tracemalloc.

    ``x`` and ``dout`` (the gradient of the output) exist before the measurement, so they
    are resident, not counted; the output is dropped as soon as the forward pass returns, as
    a loss would consume it. A first, unmeasured pass allocates the gradient buffers (the
    steady state of training); the model's state is restored afterwards
    (:func:`preserved_state`).
    """
    with preserved_state(model):
        model.forward(x, train)
        model.backward(dout)  # warm-up: gradient buffers now exist
        model.zero_grad()
        with MemoryProbe() as probe:
            out = model.forward(x, train)
            out_bytes = out.nbytes
            del out
            forward = probe.checkpoint("forward")
            model.backward(dout)
            backward = probe.checkpoint("backward")
    return BackpropMemory(
        peak_bytes=probe.peak_bytes,
        kept_bytes=forward.end_bytes,
        forward_peak_bytes=max(forward.peak_bytes, out_bytes),
        backward_peak_bytes=backward.peak_bytes,
    )
