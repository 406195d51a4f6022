"""The wire format between the grader and the student's process: plain data only.

A message is ``MAGIC | uint32 header length | uint64 payload length | header | payload``: the
header is UTF-8 JSON, the payload an ``.npz`` archive (stored, not compressed) holding the
arrays the header refers to. Values are encoded as JSON with tags for what JSON lacks::

    None, True, 3, "s", 1.5          themselves (finite floats)
    {"t": "float", "v": "nan"}       nan, inf, -inf
    {"t": "list"|"tuple", "v": [...]}
    {"t": "dict", "v": [[key, value], ...]}   (string keys, order kept)
    {"t": "array", "k": "a0"}        an exact numpy.ndarray (numpy scalars become 0-d arrays)
    {"t": "ref", "id": 3, "type": "Model"}     an object that stays in the student's process
    {"t": "fn", "src": "lambda x: ...", "names": {...}}   a function for the student's code

Decoding never unpickles and never builds an object chosen by the sender: arrays are parsed
from the ``.npy`` bytes (``allow_pickle`` is never involved; object dtypes are refused, the
size the header claims must match the bytes), so the grader only ever holds ``numpy.ndarray``
objects of its own making, ``int``, ``float``, ``str``, ``bool``, ``None``, ``list``,
``tuple`` and ``dict``.

Standard library and numpy only: this file is also copied into the student's sandbox
(as ``_tinyodl_wire``), where the student's side encodes its results with it.
"""

from __future__ import annotations

import io
import json
import math
import struct
import zipfile

import numpy as np

MAGIC = b"TDL1"
_PREFIX = struct.Struct(">4sIQ")
MAX_HEADER = 32 * 2**20
MAX_DEPTH = 64


class WireError(ValueError):
    """A message that is not valid plain data (corrupt, too large, or a forbidden type)."""


class NotPlainData(TypeError):
    """A value that cannot cross the boundary; ``where`` says which part (``value[0]``)."""

    def __init__(self, type_name: str, where: str, hint: str = ""):
        self.type_name, self.where = type_name, where
        super().__init__(f"{where} is a {type_name}{hint}")


class Ref:
    """Handle of an object kept in the student's process (grader side)."""

    __slots__ = ("id", "type_name", "owner")

    def __init__(self, id: int, type_name: str, owner=None):
        self.id, self.type_name, self.owner = id, type_name, owner

    def __repr__(self) -> str:
        return f"<student {self.type_name} object #{self.id}>"


class Fn:
    """A function given to the student's code, defined by source evaluated in its process.

    ``Fn("lambda x: float(np.sum(a * np.sin(x)))", a=a)``: ``source`` is a lambda expression
    or one ``def``; it sees ``np`` (numpy) and the plain-data ``names``. What the student's
    code does with it stays in the student's process; the grader sees only what comes back.
    """

    __slots__ = ("source", "names")

    def __init__(self, source: str, **names):
        if not isinstance(source, str):
            raise TypeError(f"Fn: source must be a string, got {type(source).__name__}")
        self.source, self.names = source, names

    def __repr__(self) -> str:
        return f"Fn({self.source!r})"


def _numpy_scalar(value) -> bool:
    return isinstance(value, np.generic) and type(value).__module__ == "numpy"


