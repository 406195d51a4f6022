"""Chapter 13: ONNX import -- from tinyodl's and PyTorch's exporters, errors, round trip."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from _export_fixtures import float_model, ort_session

from tinyodl import nn
from tinyodl.export import Pad2d, to_onnx
from tinyodl.export.onnx_import import UnsupportedOperatorError, from_onnx

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _images(n=16, shape=(1, 28, 28), seed=0):
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def test_import_of_tinyodl_export_is_exact_and_trainable():
    model = float_model()
    imported = from_onnx(to_onnx(model, (1, 1, 28, 28)))
    x = _images()
    np.testing.assert_array_equal(imported.forward(x, train=False), model.forward(x, train=False))
    assert imported.training
    params = dict(imported.named_parameters())
    assert len(params) == len(dict(model.named_parameters()))
    assert all(p.trainable for p in params.values())
    kinds = {type(layer).__name__ for _, layer in imported.named_layers()}
    assert {"BatchNorm2d", "DepthwiseConv2d", "Add", "GlobalAvgPool", "Linear"} <= kinds


def _torch_export(module, x, dynamo):
    torch = pytest.importorskip("torch")
    if dynamo:
        pytest.importorskip("onnxscript")
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.tensor(x),), f, dynamo=dynamo, opset_version=18)
    return f.getvalue()


def _torch_mcunet():
    torch = pytest.importorskip("torch")
    import torch_models

    from tinyodl.nn.torch_interop import torch_state_dict

    module = torch_models.mcunet_tiny()
    module.load_state_dict(torch_state_dict(float_model()))
    return module.eval(), torch


@pytest.mark.torch
@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_import_of_pytorch_export(dynamo):
    module, torch = _torch_mcunet()
    x = _images()
    imported = from_onnx(_torch_export(module, x[:1], dynamo))
    with torch.no_grad():
        want = module(torch.tensor(x)).numpy()
    got = imported.forward(x, train=False)
    assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want))


@pytest.mark.torch
def test_import_of_pytorch_pools_and_matmul():
    torch = pytest.importorskip("torch")
    t = torch.nn
    torch.manual_seed(0)
    module = t.Sequential(
        t.Conv2d(1, 3, 3, padding=1),
        t.ReLU(),
        t.MaxPool2d(2, ceil_mode=True),
        t.AvgPool2d(3, 1, 1, count_include_pad=False),
        t.Flatten(),
        t.Linear(3 * 5 * 5, 7),
    ).eval()
    x = _images(4, (1, 9, 9))
    imported = from_onnx(_torch_export(module, x[:1], dynamo=False))
    with torch.no_grad():
        want = module(torch.tensor(x)).numpy()
    np.testing.assert_allclose(imported.forward(x, train=False), want, rtol=1e-5, atol=1e-6)


def _graph(node, inits=(), in_shape=(1, 1, 4, 4), out_shape=None):
    h = onnx.helper
    inp = h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(in_shape))
    out = h.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, out_shape)
    graph = h.make_graph([node], "g", [inp], [out], list(inits))
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 18)])


def test_unsupported_operator_names_op_and_node():
    node = onnx.helper.make_node("Sigmoid", ["x"], ["y"], name="gate_7")
    with pytest.raises(UnsupportedOperatorError, match=r"Sigmoid \(node 'gate_7'\)"):
        from_onnx(_graph(node))


def test_asymmetric_conv_pads_stay_native():
    """ONNX pads (0, 0, 1, 1): TFLite's SAME for a 3x3 stride-2 conv on an even input."""
    rng = np.random.default_rng(0)
    w = onnx.numpy_helper.from_array(rng.standard_normal((2, 1, 3, 3)).astype(np.float32), "w")
    node = onnx.helper.make_node(
        "Conv", ["x", "w"], ["y"], name="same_conv", pads=[0, 0, 1, 1], strides=[2, 2]
    )
    proto = _graph(node, [w], in_shape=("N", 1, 6, 6))
    imported = from_onnx(proto)
    assert len(imported) == 1 and isinstance(imported[0], nn.Conv2d)
    assert imported[0].padding == (0, 1, 0, 1)  # (top, bottom, left, right)
    x = _images(3, (1, 6, 6))
    want = ort_session(proto).run(None, {"x": x})[0]
    np.testing.assert_allclose(imported.forward(x, train=False), want, rtol=1e-5, atol=1e-6)
    # and back out: one Conv with the same pads, same function
    again_proto = to_onnx(imported, (1, 1, 6, 6))
    assert [n.op_type for n in again_proto.graph.node if n.op_type != "Identity"] == ["Conv"]
    again = ort_session(again_proto).run(None, {"input": x})[0]
    np.testing.assert_allclose(again, want, rtol=1e-5, atol=1e-6)
    errors = nn.check_layer_gradients(imported[0], x)
    assert max(errors.values()) < 1e-6


