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


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution or pooling window along one axis.

    ``out = floor((size + 2 * padding - kernel) / stride) + 1``
    """
    out = (size + 2 * padding - kernel) // stride + 1
    if out < 1:
        raise ValueError(
            f"window of size {kernel} (stride {stride}, padding {padding}) does not fit "
            f"an input of size {size}"
        )
    return out


def conv_output_shape(
    x_shape: Sequence[int],
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
) -> tuple[int, int]:
    """``(OH, OW)`` of a 2-D window over an NCHW input of shape ``x_shape``."""
    kh, kw = pair(kernel_size, "kernel_size")
    sh, sw = pair(stride, "stride")
    ph, pw = pair(padding, "padding")
    if sh < 1 or sw < 1:
        raise ValueError(f"stride must be positive, got {(sh, sw)}")
    if ph < 0 or pw < 0:
        raise ValueError(f"padding must be non-negative, got {(ph, pw)}")
    return (
        conv_output_size(int(x_shape[2]), kh, sh, ph),
        conv_output_size(int(x_shape[3]), kw, sw, pw),
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