class Encoder:
    """Turn a value into JSON plus a list of arrays; ``refs`` maps id(obj) -> handle for refs."""

    def __init__(self, ref_of=None):
        self.arrays: dict[str, np.ndarray] = {}
        self._by_id: dict[int, str] = {}
        self._keep: list = []  # keep encoded objects alive so ids stay unique
        self.ref_of = ref_of  # callable(obj) -> (id, type name) or None, in the student process

    def array(self, value: np.ndarray) -> dict:
        key = self._by_id.get(id(value))
        if key is None:
            if value.dtype.hasobject:
                raise NotPlainData("numpy array of Python objects (dtype=object)", "", "")
            key = f"a{len(self.arrays)}"
            self.arrays[key] = value
            self._by_id[id(value)] = key
            self._keep.append(value)
        return {"t": "array", "k": key}

    def encode(self, value, where: str = "value", depth: int = 0):
        if depth > MAX_DEPTH:
            raise NotPlainData("structure nested too deeply", where)
        kind = type(value)
        if value is None or kind in (bool, str):
            return value
        if kind is int:
            return value
        if kind is float:
            if math.isfinite(value):
                return value
            return {"t": "float", "v": "nan" if math.isnan(value) else repr(value)}
        if kind is np.ndarray:
            try:
                return self.array(value)
            except NotPlainData as err:
                raise NotPlainData(err.type_name, where) from None
        if _numpy_scalar(value):
            return self.array(np.asarray(value))
        if kind in (list, tuple):
            items = [self.encode(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
            return {"t": kind.__name__, "v": items}
        if kind is dict:
            pairs = []
            for key, item in value.items():
                if type(key) is not str:
                    raise NotPlainData(f"dict with a {type(key).__name__} key", where)
                pairs.append([key, self.encode(item, f"{where}[{key!r}]", depth + 1)])
            return {"t": "dict", "v": pairs}
        if kind is Ref:
            return {"t": "ref", "id": value.id, "type": value.type_name}
        if kind is Fn:
            names = self.encode(dict(value.names), where, depth + 1)
            return {"t": "fn", "src": value.source, "names": names}
        if self.ref_of is not None:
            handle = self.ref_of(value)
            if handle is not None:
                return {"t": "ref", "id": handle[0], "type": handle[1]}
        hint = ""
        if isinstance(value, np.ndarray):
            hint = " (a subclass of numpy.ndarray); return a plain array, e.g. np.asarray(x)"
        raise NotPlainData(_type_name(value), where, hint)


def _type_name(value) -> str:
    kind = type(value)
    module = getattr(kind, "__module__", "") or ""
    name = getattr(kind, "__qualname__", "object")
    if module in ("builtins", "__main__", "student") or not isinstance(module, str):
        return str(name)
    return f"{module}.{name}"


def decode(data, arrays: dict, ref=None, fn=None, depth: int = 0):
    """Inverse of :meth:`Encoder.encode`; ``ref(id, type)`` / ``fn(src, names)`` build those."""
    if depth > MAX_DEPTH + 2:
        raise WireError("structure nested too deeply")
    if data is None or type(data) in (bool, int, float, str):
        return data
    if type(data) is not dict:
        raise WireError(f"unexpected JSON value of type {type(data).__name__}")
    tag = data.get("t")
    if tag == "array":
        try:
            return arrays[data["k"]]
        except (KeyError, TypeError):
            raise WireError(f"reference to a missing array {data.get('k')!r}") from None
    if tag == "float":
        text = data.get("v")
        if text not in ("nan", "inf", "-inf"):
            raise WireError(f"bad float {text!r}")
        return float(text)
    if tag in ("list", "tuple"):
        items = data.get("v")
        if type(items) is not list:
            raise WireError(f"bad {tag}")
        out = [decode(v, arrays, ref, fn, depth + 1) for v in items]
        return out if tag == "list" else tuple(out)
    if tag == "dict":
        pairs = data.get("v")
        if type(pairs) is not list:
            raise WireError("bad dict")
        out = {}
        for pair in pairs:
            if type(pair) is not list or len(pair) != 2 or type(pair[0]) is not str:
                raise WireError("bad dict entry")
            out[pair[0]] = decode(pair[1], arrays, ref, fn, depth + 1)
        return out
    if tag == "ref" and ref is not None:
        if type(data.get("id")) is not int:
            raise WireError("bad object reference")
        return ref(data["id"], str(data.get("type", "object")))
    if tag == "fn" and fn is not None:
        names = decode(data.get("names"), arrays, ref, fn, depth + 1)
        if type(data.get("src")) is not str or type(names) is not dict:
            raise WireError("bad function")
        return fn(data["src"], names)
    raise WireError(f"unknown tag {tag!r}")


# -- arrays: .npz written by numpy, read back by hand ------------------------------------------


def pack_arrays(arrays: dict[str, np.ndarray]) -> bytes:
    if not arrays:
        return b""
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    return buffer.getvalue()


def _read_npy(data: bytes, name: str) -> np.ndarray:
    fp = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp, max_header_size=10000)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp, max_header_size=10000)
        else:
            raise WireError(f"array {name}: unsupported .npy version {version}")
    except WireError:
        raise
    except Exception as err:  # noqa: BLE001 - anything malformed is a corrupt message
        raise WireError(f"array {name}: bad .npy header ({err})") from None
    if dtype.hasobject:
        raise WireError(f"array {name}: object arrays are not plain data")
    count = 1
    for n in shape:
        if type(n) is not int or n < 0:
            raise WireError(f"array {name}: bad shape {shape!r}")
        count *= n
    body = memoryview(data)[fp.tell() :]
    if count * dtype.itemsize != len(body):
        raise WireError(
            f"array {name}: the header announces {count * dtype.itemsize} bytes, "
            f"the message holds {len(body)}"
        )
    array = np.frombuffer(body, dtype=dtype, count=count) if count else np.empty(0, dtype)
    order = "F" if fortran else "C"
    return np.array(array.reshape(shape, order=order), order=order, copy=True)


