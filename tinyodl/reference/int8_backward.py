"""Backward passes through int8 layers, pure numpy reference (tiny-training style).

Chapter 03 (training the real int8 graph, Lin et al., NeurIPS'22). The forward pass runs
in int8 (:mod:`tinyodl.reference.int8`); gradients are float32 and flow through the integer
tensors read as numbers:

* ``dx`` uses ``float(w_q)`` -- the gradient w.r.t. the integer input ``x_q``; the real
  gradient is this times ``s_w`` (per channel), which callers (and QAS) apply.
* ``dW`` uses ``float(x_q - zp_in)`` -- the gradient w.r.t. the integer weights ``w_q``.
* :func:`ste_clamp_backward` passes the gradient through the requantization clamp with the
  straight-through estimator: rounding is treated as the identity, clamping is not.

The reference accumulates in float64 and returns float32; the Cython twin
(``tinyodl._kernels.int8_backward``) uses float32 BLAS, so the two agree to float32
rounding, not bit for bit.
"""

from __future__ import annotations

import numpy as np

from tinyodl.reference import _int8_checks as chk
from tinyodl.reference.int8 import im2col_s8


def _geometry(fn: str, dout, x_shape, w_shape, stride, padding, groups):
    """Validate shapes and return (geometry, float32 dout)."""
    g = chk.conv_geometry(fn, x_shape, w_shape, stride, padding, groups)
    dout = chk.check_float_grad(fn, "dout", dout, (g.N, g.F, g.OH, g.OW))
    return g, dout


def col2im_f64(cols: np.ndarray, g: chk.ConvGeometry) -> np.ndarray:
    """Scatter-add (N, C*KH*KW, OH*OW) columns back onto (N, C, H, W); padding is dropped."""
    cols = cols.reshape(g.N, g.C, g.KH, g.KW, g.OH, g.OW)
    xp = np.zeros((g.N, g.C, g.PH + g.H + g.PB, g.PW + g.W + g.PR), dtype=np.float64)
    for i in range(g.KH):
        for j in range(g.KW):
            rows = slice(i, i + g.SH * (g.OH - 1) + 1, g.SH)
            columns = slice(j, j + g.SW * (g.OW - 1) + 1, g.SW)
            xp[:, :, rows, columns] += cols[:, :, i, j]
    return xp[:, :, g.PH : g.PH + g.H, g.PW : g.PW + g.W]


def conv2d_s8_backward_input(
    dout: np.ndarray,
    w: np.ndarray,
    x_shape: tuple[int, int, int, int],
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, ...] = 0,
    groups: int = 1,
) -> np.ndarray:
    """``dx = conv_transpose(dout, float(w_q))`` for an int8 convolution.

    Parameters
    ----------
    dout : float array, shape (N, F, OH, OW)
    w : int8 array, shape (F, C // groups, KH, KW)
    x_shape : (N, C, H, W)

    Returns
    -------
    float32 array, shape ``x_shape``
    """
    fn = "conv2d_s8_backward_input"
    w = chk.check_int8(fn, "w", w, 4)
    x_shape = chk.check_shape4(fn, "x_shape", x_shape)
    g, dout = _geometry(fn, dout, x_shape, w.shape, stride, padding, groups)
    fg, k = g.F // g.groups, w[0].size
    d = dout.reshape(g.N, g.F, g.OH * g.OW).astype(np.float64)
    cols = np.empty((g.N, g.C * g.KH * g.KW, g.OH * g.OW))
    for grp in range(g.groups):
        w_g = w[grp * fg : (grp + 1) * fg].reshape(fg, k).astype(np.float64)
        cols[:, grp * k : (grp + 1) * k] = w_g.T @ d[:, grp * fg : (grp + 1) * fg]
    return col2im_f64(cols, g).astype(np.float32)


