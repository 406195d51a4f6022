"""Layers: float64 gradient checks, what they save, freezing, dtypes, configs and errors."""

from __future__ import annotations

import numpy as np
import pytest

from tinyodl import nn

TOL = 1e-6


def _saved_nbytes(layer: nn.Layer) -> int:
    return sum(a.nbytes for a in layer.saved.values())


def _distinct(rng, shape, scale=0.01):
    """Inputs whose entries differ by >= scale: max pooling has no ties, ReLU no kinks."""
    n = int(np.prod(shape))
    return ((rng.permutation(n) - n // 2 + 0.3) * scale).reshape(shape)


LAYER_CASES = {
    "linear": (lambda: nn.Linear(5, 3, seed=1), (4, 5)),
    "linear_nobias": (lambda: nn.Linear(5, 3, bias=False, seed=1), (4, 5)),
    "conv": (lambda: nn.Conv2d(2, 3, 3, stride=1, padding=1, seed=1), (2, 2, 5, 5)),
    "conv_strided_grouped": (lambda: nn.Conv2d(4, 6, 3, 2, 1, groups=2, seed=1), (2, 4, 5, 5)),
    "depthwise": (lambda: nn.DepthwiseConv2d(3, 3, 1, 1, seed=1), (2, 3, 4, 4)),
    "relu": (nn.ReLU, (3, 7)),
    "relu6": (nn.ReLU6, (3, 2, 4, 4)),
    "maxpool": (lambda: nn.MaxPool2d(2), (2, 2, 4, 4)),
    "maxpool_overlap": (lambda: nn.MaxPool2d(3, 2, 1), (2, 2, 5, 5)),
    "avgpool": (lambda: nn.AvgPool2d(2), (2, 2, 4, 4)),
    "gap": (nn.GlobalAvgPool, (2, 3, 3, 4)),
    "flatten": (nn.Flatten, (2, 3, 2, 2)),
    "identity": (nn.Identity, (2, 3)),
    "batchnorm": (lambda: nn.BatchNorm2d(3), (4, 3, 3, 3)),
    "dropout": (lambda: nn.Dropout(0.4, seed=3), (4, 6)),
}


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_layer_gradients(backend_name, case):
    make, shape = LAYER_CASES[case]
    rng = np.random.default_rng(0)
    scale = 0.5 if case == "relu6" else 0.01  # relu6: cover both kinks, 0 and 6
    errors = nn.check_layer_gradients(make(), _distinct(rng, shape, scale), seed=1)
    assert errors.keys() >= {"x"}
    assert max(errors.values()) < TOL, errors


def test_check_layer_gradients_covers_every_trainable_parameter():
    layer = nn.Conv2d(2, 3, 3, seed=0)
    layer.freeze(kind="bias")
    errors = nn.check_layer_gradients(layer, np.ones((1, 2, 3, 3)))
    assert set(errors) == {"x", "weight"}


def test_check_layer_gradients_catches_a_wrong_backward():
    class BrokenReLU(nn.ReLU):
        def _backward(self, dout, per_example):
            return dout  # forgets the mask

    errors = nn.check_layer_gradients(BrokenReLU(), np.linspace(-1, 1, 12).reshape(3, 4))
    assert errors["x"] > 0.1


def test_batchnorm_eval_gradients(backend_name):
    bn = nn.BatchNorm2d(3)
    rng = np.random.default_rng(0)
    bn.buffers["running_mean"][:] = rng.standard_normal(3)
    bn.buffers["running_var"][:] = rng.uniform(0.5, 2, 3)
    errors = nn.check_layer_gradients(bn, rng.standard_normal((2, 3, 2, 2)), train=False)
    assert max(errors.values()) < TOL, errors


def test_add_gradients(backend_name):
    body = nn.Sequential([nn.Conv2d(2, 2, 3, padding=1, seed=0), nn.ReLU()])
    shortcut = nn.Sequential([nn.Conv2d(2, 2, 1, seed=1)])
    x = _distinct(np.random.default_rng(0), (2, 2, 4, 4))
    for add in (nn.Add(body), nn.Add(body, shortcut)):
        errors = nn.check_layer_gradients(add, x)
        assert max(errors.values()) < TOL, errors


def test_add_sums_branches():
    add = nn.Add(nn.Identity(), nn.Identity())
    x = np.arange(6.0).reshape(2, 3)
    np.testing.assert_allclose(add.forward(x), 2 * x)
    np.testing.assert_allclose(add.backward(np.ones((2, 3))), 2 * np.ones((2, 3)))


@pytest.mark.parametrize("stride, cin, cout, expand", [(1, 4, 4, 2), (2, 4, 6, 3), (1, 3, 3, 1)])
def test_inverted_residual_gradients(backend_name, stride, cin, cout, expand):
    block = nn.InvertedResidual(cin, cout, stride, expand, seed=0)
    assert block.use_residual == (stride == 1 and cin == cout)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, cin, 4, 4)) * 3
    for bn in [layer for _, layer in block.named_layers() if isinstance(layer, nn.BatchNorm2d)]:
        bn.buffers["running_mean"][:] = rng.standard_normal(bn.num_features) * 0.1
        bn.buffers["running_var"][:] = rng.uniform(0.5, 2.0, bn.num_features)
    errors = nn.check_layer_gradients(block, x, train=False)
    assert max(errors.values()) < 1e-5, errors
    # Training mode: a BN gamma followed by another BN gets a tiny, badly conditioned
    # gradient (the next BN undoes its scale), so allow a looser relative error.
    errors = nn.check_layer_gradients(block, x, train=True)
    assert max(errors.values()) < 1e-3, errors


