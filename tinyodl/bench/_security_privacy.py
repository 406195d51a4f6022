"""Parts of ``tinyodl bench security`` about privacy attacks: membership inference (with the
DP bound), model inversion, gradient inversion of a client update, model extraction."""

from __future__ import annotations

import importlib.util
import time
from typing import Any

import numpy as np

from tinyodl import models, nn
from tinyodl.attacks import BlackBox
from tinyodl.attacks.inference import (
    ShadowModelAttack,
    agreement,
    dp_advantage_bound,
    extract_model,
    loss_threshold_attack,
)
from tinyodl.attacks.inversion import (
    DLG,
    invert_dense_gradient,
    match_reconstructions,
    mi_face,
    model_gradient,
)
from tinyodl.bench._security_evasion import row
from tinyodl.train import fit


def _train_mlp(x, y, seed, epochs, progress=False):
    model = models.mlp_2nn(seed=seed)
    fit(
        model,
        nn.SGD(model, lr=0.1, momentum=0.9),
        x,
        y,
        epochs=epochs,
        batch_size=25,
        seed=seed,
        progress=progress,
    )
    model.eval()
    return model


def _dp_models(x, y, cfg: dict, seed: int) -> list[tuple[float, Any]]:
    """DP-SGD (chapter 10) models at the configured epsilons, if tinyodl.privacy exists."""
    if importlib.util.find_spec("tinyodl.privacy") is None:
        return []
    from tinyodl import privacy

    out = []
    n, lot = len(x), cfg["dp_lot"]
    q = lot / n
    steps = int(cfg["dp_epochs"] * n / lot)
    for eps in cfg["dp_epsilons"]:
        sigma = privacy.noise_multiplier_for_epsilon(eps, q=q, steps=steps, delta=cfg["dp_delta"])
        model = models.mlp_2nn(seed=seed)
        dp = privacy.DPSGD(
            model,
            nn.SGD(model, lr=cfg["dp_lr"], momentum=0.9),
            clip_norm=cfg["dp_clip"],
            noise_multiplier=sigma,
            expected_batch_size=lot,
            sample_rate=q,
            seed=seed,
        )
        rng = np.random.default_rng([seed, 5])
        for _ in range(steps):
            take = rng.random(n) < q  # Poisson sampling, as the accountant assumes
            if take.any():
                dp.step(x[take], y[take])
        model.eval()
        out.append((float(dp.epsilon(cfg["dp_delta"])), model))
    return out


def part_membership(data: dict, cfg: dict, seed: int) -> tuple[list[dict], dict]:
    """Loss-threshold and shadow-model attacks on a model trained on few examples; DP-SGD
    models beside the e^eps - 1 bound."""
    n = cfg["mi_members"]
    x, y = data["x_train"], data["y_train"]
    xm, ym = x[:n], y[:n]  # members
    xn, yn = x[n : 2 * n], y[n : 2 * n]  # non-members (same distribution)
    xa, ya = x[2 * n : 4 * n], y[2 * n : 4 * n]  # the attacker's own data, for shadow models
    rows, summary = [], {}
    t = time.perf_counter()
    target = _train_mlp(xm, ym, seed, cfg["mi_epochs"], cfg["progress"])
    out = loss_threshold_attack(target, xm, ym, xn, yn)
    s = time.perf_counter() - t
    rows += [
        row("membership", "non-private, loss threshold", k, out[k], s)
        for k in ("auc", "advantage", "advantage_at_tau")
    ]
    summary["non_private"] = {"loss_threshold": out}
    t = time.perf_counter()
    shadow = ShadowModelAttack(
        lambda a, b, s_: _train_mlp(a, b, s_, cfg["mi_epochs"]),
        num_shadows=cfg["mi_shadows"],
        seed=seed,
    ).fit(xa, ya)
    sh = shadow.evaluate(target, xm, ym, xn, yn)
    s = time.perf_counter() - t
    rows += [
        row("membership", f"non-private, {cfg['mi_shadows']} shadow models", k, v, s)
        for k, v in sh.items()
    ]
    summary["non_private"]["shadow"] = sh
    summary["dp"] = []
    for eps, model in _dp_models(xm, ym, cfg, seed):
        out = loss_threshold_attack(model, xm, ym, xn, yn)
        bound = dp_advantage_bound(eps, cfg["dp_delta"])
        acc = float(
            np.mean(np.argmax(model.forward(data["x_test"], train=False), 1) == data["y_test"])
        )
        setting = f"DP-SGD eps {eps:.2f} delta {cfg['dp_delta']:g}"
        rows += [
            row("membership", setting, "advantage", out["advantage"], 0),
            row("membership", setting, "auc", out["auc"], 0),
            row("membership", setting, "bound_e_eps_minus_1", bound["yeom"], 0),
            row("membership", setting, "bound_tight", bound["tight"], 0),
            row("membership", setting, "test_accuracy", acc, 0),
        ]
        summary["dp"].append(
            {
                "epsilon": eps,
                "advantage": out["advantage"],
                "auc": out["auc"],
                "bound_e_eps_minus_1": bound["yeom"],
                "bound_tight": bound["tight"],
                "test_accuracy": acc,
            }
        )
    if not summary["dp"]:
        summary["dp_skipped"] = "tinyodl.privacy (chapter 10) is not installed"
    summary["members"] = n
    return rows, summary


