"""``tinyodl bench dpmemory``: the memory of per-example gradients against ghost clipping.

Chapter 10 (:mod:`tinyodl.privacy.memory`). For three networks -- Abadi et al.'s MNIST MLP
(60-1000-10, lot 600), ``cnn_mcmahan`` and ``mcunet_tiny`` (batchnorms frozen in evaluation
mode) at batch 64 -- two kinds of rows:

* ``kind="layer"``: per trainable layer, the bytes of its per-example gradients and of its
  ghost norms, each measured with tracemalloc and predicted by the analytic model;
* ``kind="step"``: the peak of one whole clipped sum (forward, backward, norms, clipped sums)
  by each method, measured, with the largest difference between the two methods' sums.

The summary gives each network's saving (per-example peak / ghost peak). Single-threaded.
"""

from __future__ import annotations

from typing import Any

import numpy as np

HELP = "memory of DP-SGD: per-example gradients vs ghost clipping, measured and analytic"


def add_arguments(parser) -> None:
    parser.add_argument("--batch", type=int, default=64, help="batch of the CNNs (default 64)")


def _networks(batch: int, quick: bool, seed: int):
    from tinyodl import models, nn

    rng = np.random.default_rng(seed)
    mlp = nn.Sequential(
        [nn.Linear(60, 1000, seed=seed), nn.ReLU(), nn.Linear(1000, 10, seed=seed + 1)]
    )
    n_mlp = 120 if quick else 600
    yield "abadi_mlp", mlp, rng.standard_normal((n_mlp, 60)).astype(np.float32), n_mlp
    n = 8 if quick else batch
    images = rng.random((n, 1, 28, 28), dtype=np.float32)
    yield "cnn_mcmahan", models.cnn_mcmahan(seed=seed), images, n
    mcu = models.mcunet_tiny(seed=seed)
    frozen = [name for name, layer in mcu.named_layers() if isinstance(layer, nn.BatchNorm2d)]
    mcu.freeze(*frozen)
    for name in frozen:
        mcu[name].eval()
    yield "mcunet_tiny", mcu, images, n


def run(batch: int = 64, quick: bool = False, seed: int = 0) -> tuple[list[dict], dict]:
    """Measure every network; returns ``(rows, summary)``."""
    from tinyodl.privacy import memory

    rows, summary = [], {}
    for name, model, x, n in _networks(batch, quick, seed):
        y = np.random.default_rng(seed).integers(0, 10, n)
        for r in memory.layer_memory_table(model, x, y):
            rows.append({"kind": "layer", "network": name, **r})
        step = {
            c: memory.measure_clipping_step(model, x, y, c, clip_norm=1.0)
            for c in ("per_example", "ghost")
        }
        diff = max(
            float(
                np.max(np.abs(step["ghost"]["sums"][k] - v)) / max(float(np.max(np.abs(v))), 1e-30)
            )
            for k, v in step["per_example"]["sums"].items()
        )
        for c, result in step.items():
            rows.append(
                {
                    "kind": "step",
                    "network": name,
                    "clipping": c,
                    "batch_size": n,
                    "peak_bytes": result["peak_bytes"],
                    "max_rel_diff_of_sums": diff,
                }
            )
        saving = step["per_example"]["peak_bytes"] / step["ghost"]["peak_bytes"]
        summary[name] = {
            "batch_size": n,
            "per_example_peak_bytes": step["per_example"]["peak_bytes"],
            "ghost_peak_bytes": step["ghost"]["peak_bytes"],
            "saving": saving,
            "max_rel_diff_of_sums": diff,
        }
        mib = {c: r["peak_bytes"] / 2**20 for c, r in step.items()}
        print(
            f"{name:>12}  batch {n:4d}  per-example {mib['per_example']:8.1f} MiB"
            f"  ghost {mib['ghost']:7.1f} MiB  saving {saving:5.1f}x"
            f"  sums differ by {diff:.1e} (relative)"
        )
    return rows, summary


def main(args) -> int:
    from threadpoolctl import threadpool_limits

    from tinyodl import backend
    from tinyodl.bench._common import machine_info, write_results

    backend.set_num_threads(1)
    with threadpool_limits(1):
        rows, summary = run(args.batch, args.quick, args.seed)
    summary["backend"] = backend.get_backend()
    write_results(args.json_path, rows, summary, machine=machine_info(threads=1))
    return 0


__all__: list[Any] = ["run"]
