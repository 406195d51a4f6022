"""Measured memory: peak bytes of a call, traced with :mod:`tracemalloc`.

numpy registers every array data buffer with :mod:`tracemalloc` (in its own trace domain),
so while tracing is on, the bytes of each array allocated in Python *and* the array object
itself are counted, exactly like any other Python allocation. This lets us *measure* the
memory a training step needs instead of guessing it.

Semantics, stated once and used everywhere in :mod:`tinyodl.memory`:

* Only allocations made **while tracing is on** are seen. Arrays that already existed when
  the measurement started (the model's parameters, the input batch) are *not* in the
  numbers: they form the resident baseline, which you read from array sizes.
* ``peak_bytes`` is the highest traced total during the call **minus** the traced total at the
  start (the baseline). It is the extra memory the call needed at its worst moment.
* ``retained_bytes`` is the traced total at the end minus the baseline: what the call left
  allocated (its result, caches, lazily created buffers).
* Memory allocated by C code with plain ``malloc`` (e.g. scratch buffers inside a compiled
  kernel) is invisible to tracemalloc; memory from ``np.empty`` inside Cython is visible.
* Garbage is collected (``gc.collect()``) when a measurement starts, so that objects that
  died before it are not freed in the middle of it.
* If tracing is already on when a measurement starts, it is left on afterwards; the
  measurement still resets the peak (``tracemalloc.reset_peak``), so an enclosing probe
  loses its own peak. Do not nest probes.

Chapter 00 (foundations), section "measured memory".
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class MeasuredMemory:
    """Result of :func:`measure_peak`.

    Attributes
    ----------
    peak_bytes : int
        Highest traced memory during the call, above the baseline at the call.
    retained_bytes : int
        Traced memory after the call, above the baseline (can be negative if the call freed
        memory that was allocated while tracing was already on).
    baseline_bytes : int
        Traced memory when the call started (0 unless tracing was already on).
    result : Any
        Whatever the measured function returned (kept alive, so it is part of
        ``retained_bytes``).
    """

    peak_bytes: int
    retained_bytes: int
    baseline_bytes: int
    result: Any = None

    def __str__(self) -> str:
        return (
            f"MeasuredMemory(peak={format_bytes(self.peak_bytes)}, "
            f"retained={format_bytes(self.retained_bytes)})"
        )


@dataclass
class Phase:
    """One phase between two :meth:`MemoryProbe.checkpoint` calls.

    All byte counts are relative to the probe's baseline (traced memory when it started).

    Attributes
    ----------
    name : str
        Name given to :meth:`MemoryProbe.checkpoint`.
    start_bytes, end_bytes : int
        Traced memory above the baseline at the start and at the end of the phase.
    peak_bytes : int
        Highest traced memory above the baseline during the phase.
    """

    name: str
    start_bytes: int
    end_bytes: int
    peak_bytes: int

    @property
    def transient_bytes(self) -> int:
        """How far the phase rose above where it started (its own working memory)."""
        return self.peak_bytes - self.start_bytes

    @property
    def net_bytes(self) -> int:
        """Memory the phase left allocated (end minus start)."""
        return self.end_bytes - self.start_bytes


@dataclass
class MemoryProbe:
    """Context manager that traces allocations and splits them into named phases.

    Examples
    --------
    >>> import numpy as np
    >>> with MemoryProbe() as probe:
    ...     a = np.ones(250_000, dtype=np.float32)      # 1 MB
    ...     _ = probe.checkpoint("allocate")
    ...     del a
    ...     _ = probe.checkpoint("free")
    >>> probe.phases[0].net_bytes >= 1_000_000
    True
    >>> probe.phases[1].net_bytes < -990_000
    True

    Notes
    -----
    See the module docstring for what tracemalloc sees. After the ``with`` block,
    ``peak_bytes`` is the highest traced memory above the baseline over all phases, including
    the part after the last checkpoint (recorded as phase ``"end"`` if anything happened).
    """

    phases: list[Phase] = field(default_factory=list)
    baseline_bytes: int = 0
    peak_bytes: int = 0
    retained_bytes: int = 0
    _started_tracing: bool = False
    _active: bool = False
    _phase_start: int = 0

    def __enter__(self) -> MemoryProbe:
        if self._active:
            raise RuntimeError("MemoryProbe: this probe is already running; use a new one")
        gc.collect()  # free garbage now, not in the middle of the measurement
        self._started_tracing = not tracemalloc.is_tracing()
        if self._started_tracing:
            tracemalloc.start()
        self.phases = []
        self.peak_bytes = 0
        self.baseline_bytes = tracemalloc.get_traced_memory()[0]
        self._phase_start = 0
        self._active = True
        tracemalloc.reset_peak()
        return self

    def _read(self) -> tuple[int, int]:
        current, peak = tracemalloc.get_traced_memory()
        return current - self.baseline_bytes, peak - self.baseline_bytes

    def checkpoint(self, name: str) -> Phase:
        """Close the current phase under ``name`` and start the next one.

        Returns
        -------
        Phase
            The phase just closed.
        """
        if not self._active:
            raise RuntimeError("MemoryProbe.checkpoint: call it inside the `with` block")
        current, peak = self._read()
        phase = Phase(name, self._phase_start, current, max(peak, self._phase_start))
        self.phases.append(phase)
        self.peak_bytes = max(self.peak_bytes, phase.peak_bytes)
        tracemalloc.reset_peak()
        self._phase_start = current
        return phase

    def __exit__(self, *exc_info: object) -> None:
        current, peak = self._read()
        if not self.phases or current != self._phase_start or peak > self._phase_start:
            self.peak_bytes = max(self.peak_bytes, peak)
            if self.phases:
                self.phases.append(Phase("end", self._phase_start, current, peak))
        self.retained_bytes = current
        self._active = False
        if self._started_tracing:
            tracemalloc.stop()

    def phase(self, name: str) -> Phase:
        """The recorded phase called ``name``."""
        for phase in self.phases:
            if phase.name == name:
                return phase
        names = [p.name for p in self.phases]
        raise KeyError(f"MemoryProbe.phase: no phase {name!r}; recorded phases are {names}")


def measure_peak(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> MeasuredMemory:
    """Call ``fn(*args, **kwargs)`` and measure the peak memory it allocated.

    Parameters
    ----------
    fn : callable
        The function to measure.
    *args, **kwargs
        Passed to ``fn``. They are allocated before tracing starts, so they are not counted.

    Returns
    -------
    MeasuredMemory
        ``peak_bytes`` above the baseline at the call, ``retained_bytes`` still allocated
        after it, and ``result``, the return value of ``fn``.

    Notes
    -----
    tracemalloc sees only what is allocated while it runs; see the module docstring.
    Python object headers are counted too (about 100 bytes per ndarray), so a measurement
    of a single large array is a little above ``arr.nbytes``.

    Examples
    --------
    >>> import numpy as np
    >>> m = measure_peak(np.zeros, (1000, 1000), dtype=np.float64)
    >>> 8_000_000 <= m.peak_bytes < 8_010_000
    True
    """
    if not callable(fn):
        raise TypeError(f"measure_peak: fn must be callable, got {type(fn).__name__}")
    probe = MemoryProbe()
    with probe:
        result = fn(*args, **kwargs)
    return MeasuredMemory(
        peak_bytes=probe.peak_bytes,
        retained_bytes=probe.retained_bytes,
        baseline_bytes=probe.baseline_bytes,
        result=result,
    )


def format_bytes(n: float) -> str:
    """Human-readable size with binary prefixes, e.g. ``format_bytes(1536) == '1.5 KiB'``."""
    sign = "-" if n < 0 else ""
    value = float(abs(n))
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{sign}{value:.0f} {unit}" if unit == "B" else f"{sign}{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