def part_inversion(data: dict, cfg: dict, seed: int) -> tuple[list[dict], dict]:
    """MI-Face on a trained 2NN; gradient inversion of a FedSGD client update (analytic at
    batch 1, DLG at larger batches)."""
    rows, summary = [], {}
    x, y = data["x_train"], data["y_train"]
    t = time.perf_counter()
    model = _train_mlp(x[: cfg["inv_train"]], y[: cfg["inv_train"]], seed, 2, cfg["progress"])
    means = np.stack([x[y == c].reshape(-1, 784).mean(0) for c in range(10)])
    means_u = means / np.linalg.norm(means, axis=1, keepdims=True)
    hits, cos_own = 0, []
    for c in range(10):
        rec, _ = mi_face(model, c, steps=cfg["mi_face_steps"], lr=0.1, l2=0.001)
        v = rec.ravel() / (np.linalg.norm(rec) + 1e-12)
        sims = means_u @ v
        hits += int(np.argmax(sims) == c)
        cos_own.append(float(sims[c]))
    s = time.perf_counter() - t
    summary["mi_face"] = {"identified": hits / 10, "cosine_to_class_mean": float(np.mean(cos_own))}
    rows += [row("model_inversion", "MI-Face, 2NN", k, v, s) for k, v in summary["mi_face"].items()]
    # gradient inversion of what a FedSGD client sends: dL/dtheta of its batch
    shared = models.mlp_2nn(seed=seed + 3)
    t = time.perf_counter()
    g = model_gradient(shared, x[:1], y[:1])
    w = shared["features.1"].params["weight"]
    rec = invert_dense_gradient(g[: w.size].reshape(w.shape), g[w.size : w.size + w.shape[0]])
    err = float(np.max(np.abs(rec - x[0].ravel())))
    rows.append(
        row(
            "gradient_inversion",
            "analytic, first dense layer, batch 1",
            "max_abs_error",
            err,
            time.perf_counter() - t,
        )
    )
    summary["analytic_batch1_max_abs_error"] = err
    summary["dlg"] = {}
    for b in cfg["dlg_batches"]:
        # b examples with distinct labels (the labels are read off the last bias gradient):
        # the first example of each class after index 10, in order of appearance
        after = np.arange(10, len(y))
        idx = np.sort(after[np.unique(y[after], return_index=True)[1]])[:b]
        xb, yb = x[idx], y[idx]
        t = time.perf_counter()
        observed = model_gradient(shared, xb, yb)
        dlg = DLG(shared, steps=cfg["dlg_steps"], restarts=cfg["dlg_restarts"], seed=seed)
        recon = dlg.reconstruct(observed.astype(np.float64), len(xb))
        score = match_reconstructions(xb, recon)
        s = time.perf_counter() - t
        labels_ok = bool(np.array_equal(dlg.labels_, np.sort(yb)))
        summary["dlg"][int(len(xb))] = {
            "mse": score["mean_mse"],
            "psnr": score["psnr"],
            "labels_recovered": labels_ok,
        }
        rows += [
            row("gradient_inversion", f"DLG batch {len(xb)}", "mse", score["mean_mse"], s),
            row("gradient_inversion", f"DLG batch {len(xb)}", "psnr_db", score["psnr"], s),
            row("gradient_inversion", f"DLG batch {len(xb)}", "labels_recovered", labels_ok, s),
        ]
        data.setdefault("dlg_examples", {})[int(len(xb))] = (xb, recon[score["order"]])
    return rows, summary


def part_extraction(data: dict, cfg: dict, seed: int) -> tuple[list[dict], dict]:
    """Steal the natural cnn_mcmahan with label queries; agreement on held-out images."""
    victim, victim_name = data.get("natural_model"), "cnn_mcmahan"
    if victim is None:  # the part runs alone: a 2NN trained for one epoch is the victim
        victim, victim_name = _train_mlp(data["x_train"], data["y_train"], seed, 1), "2NN"
    half = len(data["x_test"]) // 2
    pool, x_eval = data["x_test"][:half], data["x_test"][half:]
    rows, summary = [], {}
    for q in cfg["extraction_queries"]:
        q = min(q, len(pool))
        t = time.perf_counter()
        box = BlackBox(victim, "labels")

        def train(student, xq, labels):
            fit(
                student,
                nn.SGD(student, lr=0.05, momentum=0.9),
                xq,
                labels,
                epochs=cfg["extraction_epochs"],
                batch_size=32,
                seed=seed,
                progress=False,
            )

        student, used = extract_model(box, models.mlp_2nn(seed=seed + 9), pool[:q], train)
        agree = agreement(victim, student, x_eval)
        rows.append(
            row(
                "model_extraction",
                f"victim {victim_name}, {used} label queries, 2NN student",
                "agreement",
                agree,
                time.perf_counter() - t,
            )
        )
        summary[int(used)] = agree
    return rows, summary
