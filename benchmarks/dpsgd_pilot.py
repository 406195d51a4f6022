"""Pilot runs that chose ``tinyodl bench dpsgd``'s recipe, on a split of the *training* set.

The full MNIST training set is split 50,000 / 10,000 (``default_rng(123)`` permutation); the
pipeline of ``tinyodl.bench.dpsgd`` (DP-PCA-60 + 1000 ReLU, lot 600, C = 4, delta 1e-5,
epsilon including the DP-PCA, EMA of the iterates) trains on the 50,000 and is scored on the
10,000. The test set is never read, so choosing the learning rate here costs the test
numbers nothing (the choice itself is not accounted: the usual practice, stated in
``benchmarks/README.md``). Examples (one thread)::

    python benchmarks/dpsgd_pilot.py --epsilon 8 --epochs 40 --lr-scale 15 --decay 0.5
    python benchmarks/dpsgd_pilot.py --epsilon 8 --epochs 40 --lr-scale 15 --public 5000
    python benchmarks/dpsgd_pilot.py --non-private --epochs 20 --lr-scale 10

``--public N`` fits an exact PCA on N of the 50,000 declared public and trains on the rest;
``--decay F`` makes the learning rate fall linearly to zero over the last fraction F;
``--feature-scale K`` trains on the PCA features times K (``tinyodl bench dpsgd
--feature-scale``); ``--momentum M`` uses SGD with momentum M (post-processing: no privacy
cost; divide ``--lr-scale`` by 1 / (1 - M) to keep the effective rate); ``--weight-decay W``
adds L2 decay to the noisy gradient (also post-processing); ``--average D`` sets the decay of the
exponential moving average of the iterates that is evaluated (post-processing too);
``--augment K`` trains with augmentation multiplicity K (``--max-shift`` pixels, as
``tinyodl bench dpsgd --augment``).
Prints the noise multiplier, the epsilon spent and the validation accuracy per epoch.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tinyodl import backend, nn, privacy
from tinyodl.bench import dpsgd as abadi
from tinyodl.data import load_mnist, to_float
from tinyodl.train import evaluate, fit


def _to_norm(f: np.ndarray, norm: float) -> np.ndarray:
    """Every row scaled to L2 norm ``norm`` (float32)."""
    return (f * (norm / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12))).astype(
        np.float32
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="/work/shared/data/mnist")
    p.add_argument("--epsilon", type=float, default=8.0)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--lr-scale", type=float, default=abadi.LR_SCALE)
    p.add_argument("--decay", type=float, default=0.0, help="fraction of the run decayed")
    p.add_argument("--pca-noise", type=float, default=8.0)
    p.add_argument("--public", type=int, default=0, help="images held out as public for PCA")
    p.add_argument("--feature-scale", type=float, default=1.0, help="PCA features times this")
    p.add_argument("--momentum", type=float, default=0.0, help="SGD momentum (DP-SGD only)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="SGD L2 weight decay")
    p.add_argument("--average", type=float, default=abadi.AVERAGE, help="EMA decay of iterates")
    p.add_argument("--seed", type=int, default=0, help="DP noise, sampling and init seed")
    p.add_argument(
        "--normalize",
        type=float,
        default=0.0,
        help="scale every image to this L2 norm (per example, no privacy cost)",
    )
    p.add_argument(
        "--feature-norm",
        type=float,
        default=0.0,
        help="scale every (centred) feature vector to this L2 norm (per example, no privacy cost)",
    )
    p.add_argument("--whiten", action="store_true", help="(probe, not DP) unit-variance features")
    p.add_argument("--center", action="store_true", help="centre the features on a DP mean")
    p.add_argument(
        "--center-pixels",
        action="store_true",
        help="centre the images on a DP mean before the DP-PCA (a centred PCA; replaces --center)",
    )
    p.add_argument(
        "--augment",
        type=int,
        default=0,
        metavar="K",
        help="augmentation multiplicity: K shifted copies per example, mean gradient clipped once",
    )
    p.add_argument("--max-shift", type=int, default=abadi.MAX_SHIFT, help="pixels, with --augment")
    p.add_argument("--non-private", action="store_true")
    args = p.parse_args()
    if args.augment and (args.whiten or args.feature_norm or args.center_pixels or args.public):
        p.error("--augment shifts the images before the projection: not with --whiten, "
                "--feature-norm, --center-pixels or --public")  # fmt: skip
    backend.set_num_threads(1)
    x, y = load_mnist("train", path=args.data)
    x, y = to_float(x).reshape(len(x), -1), y.astype(np.int64)
    if args.normalize:
        x = _to_norm(x, args.normalize)
    perm = np.random.default_rng(123).permutation(len(x))
    xv, yv, x, y = x[perm[50000:]], y[perm[50000:]], x[perm[:50000]], y[perm[:50000]]
    prior = privacy.RDPAccountant()
    if args.center_pixels:  # DP mean of the images (bound sqrt(784): nothing clipped), composed
        noise = 0.0 if args.non_private else args.pca_noise
        mean = privacy.dp_mean(
            x, args.normalize or 28.0, noise, rng=np.random.default_rng([args.seed, 10])
        )
        x, xv = (x - mean).astype(np.float32), (xv - mean).astype(np.float32)
        if noise > 0:
            prior.compose_gaussian(noise)
    if args.public:
        projection = privacy.dp_pca(x[: args.public], abadi.COMPONENTS, 0.0)
        x, y = x[args.public :], y[args.public :]
    else:
        noise = 0.0 if args.non_private else args.pca_noise
        projection = privacy.dp_pca(
            x, abadi.COMPONENTS, noise, rng=np.random.default_rng([args.seed, 9])
        )
        if noise > 0:
            prior.compose_gaussian(noise)
    projection = projection * args.feature_scale
    f, fv = (x @ projection).astype(np.float32), (xv @ projection).astype(np.float32)
    mean = np.zeros(abadi.COMPONENTS)
    if args.center:  # DP mean of the features (bound sqrt(784): nothing clipped), composed
        noise = 0.0 if args.non_private else args.pca_noise
        bound = (args.normalize or 28.0) * args.feature_scale
        mean = privacy.dp_mean(f, bound, noise, rng=np.random.default_rng([args.seed, 10]))
        f, fv = (f - mean).astype(np.float32), (fv - mean).astype(np.float32)
        if noise > 0:
            prior.compose_gaussian(noise)
    if args.whiten:  # probe only: per-feature scale from the private features, not DP
        std = f.std(axis=0)
        scale = np.sqrt(np.mean(np.sum(f**2, 1)) / np.mean(np.sum((f / std) ** 2, 1))) / std
        f, fv = (f * scale).astype(np.float32), (fv * scale).astype(np.float32)
    if args.feature_norm:
        f, fv = _to_norm(f, args.feature_norm), _to_norm(fv, args.feature_norm)
    augment = None
    if args.augment:  # train on the images; each lot shifted K times, then projected
        augment = abadi.shift_augmentation(projection, mean, args.max_shift)
    spe = round(len(f) / abadi.LOT_SIZE)
    steps = args.epochs * spe
    base = abadi._schedule(spe, args.lr_scale)

    def schedule(step: int) -> float:
        return base(step) * (min(1.0, (1 - step / steps) / args.decay) if args.decay else 1.0)

    model = abadi._abadi_model(args.seed)
    t0 = time.perf_counter()
    if args.non_private:
        fit(model, nn.SGD(model, lr=0.1), f, y, epochs=args.epochs, batch_size=abadi.LOT_SIZE,
            seed=args.seed, schedule=schedule, progress=False)  # fmt: skip
        print(f"non-private: validation accuracy {evaluate(model, fv, yv)[1]:.4f}")
        return
    sigma = privacy.noise_multiplier_for_epsilon(
        args.epsilon, q=abadi.LOT_SIZE / len(f), steps=steps, delta=abadi.DELTA, prior=prior
    )
    sgd = nn.SGD(model, lr=0.1, momentum=args.momentum, weight_decay=args.weight_decay)
    run = privacy.fit_dpsgd(
        model, sgd, f if augment is None else x, y, lot_size=abadi.LOT_SIZE,
        clip_norm=abadi.CLIP_NORM,
        noise_multiplier=sigma, epochs=args.epochs, delta=abadi.DELTA, seed=args.seed,
        schedule=schedule, clipping="ghost", prior=prior, average=args.average,
        x_val=fv, y_val=yv, augment=augment, multiplicity=args.augment or 1,
    )  # fmt: skip
    print(
        f"{vars(args)}: sigma {sigma:.3f}, epsilon {run.epsilons[-1]:.3f}, validation "
        f"accuracy {evaluate(model, fv, yv)[1]:.4f}, {time.perf_counter() - t0:.0f} s"
    )
    print("per epoch:", [round(a, 4) for a in run.history.val_accuracy])


if __name__ == "__main__":
    main()
