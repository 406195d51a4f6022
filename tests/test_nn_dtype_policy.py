"""The dtype policy: the parameters decide the compute type; a lossy cast warns once.

float64 data into a float32 model is cast to float32 with one ``DtypeWarning`` per layer
(per model when called on the model: its children receive float32); float32 data into a
float64 model is cast up without a word (exact); integers are refused.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tinyodl import models, nn


def _x(dtype) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(dtype)


def test_float64_into_a_float32_model_warns_once_and_computes_in_float32():
    model = models.lenet5(seed=0)
    with pytest.warns(nn.DtypeWarning, match=r"Sequential: input of dtype float64 .* float32"):
        out = model.forward(_x(np.float64))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, model.forward(_x(np.float32)))  # the same computation
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second call is silent
        model.forward(_x(np.float64))


def test_the_warning_names_the_layer_and_points_at_the_callers_line():
    layer = nn.Linear(3, 2)
    layer.name = "head"
    with pytest.warns(nn.DtypeWarning, match=r"Linear 'head'.*astype") as record:
        layer.forward(np.ones((1, 3)))
    assert len(record) == 1
    assert record[0].filename == __file__  # stacklevel: the user's call, not tinyodl


def test_each_layer_warns_once_and_astype_resets_the_policy():
    a, b = nn.ReLU(), nn.ReLU()
    with pytest.warns(nn.DtypeWarning) as record:
        for _ in range(3):
            a.forward(np.ones(3))
            b.forward(np.ones(3))
    assert len(record) == 2
    a.astype("float64")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert a.forward(np.ones(3)).dtype == np.float64  # matches now: no warning


def test_float32_into_a_float64_model_is_cast_up_silently():
    model = models.mlp_2nn(seed=0).astype("float64")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = model.forward(_x(np.float32))
        dx = model.backward(np.ones(out.shape, np.float32))
    assert out.dtype == dx.dtype == np.float64
    assert all(p.grad.dtype == np.float64 for p in model.parameters())


def test_integer_input_is_refused_with_a_hint():
    with pytest.raises(nn.LayerDtypeError, match="to_float"):
        models.mlp_2nn(seed=0).forward(np.zeros((1, 1, 28, 28), np.uint8))


def test_fit_on_float64_data_warns_once():
    from tinyodl.train import fit

    model = nn.Sequential([nn.Flatten(), nn.Linear(4, 2, seed=0)])
    x = np.random.default_rng(0).standard_normal((20, 4))
    y = np.arange(20) % 2
    with pytest.warns(nn.DtypeWarning) as record:
        fit(model, nn.SGD(model, lr=0.1), x, y, epochs=2, batch_size=5, seed=0, progress=False)
    assert len([w for w in record if issubclass(w.category, nn.DtypeWarning)]) == 1
