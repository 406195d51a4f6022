"""Reading and writing the IDX file format of MNIST.

An IDX file is a tiny self-describing array format (LeCun et al., the MNIST database page):

====================  =========================================================
bytes 0-1             ``0x00 0x00``
byte 2                element type code (see :data:`IDX_DTYPES`)
byte 3                number of dimensions ``d``
next ``4 * d`` bytes  the size of each dimension, big-endian unsigned 32-bit
rest                  the elements in C order, big-endian
====================  =========================================================

Files ending in ``.gz`` are gzip-compressed. Chapter 00 (foundations).
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = ["DataFormatError", "IDX_DTYPES", "read_idx", "write_idx"]

#: IDX type code -> numpy dtype (big-endian as stored in the file).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


#: Most dimensions a numpy array (hence an IDX file tinyodl can read) may have.
MAX_DIMS = 64 if int(np.__version__.split(".")[0]) >= 2 else 32


class DataFormatError(ValueError):
    """A data file is missing, truncated, corrupt or not in the expected format."""


def _read_bytes(path: Path) -> bytes:
    """Return the (decompressed) content of ``path``, with clear errors."""
    if not path.is_file():
        raise DataFormatError(f"read_idx: {path}: no such file")
    raw = path.read_bytes()
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError as err:
        raise DataFormatError(f"read_idx: {path}: truncated gzip stream ({err})") from err
    except (OSError, zlib.error) as err:
        raise DataFormatError(f"read_idx: {path}: corrupt gzip data ({err})") from err


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a numpy array.

    Parameters
    ----------
    path : str or path-like
        An ``.idx``/``-ubyte`` file, or the same gzip-compressed with a ``.gz`` suffix.

    Returns
    -------
    ndarray
        The array with the shape stored in the header, in native byte order
        (``uint8`` for MNIST images ``(N, 28, 28)`` and labels ``(N,)``).

    Raises
    ------
    DataFormatError
        If the file is missing, the gzip stream is truncated or corrupt, the magic number is
        wrong, the type code is unknown, the header declares more dimensions than numpy
        allows (:data:`MAX_DIMS`), or the data length does not match the header (sizes are
        multiplied exactly, so a corrupt header with huge dimensions is reported, not
        overflowed).
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataFormatError(f"read_idx: {path}: {len(data)} bytes, too short for an IDX header")
    zero0, zero1, code, ndim = data[:4]
    if zero0 != 0 or zero1 != 0:
        raise DataFormatError(
            f"read_idx: {path}: bad magic number {data[:4].hex()}; expected 0000<type><ndim> "
            "(is this an IDX file? gzip files need a .gz suffix)"
        )
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DataFormatError(f"read_idx: {path}: unknown type code 0x{code:02X}; known: {known}")
    if ndim > MAX_DIMS:
        raise DataFormatError(
            f"read_idx: {path}: header declares {ndim} dimensions; numpy arrays have at most "
            f"{MAX_DIMS} (is the file corrupt?)"
        )
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataFormatError(
            f"read_idx: {path}: header declares {ndim} dimensions but the file has only "
            f"{len(data)} bytes"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_len])
    dtype = IDX_DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize  # exact: no int64 overflow on corrupt headers
    actual = len(data) - header_len
    if actual != expected:
        raise DataFormatError(
            f"read_idx: {path}: shape {shape} of {dtype.name} needs {expected} data bytes, "
            f"the file has {actual}" + (" (truncated)" if actual < expected else "")
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file; gzip-compress it when ``path`` ends in ``.gz``.

    The gzip header carries no file name and ``mtime=0``, so the same array always gives
    the same bytes (reproducible builds of the shipped data).

    Parameters
    ----------
    path : str or path-like
        Destination file.
    array : ndarray
        Any shape with at most 255 dimensions, dtype one of :data:`IDX_DTYPES`.
    """
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise DataFormatError(
            f"write_idx: {path}: dtype {array.dtype} cannot be stored in IDX; "
            f"expected one of {sorted(str(d) for d in codes)}"
        )
    if array.ndim > 255:
        raise DataFormatError(f"write_idx: {path}: {array.ndim} dimensions, at most 255")
    code = codes[native]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        with (
            open(path, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz,
        ):
            gz.write(payload)
    else:
        path.write_bytes(payload)
