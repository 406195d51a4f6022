"""Chapter 10 benchmarks: ``tinyodl bench dpsgd`` and ``tinyodl bench dpmemory`` smoke runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
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
    # the accountant, DP-PCA and the DP mean the features are centred on included,
    # reproduces the row's epsilon
    assert dp["centered"] is True and ftrl["centered"] is True
    prior = privacy.RDPAccountant().compose_gaussian(dp["pca_noise_multiplier"], count=2)
    q = dpsgd.LOT_SIZE / doc["summary"]["train_examples"]
    spent = privacy.epsilon(q=q, noise_multiplier=dp["noise_multiplier"], steps=dp["steps"],
                            delta=1e-5, prior=prior)  # fmt: skip
    assert spent == pytest.approx(dp["epsilon_spent"], rel=1e-9)
    assert ftrl["noise_multiplier"] > dp["noise_multiplier"]  # no amplification by sampling
    assert plot.stat().st_size > 0


def test_features_are_centred_on_a_dp_mean_and_the_release_is_accounted():
    centred = dpsgd.load_features(None, True, 8.0, 0)
    plain = dpsgd.load_features(None, True, 8.0, 0, center=False)
    # the DP mean differs from the exact one by noise of std 8 * 28 / N per coordinate
    n = len(plain[0])
    shift = plain[0].astype(np.float64).mean(axis=0) - centred[0].astype(np.float64).mean(axis=0)
    assert np.abs(plain[0].mean(axis=0)).max() > 1.0  # uncentred PCA: the mean image's axis
    assert np.abs(centred[0].mean(axis=0)).max() < 5 * 8.0 * 28.0 / n
    np.testing.assert_allclose(plain[2] - centred[2], np.broadcast_to(shift, plain[2].shape),
                               atol=1e-4)  # fmt: skip
    assert centred[4].epsilon(1e-5) > plain[4].epsilon(1e-5)


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


def test_schedule_is_the_papers_times_the_scale_then_decays_to_zero():
    steps_per_epoch, total = 100, 4000
    paper = dpsgd._schedule(steps_per_epoch)
    lr = dpsgd._schedule(steps_per_epoch, 3.0, total)
    assert paper(0) == pytest.approx(0.1) and paper(10 * steps_per_epoch) == pytest.approx(0.052)
    assert paper(10**6) == pytest.approx(0.052)  # constant after the ramp
    start_decay = total - round(dpsgd.DECAY_FRACTION * total)
    for step in (0, 500, 1000, start_decay):
        assert lr(step) == pytest.approx(3.0 * paper(step))
    rates = [lr(s) for s in range(start_decay, total + 1)]
    assert all(b <= a for a, b in zip(rates, rates[1:], strict=False))
    assert rates[-1] == 0.0 and lr(total - 1) > 0.0
    halfway = start_decay + (total - start_decay) // 2
    assert lr(halfway) == pytest.approx(0.5 * 3.0 * 0.052)


def test_merge_replaces_redone_rows_and_keeps_the_others(tmp_path):
    old = [
        dpsgd._row("dp-sgd", 8.0, 7.99, 1.03, 8.0, 150, 15000, 0.9646, 1628.0),
        dpsgd._row("dp-ftrl", 8.0, 7.99, 9.27, 8.0, 30, 3000, 0.9352, 182.0),
    ]
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"command": "tinyodl bench dpsgd --old", "rows": old}))
    kept = dpsgd._rows_to_keep(str(path))
    assert [r["command"] for r in kept] == ["tinyodl bench dpsgd --old"] * 2
    new = [dpsgd._row("dp-sgd", 8.0, 7.99, 1.22, 8.0, 250, 25000, 0.97, 900.0)]
    merged = dpsgd.merge_rows(kept, new)
    assert [(r["method"], r["accuracy"]) for r in merged] == [("dp-ftrl", 0.9352), ("dp-sgd", 0.97)]
    assert dpsgd._rows_to_keep(str(tmp_path / "absent.json")) == []
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SystemExit, match="cannot merge into"):
        dpsgd._rows_to_keep(str(bad))


def test_feature_scale_multiplies_the_inputs_dp_sgd_trains_on():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1200, dpsgd.COMPONENTS)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0).astype(np.int64)
    prior = privacy.RDPAccountant()

    def run(scale: float, factor: float) -> dict:
        data = (factor * x[:900], y[:900], factor * x[900:], y[900:], prior)
        return dpsgd.run_dpsgd(data, 8.0, 2, 0.0, seed=0, progress=False, feature_scale=scale)

    scaled, prescaled, plain = run(2.5, 1.0), run(1.0, 2.5), run(1.0, 1.0)
    assert scaled["feature_scale"] == 2.5 and plain["feature_scale"] == 1.0
    assert plain["weight_decay"] == dpsgd.weight_decay_for(8.0) == 0.0  # none at epsilon 8
    assert dpsgd.weight_decay_for(2.0) == dpsgd.WEIGHT_DECAY > 0.0
    decayed = dpsgd.run_dpsgd((x[:900], y[:900], x[900:], y[900:], prior), 2.0, 2, 0.0,
                              seed=0, progress=False)  # fmt: skip
    assert decayed["weight_decay"] == dpsgd.WEIGHT_DECAY
    assert decayed["lr_scale"] == plain["lr_scale"] == dpsgd.LR_SCALE
    assert dpsgd.lr_scale_for(0.5) == dpsgd.SMALL_EPSILON_LR_SCALE != dpsgd.LR_SCALE
    assert scaled["accuracy"] == prescaled["accuracy"]  # the scale is applied to the inputs
    assert scaled["noise_multiplier"] == plain["noise_multiplier"]  # and costs no privacy
    with pytest.raises(ValueError, match="feature_scale must be > 0"):
        run(0.0, 1.0)


def _shifted(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """The 28 x 28 image moved by (dy, dx) pixels with zero fill (test-only loop)."""
    out = np.zeros((28, 28), image.dtype)
    for r in range(28):
        for c in range(28):
            if 0 <= r - dy < 28 and 0 <= c - dx < 28:
                out[r, c] = image.reshape(28, 28)[r - dy, c - dx]
    return out.ravel()


@pytest.mark.parametrize("max_shift", [1, 2])
def test_shift_augmentation_projects_shifted_images(max_shift):
    rng = np.random.default_rng(0)
    images = rng.random((3, 784)).astype(np.float32)
    projection = np.linalg.qr(rng.standard_normal((784, 6)))[0]
    mean = rng.standard_normal(6)
    augment = dpsgd.shift_augmentation(projection, mean, max_shift)
    k, width = 5, 2 * max_shift + 1
    got = augment(images, k, np.random.default_rng(7))
    assert got.shape == (15, 6) and got.dtype == np.float32 and augment.max_shift == max_shift
    chosen = np.random.default_rng(7).integers(0, width**2, 15)  # the same draws
    for row, offset in enumerate(chosen):
        dy, dx = divmod(int(offset), width)
        expected = _shifted(images[row // k], dy - max_shift, dx - max_shift) @ projection - mean
        np.testing.assert_allclose(got[row], expected, rtol=1e-5, atol=1e-5)
    assert len({tuple(np.round(r, 4)) for r in got}) > 5  # the copies differ
    with pytest.raises(ValueError, match=r"\(784, c\) projection .* got shape \(783, 6\)"):
        dpsgd.shift_augmentation(projection[:783], mean, max_shift)
    with pytest.raises(ValueError, match="max_shift -1"):
        dpsgd.shift_augmentation(projection, mean, -1)


def test_augmented_run_trains_on_images_with_the_same_privacy():
    pipe = dpsgd.load_pipeline(None, True, 8.0, 0)
    x, y, xte, yte, prior, _ = dpsgd.load_features(None, True, 8.0, 0)
    np.testing.assert_array_equal(pipe.train_features(), x)
    images = (pipe.images, y, xte, yte, prior)
    augment = dpsgd.shift_augmentation(pipe.projection, pipe.mean)
    aug = dpsgd.run_dpsgd(images, 8.0, 1, 8.0, seed=0, progress=False, augment=augment,
                          multiplicity=2)  # fmt: skip
    plain = dpsgd.run_dpsgd((x, y, xte, yte, prior), 8.0, 1, 8.0, seed=0, progress=False)
    assert aug["augment_multiplicity"] == 2 and aug["max_shift"] == dpsgd.MAX_SHIFT
    assert plain["augment_multiplicity"] == 0 and plain["max_shift"] is None
    assert aug["noise_multiplier"] == plain["noise_multiplier"]
    assert aug["epsilon_spent"] == plain["epsilon_spent"] <= 8.0
    assert aug["accuracy"] != plain["accuracy"] and aug["accuracy"] > 0.5
