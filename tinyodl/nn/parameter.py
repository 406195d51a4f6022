"""A trainable array: ``Parameter(data)`` with a lazily allocated gradient.

Chapter 00 (foundations). A parameter owns its values (``data``), the gradient of the loss
with respect to them (``grad``) and a ``trainable`` flag. Memory matters on a device, so:

* ``grad`` is ``None`` until a backward pass produces a gradient for it;
* a frozen parameter (``trainable=False``) never gets a gradient buffer -- freezing drops it;
* ``grad_sample`` (per-example gradients, shape ``(N, *data.shape)``) is only filled by
  ``model.backward(dout, per_example=True)``, for DP-SGD (chapter 10).
"""

from __future__ import annotations

import numpy as np

from tinyodl import ops


class Parameter:
    """An ndarray of model weights plus its gradient.

    Parameters
    ----------
    data : array_like
        Initial values; kept as an ndarray (not copied if it already is one).
    trainable : bool, default True
        Frozen parameters are skipped by backward (no gradient) and by the optimizers.

    Attributes
    ----------
    data : ndarray
    grad : ndarray or None
        Same shape and dtype as ``data``; accumulated (``+=``) by successive backward passes
        until :meth:`zero_grad`.
    grad_sample : ndarray or None
        Per-example gradients, shape ``(N, *data.shape)``; ``grad_sample.sum(0) == grad``
        for a single backward pass.
    """

    def __init__(self, data: np.ndarray, trainable: bool = True) -> None:
        self.data = np.asarray(data)
        self.grad: np.ndarray | None = None
        self.grad_sample: np.ndarray | None = None
        self._trainable = bool(trainable)

    @property
    def trainable(self) -> bool:
        """Whether backward computes a gradient for this parameter."""
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        self._trainable = bool(value)
        if not self._trainable:  # a frozen parameter holds no gradient memory
            self.grad = None
            self.grad_sample = None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def size(self) -> int:
        return int(self.data.size)

    def accumulate_grad(self, g: np.ndarray) -> None:
        """Add ``g`` to ``grad`` (allocating it on first use). Ignored when frozen."""
        if not self._trainable:
            return
        if g.shape != self.data.shape:
            raise ValueError(
                f"Parameter: gradient shape {g.shape} does not match data shape {self.data.shape}"
            )
        if self.grad is None:
            self.grad = np.array(g, dtype=self.data.dtype, copy=True)
        else:
            _add_into(self.grad, g)

    def zero_grad(self, set_to_none: bool = False) -> None:
        """Reset the gradient: fill it with zeros (keeping the buffer) or drop it."""
        self.grad_sample = None
        if set_to_none or self.grad is None:
            self.grad = None
        else:
            _fill_zeros(self.grad)

    def __repr__(self) -> str:
        state = "trainable" if self._trainable else "frozen"
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype}, {state})"


#: Below this many elements the threaded kernels of ``tinyodl.ops`` would run on one thread
#: anyway (two blocks of ``kernels/elementwise.pyx``): numpy's in-place ufunc is as fast and
#: skips the dispatch (models with many small parameters, batch 1).
THREADED_MIN = 32768


def _add_into(grad: np.ndarray, g: np.ndarray) -> None:
    """``grad += g`` (threaded in the compiled backend for large gradients)."""
    if grad.size >= THREADED_MIN:
        ops.add_into(grad, g)
    else:
        grad += g


def _fill_zeros(grad: np.ndarray) -> None:
    """``grad.fill(0)`` (threaded in the compiled backend for large gradients)."""
    if grad.size >= THREADED_MIN:
        ops.fill_zeros(grad)
    else:
        grad.fill(0)
