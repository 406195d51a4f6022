"""Input validation shared by the numpy and Cython float kernels.

Both backends call these helpers, so a bad argument gets the same error message whichever
backend is active. Every message starts with the kernel's name and states what was
expected and what was given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from tinyodl._shapes import conv_output_shape, padding4, pair, pool_output_size

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_float(fn: str, name: str, a: object, ndim: int, like: np.ndarray | None = None):
    """Return ``a`` as an ndarray after checking its dtype (float32/64) and rank.

    With ``like`` given, ``a`` must also have the same dtype as ``like``.
    """
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{fn}: {name} must be a numpy array, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{fn}: {name} must be float32 or float64, got {a.dtype}")
    if like is not None and a.dtype != like.dtype:
        raise TypeError(
            f"{fn}: {name} has dtype {a.dtype} but the input has dtype {like.dtype}; "
            "cast them to the same float type"
        )
    if a.ndim != ndim:
        raise ValueError(f"{fn}: {name} must be {ndim}-D, got shape {a.shape}")
    return a


def check_shape4(fn: str, name: str, shape: Sequence[int]) -> tuple[int, int, int, int]:
    """Validate a 4-D shape argument such as ``x_shape`` or ``w_shape``."""
    try:
        dims = tuple(int(s) for s in shape)
    except TypeError:
        raise ValueError(f"{fn}: {name} must be a 4-tuple of ints, got {shape!r}") from None
    if len(dims) != 4 or min(dims) < 0:
        raise ValueError(f"{fn}: {name} must be 4 non-negative ints, got {shape!r}")
    return dims  # type: ignore[return-value]


class ConvGeometry(NamedTuple):
    """Every size a 2-D convolution needs, in the names of the equations.

    ``PH``/``PW`` are the top/left padding: the offset of the first window. The kernels
    need nothing else, since every read is bounds-checked against ``H``/``W`` and the
    output size ``OH``/``OW`` already carries the bottom/right padding ``PB``/``PR``
    (equal to ``PH``/``PW`` unless the padding was given as a 4-tuple).
    """

    N: int
    C: int
    H: int
    W: int
    F: int
    KH: int
    KW: int
    SH: int
    SW: int
    PH: int
    PW: int
    OH: int
    OW: int
    groups: int
    PB: int
    PR: int


def window_geometry(
    fn: str, x_shape: Sequence[int], kernel_size, stride, padding
) -> tuple[int, int, int, int, int, int, int, int]:
    """``(KH, KW, SH, SW, PH, PW, OH, OW)`` of a window over ``x_shape``, with clear errors.

    ``padding`` may be a 4-tuple ``(top, bottom, left, right)``; then ``PH``/``PW`` are the
    top/left padding and ``OH``/``OW`` count the bottom/right padding too.
    """
    kh, kw = pair(kernel_size, "kernel_size")
    sh, sw = pair(stride, "stride")
    try:
        ph, _, pw, _ = padding4(padding)
    except ValueError as err:
        raise ValueError(f"{fn}: {err}") from None
    if kh < 1 or kw < 1:
        raise ValueError(f"{fn}: kernel_size must be positive, got {(kh, kw)}")
    try:
        oh, ow = conv_output_shape(x_shape, (kh, kw), (sh, sw), padding)
    except ValueError as err:
        raise ValueError(f"{fn}: {err} (input shape {tuple(x_shape)})") from None
    return kh, kw, sh, sw, ph, pw, oh, ow


def conv_geometry(
    fn: str, x_shape: Sequence[int], w_shape: Sequence[int], stride, padding, groups: int
) -> ConvGeometry:
    """Check that input and weight shapes fit together and compute the output size."""
    n, c, h, w = x_shape
    f, cg, kh, kw = w_shape
    if not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"{fn}: groups must be a positive int, got {groups!r}")
    if c < 1 or f < 1:
        raise ValueError(f"{fn}: x and w need at least one channel, got x {c} and w {f}")
    if c % groups != 0:
        raise ValueError(f"{fn}: x has {c} channels, not divisible by groups={groups}")
    if f % groups != 0:
        raise ValueError(f"{fn}: w has {f} filters, not divisible by groups={groups}")
    if cg * groups != c:
        raise ValueError(
            f"{fn}: w has {cg} input channels per group but x has {c} channels and groups={groups}"
        )
    kh, kw, sh, sw, ph, pw, oh, ow = window_geometry(fn, x_shape, (kh, kw), stride, padding)
    _, pb, _, pr = padding4(padding)
    return ConvGeometry(n, c, h, w, f, kh, kw, sh, sw, ph, pw, oh, ow, int(groups), pb, pr)


def check_dout(fn: str, dout: np.ndarray, g: ConvGeometry) -> None:
    """The output gradient of a convolution must have the output's shape (N, F, OH, OW)."""
    expected = (g.N, g.F, g.OH, g.OW)
    if dout.shape != expected:
        raise ValueError(f"{fn}: dout must have shape {expected}, got {dout.shape}")


