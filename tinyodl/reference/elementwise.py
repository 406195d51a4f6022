"""Element-wise work of a float training step, pure numpy reference (chapter 00).

A training step is not only matrix products: between them come the ReLU masks, the bias
gradients, the accumulation of gradients and the optimizer's update. Each is a pass over an
array, cheap per element but -- for a model as wide as ``cnn_mcmahan`` -- about a fifth of
the step, and single-threaded in numpy. These functions are that work, written to be read;
the compiled twin ``tinyodl._kernels.elementwise`` (``kernels/elementwise.pyx``) does each
in one pass with OpenMP threads and gives:

* bit-identical results for :func:`relu_forward`, :func:`relu_backward`,
  :func:`add_into`, :func:`fill_zeros` and :func:`sgd_update` (the same float operations in
  the same order, one element at a time, whatever the number of threads);
* :func:`bias_grad` equal to float tolerance (the sum is taken in another order).

The SGD rule is PyTorch's (``torch.optim.SGD``), with ``g = grad + weight_decay * w``::

    buf = g                        (first step)
    buf = momentum * buf + g       (later steps)
    g   = g + momentum * buf  if nesterov else  buf
    w  -= lr * g

Scalars follow numpy's rules: a Python float meets a float32 array as a float32.
"""

from __future__ import annotations

import numpy as np


def relu_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``max(x, 0)`` and the boolean mask ``x > 0`` (what the backward pass keeps).

    Parameters
    ----------
    x : float ndarray, any shape

    Returns
    -------
    y : ndarray, like x         ``x * (x > 0)`` (a NaN stays NaN; a negative gives -0.0)
    mask : bool ndarray, like x
    """
    mask = x > 0
    return x * mask, mask


def relu_backward(dout: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``dout * mask``: the gradient flows only where the input was positive.

    Parameters
    ----------
    dout : float ndarray, any shape
    mask : bool ndarray, same shape
    """
    if mask.shape != dout.shape:
        raise ValueError(
            f"relu_backward: mask has shape {mask.shape}, dout has {dout.shape}; they must match"
        )
    return dout * mask


def bias_grad(dout: np.ndarray) -> np.ndarray:
    """Gradient of a per-channel bias: ``dout`` summed over every axis but axis 1.

    Parameters
    ----------
    dout : float ndarray, shape (N, C) or (N, C, ...) (a conv's (N, F, OH, OW))

    Returns
    -------
    ndarray, shape (C,)
    """
    if dout.ndim < 2:
        raise ValueError(f"bias_grad: dout must have at least 2 dims (N, C, ...), got {dout.shape}")
    return dout.sum(axis=(0, *range(2, dout.ndim)))


def add_into(dst: np.ndarray, src: np.ndarray) -> None:
    """``dst += src`` in place (gradient accumulation)."""
    dst += src


def fill_zeros(a: np.ndarray) -> None:
    """``a[...] = 0`` in place (a gradient buffer reset between steps)."""
    a.fill(0)


def sgd_update(
    w: np.ndarray,
    grad: np.ndarray,
    buf: np.ndarray | None,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    first: bool = False,
) -> None:
    """One SGD step on ``w`` in place (the rule in the module docstring).

    Parameters
    ----------
    w : float ndarray
        The parameter, updated in place.
    grad : ndarray, like w
        Its gradient (not modified).
    buf : ndarray like w, or None
        The momentum buffer, updated in place; needed when ``momentum != 0``.
    lr, momentum, weight_decay : float
    nesterov : bool
    first : bool
        First step: the buffer is set to the gradient instead of decayed.
    """
    if weight_decay:
        grad = grad + weight_decay * w
    if momentum:
        if buf is None:
            raise ValueError("sgd_update: momentum needs a buffer (buf)")
        if first:
            buf[...] = grad
        else:
            buf *= momentum
            buf += grad
        grad = grad + momentum * buf if nesterov else buf
    w -= lr * grad
