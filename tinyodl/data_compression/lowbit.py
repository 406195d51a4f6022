"""Low-bit storage of images: fewer bits per pixel, more images per byte.

A pixel in [0, 1] stored with ``b`` bits keeps one of ``L = 2^b`` levels,
``q = round(x (L - 1))``, and reads back as ``q / (L - 1)`` (error at most ``1 / (2(L-1))``).
MNIST ships as 8-bit pixels (``uint8``: 1 byte each, 4x less than float32); 4 bits keep 16
grey levels, two pixels per byte; 1 bit is a binarised digit, eight pixels per byte.
:func:`pack_bits` / :func:`unpack_bits` store ``b``-bit values contiguously (``b`` in 1, 2, 4,
8), first value in the *high* bits of each byte (the order of ``numpy.packbits``), so ``n``
values take exactly ``ceil(n b / 8)`` bytes. Chapter 07 (data compression).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BITS = (1, 2, 4, 8)


def _check_bits(bits: int, fn: str) -> int:
    if bits not in BITS:
        raise ValueError(f"{fn}: bits must be one of {BITS}, got {bits}")
    return bits


def quantize(x: np.ndarray, bits: int) -> np.ndarray:
    """Levels ``round(x (2^bits - 1))`` (uint8) of values ``x`` in [0, 1] (clipped)."""
    _check_bits(bits, "quantize")
    top = (1 << bits) - 1
    return np.rint(np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0) * top).astype(np.uint8)


def dequantize(q: np.ndarray, bits: int, dtype=np.float32) -> np.ndarray:
    """Values in [0, 1] of ``bits``-bit levels ``q``."""
    _check_bits(bits, "dequantize")
    return (np.asarray(q).astype(dtype)) / dtype((1 << bits) - 1)


def pack_bits(q: np.ndarray, bits: int) -> np.ndarray:
    """Pack ``bits``-bit values (any shape, each < 2^bits) into a flat uint8 array.

    ``8 // bits`` values share a byte, the first in the high bits; the last byte is padded
    with zeros. ``pack_bits(q, 4)`` is 4-bit packing, two pixels per byte.
    """
    _check_bits(bits, "pack_bits")
    q = np.asarray(q).ravel()
    if q.size and (q.min() < 0 or q.max() >= (1 << bits)):
        raise ValueError(f"pack_bits: values must be in [0, {(1 << bits) - 1}] for {bits} bits")
    per_byte = 8 // bits
    padded = np.zeros(-(-q.size // per_byte) * per_byte, dtype=np.uint8)
    padded[: q.size] = q
    groups = padded.reshape(-1, per_byte)
    shifts = (bits * np.arange(per_byte - 1, -1, -1)).astype(np.uint8)  # first value highest
    return np.bitwise_or.reduce(groups << shifts, axis=1).astype(np.uint8)


def unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """The first ``count`` ``bits``-bit values of :func:`pack_bits` output (uint8, flat)."""
    _check_bits(bits, "unpack_bits")
    packed = np.asarray(packed, dtype=np.uint8)
    per_byte = 8 // bits
    if count > packed.size * per_byte:
        raise ValueError(
            f"unpack_bits: {packed.size} bytes hold at most {packed.size * per_byte} values of "
            f"{bits} bits, asked for {count}"
        )
    shifts = (bits * np.arange(per_byte - 1, -1, -1)).astype(np.uint8)
    values = (packed[:, None] >> shifts) & np.uint8((1 << bits) - 1)
    return values.ravel()[:count]


@dataclass
class LowBitImages:
    """Images stored with ``bits`` bits per pixel, packed.

    Attributes
    ----------
    data : ndarray of uint8
        The packed levels of all images, row-major.
    shape : tuple
        Shape of the image array, e.g. (N, 28, 28).
    bits : int
    """

    data: np.ndarray
    shape: tuple[int, ...]
    bits: int

    @classmethod
    def encode(cls, images: np.ndarray, bits: int) -> LowBitImages:
        """From images in [0, 1] (float) or uint8 (0..255, scaled to [0, 1] first)."""
        images = np.asarray(images)
        x = images / 255.0 if images.dtype == np.uint8 else images
        return cls(pack_bits(quantize(x, bits), bits), tuple(images.shape), bits)

    @property
    def nbytes(self) -> int:
        """Bytes of the stored images (``ceil(pixels * bits / 8)``)."""
        return int(self.data.nbytes)

    def decode(self) -> np.ndarray:
        """float32 images in [0, 1] of the original shape."""
        n = int(np.prod(self.shape))
        return dequantize(unpack_bits(self.data, self.bits, n), self.bits).reshape(self.shape)
