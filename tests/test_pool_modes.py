"""Pooling options PyTorch users expect (``ceil_mode``, ``count_include_pad``) and NaN.

Kernels of both backends, the functional pair and the layers, against PyTorch on odd shapes;
gradient checks; NaN propagation wherever it sits in the window; windows of ``-inf``.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from gradcheck_utils import assert_close

from tinyodl import backend, nn
from tinyodl.nn import functional as F

CASES = [  # (x shape, kernel, stride, padding): odd sizes, ceil_mode changes most of them
    ((2, 3, 7, 5), 3, 2, 1),
    ((1, 2, 5, 8), (3, 2), (2, 3), (1, 1)),
    ((2, 1, 9, 7), 4, 3, 2),
    ((1, 2, 6, 6), 2, None, 0),
    ((1, 1, 3, 3), 3, 2, 1),
]
OPTIONS = list(itertools.product([False, True], [False, True]))  # (ceil_mode, count_include_pad)


def _torch_avg(x, dout, kernel, stride, padding, ceil, include):
    torch = pytest.importorskip("torch")
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.avg_pool2d(
        xt, kernel, stride, padding, ceil_mode=ceil, count_include_pad=include
    )
    if dout is None:
        return yt.detach().numpy(), None
    yt.backward(torch.tensor(dout))
    return yt.detach().numpy(), xt.grad.numpy()


@pytest.mark.torch
@pytest.mark.parametrize("ceil, include", OPTIONS)
@pytest.mark.parametrize("case", CASES)
def test_avgpool_kernels_match_torch(fk, case, ceil, include):
    shape, kernel, stride, padding = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    expected, _ = _torch_avg(x, None, kernel, stride or kernel, padding, ceil, include)
    out = fk.avgpool2d_forward(x, kernel, stride, padding, ceil, include)
    assert_close(out, expected, "forward")
    dout = rng.standard_normal(out.shape)
    _, dx = _torch_avg(x, dout, kernel, stride or kernel, padding, ceil, include)
    assert_close(
        fk.avgpool2d_backward(dout, shape, kernel, stride, padding, ceil, include), dx, "dx"
    )


@pytest.mark.torch
@pytest.mark.parametrize("case", CASES)
def test_maxpool_ceil_mode_matches_torch_values_and_indices(fk, case):
    torch = pytest.importorskip("torch")
    shape, kernel, stride, padding = case
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    yt, it = torch.nn.functional.max_pool2d(
        torch.tensor(x), kernel, stride or kernel, padding, ceil_mode=True, return_indices=True
    )
    out, argmax = fk.maxpool2d_forward(x, kernel, stride, padding, ceil_mode=True)
    np.testing.assert_array_equal(out, yt.numpy())
    np.testing.assert_array_equal(argmax, it.numpy())


@pytest.mark.torch
@pytest.mark.parametrize("ceil, include", OPTIONS)
def test_layers_match_torch_forward_and_backward(backend_name, ceil, include):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 7, 9)).astype(np.float32)
    for ours, theirs in [
        (
            nn.AvgPool2d(3, 2, 1, ceil_mode=ceil, count_include_pad=include),
            torch.nn.AvgPool2d(3, 2, 1, ceil_mode=ceil, count_include_pad=include),
        ),
        (nn.MaxPool2d(2, ceil_mode=ceil), torch.nn.MaxPool2d(2, ceil_mode=ceil)),
    ]:
        xt = torch.tensor(x, requires_grad=True)
        yt = theirs(xt)
        y = ours.forward(x)
        assert ours.output_shape(x.shape) == y.shape == tuple(yt.shape)
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-6, atol=1e-6)
        dout = rng.standard_normal(y.shape).astype(np.float32)
        yt.backward(torch.tensor(dout))
        np.testing.assert_allclose(ours.backward(dout), xt.grad.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("ceil, include", OPTIONS)
def test_avgpool_layer_gradients(backend_name, ceil, include):
    layer = nn.AvgPool2d(3, 2, 1, ceil_mode=ceil, count_include_pad=include)
    x = np.random.default_rng(3).standard_normal((2, 2, 6, 7))
    errors = nn.check_layer_gradients(layer, x)
    assert errors["x"] < 1e-6


def test_functional_pool_caches_the_options_and_config_rebuilds_the_layer():
    x = np.random.default_rng(4).standard_normal((1, 1, 6, 6))
    out, cache = F.avgpool2d_forward(x, 3, 2, 1, ceil_mode=True, count_include_pad=False)
    assert out.shape == (1, 1, 4, 4)  # floor mode gives 3 x 3
    assert cache["ceil_mode"] and not cache["count_include_pad"]
    # the last window starts on pixel 5 and reaches past the padding: it holds one pixel
    assert out[0, 0, 3, 3] == x[0, 0, 5, 5]
    assert np.isclose(out[0, 0, 0, 0], x[0, 0, :2, :2].mean())  # padding not counted
    dout = np.zeros_like(out)
    dout[0, 0, 3, 3] = 1.0
    dx = F.avgpool2d_backward(dout, cache)
    assert dx[0, 0, 5, 5] == dx.sum() == 1.0  # all of it goes to the one pixel
    layer = nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)
    clone = nn.AvgPool2d(**layer.config())
    assert clone.config() == layer.config()
    assert nn.MaxPool2d(**nn.MaxPool2d(2, ceil_mode=True).config()).ceil_mode


@pytest.mark.parametrize("position", [(0, 0), (0, 1), (1, 0), (1, 1), (2, 2)])
def test_maxpool_propagates_nan_wherever_it_is_in_the_window(fk, position):
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    x[0, 0][position] = np.nan
    out, argmax = fk.maxpool2d_forward(x, 2)
    r, c = position[0] // 2, position[1] // 2
    assert np.isnan(out[0, 0, r, c])
    assert argmax[0, 0, r, c] == position[0] * 4 + position[1]
    expected = np.nanmax(x.reshape(2, 2, 2, 2).transpose(0, 2, 1, 3).reshape(2, 2, 4), axis=2)
    expected[r, c] = np.nan
    np.testing.assert_array_equal(out[0, 0], expected)  # other windows untouched


def test_maxpool_nan_agrees_with_numpy_and_between_backends():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan
    results = {}
    for name in backend.available_backends():
        with backend.use_backend(name):
            results[name] = F.maxpool2d_forward(x, 3, 2, 1)
    windows = np.lib.stride_tricks.sliding_window_view(
        np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf), (3, 3), (2, 3)
    )[:, :, ::2, ::2]
    with np.errstate(invalid="ignore"):
        expected = windows.max(axis=(-2, -1))  # numpy's max propagates NaN
    for name, (out, cache) in results.items():
        np.testing.assert_array_equal(out, expected, err_msg=name)
        np.testing.assert_array_equal(cache["argmax"], results["numpy"][1]["argmax"])


def test_maxpool_window_of_minus_infinity_picks_a_pixel_not_the_padding(fk):
    x = np.full((1, 1, 3, 3), -np.inf)
    out, argmax = fk.maxpool2d_forward(x, 3, 1, 1)
    assert np.all(out == -np.inf)
    assert argmax.min() >= 0 and argmax.max() < 9
    np.testing.assert_array_equal(argmax.ravel(), [0, 0, 1, 0, 0, 1, 3, 3, 4])  # PyTorch's
    dx = fk.maxpool2d_backward(np.ones_like(out), argmax, x.shape)
    assert dx.sum() == 9
