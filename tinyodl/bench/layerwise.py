"""``tinyodl bench layerwise``: accuracy against measured peak training memory.

Chapter 05's headline figures, on MNIST (the shipped subset by default, 10% of its training
images held out for validation; ``--data FOLDER`` for the full MNIST), all with the same
four-block CNN (:func:`tinyodl.layerwise.conv_blocks`) and SGD + momentum, cosine schedule:

* ``end_to_end``: the blocks and the last head trained together for ``--epochs`` epochs;
* ``layerwise``: greedy block-wise training, ``--epochs`` epochs per block (Belilovsky et
  al. 2019); one row per stage (the test accuracy of that stage's head);
* ``head_only_random``: forward-only -- a head on frozen random blocks (batchnorm statistics
  set from data, forward only);
* ``head_only_pretrained``: a head on frozen features pretrained on digits 0-4 (the shipped
  ``mcunet_tiny`` when tinyodl ships it, else blocks pretrained here: the row says which).

Memory is one steady-state training step at the training batch size, measured with
tracemalloc (:func:`tinyodl.memory.measure_training_step`) beside the analytic model
(:func:`tinyodl.memory.analytic_training_memory`, and
:func:`tinyodl.layerwise.analytic_stage_memory` for a stage with a frozen prefix).
``--plot FILE`` draws test accuracy against measured peak memory.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

HELP = "layer-wise training: accuracy vs measured training memory (end-to-end, greedy, head-only)"


def _data(quick: bool, path: str | None, seed: int):
    from tinyodl.data import load_mnist, to_float, train_val_split

    images, labels = load_mnist("train", path=path)
    test_images, test_labels = load_mnist("test", path=path)
    x, y = to_float(images), labels.astype(np.int64)
    x_test, y_test = to_float(test_images), test_labels.astype(np.int64)
    if quick:  # a random slice (every class is in it)
        keep = np.sort(np.random.default_rng(seed).permutation(len(x))[:1000])
        x, y = x[keep], y[keep]
        x_test, y_test = x_test[:500], y_test[:500]
    x_tr, y_tr, x_val, y_val = train_val_split(x, y, 0.1, np.random.default_rng(seed))
    return x_tr, y_tr, x_val, y_val, x_test, y_test


def _measure(model: Any, x: np.ndarray, y: np.ndarray) -> Any:
    """Steady-state memory of one SGD + momentum step (a warm-up step first), restored."""
    from tinyodl.memory import measure_training_step
    from tinyodl.nn import SGD

    state = model.state_dict()
    opt = SGD(model, lr=0.0, momentum=0.9)
    measure_training_step(model, opt, x, y)
    report = measure_training_step(model, opt, x, y)
    model.load_state_dict(state)
    model.zero_grad(set_to_none=True)
    return report


def run(args: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Train and measure every method; returns (rows, summary)."""
    from tinyodl import layerwise as L
    from tinyodl.memory import analytic_training_memory
    from tinyodl.train import evaluate

    quick, seed, bs, lr = args.quick, args.seed, args.batch_size, args.lr
    epochs = 1 if quick else args.epochs
    x_tr, y_tr, x_val, y_val, x_te, y_te = _data(quick, args.data, seed)
    shape = x_tr.shape[1:]
    xb, yb = x_tr[:bs], y_tr[:bs]
    progress = not args.no_progress
    rows = []

    def row(method: str, model: Any, seconds: float, report: Any, predicted: int, **extra):
        acc = evaluate(model.eval(), x_te, y_te)[1]
        rows.append(
            {
                "method": method,
                "test_accuracy": acc,
                "train_seconds": seconds,
                "peak_bytes_measured": report.total_peak_bytes,
                "peak_bytes_analytic": predicted,
                "saved_activation_bytes": report.saved_new_bytes,
                "trainable_params": model.num_params(trainable_only=True),
                **extra,
            }
        )
        print(
            f"{method:<24} test accuracy {acc:.4f}  peak {report.total_peak_bytes / 2**20:6.2f} "
            f"MiB (analytic {predicted / 2**20:6.2f})  {seconds:6.1f} s"
        )

    # end to end
    blocks = L.conv_blocks(seed=seed)
    heads = L.heads_for(blocks, shape, seed=seed + 1)
    e2e = L.end_to_end_model(blocks, heads[-1])
    report = _measure(e2e, xb, yb)
    predicted = analytic_training_memory(e2e, shape, bs, "sgd_momentum").total_peak_bytes
    start = time.perf_counter()
    L.sgd_fit(e2e, x_tr, y_tr, epochs=epochs, batch_size=bs, seed=seed, lr=lr, progress=progress)
    row("end_to_end", e2e, time.perf_counter() - start, report, predicted, epochs=epochs)

    # greedy layer-wise
    blocks = L.conv_blocks(seed=seed)
    heads = L.heads_for(blocks, shape, seed=seed + 1)
    stage_memory = []
    for j in range(len(blocks)):
        stage = L.stage_model(blocks, heads, j)
        rep = _measure(stage, xb, yb)
        pred = L.analytic_stage_memory(blocks, heads, j, shape, bs, "sgd_momentum")
        stage_memory.append((rep, pred))
    for b in blocks:
        b.unfreeze()
    result = L.greedy_layerwise_fit(
        blocks, heads, x_tr, y_tr, epochs=epochs, batch_size=bs, seed=seed, lr=lr,
        x_val=x_val, y_val=y_val, progress=progress,
    )  # fmt: skip
    for j, stage in enumerate(result.stages):
        model = L.stage_model(blocks, heads, j)
        rep, pred = stage_memory[j]
        row(
            f"layerwise stage {j}",
            model,
            stage.seconds,
            rep,
            pred.total_peak_bytes,
            stage=j,
            val_accuracy=stage.val_accuracy,
            epochs=epochs,
            inference_peak_bytes_analytic=pred.inference_peak_bytes,
        )
    stages = [r for r in rows if r["method"].startswith("layerwise")]
    layerwise = {
        "test_accuracy": stages[-1]["test_accuracy"],
        "peak_bytes_measured": max(r["peak_bytes_measured"] for r in stages),
        "peak_bytes_analytic": max(r["peak_bytes_analytic"] for r in stages),
        "train_seconds": sum(r["train_seconds"] for r in stages),
        "stage_test_accuracy": [r["test_accuracy"] for r in stages],
    }

    # forward only: a head on frozen random blocks, then on pretrained features
    for name in ("head_only_random", "head_only_pretrained"):
        start = time.perf_counter()
        if name == "head_only_random":
            blocks = L.conv_blocks(seed=seed + 7)
            body = L.end_to_end_model(blocks, heads[-1])["features"]
            calibration = x_tr[:2000]
            L.recalibrate_batchnorm(body, calibration)
            source = (
                f"random conv_blocks (seed + 7), batchnorm statistics from "
                f"{len(calibration):,} images"
            )
        else:
            body, source = L.pretrained_body(
                x_tr, y_tr, epochs=epochs, batch_size=bs, seed=seed, lr=lr, progress=progress
            )
        pretrain_seconds = time.perf_counter() - start
        out_shape = body.output_shape((1, *shape))[1:]
        head = L.auxiliary_head(out_shape, seed=seed + 3)
        probe = L.Sequential({"frozen": L.Frozen(body), "head": head})
        rep = _measure(probe, xb, yb)
        start = time.perf_counter()
        model, _ = L.head_only_fit(
            body, head, x_tr, y_tr, epochs=epochs, batch_size=bs, seed=seed, lr=lr,
            progress=progress,
        )  # fmt: skip
        row(
            name,
            model,
            time.perf_counter() - start,
            rep,
            0,
            features=source,
            pretrain_seconds=pretrain_seconds,
            epochs=epochs,
        )
        rows[-1]["peak_bytes_analytic"] = None  # the shipped body may not be modelled
    e2e_row = rows[0]
    by = {r["method"]: r for r in rows}
    summary = {
        "end_to_end": {k: e2e_row[k] for k in ("test_accuracy", "peak_bytes_measured",
                                                "peak_bytes_analytic", "train_seconds")},
        "layerwise": layerwise,
        "memory_ratio_end_to_end_over_layerwise": (
            e2e_row["peak_bytes_measured"] / layerwise["peak_bytes_measured"]
        ),
        "saved_activations_ratio": e2e_row["saved_activation_bytes"]
        / max(r["saved_activation_bytes"] for r in stages),
        "head_only_random": {k: by["head_only_random"][k] for k in ("test_accuracy",
                                                                     "peak_bytes_measured")},
        "head_only_pretrained": {
            k: by["head_only_pretrained"][k]
            for k in ("test_accuracy", "peak_bytes_measured", "features")
        },
        "data": {"train": len(x_tr), "validation": len(x_val), "test": len(x_te),
                 "source": args.data or "shipped subset", "epochs": epochs, "batch_size": bs,
                 "lr": lr},
    }  # fmt: skip
    return rows, summary


