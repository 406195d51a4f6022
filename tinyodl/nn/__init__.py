"""tinyodl.nn: the numpy training core (chapter 00, foundations).

Layers are forward/backward pairs (:mod:`tinyodl.nn.functional`) wrapped in small classes
with parameters, buffers and the tensors they save for backward; :class:`Sequential`
composes them; losses return ``(loss, gradient)``; optimizers update parameters in place.
The contract with the rest of tinyodl is in ``docs/architecture.md`` ("Training core").

>>> import numpy as np
>>> from tinyodl import nn
>>> model = nn.Sequential([nn.Flatten(), nn.Linear(4, 3, seed=0)])
>>> logits = model.forward(np.ones((2, 1, 2, 2), dtype=np.float32))
>>> loss, dlogits = nn.softmax_cross_entropy(logits, np.array([0, 2]))
>>> dx = model.backward(dlogits)
>>> nn.SGD(model, lr=0.1).step()
"""

from tinyodl.nn import functional, init, torch_interop
from tinyodl.nn.blocks import Add, InvertedResidual
from tinyodl.nn.container import Sequential, build_layer, layer_spec
from tinyodl.nn.conv_layers import AvgPool2d, Conv2d, DepthwiseConv2d, GlobalAvgPool, MaxPool2d
from tinyodl.nn.errors import (
    BackwardError,
    DtypeWarning,
    LayerDtypeError,
    LayerNotFoundError,
    LayerShapeError,
    PerExampleGradientError,
    StateDictError,
)
from tinyodl.nn.gradcheck import check_layer_gradients, numerical_gradient, rel_error
from tinyodl.nn.layer import LAYER_TYPES, Layer
from tinyodl.nn.layers import Dropout, Flatten, Identity, Linear, ReLU, ReLU6, Softmax
from tinyodl.nn.losses import accuracy, log_softmax, mse_loss, softmax, softmax_cross_entropy
from tinyodl.nn.norm import BatchNorm1d, BatchNorm2d, fold_batchnorm
from tinyodl.nn.optim import SGD, Adam, AdamW, Optimizer
from tinyodl.nn.parameter import Parameter
from tinyodl.nn.state import parameters_to_vector, vector_to_parameters
from tinyodl.nn.torch_interop import load_torch_state_dict, torch_state_dict
from tinyodl.nn.upsample import BilinearUpsample

__all__ = [
    "LAYER_TYPES",
    "Adam",
    "AdamW",
    "Add",
    "AvgPool2d",
    "BackwardError",
    "BatchNorm1d",
    "BatchNorm2d",
    "BilinearUpsample",
    "Conv2d",
    "DepthwiseConv2d",
    "DtypeWarning",
    "Dropout",
    "Flatten",
    "GlobalAvgPool",
    "Identity",
    "InvertedResidual",
    "Layer",
    "LayerDtypeError",
    "LayerNotFoundError",
    "LayerShapeError",
    "Linear",
    "MaxPool2d",
    "Optimizer",
    "Parameter",
    "PerExampleGradientError",
    "ReLU",
    "ReLU6",
    "SGD",
    "Sequential",
    "Softmax",
    "StateDictError",
    "accuracy",
    "build_layer",
    "check_layer_gradients",
    "fold_batchnorm",
    "functional",
    "init",
    "layer_spec",
    "load_torch_state_dict",
    "log_softmax",
    "mse_loss",
    "numerical_gradient",
    "parameters_to_vector",
    "rel_error",
    "softmax",
    "softmax_cross_entropy",
    "torch_interop",
    "torch_state_dict",
    "vector_to_parameters",
]
