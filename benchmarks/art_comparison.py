"""tinyodl.attacks against the Adversarial Robustness Toolbox, measured (chapter 11).

The figures behind the report of ``tests/test_attacks_art.py``: the same 2NN (one epoch on
the shipped MNIST subset, seed 0) in tinyodl and, with the same weights, in PyTorch wrapped
by ART 1.20's ``PyTorchClassifier``.

* FGSM (L-inf) and PGD without random start (L-inf, L2): largest difference between the two
  libraries' adversarial examples and the fraction of pixels that differ (sign ties of
  gradients that are zero to float precision);
* HopSkipJump (labels only): median L2 distance of ours at ART's query count;
* score-based: our NES against ART's Square attack (L-inf 0.2): ART reports a total query
  count, i.e. a mean per example; NES runs once with that mean as its per-example cap and
  once with 5x that cap (the protocol of the test), reporting its success and mean queries.

ART's HopSkipJump and SquareAttack draw from numpy's global generator; it is seeded (0)
before each, so the ART figures are reproducible.

Needs the test extra (``adversarial-robustness-toolbox``, ``torch``)::

    python benchmarks/art_comparison.py --json benchmarks/results/security_art.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import torch  # noqa: E402
import torch_models  # noqa: E402
from art.attacks.evasion import FastGradientMethod as ArtFGM  # noqa: E402
from art.attacks.evasion import HopSkipJump as ArtHSJ  # noqa: E402
from art.attacks.evasion import ProjectedGradientDescent as ArtPGD  # noqa: E402
from art.attacks.evasion import SquareAttack as ArtSquare  # noqa: E402
from art.estimators.classification import PyTorchClassifier  # noqa: E402
from security_helpers import mnist_mlp, mnist_test  # noqa: E402

from tinyodl import nn  # noqa: E402
from tinyodl.attacks import FGSM, PGD, Classifier  # noqa: E402
from tinyodl.attacks.blackbox import NES, HopSkipJump  # noqa: E402
from tinyodl.bench._common import machine_info, write_results  # noqa: E402


class Counting(torch.nn.Module):
    def __init__(self, module):
        super().__init__()
        self.module, self.count = module, 0

    def forward(self, x):
        self.count += int(x.shape[0])
        return self.module(x.float())


def _diff(ours, theirs, keep=None):
    """Largest difference and fraction of differing values; with ``keep`` (examples whose
    clean loss is above 1e-3) also over those: below it ``softmax - onehot`` is float32
    rounding noise, so a gradient sign there is arbitrary in either library."""
    d = np.abs(ours - theirs)
    out = {"max_abs_diff": float(d.max()), "fraction_differing": float(np.mean(d > 1e-5))}
    if keep is not None:
        out["examples_differing"] = int(np.sum((d > 1e-5).reshape(len(d), -1).any(axis=1)))
        out["fraction_differing_loss_gt_1e-3"] = float(np.mean(d[keep] > 1e-5))
        out["max_abs_diff_loss_gt_1e-3"] = float(d[keep].max())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--n", type=int, default=200, help="test images for FGSM/PGD")
    parser.add_argument("--n-blackbox", type=int, default=20)
    args = parser.parse_args()
    import art

    model = mnist_mlp()
    twin = torch_models.mlp_2nn()
    twin.load_state_dict(nn.torch_state_dict(model, mapping=list(twin.state_dict())))
    twin.eval()
    counting = Counting(twin)
    clf = PyTorchClassifier(
        counting,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=(1, 28, 28),
        nb_classes=10,
        clip_values=(0.0, 1.0),
    )
    x, y = mnist_test(args.n)
    onehot = np.eye(10, dtype=np.float32)[y]
    rows, summary = [], {"art_version": art.__version__, "examples": args.n}
    keep = Classifier(model).loss(x, y) > 1e-3
    summary["examples_loss_gt_1e-3"] = int(keep.sum())

    def add(setting, values, seconds):
        for k, v in values.items():
            rows.append(
                {
                    "experiment": "art_comparison",
                    "setting": setting,
                    "metric": k,
                    "value": v,
                    "seconds": round(seconds, 3),
                }
            )
        summary[setting] = values

    t = time.perf_counter()
    add(
        "FGSM Linf eps 0.3",
        _diff(
            FGSM(model, eps=0.3).generate(x, y),
            ArtFGM(clf, norm=np.inf, eps=0.3).generate(x, onehot),
            keep,
        ),
        time.perf_counter() - t,
    )
    kw = {"eps": 0.2, "eps_step": 0.02, "max_iter": 10}
    t = time.perf_counter()
    add(
        "PGD Linf eps 0.2, 10 steps, no random start",
        _diff(
            PGD(model, norm=np.inf, **kw).generate(x, y),
            ArtPGD(clf, norm=np.inf, num_random_init=0, verbose=False, **kw).generate(x, onehot),
            keep,
        ),
        time.perf_counter() - t,
    )
    kw2 = {"eps": 2.0, "eps_step": 0.25, "max_iter": 10}
    t = time.perf_counter()
    add(
        f"PGD L2 eps 2, 10 steps, no random start ({int(keep.sum())} examples with loss > 1e-3)",
        _diff(
            PGD(model, norm=2, **kw2).generate(x[keep], y[keep]),
            ArtPGD(clf, norm=2, num_random_init=0, verbose=False, **kw2).generate(
                x[keep], onehot[keep]
            ),
        ),
        time.perf_counter() - t,
    )
    xb, yb = x[: args.n_blackbox], y[: args.n_blackbox]
    counting.count = 0
    np.random.seed(0)  # noqa: NPY002 -- ART's attacks sample from the global generator
    t = time.perf_counter()
    x_art = ArtHSJ(clf, norm=2, max_iter=10, max_eval=1000, init_eval=100, verbose=False).generate(
        xb
    )
    art_s = time.perf_counter() - t
    art_q = counting.count / len(xb)
    ours = HopSkipJump(model, max_queries=int(art_q), seed=0)
    t = time.perf_counter()
    ours.generate(xb, yb)
    add(
        "HopSkipJump L2 (labels only)",
        {
            "art_queries_per_example": art_q,
            "art_median_l2": float(
                np.median(np.linalg.norm((x_art - xb).reshape(len(xb), -1), axis=1))
            ),
            "ours_queries_per_example": float(ours.queries_.mean()),
            "ours_median_l2": float(np.median(ours.distances_)),
            "art_seconds": art_s,
        },
        time.perf_counter() - t,
    )
    counting.count = 0
    np.random.seed(0)  # noqa: NPY002
    t = time.perf_counter()
    x_sq = ArtSquare(
        clf, norm=np.inf, eps=0.2, max_iter=300, nb_restarts=1, verbose=False
    ).generate(xb, onehot[: len(xb)])
    sq_s = time.perf_counter() - t
    budget = counting.count / len(xb)
    values = {
        "art_square_mean_queries": budget,
        "art_square_success": float(np.mean(clf.predict(x_sq).argmax(1) != yb)),
        "art_seconds": sq_s,
    }
    t = time.perf_counter()
    for factor in (1, 5):
        nes = NES(
            model,
            eps=0.2,
            eps_step=0.02,
            samples=10,
            momentum=0.9,
            max_queries=int(factor * budget),
            seed=0,
        )
        nes.generate(xb, yb)
        values[f"ours_nes_cap{factor}x_mean_queries"] = float(nes.queries_.mean())
        values[f"ours_nes_cap{factor}x_success"] = float(nes.success_.mean())
    add("score-based Linf eps 0.2: ART Square vs our NES", values, time.perf_counter() - t)
    write_results(args.json, rows, summary, machine=machine_info(threads=1))
    for k, v in summary.items():
        print(k, v)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
