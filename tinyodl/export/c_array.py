"""A model file as a C array (chapter 13), the way TFLite Micro projects embed a model.

A microcontroller has no file system: the ``.tflite`` bytes are compiled into the firmware
as ``const unsigned char model[]`` (``xxd -i`` style), aligned so that TFLite Micro can read
its int32 and float fields in place, plus the length. :func:`to_c_array` writes the header
(``.h``: declarations) and the source (``.cc``: the bytes).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tinyodl.export._files import write_bytes_atomic

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def to_c_array(data: bytes, name: str = "g_model", alignment: int = 16) -> tuple[str, str]:
    """C header and source text holding ``data``.

    Parameters
    ----------
    data : bytes
        E.g. :func:`tinyodl.export.to_tflite`'s output.
    name : str, default "g_model"
        C identifier of the array; the length is ``<name>_len``.
    alignment : int, default 16

    Returns
    -------
    (header, source) : (str, str)
        ``extern const unsigned char name[]; extern const unsigned int name_len;`` and the
        definitions, 12 bytes per line.
    """
    if not _IDENTIFIER.match(name):
        raise ValueError(f"to_c_array: {name!r} is not a C identifier")
    if not data:
        raise ValueError("to_c_array: no bytes to write")
    guard = f"TINYODL_{name.upper()}_H_"
    header = (
        f"// {len(data)} bytes, written by tinyodl.export.to_c_array\n"
        f"#ifndef {guard}\n#define {guard}\n\n"
        f"extern const unsigned char {name}[];\n"
        f"extern const unsigned int {name}_len;\n\n#endif  // {guard}\n"
    )
    lines = [
        "  " + ", ".join(f"0x{b:02x}" for b in data[i : i + 12]) + ","
        for i in range(0, len(data), 12)
    ]
    source = (
        f"// {len(data)} bytes, written by tinyodl.export.to_c_array\n"
        f'#include "{name}.h"\n\n'
        f"alignas({alignment}) const unsigned char {name}[] = {{\n"
        + "\n".join(lines)
        + f"\n}};\nconst unsigned int {name}_len = {len(data)};\n"
    )
    return header, source


def write_c_array(
    data: bytes, path: str | os.PathLike, name: str | None = None
) -> tuple[Path, Path]:
    """Write ``<stem>.h`` and ``<stem>.cc`` next to ``path`` (its suffix is ignored).

    ``name`` defaults to the file stem with every character that cannot appear in a C
    identifier replaced by ``_``. Returns the two paths.
    """
    path = Path(path)
    if name is None:
        name = re.sub(r"[^A-Za-z0-9_]", "_", path.stem)
        name = name if _IDENTIFIER.match(name) else f"_{name}"
    header, source = to_c_array(data, name)
    h_path, cc_path = path.with_suffix(".h"), path.with_suffix(".cc")
    source = source.replace(f'#include "{name}.h"', f'#include "{h_path.name}"')
    write_bytes_atomic(h_path, header.encode())
    write_bytes_atomic(cc_path, source.encode())
    return h_path, cc_path
