"""Training memory, measured and predicted (chapter 00, foundations).

* :func:`measure_peak`, :class:`MemoryProbe` -- trace real allocations with tracemalloc
  (:mod:`tinyodl.memory.measure`);
* :func:`measure_training_step` -- one training step, phase by phase, with the memory split
  into parameters, gradients, optimizer state, activations and scratch
  (:mod:`tinyodl.memory.training`);
* :func:`analytic_training_memory`, :func:`compare` -- the same split predicted layer by
  layer from shapes alone (:mod:`tinyodl.memory.analytic`);
* :func:`plot_memory_breakdown` -- stacked bars of the categories (:mod:`tinyodl.memory.plot`).

What is measured and what is read from array sizes, the per-layer rules and the accuracy of
the model (within a few percent; the tests hold it to 10%) are in ``docs/memory.md``.
"""

from tinyodl.memory.analytic import AnalyticMemory, analytic_training_memory, compare
from tinyodl.memory.measure import MeasuredMemory, MemoryProbe, Phase, format_bytes, measure_peak
from tinyodl.memory.plot import plot_memory_breakdown
from tinyodl.memory.training import CATEGORIES, TrainingMemoryReport, measure_training_step

__all__ = [
    "CATEGORIES",
    "AnalyticMemory",
    "MeasuredMemory",
    "MemoryProbe",
    "Phase",
    "TrainingMemoryReport",
    "analytic_training_memory",
    "compare",
    "format_bytes",
    "measure_peak",
    "measure_training_step",
    "plot_memory_breakdown",
]
