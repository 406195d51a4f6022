"""``tinyodl bench train``: float training steps of the course's models beside PyTorch.

Chapters 00, 04, 09, 10 and 11 train many models, so the training step must keep pace.
For each (model, batch) of :data:`CONFIGS` this times one full step -- forward,
cross-entropy, backward, SGD with momentum 0.9 -- of the tinyodl model on the Cython backend
and, with torch installed, of its PyTorch twin (:func:`tinyodl.bench._torch.torch_model`),
interleaved in one process, single-threaded. Rows: ``train[].vs_torch`` (> 1: tinyodl is
faster), samples/s, wall-clock and thread-CPU seconds; ``--numpy`` adds the numpy
backend. ``--threads2`` also times ``cnn_mcmahan`` (batch 32) on two threads against one
(OpenMP and BLAS): summary ``threads2.train_speedup``, with the load average, since it
needs both cores.
"""

from __future__ import annotations

import argparse
import os
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

HELP = "training steps of the models vs PyTorch (samples/s, ratios, same process)"

#: (model builder in tinyodl.models, batch size) pairs of the issue.
CONFIGS: list[tuple[str, int]] = [
    ("cnn_mcmahan", 32),
    ("mcunet_tiny", 32),
    ("mcunet_tiny", 1),
    ("mlp_2nn", 10),
    ("lenet5", 64),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``tinyodl bench train`` (besides ``--json``, ``--quick``, ``--seed``)."""
    parser.add_argument("--repeats", type=int, default=15, help="timed steps per model")
    parser.add_argument("--numpy", action="store_true", help="also time the numpy backend")
    parser.add_argument(
        "--threads2", action="store_true",
        help="also time cnn_mcmahan on two threads (run on an idle machine)",
    )  # fmt: skip
    parser.add_argument(
        "--models", default=None, help="comma-separated model:batch pairs (default: all)"
    )


def batch_of(batch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A random MNIST-shaped batch: float32 (batch, 1, 28, 28) in [0, 1) and labels."""
    rng = np.random.default_rng(seed)
    return rng.random((batch, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, batch)


def tinyodl_step(name: str, x: np.ndarray, y: np.ndarray, seed: int = 0) -> Callable[[], None]:
    """One SGD-momentum training step of ``tinyodl.models.<name>`` on (x, y)."""
    from tinyodl import models
    from tinyodl.nn import SGD, softmax_cross_entropy

    model = getattr(models, name)(seed=seed)
    # the input is data: no dL/dx for the first layer (PyTorch's step skips it too)
    first = next(layer for _, layer in model.named_layers() if not layer.children())
    first.needs_input_grad = False
    opt = SGD(model, lr=0.01, momentum=0.9)

    def step() -> None:
        opt.zero_grad()
        _, dlogits = softmax_cross_entropy(model.forward(x, train=True), y)
        model.backward(dlogits)
        opt.step()

    return step


def _on_backend(name: str, fn: Callable[[], None]) -> Callable[[], None]:
    from tinyodl import backend

    def call() -> None:
        with backend.use_backend(name):
            fn()

    return call


def bench_train(
    configs: list[tuple[str, int]] | None = None,
    repeats: int = 15,
    seed: int = 0,
    numpy_backend: bool = False,
) -> list[dict[str, Any]]:
    """One row per (model, batch): tinyodl (Cython) vs PyTorch training steps."""
    from threadpoolctl import threadpool_limits

    from tinyodl import backend
    from tinyodl._timing import interleaved_times
    from tinyodl.bench import _torch

    has_torch = _torch.torch_or_none() is not None
    # the compiled backend first (it is "tinyodl" in the rows); numpy after it if asked for
    names = [b for b in ("cython", "numpy") if b in backend.available_backends()]
    names = names if numpy_backend else names[:1]
    rows = []
    for model, batch in configs or CONFIGS:
        x, y = batch_of(batch, seed)
        fns = [_on_backend(b, tinyodl_step(model, x, y, seed)) for b in names]
        if has_torch:
            fns.append(_torch.torch_step(model, x, y, seed))
        backend.set_num_threads(1)
        with threadpool_limits(limits=1), _torch.torch_threads(1):
            times = interleaved_times(fns, repeats, warmup=2)
        ours = times[0]
        row: dict[str, Any] = dict(
            model=model, batch=batch, backend=names[0], tinyodl_s=ours["wall"],
            tinyodl_cpu_s=ours["cpu"], samples_per_s=batch / ours["wall"],
        )  # fmt: skip
        if numpy_backend and len(names) > 1:
            row.update(numpy_s=times[1]["wall"], vs_numpy=times[1]["wall"] / ours["wall"])
        if has_torch:
            tt = times[-1]
            row.update(
                torch_s=tt["wall"], torch_cpu_s=tt["cpu"],
                torch_samples_per_s=batch / tt["wall"], vs_torch=tt["wall"] / ours["wall"],
                vs_torch_cpu=tt["cpu"] / ours["cpu"],
            )  # fmt: skip
        rows.append(row)
    return rows


def bench_train_threads(
    model: str = "cnn_mcmahan", batch: int = 32, repeats: int = 9, seed: int = 0
) -> dict[str, Any]:
    """Wall-clock speedup of the training step on two threads over one (and PyTorch's)."""
    from threadpoolctl import threadpool_limits

    from tinyodl import backend
    from tinyodl._timing import interleaved_times
    from tinyodl.bench import _torch

    x, y = batch_of(batch, seed)
    step = _on_backend("cython", tinyodl_step(model, x, y, seed))
    torch_step = _torch.torch_step(model, x, y, seed) if _torch.torch_or_none() else None

    def with_threads(fn: Callable[[], None], n: int) -> Callable[[], None]:
        def call() -> None:
            backend.set_num_threads(n)
            with threadpool_limits(limits=n), _torch.torch_threads(n):
                fn()
            backend.set_num_threads(1)

        return call

    fns = [with_threads(step, 1), with_threads(step, 2)]
    if torch_step is not None:
        fns += [with_threads(torch_step, 1), with_threads(torch_step, 2)]
    load_before = os.getloadavg()[0]
    times = interleaved_times(fns, repeats, warmup=2)
    out = dict(
        model=model, batch=batch, one_thread_s=times[0]["wall"],
        two_threads_s=times[1]["wall"], train_speedup=times[0]["wall"] / times[1]["wall"],
        load_average_before=load_before, load_average_after=os.getloadavg()[0],
        cores=os.cpu_count(),
    )  # fmt: skip
    if torch_step is not None:
        out["torch_speedup"] = times[2]["wall"] / times[3]["wall"]
    return out


def _configs(text: str | None) -> list[tuple[str, int]] | None:
    if not text:
        return None
    pairs = []
    for item in text.split(","):
        name, _, batch = item.strip().partition(":")
        pairs.append((name, int(batch) if batch else 32))
    return pairs


def main(args: argparse.Namespace) -> int:
    """CLI entry of ``tinyodl bench train``."""
    from tinyodl.bench._common import machine_info, write_results

    configs = _configs(args.models) or CONFIGS
    repeats = max(1, args.repeats)
    if args.quick:  # a smoke run: two small configurations, one timed step each
        configs, repeats = [(m, min(b, 2)) for m, b in configs[:2]], 1
    load = os.getloadavg()[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        rows = bench_train(configs, repeats, args.seed, numpy_backend=args.numpy)
        summary: dict[str, Any] = {
            "train": [
                {
                    k: r.get(k)
                    for k in (
                        "model",
                        "batch",
                        "vs_torch",
                        "vs_torch_cpu",
                        "samples_per_s",
                        "torch_samples_per_s",
                    )
                }  # fmt: skip
                for r in rows
            ]
        }
        if args.threads2:
            t2 = bench_train_threads(batch=2 if args.quick else 32, repeats=repeats, seed=args.seed)
            rows.append({"group": "threads2", **t2})
            summary["threads2"] = {
                k: t2.get(k)
                for k in (
                    "train_speedup",
                    "torch_speedup",
                    "load_average_before",
                    "load_average_after",
                )  # fmt: skip
            }
    for r in summary["train"]:
        vs = "-" if r["vs_torch"] is None else f"{r['vs_torch']:.2f}"
        print(f"train {r['model']:<12} batch {r['batch']:<3} {r['samples_per_s']:8.0f} samples/s"
              f"  vs_torch {vs}")  # fmt: skip
    if "threads2" in summary:
        t2 = summary["threads2"]
        print(f"two threads: cnn_mcmahan step speedup {t2['train_speedup']:.2f}x "
              f"(load average {t2['load_average_before']:.2f})")  # fmt: skip
    rows = [{"group": r.pop("group", "train"), **r} for r in rows]
    machine = {**machine_info(threads=1), "load_average_1min": load}
    write_results(args.json_path, rows, summary, machine=machine)
    return 0
