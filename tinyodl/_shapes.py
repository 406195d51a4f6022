"""Shape arithmetic shared by the numpy and Cython kernels (chapter 00)."""

from __future__ import annotations

from collections.abc import Sequence


def pair(value: int | Sequence[int], name: str = "value") -> tuple[int, int]:
    """Normalise an int or a pair of ints to ``(vertical, horizontal)``.

    Examples
    --------
    >>> pair(3)
    (3, 3)
    >>> pair((1, 2))
    (1, 2)
    """
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return int(value), int(value)
    try:
        a, b = value  # type: ignore[misc]
        return int(a), int(b)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}") from None


def padding4(value: int | Sequence[int], name: str = "padding") -> tuple[int, int, int, int]:
    """Normalise a padding to ``(top, bottom, left, right)``.

    An int pads all four sides, a pair ``(ph, pw)`` pads top and bottom by ``ph`` and left
    and right by ``pw``, a 4-tuple is taken as ``(top, bottom, left, right)``. Asymmetric
    padding is what TFLite's and ONNX's SAME padding needs with an even padded total, e.g.
    a 3x3 stride-2 convolution on an even input pads only the bottom and right (chapter 13).

    Examples
    --------
    >>> padding4(1)
    (1, 1, 1, 1)
    >>> padding4((1, 2))
    (1, 1, 2, 2)
    >>> padding4((0, 1, 0, 1))
    (0, 1, 0, 1)
    """
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return (int(value),) * 4
    try:
        vals = tuple(int(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        vals = ()
    if len(vals) == 2:
        return vals[0], vals[0], vals[1], vals[1]
    if len(vals) == 4:
        return vals  # type: ignore[return-value]
    raise ValueError(
        f"{name} must be an int, a pair (ph, pw) or a 4-tuple (top, bottom, left, right), "
        f"got {value!r}"
    )


def is_symmetric(padding: int | Sequence[int]) -> bool:
    """True if ``padding`` pads top like bottom and left like right."""
    top, bottom, left, right = padding4(padding)
    return top == bottom and left == right


def conv_output_size(
    size: int, kernel: int, stride: int, padding: int, padding_end: int | None = None
) -> int:
    """Output length of a convolution or pooling window along one axis.

    ``out = floor((size + padding + padding_end - kernel) / stride) + 1``, where
    ``padding_end`` (the bottom or right padding) defaults to ``padding``.
    """
    end = padding if padding_end is None else padding_end
    out = (size + padding + end - kernel) // stride + 1
    if out < 1:
        pad = padding if end == padding else (padding, end)
        raise ValueError(
            f"window of size {kernel} (stride {stride}, padding {pad}) does not fit "
            f"an input of size {size}"
        )
    return out


def conv_output_shape(
    x_shape: Sequence[int],
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
) -> tuple[int, int]:
    """``(OH, OW)`` of a 2-D window over an NCHW input of shape ``x_shape``.

    ``padding`` is an int, a pair or a 4-tuple ``(top, bottom, left, right)``
    (see :func:`padding4`).
    """
    kh, kw = pair(kernel_size, "kernel_size")
    sh, sw = pair(stride, "stride")
    top, bottom, left, right = padding4(padding)
    if sh < 1 or sw < 1:
        raise ValueError(f"stride must be positive, got {(sh, sw)}")
    if min(top, bottom, left, right) < 0:
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    return (
        conv_output_size(int(x_shape[2]), kh, sh, top, bottom),
        conv_output_size(int(x_shape[3]), kw, sw, left, right),
    )


def pool_output_size(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool) -> int:
    """Output length of a pooling window along one axis (PyTorch's rule).

    ``floor`` (or with ``ceil_mode`` ``ceil``) of ``(size + 2 * padding - kernel) / stride``,
    plus one. In ceil mode a last window that would start in the right padding is dropped,
    so every window starts on a pixel or in the left padding.
    """
    out = conv_output_size(size, kernel, stride, padding)
    if ceil_mode and (size + 2 * padding - kernel) % stride:
        out += 1
        if (out - 1) * stride >= size + padding:
            out -= 1
    return out
