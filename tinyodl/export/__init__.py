"""Chapter 13: deployment -- ONNX and TFLite out, ONNX in, training artifacts, differences.

The ONNX Runtime on-device-training story in tinyodl's terms: take an inference model,
train it on the device, hand back an inference-ready model -- and for a federated round only
the difference.

===============================================  =============================================
:func:`to_onnx`                                  float model -> ONNX (opset :data:`OPSET`)
:func:`to_onnx_int8`                             int8 model -> ONNX ``QLinearConv`` (ONNX's
                                                 rounding: see the module)
:func:`to_onnx_int8_exact`                       int8 model -> ONNX integer operators,
                                                 bit-exact with ``forward_int`` (any rounding)
:func:`to_tflite`, :func:`tflite_compatible`     int8 model -> TFLite flatbuffer (no
                                                 TensorFlow; bit-exact with LiteRT's reference
                                                 kernels)
:func:`to_c_array`, :func:`write_c_array`        the ``.tflite`` bytes as a C array (``.h`` +
                                                 ``.cc``) for TFLite Micro
:func:`save_model`, :func:`load_model`           a float model in one ``.npz`` (spec + state)
:func:`from_onnx`                                ONNX -> a trainable ``nn.Sequential``
:func:`save_training_checkpoint`,                training artifact: ``.npz`` + versioned JSON
:func:`load_training_checkpoint`                 manifest with checksums (atomic, no pickle)
:func:`compute_diff`, :func:`compress`,          model differences for federated rounds
:func:`apply_diff`                               (exact uncompressed; int8 / top-k)
``tinyodl export``                               the command line (:mod:`tinyodl.export.cli`)
===============================================  =============================================

``onnx``, ``onnxruntime``, ``flatbuffers`` and ``tflite`` are the optional extra
``deploy`` (``pip install 'tinyodl[deploy]'``); they are imported only when used.
"""

from tinyodl.export._onnx_common import OPSET, ExportError
from tinyodl.export.artifacts import (
    TrainingCheckpoint,
    load_training_checkpoint,
    save_training_checkpoint,
)
from tinyodl.export.c_array import to_c_array, write_c_array
from tinyodl.export.diff import (
    CompressedDiff,
    ModelDiff,
    apply_diff,
    compress,
    compute_diff,
    decompress,
)
from tinyodl.export.layers import Pad2d
from tinyodl.export.model_file import load_model, save_model
from tinyodl.export.onnx_exact import to_onnx_int8_exact
from tinyodl.export.onnx_float import to_onnx
from tinyodl.export.onnx_import import UnsupportedOperatorError, from_onnx
from tinyodl.export.onnx_int8 import to_onnx_int8
from tinyodl.export.tflite import tflite_compatible, to_tflite

__all__ = [
    "OPSET",
    "CompressedDiff",
    "Pad2d",
    "ExportError",
    "ModelDiff",
    "TrainingCheckpoint",
    "UnsupportedOperatorError",
    "apply_diff",
    "compress",
    "compute_diff",
    "decompress",
    "from_onnx",
    "load_training_checkpoint",
    "save_training_checkpoint",
    "load_model",
    "save_model",
    "tflite_compatible",
    "to_c_array",
    "to_onnx",
    "to_onnx_int8",
    "to_onnx_int8_exact",
    "to_tflite",
    "write_c_array",
]
