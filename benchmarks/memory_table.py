"""Measured vs analytic training memory: the table in docs/memory.md.

    python benchmarks/memory_table.py

For each backend, model and batch size: one warm-up SGD-momentum step (so gradients and
momentum exist, the steady state of ``tinyodl.train.fit``), then one step measured with
tracemalloc (``measure_training_step``) next to ``analytic_training_memory``.
"""

from __future__ import annotations

import numpy as np

from tinyodl import backend, models
from tinyodl.memory import analytic_training_memory, measure_training_step
from tinyodl.nn import SGD


def row(backend_name: str, model_name: str, batch: int) -> str:
    rng = np.random.default_rng(0)
    x = rng.random((batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, size=batch)
    with backend.use_backend(backend_name):
        model = getattr(models, model_name)(seed=0)
        opt = SGD(model, lr=0.01, momentum=0.9)
        measure_training_step(model, opt, x, y)  # warm-up
        m = measure_training_step(model, opt, x, y)
        a = analytic_training_memory(model, x.shape[1:], batch, optimizer=opt)
    total = (a.total_peak_bytes - m.total_peak_bytes) / m.total_peak_bytes
    step = (a.peak_bytes - m.peak_bytes) / m.peak_bytes
    return (
        f"| {backend_name} | {model_name} | {batch} | {m.total_peak_bytes:,} | "
        f"{a.total_peak_bytes:,} | {100 * total:+.2f}% | {m.peak_bytes:,} | {a.peak_bytes:,} | "
        f"{100 * step:+.2f}% |"
    )


def main() -> None:
    print(
        "| backend | model | N | measured total | analytic total | error "
        "| measured step peak | analytic step peak | error |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in backend.available_backends():
        for model_name in ("mlp_2nn", "lenet5", "cnn_mcmahan"):
            for batch in (8, 32):
                print(row(name, model_name, batch))


if __name__ == "__main__":
    main()
