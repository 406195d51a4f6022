"""The trigger policy: *when* to adapt on the device, and *which* method to run.

A detector's alarm alone is not enough to adapt: the device needs labelled examples of the
new data, and it can store only so many (chapter 07's storage budget). And the method must
fit the device's training memory (the demo's measured peaks, chapters 03-12).

* :class:`LabelBuffer` -- the labelled examples kept for adaptation: a FIFO of at most
  ``budget_bytes // bytes_per_example`` images, stored with ``bits`` bits per pixel
  (:mod:`tinyodl.data_compression.lowbit`; 8 bits = the raw uint8 pixels).
* :class:`TriggerPolicy` -- an alarm *arms* the trigger and empties the buffer (what it
  held describes the old data); labels that arrive afterwards fill it; once it holds
  ``min_examples`` the device adapts and the trigger disarms. An alarm while armed empties
  the buffer again (the data are still changing).
* :func:`choose_method` -- the most accurate method whose peak training memory fits the
  budget (ties: the smaller peak), from :func:`demo_costs` (``benchmarks/results/demo.json``).
"""

from __future__ import annotations

import json
import math
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from tinyodl.data_compression.lowbit import BITS, dequantize, quantize

__all__ = [
    "LABEL_BYTES",
    "LabelBuffer",
    "TriggerPolicy",
    "adaptation_steps",
    "bytes_per_example",
    "choose_method",
    "demo_costs",
]

LABEL_BYTES = 1
DEMO_RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "demo.json"


def bytes_per_example(pixels: int = 784, bits: int = 8) -> int:
    """Stored bytes of one labelled image: ``ceil(pixels * bits / 8)`` + one label byte."""
    if bits not in BITS:
        raise ValueError(f"bytes_per_example: bits must be one of {BITS}, got {bits}")
    return math.ceil(pixels * bits / 8) + LABEL_BYTES


class LabelBuffer:
    """At most ``budget_bytes`` of labelled images, oldest dropped first.

    Parameters
    ----------
    budget_bytes : int
        Storage for adaptation data (chapter 07's budget).
    bits : {1, 2, 4, 8}, default 8
        Bits per pixel of the stored images (:func:`tinyodl.data_compression.lowbit.quantize`).
    pixels : int, default 784
    """

    def __init__(self, budget_bytes: int, bits: int = 8, pixels: int = 784) -> None:
        self.per_example = bytes_per_example(pixels, bits)
        self.capacity = int(budget_bytes) // self.per_example
        if self.capacity < 1:
            raise ValueError(
                f"LabelBuffer: a budget of {budget_bytes} bytes holds no example "
                f"({self.per_example} bytes each at {bits} bits per pixel)"
            )
        self.bits, self.pixels, self.budget_bytes = bits, pixels, int(budget_bytes)
        self._items: deque = deque(maxlen=self.capacity)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        """Bytes the stored examples take on the device."""
        return len(self._items) * self.per_example

    def add(self, image: np.ndarray, label: int) -> None:
        """Store one image (values in [0, 1], ``pixels`` of them) and its label."""
        image = np.asarray(image, dtype=np.float32)
        if image.size != self.pixels:
            raise ValueError(f"LabelBuffer.add: expected {self.pixels} pixels, got {image.size}")
        self._items.append((quantize(image.ravel(), self.bits), int(label), image.shape))

    def clear(self) -> None:
        self._items.clear()

    def data(self) -> tuple[np.ndarray, np.ndarray]:
        """The stored examples decoded: float32 images (N, *shape) and int64 labels (N,)."""
        if not self._items:
            raise ValueError("LabelBuffer.data: the buffer is empty")
        shape = self._items[0][2]
        x = np.stack([dequantize(q, self.bits).reshape(shape) for q, _, _ in self._items])
        y = np.array([label for _, label, _ in self._items], dtype=np.int64)
        return x, y


