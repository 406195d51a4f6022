"""``tinyodl bench NAME``: the benchmarks behind every speed, memory and accuracy figure.

Each public module of this package is one sub-command (``tinyodl/bench/kernels.py`` is
``tinyodl bench kernels``). A benchmark module defines

* ``HELP`` -- one line for ``tinyodl bench --help``;
* ``add_arguments(parser)`` -- its own options (on top of the common ``--json``,
  ``--quick`` and ``--seed``, added by :func:`tinyodl.bench._common.add_common_arguments`);
* ``main(args) -> int`` -- runs it, prints a summary and, with ``--json FILE``, writes
  ``{"machine", "command", "rows", "summary"}`` (:func:`tinyodl.bench._common.write_results`).

Modules whose name starts with ``_`` are helpers, not commands. Speed is always reported as a
ratio against a baseline measured in the same process, with the CPU beside it
(:func:`tinyodl.bench._common.machine_info`); the tests never assert timings.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def benchmark_names() -> list[str]:
    """The sub-commands: every public module of :mod:`tinyodl.bench`, sorted."""
    return sorted(
        info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_")
    )


def load_benchmark(name: str) -> ModuleType:
    """Import the module of ``tinyodl bench NAME``."""
    if name not in benchmark_names():
        raise ValueError(f"unknown benchmark {name!r}; choose from {', '.join(benchmark_names())}")
    return importlib.import_module(f"tinyodl.bench.{name}")


__all__ = ["benchmark_names", "load_benchmark"]
