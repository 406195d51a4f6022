"""Chapter 03: PTQ, the int8 model, integer-only inference, the fake-quant twin (QAT)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from tinyodl import backend, models, nn, tasks, use_backend
from tinyodl import quantization as Q
from tinyodl.data import load_mnist, to_float


def small_model(seed: int = 0) -> nn.Sequential:
    """Conv-BN-ReLU6, an inverted residual block with a skip, GAP, Linear; random BN stats."""
    rng = np.random.default_rng(seed)
    features = nn.Sequential(
        [
            nn.Conv2d(2, 8, 3, padding=1, bias=False, seed=1),
            nn.BatchNorm2d(8),
            nn.ReLU6(),
            nn.InvertedResidual(8, 8, stride=1, expand_ratio=2, seed=2),
            nn.GlobalAvgPool(),
        ]
    )
    model = nn.Sequential({"features": features, "classifier": nn.Sequential([nn.Linear(8, 3)])})
    for _, layer in model.named_layers():
        if isinstance(layer, nn.BatchNorm2d):
            c = layer.num_features
            layer.buffers["running_mean"][:] = rng.normal(0, 0.3, c)
            layer.buffers["running_var"][:] = rng.uniform(0.5, 2.0, c)
            layer.params["weight"].data[:] = rng.uniform(0.5, 1.5, c)
            layer.params["bias"].data[:] = rng.normal(0, 0.2, c)
    return model.eval()


@pytest.fixture(scope="module")
def pretrained_b():
    """The shipped model for task B, its PTQ (min/max on 256 clean images) and test data."""
    model = tasks.pretrained("B")
    images, _ = load_mnist("train", subset=256)
    x_test, y_test = load_mnist("test", subset=1000)
    qmodel = Q.quantize_model(model, to_float(images))
    return model, qmodel, to_float(x_test), y_test.astype(np.int64)


# ----------------------------------------------------------------------------- folding, plan


def test_fold_model_matches_the_eval_model_and_leaves_it_alone():
    model = small_model()
    before = nn.parameters_to_vector(model).copy()
    folded = Q.fold_model(model)
    x = np.random.default_rng(0).standard_normal((4, 2, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(folded.forward(x), model.forward(x), atol=1e-5)
    np.testing.assert_array_equal(nn.parameters_to_vector(model), before)
    assert not any(isinstance(m, nn.BatchNorm2d) for _, m in folded.named_layers())
    assert isinstance(folded["features.1"], nn.Identity)


def test_plan_fuses_activations_and_keeps_the_residual():
    units = Q.plan_units(Q.fold_model(small_model()))
    assert [u.kind for u in units] == ["conv", "residual", "gap", "conv"]
    assert units[0].activation == "relu6" and units[-1].activation is None
    body = units[1].body
    assert [(u.name, u.activation) for u in body] == [
        ("features.3.expand", "relu6"),
        ("features.3.depthwise", "relu6"),
        ("features.3.project", None),
    ]


def test_unsupported_layers_are_named():
    with pytest.raises(NotImplementedError, match=r"'features.2' of type MaxPool2d"):
        Q.plan_units(Q.fold_model(models.lenet5()))
    bad = nn.Sequential([nn.BatchNorm2d(1), nn.Flatten(), nn.Linear(4, 2)])
    with pytest.raises(ValueError, match="batchnorm '0' does not follow a convolution"):
        Q.fold_model(bad)


def test_calibration_minmax_is_the_range_and_percentile_is_inside_it():
    model = small_model()
    units = Q.plan_units(Q.fold_model(model))
    x = np.random.default_rng(1).standard_normal((64, 2, 6, 6)).astype(np.float32)
    minmax = Q.calibrate(units, x, "minmax", batch_size=16)
    pct = Q.calibrate(units, x, "percentile", percentile=99.0, batch_size=16)
    model.capture(True)
    model.forward(x)
    relu_out = model["features.2"].last_output  # the stem's ReLU6 output
    assert minmax["features.0"] == pytest.approx((relu_out.min(), relu_out.max()), abs=1e-5)
    for name, (lo, hi) in pct.items():
        assert minmax[name][0] <= lo <= hi <= minmax[name][1]
    assert pct["features.3"][1] < minmax["features.3"][1]  # the outliers are cut
    with pytest.raises(ValueError, match="calibrate: method must be one of"):
        Q.calibrate(units, x, "mse")


# ----------------------------------------------------------------------------- the int8 model


def test_quantized_layers_hold_int8_weights_int32_biases_and_tflite_qparams():
    model = small_model()
    x = np.random.default_rng(2).uniform(0, 1, (32, 2, 6, 6)).astype(np.float32)
    qmodel = Q.quantize_model(model, x)
    assert qmodel.input.scale == pytest.approx(1 / 255) and qmodel.input.zero_point == -128
    for name, conv in qmodel.named_convs():
        assert conv.weight.dtype == np.int8 and conv.bias.dtype == np.int32
        assert conv.weight.min() >= -127 and np.all(
            np.abs(conv.weight).max(axis=tuple(range(1, conv.weight.ndim))) == 127
        ), name
        if conv.activation == "relu6":  # the fused ReLU6 is the clamp [q(0), q(6)]
            assert conv.act_min == conv.output.zero_point
            assert conv.act_max == min(127, conv.output.quantize(6.0))
    rows = qmodel.describe((1, 2, 6, 6))
    assert [r["type"] for r in rows] == [
        "QConv",
        "QResidual",
        "QConv",
        "QConv",
        "QConv",
        "QAdd",
        "QGlobalAvgPool",
        "QConv",
    ]
    assert rows[-1]["output_shape"] == (1, 3)
    assert sum(r["nbytes"] for r in rows) == qmodel.nbytes()


def test_forward_int_is_integer_only():
    qmodel = Q.quantize_model(small_model(), np.ones((4, 2, 6, 6), np.float32) * 0.5)
    h = qmodel.quantize_input(np.random.default_rng(3).uniform(0, 1, (3, 2, 6, 6)))
    for op in qmodel.ops:
        h = op.forward(h)
        assert h.dtype == np.int8, op.name
    with pytest.raises(TypeError, match="expected an int8 input, got float32"):
        qmodel.forward_int(np.zeros((1, 2, 6, 6), np.float32))


def test_pretrained_int8_model_is_within_one_point_of_float_and_four_times_smaller(pretrained_b):
    model, qmodel, x, y = pretrained_b
    acc_float = tasks.Task.accuracy(_Plain(x, y), model)
    acc_int8 = tasks.Task.accuracy(_Plain(x, y), qmodel)
    assert acc_float > 0.97 and abs(acc_float - acc_int8) <= 0.01
    assert Q.float_nbytes(model) / qmodel.nbytes() > 3.0  # int8 weights + per-channel int32s


class _Plain:
    """Just the test arrays, so Task.accuracy can be used without a task."""

    def __init__(self, x, y):
        self.x_test, self.y_test = x, y


def test_integer_path_is_bit_exact_between_backends_on_the_whole_model(pretrained_b):
    if not backend.cython_available():
        pytest.skip("kernels not built")
    _, qmodel, x, _ = pretrained_b
    xq = qmodel.quantize_input(x[:64])
    with use_backend("numpy"):
        reference = qmodel.forward_int(xq)
    with use_backend("cython"):
        compiled = qmodel.forward_int(xq)
    np.testing.assert_array_equal(reference, compiled)


def test_the_float_twin_agrees_within_one_lsb(pretrained_b):
    _, qmodel, x, _ = pretrained_b
    xq = qmodel.quantize_input(x[:200])
    twin = Q.to_fake_quant(qmodel).astype("float64")
    q_twin = qmodel.output.quantize(twin.forward(x[:200].astype(np.float64))).astype(int)
    # TFLite's double rounding: one-step differences in some layers compound a little
    q_double = qmodel.forward_int(xq).astype(int)
    assert np.mean(np.abs(q_twin - q_double) <= 1) >= 0.9
    # single rounding (XNNPACK, TFLITE_SINGLE_ROUNDING) is what the float twin computes
    single = copy.deepcopy(qmodel).set_rounding("single")
    q_single = single.forward_int(xq).astype(int)
    assert np.mean(np.abs(q_twin - q_single) <= 1) >= 0.99
    # layer by layer, from the same integer input, every output is within one step
    h = xq
    layers = list(twin.children().values())[1:]
    for op, layer in zip(qmodel.ops, layers, strict=True):
        y = op.forward(h)
        if isinstance(op, Q.QConv | Q.QResidual | Q.QGlobalAvgPool):
            in_q = {
                Q.QConv: lambda o: o.input,
                Q.QResidual: lambda o: o.add.b,
                Q.QGlobalAvgPool: lambda o: o.qparams,
            }[type(op)](op)
            out_q = (
                op.add.output
                if isinstance(op, Q.QResidual)
                else (op.qparams if isinstance(op, Q.QGlobalAvgPool) else op.output)
            )
            y_twin = layer.forward(in_q.dequantize(h).astype(np.float64))
            assert np.abs(out_q.quantize(y_twin).astype(int) - y).max() <= 1, op.name
        h = y


def test_twin_round_trips_to_the_same_integer_model():
    model = small_model()
    x = np.random.default_rng(4).uniform(0, 1, (32, 2, 6, 6)).astype(np.float32)
    qmodel = Q.quantize_model(model, x, method="percentile")
    back = Q.to_quantized(Q.to_fake_quant(qmodel))
    for (name, a), (name_b, b) in zip(qmodel.named_convs(), back.named_convs(), strict=True):
        assert name == name_b
        np.testing.assert_array_equal(a.weight, b.weight)
        np.testing.assert_array_equal(a.bias, b.bias)
        np.testing.assert_array_equal(a.multiplier, b.multiplier)
    xq = qmodel.quantize_input(x)
    np.testing.assert_array_equal(back.forward_int(xq), qmodel.forward_int(xq))


# ----------------------------------------------------------------------------- gradients


def _surrogate_twin(seed=0):
    """The twin in float64 with rounding off: its exact gradient is the STE gradient."""
    model = small_model(seed)
    x = np.random.default_rng(5).uniform(0, 1, (32, 2, 6, 6)).astype(np.float32)
    twin = Q.to_fake_quant(Q.quantize_model(model, x)).astype("float64")
    for _, layer in twin.named_layers():
        if hasattr(layer, "rounding"):
            layer.rounding = False
    return twin.train()


def test_fake_quant_layers_gradcheck_on_the_straight_through_surrogate():
    twin = _surrogate_twin()
    x = np.random.default_rng(6).uniform(0.05, 0.95, (2, 2, 6, 6))
    errors = nn.check_layer_gradients(twin, x, seed=0, num_checks=12)
    assert max(errors.values()) < 1e-5, errors


def test_ste_masks_outputs_clamped_by_the_activation():
    layer = Q.FakeQuantConv("linear", (2, 3), 0.1, 0.05, -128, act_min=-128, act_max=-100)
    layer.params["weight"].data[:] = [[1, 0, 0], [0, 1, 0]]
    x = np.array([[0.1, 5.0, 0.0]], np.float32)  # outputs 0.1 (inside) and 5.0 (clamped)
    y = layer.forward(x, train=True)
    assert y[0, 1] == pytest.approx(0.05 * (-100 + 128))
    dx = layer.backward(np.ones_like(y))
    np.testing.assert_allclose(dx, [[1.0, 0.0, 0.0]])
