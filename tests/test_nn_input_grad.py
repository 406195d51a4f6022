"""``Layer.needs_input_grad = False``: the first layer skips dL/dx, parameter gradients stay."""

from __future__ import annotations

import numpy as np
import pytest

from tinyodl import backend, models, nn


def _grads(model, x, dout):
    model.zero_grad()
    model.forward(x, train=True)
    dx = model.backward(dout)
    return dx, [p.grad.copy() for p in model.parameters()]


@pytest.mark.parametrize("backend_name", backend.available_backends())
@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: nn.Linear(7, 5, seed=1), (4, 7)),
        (lambda: nn.Conv2d(3, 4, 3, padding=1, seed=2), (2, 3, 6, 6)),
        (lambda: nn.Conv2d(1, 32, 5, padding=2, seed=3), (3, 1, 12, 12)),
        (lambda: models.cnn_mcmahan(seed=0), (2, 1, 28, 28)),
    ],
)
def test_skipping_the_input_gradient_keeps_parameter_gradients(backend_name, make, shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    with backend.use_backend(backend_name):
        model = make()
        out_shape = model.forward(x).shape
        dout = rng.standard_normal(out_shape).astype(np.float32)
        dx, want = _grads(model, x, dout)
        assert dx is not None and dx.shape == x.shape
        first = next((layer for _, layer in model.named_layers() if not layer.children()), model)
        first.needs_input_grad = False
        dx_skipped, got = _grads(model, x, dout)
    assert dx_skipped is None
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(g, w)


def test_skipping_is_per_layer_and_off_by_default():
    layer = nn.ReLU()
    assert layer.needs_input_grad
    layer.needs_input_grad = False  # a layer that cannot skip the work still returns None
    layer.forward(np.ones((2, 3), np.float32))
    assert layer.backward(np.ones((2, 3), np.float32)) is None
