"""Chapter 03: int8 quantization -- PTQ, integer-only inference, fake-quant QAT.

What the literature says (Jacob et al., CVPR 2018; TFLite's integer kernels; GUIDE section
3): a trained float model becomes an integer one by folding batchnorm into the convolutions,
measuring the range of every activation on a few hundred images (calibration), and storing

* weights as int8 in [-127, 127] with one scale per output channel, ``s_W = max|W_c| / 127``;
* activations as int8 with one scale and zero point per tensor, ``real = s (q - zp)``;
* biases as int32 with scale ``s_x s_W``, so that a layer is ``acc = sum W_q (x_q - zp_x) +
  b_q`` in int32, rescaled by ``M = s_x s_W / s_y`` in fixed point (``M0 * 2^shift``).

Where it is in tinyodl:

===========================================  ===============================================
:func:`quantize_model`                       PTQ: :func:`fold_model`, :func:`plan_units`,
                                             :func:`calibrate` (min/max or percentile),
                                             conversion
:class:`QuantizedModel`                      the int8 model; ``forward_int`` is integer-only
                                             through :mod:`tinyodl.ops`; ``describe``,
                                             ``nbytes``
:func:`to_fake_quant` / :func:`to_quantized`  the float-simulated twin (fake quantization,
                                             straight-through estimator) for QAT, and back
:mod:`tinyodl.qas`                           training the int8 graph itself, with QAS
===========================================  ===============================================

The notebook ``chapters/03_quantization.py`` measures the accuracy of the int8 model against
the float one on the MNIST test split, the bytes of both, the twin's agreement with the
integer path, and then trains the int8 graph (``tinyodl bench qas``).
"""

from tinyodl.quantization.fake_quant import (
    FakeQuantAdd,
    FakeQuantConv,
    FakeQuantGlobalAvgPool,
    FakeQuantInput,
    fake_quantize,
    to_fake_quant,
    to_quantized,
)
from tinyodl.quantization.ptq import (
    CALIBRATION_METHODS,
    Unit,
    calibrate,
    convert_layer,
    float_nbytes,
    fold_model,
    plan_units,
    quantize_model,
    run_units,
)
from tinyodl.quantization.qmodel import (
    QAdd,
    QConv,
    QFlatten,
    QGlobalAvgPool,
    QParams,
    QResidual,
    QuantizedModel,
)

__all__ = [
    "CALIBRATION_METHODS",
    "FakeQuantAdd",
    "FakeQuantConv",
    "FakeQuantGlobalAvgPool",
    "FakeQuantInput",
    "QAdd",
    "QConv",
    "QFlatten",
    "QGlobalAvgPool",
    "QParams",
    "QResidual",
    "QuantizedModel",
    "Unit",
    "calibrate",
    "convert_layer",
    "fake_quantize",
    "float_nbytes",
    "fold_model",
    "plan_units",
    "quantize_model",
    "run_units",
    "to_fake_quant",
    "to_quantized",
]
