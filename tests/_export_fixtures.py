"""Shared objects of the chapter 13 tests: the shipped model, its int8 twin, test images."""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=1)
def float_model():
    from tinyodl.tasks import pretrained

    return pretrained("A")


@functools.lru_cache(maxsize=1)
def int8_model():
    from tinyodl.quantization import quantize_model
    from tinyodl.tasks import calibration_images

    return quantize_model(float_model(), calibration_images("A", 256))


@functools.lru_cache(maxsize=1)
def mnist_test_images() -> np.ndarray:
    """The whole shipped test split (1,000 images), float32 in [0, 1]."""
    from tinyodl.data import load_mnist, to_float

    images, _ = load_mnist("test")
    return to_float(images)


def ort_session(model_proto):
    ort = __import__("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(
        model_proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
