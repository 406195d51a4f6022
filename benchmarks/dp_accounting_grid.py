"""tinyodl's RDP accountant against dp-accounting (Google) on a grid of (q, sigma, steps, delta).

Writes ``benchmarks/results/dp_accounting_grid.json``: one row per grid point with both
epsilons (default orders, improved conversion) and both epsilons at integer orders only, and
a summary of the largest relative differences. Needs ``dp-accounting`` (a test-only
dependency: ``pip install "dp-accounting>=0.6,<0.7"``).

    python benchmarks/dp_accounting_grid.py

Why the two can differ: at fractional orders below about 3, dp-accounting 0.6 sums the
absolute values of an alternating series (an upper bound on the RDP), tinyodl sums it with
its signs (and matches numerical quadrature, ``tests/test_privacy_accountant.py``). At
integer orders both are exact.
"""

from __future__ import annotations

import itertools
import logging
import sys
import time
from pathlib import Path

import numpy as np

from tinyodl import privacy
from tinyodl.bench._common import machine_info, write_results

QS = [0.001, 0.004, 0.01, 0.05, 0.1, 0.3, 1.0]
SIGMAS = [0.5, 0.7, 1.0, 1.5, 2.0, 4.0, 8.0]
STEPS = [1, 10, 100, 1000, 10_000, 100_000]
DELTAS = [1e-3, 1e-5, 1e-7, 1e-9]
INTEGER_ORDERS = [float(a) for a in range(2, 65)] + [128.0, 256.0, 512.0, 1024.0]


def main() -> int:
    try:
        from dp_accounting import dp_event
        from dp_accounting.rdp import rdp_privacy_accountant as rdp_acc
    except ImportError:
        print("needs dp-accounting: pip install 'dp-accounting>=0.6,<0.7'")
        return 1
    logging.getLogger("absl").setLevel(logging.ERROR)
    t0 = time.perf_counter()
    rows = []
    for q, sigma in itertools.product(QS, SIGMAS):
        event = dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma))
        curves = {}
        for label, orders in (
            ("default", list(privacy.DEFAULT_ORDERS)),
            ("integer", INTEGER_ORDERS),
        ):
            theirs = rdp_acc.RdpAccountant(orders=orders)
            theirs.compose(event, 1)
            ours = privacy.RDPAccountant(orders).compose_subsampled_gaussian(q, sigma, 1)
            curves[label] = (orders, ours.rdp_, theirs._rdp)
        for steps, delta in itertools.product(STEPS, DELTAS):
            row = {"q": q, "noise_multiplier": sigma, "steps": steps, "delta": delta}
            for label, (orders, ours, theirs) in curves.items():
                row[f"epsilon_{label}_tinyodl"] = privacy.rdp_to_epsilon(
                    orders, steps * ours, delta
                )[0]
                row[f"epsilon_{label}_dp_accounting"] = rdp_acc.compute_epsilon(
                    orders, steps * theirs, delta
                )[0]
            rows.append(row)

    def worst(label, limit=np.inf):
        diffs = [
            abs(r[f"epsilon_{label}_tinyodl"] - r[f"epsilon_{label}_dp_accounting"])
            / r[f"epsilon_{label}_dp_accounting"]
            for r in rows
            if 0 < r[f"epsilon_{label}_dp_accounting"] <= limit
        ]
        return max(diffs)

    summary = {
        "grid_points": len(rows),
        "max_rel_diff_integer_orders": worst("integer"),
        "max_rel_diff_default_orders_eps_le_10": worst("default", 10.0),
        "max_rel_diff_default_orders_eps_le_100": worst("default", 100.0),
        "max_rel_diff_default_orders_all": worst("default"),
        "tinyodl_never_larger": all(
            r["epsilon_default_tinyodl"] <= r["epsilon_default_dp_accounting"] * (1 + 1e-9)
            for r in rows
        ),
        "seconds": time.perf_counter() - t0,
    }
    for key, value in summary.items():
        print(f"{key}: {value}")
    out = Path(__file__).resolve().parent / "results" / "dp_accounting_grid.json"
    write_results(
        out,
        rows,
        summary,
        machine=machine_info(threads=1),
        command="python benchmarks/dp_accounting_grid.py",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
