"""The figures the README quotes beside ``tinyodl demo``'s table.

1. The 64 KB scheme (chapter 04's search at 64 KB) on chapter 12's engine: accuracy over the
   demo's three seeds (mean and population standard deviation, as the demo prints them) and
   the measured and analytic peak training memory of seed 0.
2. The demo's 32 KB scheme compiled for the engine: resident training state (fp32 shadow and
   momentum, trained integers), the planned step peak and the step it falls on, and one real
   step's measured peak.

Usage: ``python benchmarks/demo_details.py`` (about 5 s; run on an idle machine).
"""

from __future__ import annotations

import json
import statistics

from tinyodl import demo

#: The scheme chapter 04's search finds under 64 KB (the demo's before commit e7efcb1).
SCHEME_64KB = {
    "bias_depth": 8,
    "weights": {
        "classifier.0": 1.0,
        "features.7.project": 0.125,
        "features.8.expand": 0.125,
        "features.8.depthwise": 0.5,
        "features.8.project": 0.125,
    },
}


def scheme_64kb() -> None:
    cfg = demo.DemoConfig(scheme=SCHEME_64KB, methods=("sparse_update_engine",))
    rows = [demo.run_method("sparse_update_engine", s, cfg, measure=s == 0) for s in cfg.seeds]
    acc = [100 * r["accuracy"] for r in rows]
    mem = rows[0]["memory"]
    print(
        f"64 KB scheme on the engine: {statistics.mean(acc):.2f} ± {statistics.pstdev(acc):.2f}%"
        f", measured {mem['measured'] / 1024:.1f} KB, analytic {mem['analytic'] / 1024:.1f} KB,"
        f" {rows[0]['trainable_params']:,} trained scalars"
    )


def plan_32kb() -> None:
    cfg = demo.DemoConfig()
    plan, task = demo.engine_plan(cfg.scheme, "sparse_update_engine", cfg)
    s = plan.summary()
    measured = plan.measure(task.x_train[:1], task.y_train[:1]).peak_bytes
    keys = ("planned_peak_bytes", "peak_step", "state_bytes", "trainable_bytes")
    print("32 KB scheme's plan:", json.dumps({k: s[k] for k in keys}))
    print(f"measured step peak {measured} B; resident {s['state_bytes'] + s['trainable_bytes']} B")


if __name__ == "__main__":
    scheme_64kb()
    plan_32kb()
