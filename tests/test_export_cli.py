"""``tinyodl export``: every format, and one-line errors for what a format cannot hold."""

from __future__ import annotations

import numpy as np
import pytest

from tinyodl import nn
from tinyodl.checkpoint import save_checkpoint
from tinyodl.cli import main
from tinyodl.export import save_model
from tinyodl.tasks import pretrained_path

pytest.importorskip("onnx")
pytest.importorskip("tflite")


@pytest.mark.parametrize(
    "fmt, out, files",
    [
        ("onnx", "m.onnx", ["m.onnx"]),
        ("onnx-int8", "m8.onnx", ["m8.onnx"]),
        ("tflite", "m.tflite", ["m.tflite"]),
        ("c-array", "model-a.cc", ["model-a.h", "model-a.cc"]),
    ],
)
def test_export_each_format(tmp_path, capsys, fmt, out, files):
    args = [str(pretrained_path("A")), "--format", fmt, "--out", str(tmp_path / out)]
    assert main(["export", *args, "--calibration", "64"]) == 0
    printed = capsys.readouterr().out
    for name in files:
        size = (tmp_path / name).stat().st_size
        assert f"wrote {tmp_path / name} ({size:,} bytes)" in printed
    if fmt == "onnx":
        onnx = pytest.importorskip("onnx")
        onnx.checker.check_model(str(tmp_path / out))
    if fmt == "c-array":
        assert "model_a_len" in (tmp_path / "model-a.cc").read_text()


def _error(capsys, argv) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("tinyodl: error: ") and "\n" not in err
    return err


def test_export_errors(tmp_path, capsys):
    model_path = str(pretrained_path("A"))
    err = _error(capsys, ["export", str(tmp_path / "no.npz"), "--format", "onnx", "--out", "x"])
    assert "no.npz" in err and "does not exist" in err
    out = str(tmp_path / "no-folder" / "m.onnx")
    assert "no-folder" in _error(capsys, ["export", model_path, "--format", "onnx", "--out", out])
    bad_shape = ["--input-shape", "1,28"]
    err = _error(capsys, ["export", model_path, "--format", "onnx", "--out", "x", *bad_shape])
    assert "C,H,W" in err
    # a file that is a checkpoint but no model
    plain = tmp_path / "plain.npz"
    save_checkpoint(plain, {"w": np.zeros(3)}, {"step": 1})
    err = _error(capsys, ["export", str(plain), "--format", "onnx", "--out", "x"])
    assert "plain.npz" in err and "not a model file" in err


def test_export_names_the_layer_a_format_cannot_hold(tmp_path, capsys):
    model = nn.Sequential({"up": nn.BilinearUpsample((4, 4)), "flat": nn.Flatten()})
    path = tmp_path / "up.npz"
    save_model(path, model, (1, 1, 2, 2))
    err = _error(capsys, ["export", str(path), "--format", "onnx", "--out", "x.onnx"])
    assert "'up'" in err and "BilinearUpsample" in err
    # max pooling has no int8 version in tinyodl's quantizer
    pool = nn.Sequential(
        {"conv": nn.Conv2d(1, 2, 3, seed=0), "pool": nn.MaxPool2d(2), "flat": nn.Flatten()}
    )
    save_model(tmp_path / "pool.npz", pool, (1, 1, 28, 28))
    argv = ["export", str(tmp_path / "pool.npz"), "--format", "tflite", "--out", "x.tflite"]
    err = _error(capsys, argv)
    assert "--format tflite" in err and "MaxPool2d" in err
