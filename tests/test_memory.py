"""Tests of tinyodl.memory: measured (tracemalloc) and analytic training memory.

Tolerance. The analytic model replays every array of ``batch_size`` elements or more that
the layers, kernels, loss and optimizer allocate; what it leaves out is Python object
headers (about 100-500 bytes per array), tiny reductions (per-channel sums, scalars) and
allocator noise. On mlp_2nn, lenet5, cnn_mcmahan and mcunet_tiny (batch 4-32, both
backends, SGD/momentum/Adam) it lands within 3% of the measured total peak and of the
measured peak of the step itself. We assert ``REL_TOL = 10%``: loose enough for the unmodelled
small allocations of tiny models and tiny batches, tight enough that forgetting one
activation-sized buffer (for example the im2col columns or the dout/dx pair) fails.
Saved-activation, gradient and optimizer-state bytes are array sizes and must match exactly.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyodl import models, nn
from tinyodl.memory import (
    MemoryProbe,
    analytic_training_memory,
    compare,
    format_bytes,
    measure_peak,
    measure_training_step,
    plot_memory_breakdown,
)
from tinyodl.memory._tape import Tape

REL_TOL = 0.10
INPUT = (1, 28, 28)


def make_optimizer(model, name):
    if name == "sgd":
        return nn.SGD(model, lr=0.01)
    if name == "sgd_momentum":
        return nn.SGD(model, lr=0.01, momentum=0.9)
    return nn.Adam(model, lr=1e-3)


def steady_step(model, optimizer, batch_size, seed=0, input_shape=INPUT):
    """Warm up with one step (gradients, optimizer state, imports), then measure one."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch_size, *input_shape)).astype(np.float32)
    y = rng.integers(0, 10, batch_size)
    measure_training_step(model, optimizer, x, y)
    return measure_training_step(model, optimizer, x, y)


# ----------------------------------------------------------------------------- measurement


