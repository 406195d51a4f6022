"""What every benchmark shares: the machine it ran on, the command, and the JSON it writes.

Every benchmark writes one JSON document of the same shape::

    {"machine": {...}, "command": "tinyodl bench NAME ...", "rows": [...], "summary": {...}}

``machine`` says where the figures come from (CPU model and the instruction-set flags that
change kernel speed, cores, thread counts, library versions), because the machines differ
between runs and speed is only meaningful as a ratio measured in the same process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

#: CPU flags that change what the kernels can do (GUIDE section 3).
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_model_and_flags() -> tuple[str, list[str]]:
    """The CPU model name and which of :data:`SIMD_FLAGS` it has (Linux ``/proc/cpuinfo``)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return model, []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
            break
    return model, [f for f in SIMD_FLAGS if f in flags]


def machine_info(threads: int | None = None) -> dict[str, Any]:
    """CPU, cores, threads and library versions, for the ``machine`` key of a result."""
    from tinyodl import __version__, backend

    model, flags = cpu_model_and_flags()
    info: dict[str, Any] = {
        "cpu": model,
        "cpu_flags": flags,
        "cores": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "tinyodl": __version__,
        "backends": backend.available_backends(),
        "platform": platform.platform(),
    }
    try:
        from tinyodl._kernels import int8 as int8_kernels

        info["int8_simd_path"] = int8_kernels.get_simd_path()
        info["int8_simd_paths"] = int8_kernels.simd_paths()
    except (ImportError, AttributeError):
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_quantized_engine"] = "fbgemm"
    except ImportError:
        pass
    return info


def command_line(argv: list[str] | None = None) -> str:
    """The command that produced a result, as it would be typed (``tinyodl bench ...``)."""
    argv = sys.argv if argv is None else argv
    prog = Path(argv[0]).name if argv else "tinyodl"
    if prog in ("__main__.py", "cli.py", "-c"):
        prog = "tinyodl"
    return shlex.join([prog, *argv[1:]])


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """``--json FILE``, ``--quick`` and ``--seed`` (every benchmark has them)."""
    parser.add_argument("--json", dest="json_path", default=None, help="write results here")
    parser.add_argument(
        "--quick", action="store_true", help="a small, fast version (smoke tests, CI)"
    )
    parser.add_argument("--seed", type=int, default=0, help="base random seed (default 0)")


def write_results(
    path: str | os.PathLike | None,
    rows: list[dict[str, Any]],
    summary: dict[str, Any],
    machine: dict[str, Any] | None = None,
    command: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Build the result document and, if ``path`` is given, write it (atomically).

    Returns the document: ``{"machine", "command", "rows", "summary", **extra}``.
    """
    doc = {
        "machine": machine if machine is not None else machine_info(),
        "command": command if command is not None else command_line(),
        "rows": rows,
        "summary": summary,
        **extra,
    }
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(doc, indent=2, default=_plain) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        print(f"wrote {path}")
    return doc


def _plain(value: Any) -> Any:
    """JSON for numpy scalars and arrays."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