class TriggerPolicy:
    """Adapt once an alarm has been followed by ``min_examples`` buffered labels.

    Call :meth:`step` once per stream step with whether a detector fired and how many
    labels arrived; it returns ``True`` when the device should adapt now (on the buffer's
    content; the caller then calls :meth:`adapted`).

    Parameters
    ----------
    min_examples : int
        Labelled examples needed to adapt (<= the buffer's capacity).
    capacity : int
        The buffer's capacity (:attr:`LabelBuffer.capacity`).
    """

    def __init__(self, min_examples: int, capacity: int) -> None:
        if not 1 <= int(min_examples) <= int(capacity):
            raise ValueError(
                f"TriggerPolicy: need 1 <= min_examples <= capacity, got {min_examples} "
                f"and a buffer of {capacity} examples; raise the storage budget or lower "
                "min_examples"
            )
        self.min_examples, self.capacity = int(min_examples), int(capacity)
        self.armed = False
        self.buffered = 0

    def step(self, alarm: bool, new_labels: int = 0) -> bool:
        """One step: ``alarm`` (any detector fired), ``new_labels`` arrived; adapt now?"""
        if new_labels < 0:
            raise ValueError(f"TriggerPolicy.step: new_labels must be >= 0, got {new_labels}")
        if alarm:
            self.armed, self.buffered = True, 0
        if self.armed:
            self.buffered = min(self.capacity, self.buffered + int(new_labels))
        return self.armed and self.buffered >= self.min_examples

    def adapted(self) -> None:
        """The device adapted: disarm and start a new buffer."""
        self.armed, self.buffered = False, 0


def adaptation_steps(alarms, labels, min_examples: int, capacity: int) -> np.ndarray:
    """The steps at which :class:`TriggerPolicy` adapts, given per-step alarms and labels.

    ``alarms``: bool (T,); ``labels``: int (T,) labels arriving at each step. Returns int64.
    """
    alarms, labels = np.asarray(alarms, dtype=bool), np.asarray(labels, dtype=np.int64)
    if alarms.shape != labels.shape or alarms.ndim != 1:
        raise ValueError(
            f"adaptation_steps: alarms and labels must be 1-D of one length, got "
            f"{alarms.shape} and {labels.shape}"
        )
    policy, out = TriggerPolicy(min_examples, capacity), []
    for t, (alarm, n) in enumerate(zip(alarms, labels, strict=True)):
        if policy.step(bool(alarm), int(n)):
            out.append(t)
            policy.adapted()
    return np.array(out, dtype=np.int64)


def choose_method(costs: dict[str, dict[str, float]], budget_bytes: float) -> str | None:
    """The method to run under a training-memory budget.

    Parameters
    ----------
    costs : dict
        ``{method: {"peak_bytes": ..., "accuracy": ...}}`` (e.g. :func:`demo_costs`).
    budget_bytes : float

    Returns
    -------
    str or None
        The most accurate method with ``peak_bytes <= budget_bytes`` (ties: the smaller
        peak, then the name); ``None`` if none fits.
    """
    fits = [
        (-float(c["accuracy"]), float(c["peak_bytes"]), name)
        for name, c in costs.items()
        if float(c["peak_bytes"]) <= budget_bytes
    ]
    return min(fits)[2] if fits else None


def demo_costs(
    path: str | Path | None = None, peak: str = "peak_train_bytes_measured"
) -> dict[str, dict[str, Any]]:
    """Each demo method's peak training memory and accuracy from the demo's results.

    ``path`` defaults to the committed ``benchmarks/results/demo.json`` (``tinyodl demo``);
    ``peak`` chooses the measured (default) or the analytic column.
    """
    path = DEMO_RESULTS if path is None else Path(path)
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        rows = doc["rows"]
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"demo_costs: cannot read the demo's results from {path}: {err}") from err
    return {
        r["method"]: {"peak_bytes": int(r[peak]), "accuracy": float(r["accuracy"])}
        for r in rows
        if r.get("accuracy") is not None and peak in r
    }
