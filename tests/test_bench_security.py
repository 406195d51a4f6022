"""``tinyodl bench security --quick``: every part runs and writes the documented schema."""

from __future__ import annotations

import argparse
import json

import pytest

from tinyodl.bench import security


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    path = tmp_path_factory.mktemp("security") / "security.json"
    args = argparse.Namespace(
        quick=True,
        data=None,
        seed=0,
        only=",".join(security.PARTS),
        no_progress=True,
        json_path=str(path),
        pgd_training=False,
    )
    security.run(args)
    return json.loads(path.read_text())


@pytest.mark.slow
def test_rows_have_the_schema(quick):
    assert {"machine", "command", "rows", "summary"} <= set(quick)
    for row in quick["rows"]:
        assert set(row) == {"experiment", "setting", "metric", "value", "seconds"}
    experiments = {r["experiment"] for r in quick["rows"]}
    assert {
        "natural",
        "adversarial_training",
        "label_flipping",
        "transfer",
        "membership",
    } <= experiments


@pytest.mark.slow
def test_summary_has_the_headline_figures(quick):
    s = quick["summary"]
    assert set(s["natural"]) >= {"clean_accuracy", "fgsm_accuracy", "pgd20_accuracy"}
    assert set(s["adversarial_training"]) == {
        "clean_accuracy",
        "pgd20_accuracy",
        "eps",
        "train_seconds",
    }
    for key in ("clean_accuracy", "fgsm_accuracy", "pgd20_accuracy"):
        assert 0.0 <= s["natural"][key] <= 1.0
    assert s["adversarial_training"]["eps"] == 0.3
    # FGSM cannot beat the clean accuracy, PGD-20 is at least as strong as FGSM (a few %)
    assert s["natural"]["fgsm_accuracy"] <= s["natural"]["clean_accuracy"]
    assert s["natural"]["pgd20_accuracy"] <= s["natural"]["fgsm_accuracy"] + 0.05
    # the int8 model's differentiable twin (chapter 03: fake-quantized activations,
    # straight-through gradients) is a close twin of the float cloud model: about 0.8 here,
    # where an independently trained robust_cnn gets about 0.4
    assert s["transfer"]["device"] == "int8"
    assert s["transfer"]["before"]["gradient_cosine"] > 0.6
    assert s["inversion"]["analytic_batch1_max_abs_error"] < 1e-4
    # DLG ran at every configured batch size (distinct labels in each batch)
    assert sorted(int(b) for b in s["inversion"]["dlg"]) == sorted(
        security.CONFIGS["quick"]["dlg_batches"]
    )


def test_unknown_part_is_refused():
    args = argparse.Namespace(
        quick=True,
        data=None,
        seed=0,
        only="natural,teleport",
        no_progress=True,
        json_path=None,
        pgd_training=False,
    )
    with pytest.raises(SystemExit, match="teleport"):
        security.run(args)


def test_full_run_needs_the_data(monkeypatch):
    monkeypatch.delenv("TINYODL_MNIST_DIR", raising=False)
    args = argparse.Namespace(
        quick=False,
        data=None,
        seed=0,
        only="natural",
        no_progress=True,
        json_path=None,
        pgd_training=False,
    )
    with pytest.raises(SystemExit, match="--data"):
        security.run(args)


def test_merge_combines_parts(tmp_path):
    from tinyodl.bench._common import write_results

    a = write_results(
        tmp_path / "a.json",
        [{"experiment": "natural"}],
        {"natural": {"x": 1}, "part_seconds": {"natural": 1.0}},
        machine={"cpu": "a"},
        command="cmd a",
    )
    b = write_results(
        tmp_path / "b.json",
        [{"experiment": "federated"}],
        {"federated": {"y": 2}, "part_seconds": {"federated": 2.0}},
        machine={"cpu": "b"},
        command="cmd b",
    )
    out = security.merge(
        [str(tmp_path / "a.json"), str(tmp_path / "b.json")], str(tmp_path / "c.json")
    )
    assert out["rows"] == a["rows"] + b["rows"]
    assert out["summary"]["natural"] == {"x": 1} and out["summary"]["federated"] == {"y": 2}
    assert out["summary"]["part_seconds"] == {"natural": 1.0, "federated": 2.0}
    assert out["command"] == "cmd a && cmd b" and [m["cpu"] for m in out["machines"]] == ["a", "b"]


def test_merge_a_later_rerun_of_a_part_replaces_its_rows(tmp_path):
    from tinyodl.bench._common import write_results

    def doc(name, parts, rows, value):
        write_results(
            tmp_path / name,
            rows,
            {p: {"v": value} for p in parts} | {"part_seconds": dict.fromkeys(parts, 1.0)},
            machine={"cpu": name},
            command=name,
        )
        return str(tmp_path / name)

    first = doc(
        "a.json",
        ["inversion", "extraction"],
        [{"experiment": "gradient_inversion", "v": 1}, {"experiment": "model_extraction"}],
        1,
    )
    again = doc("b.json", ["inversion"], [{"experiment": "gradient_inversion", "v": 2}], 2)
    out = security.merge([first, again], None)
    assert out["rows"] == [
        {"experiment": "model_extraction"},
        {"experiment": "gradient_inversion", "v": 2},
    ]
    assert out["summary"]["inversion"] == {"v": 2} and out["summary"]["extraction"] == {"v": 1}
    assert set(security.PART_EXPERIMENTS) == set(security.PARTS)
