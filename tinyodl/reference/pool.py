"""2-D max and average pooling in numpy, built on :func:`tinyodl.reference.conv.im2col`.

Chapter 00 (foundations). A pooling window is a convolution window without weights: after
``im2col`` each column holds one window, per channel, as ``KH*KW`` consecutive rows.

* max pooling keeps the largest entry of each window and remembers where it was
  (``argmax``, a flat index ``ih*W + iw`` into the unpadded ``H x W`` plane). Padding is
  ``-inf`` so it never wins; ties go to the first position in row-major window order
  (a window of ``-inf`` only picks its first pixel, never the padding). A NaN wins its
  window (the first NaN), as in numpy's ``max`` and PyTorch. Backward sends each output
  gradient to its argmax pixel.
* average pooling divides the window sum by the window's *divisor*: with
  ``count_include_pad=True`` (PyTorch's default) padding counts as zeros and the divisor is
  ``KH*KW``; with ``False`` only the real pixels are counted. Backward spreads
  ``dout / divisor`` over the window, which is ``col2im`` of the repeated gradient.
* ``ceil_mode=True`` rounds the output size up (PyTorch's rule), so the last window may
  reach past the bottom/right padding; positions beyond the padding are never counted.

``stride=None`` means ``stride = kernel_size``. Padding may be at most half the window.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tinyodl.reference._checks import check_argmax, check_float, check_shape4, pool_geometry
from tinyodl.reference.conv import col2im, im2col

IntOrPair = int | Sequence[int]


def _extra_padding(size: int, kernel: int, stride: int, padding: int, out: int) -> int:
    """How far the last window reaches past ``size + padding`` (ceil mode), else 0."""
    return max(0, (out - 1) * stride + kernel - size - 2 * padding)


def maxpool2d_forward(
    x: np.ndarray,
    kernel_size: IntOrPair,
    stride: IntOrPair | None = None,
    padding: IntOrPair = 0,
    ceil_mode: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Max pooling.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    kernel_size, stride, padding : int or (int, int); ``stride=None`` -> ``kernel_size``
    ceil_mode : bool, default False
        Round the output size up instead of down.

    Returns
    -------
    out : ndarray, shape (N, C, OH, OW)
    argmax : ndarray of int64, shape (N, C, OH, OW)
        Flat index ``ih*W + iw`` of the winning pixel in the unpadded plane.
    """
    fn = "maxpool2d_forward"
    x = check_float(fn, "x", x, 4)
    n, c, h, w = x.shape
    geom = pool_geometry(fn, x.shape, kernel_size, stride, padding, ceil_mode)
    kh, kw, sh, sw, ph, pw, oh, ow = geom
    eh, ew = _extra_padding(h, kh, sh, ph, oh), _extra_padding(w, kw, sw, pw, ow)
    x_pad = np.pad(x, ((0, 0), (0, 0), (ph, ph + eh), (pw, pw + ew)), constant_values=-np.inf)
    windows = im2col(x_pad, (kh, kw), (sh, sw), 0).reshape(n, c, kh * kw, oh * ow)
    k = windows.argmax(axis=2)  # position inside the window, (N, C, OH*OW); NaN wins
    out = np.take_along_axis(windows, k[:, :, None, :], axis=2)[:, :, 0]
    # window position (i, j) of output (r, s) is pixel (r*SH + i - PH, s*SW + j - PW)
    r, s = np.divmod(np.arange(oh * ow), ow)
    ih = r * sh + k // kw - ph
    iw = s * sw + k % kw - pw
    outside = (ih < 0) | (ih >= h) | (iw < 0) | (iw >= w)
    if outside.any():  # a window of -inf only: -inf padding tied with it; take the first pixel
        ih = np.where(outside, np.maximum(r * sh - ph, 0), ih)
        iw = np.where(outside, np.maximum(s * sw - pw, 0), iw)
    argmax = (ih * w + iw).astype(np.int64)
    return out.reshape(n, c, oh, ow), argmax.reshape(n, c, oh, ow)


def maxpool2d_backward(dout: np.ndarray, argmax: np.ndarray, x_shape: Sequence[int]) -> np.ndarray:
    """Route each output gradient to the pixel that won its window.

    Parameters
    ----------
    dout : ndarray, shape (N, C, OH, OW)
    argmax : ndarray of int64, shape (N, C, OH, OW), from :func:`maxpool2d_forward`
    x_shape : (N, C, H, W)

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
        Pixels that won several windows receive the sum of their gradients.
    """
    fn = "maxpool2d_backward"
    dout = check_float(fn, "dout", dout, 4)
    n, c, h, w = check_shape4(fn, "x_shape", x_shape)
    check_argmax(fn, dout, argmax, (n, c, h, w))
    dx = np.zeros((n * c, h * w), dtype=dout.dtype)
    plane = np.arange(n * c)[:, None]  # which (n, c) plane each output belongs to
    p = dout.shape[2] * dout.shape[3]  # explicit, not -1: an empty batch must work too
    np.add.at(dx, (plane, argmax.reshape(n * c, p)), dout.reshape(n * c, p))
    return dx.reshape(n, c, h, w)


