"""IDX reader/writer: round trips and clear errors on broken files."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinyodl.data import DataFormatError, read_idx, write_idx

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


@settings(max_examples=30, deadline=None)
@given(
    array=hnp.arrays(
        dtype=st.sampled_from(DTYPES),
        shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5),
    ),
    compressed=st.booleans(),
)
def test_round_trip(tmp_path_factory, array, compressed):
    path = tmp_path_factory.mktemp("idx") / ("a.idx.gz" if compressed else "a.idx")
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == array.dtype
    assert back.shape == array.shape
    np.testing.assert_array_equal(back, array)  # NaNs compare equal here


def test_header_layout_matches_the_format(tmp_path):
    """Hand-written file: magic 00 00 08 02, sizes big-endian, then the bytes in C order."""
    data = np.arange(6, dtype=np.uint8).reshape(2, 3)
    raw = bytes([0, 0, 0x08, 2]) + struct.pack(">II", 2, 3) + data.tobytes()
    (tmp_path / "m.idx").write_bytes(raw)
    np.testing.assert_array_equal(read_idx(tmp_path / "m.idx"), data)
    write_idx(tmp_path / "w.idx", data)
    assert (tmp_path / "w.idx").read_bytes() == raw


def test_big_endian_values(tmp_path):
    raw = bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 2) + struct.pack(">ii", 1, -2)
    (tmp_path / "i.idx").write_bytes(raw)
    back = read_idx(tmp_path / "i.idx")
    assert back.tolist() == [1, -2]
    assert back.dtype == np.int32 and back.dtype.isnative


def test_gzip_output_is_reproducible(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, (10, 4, 4), dtype=np.uint8)
    write_idx(tmp_path / "a.gz", data)
    write_idx(tmp_path / "b.gz", data)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()


@pytest.fixture
def good_bytes():
    data = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    return bytes([0, 0, 0x08, 3]) + struct.pack(">III", 2, 3, 4) + data.tobytes()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b"\x01" + b[1:], "bad magic"),
        (lambda b: b[:2] + b"\x07" + b[3:], "unknown type code 0x07"),
        (lambda b: b[:-1], "truncated"),
        (lambda b: b + b"\x00", "needs 24 data bytes, the file has 25"),
        (lambda b: b[:2], "too short"),
        (lambda b: b[:4] + b"\x00\x00", "declares 3 dimensions"),
    ],
)
def test_broken_files_name_file_and_reason(tmp_path, good_bytes, mutate, message):
    path = tmp_path / "broken.idx"
    path.write_bytes(mutate(good_bytes))
    with pytest.raises(DataFormatError, match=message) as info:
        read_idx(path)
    assert "broken.idx" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_truncated_gzip(tmp_path, good_bytes):
    packed = gzip.compress(good_bytes)
    path = tmp_path / "cut.idx.gz"
    path.write_bytes(packed[: len(packed) - 12])
    with pytest.raises(DataFormatError, match="cut.idx.gz.*truncated"):
        read_idx(path)


def test_corrupt_gzip(tmp_path, good_bytes):
    packed = bytearray(gzip.compress(good_bytes))
    packed[12:16] = b"\xff\xff\xff\xff"
    path = tmp_path / "bad.gz"
    path.write_bytes(bytes(packed))
    with pytest.raises(DataFormatError, match="bad.gz.*(corrupt|truncated)"):
        read_idx(path)


def test_not_gzip_with_gz_suffix(tmp_path, good_bytes):
    path = tmp_path / "plain.gz"
    path.write_bytes(good_bytes)
    with pytest.raises(DataFormatError, match="plain.gz.*corrupt gzip"):
        read_idx(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataFormatError, match="nope.idx.*no such file"):
        read_idx(tmp_path / "nope.idx")


def test_write_rejects_unsupported_dtype(tmp_path):
    with pytest.raises(DataFormatError, match="int64"):
        write_idx(tmp_path / "x.idx", np.zeros(3, dtype=np.int64))