COLORS = {
    "end_to_end": "C0",
    "layerwise": "C1",
    "head_only_random": "C7",
    "head_only_pretrained": "C2",
}


def plot(rows: list[dict[str, Any]], path: str) -> None:
    """Test accuracy against measured peak training memory, one point per method/stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        stage = r["method"].startswith("layerwise")
        ax.scatter(
            r["peak_bytes_measured"] / 2**20,
            100 * r["test_accuracy"],
            marker="s" if stage else "o",
            s=60,
            color=COLORS["layerwise" if stage else r["method"]],
            label=None
            if stage and r["stage"]
            else ("layerwise (each stage)" if stage else r["method"]),
        )
        if stage:
            where = (r["peak_bytes_measured"] / 2**20, 100 * r["test_accuracy"])
            label = f"block {r['stage'] + 1}"
            ax.annotate(label, where, textcoords="offset points", xytext=(6, -4))
    ax.set_xlabel("peak training memory, one step (MiB, measured)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("MNIST: accuracy against training memory")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def add_arguments(parser: Any) -> None:
    """Options of ``tinyodl bench layerwise``."""
    parser.add_argument("--epochs", type=int, default=4, help="epochs (per stage), default 4")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--data", default=None, help="folder of the full MNIST (IDX files)")
    parser.add_argument("--plot", default=None, help="write the figure (PNG) here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(args: Any) -> int:
    """CLI entry of ``tinyodl bench layerwise``."""
    from threadpoolctl import threadpool_limits

    from tinyodl import backend
    from tinyodl.bench._common import machine_info, write_results

    backend.set_num_threads(1)
    with threadpool_limits(limits=1):
        rows, summary = run(args)
    ratio = summary["memory_ratio_end_to_end_over_layerwise"]
    print(f"end-to-end needs {ratio:.2f}x the peak training memory of layer-wise training")
    if args.plot:
        plot(rows, args.plot)
    write_results(args.json_path, rows, summary, machine=machine_info(threads=1))
    return 0