def _window_counts(size: int, kernel: int, stride: int, padding: int, out: int, pad: bool):
    """Per output position along one axis: how many window positions are counted.

    The window of output ``o`` spans ``[o*S - P, o*S - P + K)``, cut at the end of the
    padding (``size + P``); without ``pad`` also cut to the pixels ``[0, size)``.
    """
    start = np.arange(out) * stride - padding
    end = np.minimum(start + kernel, size + padding)
    if pad:
        return end - start
    return np.minimum(end, size) - np.maximum(start, 0)


def avgpool_divisor(
    x_shape: Sequence[int], geom: tuple, count_include_pad: bool, dtype: np.dtype
) -> float | np.ndarray:
    """The divisor of every window: ``KH*KW`` when they are all full, else (OH*OW,) values.

    Parameters
    ----------
    x_shape : (N, C, H, W)
    geom : ``(KH, KW, SH, SW, PH, PW, OH, OW)`` from ``pool_geometry``
    count_include_pad : bool
    dtype : the float type of the result
    """
    kh, kw, sh, sw, ph, pw, oh, ow = geom
    rows = _window_counts(int(x_shape[2]), kh, sh, ph, oh, count_include_pad)
    cols = _window_counts(int(x_shape[3]), kw, sw, pw, ow, count_include_pad)
    if (rows == kh).all() and (cols == kw).all():
        return kh * kw
    return np.outer(rows, cols).reshape(-1).astype(dtype)


def avgpool2d_forward(
    x: np.ndarray,
    kernel_size: IntOrPair,
    stride: IntOrPair | None = None,
    padding: IntOrPair = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> np.ndarray:
    """Average pooling.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    kernel_size, stride, padding : int or (int, int); ``stride=None`` -> ``kernel_size``
    ceil_mode : bool, default False
        Round the output size up instead of down.
    count_include_pad : bool, default True
        Padded positions count as zeros in the mean (divisor ``KH*KW``); False averages
        over the real pixels of each window only.

    Returns
    -------
    out : ndarray, shape (N, C, OH, OW)
    """
    fn = "avgpool2d_forward"
    x = check_float(fn, "x", x, 4)
    n, c, h, w = x.shape
    geom = pool_geometry(fn, x.shape, kernel_size, stride, padding, ceil_mode)
    kh, kw, sh, sw, ph, pw, oh, ow = geom
    eh, ew = _extra_padding(h, kh, sh, ph, oh), _extra_padding(w, kw, sw, pw, ow)
    if eh or ew:  # ceil mode: zeros past the bottom/right padding (never counted)
        x = np.pad(x, ((0, 0), (0, 0), (0, eh), (0, ew)))
    windows = im2col(x, (kh, kw), (sh, sw), (ph, pw)).reshape(n, c, kh * kw, oh * ow)
    out = windows.sum(axis=2) / avgpool_divisor((n, c, h, w), geom, count_include_pad, x.dtype)
    return out.astype(x.dtype, copy=False).reshape(n, c, oh, ow)


def avgpool2d_backward(
    dout: np.ndarray,
    x_shape: Sequence[int],
    kernel_size: IntOrPair,
    stride: IntOrPair | None = None,
    padding: IntOrPair = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> np.ndarray:
    """Spread each output gradient evenly (``/ divisor``) over its window.

    Parameters
    ----------
    dout : ndarray, shape (N, C, OH, OW)
    x_shape : (N, C, H, W)
    kernel_size, stride, padding, ceil_mode, count_include_pad : as in
        :func:`avgpool2d_forward`

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    """
    fn = "avgpool2d_backward"
    dout = check_float(fn, "dout", dout, 4)
    n, c, h, w = check_shape4(fn, "x_shape", x_shape)
    geom = pool_geometry(fn, (n, c, h, w), kernel_size, stride, padding, ceil_mode)
    kh, kw, sh, sw, ph, pw, oh, ow = geom
    if dout.shape != (n, c, oh, ow):
        raise ValueError(f"{fn}: dout must have shape {(n, c, oh, ow)}, got {dout.shape}")
    divisor = avgpool_divisor((n, c, h, w), geom, count_include_pad, dout.dtype)
    share = dout.reshape(n, c, 1, oh * ow) / divisor
    dcols = np.broadcast_to(share, (n, c, kh * kw, oh * ow)).reshape(n, c * kh * kw, oh * ow)
    eh, ew = _extra_padding(h, kh, sh, ph, oh), _extra_padding(w, kw, sw, pw, ow)
    dcols = dcols.astype(dout.dtype, copy=False)
    dx = col2im(dcols, (n, c, h + eh, w + ew), (kh, kw), (sh, sw), (ph, pw))
    return np.ascontiguousarray(dx[:, :, :h, :w]) if eh or ew else dx
