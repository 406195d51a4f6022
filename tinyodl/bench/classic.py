"""``tinyodl bench classic``: accuracy vs model bytes vs update cost, and a drifting stream.

Chapter 01's headline figures, on MNIST (the shipped subset, or ``--data FOLDER``):

1. **One pass over a stream.** The training images arrive once, in a seeded order, in
   batches of 32; every learner updates on each batch and never sees it again. The classic
   learners of :mod:`tinyodl.classic` (float32 state) learn on the raw pixels; two of them
   also on *frozen features* -- a LeNet-5 trained beforehand on digits 0-4 only, on a
   separate "cloud" part of the training images (the first ``--cloud`` images of the
   shuffled pool), and never updated. The small CNN is LeNet-5 trained from scratch by SGD
   on the same single pass; a LeNet-5 trained for several epochs over stored data is the
   reference. Per learner: test accuracy, model bytes (learned state; the frozen extractor
   is reported separately), measured seconds per example of a steady-state update (best of
   5 rounds of 10 updates, learners interleaved) and its ratio to the CNN's SGD step, timed
   in the same process, and the measured peak memory of one update of 32 examples
   (tracemalloc).
2. **Concept drift.** The stream's second half comes from task B's new writer
   (:class:`tinyodl.tasks.WriterShift`: slant, rotation, warp, thick pen). Accuracy on the
   clean and on the shifted test images is measured along the stream; a learner frozen at
   the half-way point keeps its half-way accuracy, continued updates recover.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

HELP = "streaming classic learners vs a small CNN: accuracy, bytes, update cost, drift"

BATCH = 32
CLASSES = np.arange(10)


def add_arguments(parser: Any) -> None:
    """Options of ``tinyodl bench classic``."""
    from tinyodl.bench._chapter_data import add_data_argument

    add_data_argument(parser)
    parser.add_argument(
        "--cloud",
        type=int,
        default=None,
        help="images set aside to pretrain the frozen extractor (default 4000)",
    )
    parser.add_argument("--plot", default=None, help="write the accuracy/bytes/cost figure")


def _config(quick: bool) -> dict[str, Any]:
    if quick:
        return dict(
            n_pool=1800,
            cloud=600,
            extractor_epochs=1,
            reference_epochs=1,
            eval_every=400,
            n_test=500,
            memory_updates=2,
            timing_rounds=2,
        )
    return dict(
        n_pool=None,
        cloud=4000,
        extractor_epochs=3,
        reference_epochs=5,
        eval_every=1000,
        n_test=None,
        memory_updates=5,
        timing_rounds=5,
    )


# ----------------------------------------------------------------------------- learners


class CNNLearner:
    """LeNet-5 trained by SGD on each batch of the stream, behind ``partial_fit``."""

    def __init__(self, seed: int, lr: float = 0.05) -> None:
        from tinyodl import models, nn

        self.model = models.lenet5(seed=seed)
        self.opt = nn.SGD(self.model, lr=lr, momentum=0.9)

    def partial_fit(self, X, y, classes=None):
        from tinyodl.nn import softmax_cross_entropy

        self.model.train()
        self.opt.zero_grad()
        _, dlogits = softmax_cross_entropy(self.model.forward(X.reshape(-1, 1, 28, 28)), y)
        self.model.backward(dlogits)
        self.opt.step()
        return self

    def score(self, X, y) -> float:
        from tinyodl.train import evaluate

        return float(evaluate(self.model, X.reshape(-1, 1, 28, 28), y)[1])


def make_learners(extractor: Any, seed: int) -> dict[str, Any]:
    """Fresh learners by name (float32 state)."""
    from tinyodl import classic

    return {
        "logistic regression": classic.OnlineLogisticRegression(dtype="float32"),
        "linear SVM (Pegasos)": classic.LinearSVM(dtype="float32"),
        "Gaussian NB": classic.GaussianNB(dtype="float32"),
        "multinomial NB": classic.MultinomialNB(dtype="float32"),
        "nearest class mean": classic.NearestClassMean(dtype="float32"),
        "NCM, frozen features": classic.NearestClassMean(extractor, dtype="float32"),
        "logistic regression, frozen features": _FeatureLearner(
            classic.OnlineLogisticRegression(dtype="float32"), extractor
        ),
        "LeNet-5, one pass (SGD)": CNNLearner(seed),
    }


class _FeatureLearner:
    """A classic learner on ``extractor(X)`` (the extractor is not part of its state)."""

    def __init__(self, learner: Any, extractor: Any) -> None:
        self.learner, self.extractor = learner, extractor

    def partial_fit(self, X, y, classes=None):
        self.learner.partial_fit(self.extractor(X), y, classes=classes)
        return self

    def score(self, X, y) -> float:
        return self.learner.score(self.extractor(X), y)


def state_bytes(learner: Any) -> int:
    from tinyodl.classic import model_bytes

    inner = getattr(learner, "learner", getattr(learner, "model", learner))
    return model_bytes(inner)


def pretrain_extractor(x: np.ndarray, y: np.ndarray, epochs: int, seed: int):
    """LeNet-5 trained on digits 0-4 of (x, y), as a frozen feature extractor (400-d)."""
    from tinyodl import classic, models, nn
    from tinyodl.train import fit

    keep = y < 5
    model = models.lenet5(seed=seed + 7)
    fit(
        model,
        nn.SGD(model, lr=0.05, momentum=0.9),
        x[keep],
        y[keep],
        epochs=epochs,
        batch_size=32,
        seed=seed,
        progress=False,
    )
    model.eval()
    features = classic.FrozenFeatures(model, part="features")

    def extractor(X):
        return features(np.asarray(X, dtype=np.float32).reshape(-1, 1, 28, 28))

    return extractor, model


# ----------------------------------------------------------------------------- experiments


def _stream(learner, X, y, start=0, stop=None):
    stop = len(X) if stop is None else stop
    for s in range(start, stop, BATCH):
        learner.partial_fit(
            X[s : min(s + BATCH, stop)], y[s : min(s + BATCH, stop)], classes=CLASSES
        )


def update_seconds(make, X, y, repeats: int = 5, calls: int = 10) -> dict[str, float]:
    """Seconds per example of a steady-state update of each learner.

    Each learner is warmed up with one batch, then ``calls`` consecutive updates of
    ``BATCH`` examples are timed; the best of ``repeats`` rounds is kept (the round least
    disturbed by other work on the machine). The rounds go through all learners in turn,
    so a burst of load affects them alike.
    """
    learners = make()
    for learner in learners.values():
        learner.partial_fit(X[:BATCH], y[:BATCH], classes=CLASSES)
    best = {name: np.inf for name in learners}
    for r in range(repeats):
        for name, learner in learners.items():
            start = time.perf_counter()
            for i in range(calls):
                s = BATCH * (1 + (r * calls + i) % (len(X) // BATCH - 1))
                learner.partial_fit(X[s : s + BATCH], y[s : s + BATCH], classes=CLASSES)
            best[name] = min(best[name], (time.perf_counter() - start) / (calls * BATCH))
    return best


def one_pass(d: dict, cfg: dict, extractor, extractor_model, seed: int) -> list[dict]:
    """Accuracy, bytes, update time and update memory of each learner on one clean pass."""
    from tinyodl import classic, models, nn
    from tinyodl.memory import measure_peak
    from tinyodl.train import evaluate, fit

    X, y, Xt, yt = d["X"], d["y"], d["Xt"], d["yt"]
    rows, cnn_seconds = [], None
    learners = make_learners(extractor, seed)
    seconds_of = update_seconds(
        lambda: make_learners(extractor, seed), X, y, repeats=cfg["timing_rounds"]
    )
    for name, learner in learners.items():
        _stream(learner, X, y)
        seconds = seconds_of[name]
        probe = make_learners(extractor, seed)[name]  # a fresh one for the memory probe
        probe.partial_fit(X[:BATCH], y[:BATCH], classes=np.arange(10))  # allocate the state
        peaks = [
            measure_peak(
                probe.partial_fit,
                X[i * BATCH : (i + 1) * BATCH],
                y[i * BATCH : (i + 1) * BATCH],
                classes=np.arange(10),
            ).peak_bytes
            for i in range(1, 1 + cfg["memory_updates"])
        ]
        row = dict(
            experiment="one pass",
            learner=name,
            accuracy=float(learner.score(Xt, yt)),
            model_bytes=state_bytes(learner),
            seconds_per_example=seconds,
            update_peak_bytes=int(max(peaks)),
            n_stream=len(X),
            frozen_extractor_bytes=classic.model_bytes(extractor_model["features"])
            if "frozen" in name
            else 0,
        )
        rows.append(row)
        if name.startswith("LeNet-5"):
            cnn_seconds = seconds
    for row in rows:
        row["update_cost_vs_cnn"] = row["seconds_per_example"] / cnn_seconds
    # the reference: LeNet-5 trained for several epochs over the stored stream
    ref = models.lenet5(seed=seed)
    start = time.perf_counter()
    fit(
        ref,
        nn.SGD(ref, lr=0.05, momentum=0.9),
        X.reshape(-1, 1, 28, 28),
        y,
        epochs=cfg["reference_epochs"],
        batch_size=BATCH,
        seed=seed,
        progress=False,
    )
    seconds = (time.perf_counter() - start) / len(X)
    rows.append(
        dict(
            experiment="one pass",
            learner=f"LeNet-5, {cfg['reference_epochs']} epochs (stores the data)",
            accuracy=float(evaluate(ref, Xt.reshape(-1, 1, 28, 28), yt)[1]),
            model_bytes=classic.model_bytes(ref),
            seconds_per_example=seconds,
            update_cost_vs_cnn=seconds / cnn_seconds,
            n_stream=len(X),
            stored_data_bytes=int(X.size),
            frozen_extractor_bytes=0,
        )
    )
    return rows


def drift(d: dict, cfg: dict, extractor, seed: int) -> list[dict]:
    """Accuracy along a stream whose second half is written by task B's writer."""
    X, y = d["X"], d["y"]
    half = (len(X) // 2 // BATCH) * BATCH
    Xs = np.concatenate([X[:half], d["X_shift"][half:]])
    stops = sorted({*range(cfg["eval_every"], len(Xs), cfg["eval_every"]), half, len(Xs)})
    rows = []
    for name, learner in make_learners(extractor, seed).items():
        pos = 0
        for stop in stops:
            _stream(learner, Xs, y, pos, stop)
            pos = stop
            rows.append(
                dict(
                    experiment="drift",
                    learner=name,
                    seen=stop,
                    shifted_seen=max(0, stop - half),
                    accuracy_clean=float(learner.score(d["Xt"], d["yt"])),
                    accuracy_shifted=float(learner.score(d["Xt_shift"], d["yt"])),
                )
            )
    return rows


def drift_summary(rows: list[dict], half: int) -> dict[str, dict]:
    out = {}
    for name in dict.fromkeys(r["learner"] for r in rows):
        mine = [r for r in rows if r["learner"] == name]
        mid = max((r for r in mine if r["seen"] <= half), key=lambda r: r["seen"])
        end = mine[-1]
        out[name] = dict(
            shifted_accuracy_frozen_at_half=mid["accuracy_shifted"],
            shifted_accuracy_continued=end["accuracy_shifted"],
            clean_accuracy_at_half=mid["accuracy_clean"],
            clean_accuracy_continued=end["accuracy_clean"],
        )
    return out


def plot(rows: list[dict], path: str) -> None:
    """Accuracy, model bytes and update cost per learner (bars), and the drift stream."""
    import matplotlib.pyplot as plt

    one = [r for r in rows if r["experiment"] == "one pass"]
    names = [r["learner"] for r in one]
    fig = plt.figure(figsize=(14, 4.8))
    panels = [
        ("accuracy", lambda r: 100 * r["accuracy"], "test accuracy (%)", False),
        ("bytes", lambda r: r["model_bytes"] / 1024, "model bytes (KiB)", True),
        ("cost", lambda r: r["update_cost_vs_cnn"], "update time / CNN SGD step", True),
    ]
    for i, (_, value, label, log) in enumerate(panels):
        ax = fig.add_subplot(1, 5, i + 1)
        ax.barh(range(len(one)), [value(r) for r in one], color="tab:blue")
        ax.set_yticks(range(len(one)), names if i == 0 else [""] * len(one), fontsize=7)
        ax.invert_yaxis()
        ax.set(xlabel=label, xscale="log" if log else "linear")
        if log:
            ax.xaxis.set_minor_formatter(plt.NullFormatter())
        else:
            ax.set_xlim(left=min(value(r) for r in one) - 5)
        ax.grid(alpha=0.3, axis="x")
    bx = fig.add_subplot(1, 5, (4, 5))
    dr = [r for r in rows if r["experiment"] == "drift"]
    for name in dict.fromkeys(r["learner"] for r in dr):
        mine = [r for r in dr if r["learner"] == name]
        bx.plot(
            [r["seen"] for r in mine],
            [100 * r["accuracy_shifted"] for r in mine],
            "o-",
            ms=3,
            label=name,
        )
    half = next(r["seen"] - r["shifted_seen"] for r in dr if r["shifted_seen"] > 0)
    bx.axvline(half, color="black", ls=":", label="the new writer arrives")
    bx.set(
        xlabel="examples seen",
        ylabel="accuracy on the new writer (%)",
        title="concept drift, continued updates",
    )
    bx.grid(alpha=0.3)
    bx.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def prepare(data: str | None, cfg: dict, seed: int) -> dict[str, Any]:
    """The stream, the cloud split for the extractor, the clean and shifted test sets."""
    from tinyodl.bench._chapter_data import load
    from tinyodl.data import to_float
    from tinyodl.tasks import WriterShift

    d = load(data, cfg["n_pool"], seed)
    order = np.random.default_rng(seed).permutation(len(d["y"]))
    images, labels = d["images"][order], d["y"][order]
    cloud = cfg["cloud"]
    test_images, yt = d["test_images"], d["y_test"]
    if cfg["n_test"]:
        test_images, yt = test_images[: cfg["n_test"]], yt[: cfg["n_test"]]
    writer = WriterShift()  # task B's writer (tinyodl.tasks)

    def flat(imgs):
        return to_float(imgs).reshape(len(imgs), -1)

    return dict(
        x_cloud=to_float(images[:cloud]),
        y_cloud=labels[:cloud],
        X=flat(images[cloud:]),
        y=labels[cloud:],
        X_shift=flat(writer(images[cloud:])),
        Xt=flat(test_images),
        yt=yt,
        Xt_shift=flat(writer(test_images)),
        source=d["source"],
    )


def main(args: Any) -> int:
    """CLI entry of ``tinyodl bench classic``."""
    from threadpoolctl import threadpool_limits

    from tinyodl.bench._common import machine_info, write_results

    cfg = _config(args.quick)
    if args.cloud is not None:
        cfg["cloud"] = args.cloud
    start = time.perf_counter()
    with threadpool_limits(limits=1):
        d = prepare(args.data, cfg, args.seed)
        extractor, ext_model = pretrain_extractor(
            d["x_cloud"], d["y_cloud"], cfg["extractor_epochs"], args.seed
        )
        rows = one_pass(d, cfg, extractor, ext_model, args.seed)
        drift_rows = drift(d, cfg, extractor, args.seed)
    half = (len(d["X"]) // 2 // BATCH) * BATCH
    summary = dict(
        one_pass={
            r["learner"]: {k: r[k] for k in ("accuracy", "model_bytes", "update_cost_vs_cnn")}
            for r in rows
        },
        drift=drift_summary(drift_rows, half),
        n_stream=len(d["y"]),
        n_cloud=cfg["cloud"],
        n_test=len(d["yt"]),
        data=d["source"],
        quick=bool(args.quick),
        seconds=time.perf_counter() - start,
    )
    print(f"one pass over {len(d['y'])} images ({d['source']}), batches of {BATCH}:")
    for r in rows:
        print(
            f"  {r['learner']:<40} {100 * r['accuracy']:6.2f}%  {r['model_bytes'] / 1024:8.1f}"
            f" KiB  update {r['update_cost_vs_cnn']:6.3f}x the CNN step"
        )
    print("drift (accuracy on the new writer): frozen at half-way -> continued updates")
    for name, s in summary["drift"].items():
        print(
            f"  {name:<40} {100 * s['shifted_accuracy_frozen_at_half']:6.2f}% -> "
            f"{100 * s['shifted_accuracy_continued']:6.2f}%"
        )
    all_rows = rows + drift_rows
    if args.plot:
        plot(all_rows, args.plot)
        print(f"wrote {args.plot}")
    write_results(args.json_path, all_rows, summary, machine=machine_info(threads=1), config=cfg)
    return 0
