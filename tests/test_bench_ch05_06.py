"""Smoke runs of ``tinyodl bench layerwise`` and ``tinyodl bench checkpointing`` (--quick).

They check the JSON every benchmark writes (``machine``, ``command``, ``rows``, ``summary``),
the summary keys the README quotes, and the facts that hold at any size; no timings.
"""

from __future__ import annotations

import json

import pytest

from tinyodl.cli import main


@pytest.mark.slow
def test_bench_checkpointing_quick(tmp_path):
    path = tmp_path / "checkpointing.json"
    assert main(["bench", "checkpointing", "--quick", "--json", str(path)]) == 0
    doc = json.loads(path.read_text())
    assert set(doc) >= {"machine", "command", "rows", "summary"}
    assert isinstance(doc["command"], str) and doc["machine"]["threads"] == 1
    k4 = doc["summary"]["chain16_k4"]
    assert set(k4) >= {"live_activations_measured", "live_activations_plain"}
    assert 6.5 < k4["live_activations_measured"] < 8.0
    assert 15.5 < k4["live_activations_plain"] < 17.0
    assert doc["summary"]["prediction_max_relative_error"] < 0.05
    assert doc["summary"]["deep_cnn"]["memory_ratio"] < 0.5
    assert all(r["peak_bytes_measured"] > 0 for r in doc["rows"])


@pytest.mark.slow
def test_bench_layerwise_quick(tmp_path):
    path, png = tmp_path / "layerwise.json", tmp_path / "layerwise.png"
    args = ["bench", "layerwise", "--quick", "--no-progress", "--json", str(path)]
    assert main([*args, "--plot", str(png)]) == 0
    doc = json.loads(path.read_text())
    summary = doc["summary"]
    assert set(summary) >= {"end_to_end", "layerwise", "head_only_random", "head_only_pretrained"}
    assert summary["memory_ratio_end_to_end_over_layerwise"] > 1.4
    assert summary["saved_activations_ratio"] > 3.0
    methods = [r["method"] for r in doc["rows"]]
    assert methods[0] == "end_to_end" and sum(m.startswith("layerwise") for m in methods) == 4
    for r in doc["rows"]:
        assert 0.0 <= r["test_accuracy"] <= 1.0
        if r["peak_bytes_analytic"]:
            err = (
                abs(r["peak_bytes_analytic"] - r["peak_bytes_measured"]) / r["peak_bytes_measured"]
            )
            assert err < 0.05, r["method"]
    assert png.stat().st_size > 10_000
