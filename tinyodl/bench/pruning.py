"""``tinyodl bench pruning``: accuracy vs sparsity for both kinds, and the channel speed-up.

Chapter 02's headline figures, on MNIST (the shipped subset, or ``--data FOLDER``):

1. ``mlp_2nn`` (784-200-200-10) trained dense, then magnitude-pruned: one-shot (layer-wise
   and global thresholds, no retraining) and gradually with fine-tuning (Zhu & Gupta's
   cubic schedule, global threshold, masks kept) to each sparsity. Summary
   ``mlp_2nn_sparsity_90``: dense and 90%-sparse test accuracy, and the bytes of the sparse
   weights stored dense, as a bitmask and in CSR.
2. ``lenet5`` trained dense, then channel-pruned (L1 ranking) at several fractions of its
   channels, and magnitude-pruned to the same fraction of weights, each fine-tuned:
   accuracy against the fraction of weights removed.
3. The measured speed-up of channel pruning: forward time of the dense model over the
   pruned one (the two timed in alternation, best of 7 rounds each, same process, one
   thread) for ``lenet5``, ``cnn_mcmahan``
   and ``mcunet_tiny`` (timings do not depend on the weights, so the last two are not
   trained), with the parameter and multiply-accumulate ratios.
4. A sensitivity scan of the trained ``mlp_2nn`` (per-layer magnitude) and ``lenet5`` (per
   group channel) without retraining.

``--plot FILE`` draws the accuracy-vs-sparsity figure.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np

HELP = "magnitude vs channel pruning on MNIST: accuracy vs sparsity, speed-up (same process)"

SHAPE = (1, 28, 28)
#: Fine-tuning recipe after pruning: SGD + Nesterov, cosine from this rate; the sparsity
#: rises during the first half of the steps (Zhu & Gupta's cubic schedule).
FINETUNE_LR = 0.05


def add_arguments(parser: Any) -> None:
    """Options of ``tinyodl bench pruning`` (besides ``--json``, ``--quick``, ``--seed``)."""
    from tinyodl.bench._chapter_data import add_data_argument

    add_data_argument(parser)
    parser.add_argument("--plot", default=None, help="write the accuracy-vs-sparsity figure")


def _config(quick: bool) -> dict[str, Any]:
    if quick:
        return dict(
            n_train=1500,
            n_test=500,
            dense_epochs=2,
            finetune_epochs=1,
            lenet_finetune_epochs=1,
            lenet_epochs=1,
            sparsities=(0.5, 0.9),
            channel_fractions=(0.5,),
            repeats=2,
            time_batch=32,
        )
    return dict(
        n_train=None,
        n_test=None,
        dense_epochs=10,
        finetune_epochs=8,
        lenet_finetune_epochs=3,
        lenet_epochs=6,
        sparsities=(0.5, 0.8, 0.9, 0.95, 0.98),
        channel_fractions=(0.25, 0.5, 0.75),
        repeats=7,
        time_batch=256,
    )


def _train(model, x, y, epochs: int, lr: float, seed: int) -> None:
    from tinyodl import nn, schedules
    from tinyodl.train import fit

    steps = epochs * int(np.ceil(len(x) / 64))
    opt = nn.SGD(model, lr=lr, momentum=0.9, nesterov=True)
    fit(
        model,
        opt,
        x,
        y,
        epochs=epochs,
        batch_size=64,
        seed=seed,
        schedule=schedules.Cosine(lr, steps),
        progress=False,
    )


def _finetune_pruned(model, x, y, sparsity: float, epochs: int, seed: int, scope="global"):
    from tinyodl import nn, pruning, schedules

    steps = epochs * int(np.ceil(len(x) / 64))
    opt = nn.SGD(model, lr=FINETUNE_LR, momentum=0.9, nesterov=True)
    pruning.prune_and_finetune(
        model,
        opt,
        x,
        y,
        final_sparsity=sparsity,
        epochs=epochs,
        batch_size=64,
        seed=seed,
        scope=scope,
        prune_fraction=0.5,
        schedule=schedules.Cosine(FINETUNE_LR, steps),
    )


def _accuracy(model, x, y) -> float:
    from tinyodl.train import evaluate

    return float(evaluate(model, x, y)[1])


def magnitude_experiment(d: dict, cfg: dict, seed: int) -> tuple[list, dict, Any]:
    """Rows for mlp_2nn (one-shot and gradual) and the 90% summary."""
    from tinyodl import models, pruning

    x, y, xt, yt = d["x"], d["y"], d["x_test"], d["y_test"]
    dense = models.mlp_2nn(seed=seed)
    _train(dense, x, y, cfg["dense_epochs"], 0.05, seed)
    dense_acc = _accuracy(dense, xt, yt)
    rows = [
        dict(
            experiment="magnitude",
            model="mlp_2nn",
            method="dense",
            sparsity=0.0,
            weight_fraction_removed=0.0,
            accuracy=dense_acc,
        )
    ]
    summary = {}
    for s in cfg["sparsities"]:
        for scope in ("layer", "global"):
            m = copy.deepcopy(dense)
            pruning.apply_masks(m, pruning.magnitude_masks(m, s, scope))
            rows.append(
                dict(
                    experiment="magnitude",
                    model="mlp_2nn",
                    method=f"one-shot {scope}",
                    sparsity=s,
                    weight_fraction_removed=s,
                    accuracy=_accuracy(m, xt, yt),
                )
            )
        m = copy.deepcopy(dense)
        _finetune_pruned(m, x, y, s, cfg["finetune_epochs"], seed + 1)
        acc = _accuracy(m, xt, yt)
        rows.append(
            dict(
                experiment="magnitude",
                model="mlp_2nn",
                method="gradual + fine-tune",
                sparsity=pruning.sparsity(m),
                weight_fraction_removed=s,
                accuracy=acc,
            )
        )
        if s == 0.9:
            storage = pruning.model_storage(m)[-1]
            summary = dict(
                dense_accuracy=dense_acc,
                sparse_accuracy=acc,
                accuracy_drop_points=100 * (dense_acc - acc),
                sparsity=pruning.sparsity(m),
                layer_sparsities=pruning.layer_sparsities(m),
                weight_bytes_dense=storage["dense"],
                weight_bytes_bitmask=storage["bitmask"],
                weight_bytes_csr=storage["csr"],
                finetune_epochs=cfg["finetune_epochs"],
                dense_epochs=cfg["dense_epochs"],
            )
    return rows, summary, dense


def channel_experiment(d: dict, cfg: dict, seed: int) -> tuple[list, Any]:
    """Rows for lenet5: channel pruning vs magnitude pruning, both fine-tuned."""
    from tinyodl import models, pruning

    x, y, xt, yt = d["x"], d["y"], d["x_test"], d["y_test"]
    dense = models.lenet5(seed=seed)
    _train(dense, x, y, cfg["lenet_epochs"], 0.05, seed)
    dense_acc, n_dense = _accuracy(dense, xt, yt), dense.num_params()
    macs_dense = pruning.count_macs(dense, SHAPE)
    rows = [
        dict(
            experiment="structured",
            model="lenet5",
            method="dense",
            sparsity=0.0,
            weight_fraction_removed=0.0,
            accuracy=dense_acc,
            params=n_dense,
            macs=macs_dense,
        )
    ]
    for frac in cfg["channel_fractions"]:
        pruned = pruning.channel_prune(dense, frac, SHAPE)
        removed = 1 - pruned.num_params() / n_dense
        one_shot = _accuracy(pruned, xt, yt)
        _train(pruned, x, y, cfg["lenet_finetune_epochs"], FINETUNE_LR, seed + 2)
        rows.append(
            dict(
                experiment="structured",
                model="lenet5",
                method="channel + fine-tune",
                sparsity=frac,
                weight_fraction_removed=removed,
                accuracy=_accuracy(pruned, xt, yt),
                accuracy_one_shot=one_shot,
                params=pruned.num_params(),
                macs=pruning.count_macs(pruned, SHAPE),
            )
        )
        m = copy.deepcopy(dense)
        _finetune_pruned(m, x, y, removed, cfg["lenet_finetune_epochs"], seed + 2)
        rows.append(
            dict(
                experiment="structured",
                model="lenet5",
                method="magnitude gradual + fine-tune",
                sparsity=pruning.sparsity(m),
                weight_fraction_removed=removed,
                accuracy=_accuracy(m, xt, yt),
                params=n_dense,
                macs=macs_dense,
            )
        )
    return rows, dense


def speed_experiment(trained_lenet, cfg: dict, seed: int) -> list[dict]:
    """Forward time dense / channel-pruned (50% of the channels of every group)."""
    from tinyodl import models, pruning

    rng = np.random.default_rng(seed)
    x = rng.random((cfg["time_batch"], *SHAPE), dtype=np.float32)
    rows = []
    cases = [
        ("lenet5", trained_lenet),
        ("cnn_mcmahan", models.cnn_mcmahan(seed=seed)),
        ("mcunet_tiny", models.mcunet_tiny(seed=seed)),
    ]
    for name, dense in cases:
        pruned = pruning.channel_prune(dense, 0.5, SHAPE)
        _, t_dense, t_pruned = pruning.speedup(dense, pruned, x, rounds=cfg["repeats"])
        rows.append(
            dict(
                experiment="speed",
                model=name,
                channel_fraction_removed=0.5,
                params_dense=dense.num_params(),
                params_pruned=pruned.num_params(),
                macs_dense=pruning.count_macs(dense, SHAPE),
                macs_pruned=pruning.count_macs(pruned, SHAPE),
                seconds_dense=t_dense,
                seconds_pruned=t_pruned,
                speedup=t_dense / t_pruned,
                batch=len(x),
            )
        )
    return rows


def sensitivity_experiment(mlp, lenet, d: dict) -> list[dict]:
    from tinyodl import pruning

    xv, yv = d["x_test"], d["y_test"]
    rows = []
    sparsities = (0.5, 0.8, 0.9, 0.95, 0.99)
    for name, accs in pruning.sensitivity_scan(
        mlp, lambda m: _accuracy(m, xv, yv), sparsities
    ).items():
        rows += [
            dict(
                experiment="sensitivity",
                model="mlp_2nn",
                kind="magnitude",
                layer=name,
                sparsity=s,
                accuracy=float(a),
            )
            for s, a in zip(sparsities, accs, strict=True)
        ]
    fractions = (0.25, 0.5, 0.75)
    for name, accs in pruning.sensitivity_scan(
        lenet, lambda m: _accuracy(m, xv, yv), fractions, "channel", SHAPE
    ).items():
        rows += [
            dict(
                experiment="sensitivity",
                model="lenet5",
                kind="channel",
                layer=name,
                sparsity=s,
                accuracy=float(a),
            )
            for s, a in zip(fractions, accs, strict=True)
        ]
    return rows


def plot(rows: list[dict], path: str) -> None:
    """Accuracy vs fraction of weights removed: mlp_2nn (left), lenet5 (right)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    panels = [("mlp_2nn", "magnitude"), ("lenet5", "structured")]
    for ax, (model, experiment) in zip(axes, panels, strict=True):
        sel = [r for r in rows if r["model"] == model and r["experiment"] == experiment]
        dense = next(r["accuracy"] for r in sel if r["method"] == "dense")
        for method in sorted({r["method"] for r in sel} - {"dense"}):
            pts = sorted(
                (r["weight_fraction_removed"], r["accuracy"]) for r in sel if r["method"] == method
            )
            ax.plot([100 * p[0] for p in pts], [100 * p[1] for p in pts], "o-", label=method)
        ax.axhline(100 * dense, color="black", ls=":", label="dense")
        ax.axhline(100 * dense - 1, color="grey", ls="--", lw=0.8, label="dense - 1 point")
        ax.set(xlabel="weights removed (%)", ylabel="test accuracy (%)", title=model)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(args: Any) -> int:
    """CLI entry of ``tinyodl bench pruning``."""
    from threadpoolctl import threadpool_limits

    from tinyodl.bench._chapter_data import load
    from tinyodl.bench._common import machine_info, write_results

    cfg = _config(args.quick)
    start = time.perf_counter()
    with threadpool_limits(limits=1):
        d = load(args.data, cfg["n_train"], args.seed)
        if cfg["n_test"]:
            d["x_test"], d["y_test"] = d["x_test"][: cfg["n_test"]], d["y_test"][: cfg["n_test"]]
        mag_rows, mlp_summary, mlp = magnitude_experiment(d, cfg, args.seed)
        ch_rows, lenet = channel_experiment(d, cfg, args.seed)
        speed_rows = speed_experiment(lenet, cfg, args.seed)
        sens_rows = sensitivity_experiment(mlp, lenet, d)
    rows = mag_rows + ch_rows + speed_rows + sens_rows
    summary = {
        "mlp_2nn_sparsity_90": mlp_summary,
        "channel_speedup": {
            r["model"]: {
                k: r[k]
                for k in ("speedup", "params_dense", "params_pruned", "macs_dense", "macs_pruned")
            }
            for r in speed_rows
        },
        "data": d["source"],
        "n_train": len(d["y"]),
        "n_test": len(d["y_test"]),
        "quick": bool(args.quick),
        "seconds": time.perf_counter() - start,
    }
    s = mlp_summary
    print(
        f"mlp_2nn on {len(d['y'])} images ({d['source']}): dense {100 * s['dense_accuracy']:.2f}%"
        f", 90% sparse {100 * s['sparse_accuracy']:.2f}% "
        f"({s['accuracy_drop_points']:+.2f} points lost)"
    )
    print(
        f"  90%-sparse weights: dense {s['weight_bytes_dense']:,} B, bitmask "
        f"{s['weight_bytes_bitmask']:,} B, CSR {s['weight_bytes_csr']:,} B"
    )
    for r in ch_rows:
        print(
            f"  lenet5 {r['method']:<32} removed {100 * r['weight_fraction_removed']:5.1f}% "
            f"-> {100 * r['accuracy']:.2f}%"
        )
    for r in speed_rows:
        print(
            f"  {r['model']:<12} 50% channels: params x{r['params_dense'] / r['params_pruned']:.2f}"
            f" fewer, MACs x{r['macs_dense'] / r['macs_pruned']:.2f} fewer, measured speed-up "
            f"x{r['speedup']:.2f}"
        )
    if args.plot:
        plot(rows, args.plot)
        print(f"wrote {args.plot}")
    write_results(args.json_path, rows, summary, machine=machine_info(threads=1), config=cfg)
    return 0