def test_pad_node_folds_into_the_next_conv_or_becomes_pad2d():
    rng = np.random.default_rng(1)
    h = onnx.helper
    w = onnx.numpy_helper.from_array(rng.standard_normal((2, 1, 3, 3)).astype(np.float32), "w")
    pads = onnx.numpy_helper.from_array(np.array([0, 0, 1, 0, 0, 0, 2, 1], np.int64), "pads")
    pad = h.make_node("Pad", ["x", "pads"], ["p"], name="pad")
    conv = h.make_node("Conv", ["p", "w"], ["y"], name="conv", pads=[1, 0, 1, 0], strides=[2, 2])
    inp = h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 1, 7, 6])
    out = h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    graph = h.make_graph([pad, conv], "g", [inp], [out], [w, pads])
    proto = h.make_model(graph, opset_imports=[h.make_opsetid("", 18)])
    imported = from_onnx(proto)
    assert len(imported) == 1 and imported[0].padding == (2, 3, 0, 1)
    x = _images(2, (1, 7, 6))
    want = ort_session(proto).run(None, {"x": x})[0]
    np.testing.assert_allclose(imported.forward(x, train=False), want, rtol=1e-5, atol=1e-6)
    # a Pad before a pool stays a Pad2d layer
    pool = h.make_node("MaxPool", ["p"], ["y"], name="pool", kernel_shape=[2, 2])
    graph = h.make_graph([pad, pool], "g", [inp], [out], [pads])
    proto = h.make_model(graph, opset_imports=[h.make_opsetid("", 18)])
    imported = from_onnx(proto)
    assert isinstance(imported[0], Pad2d) and imported[0].pads == (1, 2, 0, 1)
    want = ort_session(proto).run(None, {"x": x})[0]
    np.testing.assert_allclose(imported.forward(x, train=False), want, rtol=1e-6)
    errors = nn.check_layer_gradients(Pad2d((2, 0, 1, 3)), x)
    assert max(errors.values()) < 1e-7
    reflect = h.make_node("Pad", ["x", "pads"], ["y"], name="mirror", mode="reflect")
    graph = h.make_graph([reflect], "g", [inp], [out], [pads])
    with pytest.raises(UnsupportedOperatorError, match="mirror.*constant zero"):
        from_onnx(h.make_model(graph, opset_imports=[h.make_opsetid("", 18)]))


def test_unsupported_attributes_name_the_node():
    pool = onnx.helper.make_node(
        "MaxPool", ["x"], ["y"], name="odd_pool", kernel_shape=[2, 2], pads=[0, 0, 1, 1]
    )
    with pytest.raises(UnsupportedOperatorError, match="odd_pool.*not symmetric"):
        from_onnx(_graph(pool))
    lo = onnx.numpy_helper.from_array(np.float32(-1), "lo")
    hi = onnx.numpy_helper.from_array(np.float32(1), "hi")
    clip = onnx.helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="hardtanh")
    with pytest.raises(UnsupportedOperatorError, match="hardtanh.*neither ReLU"):
        from_onnx(_graph(clip, [lo, hi]))


@pytest.mark.torch
@pytest.mark.slow
def test_round_trip_import_finetune_export(tmp_path):
    """PyTorch export -> import -> fine-tune on task A -> export -> onnxruntime."""
    from tinyodl.tasks import load_task
    from tinyodl.train import fit

    module, _ = _torch_mcunet()
    # the TorchScript exporter (1 s); the dynamo exporter is tested above (30 s)
    imported = from_onnx(_torch_export(module, _images(1), dynamo=False))
    task = load_task("A")
    before = task.accuracy(imported)
    head = imported.names()[-1]
    assert isinstance(imported[head], nn.Linear)
    imported.replace(head, nn.Linear(160, 10, seed=0))  # new classes need a new head
    opt = nn.SGD(imported, lr=0.01, momentum=0.9)
    fit(imported, opt, task.x_train, task.y_train, epochs=2, batch_size=32, seed=0, progress=False)
    after = task.accuracy(imported)
    assert before < 0.05 and after > 0.8
    path = tmp_path / "finetuned.onnx"
    to_onnx(imported, (1, 1, 28, 28), path)
    x = task.x_test[:200]
    got = ort_session(onnx.load(str(path))).run(None, {"input": x})[0]
    want = imported.forward(x, train=False)
    assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want))