def pool_geometry(
    fn: str, x_shape: Sequence[int], kernel_size, stride, padding, ceil_mode: bool = False
):
    """Window geometry of a pooling layer; ``stride=None`` means ``stride = kernel_size``.

    Like PyTorch, padding may be at most half the window, so that every window holds at
    least one real pixel. ``ceil_mode`` rounds the output size up (see
    :func:`tinyodl._shapes.pool_output_size`): the last windows may then reach past the
    bottom/right padding.
    """
    if stride is None:
        stride = kernel_size
    padding = pair(padding, "padding")  # pooling pads symmetrically
    kh, kw, sh, sw, ph, pw, oh, ow = window_geometry(fn, x_shape, kernel_size, stride, padding)
    if 2 * ph > kh or 2 * pw > kw:
        raise ValueError(
            f"{fn}: padding {(ph, pw)} must be at most half the kernel size {(kh, kw)}"
        )
    if ceil_mode:
        oh = pool_output_size(int(x_shape[2]), kh, sh, ph, True)
        ow = pool_output_size(int(x_shape[3]), kw, sw, pw, True)
    return kh, kw, sh, sw, ph, pw, oh, ow


def check_argmax(fn: str, dout: np.ndarray, argmax: np.ndarray, x_shape) -> None:
    """Argmax of a max pooling must match dout and index into the H*W plane."""
    if not isinstance(argmax, np.ndarray) or argmax.dtype.kind not in "iu":
        raise TypeError(f"{fn}: argmax must be an integer array from maxpool2d_forward")
    if argmax.shape != dout.shape:
        raise ValueError(f"{fn}: argmax shape {argmax.shape} != dout shape {dout.shape}")
    n, c, h, w = x_shape
    if dout.shape[:2] != (n, c):
        raise ValueError(f"{fn}: dout shape {dout.shape} does not match x_shape {tuple(x_shape)}")
    if argmax.size and (argmax.min() < 0 or argmax.max() >= h * w):
        raise ValueError(f"{fn}: argmax entries must lie in [0, {h * w}) for x_shape {x_shape}")


def check_linear(fn: str, x: object, w: object, b: object = None):
    """Validate ``linear_forward``'s ``x (N, in)``, ``w (out, in)``, ``b (out,)``; return arrays."""
    x = check_float(fn, "x", x, 2)
    w = check_float(fn, "w", w, 2, like=x)
    if w.shape[1] != x.shape[1]:
        raise ValueError(
            f"{fn}: w has {w.shape[1]} input features but x has {x.shape[1]} "
            f"(x shape {x.shape}, w shape {w.shape})"
        )
    if b is not None:
        b = check_float(fn, "b", b, 1, like=x)
        if b.shape != (w.shape[0],):
            raise ValueError(f"{fn}: b must have shape ({w.shape[0]},), got {b.shape}")
    return x, w, b


def check_linear_dout_w(fn: str, dout: object, w: object):
    """Validate ``dout (N, out)`` against ``w (out, in)``; return both as arrays."""
    dout = check_float(fn, "dout", dout, 2)
    w = check_float(fn, "w", w, 2, like=dout)
    if w.shape[0] != dout.shape[1]:
        raise ValueError(
            f"{fn}: w has {w.shape[0]} output features but dout has {dout.shape[1]} "
            f"(dout shape {dout.shape}, w shape {w.shape})"
        )
    return dout, w


def check_linear_dout_x(fn: str, dout: object, x: object):
    """Validate ``dout (N, out)`` against the forward input ``x (N, in)``; return both."""
    dout = check_float(fn, "dout", dout, 2)
    x = check_float(fn, "x", x, 2, like=dout)
    if x.shape[0] != dout.shape[0]:
        raise ValueError(
            f"{fn}: dout has batch size {dout.shape[0]} but x has {x.shape[0]} "
            f"(dout shape {dout.shape}, x shape {x.shape})"
        )
    return dout, x
