"""``tinyodl bench data_compression``: test accuracy vs bytes of stored training data.

Chapter 07's headline figure. From the MNIST training pool (the shipped subset, or
``--data FOLDER``), every method of :func:`tinyodl.data_compression.keep_within_budget`
keeps what fits in each byte budget; a fresh LeNet-5 is trained on what was kept (the same
recipe for all: SGD with Nesterov momentum and a cosine schedule, at least 500 steps of 32
examples, or 4 epochs when the kept set is larger, at most 2,000 steps) and tested on the test set.

What the selection methods need comes from a *scoring model*: a LeNet-5 trained for one
epoch on the pool (the stream seen once), whose 84-dimensional penultimate activations are
the features of herding and k-center and whose softmax gives the EL2N scores. The dictionary
(32 atoms, 8 non-zeros per example, learned by OMP + MOD on the pool) is stored in int8 and
counts against every budget. Summary ``winner_by_budget``: the best method per budget and
its margin over random subsampling of 8-bit images at the same budget.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

HELP = "accuracy vs bytes of kept training data: coresets, sparse codes, low-bit (MNIST)"


def add_arguments(parser: Any) -> None:
    """Options of ``tinyodl bench data_compression``."""
    from tinyodl.bench._chapter_data import add_data_argument

    add_data_argument(parser)
    parser.add_argument("--plot", default=None, help="write the accuracy-vs-bytes figure")
    parser.add_argument(
        "--repeats", type=int, default=None, help="seeds per (method, budget) (default 1)"
    )


def _config(quick: bool) -> dict[str, Any]:
    if quick:
        return dict(
            n_pool=1500,
            budgets=[16 * 1024, 64 * 1024],
            min_steps=40,
            max_steps=80,
            n_atoms=16,
            n_nonzero=6,
            dict_iter=2,
            n_test=500,
            repeats=1,
        )
    kib = [16, 32, 64, 256, 1024]
    return dict(
        n_pool=None,
        budgets=[k * 1024 for k in kib],
        min_steps=500,
        max_steps=2000,
        n_atoms=32,
        n_nonzero=8,
        dict_iter=8,
        n_test=None,
        repeats=1,
    )


def train_lenet(x, y, cfg: dict, seed: int):
    """A fresh LeNet-5 trained on (x, y) with the benchmark's fixed recipe."""
    from tinyodl import models, nn, schedules
    from tinyodl.train import fit

    steps = int(np.clip(np.ceil(4 * len(x) / 32), cfg["min_steps"], cfg["max_steps"]))
    per_epoch = int(np.ceil(len(x) / 32))
    epochs = int(np.ceil(steps / per_epoch))
    model = models.lenet5(seed=seed)
    opt = nn.SGD(model, lr=0.05, momentum=0.9, nesterov=True)
    fit(
        model,
        opt,
        x,
        y,
        epochs=epochs,
        batch_size=32,
        seed=seed,
        max_steps=steps,
        schedule=schedules.Cosine(0.05, steps),
        progress=False,
    )
    return model


def scoring_inputs(d: dict, cfg: dict, seed: int) -> dict[str, np.ndarray]:
    """Features and EL2N scores from a LeNet-5 trained one epoch on the pool, and the
    dictionary learned on the pool."""
    from tinyodl import data_compression as dc
    from tinyodl import models, nn
    from tinyodl.nn import softmax
    from tinyodl.train import fit

    model = models.lenet5(seed=seed + 100)
    fit(
        model,
        nn.SGD(model, lr=0.05, momentum=0.9),
        d["x"],
        d["y"],
        epochs=1,
        batch_size=32,
        seed=seed,
        progress=False,
    )
    model.eval()
    body, head = model["features"], model["classifier"]
    feats, probs = [], []
    for i in range(0, len(d["x"]), 1000):
        h = body.forward(d["x"][i : i + 1000])
        for layer in list(head)[:-1]:
            h = layer.forward(h)
        feats.append(h)
        probs.append(softmax(list(head)[-1].forward(h)))
    pool = d["images"].reshape(len(d["images"]), -1) / 255.0
    dictionary, errors = dc.learn_dictionary(
        pool, cfg["n_atoms"], cfg["n_nonzero"], n_iter=cfg["dict_iter"], seed=seed
    )
    return dict(
        features=np.concatenate(feats),
        scores=dc.el2n_scores(np.concatenate(probs), d["y"]),
        dictionary=dictionary,
        dictionary_error=errors[-1],
    )