def test_inverted_residual_structure():
    block = nn.InvertedResidual(8, 8, 1, 6, kernel_size=5)
    assert block.names() == [
        "expand", "expand_bn", "expand_act", "depthwise", "depthwise_bn", "depthwise_act",
        "project", "project_bn",
    ]  # fmt: skip
    assert block["depthwise"].params["weight"].shape == (48, 1, 5, 5)
    assert block.output_shape((1, 8, 9, 9)) == (1, 8, 9, 9)
    assert nn.InvertedResidual(8, 16, 2).output_shape((1, 8, 9, 9)) == (1, 16, 5, 5)
    assert "expand" not in nn.InvertedResidual(8, 8, expand_ratio=1).names()


def test_dropout_layer_train_and_eval():
    drop = nn.Dropout(0.5, seed=0)
    x = np.ones((10, 10), dtype=np.float32)
    assert np.array_equal(drop.forward(x, train=False), x)
    y = drop.forward(x)
    assert set(np.unique(y)) <= {0.0, 2.0}
    np.testing.assert_array_equal(drop.backward(np.ones_like(y)), y)
    a = nn.Dropout(0.5, seed=7).forward(x)
    b = nn.Dropout(0.5, seed=7).forward(x)
    np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- saved tensors


def test_frozen_weight_linear_saves_no_input():
    x = np.ones((8, 50), dtype=np.float32)
    layer = nn.Linear(50, 4)
    layer.forward(x)
    assert _saved_nbytes(layer) >= x.nbytes
    layer.backward(np.ones((8, 4)))
    assert layer.saved == {}

    layer.zero_grad()
    layer.freeze(kind="weight")
    assert layer.params["weight"].grad is None and layer.params["bias"].trainable
    layer.forward(x)
    assert _saved_nbytes(layer) == 0
    dx = layer.backward(np.ones((8, 4), dtype=np.float32))
    assert dx.shape == x.shape
    assert layer.params["weight"].grad is None
    np.testing.assert_allclose(layer.params["bias"].grad, np.full(4, 8.0))


def test_frozen_conv_saves_no_input_and_gets_no_grad():
    conv = nn.Conv2d(3, 4, 3, padding=1).freeze()
    conv.forward(np.ones((2, 3, 8, 8)))
    assert _saved_nbytes(conv) == 0
    conv.backward(np.ones((2, 4, 8, 8)))
    assert all(p.grad is None for p in conv.parameters())


def test_relu_saves_a_boolean_mask():
    relu = nn.ReLU()
    x = np.ones((4, 100), dtype=np.float32)
    relu.forward(x)
    assert list(relu.saved) == ["mask"] and relu.saved["mask"].dtype == bool
    assert _saved_nbytes(relu) == x.nbytes // 4


def test_frozen_batchnorm_in_eval_mode_saves_only_per_channel_data():
    bn = nn.BatchNorm2d(4).freeze()
    bn.forward(np.ones((2, 4, 5, 5)), train=False)
    assert _saved_nbytes(bn) <= 4 * 8


def test_backward_clears_saved_and_needs_a_forward():
    layer = nn.Linear(3, 2, seed=0)
    layer.forward(np.ones((1, 3)))
    layer.backward(np.ones((1, 2)))
    with pytest.raises(nn.BackwardError, match="Linear: backward called without a forward"):
        layer.backward(np.ones((1, 2)))


def test_gradients_accumulate_until_zero_grad():
    layer = nn.Linear(3, 2, seed=0)
    assert all(p.grad is None for p in layer.parameters())  # allocated lazily
    x = np.ones((1, 3), dtype=np.float32)
    for _ in range(2):
        layer.forward(x)
        layer.backward(np.ones((1, 2)))
    np.testing.assert_allclose(layer.params["bias"].grad, [2.0, 2.0])
    layer.zero_grad()
    np.testing.assert_allclose(layer.params["bias"].grad, [0.0, 0.0])
    layer.zero_grad(set_to_none=True)
    assert layer.params["bias"].grad is None


# ----------------------------------------------------------------------------- dtypes, configs