def unpack_arrays(payload: bytes, max_bytes: int) -> dict[str, np.ndarray]:
    """Parse an ``.npz`` payload strictly: stored members, sizes bounded, ``.npy`` checked."""
    if not payload:
        return {}
    try:
        archive = zipfile.ZipFile(io.BytesIO(payload))
        infos = archive.infolist()
    except Exception as err:  # noqa: BLE001
        raise WireError(f"the array payload is not a valid .npz archive ({err})") from None
    total, arrays = 0, {}
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED:
            raise WireError(f"array member {info.filename!r} is compressed")
        total += info.file_size
        if total > max_bytes or info.file_size > len(payload):
            raise WireError("the arrays are larger than the message")
        if not info.filename.endswith(".npy"):
            raise WireError(f"unexpected member {info.filename!r} in the array payload")
        try:
            data = archive.read(info)
        except Exception as err:  # noqa: BLE001
            raise WireError(f"array member {info.filename!r} is corrupt ({err})") from None
        arrays[info.filename[:-4]] = _read_npy(data, info.filename[:-4])
    return arrays


# -- framing -------------------------------------------------------------------------------


def pack(header: dict, arrays: dict[str, np.ndarray] | None = None) -> bytes:
    """One message: the JSON header and the arrays it refers to."""
    head = json.dumps(header, allow_nan=False, separators=(",", ":")).encode("utf-8")
    payload = pack_arrays(arrays or {})
    return _PREFIX.pack(MAGIC, len(head), len(payload)) + head + payload


def parse_prefix(prefix: bytes, max_payload: int) -> tuple[int, int]:
    """Lengths of the header and payload announced by a message's first 16 bytes."""
    magic, n_head, n_payload = _PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise WireError(f"bad message start {prefix[:8]!r}")
    if n_head > MAX_HEADER or n_payload > max_payload:
        raise WireError(f"message too large ({n_head} + {n_payload} bytes)")
    return n_head, n_payload


def parse_body(head: bytes, payload: bytes, max_payload: int) -> tuple[dict, dict]:
    """Header dictionary and arrays of a message whose prefix has been read."""
    try:
        header = json.loads(head.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise WireError(f"the message header is not valid JSON ({err})") from None
    if type(header) is not dict:
        raise WireError("the message header is not a JSON object")
    return header, unpack_arrays(payload, max_payload)


PREFIX_SIZE = _PREFIX.size
