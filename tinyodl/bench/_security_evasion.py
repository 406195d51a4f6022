"""Parts of ``tinyodl bench security`` about evasion: natural and adversarially trained models,
transfer from the on-device model and similarity unpairing, query attacks (chapter 11)."""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np

from tinyodl import models, nn
from tinyodl.attacks import FGSM, PGD, BlackBox, Classifier, adversarial_accuracy
from tinyodl.attacks.blackbox import NES, HopSkipJump, TransferPriorAttack
from tinyodl.attacks.transfer import on_device_copy, transfer_rate
from tinyodl.defenses import OneCycle, adversarial_fit, robust_cnn, similarity_unpairing
from tinyodl.defenses.unpairing import gradient_similarity
from tinyodl.train import fit

EPS = 0.3  # L-infinity radius of the MNIST results (Madry et al. 2018)


def row(experiment: str, setting: str, metric: str, value: Any, seconds: float) -> dict:
    """One result row (the schema of the benchmark's ``rows``)."""
    return {
        "experiment": experiment,
        "setting": setting,
        "metric": metric,
        "value": value,
        "seconds": round(float(seconds), 3),
    }


def pgd20(model: Any, seed: int) -> PGD:
    """The PGD-20 of the results: eps 0.3, step 0.01 * 2.5 = 0.0375 (2.5 eps / 20), one
    random start (Madry et al.'s recipe scaled to 20 steps)."""
    return PGD(model, eps=EPS, eps_step=2.5 * EPS / 20, max_iter=20, num_random_init=1, seed=seed)


def part_natural(data: dict, cfg: dict, seed: int) -> tuple[list[dict], dict]:
    """``cnn_mcmahan`` trained on clean data: clean, FGSM and PGD-20 accuracy at eps 0.3."""
    t0 = time.perf_counter()
    model = models.cnn_mcmahan(seed=seed)
    opt = nn.SGD(model, lr=0.05, momentum=0.9)
    fit(
        model,
        opt,
        data["x_train"],
        data["y_train"],
        epochs=cfg["natural_epochs"],
        batch_size=64,
        seed=seed,
        progress=cfg["progress"],
    )
    model.eval()
    train_s = time.perf_counter() - t0
    n, n_pgd = cfg["eval_n"], min(cfg.get("natural_pgd_n", cfg["eval_n"]), cfg["eval_n"])
    out, rows = {}, [row("natural", "cnn_mcmahan", "train_seconds", train_s, train_s)]
    for name, attack, m in (
        ("clean_accuracy", None, n),
        ("fgsm_accuracy", FGSM(model, eps=EPS), n),
        ("pgd20_accuracy", pgd20(model, seed), n_pgd),  # the first n_pgd test images
    ):
        t = time.perf_counter()
        out[name] = adversarial_accuracy(model, attack, data["x_test"][:m], data["y_test"][:m])
        setting = f"cnn_mcmahan, first {m} test images"
        rows.append(row("natural", setting, name, out[name], time.perf_counter() - t))
    data["natural_model"] = model
    return rows, {**out, "eps": EPS, "eval_examples": n, "pgd20_eval_examples": n_pgd}


