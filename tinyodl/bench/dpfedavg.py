"""``tinyodl bench dpfedavg``: user-level DP-FedAvg, fixed against adaptive clipping.

Chapter 10 on the chapter 09 engine. Full MNIST split IID over K = 6,000 simulated users of
10 images each; every round each user joins with probability q = 0.02 (``PoissonSelection``,
120 expected), trains one local epoch (batches of 5, lr 0.1) of a 784-64-10 ReLU network and
sends its model difference; the server clips, adds Gaussian noise with total multiplier
z = 1.0 and divides by q K (:class:`tinyodl.privacy.fedavg.DPFedAvg`). 300 rounds are a
user-level (epsilon, 1e-5)-DP release with epsilon from the same RDP accountant as DP-SGD
(:func:`tinyodl.privacy.fedavg.dpfedavg_epsilon`).

Rows: the non-private FedAvg baseline (same users, same sampling), DP-FedAvg with three fixed
clipping norms (too small, about right, too large) and adaptive clipping (Andrew et al.
2021: target quantile 0.5, eta_C = 0.2, sigma_b = q K / 20) started from the two extremes.
A small network keeps the noise -- whose norm grows as the square root of the number of
parameters -- in proportion. ``--quick``: the shipped subset (1,200 users), 20 rounds.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

HELP = "user-level DP-FedAvg on MNIST users: fixed vs adaptive clipping, with epsilon"

DELTA = 1e-5


def add_arguments(parser) -> None:
    parser.add_argument(
        "--data", default=None, help="folder with the full MNIST (default $TINYODL_MNIST_DIR)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 300; quick 20)")
    parser.add_argument("--noise", type=float, default=1.0, help="total noise multiplier z")


def _model(seed: int):
    from tinyodl import nn

    return nn.Sequential(
        [nn.Linear(784, 64, seed=seed), nn.ReLU(), nn.Linear(64, 10, seed=seed + 1)]
    )


def _data(path: str | None, quick: bool):
    from tinyodl.data import load_mnist, to_float

    if not quick:
        path = path or os.environ.get("TINYODL_MNIST_DIR")
        if not path:
            raise SystemExit(
                "tinyodl bench dpfedavg: the full run needs --data DIR or "
                "$TINYODL_MNIST_DIR (or --quick)"
            )
    xtr, ytr = load_mnist("train", path=None if quick else path)
    xte, yte = load_mnist("test", path=None if quick else path)
    flat = [to_float(a).reshape(len(a), -1) for a in (xtr, xte)]
    return flat[0], ytr.astype(np.int64), flat[1], yte.astype(np.int64)


def run(data, configs, rounds: int, q: float, z: float, seed: int, progress: bool, save=None):
    """One row per configuration (``(name, clip, adaptive)``; clip None = non-private);
    ``save(rows)`` is called after each."""
    from tinyodl.federated import (
        FederatedServer,
        LocalSGD,
        PoissonSelection,
        WeightedMean,
        iid_partition,
        make_clients,
    )
    from tinyodl.privacy.fedavg import DPFedAvg, PrivacyHook, dpfedavg_epsilon

    x, y, xt, yt = data
    num_clients = len(y) // 10
    clients = make_clients(iid_partition(len(y), num_clients, seed=seed), seed=seed)
    rows = []
    for name, clip, adaptive in configs:
        private = clip is not None
        agg = DPFedAvg(clip, z, q * num_clients, adaptive=adaptive) if private else WeightedMean()
        hooks = [PrivacyHook(q, z, DELTA)] if private else []
        server = FederatedServer(
            _model(seed),
            x,
            y,
            clients,
            update_fn=LocalSGD(1, 5, 0.1),
            aggregator=agg,
            selection=PoissonSelection(q),
            hooks=hooks,
            min_reports=0,
            seed=seed,
        )
        t0 = time.perf_counter()
        server.run(rounds, x_test=xt, y_test=yt, eval_every=max(rounds // 10, 1), progress=progress)
        accs = [r["test_accuracy"] for r in server.history_ if "test_accuracy" in r]
        row = {
            "method": name,
            "clients": num_clients,
            "sample_rate": q,
            "rounds": rounds,
            "clip_norm": clip,
            "adaptive": adaptive,
            "final_clip_norm": agg.clip_norm_ if private else None,
            "noise_multiplier": z if private else 0.0,
            "update_noise_multiplier": agg.update_noise_multiplier_ if private else 0.0,
            "epsilon": dpfedavg_epsilon(q, z, rounds, DELTA) if private else float("inf"),
            "delta": DELTA,
            "accuracy": accs[-1],
            "accuracy_curve": accs,
            "clip_curve": [h["clip_norm"] for h in agg.history_] if private else None,
            "seconds": time.perf_counter() - t0,
        }
        rows.append(row)
        print(
            f"{name:>28}  eps {row['epsilon']:.2f}  final C "
            f"{row['final_clip_norm'] if private else float('nan'):.3f}  "
            f"accuracy {row['accuracy']:.4f}  {row['seconds']:.0f} s",
            flush=True,
        )
        if save is not None:
            save(rows)
    return rows


def main(args) -> int:
    from threadpoolctl import threadpool_limits

    from tinyodl import backend
    from tinyodl.bench._common import machine_info, write_results

    backend.set_num_threads(1)
    threadpool_limits(1)
    rounds = args.rounds or (20 if args.quick else 300)
    q = 0.05 if args.quick else 0.02
    configs = [  # the most telling first: rows are saved as they finish
        ("fedavg (non-private)", None, False),
        ("dp-fedavg fixed C=0.2", 0.2, False),
        ("dp-fedavg adaptive from 2", 2.0, True),
        ("dp-fedavg adaptive from 0.02", 0.02, True),
        ("dp-fedavg fixed C=0.02", 0.02, False),
        ("dp-fedavg fixed C=2", 2.0, False),
    ]
    if args.quick:
        configs = configs[:3]
    data = _data(args.data, args.quick)
    machine = machine_info(threads=1)

    def save(rows, complete=False):
        dp = [r for r in rows if r["noise_multiplier"] > 0]
        summary: dict[str, Any] = {
            "complete": complete,
            "data": "shipped subset" if args.quick else "full MNIST",
            "clients": rows[0]["clients"],
            "sample_rate": q,
            "rounds": rounds,
            "epsilon": dp[0]["epsilon"] if dp else None,
            "delta": DELTA,
            "best_fixed_accuracy": max(
                (r["accuracy"] for r in dp if not r["adaptive"]), default=None
            ),
            "adaptive_accuracy": [r["accuracy"] for r in dp if r["adaptive"]],
            "non_private": rows[0]["accuracy"],
            "machine_note": "2-core machine shared with other jobs; seconds are wall-clock",
        }
        write_results(args.json_path, rows, summary, machine=machine)

    rows = run(data, configs, rounds, q, args.noise, args.seed, not args.quick, save)
    save(rows, complete=True)
    return 0
