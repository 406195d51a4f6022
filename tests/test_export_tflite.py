"""Chapter 13: the TFLite flatbuffer, run by LiteRT (bit-exact), padding, the FC mode, C array."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess

import numpy as np
import pytest
from _export_fixtures import int8_model, mnist_test_images

from tinyodl import nn
from tinyodl.export import ExportError, tflite_compatible, to_c_array, to_tflite, write_c_array
from tinyodl.quantization import quantize_model

pytest.importorskip("flatbuffers")
pytest.importorskip("tflite")
litert = pytest.importorskip("ai_edge_litert.interpreter")


def run_litert(data: bytes, xq: np.ndarray, resolver: str = "BUILTIN_REF") -> np.ndarray:
    """Run the int8 NHWC model on int8 NCHW input ``xq`` with LiteRT's reference kernels."""
    kind = getattr(litert.OpResolverType, resolver)
    interp = litert.Interpreter(
        model_content=data, experimental_op_resolver_type=kind, num_threads=1
    )
    index = interp.get_input_details()[0]["index"]
    interp.resize_tensor_input(index, (len(xq), *np.transpose(xq[:1], (0, 2, 3, 1)).shape[1:]))
    interp.allocate_tensors()
    interp.set_tensor(index, np.ascontiguousarray(np.transpose(xq, (0, 2, 3, 1))))
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"])


def operator_names(data: bytes) -> list[str]:
    """Builtin operator of every operator in the file, read back with the schema."""
    import tflite

    model = tflite.Model.GetRootAsModel(data, 0)
    names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    graph = model.Subgraphs(0)
    codes = [
        model.OperatorCodes(graph.Operators(i).OpcodeIndex())
        for i in range(graph.OperatorsLength())
    ]
    return [names[max(c.BuiltinCode(), c.DeprecatedBuiltinCode())] for c in codes]


def test_tflite_bit_exact_with_litert_on_test_split():
    q = int8_model()
    data = to_tflite(q, (1, 1, 28, 28))
    assert data[4:8] == b"TFL3"
    twin = tflite_compatible(q)
    xq = twin.quantize_input(mnist_test_images())
    got = run_litert(data, xq)
    want = twin.forward_int(xq)
    assert got.dtype == np.int8 and got.shape == want.shape == (len(xq), 10)
    np.testing.assert_array_equal(got, want)
    # the stem conv (3x3, stride 2, padding 1 on 28x28) needs an explicit PAD
    ops = operator_names(data)
    assert ops[0] == "PAD" and ops[1] == "CONV_2D"


def test_fully_connected_float_mode_is_tflites():
    """TFLite's per-channel FULLY_CONNECTED requantizes in double: 'float' mode matches it,
    the fixed-point 'double' mode is off by one on some outputs (an FC-only model)."""
    rng = np.random.default_rng(0)
    model = nn.Sequential([nn.Flatten(), nn.Linear(64, 256, seed=1)]).eval()
    x = rng.random((512, 1, 8, 8), dtype=np.float32)
    q = quantize_model(model, x)
    data = to_tflite(q, (1, 1, 8, 8))
    xq = tflite_compatible(q).quantize_input(x)
    got = run_litert(data, xq)
    exact = tflite_compatible(q).set_rounding("double", linear="float").forward_int(xq)
    fixed = tflite_compatible(q).set_rounding("double", linear="double").forward_int(xq)
    np.testing.assert_array_equal(got, exact)
    assert 0 < np.count_nonzero(got != fixed) < 0.01 * got.size
    assert np.abs(got.astype(int) - fixed).max() == 1


def _small_int8(padding_stride):
    rng = np.random.default_rng(1)
    model = nn.Sequential(
        [
            nn.Conv2d(3, 8, 3, stride=padding_stride[1], padding=1, seed=2),
            nn.ReLU6(),
            nn.DepthwiseConv2d(8, 3, 1, 1, seed=3),
            nn.ReLU(),
            nn.GlobalAvgPool(),
            nn.Linear(8, 5, seed=4),
        ]
    ).eval()
    x = rng.random((64, 3, 12, 12), dtype=np.float32)
    return quantize_model(model, x), x


@pytest.mark.parametrize("pads", [(1, 1, 1, 1), (0, 1, 0, 1), (1, 0, 0, 1), (2, 1, 1, 0)])
def test_asymmetric_padding_runs_natively_and_matches_litert(pads, backend_name):
    q, x = _small_int8((1, 2))
    conv = q.ops[0]
    conv.padding = pads
    data = to_tflite(q, (1, 3, 12, 12))
    twin = tflite_compatible(q)
    xq = twin.quantize_input(x)
    np.testing.assert_array_equal(run_litert(data, xq), twin.forward_int(xq))
    ops = operator_names(data)
    # SAME padding of TFLite (bottom/right only for stride 2 on an even input) needs no PAD
    assert ("PAD" in ops) == (pads != (0, 1, 0, 1))


