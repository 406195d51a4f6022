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
    res = _cli(
        "bench", "kernels", "--quick", "--repeats", "1", "--gemm-steps", "--threads2",
        "--json", str(path),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    results = json.loads(path.read_text())
    assert set(results) == {"machine", "command", "rows", "summary"}
    summary = results["summary"]
    assert summary["int8_gemm"]["vs_sgemm"] > 0 and summary["int8_gemm"]["linear_s8_gops"] > 0
    assert summary["threads2"]["int8_gemm_speedup"] > 0
    assert {r["layer"].split()[1] for r in summary["int8_conv"]} >= {"conv", "pointwise"}
    assert all(r["scratch_bytes"] >= 0 for r in summary["int8_conv"])
    groups = {r["group"] for r in results["rows"]}
    assert groups >= {"int8_gemm", "int8_conv", "int8_backward", "float_conv", "gemm_steps"}
    steps = [r for r in results["rows"] if r["group"] == "gemm_steps"]
    assert [r["name"] for r in steps][0] == "reference" and all(r["exact"] for r in steps)
    if "torch" in results["machine"]:  # the PyTorch baselines ran in the same process
        assert summary["int8_gemm"]["vs_fbgemm"] > 0
        assert all(r["vs_torch_qconv"] > 0 for r in summary["int8_conv"])
    assert "int8 GEMM" in res.stdout and results["machine"]["cpu_flags"] is not None


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
