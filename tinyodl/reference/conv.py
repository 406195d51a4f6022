"""2-D convolution in numpy: im2col, col2im, forward and both backward passes.

Read this next to the equations of chapter 00 (foundations). A convolution with weights
``w`` of shape ``(F, C/groups, KH, KW)`` is turned into one matrix product per group:

* ``im2col`` copies every ``KH x KW`` window of the (zero-padded) input into a column;
  ``cols[n, c*KH*KW + kh*KW + kw, oh*OW + ow] = x_pad[n, c, oh*SH + kh, ow*SW + kw]``
  (the Caffe layout, so the rows of one group are contiguous);
* forward:          ``out_g  = w_g @ cols_g``          ``(F/g, K) @ (K, OH*OW)``
* backward input:   ``dcols_g = w_g.T @ dout_g``, then ``dx = col2im(dcols)``
* backward weight:  ``dw_g = sum_n dout_g[n] @ cols_g[n].T``

with ``K = (C/groups)*KH*KW``. ``col2im`` is the adjoint (transpose) of ``im2col``: it
adds every column entry back to the pixel it was copied from, so overlapping windows sum.
A depthwise convolution is the case ``groups == C``.

``padding`` is an int, a pair ``(ph, pw)`` or a 4-tuple ``(top, bottom, left, right)``:
asymmetric padding is what TFLite/ONNX SAME padding needs when the padded total is odd
(a stride-2 3x3 conv on an even input pads only the bottom and right; chapter 13). It
changes only how ``x_pad`` is built and the output size.

All functions accept float32 and float64 and return the dtype of their input.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tinyodl._shapes import padding4
from tinyodl.reference._checks import (
    check_dout,
    check_float,
    check_shape4,
    conv_geometry,
    window_geometry,
)

IntOrPair = int | Sequence[int]  # padding also takes (top, bottom, left, right)


def im2col(
    x: np.ndarray, kernel_size: IntOrPair, stride: IntOrPair = 1, padding: IntOrPair = 0
) -> np.ndarray:
    """Unfold every sliding window of ``x`` into a column.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    kernel_size, stride : int or (int, int)
    padding : int, (int, int) or (top, bottom, left, right)

    Returns
    -------
    cols : ndarray, shape (N, C*KH*KW, OH*OW)
        Row ``c*KH*KW + kh*KW + kw``, column ``oh*OW + ow`` holds
        ``x_pad[n, c, oh*SH + kh, ow*SW + kw]``; padding is zeros.
    """
    x = check_float("im2col", "x", x, 4)
    n, c, h, w = x.shape
    kh, kw, sh, sw, ph, pw, oh, ow = window_geometry(
        "im2col", x.shape, kernel_size, stride, padding
    )
    top, bottom, left, right = padding4(padding)
    x_pad = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            # every output position (oh, ow) reads the pixel (oh*SH + i, ow*SW + j)
            cols[:, :, i, j] = x_pad[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw]
    return cols.reshape(n, c * kh * kw, oh * ow)


def col2im(
    cols: np.ndarray,
    x_shape: Sequence[int],
    kernel_size: IntOrPair,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
) -> np.ndarray:
    """Fold columns back into an image, summing the entries of overlapping windows.

    The adjoint of :func:`im2col`: ``<im2col(x), c> == <x, col2im(c)>`` for all x, c.

    Parameters
    ----------
    cols : ndarray, shape (N, C*KH*KW, OH*OW)
    x_shape : (N, C, H, W)
        Shape of the image the columns came from.
    kernel_size, stride : int or (int, int)
    padding : int, (int, int) or (top, bottom, left, right)

    Returns
    -------
    x : ndarray, shape (N, C, H, W)
    """
    cols = check_float("col2im", "cols", cols, 3)
    n, c, h, w = check_shape4("col2im", "x_shape", x_shape)
    kh, kw, sh, sw, ph, pw, oh, ow = window_geometry(
        "col2im", x_shape, kernel_size, stride, padding
    )
    expected = (n, c * kh * kw, oh * ow)
    if cols.shape != expected:
        raise ValueError(f"col2im: cols must have shape {expected}, got {cols.shape}")
    cols = cols.reshape(n, c, kh, kw, oh, ow)
    top, bottom, left, right = padding4(padding)
    x_pad = np.zeros((n, c, top + h + bottom, left + w + right), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            x_pad[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw] += cols[:, :, i, j]
    return x_pad[:, :, top : top + h, left : left + w].copy()


def _pads(g) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` of a :class:`ConvGeometry`."""
    return g.PH, g.PB, g.PW, g.PR


