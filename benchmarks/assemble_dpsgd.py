"""Assemble ``dpsgd.json`` and ``dpsgd_seeds.json`` from the runs of ``run_dpsgd.sh``.

``python benchmarks/assemble_dpsgd.py RUNS_DIR [--out benchmarks/results]`` reads
``RUNS_DIR/{A,B,C}.json`` (the baseline, epsilon 8 and DP-FTRL at 8; epsilon 2; epsilon 0.5,
each with DP-FTRL) and ``RUNS_DIR/seed{1,2,3}.json`` (DP-SGD at epsilon 2 and 8 with another
seed). ``dpsgd.json`` gets the rows of A, B and C (each row keeps the command that made it);
``dpsgd_seeds.json`` the DP-SGD rows at epsilon 2 and 8 for seeds 0-3 with their mean,
standard deviation and range.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from tinyodl.bench import dpsgd as b
from tinyodl.bench._common import write_results

ORDER = {"non-private": 0, "dp-sgd": 1, "dp-ftrl": 2}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args()
    docs = {k: json.loads((args.runs / f"{k}.json").read_text()) for k in "ABC"}
    rows: list[dict] = []
    for doc in docs.values():
        rows = b.merge_rows(rows, doc["rows"])
    rows.sort(key=lambda r: (ORDER[r["method"]], r["epsilon"]))
    seconds = sum(r["seconds"] for r in rows)
    main_file = args.out / "dpsgd.json"
    run_a = docs["A"]["summary"]
    b._write(
        main_file, rows, run_a["data"], run_a["train_examples"], 0.0, True, docs["A"]["machine"]
    )
    doc = json.loads(main_file.read_text())
    doc["command"] = "assembled by benchmarks/assemble_dpsgd.py from the runs of run_dpsgd.sh"
    doc["summary"]["seconds"] = seconds
    doc["summary"]["machine_note"] = (
        "idle 2-core machine, two runs side by side, one thread each; seconds are wall-clock"
    )
    main_file.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {main_file}: {len(rows)} rows")

    seed_rows = [dict(r, seed=0) for r in rows if r["method"] == "dp-sgd" and r["epsilon"] >= 2]
    for s in (1, 2, 3):
        extra = json.loads((args.runs / f"seed{s}.json").read_text())["rows"]
        seed_rows += [dict(r, seed=s) for r in extra if r["method"] == "dp-sgd"]
    summary: dict = {"data": doc["summary"]["data"]}
    for eps in (2.0, 8.0):
        mine = sorted((r for r in seed_rows if r["epsilon"] == eps), key=lambda r: r["seed"])
        acc = np.array([r["accuracy"] for r in mine])
        summary[f"eps_{eps:g}"] = {
            "seeds": [r["seed"] for r in mine], "accuracy": acc.tolist(),
            "mean": float(acc.mean()), "std": float(acc.std(ddof=1)),
            "min": float(acc.min()), "max": float(acc.max()),
        }  # fmt: skip
    summary["note"] = (
        "the recipe's DP-SGD rows at epsilon 2 and 8 with seeds 0-3 (seed 0 = dpsgd.json's "
        "rows); seeds 1-3: tinyodl bench dpsgd --data D --runs 8:100,2:45 --seed S --no-ftrl "
        "--no-baseline"
    )
    summary["seconds"] = sum(r["seconds"] for r in seed_rows)
    seeds_file = args.out / "dpsgd_seeds.json"
    command = (
        "assembled by benchmarks/assemble_dpsgd.py from the seed-0 rows of dpsgd.json's runs "
        "and three runs with --seed 1, 2, 3 (each row's command)"
    )
    write_results(seeds_file, seed_rows, summary, machine=docs["A"]["machine"], command=command)
    for eps in ("2", "8"):
        s = summary[f"eps_{eps}"]
        print(f"epsilon {eps}: {s['accuracy']} mean {s['mean']:.4f} +- {s['std']:.4f}")


if __name__ == "__main__":
    main()
