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

from tinyodl.reference._checks import check_linear, check_linear_dout_w, check_linear_dout_x


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
    x, w, b = check_linear("linear_forward", x, w, b)
    out = x @ w.T
    if b is not None:
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
    dout, w = check_linear_dout_w("linear_backward_input", dout, w)
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
    dout, x = check_linear_dout_x("linear_backward_weight", dout, x)
    return dout.T @ x
