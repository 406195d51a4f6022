"""``tinyodl bench classic|pruning|data_compression --quick``: the JSON of chapters 01, 02, 07.

Smoke runs of the headline benchmarks in their quick configuration (the shipped data, small
sizes): the document has the shape every benchmark writes (``machine``, ``command``,
``rows``, ``summary``), the summary keys the issue asks for, and figures that must hold at
any size (a channel-pruned model has fewer parameters and MACs; what a method keeps fits its
budget). No timing is asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def _bench(name: str, tmp_path) -> dict:
    path, plot = tmp_path / f"{name}.json", tmp_path / f"{name}.png"
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, "-m", "tinyodl", "bench", name, "--quick", "--json", str(path),
         "--plot", str(plot)],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads(path.read_text())
    assert set(doc) >= {"machine", "command", "rows", "summary"}
    assert doc["command"].startswith("tinyodl bench " + name)
    assert doc["machine"]["cpu"] and doc["summary"]["quick"] is True
    assert plot.stat().st_size > 10_000
    return doc


@pytest.mark.slow
def test_bench_pruning_quick(tmp_path):
    doc = _bench("pruning", tmp_path)
    s = doc["summary"]["mlp_2nn_sparsity_90"]
    assert 0.1 < s["dense_accuracy"] <= 1 and 0.1 < s["sparse_accuracy"] <= 1
    assert s["sparsity"] == pytest.approx(0.9, abs=1e-6)
    assert s["weight_bytes_bitmask"] < s["weight_bytes_dense"] / 5
    for model in ("lenet5", "cnn_mcmahan", "mcunet_tiny"):
        r = doc["summary"]["channel_speedup"][model]
        assert r["params_pruned"] < r["params_dense"] and r["macs_pruned"] < r["macs_dense"]
        assert r["speedup"] > 0
    kinds = {r["experiment"] for r in doc["rows"]}
    assert kinds == {"magnitude", "structured", "speed", "sensitivity"}


@pytest.mark.slow
def test_bench_classic_quick(tmp_path):
    doc = _bench("classic", tmp_path)
    one = doc["summary"]["one_pass"]
    cnn = one["LeNet-5, one pass (SGD)"]
    classic = [k for k in one if not k.startswith("LeNet-5")]
    assert len(classic) == 7
    assert all(one[k]["model_bytes"] < cnn["model_bytes"] for k in classic)
    assert all(0.1 < one[k]["accuracy"] <= 1 for k in one)
    for name, d in doc["summary"]["drift"].items():  # continued updates follow the new writer
        assert d["shifted_accuracy_continued"] > d["shifted_accuracy_frozen_at_half"], name
    rows = [r for r in doc["rows"] if r["experiment"] == "one pass"]
    assert all(r["update_peak_bytes"] > 0 for r in rows if "update_peak_bytes" in r)


@pytest.mark.slow
def test_bench_data_compression_quick(tmp_path):
    from tinyodl.data_compression import METHODS

    doc = _bench("data_compression", tmp_path)
    rows = doc["rows"]
    assert {r["method"] for r in rows} == set(METHODS)
    assert all(r["bytes_used"] <= r["budget_bytes"] for r in rows)
    budgets = sorted({r["budget_bytes"] for r in rows})
    winners = doc["summary"]["winner_by_budget"]
    assert list(winners) == [f"{b // 1024}KiB" for b in budgets]
    for b in budgets:  # at the same budget, 1-bit images are 8x as many as 8-bit ones
        n = {r["method"]: r["n_examples"] for r in rows if r["budget_bytes"] == b}
        assert n["random-1bit"] > 7 * n["random"]
