"""What a streaming learner costs: model bytes, memory per update (measured), time per example.

* :func:`model_bytes` reads the size of the learned state from the arrays themselves;
* :func:`measure_update_memory` runs ``partial_fit`` on consecutive batches of a stream and
  measures each call with :mod:`tracemalloc` (as :func:`tinyodl.memory.measure_peak`): the
  *peak* is the working memory of one update, the *retained* bytes what the update left
  allocated once the garbage collector has run. For a constant-memory learner the peak
  does not grow along the stream and nothing is retained after the first call (which
  allocates the model);
* :func:`time_updates` is the wall-clock time per example of one pass (report it as a ratio
  to a baseline timed in the same process).

Chapter 01 (classic on-device learners).
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from dataclasses import dataclass
from typing import Any

import numpy as np


def model_bytes(model: Any) -> int:
    """Bytes of a model's learned state.

    Parameters
    ----------
    model : estimator of :mod:`tinyodl.classic` or tinyodl.nn.Layer
        For an estimator: every ndarray attribute whose name ends in ``_`` (the learned
        attributes). For a network: its parameters and buffers (e.g. batchnorm statistics).

    Returns
    -------
    int
    """
    if hasattr(model, "named_parameters"):
        params = sum(p.data.nbytes for p in model.parameters())
        return int(params + sum(b.nbytes for _, b in model.named_buffers()))
    return int(
        sum(
            v.nbytes
            for k, v in vars(model).items()
            if k.endswith("_") and not k.startswith("_") and isinstance(v, np.ndarray)
        )
    )


@dataclass
class UpdateMemory:
    """Result of :func:`measure_update_memory`, one entry per ``partial_fit`` call.

    Attributes
    ----------
    peak_bytes : ndarray of int (n_updates,)
        Highest traced memory during the call, above what existed before it.
    retained_bytes : ndarray of int (n_updates,)
        Memory the call left allocated (the model, on the first call). Only the young
        garbage is collected after each call, so a few hundred bytes of interpreter free
        lists (floats, tuples) can show up here.
    stream_retained_bytes : int
        Memory still allocated after all updates but the first, once everything is
        collected: 0 for a constant-memory learner.
    batch_size : int
    model_bytes : int
        :func:`model_bytes` after the last update.
    """

    peak_bytes: np.ndarray
    retained_bytes: np.ndarray
    stream_retained_bytes: int
    batch_size: int
    model_bytes: int


def _batches(X: np.ndarray, y: np.ndarray, batch_size: int, n_updates: int | None):
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    starts = range(0, len(X), batch_size)
    if n_updates is not None:
        starts = starts[:n_updates]
    for s in starts:
        yield X[s : s + batch_size], y[s : s + batch_size]


def measure_update_memory(
    estimator: Any,
    X: np.ndarray,
    y: np.ndarray,
    classes: Any,
    batch_size: int = 1,
    n_updates: int | None = None,
) -> UpdateMemory:
    """Stream ``(X, y)`` into ``estimator.partial_fit`` and measure every call.

    Parameters
    ----------
    estimator : an estimator with ``partial_fit(X, y, classes=...)``
        Updated in place (continue its stream, or pass a fresh one).
    X : ndarray (N, D); y : ndarray (N,)
    classes : array_like
        Passed on every call.
    batch_size : int, default 1
        Examples per update.
    n_updates : int, optional
        Stop after this many updates.

    Returns
    -------
    UpdateMemory
    """
    X, y = np.asarray(X), np.asarray(y)
    batches = list(_batches(X, y, batch_size, n_updates))  # views, made before tracing
    peaks = np.zeros(len(batches), dtype=np.int64)
    kept = np.zeros(len(batches), dtype=np.int64)
    started = not tracemalloc.is_tracing()
    gc.collect()  # old garbage must not be freed in the middle of a measurement
    if started:
        tracemalloc.start()
    try:
        for i, (xb, yb) in enumerate(batches):
            if i == 1:  # the model exists now: the rest of the stream must not add to it
                gc.collect()
                after_first = tracemalloc.get_traced_memory()[0]
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            estimator.partial_fit(xb, yb, classes=classes)
            gc.collect(0)  # young garbage only (fast)
            current, peak = tracemalloc.get_traced_memory()
            peaks[i], kept[i] = peak - before, current - before
        gc.collect()  # also empties the interpreter's free lists
        stream = tracemalloc.get_traced_memory()[0] - after_first if len(batches) > 1 else 0
    finally:
        if started:
            tracemalloc.stop()
    return UpdateMemory(
        peak_bytes=peaks,
        retained_bytes=kept,
        stream_retained_bytes=int(stream),
        batch_size=batch_size,
        model_bytes=model_bytes(estimator),
    )


def time_updates(
    estimator: Any, X: np.ndarray, y: np.ndarray, classes: Any, batch_size: int = 1
) -> float:
    """Seconds per example of one pass of ``partial_fit`` over ``(X, y)`` (wall clock).

    The estimator is updated in place. Compare the result with a baseline timed in the same
    process; absolute times depend on the machine and its load.
    """
    X, y = np.asarray(X), np.asarray(y)
    start = time.perf_counter()
    for xb, yb in _batches(X, y, batch_size, None):
        estimator.partial_fit(xb, yb, classes=classes)
    return (time.perf_counter() - start) / max(len(X), 1)
