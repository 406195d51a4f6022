"""Smoke runs of ``tinyodl bench qas`` and ``tinyodl bench transfer`` (--quick) and their JSON."""

from __future__ import annotations

import json

import pytest

from tinyodl.cli import main as cli_main

REQUIRED = (
    "method",
    "task",
    "seed",
    "accuracy",
    "trainable_params",
    "peak_train_bytes_measured",
    "peak_train_bytes_analytic",
    "seconds",
)


def _run(tmp_path, name):
    out = tmp_path / f"{name}.json"
    assert cli_main(["bench", name, "--quick", "--json", str(out)]) == 0
    return json.loads(out.read_text())


def _check_schema(doc, methods):
    assert set(doc) >= {"machine", "command", "rows", "summary"}
    rows = doc["rows"]
    assert {(r["method"], r["task"]) for r in rows} == {(m, t) for m in methods for t in "AB"}
    for row in rows:
        assert set(REQUIRED) <= set(row), set(REQUIRED) - set(row)
        assert 0.0 <= row["accuracy"] <= 1.0
        assert row["trainable_params"] > 0 and row["peak_train_bytes_measured"] > 0
        analytic, measured = row["peak_train_bytes_analytic"], row["peak_train_bytes_measured"]
        assert 0.5 * measured < analytic < 1.5 * measured
    for task in "AB":
        assert set(doc["summary"]["accuracy"][task]) == set(methods)


@pytest.mark.slow
def test_bench_qas_quick(tmp_path):
    doc = _run(tmp_path, "qas")
    _check_schema(doc, ("fp32_sgdm", "int8_sgdm", "int8_adam", "int8_sgdm_qas"))
    ptq = doc["summary"]["ptq"]
    assert ptq["float_accuracy"] > 0.9 and abs(ptq["float_accuracy"] - ptq["int8_accuracy"]) < 0.03
    store = doc["summary"]["tasks"]["A"]["weight_store"]
    assert store["int8"]["frozen_fraction"] >= store["shadow"]["frozen_fraction"]


@pytest.mark.slow
def test_bench_transfer_quick(tmp_path):
    doc = _run(tmp_path, "transfer")
    methods = (
        "feature_extraction",
        "finetune_last_k",
        "finetune_full",
        "tinytl_bias",
        "tinytl_lite_residual",
    )
    _check_schema(doc, methods)
    params = doc["summary"]["trainable_params"]
    assert params["feature_extraction"] < params["tinytl_bias"] < params["finetune_full"]
    memory = doc["summary"]["tasks"]["A"]["memory"]
    for method in methods:
        for n in ("1", "8"):
            m = memory[method][n]
            assert abs(m["analytic"] - m["measured"]) <= 0.1 * m["measured"], (method, n)
    assert (
        memory["tinytl_bias"]["8"]["saved_bytes"] * 8 < memory["finetune_full"]["8"]["saved_bytes"]
    )
