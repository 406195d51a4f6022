"""Chapter 13: ONNX export (float and int8) checked by onnxruntime; model files; CLI."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from _export_fixtures import float_model, int8_model, mnist_test_images, ort_session

from tinyodl import nn
from tinyodl.export import (
    ExportError,
    load_model,
    save_model,
    tflite_compatible,
    to_onnx,
    to_onnx_int8,
    to_onnx_int8_exact,
)

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _ort_int8_layer_outputs(proto, names, x):
    """Run ``proto`` returning the int8 tensors ``names`` (graph outputs rewired)."""
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    del m.graph.output[:]
    for name in names:
        m.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return dict(zip(names, ort_session(m).run(None, {"input": x}), strict=True))


def test_float_export_matches_onnxruntime_on_test_split():
    model = float_model()
    proto = to_onnx(model, (1, 1, 28, 28))
    assert proto.opset_import[0].version >= 17
    x = mnist_test_images()[:500]
    got = ort_session(proto).run(None, {"input": x})[0]
    want = model.forward(x, train=False)
    # within 1e-5 relative to the size of the logits
    assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want))
    assert (got.argmax(1) == want.argmax(1)).all()


@pytest.mark.parametrize(
    "layers",
    [
        lambda: [nn.Conv2d(1, 4, 3, stride=2, padding=1, seed=1), nn.BatchNorm2d(4), nn.ReLU()],
        lambda: [nn.Conv2d(1, 4, 3, padding=1, seed=1), nn.MaxPool2d(2, ceil_mode=True)],
        lambda: [nn.Conv2d(1, 4, 3, seed=1), nn.AvgPool2d(3, 2, 1, count_include_pad=False)],
        lambda: [nn.Add(nn.Sequential([nn.Conv2d(1, 1, 3, padding=1, seed=2), nn.ReLU6()]))],
        lambda: [nn.Flatten(), nn.Linear(81, 10, seed=3), nn.Dropout(0.5), nn.Softmax()],
    ],
)
def test_float_export_of_each_layer_kind(layers):
    model = nn.Sequential(layers()).eval()
    rng = np.random.default_rng(0)
    for layer in model.named_layers():  # non-trivial batchnorm statistics
        if isinstance(layer[1], nn.BatchNorm2d):
            layer[1].buffers["running_mean"][:] = rng.normal(size=4)
            layer[1].buffers["running_var"][:] = rng.uniform(0.5, 2, size=4)
    x = rng.random((3, 1, 9, 9), dtype=np.float32)
    got = ort_session(to_onnx(model, (1, 1, 9, 9))).run(None, {"input": x})[0]
    want = model.forward(x, train=False)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_float_export_refuses_unknown_layer_by_name():
    model = nn.Sequential({"up": nn.BilinearUpsample((4, 4)), "flat": nn.Flatten()})
    with pytest.raises(ExportError, match=r"'up'.*BilinearUpsample"):
        to_onnx(model, (1, 1, 2, 2))


def _int8_comparison(q, x):
    proto = to_onnx_int8(q, (1, 1, 28, 28))
    yq, y = ort_session(proto).run(None, {"input": x})
    ref = q.forward_int(q.quantize_input(x))
    return yq.astype(np.int64) - ref, y, q.dequantize_output(ref)


def _conv_inputs(q, xq):
    """``(QConv, its int8 input)`` for every conv of ``q``, in forward order (tinyodl's values)."""
    pairs, h = [], xq
    for op in q.ops:
        if hasattr(op, "body"):
            block_input = h
            for inner in op.body:
                pairs.append((inner, h))
                h = inner.forward(h)
            h = op.add.forward(h, block_input)
        else:
            if hasattr(op, "kind"):
                pairs.append((op, h))
            h = op.forward(h)
    return pairs


def test_int8_export_each_layer_within_one_step():
    """Each QLinearConv, given tinyodl's own int8 input, is within one step of tinyodl's
    double-rounding kernel on at most 1% of its outputs (ONNX rounds the exact product)."""
    q = int8_model()
    pairs = _conv_inputs(q, q.quantize_input(mnist_test_images()[:100]))
    assert len(pairs) >= 10
    for layer, h in pairs:
        single = copy.deepcopy(q)  # a one-layer model whose input is this layer's input
        single.ops, single.input = [copy.deepcopy(layer)], layer.input
        proto = to_onnx_int8(single, (1, *h.shape[1:]))
        got = ort_session(proto).run(None, {"input": layer.input.dequantize(h)})[0]
        want = layer.forward(h)
        diff = got.astype(np.int64).reshape(want.shape) - want
        assert np.abs(diff).max() <= 1, layer.name
        assert np.mean(diff != 0) <= 0.01, layer.name


def test_int8_export_end_to_end_single_rounding():
    """End to end, onnxruntime agrees with tinyodl's single-rounding model (the rounding
    ONNX's exact product is closest to) within one step on at most 1% of the logits."""
    q = copy.deepcopy(int8_model()).set_rounding("single")
    diff, y, want = _int8_comparison(q, mnist_test_images())
    assert np.mean(diff != 0) <= 0.01
    assert np.abs(diff).max() <= 2
    assert (y.argmax(1) == want.argmax(1)).mean() >= 0.99


@pytest.mark.parametrize("mode", ["double", "single", "tflite"])
def test_exact_int8_export_is_bit_exact(mode):
    """Spelled out with integer operators, tinyodl's requantization runs bit-exactly in
    onnxruntime: rounding is the only difference of the QLinearConv export."""
    q = int8_model()
    q = tflite_compatible(q) if mode == "tflite" else copy.deepcopy(q).set_rounding(mode)
    xq = q.quantize_input(mnist_test_images()[:200])
    got = ort_session(to_onnx_int8_exact(q, (1, 1, 28, 28))).run(None, {"input_q": xq})[0]
    np.testing.assert_array_equal(got, q.forward_int(xq))


def test_int8_export_refuses_float_model():
    with pytest.raises(ExportError, match="QuantizedModel"):
        to_onnx_int8(float_model(), (1, 1, 28, 28))


def test_model_file_round_trip(tmp_path):
    model = float_model()
    path = tmp_path / "m.npz"
    save_model(path, model, (1, 1, 28, 28), note="test")
    loaded, meta = load_model(path)
    x = mnist_test_images()[:8]
    np.testing.assert_array_equal(loaded.forward(x, train=False), model.forward(x, train=False))
    assert meta["input_shape"] == [1, 1, 28, 28] and meta["note"] == "test"
