"""``tinyodl bench security``: attacks and defenses of on-device learning, measured (chapter 11).

Parts (``--only`` picks some; all run by default):

* ``natural`` -- ``cnn_mcmahan`` trained one epoch on clean data: clean and FGSM accuracy
  on the test split, PGD-20 on its first 1,000 images, at eps = 0.3 (Madry et al. 2018
  report 6.4% under FGSM for their CNN);
* ``adversarial`` -- adversarial training of ``robust_cnn`` with FGSM from a random start
  (Wong et al. 2020; ``--pgd-training`` adds PGD-7 training): clean and PGD-20 accuracy,
  the training wall time, CPU time and load average (the machine may be shared);
* ``label_flipping`` -- on-device fine-tuning (task B, a new writer) on a stream where 10 /
  20 / 40% of the batches come from an attacker who flipped their labels, without and with
  the stream guard (class-conditional PCA + CUSUM on trusted features);
* ``backdoor``, ``insertion`` -- trigger-patch batches (attack-success rate) and inserted
  noise/garbage (input validation) in the same stream;
* ``federated`` -- FedAvg with 10% malicious clients sending boosted (model-replacement)
  updates: global accuracy with the mean, median, trimmed mean and Krum (chapter 09 engine);
* ``membership`` -- loss-threshold and shadow-model attacks; DP-SGD models (chapter 10)
  beside the ``e^eps - 1`` bound;
* ``transfer`` -- adversarial examples crafted on the int8 on-device model, their transfer
  rate to the float cloud model before and after similarity unpairing;
* ``queries`` -- NES with and without the on-device transfer prior, HopSkipJump;
* ``inversion``, ``extraction`` -- MI-Face, analytic and DLG gradient inversion, model
  extraction by label queries.

Rows: ``experiment, setting, metric, value, seconds``. ``summary.natural`` =
``{clean_accuracy, fgsm_accuracy, pgd20_accuracy}``; ``summary.adversarial_training`` =
``{clean_accuracy, pgd20_accuracy, eps, train_seconds}`` (FGSM-RS; accuracies as fractions).

``--quick`` runs everything small on the shipped subset (a smoke test, minutes); the full run
reads the full MNIST from ``--data`` (default ``$TINYODL_MNIST_DIR``).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np

from tinyodl.bench._common import machine_info, write_results

HELP = "attacks and defenses (chapter 11): FGSM/PGD, adversarial training, poisoning, MI, transfer"

PARTS = (
    "natural",
    "adversarial",
    "label_flipping",
    "backdoor",
    "insertion",
    "federated",
    "membership",
    "transfer",
    "queries",
    "inversion",
    "extraction",
)

#: Sizes of the full run (full MNIST) and of ``--quick`` (shipped subset, smoke test).
CONFIGS: dict[str, dict[str, Any]] = {
    "full": {
        "natural_epochs": 1,
        "eval_n": 10_000,
        "natural_pgd_n": 1000,  # PGD-20 on cnn_mcmahan: 20 gradients per image
        "adv_methods": ("fgsm_rs",),
        "adv_epochs": 10,
        "pgd_epochs": 5,
        "adv_lr": 5e-3,
        "adv_alpha": 0.375,
        "adv_warmup": 0.2,
        "stream_per_class": 100,
        "trusted_per_class": 50,
        "batch_size": 20,
        "adapt_epochs": 2,
        "adapt_lr": 0.01,
        "pca_components": 10,
        "flip_modes": ("random", "targeted"),
        "flip_fractions": (0.1, 0.2, 0.4),
        "backdoor_fraction": 0.1,
        "insert_fraction": 0.2,
        "fl_clients": 100,
        "fl_fraction": 0.1,
        "fl_rounds": 30,
        "fl_malicious": 0.1,
        "fl_boost": 10.0,
        "mi_members": 1000,
        "mi_epochs": 30,
        "mi_shadows": 4,
        "dp_epsilons": (0.5, 2.0, 8.0),
        "dp_delta": 1e-5,
        "dp_lot": 100,
        "dp_epochs": 15,
        "dp_clip": 1.0,
        "dp_lr": 0.05,
        "cloud_epochs": 2,
        "transfer_n": 1000,
        "transfer_eps": 0.15,
        "unpair_n": 10_000,
        "unpair_epochs": 2,
        "unpair_lr": 0.01,
        "unpair_lambda": 3.0,
        "query_n": 50,
        "query_budget": 2000,
        "hsj_budget": 2000,
        "inv_train": 10_000,
        "mi_face_steps": 200,
        "dlg_batches": (1, 2, 4, 8),
        "dlg_steps": 300,
        "dlg_restarts": 2,
        "extraction_queries": (250, 1000, 5000),
        "extraction_epochs": 5,
    },
    "quick": {
        "natural_epochs": 1,
        "eval_n": 100,
        "train_n": 2000,
        "adv_methods": ("fgsm_rs",),
        "adv_epochs": 1,
        "pgd_epochs": 1,
        "adv_lr": 5e-3,
        "adv_alpha": 0.3,
        "adv_warmup": 0.2,
        "stream_per_class": 30,
        "trusted_per_class": 20,
        "batch_size": 20,
        "adapt_epochs": 1,
        "adapt_lr": 0.01,
        "pca_components": 5,
        "flip_modes": ("random",),
        "flip_fractions": (0.2,),
        "backdoor_fraction": 0.2,
        "insert_fraction": 0.2,
        "fl_clients": 20,
        "fl_fraction": 0.5,
        "fl_rounds": 2,
        "fl_malicious": 0.1,
        "fl_boost": 10.0,
        "mi_members": 200,
        "mi_epochs": 10,
        "mi_shadows": 1,
        "dp_epsilons": (2.0,),
        "dp_delta": 1e-5,
        "dp_lot": 50,
        "dp_epochs": 1,
        "dp_clip": 1.0,
        "dp_lr": 0.05,
        "cloud_epochs": 1,
        "transfer_n": 50,
        "transfer_eps": 0.15,
        "unpair_n": 300,
        "unpair_epochs": 1,
        "unpair_lr": 0.01,
        "unpair_lambda": 3.0,
        "query_n": 3,
        "query_budget": 200,
        "hsj_budget": 200,
        "inv_train": 1000,
        "mi_face_steps": 20,
        "dlg_batches": (1, 2),
        "dlg_steps": 20,
        "dlg_restarts": 1,
        "extraction_queries": (200,),
        "extraction_epochs": 1,
        "cloud_n": 2000,
    },
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", default=None, help="full MNIST folder (default $TINYODL_MNIST_DIR)"
    )
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of {PARTS}")
    parser.add_argument(
        "--pgd-training", action="store_true", help="also PGD-7 adversarial training"
    )
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="FILE",
        help="combine earlier result files (parts run separately) into --json; runs nothing",
    )


def load_data(args: argparse.Namespace, cfg: dict) -> dict[str, Any]:
    """Train/test images (float32 in [0, 1]) and a small check set held out of training."""
    from tinyodl.data import load_mnist, to_float

    path = None if args.quick else (args.data or os.environ.get("TINYODL_MNIST_DIR"))
    if not args.quick and path is None:
        raise SystemExit(
            "tinyodl bench security: the full run needs --data (or $TINYODL_MNIST_DIR)"
        )
    xi, yi = load_mnist("train", path=path)
    xt, yt = load_mnist("test", path=path)
    x, y = to_float(xi), yi.astype(np.int64)
    rng = np.random.default_rng([args.seed, 99])
    check = rng.choice(len(x), size=200 if not args.quick else 50, replace=False)
    train = np.setdiff1d(np.arange(len(x)), check)
    if "train_n" in cfg:
        train = train[: cfg["train_n"]]
    return {
        "path": path,
        "x_train": x[train],
        "y_train": y[train],
        "x_check": x[check],
        "y_check": y[check],
        "x_test": to_float(xt),
        "y_test": yt.astype(np.int64),
        "source": "shipped subset" if path is None else f"full MNIST at {path}",
    }


def _parts():
    from tinyodl.bench import _security_data as d
    from tinyodl.bench import _security_evasion as e
    from tinyodl.bench import _security_federated as f
    from tinyodl.bench import _security_privacy as p

    return {
        "natural": e.part_natural,
        "adversarial": e.part_adversarial_training,
        "label_flipping": d.part_label_flipping,
        "backdoor": d.part_backdoor,
        "insertion": d.part_insertion,
        "federated": f.part_federated,
        "membership": p.part_membership,
        "transfer": e.part_transfer,
        "queries": e.part_queries,
        "inversion": p.part_inversion,
        "extraction": p.part_extraction,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the selected parts; returns the result document (written with ``--json``)."""
    cfg = dict(CONFIGS["quick" if args.quick else "full"])
    cfg["progress"] = not getattr(args, "no_progress", False)
    if getattr(args, "pgd_training", False):
        cfg["adv_methods"] = (*cfg["adv_methods"], "pgd")
    only = [p for p in args.only.split(",") if p]
    unknown = sorted(set(only) - set(PARTS))
    if unknown:
        raise SystemExit(f"tinyodl bench security: unknown parts {unknown}; choose from {PARTS}")
    if "queries" in only and "transfer" not in only:
        only.insert(only.index("queries"), "transfer")  # the query attacks need its models
    data = load_data(args, cfg)
    parts, rows, summary = _parts(), [], {"data": data["source"], "seed": args.seed}
    t_all = time.perf_counter()
    for name in PARTS:
        if name not in only:
            continue
        t = time.perf_counter()
        part_rows, part_summary = parts[name](data, cfg, args.seed)
        rows += part_rows
        summary[name] = part_summary
        summary.setdefault("part_seconds", {})[name] = round(time.perf_counter() - t, 1)
        print(f"security: {name} done in {time.perf_counter() - t:.1f} s", flush=True)
    if "adversarial" in summary:
        rs = summary["adversarial"]["fgsm_rs"]
        summary["adversarial_training"] = {
            k: rs[k] for k in ("clean_accuracy", "pgd20_accuracy", "eps", "train_seconds")
        }
    summary["total_seconds"] = round(time.perf_counter() - t_all, 1)
    summary["config"] = {k: v for k, v in cfg.items() if k != "progress"}
    return write_results(args.json_path, rows, summary, machine=machine_info(threads=1))


