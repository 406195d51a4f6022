"""Fully connected (linear) layer in numpy: ``out = x @ w.T + b`` and its gradients.

Chapter 00 (foundations). With ``a = x w^T + b`` (PyTorch layout, ``w`` is ``(out, in)``):

* ``dL/dx = dL/da @ w``        -- needs the weights;
* ``dL/dw = (dL/da).T @ x``    -- needs the stored input ``x`` (TinyTL's observation: a
  bias-only update does not);
* ``dL/db = sum_n dL/da[n]``   -- computed by the layer, no kernel needed.

All functions accept float32 and float64 and return the dtype of their input.
"""

from __future__ import annotations

import numpy as np

from tinyodl.reference._checks import check_float


def linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Affine map ``x @ w.T + b``.

    Parameters
    ----------
    x : ndarray, shape (N, in)
    w : ndarray, shape (out, in)
    b : ndarray, shape (out,), optional

    Returns
    -------
    out : ndarray, shape (N, out)
    """
    fn = "linear_forward"
    x = check_float(fn, "x", x, 2)
    w = check_float(fn, "w", w, 2, like=x)
    if w.shape[1] != x.shape[1]:
        raise ValueError(
            f"{fn}: w has {w.shape[1]} input features but x has {x.shape[1]} "
            f"(x shape {x.shape}, w shape {w.shape})"
        )
    out = x @ w.T
    if b is not None:
        b = check_float(fn, "b", b, 1, like=x)
        if b.shape != (w.shape[0],):
            raise ValueError(f"{fn}: b must have shape ({w.shape[0]},), got {b.shape}")
        out += b
    return out


def linear_backward_input(dout: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Gradient w.r.t. the input, ``dout @ w``.

    Parameters
    ----------
    dout : ndarray, shape (N, out)
    w : ndarray, shape (out, in)

    Returns
    -------
    dx : ndarray, shape (N, in)
    """
    fn = "linear_backward_input"
    dout = check_float(fn, "dout", dout, 2)
    w = check_float(fn, "w", w, 2, like=dout)
    if w.shape[0] != dout.shape[1]:
        raise ValueError(
            f"{fn}: w has {w.shape[0]} output features but dout has {dout.shape[1]} "
            f"(dout shape {dout.shape}, w shape {w.shape})"
        )
    return dout @ w


def linear_backward_weight(dout: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Gradient w.r.t. the weights, ``dout.T @ x`` (summed over the batch).

    Parameters
    ----------
    dout : ndarray, shape (N, out)
    x : ndarray, shape (N, in)
        The input of the forward pass.

    Returns
    -------
    dw : ndarray, shape (out, in)
    """
    fn = "linear_backward_weight"
    dout = check_float(fn, "dout", dout, 2)
    x = check_float(fn, "x", x, 2, like=dout)
    if x.shape[0] != dout.shape[0]:
        raise ValueError(
            f"{fn}: dout has batch size {dout.shape[0]} but x has {x.shape[0]} "
            f"(dout shape {dout.shape}, x shape {x.shape})"
        )
    return dout.T @ x
