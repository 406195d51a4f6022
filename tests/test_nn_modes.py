"""Training and evaluation modes (PyTorch semantics): ``model.train()`` / ``model.eval()``
set the mode of every layer, ``forward(x)`` follows it, an explicit ``train=`` overrides it,
and a sub-layer put in evaluation mode inside a training model keeps its own mode."""

from __future__ import annotations

import numpy as np
import pytest

from tinyodl import models, nn
from tinyodl.train import evaluate, fit


def _bn_model(seed: int = 0) -> nn.Sequential:
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        [
            nn.Conv2d(2, 3, 3, padding=1, seed=int(rng.integers(1 << 30))),
            nn.BatchNorm2d(3),
            nn.ReLU(),
            nn.Dropout(0.5, seed=1),
            nn.GlobalAvgPool(),
            nn.Linear(3, 2, seed=2),
        ]
    )


def _x(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((4, 2, 5, 5)).astype(np.float32)


def test_new_models_are_in_training_mode_and_eval_reaches_every_layer():
    model = _bn_model()
    assert model.training and all(layer.training for _, layer in model.named_layers())
    assert model.eval() is model
    assert not model.training and not any(layer.training for _, layer in model.named_layers())
    assert model.train() is model
    assert all(layer.training for _, layer in model.named_layers())


def test_forward_in_eval_mode_leaves_running_statistics_alone():
    model = _bn_model().eval()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    y1 = model.forward(_x())
    y2 = model.forward(_x())
    np.testing.assert_array_equal(y1, y2)  # dropout off, batchnorm on running statistics
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_forward_in_training_mode_updates_running_statistics():
    model = _bn_model()
    mean_before = model["1"].buffers["running_mean"].copy()
    model.forward(_x())
    assert not np.array_equal(model["1"].buffers["running_mean"], mean_before)


@pytest.mark.parametrize("explicit", [True, False])
def test_an_explicit_train_argument_overrides_the_mode(explicit):
    eval_model, train_model = _bn_model().eval(), _bn_model()
    out_eval = eval_model.forward(_x(), train=explicit)
    out_train = train_model.forward(_x(), train=explicit)
    np.testing.assert_array_equal(out_eval, out_train)


def test_a_sublayer_in_eval_mode_keeps_its_statistics_while_the_model_trains():
    model = _bn_model()
    model["1"].eval()  # fine-tuning with frozen batchnorm statistics
    mean_before = model["1"].buffers["running_mean"].copy()
    model.forward(_x())
    np.testing.assert_array_equal(model["1"].buffers["running_mean"], mean_before)
    assert model["3"].training  # dropout still active


def test_evaluate_does_not_update_statistics_and_does_not_change_the_mode():
    model = models.mcunet_tiny(seed=0)
    x = np.random.default_rng(1).random((6, 1, 28, 28), dtype=np.float32)
    y = np.arange(6) % 10
    before = {k: v.copy() for k, v in model.state_dict().items()}
    evaluate(model, x, y)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    assert model.training


def test_fit_puts_a_model_in_eval_mode_back_into_training_mode():
    model = _bn_model().eval()
    x, y = _x(), np.array([0, 1, 0, 1])
    mean_before = model["1"].buffers["running_mean"].copy()
    fit(model, nn.SGD(model, lr=0.01), x, y, epochs=1, batch_size=2, seed=0, progress=False)
    assert model.training
    assert not np.array_equal(model["1"].buffers["running_mean"], mean_before)
