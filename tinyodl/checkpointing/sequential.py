"""``CheckpointedSequential``: a Sequential that keeps segment boundaries and recomputes.

Plain backpropagation keeps, between the forward and the backward pass, everything every
layer saved: memory grows with the depth ``n``. Segment checkpointing (Chen et al. 2016)
cuts the chain of layers into segments. During the forward pass a segment keeps only its
input (its *boundary*) and throws away what its layers saved; during the backward pass,
segment by segment from the last, it runs its layers forward again from the boundary --
now keeping what they save -- and then back-propagates through them. With ``k`` segments of
``n`` equal layers about ``n/k + k`` activations are alive at once instead of ``n``; at
``k = sqrt(n)`` that is ``2 sqrt(n)``, for one extra forward pass (less the last segment,
which is never dropped).

Recomputation must give *the same numbers*, so that the gradients are bit-identical to
plain backpropagation (the tests compare them with ``np.array_equal``):

* the kernels are deterministic: the same input array gives the same output bits;
* **random layers** (dropout) draw their masks from a ``numpy.random.Generator`` kept on the
  layer. The state of every generator of a segment is recorded before its first forward
  pass and put back for the recomputation, so the same masks are drawn; afterwards each
  generator is returned to the state it had before the recomputation, so the run continues
  exactly as without checkpointing;
* **batchnorm** in training mode normalises with the statistics of the batch -- the same
  batch gives the same output -- but it also updates its running statistics on every
  forward pass. The running statistics of a segment are copied before the recomputation
  and restored after it, so they are updated once per step, as without checkpointing;
* the recomputation runs in the mode of the original forward pass (the same ``train``
  argument, and each layer's ``training`` flag, which nothing changes in between).

What is *not* preserved: layers kept with ``model.capture(True)`` hold references to their
inputs and outputs, which keeps every activation alive and defeats checkpointing.

The memory model and the planner that chooses the boundaries are in
:mod:`tinyodl.checkpointing.planner`. Chapter 06 (trading compute for memory).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from tinyodl.checkpointing.planner import segment_starts, sqrt_segments
from tinyodl.nn import Layer, Sequential
from tinyodl.nn.utils import layer_label

__all__ = ["CheckpointedSequential", "checkpoint_sequential", "release_saved"]

RandomState = np.random.Generator | np.random.RandomState


def _subtree(layer: Layer) -> list[Layer]:
    """``layer`` and all its descendants."""
    return [layer, *(child for _, child in layer.named_layers())]


def release_saved(layer: Layer) -> None:
    """Drop what ``layer`` and its sub-layers saved for backward (after a forward pass whose
    activations will be recomputed). Their next ``backward`` needs a new forward first."""
    for sub in _subtree(layer):
        sub.saved.clear()
        sub._output_shape = None


def _refusal(layer: Layer) -> str | None:
    """Why ``layer`` (or a sub-layer) has no per-example gradients after its last forward."""
    for sub in _subtree(layer):
        reason = sub._per_example_refusal()
        if reason is not None:
            return f"{layer_label(sub)} (recomputed by checkpointing): {reason}"
    return None


def _generators(layers: Iterable[Layer]) -> list[RandomState]:
    """Every numpy random generator held as an attribute of these layers (each once)."""
    found: dict[int, RandomState] = {}
    for layer in layers:
        for sub in _subtree(layer):
            for value in vars(sub).values():
                if isinstance(value, (np.random.Generator, np.random.RandomState)):
                    found.setdefault(id(value), value)
    return list(found.values())


def _get_state(rng: RandomState) -> Any:
    if isinstance(rng, np.random.Generator):
        return rng.bit_generator.state
    return rng.get_state()


def _set_state(rng: RandomState, state: Any) -> None:
    if isinstance(rng, np.random.Generator):
        rng.bit_generator.state = state
    else:
        rng.set_state(state)


class CheckpointedSequential(Sequential):
    """A :class:`~tinyodl.nn.Sequential` that recomputes segments instead of storing them.

    Parameters
    ----------
    layers : list of Layer, dict name -> Layer, or list of (name, Layer) pairs
        As for ``Sequential``. Each child is one link of the chain (a block such as
        ``InvertedResidual`` is recomputed as a whole).
    segments : int, optional
        Cut the chain into this many near-equal segments (by layer count). Default:
        ``round(sqrt(n))`` segments (Chen et al. 2016), unless ``boundaries`` is given.
    boundaries : sequence of int, optional
        Explicit segment starts after 0, e.g. from
        :func:`~tinyodl.checkpointing.plan_checkpoints` (``plan.boundaries``): child ``i``'s
        input is kept for every ``i`` in ``boundaries``. ``()`` is plain backpropagation.

    Notes
    -----
    Parameters, buffers, names, ``state_dict``, ``freeze``, ``train``/``eval`` and
    ``describe`` are those of the ``Sequential`` it wraps; only forward and backward change.
    The boundaries are kept in ``saved`` (``"boundary_<i>"``), so the memory tools of
    :mod:`tinyodl.memory` see them. Gradients, batchnorm statistics and random generators
    end bit-identical to plain backpropagation (module docstring).

    Examples
    --------
    >>> from tinyodl import nn
    >>> chain = [nn.Sequential([nn.Linear(8, 8, seed=i), nn.ReLU()]) for i in range(9)]
    >>> model = CheckpointedSequential(chain)          # 3 segments: boundaries (3, 6)
    >>> model.boundaries
    (3, 6)
    """

    def __init__(
        self,
        layers: Iterable | Mapping = (),
        segments: int | None = None,
        boundaries: Sequence[int] | None = None,
    ) -> None:
        super().__init__(layers)
        n = len(self._layers)
        if boundaries is not None and segments is not None:
            raise ValueError("CheckpointedSequential: give segments or boundaries, not both")
        if boundaries is None:
            boundaries = sqrt_segments(n, segments) if n else ()
        self.boundaries = self._checked(boundaries)
        self._states: dict[int, list[tuple[RandomState, Any]]] = {}
        self._forward_train: bool | None = None
        self._refusal: str | None = None

    @classmethod
    def wrap(
        cls,
        seq: Sequential,
        segments: int | None = None,
        boundaries: Sequence[int] | None = None,
    ) -> CheckpointedSequential:
        """A checkpointed view of ``seq`` sharing its layers (and their names).

        Replace the original with it, e.g. ``model["features"] =
        CheckpointedSequential.wrap(model["features"])``; parameters are shared, not copied.
        """
        if not isinstance(seq, Sequential):
            raise TypeError(
                f"CheckpointedSequential.wrap: expected a Sequential, got {type(seq).__name__}"
            )
        wrapped = cls(list(seq.children().items()), segments=segments, boundaries=boundaries)
        wrapped.training = seq.training  # the children keep their own modes
        return wrapped

    def _checked(self, boundaries: Sequence[int]) -> tuple[int, ...]:
        try:
            return segment_starts(len(self._layers), boundaries)[1:]
        except ValueError as err:
            raise ValueError(f"{layer_label(self)}: {err}") from None

    def config(self) -> dict[str, Any]:
        return {**super().config(), "boundaries": list(self.boundaries)}

    def segments(self) -> list[tuple[int, int]]:
        """The segments as ``(start, stop)`` child indices."""
        starts = self._checked(self.boundaries)  # the children may have been edited
        bounds = [0, *starts, len(self._layers)]
        return list(zip(bounds[:-1], bounds[1:], strict=True))

    # ------------------------------------------------------------------ forward / backward
    def _forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        layers = list(self._layers.values())
        segments = self.segments()
        self._forward_train = self._requested_train
        self._states = {}
        self._refusal = None
        for j, (lo, hi) in enumerate(segments):
            if j == len(segments) - 1:  # the last segment keeps its activations
                for layer in layers[lo:hi]:
                    x = layer.forward(x, self._forward_train)
                break
            self._save(**{f"boundary_{lo}": x})
            self._states[lo] = [(g, _get_state(g)) for g in _generators(layers[lo:hi])]
            for layer in layers[lo:hi]:
                x = layer.forward(x, self._forward_train)
                self._refusal = self._refusal or _refusal(layer)
                release_saved(layer)
        return x

    def _per_example_refusal(self) -> str | None:
        """A dropped layer that cannot give per-example gradients (batchnorm in training
        mode) is refused up front, before any gradient is touched, as without checkpointing."""
        return self._refusal if self._output_shape is not None else None

    def _backward(self, dout: np.ndarray, per_example: bool) -> np.ndarray:
        layers = list(self._layers.values())
        segments = self.segments()
        for j, (lo, hi) in reversed(list(enumerate(segments))):
            if j < len(segments) - 1:
                self._recompute(layers[lo:hi], self.saved.pop(f"boundary_{lo}"), lo)
            for layer in reversed(layers[lo:hi]):
                dout = layer.backward(dout, per_example)
        return dout

    def _recompute(self, layers: list[Layer], x: np.ndarray, lo: int) -> None:
        """Run ``layers`` forward again from their boundary ``x``, keeping what they save,
        with the random states of the first pass and the running statistics left as they
        are. The output is thrown away: only the saved tensors are needed."""
        states = self._states.pop(lo)
        now = [(g, _get_state(g)) for g, _ in states]
        buffers = [(b, b.copy()) for layer in layers for _, b in layer.named_buffers()]
        for g, state in states:
            _set_state(g, state)
        try:
            for layer in layers:
                x = layer.forward(x, self._forward_train)
        finally:
            for g, state in now:
                _set_state(g, state)
            for buf, copy in buffers:
                buf[...] = copy


def checkpoint_sequential(
    seq: Sequential, segments: int | None = None, boundaries: Sequence[int] | None = None
) -> CheckpointedSequential:
    """Shorthand for :meth:`CheckpointedSequential.wrap` (shares ``seq``'s layers)."""
    return CheckpointedSequential.wrap(seq, segments=segments, boundaries=boundaries)
