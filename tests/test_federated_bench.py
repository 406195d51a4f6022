"""``tinyodl bench fedavg --quick``: a smoke run of every part; rows and summary consistent."""

from __future__ import annotations

import json

import pytest

from tinyodl.bench import fedavg
from tinyodl.cli import main
from tinyodl.federated import rounds_to_target


@pytest.mark.slow
@pytest.mark.timeout(1800)  # ~20 s of CPU; generous for a loaded shared machine
def test_bench_fedavg_quick(tmp_path, capsys):
    out = tmp_path / "fedavg.json"
    assert main(["bench", "fedavg", "--quick", "--no-progress", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert {"machine", "command", "rows", "summary"} <= doc.keys()
    rows = doc["rows"]
    mc = [r for r in rows if r["part"] == "mcmahan"]
    assert {(r["algorithm"], r["partition"]) for r in mc} == set(
        k for k in fedavg.PAPER_ROUNDS if k[0] != "cnn_fedavg"
    )
    for r in mc:
        for key in ("algorithm", "partition", "E", "B", "C", "lr", "rounds_to_target",
                    "final_accuracy", "bytes_up", "seconds"):  # fmt: skip
            assert key in r
        assert r["rounds_to_target"] == rounds_to_target(r["curve"], r["target"])
        assert r["paper_rounds"] == fedavg.PAPER_ROUNDS[r["algorithm"], r["partition"]]
        assert r["bytes_up"] == r["rounds_run"] * 10 * 4 * 199_210  # 10 clients, float32
        assert 0.1 < r["final_accuracy"] <= 1
        assert (r["B"] == "inf") == (r["algorithm"] == "fedsgd")
    best = doc["summary"]["mcmahan"]
    assert best["fedavg/iid"]["rounds_to_target"] is not None  # 85% in a few IID rounds
    comp = {r["compressor"]: r for r in rows if r["part"] == "compression"}
    assert comp["float32"]["saving_at_target"] == 1.0
    assert comp["int8"]["bytes_up"] < comp["float32"]["bytes_up"] / 3.9 * (
        comp["int8"]["rounds_run"] / comp["float32"]["rounds_run"]
    )
    robust = doc["summary"]["robustness"]["by_aggregator"]
    assert robust["mean"]["attacked"] < robust["median"]["attacked"]


def test_bench_fedavg_needs_full_mnist(monkeypatch, capsys):
    monkeypatch.delenv("TINYODL_MNIST_DIR", raising=False)
    assert main(["bench", "fedavg", "--no-progress"]) == 1
    assert "TINYODL_MNIST_DIR" in capsys.readouterr().err


def test_merge_recomputes_the_summaries(tmp_path):
    from tinyodl.bench._common import write_results

    def row(part, **kw):
        base = {"part": part, "seconds": 1.0, "target": 0.97, "lr": 0.1, "final_accuracy": 0.9}
        return {**base, **kw}

    a = [
        row("mcmahan", algorithm="fedavg", partition="iid", lr=0.1, rounds_to_target=40,
            best_accuracy=0.97, paper_rounds=87),
        row("mcmahan", algorithm="fedavg", partition="iid", lr=0.2, rounds_to_target=30,
            best_accuracy=0.97, paper_rounds=87),
    ]  # fmt: skip
    b = [
        row("compression", compressor="float32", bytes_up_to_target=800, rounds_to_target=2),
        row("compression", compressor="int8", bytes_up_to_target=200, rounds_to_target=2),
        row("robustness", aggregator="mean", attack="none", rounds_run=5),
        row("cnn", target=0.99, lr=0.05, rounds_to_target=7),
    ]
    write_results(tmp_path / "a.json", a, {"partial": True}, machine={}, command="A")
    write_results(tmp_path / "b.json", b, {}, machine={}, command="B")
    out = tmp_path / "all.json"
    assert fedavg.merge([str(tmp_path / "a.json"), str(tmp_path / "b.json")], str(out)) == 0
    doc = json.loads(out.read_text())
    assert len(doc["rows"]) == 6
    s = doc["summary"]
    assert s["mcmahan"]["fedavg/iid"]["lr"] == 0.2 and s["mcmahan"]["fedavg/iid"]["lrs_tried"] == [
        0.1,
        0.2,
    ]
    assert s["compression"]["by_compressor"]["int8"]["saving"] == 4.0
    assert s["robustness"]["by_aggregator"] == {"mean": {"clean": 0.9}}
    assert s["cnn"] == {"rounds_to_target": 7, "lr": 0.05}
    assert [m["command"] for m in s["merged_from"]] == ["A", "B"]