def part_adversarial_training(data: dict, cfg: dict, seed: int) -> tuple[list[dict], dict]:
    """FGSM with random start (Wong et al. 2020) on ``robust_cnn``; clean and PGD-20 accuracy."""
    import os

    rows, summary = [], {}
    x, y = data["x_train"], data["y_train"]
    xc, yc = data["x_check"], data["y_check"]
    for method in cfg["adv_methods"]:
        model = robust_cnn(seed)
        epochs = cfg["adv_epochs"] if method == "fgsm_rs" else cfg["pgd_epochs"]
        steps = epochs * int(np.ceil(len(x) / 100))
        load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        t0, c0 = time.perf_counter(), time.process_time()
        hist = adversarial_fit(
            model,
            nn.Adam(model, lr=cfg["adv_lr"]),
            x,
            y,
            eps=EPS,
            epochs=epochs,
            batch_size=100,
            seed=seed,
            method=method,
            eps_step=cfg["adv_alpha"] if method == "fgsm_rs" else None,
            steps=7,
            eps_warmup_steps=int(cfg["adv_warmup"] * steps),
            schedule=OneCycle(cfg["adv_lr"], steps),
            x_check=xc,
            y_check=yc,
            progress=cfg["progress"],
        )
        train_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        model.eval()
        xt, yt = data["x_test"][: cfg["eval_n"]], data["y_test"][: cfg["eval_n"]]
        t = time.perf_counter()
        clean = adversarial_accuracy(model, None, xt, yt)
        robust = adversarial_accuracy(model, pgd20(model, seed), xt, yt)
        eval_s = time.perf_counter() - t
        setting = f"robust_cnn {method}"
        rows += [
            row("adversarial_training", setting, "clean_accuracy", clean, eval_s),
            row("adversarial_training", setting, "pgd20_accuracy", robust, eval_s),
            row("adversarial_training", setting, "train_seconds", train_s, train_s),
            row("adversarial_training", setting, "train_cpu_seconds", cpu_s, train_s),
            row("adversarial_training", setting, "epochs_run", hist.epochs, train_s),
            row("adversarial_training", setting, "check_pgd_accuracy", hist.check_accuracy, 0),
        ]
        summary[method] = {
            "clean_accuracy": clean,
            "pgd20_accuracy": robust,
            "eps": EPS,
            "train_seconds": train_s,
            "train_cpu_seconds": cpu_s,
            "load_average_start_end": [load0, load1],
            "epochs": hist.epochs,
            "eval_examples": len(xt),
        }
        if method == "fgsm_rs":
            data["robust_model"] = model
    return rows, summary


def part_transfer(data: dict, cfg: dict, seed: int) -> tuple[list[dict], dict]:
    """Int8 on-device model -> float cloud model: transfer rate, query attacks, unpairing."""
    rows: list[dict] = []
    t0 = time.perf_counter()
    cloud = robust_cnn(seed + 1)  # the architecture quantizes (no pooling); naturally trained
    fit(
        cloud,
        nn.SGD(cloud, lr=0.05, momentum=0.9),
        data["x_train"],
        data["y_train"],
        epochs=cfg["cloud_epochs"],
        batch_size=64,
        seed=seed,
        progress=cfg["progress"],
    )
    cloud.eval()
    device = on_device_copy(cloud, data["x_train"][:500])
    kind = device["kind"]
    rows.append(
        row(
            "transfer",
            f"cloud float / device {kind}",
            "train_seconds",
            time.perf_counter() - t0,
            time.perf_counter() - t0,
        )
    )
    x, y = data["x_test"][: cfg["transfer_n"]], data["y_test"][: cfg["transfer_n"]]
    eps = cfg["transfer_eps"]
    t = time.perf_counter()
    crafted = PGD(
        device["surrogate"],
        eps=eps,
        eps_step=2.5 * eps / 20,
        max_iter=20,
        num_random_init=1,
        seed=seed,
    ).generate(x, y)
    before = {
        "device_success": transfer_rate(device["deployed"], x, y, crafted),
        "transfer_rate": transfer_rate(cloud, x, y, crafted),
        "gradient_cosine": float(np.mean(gradient_similarity(cloud, device["surrogate"], x, y))),
        "cloud_clean_accuracy": adversarial_accuracy(cloud, None, data["x_test"], data["y_test"]),
    }
    s = time.perf_counter() - t
    for k, v in before.items():
        rows.append(row("transfer", f"eps {eps} before unpairing", k, v, s))
    data["cloud_before_unpairing"] = copy.deepcopy(cloud)  # the query attacks' victim
    # similarity unpairing: fine-tune the cloud model; the on-device model stays as published
    t = time.perf_counter()
    n = cfg["unpair_n"]
    log = similarity_unpairing(
        cloud,
        device["surrogate"],
        nn.SGD(cloud, lr=cfg["unpair_lr"], momentum=0.9),
        data["x_train"][:n],
        data["y_train"][:n],
        lam=cfg["unpair_lambda"],
        epochs=cfg["unpair_epochs"],
        batch_size=64,
        seed=seed,
        progress=cfg["progress"],
    )
    cloud.eval()
    unpair_s = time.perf_counter() - t
    after = {
        "device_success": before["device_success"],
        "transfer_rate": transfer_rate(cloud, x, y, crafted),
        "gradient_cosine": float(np.mean(gradient_similarity(cloud, device["surrogate"], x, y))),
        "cloud_clean_accuracy": adversarial_accuracy(cloud, None, data["x_test"], data["y_test"]),
    }
    for k, v in after.items():
        rows.append(row("transfer", f"eps {eps} after unpairing", k, v, unpair_s))
    rows.append(
        row(
            "transfer",
            "unpairing",
            "penalty_first_last",
            [log["penalty"][0], log["penalty"][-1]],
            unpair_s,
        )
    )
    summary = {"device": kind, "eps": eps, "before": before, "after": after, "examples": len(x)}
    data["cloud"], data["device"] = cloud, device
    return rows, summary


