"""``tinyodl bench fedavg``: McMahan et al. (2017) on MNIST, compression, robust aggregation.

Three parts (``--only`` picks some; chapter 09, GUIDE section 5):

* ``mcmahan`` -- the 2NN (784-200-200-10) on full MNIST, K = 100 clients, C = 0.1: rounds to
  reach 97% test accuracy for FedSGD (E = 1, B = infinity) and FedAvg (E = 1, B = 10), on the
  IID and the pathological non-IID split, counted on the monotone-ised curve, beside the
  paper's 1474 / 1796 and 87 / 664. As in the paper the learning rate is searched on a grid
  (multiples of 10^(1/3)) and the best one reported; every run is a row. A learning rate
  still below the target when it has used as many rounds as the best one so far is stopped
  there (``stopped_early``): it cannot win.
* ``compression`` -- FedAvg IID with each uplink compressor (int8, top-k with and without
  error feedback): rounds and bytes up to reach a target, i.e. the savings at equal accuracy.
* ``robustness`` -- FedAvg IID with 10% of the clients sending boosted sign-flipped updates:
  final accuracy of each aggregator, with and without the attack.
* ``cnn`` -- the CNN (E = 5, B = 10, IID) to 99% (paper: 20 rounds); slow.

``--quick`` runs a small version of every part on the shipped subset (12,000 images, 100
clients of 120) with lower targets and fewer configurations, for the tests.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np

from tinyodl.bench._common import machine_info, write_results

HELP = "FedAvg / FedSGD on MNIST (McMahan et al.): rounds to 97%, compression, robustness"

#: Rounds to the target in McMahan et al. (2017): 2NN to 97% (Table 2/4), CNN to 99%.
PAPER_ROUNDS = {
    ("fedsgd", "iid"): 1474,
    ("fedsgd", "pathological"): 1796,
    ("fedavg", "iid"): 87,
    ("fedavg", "pathological"): 664,
    ("cnn_fedavg", "iid"): 20,
}

PARTS = ("mcmahan", "compression", "robustness", "cnn")


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", default=None, help="full MNIST folder (default $TINYODL_MNIST_DIR)"
    )
    parser.add_argument("--only", default="mcmahan,compression,robustness", help=f"parts: {PARTS}")
    parser.add_argument("--lrs-fedavg", type=_floats, default=[0.0464, 0.1, 0.215])
    parser.add_argument("--lrs-fedsgd", type=_floats, default=[0.464, 1.0])
    parser.add_argument("--max-rounds-fedavg", type=int, default=1000)
    parser.add_argument("--max-rounds-fedsgd", type=int, default=2500)
    parser.add_argument("--comm-target", type=float, default=0.97)
    parser.add_argument("--robust-rounds", type=int, default=50)
    parser.add_argument("--algorithms", default="fedavg,fedsgd", help="part mcmahan: which")
    parser.add_argument("--partitions", default="iid,pathological", help="part mcmahan: which")
    parser.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="JSON",
        help="combine result files of separate runs (e.g. one per partition) into --json",
    )
    parser.add_argument("--no-progress", action="store_true")


# ------------------------------------------------------------------------------ data


def _load(args: argparse.Namespace) -> dict[str, Any]:
    from tinyodl.data import load_mnist, to_float

    if args.quick:
        xtr, ytr = load_mnist("train")
        xte, yte = load_mnist("test")
        source = "shipped subset (12,000 / 2,000)"
    else:
        folder = args.data or os.environ.get("TINYODL_MNIST_DIR")
        if not folder:
            raise OSError(
                "bench fedavg: the full MNIST is needed: pass --data FOLDER or set "
                "TINYODL_MNIST_DIR (or use --quick for the shipped subset)"
            )
        xtr, ytr = load_mnist("train", path=folder)
        xte, yte = load_mnist("test", path=folder)
        source = f"full MNIST from {folder}"
    return {
        "x": to_float(xtr),
        "y": ytr.astype(np.int64),
        "x_test": to_float(xte),
        "y_test": yte.astype(np.int64),
        "source": source,
    }


def _clients(data: dict[str, Any], partition: str, seed: int):
    from tinyodl.federated import iid_partition, make_clients, pathological_partition

    if partition == "iid":
        parts = iid_partition(len(data["y"]), 100, seed=seed)
    else:
        parts = pathological_partition(data["y"], 100, 2, seed=seed)
    return make_clients(parts, seed=seed)


# ------------------------------------------------------------------------------ one run


def run_one(
    data: dict[str, Any],
    *,
    algorithm: str,
    partition: str,
    lr: float,
    max_rounds: int,
    target: float,
    seed: int,
    model_name: str = "mlp_2nn",
    epochs: int = 1,
    batch_size: int | None = 10,
    fraction: float = 0.1,
    progress: bool = False,
    **server_kwargs: Any,
) -> dict[str, Any]:
    """One federated run until ``target`` accuracy or ``max_rounds``; a result row."""
    from tinyodl import models
    from tinyodl.federated import FederatedServer, LocalSGD, RandomSelection, rounds_to_target

    if algorithm == "fedsgd":
        epochs, batch_size = 1, None
    model = getattr(models, model_name)(seed=seed)
    server = FederatedServer(
        model,
        data["x"],
        data["y"],
        _clients(data, partition, seed),
        update_fn=LocalSGD(epochs, batch_size, lr),
        selection=RandomSelection(fraction),
        seed=seed,
        **server_kwargs,
    )
    start = time.perf_counter()
    diverged = _run_adaptive(server, data, max_rounds, target, progress)
    seconds = time.perf_counter() - start
    curve = server.accuracy_curve()
    reached = rounds_to_target(curve, target)
    bytes_up = np.cumsum([0] + [r.get("bytes_up", 0) for r in server.history_])[1:]
    return {
        "model": model_name,
        "algorithm": algorithm,
        "partition": partition,
        "E": epochs,
        "B": "inf" if batch_size is None else batch_size,
        "C": fraction,
        "lr": lr,
        "target": target,
        "rounds_to_target": reached,
        "rounds_run": server.round_,
        "final_accuracy": next((a for a in reversed(curve) if a is not None), None),
        "best_accuracy": max((a for a in curve if a is not None), default=0.0),
        "bytes_up": int(bytes_up[-1]) if len(bytes_up) else 0,
        "bytes_up_to_target": None if reached is None else int(bytes_up[reached - 1]),
        "bytes_down": int(server.bytes_down_),
        "seconds": seconds,
        "curve": [None if a is None else round(a, 4) for a in curve],
        "diverged": diverged,
    }


def _run_adaptive(server, data, max_rounds: int, target: float, progress: bool) -> str | None:
    """Run until ``target`` or ``max_rounds``, evaluating every 10 rounds while the accuracy
    is more than 2 points below the target and every round after that (so the round where
    the monotone-ised curve crosses the target is exact, at a fraction of the evaluations)."""
    from tqdm.auto import tqdm

    from tinyodl.federated import RoundFailedError

    best, last_eval, diverged = 0.0, 0, None
    with tqdm(total=max_rounds, disable=not progress, leave=False) as bar:
        while server.round_ < max_rounds:
            t = server.round_ + 1
            close = best >= target - 0.02
            try:
                if close or t - last_eval >= 10 or t == max_rounds:
                    record = server.run_round(data["x_test"], data["y_test"])
                    best, last_eval = max(best, record["test_accuracy"]), t
                    bar.set_postfix(acc=f"{record['test_accuracy']:.4f}")
                else:
                    server.run_round()
            except (RoundFailedError, FloatingPointError) as err:  # every client diverged
                diverged = f"round {t}: {str(err)[:200]}"
                break
            bar.update(1)
            if best >= target:
                break
    if server.history_ and "test_accuracy" not in server.history_[-1]:
        server.history_[-1]["test_loss"], server.history_[-1]["test_accuracy"] = server.evaluate(
            data["x_test"], data["y_test"]
        )
    return diverged


_DONE: list[dict[str, Any]] = []  # rows of the parts already finished in this process


def _keep(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    """Write the rows so far (``summary.partial``) so that a long run can stop at any time."""
    if args.json_path and not args.quick:
        write_results(
            args.json_path,
            _DONE + rows,
            {"partial": True, "command_note": "interrupted or still running"},
            machine=machine_info(threads=1),
        )


def _say(row: dict[str, Any]) -> None:
    extra = {k: row[k] for k in ("compressor", "aggregator", "attack") if k in row}
    print(
        f"  {row['algorithm']:7s} {row['partition']:12s} lr={row['lr']:<7g} "
        f"target={row['target']} reached_in={row['rounds_to_target']} "
        f"final={row['final_accuracy']} ({row['rounds_run']} rounds, "
        f"{row['seconds']:.0f} s) {extra or ''}"
        + (f" diverged at {row['diverged']}" if row.get("diverged") else ""),
        flush=True,
    )


# ------------------------------------------------------------------------------ parts


def part_mcmahan(data, args) -> tuple[list[dict], dict]:
    """The learning-rate search for each (algorithm, partition) and the best row of each."""
    rows = []
    target = 0.85 if args.quick else 0.97
    plan = [
        ("fedavg", args.lrs_fedavg, args.max_rounds_fedavg),
        ("fedsgd", args.lrs_fedsgd, args.max_rounds_fedsgd),
    ]
    plan = [p for p in plan if p[0] in args.algorithms.split(",")]
    for algorithm, lrs, cap in plan:
        for partition in [p for p in ("iid", "pathological") if p in args.partitions.split(",")]:
            fastest = None  # rounds of the best learning rate so far
            for lr in lrs:
                # a learning rate that has not reached the target by the best one's round
                # count cannot win: stop it there (the search order matters only for time)
                limit = cap if fastest is None else min(cap, fastest)
                row = run_one(
                    data,
                    algorithm=algorithm,
                    partition=partition,
                    lr=lr,
                    max_rounds=limit,
                    target=target,
                    seed=args.seed,
                    progress=not args.no_progress,
                )
                row["part"] = "mcmahan"
                row["paper_rounds"] = PAPER_ROUNDS[(algorithm, partition)]
                row["round_cap"] = limit
                row["stopped_early"] = row["rounds_to_target"] is None and limit < cap
                if row["rounds_to_target"] is not None:
                    fastest = min(fastest or cap, row["rounds_to_target"])
                rows.append(row)
                _say(row)
                _keep(args, rows)
    return rows, summarize_mcmahan(rows)


def summarize_mcmahan(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The best learning rate of each (algorithm, partition): fewest rounds to the target."""
    best = {}
    mc = [r for r in rows if r.get("part") == "mcmahan"]
    for key in sorted({(r["algorithm"], r["partition"]) for r in mc}):
        runs = [r for r in mc if (r["algorithm"], r["partition"]) == key]
        winner = min(runs, key=_rank)
        for r in runs:
            r["best_lr"] = r is winner
        best["/".join(key)] = {
            "lr": winner["lr"],
            "rounds_to_target": winner["rounds_to_target"],
            "final_accuracy": winner["final_accuracy"],
            "paper_rounds": winner["paper_rounds"],
            "lrs_tried": [r["lr"] for r in runs],
            "seconds": sum(r["seconds"] for r in runs),
        }
    return best