def test_measure_peak_sees_a_numpy_allocation():
    nbytes = 4_000_000
    m = measure_peak(np.ones, nbytes // 8, dtype=np.float64)
    assert nbytes <= m.peak_bytes <= 1.01 * nbytes
    assert nbytes <= m.retained_bytes <= 1.01 * nbytes  # the result is kept
    assert m.result.nbytes == nbytes


def test_measure_peak_of_a_temporary_and_of_preexisting_arrays():
    big = np.ones(1_000_000, dtype=np.float32)  # allocated before: not counted

    def work(a):
        tmp = a * 2.0  # 4 MB, freed before returning
        return float(tmp.sum())

    m = measure_peak(work, big)
    assert 4_000_000 <= m.peak_bytes <= 1.01 * 4_000_000
    assert abs(m.retained_bytes) < 10_000
    assert not tracemalloc.is_tracing()  # stopped again: it was not running before


@settings(max_examples=15, deadline=None)
@given(n=st.integers(min_value=100_000, max_value=2_000_000))
def test_measure_peak_scales_with_the_allocation(n):
    m = measure_peak(np.empty, n, dtype=np.uint8)
    assert n <= m.peak_bytes <= n + 2_000


def test_memory_probe_phases():
    with MemoryProbe() as probe:
        a = np.ones(500_000)  # 4 MB
        probe.checkpoint("allocate")
        b = a + 1  # +4 MB
        del a, b
        probe.checkpoint("free")
    alloc, free = probe.phase("allocate"), probe.phase("free")
    assert 4_000_000 <= alloc.net_bytes <= 4_010_000
    assert 4_000_000 <= free.transient_bytes <= 4_010_000  # b on top of a
    assert free.net_bytes < -3_990_000
    assert 8_000_000 <= probe.peak_bytes <= 8_020_000
    with pytest.raises(KeyError, match="no phase"):
        probe.phase("backward")


def test_memory_probe_leaves_running_tracing_on():
    tracemalloc.start()
    try:
        with MemoryProbe() as probe:
            _ = np.zeros(1000)
        assert tracemalloc.is_tracing()
        assert probe.peak_bytes >= 8000
    finally:
        tracemalloc.stop()


def test_measure_peak_rejects_non_callables():
    with pytest.raises(TypeError, match="measure_peak"):
        measure_peak(np.ones(3))


def test_format_bytes():
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(-3 * 2**20) == "-3.0 MiB"


# ----------------------------------------------------------------------------- analytic vs measured


@pytest.mark.parametrize("optimizer", ["sgd", "sgd_momentum", "adam"])
@pytest.mark.parametrize("batch_size", [8, 32])
@pytest.mark.parametrize("model_name", ["mlp_2nn", "lenet5"])
def test_analytic_matches_measured_peak(backend_name, model_name, batch_size, optimizer):
    model = getattr(models, model_name)(seed=0)
    opt = make_optimizer(model, optimizer)
    measured = steady_step(model, opt, batch_size)
    analytic = analytic_training_memory(model, INPUT, batch_size, optimizer=opt)
    assert analytic.backend == backend_name
    err = compare(analytic, measured)
    assert abs(err["total_peak"]) < REL_TOL, (analytic.total_peak_bytes, measured)
    assert abs(err["step_peak"]) < REL_TOL, (analytic.peak_bytes, measured.peak_bytes)


@pytest.mark.parametrize("batch_size", [2, 8])
def test_analytic_matches_measured_cnn_mcmahan(backend_name, batch_size):
    model = models.cnn_mcmahan(seed=0)
    opt = make_optimizer(model, "sgd")
    measured = steady_step(model, opt, batch_size)
    analytic = analytic_training_memory(model, INPUT, batch_size, optimizer="sgd")
    err = compare(analytic, measured)
    assert abs(err["step_peak"]) < REL_TOL
    assert abs(err["total_peak"]) < REL_TOL
    # the backward pass is where this CNN peaks, in the model and in the measurement
    assert analytic.peak_phase == "backward"
    assert max(measured.phases, key=lambda p: p.peak_bytes).name == "backward"


@pytest.mark.parametrize("optimizer", ["sgd_momentum", "adam"])
def test_first_step_allocates_gradients_and_state(backend_name, optimizer):
    model = models.lenet5(seed=0)
    opt = make_optimizer(model, optimizer)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, *INPUT)).astype(np.float32)
    y = rng.integers(0, 10, 8)
    steady_step(models.lenet5(seed=1), make_optimizer(models.lenet5(seed=1), optimizer), 8)
    measured = measure_training_step(model, opt, x, y)  # fresh model: first step
    assert not measured.steady_state
    assert measured.gradients_before == 0 and measured.optimizer_state_before == 0
    analytic = analytic_training_memory(model, INPUT, 8, optimizer=opt, steady_state=False)
    err = compare(analytic, measured)
    assert abs(err["total_peak"]) < REL_TOL
    assert err["gradients"] == 0 and err["optimizer_state"] == 0


def test_mcunet_tiny_residual_batchnorm_depthwise(backend_name):
    model = models.mcunet_tiny(seed=0)
    opt = make_optimizer(model, "sgd_momentum")
    measured = steady_step(model, opt, 4)
    analytic = analytic_training_memory(model, INPUT, 4, optimizer=opt)
    err = compare(analytic, measured)
    assert abs(err["total_peak"]) < REL_TOL
    assert abs(err["step_peak"]) < REL_TOL
    assert analytic.buffers == measured.buffers > 0