def test_float32_by_default_and_float64_after_astype():
    layer = nn.Conv2d(1, 2, 3)
    assert layer.params["weight"].dtype == np.float32
    assert layer.forward(np.ones((1, 1, 4, 4))).dtype == np.float32  # float64 input is cast
    layer.astype(np.float64)
    assert layer.params["weight"].dtype == np.float64
    assert layer.forward(np.ones((1, 1, 4, 4))).dtype == np.float64


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_config_rebuilds_an_equal_layer(case):
    layer = LAYER_CASES[case][0]()
    clone = type(layer)(**layer.config())
    assert clone.config() == layer.config()
    for key, p in layer.params.items():
        np.testing.assert_array_equal(clone.params[key].data, p.data)


def test_fold_batchnorm_matches_conv_then_bn_in_eval(backend_name):
    rng = np.random.default_rng(0)
    for conv in (nn.Conv2d(3, 4, 3, 2, 1, seed=0), nn.DepthwiseConv2d(4, 3, 1, 1, bias=False)):
        bn = nn.BatchNorm2d(conv.out_channels)
        bn.params["weight"].data[:] = rng.uniform(0.5, 2, bn.num_features)
        bn.params["bias"].data[:] = rng.standard_normal(bn.num_features)
        bn.buffers["running_mean"][:] = rng.standard_normal(bn.num_features)
        bn.buffers["running_var"][:] = rng.uniform(0.5, 2, bn.num_features)
        x = rng.standard_normal((2, conv.in_channels, 6, 6)).astype(np.float32)
        expected = bn.forward(conv.forward(x), train=False)
        folded = nn.fold_batchnorm(conv, bn)
        assert type(folded) is type(conv) and folded.bias
        np.testing.assert_allclose(folded.forward(x), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="fold_batchnorm: BatchNorm2d has 5 channels"):
        nn.fold_batchnorm(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(5))


def test_batchnorm_running_stats_follow_pytorch_rule():
    bn = nn.BatchNorm2d(2, momentum=0.1).astype(np.float64)
    x = np.random.default_rng(0).standard_normal((4, 2, 3, 3)) * 2 + 5
    bn.forward(x)
    mean = x.mean(axis=(0, 2, 3))
    var = x.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(bn.buffers["running_mean"], 0.1 * mean)
    np.testing.assert_allclose(bn.buffers["running_var"], 0.9 + 0.1 * var)
    before = bn.buffers["running_mean"].copy()
    bn.forward(x, train=False)
    np.testing.assert_array_equal(bn.buffers["running_mean"], before)


def test_capture_keeps_activations_and_output_gradients():
    model = nn.Sequential([nn.Linear(3, 4, seed=0), nn.ReLU(), nn.Linear(4, 2, seed=1)])
    model.capture(True)
    x = np.ones((2, 3), dtype=np.float32)
    y = model.forward(x)
    dout = np.ones_like(y)
    model.backward(dout)
    first, relu, last = model
    np.testing.assert_array_equal(first.last_input, x)
    np.testing.assert_array_equal(relu.last_input, first.last_output)
    np.testing.assert_array_equal(last.last_output, y)
    np.testing.assert_array_equal(last.last_grad_output, dout)
    model.capture(False)
    assert first.last_input is None


# ----------------------------------------------------------------------------- errors


def test_shape_errors_name_the_layer_and_both_shapes():
    model = nn.Sequential({"features": nn.Sequential([nn.Conv2d(1, 4, 3)])})
    with pytest.raises(
        ValueError,
        match=r"Conv2d 'features.0': expected input \(N, 1, H, W\), got \(32, 3, 28, 28\)",
    ):
        model.forward(np.zeros((32, 3, 28, 28)))
    with pytest.raises(ValueError, match=r"Linear: expected input \(N, 5\).*Flatten.*got \(2, 1"):
        nn.Linear(5, 2).forward(np.zeros((2, 1, 5)))
    with pytest.raises(ValueError, match="MaxPool2d: .*does not fit"):
        nn.MaxPool2d(4).forward(np.zeros((1, 1, 2, 2)))
    layer = nn.Linear(5, 2)
    layer.forward(np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"expected dout of shape \(3, 2\).*got \(3, 3\)"):
        layer.backward(np.zeros((3, 3)))


def test_dtype_and_argument_errors():
    with pytest.raises(TypeError, match="ReLU: expected a floating-point array, got dtype <U1$"):
        nn.ReLU().forward(np.array(["a", "b"]))
    # raw uint8 images must not be cast silently into a float model
    model = nn.Sequential([nn.Flatten(), nn.Linear(4, 2)])
    with pytest.raises(
        TypeError, match=r"Sequential: expected a floating-point array, got dtype uint8 \(convert"
    ):
        model.forward(np.zeros((1, 1, 2, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match="divisible by groups=2"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="dtype must be float32 or float64"):
        nn.Linear(2, 2, dtype="int8")
    with pytest.raises(ValueError, match="unknown initializer 'bogus'"):
        nn.Linear(2, 2, init="bogus")
    with pytest.raises(ValueError, match="BatchNorm2d: training mode needs more than one value"):
        nn.BatchNorm2d(2).forward(np.ones((1, 2, 1, 1)))
