"""2-D max and average pooling in numpy, built on :func:`tinyodl.reference.conv.im2col`.

Chapter 00 (foundations). A pooling window is a convolution window without weights: after
``im2col`` each column holds one window, per channel, as ``KH*KW`` consecutive rows.

* max pooling keeps the largest entry of each window and remembers where it was
  (``argmax``, a flat index ``ih*W + iw`` into the unpadded ``H x W`` plane). Padding is
  ``-inf`` so it never wins; ties go to the first position in row-major window order.
  Backward sends each output gradient to its argmax pixel.
* average pooling divides the window sum by ``KH*KW``; padding counts as zeros (PyTorch's
  ``count_include_pad=True``). Backward spreads ``dout / (KH*KW)`` over the window, which is
  ``col2im`` of the repeated gradient.

``stride=None`` means ``stride = kernel_size``. Padding may be at most half the window.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tinyodl.reference._checks import check_argmax, check_float, check_shape4, pool_geometry
from tinyodl.reference.conv import col2im, im2col

IntOrPair = int | Sequence[int]


def maxpool2d_forward(
    x: np.ndarray,
    kernel_size: IntOrPair,
    stride: IntOrPair | None = None,
    padding: IntOrPair = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Max pooling.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    kernel_size, stride, padding : int or (int, int); ``stride=None`` -> ``kernel_size``

    Returns
    -------
    out : ndarray, shape (N, C, OH, OW)
    argmax : ndarray of int64, shape (N, C, OH, OW)
        Flat index ``ih*W + iw`` of the winning pixel in the unpadded plane.
    """
    fn = "maxpool2d_forward"
    x = check_float(fn, "x", x, 4)
    n, c, h, w = x.shape
    kh, kw, sh, sw, ph, pw, oh, ow = pool_geometry(fn, x.shape, kernel_size, stride, padding)
    x_pad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
    windows = im2col(x_pad, (kh, kw), (sh, sw), 0).reshape(n, c, kh * kw, oh * ow)
    k = windows.argmax(axis=2)  # position inside the window, (N, C, OH*OW)
    out = np.take_along_axis(windows, k[:, :, None, :], axis=2)[:, :, 0]
    # window position (i, j) of output (r, s) is pixel (r*SH + i - PH, s*SW + j - PW)
    r, s = np.divmod(np.arange(oh * ow), ow)
    ih = r * sh + k // kw - ph
    iw = s * sw + k % kw - pw
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
    np.add.at(dx, (plane, argmax.reshape(n * c, -1)), dout.reshape(n * c, -1))
    return dx.reshape(n, c, h, w)


def avgpool2d_forward(
    x: np.ndarray,
    kernel_size: IntOrPair,
    stride: IntOrPair | None = None,
    padding: IntOrPair = 0,
) -> np.ndarray:
    """Average pooling; padded positions count as zeros (divisor ``KH*KW``).

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    kernel_size, stride, padding : int or (int, int); ``stride=None`` -> ``kernel_size``

    Returns
    -------
    out : ndarray, shape (N, C, OH, OW)
    """
    fn = "avgpool2d_forward"
    x = check_float(fn, "x", x, 4)
    n, c = x.shape[:2]
    kh, kw, sh, sw, ph, pw, oh, ow = pool_geometry(fn, x.shape, kernel_size, stride, padding)
    windows = im2col(x, (kh, kw), (sh, sw), (ph, pw)).reshape(n, c, kh * kw, oh * ow)
    out = windows.sum(axis=2) / (kh * kw)
    return out.astype(x.dtype, copy=False).reshape(n, c, oh, ow)


def avgpool2d_backward(
    dout: np.ndarray,
    x_shape: Sequence[int],
    kernel_size: IntOrPair,
    stride: IntOrPair | None = None,
    padding: IntOrPair = 0,
) -> np.ndarray:
    """Spread each output gradient evenly (``/ KH*KW``) over its window.

    Parameters
    ----------
    dout : ndarray, shape (N, C, OH, OW)
    x_shape : (N, C, H, W)
    kernel_size, stride, padding : as in :func:`avgpool2d_forward`

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    """
    fn = "avgpool2d_backward"
    dout = check_float(fn, "dout", dout, 4)
    n, c, h, w = check_shape4(fn, "x_shape", x_shape)
    kh, kw, sh, sw, ph, pw, oh, ow = pool_geometry(fn, x_shape, kernel_size, stride, padding)
    if dout.shape != (n, c, oh, ow):
        raise ValueError(f"{fn}: dout must have shape {(n, c, oh, ow)}, got {dout.shape}")
    share = dout.reshape(n, c, 1, oh * ow) / (kh * kw)
    dcols = np.broadcast_to(share, (n, c, kh * kw, oh * ow)).reshape(n, c * kh * kw, oh * ow)
    return col2im(dcols.astype(dout.dtype, copy=False), (n, c, h, w), (kh, kw), (sh, sw), (ph, pw))