def _residual_model():
    body = nn.Sequential([nn.Conv2d(4, 4, 3, padding=1, seed=2), nn.ReLU()])
    depthwise = nn.Sequential([nn.Conv2d(4, 4, 3, padding=1, groups=4, seed=3), nn.ReLU()])
    return nn.Sequential(
        [
            nn.Conv2d(1, 4, 3, padding=1, seed=0),
            nn.BatchNorm2d(4),
            nn.ReLU6(),
            nn.AvgPool2d(2),
            nn.Add(body, nn.Conv2d(4, 4, 1, seed=4)),
            nn.Add(depthwise),
            nn.GlobalAvgPool(),
            nn.Dropout(0.3, seed=0),
            nn.Linear(4, 10, seed=1),
        ]
    )


def _wide_pointwise():
    """A 1x1 conv with C >= 64: kernels/conv.pyx packs its filters (implicit GEMM)."""
    return nn.Sequential(
        [
            nn.Conv2d(1, 64, 3, stride=7, padding=1, seed=0),
            nn.ReLU(),
            nn.Conv2d(64, 256, 1, seed=1),
            nn.ReLU(),
            nn.GlobalAvgPool(),
            nn.Linear(256, 10, seed=2),
        ]
    )


def _dropout_mlp():
    return nn.Sequential(
        [nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, 10)]
    )


@pytest.mark.parametrize(
    "build, make_opt, dtype, loss",
    [
        (
            _residual_model,
            lambda m: nn.SGD(m, lr=0.1, momentum=0.9, nesterov=True),
            "float32",
            "cross_entropy",
        ),
        (_dropout_mlp, lambda m: nn.SGD(m, lr=0.1, weight_decay=1e-4), "float32", "cross_entropy"),
        (
            _dropout_mlp,
            lambda m: nn.SGD(m, lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True),
            "float32",
            "cross_entropy",
        ),
        (_dropout_mlp, lambda m: nn.Adam(m, weight_decay=1e-3), "float32", "mse"),
        (_wide_pointwise, lambda m: nn.SGD(m, lr=0.1, momentum=0.9), "float32", "cross_entropy"),
        (
            lambda: models.lenet5(seed=0).astype("float64"),
            lambda m: nn.SGD(m, lr=0.1),
            "float64",
            "cross_entropy",
        ),
    ],
)
def test_other_layers_optimizers_dtypes_losses(backend_name, build, make_opt, dtype, loss):
    model = build()
    opt = make_opt(model)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, *INPUT)).astype(dtype)
    y = rng.standard_normal((8, 10)).astype(dtype) if loss == "mse" else rng.integers(0, 10, 8)
    measure_training_step(model, opt, x, y, loss=loss)
    measured = measure_training_step(model, opt, x, y, loss=loss)
    analytic = analytic_training_memory(model, INPUT, 8, optimizer=opt, dtype=dtype, loss=loss)
    err = compare(analytic, measured)
    assert abs(err["total_peak"]) < REL_TOL
    assert abs(err["step_peak"]) < REL_TOL
    assert err["saved"] == err["gradients"] == err["optimizer_state"] == 0


# ----------------------------------------------------------------------------- freezing (TinyTL)


@pytest.mark.parametrize("model_name", ["mlp_2nn", "lenet5"])
def test_bias_only_update_lowers_the_peak_as_predicted(backend_name, model_name):
    batch = 16
    full = getattr(models, model_name)(seed=0)
    frozen = getattr(models, model_name)(seed=0).freeze(kind="weight")  # TinyTL bias-only
    m_full = steady_step(full, make_optimizer(full, "sgd_momentum"), batch)
    m_frozen = steady_step(frozen, make_optimizer(frozen, "sgd_momentum"), batch)
    a_full = analytic_training_memory(full, INPUT, batch, optimizer="sgd_momentum")
    a_frozen = analytic_training_memory(frozen, INPUT, batch, optimizer="sgd_momentum")
    measured_drop = m_full.total_peak_bytes - m_frozen.total_peak_bytes
    analytic_drop = a_full.total_peak_bytes - a_frozen.total_peak_bytes
    assert measured_drop > 0
    assert abs(analytic_drop - measured_drop) < REL_TOL * measured_drop
    # the frozen model keeps no layer inputs: only ReLU masks and pooling indices
    assert a_frozen.saved_bytes < a_full.saved_bytes
    assert all(r["saved"] == "" for r in a_frozen.per_layer if r["type"] == "Linear")