def part_queries(data: dict, cfg: dict, seed: int) -> tuple[list[dict], dict]:
    """Black-box attacks on the cloud model (before unpairing): NES alone, NES with the
    on-device transfer prior, HopSkipJump (labels only); success and queries. The prior is
    also tried against the unpaired cloud model."""
    device = data["device"]
    eps, budget = cfg["transfer_eps"], cfg["query_budget"]
    rows, summary = [], {}
    for victim_name, cloud in (
        ("cloud", data["cloud_before_unpairing"]),
        ("unpaired cloud", data["cloud"]),
    ):
        x, y = data["x_test"][: cfg["query_n"]], data["y_test"][: cfg["query_n"]]
        right = Classifier(cloud).predict_labels(x) == y
        x, y = x[right], y[right]
        attacks = {
            "nes_transfer_prior": TransferPriorAttack(
                BlackBox(cloud), device["surrogate"], eps=eps, eps_step=eps / 10, samples=10,
                max_queries=budget, seed=seed,
            ),
        }  # fmt: skip
        if victim_name == "cloud":
            attacks["nes"] = NES(
                BlackBox(cloud), eps=eps, eps_step=eps / 10, samples=10, momentum=0.9,
                max_queries=budget, seed=seed,
            )  # fmt: skip
        for name, attack in attacks.items():
            t = time.perf_counter()
            attack.generate(x, y)
            s = time.perf_counter() - t
            q, ok = attack.queries_, attack.success_
            stats = {
                "success_rate": float(ok.mean()),
                "mean_queries": float(q.mean()),
                "median_queries_success": float(np.median(q[ok])) if ok.any() else None,
            }
            if name == "nes_transfer_prior":
                stats["transferred_at_first_query"] = float(attack.transferred_.mean())
            key = name if victim_name == "cloud" else f"{name} vs unpaired cloud"
            summary[key] = stats
            setting = f"{key}, eps {eps}, budget {budget}"
            rows += [row("query_attack", setting, k, v, s) for k, v in stats.items()]
        if victim_name == "cloud":
            summary["examples"] = int(len(x))
            t = time.perf_counter()
            hsj = HopSkipJump(BlackBox(cloud, "labels"), max_queries=cfg["hsj_budget"], seed=seed)
            hsj.generate(x, y)
            s = time.perf_counter() - t
            summary["hopskipjump"] = {
                "median_l2": float(np.median(hsj.distances_)),
                "success_l2_le_2": float(np.mean(hsj.distances_ <= 2.0)),
                "mean_queries": float(hsj.queries_.mean()),
            }
            setting = f"hopskipjump, budget {cfg['hsj_budget']}"
            rows += [
                row("query_attack", setting, k, v, s) for k, v in summary["hopskipjump"].items()
            ]
    saved = summary["nes"]["mean_queries"] - summary["nes_transfer_prior"]["mean_queries"]
    summary["mean_queries_saved_by_prior"] = saved
    rows.append(row("query_attack", f"eps {eps}, budget {budget}", "mean_queries_saved", saved, 0))
    return rows, summary