def run(d: dict, cfg: dict, seed: int, repeats: int) -> list[dict]:
    """One row per (method, budget, repeat)."""
    from tinyodl import data_compression as dc
    from tinyodl.train import evaluate

    inputs = scoring_inputs(d, cfg, seed)
    rows = []
    for budget in cfg["budgets"]:
        for method in dc.METHODS:
            for r in range(repeats):
                kept = dc.keep_within_budget(
                    method,
                    budget,
                    d["images"],
                    d["y"],
                    features=inputs["features"],
                    scores=inputs["scores"],
                    dictionary=inputs["dictionary"],
                    n_nonzero=cfg["n_nonzero"],
                    seed=seed + r,
                )
                if kept is None:
                    continue
                model = train_lenet(kept.x, kept.y, cfg, seed + r)
                acc = float(evaluate(model, d["x_test"], d["y_test"])[1])
                rows.append(
                    dict(
                        method=method,
                        budget_bytes=budget,
                        bytes_used=kept.nbytes,
                        n_examples=len(kept.y),
                        repeat=r,
                        accuracy=acc,
                    )
                )
    return rows


def winners(rows: list[dict]) -> dict[str, dict]:
    """Per budget: mean accuracy of each method, the best, and its margin over random."""
    out = {}
    for budget in sorted({r["budget_bytes"] for r in rows}):
        means = {}
        for method in dict.fromkeys(r["method"] for r in rows):
            accs = [
                r["accuracy"] for r in rows if r["budget_bytes"] == budget and r["method"] == method
            ]
            if accs:
                means[method] = float(np.mean(accs))
        best = max(means, key=means.get)
        out[f"{budget // 1024}KiB"] = dict(
            best=best,
            best_accuracy=means[best],
            random_uint8_accuracy=means.get("random"),
            margin_over_random_points=100 * (means[best] - means.get("random", np.nan)),
            mean_accuracy=means,
        )
    return out


def plot(rows: list[dict], path: str) -> None:
    """Test accuracy against kept bytes, one line per method (mean over repeats)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for method in dict.fromkeys(r["method"] for r in rows):
        budgets = sorted({r["budget_bytes"] for r in rows if r["method"] == method})
        acc = [
            np.mean(
                [r["accuracy"] for r in rows if r["method"] == method and r["budget_bytes"] == b]
            )
            for b in budgets
        ]
        style = "k--" if method == "random" else "-"
        ax.plot(
            [b / 1024 for b in budgets],
            [100 * a for a in acc],
            style,
            label=method,
            marker="o",
            ms=4,
        )
    ax.set(
        xscale="log",
        xlabel="bytes of stored training data (KiB)",
        ylabel="test accuracy (%)",
        title="LeNet-5 trained on what fits in the budget",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(args: Any) -> int:
    """CLI entry of ``tinyodl bench data_compression``."""
    from threadpoolctl import threadpool_limits

    from tinyodl.bench._chapter_data import load
    from tinyodl.bench._common import machine_info, write_results

    cfg = _config(args.quick)
    repeats = args.repeats or cfg["repeats"]
    start = time.perf_counter()
    with threadpool_limits(limits=1):
        d = load(args.data, cfg["n_pool"], args.seed)
        if cfg["n_test"]:
            d["x_test"], d["y_test"] = d["x_test"][: cfg["n_test"]], d["y_test"][: cfg["n_test"]]
        rows = run(d, cfg, args.seed, repeats)
    summary = dict(
        winner_by_budget=winners(rows),
        data=d["source"],
        n_pool=len(d["y"]),
        n_test=len(d["y_test"]),
        repeats=repeats,
        quick=bool(args.quick),
        seconds=time.perf_counter() - start,
    )
    for budget, w in summary["winner_by_budget"].items():
        print(
            f"{budget:>8}: best {w['best']:<12} {100 * w['best_accuracy']:.2f}%  "
            f"(random 8-bit {100 * (w['random_uint8_accuracy'] or 0):.2f}%)"
        )
    if args.plot:
        plot(rows, args.plot)
        print(f"wrote {args.plot}")
    write_results(args.json_path, rows, summary, machine=machine_info(threads=1), config=cfg)
    return 0