# ----------------------------------------------------------------------------- exact array sizes


def _dropout_bn_model():
    return nn.Sequential(
        [
            nn.Conv2d(1, 4, 3, padding=1, seed=0),
            nn.BatchNorm2d(4),
            nn.ReLU6(),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Dropout(0.3, seed=0),
            nn.Linear(4 * 14 * 14, 10, seed=1),
        ]
    )


@pytest.mark.parametrize(
    "build, freeze",
    [
        (models.mlp_2nn, None),
        (models.lenet5, None),
        (models.lenet5, "weight"),
        (models.lenet5, "features"),
        (models.mcunet_tiny, None),
        (models.mcunet_tiny, "weight"),
        (_dropout_bn_model, None),
    ],
)
def test_saved_bytes_are_exact(backend_name, build, freeze):
    model = build() if build is _dropout_bn_model else build(seed=0)
    if freeze == "weight":
        model.freeze(kind="weight")
    elif freeze:
        model.freeze(freeze)
    opt = make_optimizer(model, "adam")
    measured = steady_step(model, opt, 4)
    analytic = analytic_training_memory(model, INPUT, 4, optimizer=opt)
    assert analytic.saved_per_layer == measured.saved_per_layer
    assert analytic.saved_bytes == measured.saved_bytes
    assert analytic.saved_new_bytes == measured.saved_new_bytes
    assert analytic.gradients == measured.gradients
    assert analytic.optimizer_state == measured.optimizer_state
    assert analytic.parameters == measured.parameters
    assert analytic.input == measured.input


def test_per_layer_rules_of_mlp():
    model = models.mlp_2nn(seed=0)
    model.freeze("features.1", kind="weight")
    a = analytic_training_memory(model, INPUT, 10, optimizer="adam")
    rows = {r["name"]: r for r in a.per_layer}
    assert rows["features.1"]["saved_bytes"] == 0  # frozen weight: no input kept
    assert rows["features.1"]["grad_bytes"] == 200 * 4  # the bias still trains
    assert rows["features.2"]["saved_bytes"] == 10 * 200  # bool mask, 1 byte each
    assert rows["features.3"]["saved_bytes"] == 10 * 200 * 4  # input of a trainable Linear
    assert rows["classifier.0"]["state_bytes"] == 2 * (10 * 200 + 10) * 4  # Adam: m and v
    assert a.gradients == sum(r["grad_bytes"] for r in a.per_layer)
    table = a.to_table()
    assert "features.3" in table and "total peak" in table
    assert str(a) == table


def test_analytic_peak_grows_with_the_batch():
    model = models.lenet5(seed=0)
    peaks = [
        analytic_training_memory(model, INPUT, n, backend="numpy").total_peak_bytes
        for n in (1, 2, 4, 8)
    ]
    assert peaks == sorted(peaks) and peaks[0] < peaks[-1]


def test_cython_scratch_is_per_image():
    """Cython im2col holds one image's columns, numpy the whole batch's."""
    model = models.cnn_mcmahan(seed=0)
    py = [analytic_training_memory(model, INPUT, n, backend="numpy").peak_bytes for n in (16, 32)]
    cy = [analytic_training_memory(model, INPUT, n, backend="cython").peak_bytes for n in (16, 32)]
    assert cy[0] < py[0] and cy[1] - cy[0] < py[1] - py[0]