def _rank(row: dict[str, Any]) -> tuple:
    """Fewest rounds to the target; runs that never reached it by best accuracy."""
    reached = row["rounds_to_target"]
    return (0, reached, 0.0) if reached is not None else (1, 0, -row["best_accuracy"])


def part_compression(data, args) -> tuple[list[dict], dict]:
    """Rounds and bytes up to a target for each uplink compressor (FedAvg IID)."""
    from tinyodl.federated import Int8Quantization, TopK

    target = 0.8 if args.quick else args.comm_target
    cap = 10 if args.quick else 400
    lr = 0.1
    configs = [
        ("float32", None, False),
        ("int8", Int8Quantization(), False),
        ("int8 stochastic", Int8Quantization(stochastic=True), False),
        ("top-10%", TopK(0.1), False),
        ("top-10% + error feedback", TopK(0.1), True),
        ("top-1%", TopK(0.01), False),
        ("top-1% + error feedback", TopK(0.01), True),
    ]
    if args.quick:
        configs = [configs[0], configs[1], configs[-1]]
    rows = []
    for name, compressor, ef in configs:
        row = run_one(
            data,
            algorithm="fedavg",
            partition="iid",
            lr=lr,
            max_rounds=cap,
            target=target,
            seed=args.seed,
            compressor=compressor,
            error_feedback=ef,
            progress=not args.no_progress,
        )
        row.update(part="compression", compressor=name)
        rows.append(row)
        _say(row)
        _keep(args, rows)
    return rows, summarize_compression(rows)


