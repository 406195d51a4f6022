"""``tinyodl bench sparse_update``: chapter 04 end to end on task A.

1. The int8 ``mcunet_tiny`` of task A (PTQ of the shipped pretrained model, a new head);
   the adaptation set of seed 0 is split 80/20 (stratified): the contribution analysis
   trains on the 80% and measures every gain on the held-out 20%
   (:func:`tinyodl.sparse_update.contribution_analysis`; int8 graph, QAS, batch 1).
2. The exact search and the evolutionary search, on the same contribution table, candidate
   layers and budgets (paper accounting with SGD-M's momentum): summed gain, cost, schemes
   evaluated, seconds.
3. The memory of each found scheme three ways: the paper's accounting, tinyodl's analytic
   replay and tracemalloc (beyond frozen weights and input, batch 1).
4. The scheme found at the demo's budget trained on the full adaptation set of seeds
   0..N-1 and evaluated on task A's test images, beside the classifier-only scheme.
"""

from __future__ import annotations

import numpy as np

from tinyodl import sparse_update as su
from tinyodl.bench._common import machine_info, write_results

HELP = "chapter 04: contribution analysis, exact vs evolutionary search, sparse training"
#: Candidate layers for weight updates: the last eight before the classifier.
CANDIDATES = (
    "features.7.project",
    "features.8.expand",
    "features.8.depthwise",
    "features.8.project",
    "features.9.expand",
    "features.9.depthwise",
    "features.9.project",
    "features.10",
)
BIAS_DEPTHS = (2, 3, 4, 6, 8, 10, 12, 16, 23)
BUDGETS_KB = (32, 64, 128)


def add_arguments(parser) -> None:
    parser.add_argument("--seeds", type=int, default=3, help="training seeds (default 3)")
    parser.add_argument("--per-class", type=int, default=100, help="adaptation images/class")
    parser.add_argument("--lr", type=float, default=0.01, help="SGD-M + QAS learning rate")
    parser.add_argument(
        "--contributions",
        default=None,
        help="reuse the contribution table of an earlier result JSON (skips step 1)",
    )


def main(args) -> int:
    from threadpoolctl import threadpool_limits

    from tinyodl import backend
    from tinyodl.data import train_val_split
    from tinyodl.demo import BUDGET_BYTES, _setup

    backend.set_num_threads(1)
    quick = args.quick
    per_class = 10 if quick else args.per_class
    candidates = list(CANDIDATES[-3:] if quick else CANDIDATES)
    depths = [2, 4] if quick else list(BIAS_DEPTHS)
    ratios = (0.25, 1.0) if quick else su.RATIOS[1:]
    train_kwargs = {"epochs": 1, "batch_size": 1, "lr": args.lr, "seed": 0}
    with threadpool_limits(1):
        task, _, qmodel, x_test, y_test = _setup(0, per_class, 128, 200 if quick else None)
        xt, yt, xv, yv = train_val_split(task.x_train, task.y_train, 0.2, np.random.default_rng(0))
        if args.contributions:
            import json

            prior = json.loads(open(args.contributions, encoding="utf-8").read())
            table = su.ContributionTable.from_dict(prior["summary"]["contributions"])
            candidates = list(table.weight)
        else:
            table = su.contribution_analysis(
                qmodel,
                xt,
                yt,
                xv,
                yv,
                layers=candidates,
                bias_depths=depths,
                ratios=ratios,
                train_kwargs=train_kwargs,
                progress=not quick,
            )
        print(
            f"contribution analysis: {table.seconds:.1f} s, base accuracy "
            f"{100 * table.base_accuracy:.1f}%",
            flush=True,
        )
        searches = []
        x1, y1 = task.x_train[:1], task.y_train[:1]
        for kb in BUDGETS_KB:
            budget = kb * 1024
            kw = {"layers": candidates, "momentum": True}
            ex = su.exact_search(qmodel, table, budget, **kw)
            ev = su.evolutionary_search(qmodel, table, budget, seed=0, **kw)
            for kind, res in (("exact", ex), ("evolutionary", ev)):
                mem = su.measured_memory(qmodel, res["scheme"], x1, y1)
                searches.append(
                    {
                        "budget_kb": kb,
                        "search": kind,
                        "scheme": res["scheme"].to_dict(),
                        "gain": res["gain"],
                        "paper_bytes": int(res["cost"]),
                        "analytic_bytes": mem["analytic"],
                        "measured_bytes": mem["measured"],
                        "evaluated": res["evaluated"],
                        "seconds": res["seconds"],
                    }
                )
                print(
                    f"budget {kb} KB {kind:>12}: gain {100 * res['gain']:+.1f} points, "
                    f"paper {res['cost'] / 1024:.1f} KB, measured {mem['measured'] / 1024:.1f}"
                    f" KB, {res['evaluated']:,} schemes, {res['seconds']:.2f} s  "
                    f"[{res['scheme']}]",
                    flush=True,
                )
        found = su.exact_search(qmodel, table, BUDGET_BYTES, layers=candidates, momentum=True)
        rows = []
        for name, scheme in (("classifier_only", table.base_scheme), ("found", found["scheme"])):
            for seed in range(1 if quick else args.seeds):
                t, _, q, xte, yte = _setup(seed, per_class, 128, 200 if quick else None)
                model, _ = su.train(
                    q, scheme, t.x_train, t.y_train, **{**train_kwargs, "seed": seed}
                )
                from tinyodl.train import evaluate

                acc = float(evaluate(model, xte, yte, batch_size=500)[1])
                rows.append(
                    {"scheme_name": name, "seed": seed, "accuracy": acc, "scheme": scheme.to_dict()}
                )
                print(f"{name} seed {seed}: {100 * acc:.2f}%", flush=True)
    mem_found = su.measured_memory(qmodel, found["scheme"], x1, y1)
    summary = {
        "contributions": table.to_dict(),
        "searches": searches,
        "found_scheme": found["scheme"].to_dict(),
        "found_budget_bytes": BUDGET_BYTES,
        "found_memory": {
            "paper": int(found["cost"]),
            "analytic": mem_found["analytic"],
            "measured": mem_found["measured"],
        },
        "accuracy": {
            n: float(np.mean([r["accuracy"] for r in rows if r["scheme_name"] == n]))
            for n in ("classifier_only", "found")
        },
        "settings": {
            "per_class": per_class,
            "candidates": candidates,
            "bias_depths": depths,
            "train": train_kwargs,
            "quick": quick,
            "contributions_from": args.contributions,
        },
    }
    write_results(args.json_path, rows, summary, machine=machine_info(threads=1))
    return 0
