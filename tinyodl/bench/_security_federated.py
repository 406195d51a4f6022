"""Part ``federated`` of ``tinyodl bench security``: FedAvg with 10% malicious clients sending
boosted updates, against the aggregators of chapter 09 (mean, median, trimmed mean, Krum)."""

from __future__ import annotations

import importlib.util
import time
from typing import Any

import numpy as np

from tinyodl import models
from tinyodl.attacks.federated import MaliciousClients
from tinyodl.bench._security_evasion import row


def part_federated(data: dict, cfg: dict, seed: int) -> tuple[list[dict], dict]:
    """Global test accuracy after ``fl_rounds`` rounds of FedAvg (2NN, IID), per aggregator,
    without and with the attack (label-flipping clients boosted ``fl_boost`` times)."""
    if importlib.util.find_spec("tinyodl.federated") is None:
        return [], {"skipped": "tinyodl.federated (chapter 09) is not installed"}
    from tinyodl.federated import (
        CoordinateMedian,
        FederatedServer,
        Krum,
        LocalSGD,
        RandomSelection,
        TrimmedMean,
        WeightedMean,
        iid_partition,
        make_clients,
    )

    k = cfg["fl_clients"]
    clients = make_clients(iid_partition(len(data["y_train"]), k, seed=seed), seed=seed)
    malicious = set(range(0, k, int(round(1 / cfg["fl_malicious"]))))
    per_round = max(int(round(cfg["fl_fraction"] * k)), 1)
    aggregators = {
        "mean": WeightedMean,
        "median": CoordinateMedian,
        "trimmed mean (beta=0.2)": lambda: TrimmedMean(0.2),
        "Krum (f=2)": lambda: Krum(2),
    }
    rows, summary = [], {}
    for name, make in aggregators.items():
        entry = {}
        for attacked in (False, True):
            update: Any = LocalSGD(1, 10, 0.1)
            if attacked:
                update = MaliciousClients(
                    update, malicious, boost=cfg["fl_boost"], poison="label_flip"
                )
            server = FederatedServer(
                models.mlp_2nn(seed=seed),
                data["x_train"],
                data["y_train"],
                clients,
                update_fn=update,
                aggregator=make(),
                selection=RandomSelection(cfg["fl_fraction"]),
                seed=seed,
            )
            t = time.perf_counter()
            server.run(
                cfg["fl_rounds"],
                data["x_test"],
                data["y_test"],
                eval_every=cfg["fl_rounds"],
                progress=cfg["progress"],
            )
            acc = float(server.history_[-1]["test_accuracy"])
            setting = (
                f"{name}, {len(malicious)}/{k} clients label-flip x{cfg['fl_boost']:g}"
                if attacked
                else f"{name}, no attack"
            )
            rows.append(row("federated", setting, "test_accuracy", acc, time.perf_counter() - t))
            entry["attacked" if attacked else "clean"] = acc
        summary[name] = entry
    summary["setting"] = {
        "clients": k,
        "per_round": per_round,
        "rounds": cfg["fl_rounds"],
        "malicious": sorted(malicious),
        "boost": cfg["fl_boost"],
        "model": "mlp_2nn, IID, E=1, B=10",
    }
    summary["malicious_fraction"] = float(np.round(len(malicious) / k, 3))
    return rows, summary
