"""Parts of ``tinyodl bench security`` about training-time attacks on the device: label
flipping, backdoors and data insertion against the stream guard and input validation."""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np

from tinyodl import nn
from tinyodl.attacks import adversarial_accuracy
from tinyodl.attacks.poisoning import BackdoorPatch, flip_labels, insert_data
from tinyodl.bench._security_evasion import row
from tinyodl.defenses import InputValidator, StreamGuard, model_features, robust_cnn
from tinyodl.defenses.detection import train_on_stream
from tinyodl.train import fit


def prepare_device(data: dict, cfg: dict, seed: int) -> dict:
    """The on-device setting of task B (a new writer): a model pretrained on clean digits,
    a trusted verified set, a training stream and the shifted test set."""
    from tinyodl import tasks

    task = tasks.load_task(
        "B",
        per_class=cfg["stream_per_class"] + cfg["trusted_per_class"],
        seed=seed,
        path=data["path"],
    )
    trusted = np.zeros(len(task.y_train), dtype=bool)
    for c in range(10):
        trusted[np.flatnonzero(task.y_train == c)[: cfg["trusted_per_class"]]] = True
    if data["path"] is not None:
        x_cloud, y_cloud = tasks.cloud_data("B", data["path"])
    else:  # quick run: the shipped images the task does not use stand in for the cloud's
        from tinyodl.data import load_mnist, to_float

        images, labels = load_mnist("train")
        keep = ~np.isin(tasks.shipped_train_index(), task.train_index)
        x_cloud, y_cloud = to_float(images[keep]), labels[keep].astype(np.int64)
    x_cloud, y_cloud = x_cloud[: cfg.get("cloud_n")], y_cloud[: cfg.get("cloud_n")]
    t0 = time.perf_counter()
    model = robust_cnn(seed + 2)
    fit(
        model,
        nn.SGD(model, lr=0.05, momentum=0.9),
        x_cloud,
        y_cloud,
        epochs=1,
        batch_size=64,
        seed=seed,
        progress=cfg["progress"],
    )
    model.eval()
    return {
        "pretrained": model,
        "pretrain_seconds": time.perf_counter() - t0,
        "x_trusted": task.x_train[trusted],
        "y_trusted": task.y_train[trusted],
        "x_stream": task.x_train[~trusted],
        "y_stream": task.y_train[~trusted],
        "x_test": task.x_test,
        "y_test": task.y_test,
        "features": model_features(copy.deepcopy(model)),  # frozen copy: the guard's view
    }


def _device(data: dict, cfg: dict, seed: int) -> dict:
    """The on-device setting, prepared once and shared by the parts of this module."""
    if "device_task" not in data:
        data["device_task"] = prepare_device(data, cfg, seed)
    return data["device_task"]


def _batches(x, y, batch_size, seed):
    order = np.random.default_rng(seed).permutation(len(x))
    return [
        (x[order[i : i + batch_size]], y[order[i : i + batch_size]])
        for i in range(0, len(x), batch_size)
    ]


def _poison_batches(batches, fraction, mode, seed, patch=None):
    """Replace ``round(fraction * B)`` batches by the attacker's: labels flipped (``mode``
    random / targeted to class 1) or triggered and relabelled (``mode="backdoor"``)."""
    rng = np.random.default_rng([seed, 3])
    chosen = set(
        rng.choice(len(batches), size=int(round(fraction * len(batches))), replace=False).tolist()
    )
    out = []
    for i, (xb, yb) in enumerate(batches):
        if i in chosen:
            if mode == "backdoor":
                xb, yb = patch.apply(xb), np.full_like(yb, patch.target)
            elif mode == "random":
                yb, _ = flip_labels(yb, 1.0, seed=[seed, i])
            else:
                yb, _ = flip_labels(yb, 1.0, seed=[seed, i], mode="targeted", target=1)
        out.append((xb, yb))
    return out, sorted(chosen)


def _adapt(dev: dict, stream: list, cfg: dict, guard: StreamGuard | None) -> tuple[Any, dict]:
    model = copy.deepcopy(dev["pretrained"])
    model.train()
    opt = nn.SGD(model, lr=cfg["adapt_lr"], momentum=0.9)
    counts = {"used": 0, "dropped": 0}
    for _ in range(cfg["adapt_epochs"]):
        c = train_on_stream(model, opt, stream, guard)
        counts = {k: counts[k] + c[k] for k in counts}
    model.eval()
    return model, counts


def _guard(dev: dict, cfg: dict, seed: int) -> StreamGuard:
    return StreamGuard(dev["features"], n_components=cfg["pca_components"]).fit(
        dev["x_trusted"], dev["y_trusted"], cfg["batch_size"], seed=seed
    )


