"""Chapter 10 benchmarks: ``tinyodl bench dpsgd`` and ``tinyodl bench dpmemory`` smoke runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tinyodl import privacy
from tinyodl.bench import dpsgd


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "tinyodl", *args], capture_output=True,
                          text=True, env=env, timeout=600)  # fmt: skip


def test_bench_dpsgd_quick_writes_rows_and_plot(tmp_path):
    path, plot = tmp_path / "dpsgd.json", tmp_path / "dpsgd.png"
    res = _cli(
        "bench", "dpsgd", "--quick", "--runs", "8:1", "--json", str(path), "--plot", str(plot)
    )
    assert res.returncode == 0, res.stderr
    doc = json.loads(path.read_text())
    assert doc["command"].startswith("tinyodl bench dpsgd --quick")
    methods = [r["method"] for r in doc["rows"]]
    assert methods == ["non-private", "dp-sgd", "dp-ftrl"]
    assert doc["summary"]["complete"] is True
    for row in doc["rows"]:
        assert {"epsilon", "delta", "noise_multiplier", "epochs", "accuracy", "seconds"} <= set(row)
        assert 0.0 <= row["accuracy"] <= 1.0
    dp, ftrl = doc["rows"][1], doc["rows"][2]
    assert dp["epsilon_spent"] <= 8.0 and ftrl["epsilon_spent"] <= 8.0
    assert dp["pca_noise_multiplier"] == dpsgd.pca_noise_for(8.0)
    # the accountant, DP-PCA included, reproduces the row's epsilon
    prior = privacy.RDPAccountant().compose_gaussian(dp["pca_noise_multiplier"])
    q = dpsgd.LOT_SIZE / doc["summary"]["train_examples"]
    spent = privacy.epsilon(q=q, noise_multiplier=dp["noise_multiplier"], steps=dp["steps"],
                            delta=1e-5, prior=prior)  # fmt: skip
    assert spent == pytest.approx(dp["epsilon_spent"], rel=1e-9)
    assert ftrl["noise_multiplier"] > dp["noise_multiplier"]  # no amplification by sampling
    assert plot.stat().st_size > 0


def test_printed_rows_read_back_and_replot(tmp_path):
    rows = [
        dpsgd._row("dp-sgd", 2.0, 1.987, 3.245, 8.0, 200, 20000, 0.9421, 1037.4),
        dpsgd._row("dp-ftrl", 2.0, 1.999, 32.33, 8.0, 30, 3000, 0.913, 120.0),
        dpsgd._row("non-private", float("inf"), float("inf"), 0.0, 0.0, 50, 5000, 0.97, 9.0),
    ]
    log = tmp_path / "run.log"
    log.write_text("progress noise\n" + "\n".join(dpsgd._fmt(r) for r in rows) + "\n")
    back = dpsgd.rows_from_log(log.read_text())
    assert [r["method"] for r in back] == [r["method"] for r in rows]
    for r, b in zip(rows, back, strict=True):
        assert b["epsilon"] == r["epsilon"] and b["epochs"] == r["epochs"]
        assert b["epsilon_spent"] == pytest.approx(r["epsilon_spent"], rel=1e-2)
        assert b["accuracy"] == pytest.approx(r["accuracy"], abs=1e-4)
    doc = tmp_path / "rows.json"
    doc.write_text(json.dumps({"rows": rows[2:]}))
    fig = tmp_path / "fig.png"
    assert dpsgd.replot([str(doc), str(log)], str(fig)) == 0 and fig.stat().st_size > 0
    empty = tmp_path / "empty.log"
    empty.write_text("nothing here\n")
    with pytest.raises(SystemExit, match="no result rows in"):
        dpsgd.replot([str(empty)], str(fig))


def test_bench_dpsgd_refuses_a_bad_runs_argument():
    res = _cli("bench", "dpsgd", "--quick", "--runs", "eight")
    assert res.returncode != 0 and "--runs must look like" in res.stderr


def test_bench_dpmemory_quick(tmp_path):
    path = tmp_path / "mem.json"
    res = _cli("bench", "dpmemory", "--quick", "--json", str(path))
    assert res.returncode == 0, res.stderr
    doc = json.loads(path.read_text())
    steps = {(r["network"], r["clipping"]): r for r in doc["rows"] if r["kind"] == "step"}
    assert set(n for n, _ in steps) == {"abadi_mlp", "cnn_mcmahan", "mcunet_tiny"}
    for r in steps.values():
        assert r["max_rel_diff_of_sums"] < 1e-3  # the two methods give the same clipped sums
    assert doc["summary"]["abadi_mlp"]["saving"] > 5
    layers = [r for r in doc["rows"] if r["kind"] == "layer"]
    assert {r["type"] for r in layers} >= {"Linear", "Conv2d", "DepthwiseConv2d"}


def test_bench_dpfedavg_quick(tmp_path):
    pytest.importorskip("tinyodl.federated")
    path = tmp_path / "fed.json"
    res = _cli("bench", "dpfedavg", "--quick", "--rounds", "3", "--json", str(path))
    assert res.returncode == 0, res.stderr
    doc = json.loads(path.read_text())
    assert doc["summary"]["complete"] is True
    rows = {r["method"]: r for r in doc["rows"]}
    assert rows["fedavg (non-private)"]["epsilon"] == float("inf")
    adaptive = next(r for r in doc["rows"] if r["adaptive"])
    assert adaptive["epsilon"] == pytest.approx(
        privacy.dpfedavg_epsilon(doc["summary"]["sample_rate"], 1.0, 3, 1e-5)
    )
    assert len(adaptive["clip_curve"]) == 3 and adaptive["final_clip_norm"] != adaptive["clip_norm"]
    assert adaptive["update_noise_multiplier"] > adaptive["noise_multiplier"]  # the split
