"""``tinyodl bench dpsgd``: Abadi et al. (2016) on MNIST -- test accuracy against epsilon.

The paper's MNIST model (GUIDE section 5): a 60-dimensional PCA projection, one hidden layer
of 1,000 ReLU units, lots of 600 by Poisson sampling (q = 0.01), clipping norm C = 4, SGD
with the learning rate falling linearly from 0.1 to 0.052 over 10 epochs and constant after.
Reported: 90 / 95 / 97 % at epsilon 0.5 / 2 / 8 (delta 1e-5), 98.3% without privacy.
Here the rate is that schedule times ``LR_SCALE`` (6 for DP-SGD, 2 below epsilon 1, 15 for
the non-private baseline), falling linearly to zero over the second half of the run.

Here the PCA is **fitted with differential privacy** on the training images
(:func:`tinyodl.privacy.dp_pca`, Gaussian noise with multiplier ``--pca-noise`` on the
second-moment matrix of row-clipped images; by default ``max(8, 16 / epsilon)``, so that the
projection takes a small share of a small budget) and its cost is composed into the same RDP
accountant as the DP-SGD steps, so every epsilon below covers the whole pipeline. The
features are then centred, as an ordinary PCA centres its data, on their mean released by the
Gaussian mechanism with the same noise multiplier (:func:`tinyodl.privacy.dp_mean`; the rows'
norm is at most ``sqrt(784) = 28`` for pixels in [0, 1], so nothing is clipped), also composed
into the accountant (``--no-center`` skips it, as the runs before it did). For each
target epsilon and number of epochs the noise multiplier is the smallest one that stays
within the target (:func:`tinyodl.privacy.noise_multiplier_for_epsilon` with the PCA as
``prior``). One step beyond the paper: DP-SGD trains with **augmentation multiplicity** (De et
al. 2022; ``--augment K``, default 4, 0 = the paper's recipe): every example of a lot is
shifted by up to one pixel K times and its gradient is the mean over the copies, clipped once
(the same privacy; :func:`shift_augmentation`). DP-FTRL (tree aggregation, no sampling, no
augmentation) runs at the same epsilons for comparison, and the same network without any
privacy (nor augmentation) gives the baseline.

Full run: ``tinyodl bench dpsgd --json FILE --plot FIG`` on the full MNIST
(``--data DIR`` or ``$TINYODL_MNIST_DIR``). ``--quick``: the shipped subset, two short runs.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

HELP = "Abadi et al. 2016 on MNIST: DP-SGD (PCA-60 + 1000 ReLU), accuracy against epsilon"

#: The paper's test accuracies by epsilon (delta = 1e-5), and without privacy.
PAPER = {0.5: 0.90, 2.0: 0.95, 8.0: 0.97}
PAPER_NON_PRIVATE = 0.983
LOT_SIZE, CLIP_NORM, DELTA, HIDDEN, COMPONENTS = 600, 4.0, 1e-5, 1000, 60

#: (target epsilon, epochs) of the full run, chosen by pilots on a validation split of the
#: training set (benchmarks/dpsgd_pilot.py, benchmarks/README.md).
FULL_RUNS = ((0.5, 60), (2.0, 45), (8.0, 100))
QUICK_RUNS = ((2.0, 5), (8.0, 5))
#: The learning rate is the paper's schedule times LR_SCALE (DP-SGD; the non-private
#: baseline uses NON_PRIVATE_LR_SCALE), falling linearly to zero over the last
#: DECAY_FRACTION of the steps; the reported DP-SGD model is the exponential moving average
#: of the iterates with decay AVERAGE (post-processing). Chosen by the same pilots: a larger
#: rate helps short runs, but over long ones it lets the noise random-walk the weights away
#: (15x over 250 epochs at epsilon 8 fell to 95.0%).
#: Below epsilon 1 the noise is large (sigma ~7) and the rate SMALL_EPSILON_LR_SCALE does
#: better (pilots at epsilon 0.5: 90.76% validation against 87.47% at 6x).
LR_SCALE, NON_PRIVATE_LR_SCALE, DECAY_FRACTION, AVERAGE = 6.0, 15.0, 0.5, 0.9995
SMALL_EPSILON_LR_SCALE = 2.0
#: DP-SGD trains on the PCA features times FEATURE_SCALE (a fixed, data-independent
#: rescaling, so it costs no privacy): larger inputs give larger gradients against the fixed
#: clipping norm C, so more of each clipped update is signal and less of the noise
#: N(0, sigma^2 C^2) lands on weights the data does not move (pilots, benchmarks/README.md).
FEATURE_SCALE = 1.0
#: Centre the PCA features on a DP mean (pilots: 96.25 -> 96.71% validation at epsilon 8);
#: PIXEL_NORM_BOUND bounds every image's (and so every projected row's) L2 norm.
CENTER, PIXEL_NORM_BOUND = True, 28.0
#: L2 weight decay of the DP-SGD optimizer (applied to the noisy gradient: post-processing)
#: at target epsilons up to WEIGHT_DECAY_MAX_EPSILON, none above (pilots: it helps where the
#: noise is large -- epsilon 2: 94.78 -> 95.12% validation -- and hurt at epsilon 8).
WEIGHT_DECAY, WEIGHT_DECAY_MAX_EPSILON = 5e-4, 2.0
#: Augmentation multiplicity (De et al. 2022), a step beyond the paper: every example of a lot
#: is shifted by up to MAX_SHIFT pixels (zero fill) AUGMENT_MULTIPLICITY times and its
#: gradient is the mean over the copies, clipped once -- the same privacy (one example still
#: moves one clipped gradient), less variance in each clipped gradient. ``--augment 0`` is
#: the paper's recipe without it (pilots: benchmarks/README.md).
AUGMENT_MULTIPLICITY, MAX_SHIFT = 4, 1
FTRL_EPOCHS, NON_PRIVATE_EPOCHS = 30, 50


def add_arguments(parser) -> None:
    parser.add_argument(
        "--data", default=None, help="folder with the full MNIST (default $TINYODL_MNIST_DIR)"
    )
    parser.add_argument(
        "--runs",
        default=None,
        help="target epsilons and epochs, e.g. '2:30,8:60' (default: the paper's grid)",
    )
    parser.add_argument(
        "--pca-noise",
        type=float,
        default=None,
        help="noise multiplier of the DP-PCA (default: max(8, 16 / epsilon))",
    )
    parser.add_argument(
        "--lr-scale",
        type=float,
        default=None,
        help=f"DP-SGD learning rate: the paper's schedule times this (default {LR_SCALE:g}, "
        f"{SMALL_EPSILON_LR_SCALE:g} below epsilon 1)",
    )
    parser.add_argument(
        "--feature-scale",
        type=float,
        default=FEATURE_SCALE,
        help="DP-SGD trains on the PCA features times this, relative to the clipping norm "
        f"(default {FEATURE_SCALE:g})",
    )
    parser.add_argument(
        "--weight-decay",
        type=float,
        default=None,
        help=f"DP-SGD L2 weight decay (default {WEIGHT_DECAY:g} for target epsilons up to "
        f"{WEIGHT_DECAY_MAX_EPSILON:g}, 0 above)",
    )
    parser.add_argument(
        "--ftrl-epochs", type=int, default=None, help="epochs of each DP-FTRL run (default 30)"
    )
    parser.add_argument(
        "--no-center",
        action="store_true",
        help="do not centre the PCA features on their DP mean (the recipe before it)",
    )
    parser.add_argument(
        "--augment",
        type=int,
        default=AUGMENT_MULTIPLICITY,
        metavar="K",
        help=f"DP-SGD augmentation multiplicity: K copies of each image shifted by up to "
        f"{MAX_SHIFT} pixel, their mean gradient clipped once (default {AUGMENT_MULTIPLICITY}; "
        "0: no augmentation, the paper's recipe)",
    )
    parser.add_argument("--no-ftrl", action="store_true", help="skip the DP-FTRL comparison")
    parser.add_argument("--no-baseline", action="store_true", help="skip the non-private baseline")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the rows already in --json FILE that this run does not redo "
        "(same method and target epsilon are replaced)",
    )
    parser.add_argument("--plot", default=None, help="write the privacy-utility plot here")
    parser.add_argument(
        "--replot",
        nargs="+",
        default=None,
        metavar="FILE",
        help="no training: draw --plot from the rows of these result JSONs and bench logs",
    )


def _abadi_model(seed: int):
    from tinyodl import nn

    model = nn.Sequential(
        [nn.Linear(COMPONENTS, HIDDEN, seed=seed), nn.ReLU(), nn.Linear(HIDDEN, 10, seed=seed + 1)]
    )
    model[0].needs_input_grad = False  # its input is data: backward skips dL/dx
    return model


def _schedule(steps_per_epoch: int, scale: float = 1.0, total_steps: int | None = None):
    """``scale`` times 0.1 falling linearly to 0.052 over 10 epochs, then constant (the
    paper's schedule for ``scale=1``); with ``total_steps``, the rate then falls linearly to
    zero over the last ``DECAY_FRACTION`` of the run (less noise in the final iterates)."""
    ramp = 10 * steps_per_epoch
    tail = None if total_steps is None else max(1, round(DECAY_FRACTION * total_steps))

    def lr(step: int) -> float:
        rate = scale * (0.1 - (0.1 - 0.052) * min(step, ramp) / ramp)
        if tail is not None:
            rate *= min(1.0, max(0.0, total_steps - step) / tail)
        return rate

    return lr


@dataclass
class Pipeline:
    """MNIST through the DP-PCA: what :func:`load_pipeline` fits and returns.

    Attributes
    ----------
    images : ndarray (N, 784) float32, the training images (what augmentation shifts)
    y_train : ndarray (N,) int64
    x_test : ndarray (M, 60) float32, the test features ``(image @ projection - mean)``
    y_test : ndarray (M,) int64
    prior : RDPAccountant of the DP-PCA (and the DP mean)
    source : str, where the images came from
    projection : ndarray (784, 60) float64, the DP-PCA directions
    mean : ndarray (60,) float64, the DP mean of the features (zeros when not centred)
    """

    images: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    prior: Any
    source: str
    projection: np.ndarray
    mean: np.ndarray

    def train_features(self) -> np.ndarray:
        """(N, 60) float32 features of the training images."""
        return (self.images @ self.projection - self.mean).astype(np.float32)


def load_features(
    data: str | None, quick: bool, pca_noise: float, seed: int, center: bool = CENTER
):
    """PCA-60 features of MNIST, the projection (and with ``center`` the mean the features
    are centred on) fitted with DP; and the accountant of them.

    Returns
    -------
    (x_train, y_train, x_test, y_test, prior, source), features float32 (N, 60)
    """
    p = load_pipeline(data, quick, pca_noise, seed, center)
    return p.train_features(), p.y_train, p.x_test, p.y_test, p.prior, p.source


def load_pipeline(
    data: str | None, quick: bool, pca_noise: float, seed: int, center: bool = CENTER
) -> Pipeline:
    """The images, the DP-PCA projection (and DP mean) fitted on them, and its accountant
    (see :func:`load_features`)."""
    from tinyodl import privacy
    from tinyodl.data import load_mnist, to_float

    if quick:
        path, source = None, "shipped subset"
    else:
        path = data or os.environ.get("TINYODL_MNIST_DIR")
        if not path:
            raise SystemExit(
                "tinyodl bench dpsgd: the full run needs --data DIR or "
                "$TINYODL_MNIST_DIR (or use --quick for the shipped subset)"
            )
        source = f"full MNIST ({path})"
    xtr, ytr = load_mnist("train", path=path)
    xte, yte = load_mnist("test", path=path)
    xtr = to_float(xtr).reshape(len(xtr), -1)
    xte = to_float(xte).reshape(len(xte), -1)
    projection = privacy.dp_pca(xtr, COMPONENTS, pca_noise, rng=np.random.default_rng([seed, 9]))
    prior = privacy.RDPAccountant()
    if pca_noise > 0:
        prior.compose_gaussian(pca_noise)
    mean = np.zeros(COMPONENTS)
    if center:
        rng = np.random.default_rng([seed, 10])
        mean = privacy.dp_mean(xtr @ projection, PIXEL_NORM_BOUND, pca_noise, rng=rng)
        if pca_noise > 0:
            prior.compose_gaussian(pca_noise)
    x_test = (xte @ projection - mean).astype(np.float32)
    return Pipeline(xtr, ytr.astype(np.int64), x_test, yte.astype(np.int64), prior, source,
                    projection, mean)  # fmt: skip


def shift_augmentation(projection: np.ndarray, mean: np.ndarray, max_shift: int = MAX_SHIFT):
    """``augment(images, k, rng)``: k randomly shifted copies of each image, as features.

    A shift by ``(dy, dx)`` pixels with zero fill, ``x'(r, c) = x(r - dy, c - dx)``, followed
    by the projection ``V`` is one linear map: ``x' . V = x . V_s`` with the *basis* shifted the
    other way, ``V_s(r, c) = V(r + dy, c + dx)`` (zero outside the image). So the
    ``(2 s + 1)^2`` shifted bases are formed once and a lot costs one product with all of them.

    Parameters
    ----------
    projection : ndarray (784, c), the DP-PCA directions (28 x 28 images)
    mean : ndarray (c,), subtracted from every feature vector
    max_shift : int s >= 0, shifts in ``[-s, s]`` on each axis, uniformly

    Returns
    -------
    callable ``(images (n, 784), k, rng) -> (n k, c) float32``, example-major (the
    ``augment`` of :func:`tinyodl.privacy.fit_dpsgd`)
    """
    if projection.ndim != 2 or projection.shape[0] != 784 or not 0 <= max_shift < 28:
        raise ValueError(
            "shift_augmentation: needs a (784, c) projection of 28 x 28 images and 0 <= "
            f"max_shift < 28, got shape {projection.shape} and max_shift {max_shift!r}"
        )
    c, s = projection.shape[1], int(max_shift)
    padded = np.pad(projection.reshape(28, 28, c), ((s, s), (s, s), (0, 0)))
    bases = np.concatenate(
        [padded[s + dy : s + dy + 28, s + dx : s + dx + 28].reshape(784, c)
         for dy in range(-s, s + 1) for dx in range(-s, s + 1)],
        axis=1,
    ).astype(np.float32)  # fmt: skip
    offsets, mean32 = (2 * s + 1) ** 2, mean.astype(np.float32)

    def augment(images: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        n = len(images)
        every = (images.astype(np.float32) @ bases).reshape(n, offsets, c)
        chosen = rng.integers(0, offsets, n * k)
        return every[np.repeat(np.arange(n), k), chosen] - mean32

    augment.max_shift = s
    return augment


def _row(method, target, spent, sigma, pca_noise, epochs, steps, acc, seconds) -> dict[str, Any]:
    return {
        "method": method,
        "epsilon": target,
        "epsilon_spent": spent,
        "delta": DELTA,
        "noise_multiplier": sigma,
        "pca_noise_multiplier": pca_noise,
        "epochs": epochs,
        "steps": steps,
        "lot_size": LOT_SIZE,
        "clip_norm": CLIP_NORM,
        "accuracy": acc,
        "seconds": seconds,
        "paper_accuracy": PAPER.get(target),
    }


def run_dpsgd(
    data,
    target: float,
    epochs: int,
    pca_noise: float,
    seed: int,
    progress: bool,
    lr_scale: float | None = None,
    feature_scale: float = FEATURE_SCALE,
    weight_decay: float | None = None,
    augment=None,
    multiplicity: int = 1,
):
    """One DP-SGD run at a target epsilon (the model reported is the average of the
    iterates), on the features times ``feature_scale``; returns its row. ``lr_scale`` and
    ``weight_decay`` default to :func:`lr_scale_for` and :func:`weight_decay_for` of the
    target. With ``augment`` (:func:`shift_augmentation`) ``data[0]`` holds the training
    *images*, and each example's gradient is the mean over ``multiplicity`` augmented
    copies."""
    from tinyodl import nn, privacy
    from tinyodl.train import evaluate

    xtr, ytr, xte, yte, prior = data
    if weight_decay is None:
        weight_decay = weight_decay_for(target)
    if lr_scale is None:
        lr_scale = lr_scale_for(target)
    if feature_scale <= 0:
        raise ValueError(f"run_dpsgd: feature_scale must be > 0, got {feature_scale}")
    scale = np.float32(feature_scale)
    shift = None if augment is None else getattr(augment, "max_shift", None)
    xte = scale * xte
    if augment is None:
        xtr = scale * xtr
    else:
        plain = augment
        augment = (lambda images, k, rng: scale * plain(images, k, rng)) if scale != 1 else plain
    q = LOT_SIZE / len(xtr)
    steps = int(round(epochs * len(xtr) / LOT_SIZE))
    sigma = privacy.noise_multiplier_for_epsilon(target, q=q, steps=steps, delta=DELTA, prior=prior)
    model = _abadi_model(seed)
    t0 = time.perf_counter()
    run = privacy.fit_dpsgd(
        model,
        nn.SGD(model, lr=0.1, weight_decay=weight_decay),
        xtr,
        ytr,
        lot_size=LOT_SIZE,
        clip_norm=CLIP_NORM,
        noise_multiplier=sigma,
        epochs=epochs,
        delta=DELTA,
        seed=seed,
        schedule=_schedule(round(len(xtr) / LOT_SIZE), lr_scale, steps),
        clipping="ghost",
        progress=progress,
        prior=prior,
        average=AVERAGE,
        augment=augment,
        multiplicity=multiplicity,
    )
    acc = evaluate(model, xte, yte)[1]
    row = _row(
        "dp-sgd",
        target,
        run.epsilons[-1],
        sigma,
        pca_noise,
        epochs,
        run.steps,
        acc,
        time.perf_counter() - t0,
    )
    row["lr_scale"], row["decay_fraction"] = lr_scale, DECAY_FRACTION
    row["feature_scale"], row["weight_decay"] = feature_scale, weight_decay
    row["augment_multiplicity"] = multiplicity if augment is not None else 0
    row["max_shift"] = shift
    return row


def run_ftrl(data, target: float, epochs: int, pca_noise: float, seed: int, progress: bool):
    """DP-FTRL (momentum 0.9) at the same target epsilon; returns its row."""
    from tinyodl import privacy
    from tinyodl.train import evaluate

    xtr, ytr, xte, yte, prior = data
    steps_per_epoch = len(xtr) // LOT_SIZE
    sigma = privacy.ftrl_noise_for_epsilon(target, steps_per_epoch, epochs, DELTA, prior=prior)
    model = _abadi_model(seed)
    t0 = time.perf_counter()
    run = privacy.fit_dpftrl(
        model,
        xtr,
        ytr,
        batch_size=LOT_SIZE,
        clip_norm=CLIP_NORM,
        noise_multiplier=sigma,
        epochs=epochs,
        lr=0.01,
        momentum=0.9,
        delta=DELTA,
        seed=seed,
        clipping="ghost",
        progress=progress,
        prior=prior,
    )
    acc = evaluate(model, xte, yte)[1]
    return _row(
        "dp-ftrl",
        target,
        run.epsilons[-1],
        sigma,
        pca_noise,
        epochs,
        run.steps,
        acc,
        time.perf_counter() - t0,
    )


def run_non_private(
    data_path,
    quick: bool,
    epochs: int,
    seed: int,
    lr_scale: float = NON_PRIVATE_LR_SCALE,
    center: bool = CENTER,
):
    """The same network and schedule without privacy (PCA without noise); returns its row."""
    from tinyodl import nn
    from tinyodl.train import evaluate, fit

    xtr, ytr, xte, yte, _, _ = load_features(data_path, quick, 0.0, seed, center)
    model = _abadi_model(seed)
    steps_per_epoch = len(xtr) // LOT_SIZE
    t0 = time.perf_counter()
    fit(
        model,
        nn.SGD(model, lr=0.1),
        xtr,
        ytr,
        epochs=epochs,
        batch_size=LOT_SIZE,
        seed=seed,
        schedule=_schedule(steps_per_epoch, lr_scale, epochs * steps_per_epoch),
        progress=False,
    )
    acc = evaluate(model, xte, yte)[1]
    row = _row(
        "non-private",
        float("inf"),
        float("inf"),
        0.0,
        0.0,
        epochs,
        epochs * (len(xtr) // LOT_SIZE),
        acc,
        time.perf_counter() - t0,
    )
    row["paper_accuracy"] = PAPER_NON_PRIVATE
    row["lr_scale"], row["decay_fraction"] = lr_scale, DECAY_FRACTION
    return row


def plot(rows: list[dict[str, Any]], path: str) -> None:
    """Accuracy against epsilon: DP-SGD, DP-FTRL, the paper's points, the non-private line."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for method, style in (("dp-sgd", "o-"), ("dp-ftrl", "s--")):
        mine = [r for r in rows if r["method"] == method]
        pts = sorted((r["epsilon_spent"], r["accuracy"]) for r in mine)
        k = max((r.get("augment_multiplicity") or 0 for r in mine), default=0)
        label = f"tinyodl {method.upper()}" + (f", augmentation x{k}" if k else "")
        if pts:
            ax.plot(*zip(*pts, strict=True), style, label=label)
    ax.plot(list(PAPER), list(PAPER.values()), "k*", markersize=10, label="Abadi et al. 2016")
    for r in rows:
        if r["method"] == "non-private":
            ax.axhline(r["accuracy"], color="grey", linestyle=":", label="non-private (tinyodl)")
    ax.set_xscale("log")
    ax.set_xticks([0.5, 1, 2, 4, 8], ["0.5", "1", "2", "4", "8"])
    ax.minorticks_off()
    ax.set_xlabel("epsilon (delta = 1e-5, DP-PCA included)")
    ax.set_ylabel("test accuracy")
    ax.set_title("MNIST, PCA-60 + 1000 ReLU, lot 600, C = 4")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def _parse_runs(text: str | None, quick: bool) -> tuple[tuple[float, int], ...]:
    if text is None:
        return QUICK_RUNS if quick else FULL_RUNS
    try:
        return tuple((float(a), int(b)) for a, b in (item.split(":") for item in text.split(",")))
    except ValueError:
        raise SystemExit(
            f"tinyodl bench dpsgd: --runs must look like '2:30,8:60', got {text!r}"
        ) from None


def lr_scale_for(target: float) -> float:
    """The default DP-SGD rate multiplier at a target epsilon (LR_SCALE, or
    SMALL_EPSILON_LR_SCALE below epsilon 1)."""
    return SMALL_EPSILON_LR_SCALE if target < 1.0 else LR_SCALE


def weight_decay_for(target: float) -> float:
    """The default DP-SGD weight decay at a target epsilon (WEIGHT_DECAY up to
    WEIGHT_DECAY_MAX_EPSILON, none above)."""
    return WEIGHT_DECAY if target <= WEIGHT_DECAY_MAX_EPSILON else 0.0


def pca_noise_for(target: float) -> float:
    """The default DP-PCA noise multiplier: 8, more for budgets below 2."""
    return max(8.0, 16.0 / target)


def rows_from_log(text: str) -> list[dict[str, Any]]:
    """The rows a run printed (:func:`_fmt` lines) read back from its output, for a run that
    was stopped before it wrote its JSON; fields not printed are None."""
    pattern = re.compile(
        r"^\s*(dp-sgd|dp-ftrl|non-private)\s+eps (\S+) \(target (\S+)\)\s+sigma (\S+)\s+"
        r"epochs (\d+)\s+accuracy (\S+)\s+(\S+) s$"
    )
    rows = []
    for line in text.splitlines():
        m = pattern.match(line)
        if m:
            method, spent, target, sigma, epochs, acc, seconds = m.groups()
            row = _row(method, float(target), float(spent), float(sigma), None, int(epochs),
                       None, float(acc), float(seconds))  # fmt: skip
            if method == "non-private":
                row["paper_accuracy"] = PAPER_NON_PRIVATE
            rows.append(row)
    return rows


def replot(files: list[str], path: str | None) -> int:
    """Draw the privacy-utility plot from result JSONs and printed logs (no training); a row
    of a later file replaces the row of an earlier one with the same method and target."""
    import json
    from pathlib import Path

    if not path:
        raise SystemExit("tinyodl bench dpsgd: --replot needs --plot FIG")
    rows: list[dict[str, Any]] = []
    for name in files:
        text = Path(name).read_text(encoding="utf-8")
        found = json.loads(text)["rows"] if name.endswith(".json") else rows_from_log(text)
        if not found:
            raise SystemExit(f"tinyodl bench dpsgd: no result rows in {name}")
        rows = merge_rows(rows, found)  # a later file's row replaces an earlier one
    plot(rows, path)
    return 0


def main(args) -> int:
    from threadpoolctl import threadpool_limits

    if args.replot:
        return replot(args.replot, args.plot)

    from tinyodl import backend
    from tinyodl.bench._common import command_line, machine_info

    backend.set_num_threads(1)
    threadpool_limits(1)
    runs = _parse_runs(args.runs, args.quick)
    t_all = time.perf_counter()
    if args.augment < 0:
        raise SystemExit(f"tinyodl bench dpsgd: --augment must be >= 0, got {args.augment}")
    pipelines: dict[float, Pipeline] = {}  # one DP-PCA per noise level
    progress = not args.quick
    machine = machine_info(threads=1)
    center = not args.no_center
    longest = max(e for _, e in runs)
    # the (fast) non-private baseline first; the file is rewritten after every row so a
    # long run that is stopped keeps what it finished (summary "complete": false)
    rows: list[dict[str, Any]] = []
    kept = _rows_to_keep(args.json_path) if args.merge else []
    if not args.no_baseline:
        baseline_epochs = longest if args.quick else NON_PRIVATE_EPOCHS
        rows.append(run_non_private(args.data, args.quick, baseline_epochs, args.seed,
                                    center=center))  # fmt: skip
        rows[-1]["centered"] = center
        print(_fmt(rows[-1]), flush=True)
    source = "shipped subset" if args.quick else "full MNIST"
    train_examples = None

    def save(complete: bool) -> None:
        for r in rows:
            r.setdefault("command", command_line())
        merged = merge_rows(kept, rows)
        _write(args.json_path, merged, source, train_examples, t_all, complete, machine)

    save(False)
    for target, epochs in runs:
        pca_noise = args.pca_noise if args.pca_noise is not None else pca_noise_for(target)
        if pca_noise not in pipelines:
            pipelines[pca_noise] = load_pipeline(
                args.data, args.quick, pca_noise, args.seed, center
            )
        pipe = pipelines[pca_noise]
        xtr, ytr, xte, yte, prior, source = (pipe.train_features(), pipe.y_train, pipe.x_test,
                                             pipe.y_test, pipe.prior, pipe.source)  # fmt: skip
        train_examples = len(xtr)
        data = (xtr, ytr, xte, yte, prior)
        scales = {"lr_scale": args.lr_scale, "feature_scale": args.feature_scale,
                  "weight_decay": args.weight_decay}  # fmt: skip
        if args.augment:
            scales["augment"] = shift_augmentation(pipe.projection, pipe.mean)
            scales["multiplicity"] = args.augment
        images = (pipe.images, ytr, xte, yte, prior)
        rows.append(run_dpsgd(images if args.augment else data, target, epochs, pca_noise,
                              args.seed, progress, **scales))  # fmt: skip
        rows[-1]["centered"] = center
        print(_fmt(rows[-1]), flush=True)
        save(False)
        if not args.no_ftrl:
            ftrl_epochs = args.ftrl_epochs or (epochs if args.quick else FTRL_EPOCHS)
            rows.append(run_ftrl(data, target, ftrl_epochs, pca_noise, args.seed, progress))
            rows[-1]["centered"] = center
            print(_fmt(rows[-1]), flush=True)
            save(False)
    save(True)
    if args.plot:
        plot(rows, args.plot)
    return 0


def merge_rows(kept: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``kept`` without the rows ``new`` redoes (same method and target epsilon), then ``new``."""
    redone = {(r["method"], r["epsilon"]) for r in new}
    return [r for r in kept if (r["method"], r["epsilon"]) not in redone] + list(new)


def _rows_to_keep(path: str | None) -> list[dict[str, Any]]:
    """The rows of an earlier result file, for ``--merge`` (each keeps its ``command``)."""
    import json
    from pathlib import Path

    if path is None:
        raise SystemExit("tinyodl bench dpsgd: --merge needs --json FILE")
    if not Path(path).exists():
        return []
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        rows = doc["rows"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"tinyodl bench dpsgd: cannot merge into {path}: {exc!r}") from None
    for r in rows:
        r.setdefault("command", doc.get("command"))
    return rows


def _write(path, rows, source, train_examples, t_all, complete, machine) -> None:
    """Write the rows with a summary (best DP-SGD accuracy within epsilon 2 and 8)."""
    from tinyodl.bench._common import write_results

    dp = [r for r in rows if r["method"] == "dp-sgd"]

    def best(limit):
        accs = [r["accuracy"] for r in dp if r["epsilon_spent"] <= limit]
        return max(accs) if accs else None

    summary = {
        "complete": complete,
        "data": source,
        "train_examples": train_examples,
        "pca": "DP-PCA fitted on the private training images (noise multiplier in each row's "
        "pca_noise_multiplier), its RDP composed into every epsilon; rows with centered=true "
        "also centre the features on their DP mean (same noise multiplier, composed too)",
        "best_accuracy_eps_le_2": best(2.0),
        "best_accuracy_eps_le_8": best(8.0),
        # None when the run had no row within that budget
        "target_95_at_eps_2_met": None if best(2.0) is None else best(2.0) >= 0.95,
        "target_97_at_eps_8_met": None if best(8.0) is None else best(8.0) >= 0.97,
        "paper": {"0.5": 0.90, "2": 0.95, "8": 0.97, "non_private": PAPER_NON_PRIVATE},
        "seconds": time.perf_counter() - t_all,
        "machine_note": "2-core machine shared with other jobs; seconds are wall-clock",
    }
    write_results(path, rows, summary, machine=machine)


def _fmt(r: dict[str, Any]) -> str:
    return (
        f"{r['method']:>11}  eps {r['epsilon_spent']:.3g} (target {r['epsilon']:g})  "
        f"sigma {r['noise_multiplier']:.3f}  epochs {r['epochs']}  "
        f"accuracy {r['accuracy']:.4f}  {r['seconds']:.0f} s"
    )