def summarize_compression(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds and bytes up to the target per compressor, and the saving against float32."""
    comp = [r for r in rows if r.get("part") == "compression"]
    if not comp:
        return {}
    base = next((r["bytes_up_to_target"] for r in comp if r["compressor"] == "float32"), None)
    summary = {}
    for row in comp:
        b = row["bytes_up_to_target"]
        row["saving_at_target"] = None if (b is None or base is None) else base / b
        summary[row["compressor"]] = {
            "rounds_to_target": row["rounds_to_target"],
            "bytes_up_to_target": b,
            "saving": row["saving_at_target"],
            "final_accuracy": row["final_accuracy"],
        }
    return {"target": comp[0]["target"], "lr": comp[0]["lr"], "by_compressor": summary}


class BoostedSignFlip:
    """A malicious client: computes an honest update, sends ``-boost`` times it."""

    def __init__(self, honest, malicious: set[int], boost: float) -> None:
        self.honest, self.malicious, self.boost = honest, malicious, boost

    def work(self, n: int) -> int:
        return self.honest.work(n)

    def __call__(self, job):
        result = self.honest(job)
        if job.cid in self.malicious:
            result.delta = (-self.boost * result.delta).astype(np.float32)
        return result


def part_robustness(data, args) -> tuple[list[dict], dict]:
    """Final accuracy of each aggregator with 10% boosted sign-flipping clients."""
    from tinyodl.federated import (
        ClippedMean,
        CoordinateMedian,
        FedAvgM,
        Krum,
        LocalSGD,
        TrimmedMean,
        WeightedMean,
    )

    rounds = 5 if args.quick else args.robust_rounds
    aggregators = [
        ("mean", WeightedMean),
        ("clipped mean (C=1)", lambda: ClippedMean(1.0)),
        ("FedAvgM", lambda: FedAvgM(0.9, 1.0)),
        ("median", CoordinateMedian),
        ("trimmed mean (beta=0.2)", lambda: TrimmedMean(0.2)),
        ("Krum (f=2)", lambda: Krum(2)),
        ("Multi-Krum (f=2, m=5)", lambda: Krum(2, multi=5)),
    ]
    if args.quick:
        aggregators = [aggregators[0], aggregators[3], aggregators[5]]
    malicious = set(range(0, 100, 10))  # 10% of the clients
    rows = []
    for name, make in aggregators:
        for attack in (False, True):
            update = LocalSGD(1, 10, 0.1)
            if attack:
                update = BoostedSignFlip(update, malicious, boost=10.0)
            row = _robust_run(data, args, rounds, make(), update)
            row.update(
                part="robustness",
                aggregator=name,
                attack="boosted sign-flip x10, 10%" if attack else "none",
            )
            rows.append(row)
            _say(row)
            _keep(args, rows)
    return rows, summarize_robustness(rows)


def summarize_robustness(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Final accuracy of each aggregator, clean and attacked."""
    rob = [r for r in rows if r.get("part") == "robustness"]
    summary: dict[str, dict[str, float]] = {}
    for row in rob:
        kind = "clean" if row["attack"] == "none" else "attacked"
        summary.setdefault(row["aggregator"], {})[kind] = row["final_accuracy"]
    rounds = rob[0]["rounds_run"] if rob else None
    return {"rounds": rounds, "malicious_fraction": 0.1, "by_aggregator": summary}


def _robust_run(data, args, rounds, aggregator, update_fn) -> dict[str, Any]:
    from tinyodl import models
    from tinyodl.federated import FederatedServer, RandomSelection

    server = FederatedServer(
        models.mlp_2nn(seed=args.seed),
        data["x"],
        data["y"],
        _clients(data, "iid", args.seed),
        update_fn=update_fn,
        aggregator=aggregator,
        selection=RandomSelection(0.1),
        seed=args.seed,
    )
    start = time.perf_counter()
    server.run(rounds, on_failure="skip", progress=not args.no_progress)  # diverged: skipped
    _, acc = server.evaluate(data["x_test"], data["y_test"])
    return {
        "model": "mlp_2nn",
        "algorithm": "fedavg",
        "partition": "iid",
        "E": 1,
        "B": 10,
        "C": 0.1,
        "lr": 0.1,
        "target": None,
        "rounds_to_target": None,
        "rounds_run": rounds,
        "final_accuracy": acc,
        "bytes_up": int(server.bytes_up_),
        "seconds": time.perf_counter() - start,
    }


def part_cnn(data, args) -> tuple[list[dict], dict]:
    """The CNN, E = 5, B = 10, IID, to 99% (paper: 20 rounds)."""
    target = 0.95 if args.quick else 0.99
    row = run_one(
        data,
        algorithm="fedavg",
        partition="iid",
        lr=0.1 if not args.quick else 0.05,
        max_rounds=3 if args.quick else 100,
        target=target,
        seed=args.seed,
        model_name="cnn_mcmahan",
        epochs=1 if args.quick else 5,
        batch_size=10,
        progress=not args.no_progress,
    )
    row.update(part="cnn", paper_rounds=PAPER_ROUNDS[("cnn_fedavg", "iid")])
    _say(row)
    return [row], summarize_cnn([row])


def summarize_cnn(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds to 99% and the learning rate of the (last) CNN run."""
    row = [r for r in rows if r.get("part") == "cnn"][-1]
    return {"rounds_to_target": row["rounds_to_target"], "lr": row["lr"]}


def merge(paths: list[str], json_path: str | None) -> int:
    """Concatenate the rows of result files and merge their summaries part by part."""
    import json

    rows, sources, seconds = [], [], 0.0
    for path in paths:
        doc = json.loads(open(path, encoding="utf-8").read())
        rows += doc["rows"]
        sources.append({"file": str(path), "command": doc["command"], "machine": doc["machine"]})
        seconds += sum(r["seconds"] for r in doc["rows"])
    summary: dict[str, Any] = {"data": "full MNIST", "seconds_all_runs": seconds}
    for part, fn in (
        ("mcmahan", summarize_mcmahan),
        ("compression", summarize_compression),
        ("robustness", summarize_robustness),
        ("cnn", summarize_cnn),
    ):
        if any(r.get("part") == part for r in rows):
            summary[part] = fn(rows)
    summary["merged_from"] = sources
    write_results(json_path, rows, summary, machine=sources[0]["machine"])
    return 0


def main(args: argparse.Namespace) -> int:
    if args.merge:
        return merge(args.merge, args.json_path)
    parts = [p for p in args.only.split(",") if p]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(f"bench fedavg: unknown parts {unknown}; choose from {PARTS}")
    if args.quick:
        args.lrs_fedavg, args.lrs_fedsgd = [0.1], [0.5]
        args.max_rounds_fedavg, args.max_rounds_fedsgd = 10, 10
    data = _load(args)
    print(f"bench fedavg: {data['source']}; parts {parts}", flush=True)
    start = time.perf_counter()
    rows, summary = [], {"data": data["source"]}
    runners = {
        "mcmahan": part_mcmahan,
        "compression": part_compression,
        "robustness": part_robustness,
        "cnn": part_cnn,
    }
    for part in parts:
        t0 = time.perf_counter()
        part_rows, part_summary = runners[part](data, args)
        rows += part_rows
        _DONE[:] = rows
        summary[part] = {**part_summary, "seconds": time.perf_counter() - t0}
        if args.json_path and part != parts[-1]:  # keep what is done if a later part fails
            write_results(
                args.json_path, rows, {**summary, "partial": True}, machine_info(threads=1)
            )
    summary["seconds"] = time.perf_counter() - start
    summary["note"] = "wall-clock seconds on a shared 2-core machine; single thread"
    write_results(args.json_path, rows, summary, machine=machine_info(threads=1))
    return 0