def conv2d_forward(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    groups: int = 1,
) -> np.ndarray:
    """Grouped 2-D convolution (cross-correlation, as in PyTorch) via im2col + matmul.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    w : ndarray, shape (F, C/groups, KH, KW)
    b : ndarray, shape (F,), optional
    stride : int or (int, int)
    padding : int, (int, int) or (top, bottom, left, right)
    groups : int
        Input and output channels are split into ``groups`` independent blocks;
        ``groups == C`` is a depthwise convolution.

    Returns
    -------
    out : ndarray, shape (N, F, OH, OW)
    """
    fn = "conv2d_forward"
    x = check_float(fn, "x", x, 4)
    w = check_float(fn, "w", w, 4, like=x)
    g = conv_geometry(fn, x.shape, w.shape, stride, padding, groups)
    if b is not None:
        b = check_float(fn, "b", b, 1, like=x)
        if b.shape != (g.F,):
            raise ValueError(f"{fn}: b must have shape ({g.F},), got {b.shape}")
    fg = g.F // groups  # filters per group
    k = (g.C // groups) * g.KH * g.KW  # explicit, not -1: an empty batch must work too
    cols = im2col(x, (g.KH, g.KW), (g.SH, g.SW), _pads(g))
    cols = cols.reshape(g.N, groups, k, g.OH * g.OW)  # (N, groups, K, OH*OW)
    w_mat = w.reshape(groups, fg, k)  # (groups, F/groups, K)
    out = np.empty((g.N, g.F, g.OH * g.OW), dtype=x.dtype)
    for k in range(groups):
        # (F/g, K) @ (N, K, P) -> (N, F/g, P), broadcast over the batch
        out[:, k * fg : (k + 1) * fg] = w_mat[k] @ cols[:, k]
    if b is not None:
        out += b[None, :, None]
    return out.reshape(g.N, g.F, g.OH, g.OW)


def conv2d_backward_input(
    dout: np.ndarray,
    w: np.ndarray,
    x_shape: Sequence[int],
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    groups: int = 1,
) -> np.ndarray:
    """Gradient of the loss w.r.t. the convolution input: ``col2im(w.T @ dout)``.

    Parameters
    ----------
    dout : ndarray, shape (N, F, OH, OW)
        Gradient w.r.t. the convolution output.
    w : ndarray, shape (F, C/groups, KH, KW)
    x_shape : (N, C, H, W)
    stride, padding, groups : as in :func:`conv2d_forward`

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    """
    fn = "conv2d_backward_input"
    dout = check_float(fn, "dout", dout, 4)
    w = check_float(fn, "w", w, 4, like=dout)
    x_shape = check_shape4(fn, "x_shape", x_shape)
    g = conv_geometry(fn, x_shape, w.shape, stride, padding, groups)
    check_dout(fn, dout, g)
    fg = g.F // groups
    dout_mat = dout.reshape(g.N, groups, fg, g.OH * g.OW)
    w_mat = w.reshape(groups, fg, -1)
    dcols = np.empty((g.N, groups, w_mat.shape[2], g.OH * g.OW), dtype=dout.dtype)
    for k in range(groups):
        # (K, F/g) @ (N, F/g, P) -> (N, K, P)
        dcols[:, k] = w_mat[k].T @ dout_mat[:, k]
    dcols = dcols.reshape(g.N, g.C * g.KH * g.KW, g.OH * g.OW)
    return col2im(dcols, x_shape, (g.KH, g.KW), (g.SH, g.SW), _pads(g))


def conv2d_backward_weight(
    dout: np.ndarray,
    x: np.ndarray,
    w_shape: Sequence[int],
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    groups: int = 1,
) -> np.ndarray:
    """Gradient of the loss w.r.t. the weights: ``sum_n dout[n] @ cols[n].T`` per group.

    Parameters
    ----------
    dout : ndarray, shape (N, F, OH, OW)
    x : ndarray, shape (N, C, H, W)
        The input of the forward pass.
    w_shape : (F, C/groups, KH, KW)
    stride, padding, groups : as in :func:`conv2d_forward`

    Returns
    -------
    dw : ndarray, shape (F, C/groups, KH, KW)
    """
    fn = "conv2d_backward_weight"
    dout = check_float(fn, "dout", dout, 4)
    x = check_float(fn, "x", x, 4, like=dout)
    w_shape = check_shape4(fn, "w_shape", w_shape)
    g = conv_geometry(fn, x.shape, w_shape, stride, padding, groups)
    check_dout(fn, dout, g)
    fg = g.F // groups
    cols = im2col(x, (g.KH, g.KW), (g.SH, g.SW), _pads(g))
    cols = cols.reshape(g.N, groups, (g.C // groups) * g.KH * g.KW, g.OH * g.OW)  # (N, G, K, P)
    dout_mat = dout.reshape(g.N, groups, fg, g.OH * g.OW)  # (N, groups, F/g, P)
    dw = np.empty((groups, fg, cols.shape[2]), dtype=dout.dtype)
    for k in range(groups):
        # (N, F/g, P) @ (N, P, K) -> (N, F/g, K), summed over the batch
        dw[k] = (dout_mat[:, k] @ cols[:, k].transpose(0, 2, 1)).sum(axis=0)
    return dw.reshape(w_shape)