def part_label_flipping(data: dict, cfg: dict, seed: int) -> tuple[list[dict], dict]:
    """Fine-tune on a stream with 10/20/40% attacker batches (labels flipped), with and
    without the stream guard (class-conditional PCA + CUSUM on trusted features)."""
    dev = _device(data, cfg, seed)
    x_test, y_test = dev["x_test"], dev["y_test"]
    rows = [
        row(
            "label_flipping",
            "pretrained",
            "accuracy_before_adaptation",
            adversarial_accuracy(dev["pretrained"], None, x_test, y_test),
            dev["pretrain_seconds"],
        )
    ]
    clean_batches = _batches(dev["x_stream"], dev["y_stream"], cfg["batch_size"], seed)
    baseline = {}
    for defended in (False, True):
        t = time.perf_counter()
        model, counts = _adapt(
            dev, clean_batches, cfg, _guard(dev, cfg, seed) if defended else None
        )
        baseline[defended] = adversarial_accuracy(model, None, x_test, y_test)
        name = "guard" if defended else "no defense"
        rows.append(
            row(
                "label_flipping",
                f"clean stream, {name}",
                "accuracy",
                baseline[defended],
                time.perf_counter() - t,
            )
        )
        rows.append(
            row(
                "label_flipping",
                f"clean stream, {name}",
                "batches_dropped",
                counts["dropped"] / cfg["adapt_epochs"],
                0,
            )
        )
    summary: dict[str, Any] = {
        "clean_accuracy": baseline[False],
        "clean_accuracy_guarded": baseline[True],
    }
    for mode in cfg["flip_modes"]:
        for fraction in cfg["flip_fractions"]:
            stream, chosen = _poison_batches(clean_batches, fraction, mode, seed)
            entry = {}
            for defended in (False, True):
                t = time.perf_counter()
                guard = _guard(dev, cfg, seed) if defended else None
                model, counts = _adapt(dev, stream, cfg, guard)
                acc = adversarial_accuracy(model, None, x_test, y_test)
                setting = (
                    f"{mode} {int(round(100 * fraction))}%, {'guard' if defended else 'no defense'}"
                )
                s = time.perf_counter() - t
                key = "defended" if defended else "undefended"
                entry[f"accuracy_{key}"] = acc
                entry[f"drop_{key}"] = baseline[False] - acc
                rows += [
                    row("label_flipping", setting, "accuracy", acc, s),
                    row("label_flipping", setting, "accuracy_drop", baseline[False] - acc, s),
                ]
                if defended:
                    admitted = np.array([e["admitted"] for e in guard.log_[: len(stream)]])
                    caught = float(np.mean(~admitted[chosen])) if chosen else None
                    clean_dropped = float(np.mean(~np.delete(admitted, chosen)))
                    entry.update(poisoned_caught=caught, clean_dropped=clean_dropped)
                    rows += [
                        row("label_flipping", setting, "poisoned_batches_caught", caught, 0),
                        row("label_flipping", setting, "clean_batches_dropped", clean_dropped, 0),
                    ]
            summary[f"{mode} {int(round(100 * fraction))}%"] = entry
    return rows, summary


def part_backdoor(data: dict, cfg: dict, seed: int) -> tuple[list[dict], dict]:
    """Backdoor batches (trigger patch -> class 0) in the device stream: clean accuracy and
    attack-success rate, with and without the stream guard."""
    dev = _device(data, cfg, seed)
    patch = BackdoorPatch(target=0, size=4)
    clean_batches = _batches(dev["x_stream"], dev["y_stream"], cfg["batch_size"], seed)
    stream, _ = _poison_batches(clean_batches, cfg["backdoor_fraction"], "backdoor", seed, patch)
    rows, summary = [], {}
    for defended in (False, True):
        t = time.perf_counter()
        model, counts = _adapt(dev, stream, cfg, _guard(dev, cfg, seed) if defended else None)
        name = "guard" if defended else "no defense"
        out = {
            "clean_accuracy": adversarial_accuracy(model, None, dev["x_test"], dev["y_test"]),
            "attack_success_rate": patch.attack_success_rate(model, dev["x_test"], dev["y_test"]),
            "batches_dropped": counts["dropped"] / cfg["adapt_epochs"],
        }
        s = time.perf_counter() - t
        setting = f"{int(100 * cfg['backdoor_fraction'])}% triggered batches, {name}"
        rows += [row("backdoor", setting, k, v, s) for k, v in out.items()]
        summary[name] = out
    summary["pretrained_attack_success_rate"] = patch.attack_success_rate(
        dev["pretrained"], dev["x_test"], dev["y_test"]
    )
    return rows, summary


def part_insertion(data: dict, cfg: dict, seed: int) -> tuple[list[dict], dict]:
    """Noise and garbage inserted into the device's training set with random labels: accuracy
    without and with input validation (rejected inputs are quarantined, not trained on)."""
    dev = _device(data, cfg, seed)
    validator = InputValidator(quantile=0.99).fit(dev["x_trusted"], dev["y_trusted"])
    rows, summary = [], {}
    for kind in ("noise", "garbage"):
        xs, ys, inserted = insert_data(
            dev["x_stream"], dev["y_stream"], cfg["insert_fraction"], kind, seed
        )
        for defended in (False, True):
            t = time.perf_counter()
            if defended:
                validator.quarantine_ = []
                kept = validator.validate(xs, ys)
                x_use, y_use = xs[kept], ys[kept]
            else:
                kept, x_use, y_use = np.ones(len(xs), bool), xs, ys
            stream = _batches(x_use, y_use, cfg["batch_size"], seed)
            model, _ = _adapt(dev, stream, cfg, None)
            acc = adversarial_accuracy(model, None, dev["x_test"], dev["y_test"])
            name = "validation" if defended else "no defense"
            setting = f"{kind} {int(100 * cfg['insert_fraction'])}%, {name}"
            s = time.perf_counter() - t
            rows.append(row("data_insertion", setting, "accuracy", acc, s))
            if defended:
                rows += [
                    row(
                        "data_insertion",
                        setting,
                        "inserted_rejected",
                        float(np.mean(~kept[inserted])),
                        0,
                    ),
                    row(
                        "data_insertion",
                        setting,
                        "genuine_rejected",
                        float(np.mean(~kept[~inserted])),
                        0,
                    ),
                ]
            summary[setting] = acc
    return rows, summary
