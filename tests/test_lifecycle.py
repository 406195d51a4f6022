"""tinyodl.lifecycle: drift detectors against river, two-sample tests, the trigger policy.

What is compared with river (0.26, test-only oracle), on the same streams:

* ``PageHinkley``: every alarm index equal. Mode ``"up"`` is compared with river's mode
  ``"up"``; mode ``"down"`` on ``x`` with river's ``"up"`` on ``-x`` (river starts its
  running maximum of the "down" sum at -1 instead of at the first value, which changes
  its ``"down"`` and ``"both"`` modes only through that initial value).
* ``DDM``: every alarm index equal to river's ``binary.DDM``.
* ``ADWIN``: ours keeps the whole window and tests *every* split; river's ADWIN2 tests the
  splits between its exponential-histogram buckets, a subset, with the same bound
  (variance-aware, same ``delta'``), at the same checks (every ``clock`` samples after the
  grace period). Before the first alarm both windows are the whole stream, and a bucket
  boundary's statistics (n0, n1, means, window variance) are those of the same split of the
  exact window. So whenever river fires, ours fires at that check or earlier: **our first
  alarm <= river's first alarm**, and ours never misses a change river finds. That is what
  is asserted (and that every alarm falls on a check step).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ks_2samp

from tinyodl.lifecycle import (
    ADWIN,
    CUSUM,
    DDM,
    LabelBuffer,
    PageHinkley,
    TriggerPolicy,
    WindowDetector,
    adaptation_steps,
    bonferroni,
    bytes_per_example,
    choose_method,
    holm,
    ks_test,
    mmd2_unbiased,
    mmd_test,
)

# ----------------------------------------------------------------------------- helpers


def _river_alarms(det, xs) -> list[int]:
    out = []
    for i, x in enumerate(xs):
        det.update(float(x))
        if det.drift_detected:
            out.append(i)
    return out


def _first(alarms) -> int | None:
    return int(alarms[0]) if len(alarms) else None


def _shift_stream(seed: int, n_after: int = 800) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n0 = int(rng.integers(200, 1200))
    return np.concatenate([rng.normal(0, 1, n0), rng.normal(rng.uniform(-2, 2), 1, n_after)])


def _bernoulli_stream(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n0 = int(rng.integers(200, 1500))
    p0, p1 = rng.uniform(0, 0.5, 2)
    return np.concatenate([rng.random(n0) < p0, rng.random(1500) < p1]).astype(float)


# ----------------------------------------------------------------------------- river oracle


@pytest.mark.parametrize("seed", range(8))
def test_page_hinkley_matches_river(seed):
    drift = pytest.importorskip("river.drift")
    xs = _shift_stream(seed)
    for kwargs in ({}, {"threshold": 10.0, "delta": 0.05, "min_instances": 10}):
        ours = PageHinkley(mode="up", **kwargs).run(xs).tolist()
        assert ours == _river_alarms(drift.PageHinkley(mode="up", **kwargs), xs)
        ours = PageHinkley(mode="down", **kwargs).run(xs).tolist()
        assert ours == _river_alarms(drift.PageHinkley(mode="up", **kwargs), -xs)


def test_page_hinkley_river_finds_the_doc_example():
    drift = pytest.importorskip("river.drift")
    rng = np.random.default_rng(7)
    xs = np.concatenate([rng.integers(0, 2, 1000), rng.integers(4, 8, 1000)]).astype(float)
    ours = PageHinkley(mode="up").run(xs)
    assert ours.tolist() == _river_alarms(drift.PageHinkley(mode="up"), xs)
    assert 1000 <= ours[0] < 1050


@pytest.mark.parametrize("seed", range(8))
def test_ddm_matches_river(seed):
    binary = pytest.importorskip("river.drift.binary")
    xs = _bernoulli_stream(seed)
    assert DDM().run(xs).tolist() == _river_alarms(binary.DDM(), xs)
    ours = DDM(min_instances=50, warning_level=2.5, drift_level=4.0).run(xs).tolist()
    river = binary.DDM(warm_start=50, warning_threshold=2.5, drift_threshold=4.0)
    assert ours == _river_alarms(river, xs)


def test_adwin_first_alarm_no_later_than_river():
    drift = pytest.importorskip("river.drift")
    equal = 0
    for seed in range(12):
        xs = _bernoulli_stream(seed) if seed % 2 else _shift_stream(seed)
        for kwargs in ({}, {"delta": 0.05, "clock": 8}):
            ours = ADWIN(**kwargs).run(xs)
            river = _river_alarms(drift.ADWIN(**kwargs), xs)
            clock = kwargs.get("clock", 32)
            assert all((a + 1) % clock == 0 for a in ours)  # alarms only at checks
            if river:
                assert len(ours) and ours[0] <= river[0], (seed, kwargs, ours[:3], river[:3])
                equal += int(ours[0] == river[0])
    assert equal > 0  # the comparison is not vacuous: most first alarms coincide


def test_adwin_no_alarm_without_change_where_river_has_none():
    drift = pytest.importorskip("river.drift")
    rng = np.random.default_rng(3)
    xs = (rng.random(4000) < 0.2).astype(float)
    assert _river_alarms(drift.ADWIN(), xs) == []
    assert ADWIN().run(xs).tolist() == []


# ----------------------------------------------------------------------------- properties


finite = st.floats(-1e3, 1e3, allow_nan=False)


@settings(max_examples=40, deadline=None)
@given(value=finite, n=st.integers(1, 400), threshold=st.floats(1e-3, 100))
def test_no_alarm_on_a_constant_stream(value, n, threshold):
    xs = np.full(n, value)
    for mode in ("up", "down", "both"):
        assert PageHinkley(threshold=threshold, min_instances=1, mode=mode).run(xs).size == 0
    assert ADWIN(clock=1, grace_period=0).run(xs).size == 0
    assert CUSUM(target=value, threshold=threshold).run(xs).size == 0
    bit = float(value > 0)
    assert DDM(min_instances=1).run(np.full(n, bit)).size == 0


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), t1=st.floats(0.5, 20), t2=st.floats(0.5, 20))
def test_first_alarm_monotone_in_threshold(seed, t1, t2):
    """A larger threshold (a smaller ADWIN delta) never alarms earlier."""
    lo, hi = sorted((t1, t2))
    xs = _shift_stream(seed % 1000, n_after=300)
    a, b = PageHinkley(threshold=lo).run(xs), PageHinkley(threshold=hi).run(xs)
    assert _first(b) is None or (_first(a) is not None and _first(a) <= _first(b))
    c, d = CUSUM(0.0, 0.5, lo).run(xs), CUSUM(0.0, 0.5, hi).run(xs)
    assert _first(d) is None or (_first(c) is not None and _first(c) <= _first(d))
    bits = _bernoulli_stream(seed % 1000)
    e, f = DDM(30, 1.0, lo + 1).run(bits), DDM(30, 1.0, hi + 1).run(bits)
    assert _first(f) is None or (_first(e) is not None and _first(e) <= _first(f))
    # delta = 1 / (1 + threshold): the larger threshold gets the smaller delta (a stricter cut)
    g, h = ADWIN(delta=1 / (1 + lo)).run(bits), ADWIN(delta=1 / (1 + hi)).run(bits)
    assert _first(h) is None or (_first(g) is not None and _first(g) <= _first(h))


@settings(max_examples=40, deadline=None)
@given(
    p=st.lists(st.floats(0, 1), min_size=1, max_size=30),
    a1=st.floats(1e-4, 0.5),
    a2=st.floats(1e-4, 0.5),
)
def test_holm_properties(p, a1, a2):
    lo, hi = sorted((a1, a2))
    assert np.all(holm(p, lo) <= holm(p, hi))  # monotone in alpha
    assert np.all(bonferroni(p, lo) <= holm(p, lo))  # Holm rejects whatever Bonferroni does
    # brute-force definition of the step-down procedure
    order, m = np.argsort(p, kind="stable"), len(p)
    expected = np.zeros(m, dtype=bool)
    for k, i in enumerate(order):
        if p[i] > lo / (m - k):
            break
        expected[i] = True
    assert np.array_equal(holm(p, lo), expected)


# ----------------------------------------------------------------------------- two-sample


def test_mmd2_unbiased_matches_a_double_loop():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(7, 3)), rng.normal(0.5, 1, size=(5, 3))
    sigma = 1.3

    def k(a, b):
        return np.exp(-np.sum((a - b) ** 2) / (2 * sigma**2))

    xx = sum(k(X[i], X[j]) for i in range(7) for j in range(7) if i != j) / 42
    yy = sum(k(Y[i], Y[j]) for i in range(5) for j in range(5) if i != j) / 20
    xy = sum(k(x, y) for x in X for y in Y) / 35
    assert mmd2_unbiased(X, Y, sigma) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)


def test_mmd_test_detects_a_shift_and_not_its_absence():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(100, 5))
    same = mmd_test(X, rng.normal(size=(60, 5)), alpha=0.01, seed=2)
    shifted = mmd_test(X, rng.normal(0.7, 1, size=(60, 5)), alpha=0.01, seed=2)
    assert not same.drift and same.p_value > 0.01
    assert shifted.drift and shifted.p_value == pytest.approx(1 / 201)
    again = mmd_test(X, rng.normal(0.7, 1, size=(60, 5)), alpha=0.01, seed=2)
    assert mmd_test(X, X[:50] + 0.7, seed=5).p_value == mmd_test(X, X[:50] + 0.7, seed=5).p_value
    assert again.statistic > same.statistic


def test_ks_test_matches_scipy_per_feature():
    rng = np.random.default_rng(4)
    X, Y = rng.normal(size=(80, 6)), rng.normal(size=(50, 6))
    Y[:, 2] += 1.5
    res = ks_test(X, Y, alpha=0.01)
    for j in range(6):
        ref = ks_2samp(X[:, j], Y[:, j])
        assert res.details["statistics"][j] == pytest.approx(ref.statistic)
        assert res.details["p_values"][j] == pytest.approx(ref.pvalue)
    assert res.drift and res.details["rejected"].tolist() == [j == 2 for j in range(6)]
    assert not ks_test(X, X.copy()).drift


def test_window_detector_alarms_after_the_change():
    rng = np.random.default_rng(5)
    ref = rng.normal(size=(200, 4))
    stream = np.concatenate([rng.normal(size=(300, 4)), rng.normal(1.0, 1, size=(100, 4))])
    for test in ("mmd", "ks"):
        det = WindowDetector(ref, test, window=50, alpha=0.01, seed=0)
        alarms = [i for i, x in enumerate(stream) if det.update(x)]
        assert alarms == [349] and det.n_windows == 8  # one alarm: then the reference moves
        det = WindowDetector(ref, test, window=50, alpha=0.01, seed=0, rebase_on_alarm=False)
        assert [i for i, x in enumerate(stream) if det.update(x)] == [349, 399]


# ----------------------------------------------------------------------------- policy


def test_label_buffer_budget_and_bits():
    assert bytes_per_example(784, 8) == 785 and bytes_per_example(784, 4) == 393
    buf = LabelBuffer(64 * 1024, bits=4)
    assert buf.capacity == 64 * 1024 // 393
    rng = np.random.default_rng(0)
    imgs = rng.random((buf.capacity + 5, 1, 28, 28)).astype(np.float32)
    for i, img in enumerate(imgs):
        buf.add(img, i % 10)
    x, y = buf.data()
    assert len(buf) == buf.capacity and buf.nbytes <= 64 * 1024
    assert x.shape == (buf.capacity, 1, 28, 28) and y[0] == 5 % 10  # the oldest 5 dropped
    assert np.max(np.abs(x - imgs[5:])) <= 1 / 30 + 1e-6  # 4-bit levels: error <= 1/(2*15)
    with pytest.raises(ValueError, match="holds no example"):
        LabelBuffer(100)


def test_trigger_policy_semantics():
    alarms = np.zeros(40, dtype=bool)
    labels = np.ones(40, dtype=np.int64)
    alarms[[5, 8, 30]] = True
    # alarm at 5, re-armed at 8 (buffer emptied): labels at 8..11 -> adapt at 11; then 30..33
    assert adaptation_steps(alarms, labels, 4, 10).tolist() == [11, 33]
    labels[:] = 0
    labels[20] = 6  # a burst larger than needed, capped by the capacity
    assert adaptation_steps(alarms, labels, 4, 5).tolist() == [20]
    assert adaptation_steps(np.zeros(10, bool), np.ones(10, int), 1, 1).size == 0
    with pytest.raises(ValueError, match="min_examples <= capacity"):
        TriggerPolicy(10, 5)


def test_choose_method_under_a_budget():
    costs = {
        "big": {"peak_bytes": 2_000_000, "accuracy": 0.9},
        "small": {"peak_bytes": 100_000, "accuracy": 0.8},
        "tiny": {"peak_bytes": 50_000, "accuracy": 0.8},
    }
    assert choose_method(costs, 3_000_000) == "big"
    assert choose_method(costs, 200_000) == "tiny"  # tie on accuracy: the smaller peak
    assert choose_method(costs, 10_000) is None


# ----------------------------------------------------------------------------- errors


def test_bad_input_gets_a_clear_error():
    with pytest.raises(ValueError, match="PageHinkley: threshold"):
        PageHinkley(threshold=0)
    with pytest.raises(ValueError, match="PageHinkley: mode"):
        PageHinkley(mode="sideways")
    with pytest.raises(ValueError, match="finite"):
        PageHinkley().update(float("nan"))
    with pytest.raises(TypeError, match="real number"):
        ADWIN().update("x")
    with pytest.raises(ValueError, match="0/1 error"):
        DDM().update(0.5)
    with pytest.raises(ValueError, match="ADWIN: delta"):
        ADWIN(delta=2)
    with pytest.raises(ValueError, match="same D"):
        mmd_test(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="nan or inf"):
        ks_test(np.full((5, 2), np.nan), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="expected a vector of 3"):
        WindowDetector(np.zeros((10, 3))).update(np.zeros(2))


# ----------------------------------------------------------------------------- benchmark


@pytest.mark.slow
def test_bench_lifecycle_quick(tmp_path):
    import json
    import os
    import subprocess
    import sys

    path, plot = tmp_path / "lifecycle.json", tmp_path / "lifecycle.png"
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, "-m", "tinyodl", "bench", "lifecycle", "--quick", "--json", str(path),
         "--plot", str(plot)],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads(path.read_text())
    assert set(doc) >= {"machine", "command", "rows", "summary", "runs"}
    assert doc["command"].startswith("tinyodl bench lifecycle")
    assert doc["summary"]["quick"] is True and plot.stat().st_size > 10_000
    rows = {r["policy"]: r for r in doc["rows"]}
    assert set(rows) == {"never", "schedule", "page_hinkley", "ddm"}
    never = rows["never"]
    assert never["n_adaptations"] == 0 and never["detection_delay"] is None
    assert never["false_alarms_per_10k"] == 0
    assert rows["schedule"]["n_adaptations"] >= 1
    # the writer shift costs the pretrained model accuracy: that is what is to be detected
    assert never["stream_accuracy_after_switch"] < never["stream_accuracy_before_switch"] - 0.1
    assert rows["page_hinkley"]["detected"] == 1  # the confidence drop is found
    run = doc["runs"][0]
    switch = run["info"]["switch"]
    for row in run["rows"]:
        assert all(a > alarm for a, alarm in zip(row["adaptations"], row["alarms"], strict=False))
        assert row["false_alarms"] == sum(a < switch for a in row["alarms"])
    assert doc["summary"]["method"] in ("fp32_full", "fp32_last_layer", "tinytl_bias",
                                        "tinytl_lite_residual")  # fmt: skip


# ----------------------------------------------------------------------------- energy


@pytest.fixture(scope="module")
def oracle_run():
    """The quick scenario, oracle and never policies only (one adaptation, seconds)."""
    from dataclasses import replace

    from tinyodl.bench.lifecycle import config
    from tinyodl.lifecycle.scenario import run_scenario

    cfg = replace(config(True, 0), policies=("never", "oracle"))
    return cfg, run_scenario(cfg, progress=False)


@pytest.mark.slow
def test_scenario_energy_from_the_constants(oracle_run):
    from tinyodl import energy, transfer
    from tinyodl.demo import _PREPARE
    from tinyodl.pruning.cost import count_macs
    from tinyodl.tasks import pretrained

    cfg, doc = oracle_run
    rows = {r["policy"]: r for r in doc["rows"]}
    never, oracle = rows["never"], rows["oracle"]
    assert never["energy_joules"] == 0 and never["energy_per_adaptation_joules"] is None
    assert never["cloud_radio_joules"] == 0 and never["adaptation_steps_run"] == 0
    assert oracle["n_adaptations"] == 1 and oracle["radio_joules"] == 0  # nothing uploaded
    (a,) = oracle["adaptation_costs"]
    # the steps the optimizer ran: batch 1, every buffered example, every epoch
    assert a["examples"] == cfg.min_examples and a["steps"] == cfg.epochs * cfg.min_examples
    # the MACs of a step, counted independently (chapter 02's counter + the trained layer)
    method = doc["info"]["method"]
    work = transfer.prepare(pretrained("B"), _PREPARE[method], seed=0)
    trained = [
        layer
        for _, layer in work.named_layers()
        if not list(layer.children())
        and any(p.trainable for p in getattr(layer, "params", {}).values())
    ]
    if method == "fp32_last_layer":
        (head,) = trained
        w_in, w_out = head.params["weight"].data.shape[::-1]
        assert a["step_macs_fp32"] == count_macs(work, (1, 28, 28)) + w_in * w_out
        frozen = work.num_params() - work.num_params(trainable_only=True)
        assert a["step_flash_bytes"] == 4 * frozen  # each frozen weight read once
    assert a["step_macs_int8"] == 0 and a["step_sram_bytes"] > 0
    c = energy.DEFAULT
    step = (
        a["step_macs_fp32"] * c.fp32_mac
        + a["step_sram_bytes"] * c.sram_per_byte
        + a["step_flash_bytes"] * c.flash_per_byte
    )
    assert a["step_joules"] == pytest.approx(step, rel=1e-12)
    assert oracle["energy_joules"] == pytest.approx(a["steps"] * step, rel=1e-6)
    assert oracle["energy_per_adaptation_joules"] == oracle["energy_joules"]
    # the cloud alternative: the raw buffered images up, the float model down, over BLE
    up = cfg.min_examples * (28 * 28 + 1)
    down = 4 * work.num_params()
    assert (a["cloud_bytes_up"], a["cloud_bytes_down"]) == (up, down)
    assert oracle["cloud_radio_joules"] == pytest.approx(
        up * c.ble_tx_per_byte + down * c.ble_rx_per_byte, rel=1e-12
    )
    assert oracle["cloud_radio_up_joules"] == pytest.approx(up * c.ble_tx_per_byte, rel=1e-12)
    assert doc["info"]["energy_joules"] == {"never": 0.0, "oracle": oracle["energy_joules"]}


@pytest.mark.slow
def test_scenario_energy_scales_with_the_constants(oracle_run):
    """Doubling a constant doubles exactly its term (the energy is linear in them)."""
    from dataclasses import replace

    from tinyodl import energy
    from tinyodl.lifecycle.scenario import run_scenario

    cfg, doc = oracle_run
    d = energy.DEFAULT
    c = energy.with_constants(
        fp32_mult=2 * d.fp32_mult, fp32_add=2 * d.fp32_add, ble_tx_per_byte=0.0
    )
    other = run_scenario(replace(cfg, policies=("oracle",)), progress=False, constants=c)
    (a,) = doc["rows"][1]["adaptation_costs"]
    (b,) = other["rows"][0]["adaptation_costs"]
    extra = a["steps"] * a["step_macs_fp32"] * energy.DEFAULT.fp32_mac
    assert other["rows"][0]["energy_joules"] == pytest.approx(
        doc["rows"][1]["energy_joules"] + extra, rel=1e-9
    )
    assert b["cloud_radio_joules"] == pytest.approx(
        a["cloud_bytes_down"] * energy.DEFAULT.ble_rx_per_byte, rel=1e-12
    )


@pytest.mark.slow
def test_the_chosen_int8_method_is_the_one_that_runs():
    """Under a budget only TinyTrain fits well: the loop deploys the int8 model and runs
    TinyTrain's selection and the compiled engine (not the best float method)."""
    from dataclasses import replace

    from tinyodl import energy
    from tinyodl.bench.lifecycle import config
    from tinyodl.lifecycle.scenario import LOOP_METHODS, deployed_model, run_scenario

    costs = {
        "fp32_full": {"peak_bytes": 4_000_000, "accuracy": 0.99},  # does not fit
        "fp32_last_layer": {"peak_bytes": 150_000, "accuracy": 0.80},
        "tinytrain": {"peak_bytes": 200_000, "accuracy": 0.90},
    }
    cfg = replace(config(True, 0), policies=("oracle",), methods=LOOP_METHODS, costs=costs,
                  memory_budget=256_000)  # fmt: skip
    assert choose_method(costs, cfg.memory_budget) == "tinytrain"
    doc = run_scenario(cfg, progress=False)
    assert doc["info"]["method"] == "tinytrain"
    (row,) = doc["rows"]
    (a,) = row["adaptation_costs"]
    assert a["method"] == "tinytrain" and a["steps"] == cfg.epochs * a["examples"]
    assert "channels" in a["scheme"]  # TinyTrain's selection ran on the buffer
    # an int8 forward; the backward and the update in float32, as the kernels compute them
    qmodel = deployed_model("tinytrain")
    fwd = sum(c.macs for c in energy.layer_costs(qmodel, (1, 28, 28)))
    assert a["step_macs_int8"] == fwd and a["step_macs_fp32"] > 0
    assert a["cloud_bytes_down"] == qmodel.nbytes()  # the int8 model comes back
    # the float loop under the same costs runs the float method instead
    float_doc = run_scenario(replace(cfg, methods=LOOP_METHODS[:4]), progress=False)
    assert float_doc["info"]["method"] == "fp32_last_layer"
    (b,) = float_doc["rows"][0]["adaptation_costs"]
    assert b["method"] == "fp32_last_layer" and b["scheme"] is None and b["step_macs_int8"] == 0