def conv2d_s8_backward_weight(
    dout: np.ndarray,
    x: np.ndarray,
    input_zero_point: int,
    w_shape: tuple[int, int, int, int],
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, ...] = 0,
    groups: int = 1,
) -> np.ndarray:
    """``dW[f] = sum_{n,p} dout[n, f, p] * (x_q - zp_in)[n, patch p]`` (padding taps are 0).

    Parameters
    ----------
    dout : float array, shape (N, F, OH, OW)
    x : int8 array, shape (N, C, H, W)
    input_zero_point : int
    w_shape : (F, C // groups, KH, KW)

    Returns
    -------
    float32 array, shape ``w_shape``
    """
    fn = "conv2d_s8_backward_weight"
    x = chk.check_int8(fn, "x", x, 4)
    zp = chk.check_zero_point(fn, "input_zero_point", input_zero_point)
    w_shape = chk.check_shape4(fn, "w_shape", w_shape)
    g, dout = _geometry(fn, dout, x.shape, w_shape, stride, padding, groups)
    fg, k = g.F // g.groups, w_shape[1] * g.KH * g.KW
    cols = im2col_s8(x, g, zp).astype(np.float64) - zp  # (N, C*KH*KW, P)
    d = dout.reshape(g.N, g.F, g.OH * g.OW).astype(np.float64)
    dw = np.empty((g.F, k))
    for grp in range(g.groups):
        d_g = d[:, grp * fg : (grp + 1) * fg]  # (N, Fg, P)
        c_g = cols[:, grp * k : (grp + 1) * k]  # (N, K, P)
        dw[grp * fg : (grp + 1) * fg] = np.einsum("nfp,nkp->fk", d_g, c_g)
    return dw.reshape(w_shape).astype(np.float32)


def linear_s8_backward_input(dout: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``dx = dout @ float(w_q)``: dout (N, F), w int8 (F, K) -> float32 (N, K)."""
    fn = "linear_s8_backward_input"
    w = chk.check_int8(fn, "w", w, 2)
    n = dout.shape[0] if isinstance(dout, np.ndarray) and dout.ndim == 2 else -1
    dout = chk.check_float_grad(fn, "dout", dout, (n, w.shape[0]))
    return (dout.astype(np.float64) @ w.astype(np.float64)).astype(np.float32)


def linear_s8_backward_weight(dout: np.ndarray, x: np.ndarray, input_zero_point: int) -> np.ndarray:
    """``dW = dout.T @ float(x_q - zp_in)``: dout (N, F), x int8 (N, K) -> float32 (F, K)."""
    fn = "linear_s8_backward_weight"
    x = chk.check_int8(fn, "x", x, 2)
    zp = chk.check_zero_point(fn, "input_zero_point", input_zero_point)
    f = dout.shape[1] if isinstance(dout, np.ndarray) and dout.ndim == 2 else -1
    dout = chk.check_float_grad(fn, "dout", dout, (x.shape[0], f))
    return (dout.astype(np.float64).T @ (x.astype(np.float64) - zp)).astype(np.float32)


def ste_clamp_backward(dout: np.ndarray, q: np.ndarray, act_min: int, act_max: int) -> np.ndarray:
    """Straight-through estimator for ``q = clamp(round(.), act_min, act_max)``.

    The gradient passes where ``act_min < q < act_max`` and is zero where ``q`` sits on a
    bound. Only the output is kept (int8, a quarter of a float mask), and from it a value
    that was clipped cannot be told from one that landed exactly on the bound, so both are
    treated as clamped. This matches ReLU's convention (zero gradient at 0: for a fused
    ReLU ``act_min`` is the zero point, i.e. real 0) and stops gradients at saturation.

    Parameters
    ----------
    dout : float array, any shape
    q : int8 array, same shape (the layer's output)
    act_min, act_max : int
        The clamp bounds used in the forward pass.

    Returns
    -------
    array of dout's dtype, same shape
    """
    fn = "ste_clamp_backward"
    lo, hi = chk.check_act_range(fn, act_min, act_max)
    if not isinstance(dout, np.ndarray) or dout.dtype.kind != "f":
        raise TypeError(f"{fn}: dout must be a float array")
    if not isinstance(q, np.ndarray) or q.dtype != np.int8:
        raise TypeError(f"{fn}: q must be the int8 output of the forward pass")
    if q.shape != dout.shape:
        raise ValueError(f"{fn}: q has shape {q.shape} but dout has shape {dout.shape}")
    passed = (q > lo) & (q < hi)
    return np.where(passed, dout, 0).astype(dout.dtype)