@pytest.mark.torch
def test_asymmetric_padding_backward_matches_torch(backend_name):
    torch = pytest.importorskip("torch")
    q, x = _small_int8((1, 2))
    conv = q.ops[0]
    conv.padding = (2, 1, 0, 1)
    xq = q.quantize_input(x[:4])
    y = conv.forward(xq, save=True)
    g = np.random.default_rng(5).normal(size=y.shape).astype(np.float32)
    dx = conv.backward(g)
    # oracle: the same linear map in float -- pad with 0 around (x - zp), conv, times M
    xt = torch.tensor(xq.astype(np.float64) - conv.input.zero_point, requires_grad=True)
    wt = torch.tensor(conv.weight.astype(np.float64), requires_grad=True)
    top, bottom, left, right = conv.pads
    acc = torch.nn.functional.conv2d(
        torch.nn.functional.pad(xt, (left, right, top, bottom)), wt, stride=conv.stride
    )
    mask = (y > conv.act_min) & (y < conv.act_max)
    upstream = torch.tensor(g * mask * conv.real_multiplier[None, :, None, None])
    acc.backward(upstream)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(conv.weight_grad, wt.grad.numpy(), rtol=1e-4, atol=1e-3)


@pytest.mark.torch
def test_pytorch_same_stride2_import_quantize_tflite_bit_exact():
    """PyTorch's "same" at stride 2 (ZeroPad2d((0, 1, 0, 1)) + an unpadded conv) -> ONNX ->
    from_onnx (native asymmetric convs) -> PTQ -> TFLite SAME without PAD -> LiteRT's
    reference kernels, bit for bit."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    import io
    import warnings

    from tinyodl.export import from_onnx
    from tinyodl.tasks import calibration_images

    t = torch.nn
    torch.manual_seed(0)
    module = t.Sequential(
        t.ZeroPad2d((0, 1, 0, 1)), t.Conv2d(1, 8, 3, stride=2), t.ReLU6(),
        t.ZeroPad2d((0, 1, 0, 1)), t.Conv2d(8, 8, 3, stride=2, groups=8), t.ReLU(),
        t.Conv2d(8, 16, 1), t.ReLU(), t.AdaptiveAvgPool2d(1), t.Flatten(), t.Linear(16, 10),
    ).eval()  # fmt: skip
    x = calibration_images("A", 64)
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.tensor(x[:1]),), f, dynamo=False, opset_version=18)
    imported = from_onnx(f.getvalue()).eval()
    pads = [getattr(layer, "padding", None) for _, layer in imported.named_layers()]
    assert pads[0] == (0, 1, 0, 1) and (0, 1, 0, 1) in pads[1:]
    with torch.no_grad():
        want = module(torch.tensor(x)).numpy()
    np.testing.assert_allclose(imported.forward(x, train=False), want, rtol=1e-4, atol=1e-5)
    q = quantize_model(imported, x)
    convs = [op for op in q.ops if getattr(op, "kind", None) in ("conv", "depthwise")]
    assert [c.padding for c in convs[:2]] == [(0, 1, 0, 1)] * 2
    data = to_tflite(q, (1, 1, 28, 28))
    assert "PAD" not in operator_names(data)  # TFLite's SAME is exactly this padding
    twin = tflite_compatible(q)
    xq = twin.quantize_input(x)
    np.testing.assert_array_equal(run_litert(data, xq), twin.forward_int(xq))


def test_float_rounding_refused_for_convolutions():
    q, _ = _small_int8((1, 2))
    with pytest.raises(ValueError, match="fully connected"):
        dataclasses.replace(q.ops[0], rounding="float")


def test_to_tflite_refuses_a_float_model():
    with pytest.raises(ExportError, match="QuantizedModel"):
        to_tflite(nn.Sequential([nn.Flatten()]), (1, 1, 2, 2))


def test_c_array_round_trip(tmp_path):
    data = bytes(range(256)) * 3 + b"\x01"
    header, source = to_c_array(data, "g_model")
    assert "extern const unsigned char g_model[];" in header
    body = source.split("{", 1)[1].split("}", 1)[0]
    parsed = bytes(int(tok, 16) for tok in body.replace(",", " ").split())
    assert parsed == data
    assert f"g_model_len = {len(data)};" in source
    with pytest.raises(ValueError, match="C identifier"):
        to_c_array(data, "1model")


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_c_array_compiles_and_holds_the_model(tmp_path):
    data = to_tflite(int8_model(), (1, 1, 28, 28))
    h, cc = write_c_array(data, tmp_path / "mnist-model.cc")
    main = tmp_path / "main.cc"
    main.write_text(
        f'#include "{h.name}"\n#include <cstdio>\n#include <cstdint>\n'
        "int main() { uint32_t s = 0; for (unsigned i = 0; i < mnist_model_len; ++i) "
        "s = s * 31u + mnist_model[i]; "
        'std::printf("%u %u %d\\n", mnist_model_len, s, (int)(((uintptr_t)mnist_model) % 16)); }\n'
    )
    exe = tmp_path / "main"
    subprocess.run(["g++", "-std=c++11", "-O0", str(main), str(cc), "-o", str(exe)], check=True)
    length, checksum, misalign = subprocess.run(
        [str(exe)], check=True, capture_output=True, text=True
    ).stdout.split()
    want = 0
    for b in data:
        want = (want * 31 + b) % 2**32
    assert (int(length), int(checksum), int(misalign)) == (len(data), want, 0)