#: The ``experiment`` names of each part's rows (for :func:`merge`).
PART_EXPERIMENTS: dict[str, tuple[str, ...]] = {
    "natural": ("natural",),
    "adversarial": ("adversarial_training",),
    "label_flipping": ("label_flipping",),
    "backdoor": ("backdoor",),
    "insertion": ("data_insertion",),
    "federated": ("federated",),
    "membership": ("membership",),
    "transfer": ("transfer",),
    "queries": ("query_attack",),
    "inversion": ("model_inversion", "gradient_inversion"),
    "extraction": ("model_extraction",),
}


def merge(paths: list[str], json_path: str | None) -> dict[str, Any]:
    """One document from result files of separate runs (e.g. parts that needed chapters
    merged later): rows concatenated, summaries combined part by part, every command and
    machine kept. A later file wins for a part it also ran: its summary entry replaces the
    earlier one and the earlier file's rows of that part are dropped."""
    import json
    from pathlib import Path

    docs = [json.loads(Path(p).read_text(encoding="utf-8")) for p in paths]
    rows: list[dict] = []
    summary: dict[str, Any] = {}
    for doc in docs:
        rerun = {
            e for part in doc["summary"].get("part_seconds", {}) for e in PART_EXPERIMENTS[part]
        }
        rows = [r for r in rows if r.get("experiment") not in rerun] + doc["rows"]
        for key, value in doc["summary"].items():
            if key == "part_seconds":
                summary.setdefault(key, {}).update(value)
            else:
                summary[key] = value
    summary["total_seconds"] = round(sum(summary.get("part_seconds", {}).values()), 1)
    summary["merged_from"] = [
        {"file": Path(p).name, "command": d["command"]} for p, d in zip(paths, docs, strict=True)
    ]
    return write_results(
        json_path,
        rows,
        summary,
        machine=docs[0]["machine"],
        command=" && ".join(d["command"] for d in docs),
        machines=[d["machine"] for d in docs],
    )


def main(args: argparse.Namespace) -> int:
    if getattr(args, "merge", None):
        merge(args.merge, args.json_path)
        return 0
    doc = run(args)
    s = doc["summary"]
    if "natural" in s:
        n = s["natural"]
        print(
            f"natural cnn_mcmahan: clean {n['clean_accuracy']:.4f}, FGSM {n['fgsm_accuracy']:.4f}, "
            f"PGD-20 {n['pgd20_accuracy']:.4f} (eps 0.3, {n['eval_examples']} test images, "
            f"PGD-20 on {n['pgd20_eval_examples']})"
        )
    if "adversarial_training" in s:
        a = s["adversarial_training"]
        print(
            f"adversarial training (FGSM-RS, robust_cnn): clean {a['clean_accuracy']:.4f}, "
            f"PGD-20 {a['pgd20_accuracy']:.4f}, {a['train_seconds']:.0f} s"
        )
    return 0
