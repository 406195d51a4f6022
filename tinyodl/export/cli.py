"""``tinyodl export MODEL.npz --format onnx|onnx-int8|tflite|c-array --out FILE``.

The arguments are declared in :mod:`tinyodl.cli` (so ``tinyodl --help`` imports nothing).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def _input_shape(text: str | None, meta: dict) -> tuple[int, ...]:
    if text is not None:
        try:
            dims = tuple(int(v) for v in text.split(","))
        except ValueError:
            dims = ()
        if len(dims) != 3 or min(dims) < 1:
            raise ValueError(f"--input-shape must be C,H,W (positive ints), got {text!r}")
        return (1, *dims)
    if meta.get("input_shape"):
        return (1, *(int(d) for d in meta["input_shape"][1:]))
    return (1, 1, 28, 28)


def _quantize(model, shape, n: int, seed: int, fmt: str):
    from tinyodl.data import load_mnist, to_float
    from tinyodl.quantization import quantize_model

    if shape[1:] != (1, 28, 28):
        raise ValueError(
            f"--format {fmt}: calibration uses the shipped MNIST images (1, 28, 28); the model "
            f"takes {shape[1:]} -- quantize it in Python (tinyodl.quantization.quantize_model) "
            "and call tinyodl.export.to_tflite / to_onnx_int8"
        )
    images, _ = load_mnist("train")
    if not 0 < n <= len(images):
        raise ValueError(f"--calibration must be in 1..{len(images)}, got {n}")
    keep = np.sort(np.random.default_rng(seed).choice(len(images), size=n, replace=False))
    try:
        return quantize_model(model, to_float(images[keep]))
    except (ValueError, TypeError, NotImplementedError) as err:
        raise ValueError(f"--format {fmt}: this model cannot be quantized to int8: {err}") from err


def export_main(args: argparse.Namespace) -> int:
    """Run ``tinyodl export``; user errors raise ValueError/OSError (printed by the CLI)."""
    from tinyodl.export import (
        ExportError,
        load_model,
        to_onnx,
        to_onnx_int8,
        to_tflite,
        write_c_array,
    )

    if not Path(args.model).is_file():
        raise FileNotFoundError(f"model file {args.model} does not exist")
    model, meta = load_model(args.model)
    shape = _input_shape(args.input_shape, meta)
    out = Path(args.out)
    try:
        if args.format == "onnx":
            to_onnx(model, shape, out)
            written = [out]
        else:
            qmodel = _quantize(model, shape, args.calibration, args.seed, args.format)
            if args.format == "onnx-int8":
                to_onnx_int8(qmodel, shape, out)
                written = [out]
            elif args.format == "tflite":
                to_tflite(qmodel, shape, out)
                written = [out]
            else:
                written = list(write_c_array(to_tflite(qmodel, shape), out))
    except ExportError as err:
        raise ValueError(f"--format {args.format}: {err}") from err
    for path in written:
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0
