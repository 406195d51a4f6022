"""Training memory, measured and predicted (chapter 00, foundations).

* :mod:`tinyodl.memory.measure` -- :func:`measure_peak` and :class:`MemoryProbe` trace real
  allocations with :mod:`tracemalloc`.
"""

from tinyodl.memory.measure import MeasuredMemory, MemoryProbe, Phase, format_bytes, measure_peak

__all__ = ["MeasuredMemory", "MemoryProbe", "Phase", "format_bytes", "measure_peak"]
