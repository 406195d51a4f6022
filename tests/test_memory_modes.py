"""Memory measurement and prediction follow the layers' modes, and cover the new layers.

``measure_training_step`` runs ``model.forward(x)`` as ``fit`` does, so a batchnorm whose
statistics are frozen (``bn.eval()`` inside a training model) is measured as it runs; the
analytic model replays the same modes. The layers added for PyTorch users (Softmax,
BatchNorm1d, pooling with ``ceil_mode``/``count_include_pad``, a depthwise multiplier) have
memory rules that match the measurement.
"""

from __future__ import annotations

import numpy as np
import pytest

from tinyodl import backend, nn
from tinyodl.memory import analytic_training_memory, compare, measure_training_step

REL_TOL = 0.10  # as in test_memory.py
INPUT = (2, 13, 13)
BATCH = 64  # BN inputs above numpy's temporary-elision threshold (256 KiB)


def _model() -> nn.Sequential:
    return nn.Sequential(
        {
            "conv": nn.Conv2d(2, 6, 3, padding=1, seed=0),
            "bn": nn.BatchNorm2d(6),
            "act": nn.ReLU(),
            "avg": nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
            "dw": nn.DepthwiseConv2d(6, 3, padding=1, seed=1, channel_multiplier=2),
            "max": nn.MaxPool2d(2, ceil_mode=True),
            "flat": nn.Flatten(),
            "fc": nn.Linear(12 * 4 * 4, 16, seed=2),
            "bn1d": nn.BatchNorm1d(16),
            "fc2": nn.Linear(16, 10, seed=3),
            "soft": nn.Softmax(),
        }
    )


def _step(model, opt, batch=BATCH):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *INPUT)).astype(np.float32)
    y = rng.standard_normal((batch, 10)).astype(np.float32)
    measure_training_step(model, opt, x, y, loss="mse")  # warm-up
    return measure_training_step(model, opt, x, y, loss="mse")


@pytest.mark.parametrize("frozen_statistics", [False, True])
def test_new_layers_and_modes_measured_as_predicted(backend_name, frozen_statistics):
    model = _model()
    if frozen_statistics:
        model["bn"].eval()
        model["bn1d"].eval()
    opt = nn.SGD(model, lr=0.01, momentum=0.9)
    measured = _step(model, opt)
    analytic = analytic_training_memory(model, INPUT, BATCH, optimizer=opt, loss="mse")
    assert analytic.saved_per_layer == measured.saved_per_layer
    err = compare(analytic, measured)
    assert abs(err["total_peak"]) < REL_TOL, err
    assert abs(err["step_peak"]) < REL_TOL, err


def test_a_frozen_statistics_batchnorm_is_measured_as_it_runs():
    model = _model()
    model["bn"].eval()
    mean = model["bn"].buffers["running_mean"].copy()
    opt = nn.SGD(model, lr=0.01)
    measured = _step(model, opt, batch=8)
    np.testing.assert_array_equal(model["bn"].buffers["running_mean"], mean)  # not updated
    # with gamma trainable, eval mode keeps x_hat too: what differs is the backward
    forced = analytic_training_memory(model, INPUT, 8, optimizer=opt, loss="mse", train=True)
    followed = analytic_training_memory(model, INPUT, 8, optimizer=opt, loss="mse")
    assert followed.saved_per_layer == measured.saved_per_layer
    bn_row = {r["name"]: r for r in followed.per_layer}["bn"]
    forced_row = {r["name"]: r for r in forced.per_layer}["bn"]
    if backend.get_backend() == "numpy":  # dx = dout * scale only, no training temporaries
        assert bn_row["backward_peak"] < forced_row["backward_peak"]
    else:  # the compiled kernel (kernels/norm.pyx) allocates only dx in either mode
        assert bn_row["backward_peak"] == forced_row["backward_peak"]
    model["bn"].params["weight"].trainable = False
    measured = _step(model, opt, batch=8)
    assert measured.saved_per_layer["bn"] == 6 * 4  # inv_std only: no x_hat kept
    model.train()
    assert _step(model, opt, batch=8).saved_per_layer["bn"] > 6 * 4  # training mode needs x_hat
