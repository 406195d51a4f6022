"""The ``tinyodl`` command: usage errors, benchmarks and the demo end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tinyodl.cli import main


def _cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, "-m", "tinyodl", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "the following arguments are required: command"),
        (["fit"], "invalid choice: 'fit'"),
        (["train", "--epochs", "0"], "expected a positive integer, got 0"),
        (["demo", "--seeds", "0"], "expected a positive integer, got 0"),
        (["bench"], "the following arguments are required: bench_command"),
        (["exercises", "release"], "the following arguments are required: --out"),
    ],
)
def test_usage_errors_exit_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_info_names_the_backend(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "active backend:" in out


def test_bench_kernels_writes_json(tmp_path):
    path = tmp_path / "bench.json"
    res = _cli("bench", "kernels", "--quick", "--repeats", "1", "--json", str(path))
    assert res.returncode == 0, res.stderr
    results = json.loads(path.read_text())
    assert set(results) >= {"int8_gemm", "int8_conv", "float_conv", "training"}
    assert results["int8_gemm"]["int8_gops"] > 0
    assert {r["layer"].split()[1] for r in results["int8_conv"]} >= {"conv", "pointwise"}
    assert {r["backend"] for r in results["training"]} == set(results["machine"]["backends"])
    assert "int8 GEMM" in res.stdout


@pytest.mark.slow
def test_train_runs_end_to_end(tmp_path):
    res = _cli("train", "--epochs", "1", "--no-progress", "--out", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    # one epoch of LeNet-5 on the shipped subset is far above chance (10%)
    assert results["test_accuracy"] > 0.9
    assert abs(results["memory_relative_error"]) < 0.10
    for name in ("training.png", "memory.png"):
        assert (tmp_path / "out" / name).stat().st_size > 10_000
    assert "test accuracy:" in res.stdout


def test_train_rejects_a_missing_data_folder(tmp_path):
    res = _cli("train", "--data", str(tmp_path / "nowhere"), "--no-progress")
    assert res.returncode != 0
    assert "nowhere" in res.stderr