def test_analytic_errors():
    model = models.mlp_2nn(seed=0)
    with pytest.raises(ValueError, match="optimizer"):
        analytic_training_memory(model, INPUT, 4, optimizer="rmsprop")
    with pytest.raises(ValueError, match="batch_size"):
        analytic_training_memory(model, INPUT, 0)
    with pytest.raises(ValueError, match="backend"):
        analytic_training_memory(model, INPUT, 4, backend="cuda")

    class Swish(nn.Layer):
        def _forward(self, x, train):
            return x

    with pytest.raises(NotImplementedError, match="Swish"):
        analytic_training_memory(nn.Sequential([nn.Flatten(), Swish()]), INPUT, 2)


def test_compare_relative_errors():
    model = models.mlp_2nn(seed=0)
    measured = steady_step(model, make_optimizer(model, "sgd"), 4)
    analytic = analytic_training_memory(model, INPUT, 4)
    err = compare(analytic, measured)
    expected = (analytic.total_peak_bytes - measured.total_peak_bytes) / measured.total_peak_bytes
    assert err["total_peak"] == pytest.approx(expected)
    assert err["optimizer_state"] == 0.0  # both 0 for plain SGD
    assert {"phase_forward", "phase_loss", "phase_backward", "phase_step"} <= set(err)


# ----------------------------------------------------------------------------- tape, report, plot


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=20))
def test_tape_peak_is_the_largest_live_sum(sizes):
    tape = Tape()
    bufs = [tape.new(n) for n in sizes]
    assert tape.peak == tape.live == sum(sizes)
    tape.drop(*bufs)
    assert tape.live == 0 and tape.peak == sum(sizes)
    with pytest.raises(AssertionError):
        tape.drop(bufs[0])


def test_report_table_and_categories():
    model = models.lenet5(seed=0)
    report = steady_step(model, make_optimizer(model, "sgd_momentum"), 8)
    assert report.steady_state
    text = report.to_table()
    assert "(measured)" in text and "(read)" in text
    breakdown = report.breakdown()
    assert sum(breakdown.values()) >= report.total_peak_bytes
    assert report.optimizer_state == report.gradients == report.parameters
    # what forward grew by, minus the logits, is what the layers saved (+ object headers)
    assert 0 <= report.activations_measured - report.saved_new_bytes < 0.05 * report.saved_new_bytes


def test_report_against_analytic_table_and_plot(tmp_path):
    model = models.lenet5(seed=0)
    opt = make_optimizer(model, "sgd")
    report = steady_step(model, opt, 4)
    analytic = analytic_training_memory(model, INPUT, 4, optimizer=opt)
    table = report.to_table(analytic=analytic)
    assert "analytic" in table and format_bytes(analytic.total_peak_bytes) in table
    assert report.peak == report.total_peak_bytes and analytic.peak == analytic.total_peak_bytes
    report.plot(tmp_path / "m.png", analytic=analytic)
    assert (tmp_path / "m.png").stat().st_size > 1000


def test_optimizer_over_part_of_the_model(backend_name):
    model = models.mlp_2nn(seed=0)
    opt = nn.Adam(model["classifier"])  # the features train (get gradients) but never update
    measured = steady_step(model, opt, 8)
    analytic = analytic_training_memory(model, INPUT, 8, optimizer=opt)
    assert analytic.optimizer_state == measured.optimizer_state
    assert analytic.optimizer_state < 2 * analytic.gradients / 10
    assert abs(compare(analytic, measured)["total_peak"]) < REL_TOL


def test_plot_memory_breakdown(tmp_path):
    model = models.mlp_2nn(seed=0)
    measured = steady_step(model, make_optimizer(model, "adam"), 8)
    analytic = analytic_training_memory(model, INPUT, 8, optimizer="adam")
    path = tmp_path / "memory.png"
    fig = plot_memory_breakdown([measured, analytic], path)
    assert path.exists() and path.stat().st_size > 1000
    assert len(fig.axes[0].patches) >= 2 * 4  # params, input, grads, state, ... per bar
    with pytest.raises(TypeError, match="plot_memory_breakdown"):
        plot_memory_breakdown([object()])
