"""The models used throughout the course, as :class:`tinyodl.nn.Sequential` (chapter 00).

Every builder takes ``seed`` (an int or a numpy Generator) and returns a fresh model whose
children are ``features`` (the body) and ``classifier`` (the head), so that
``model["classifier"]`` is what transfer learning fine-tunes and federated split models
share.

==============  ===============================================  =====================
builder         architecture                                     parameters
==============  ===============================================  =====================
mlp_2nn         784-200-200-10 ReLU (McMahan et al. 2017 "2NN")  199,210
cnn_mcmahan     conv5x5x32-pool-conv5x5x64-pool-fc512-fc10       1,663,370
lenet5          LeNet-5 (LeCun et al. 1998) for 28x28, ReLU+max  61,706
mcunet_tiny     stem + 7 inverted residual blocks + GAP + fc     99,658 (28x28, 1 ch)
==============  ===============================================  =====================
"""

from __future__ import annotations

import numpy as np

from tinyodl.nn import (
    BatchNorm2d,
    Conv2d,
    Flatten,
    GlobalAvgPool,
    InvertedResidual,
    Linear,
    MaxPool2d,
    ReLU,
    ReLU6,
    Sequential,
)
from tinyodl.nn.utils import as_generator

SeedLike = int | np.random.Generator


def _seeds(seed: SeedLike):
    """An endless supply of int seeds for the layers of one model, drawn from ``seed``."""
    rng = as_generator(seed)
    while True:
        yield int(rng.integers(2**31))


def mlp_2nn(seed: SeedLike = 0, num_classes: int = 10) -> Sequential:
    """The "2NN" of FedAvg (McMahan et al. 2017): 784-200-200-10 with ReLU.

    Input (N, 1, 28, 28) or (N, 784); output logits (N, num_classes). 199,210 parameters.
    """
    s = _seeds(seed)
    features = Sequential(
        [Flatten(), Linear(784, 200, seed=next(s)), ReLU(), Linear(200, 200, seed=next(s)), ReLU()]
    )
    classifier = Sequential([Linear(200, num_classes, seed=next(s))])
    return Sequential({"features": features, "classifier": classifier})


def cnn_mcmahan(seed: SeedLike = 0, in_channels: int = 1, num_classes: int = 10) -> Sequential:
    """The FedAvg CNN (McMahan et al. 2017) for 28x28 inputs.

    conv 5x5x32 (same) - ReLU - maxpool 2 - conv 5x5x64 (same) - ReLU - maxpool 2 -
    fc 512 - ReLU - fc 10. 1,663,370 parameters for one input channel.
    """
    s = _seeds(seed)
    features = Sequential(
        [
            Conv2d(in_channels, 32, 5, padding=2, seed=next(s)),
            ReLU(),
            MaxPool2d(2),
            Conv2d(32, 64, 5, padding=2, seed=next(s)),
            ReLU(),
            MaxPool2d(2),
            Flatten(),
        ]
    )
    classifier = Sequential(
        [Linear(7 * 7 * 64, 512, seed=next(s)), ReLU(), Linear(512, num_classes, seed=next(s))]
    )
    return Sequential({"features": features, "classifier": classifier})


def lenet5(seed: SeedLike = 0, in_channels: int = 1, num_classes: int = 10) -> Sequential:
    """LeNet-5 (LeCun et al. 1998) for 28x28 inputs, with ReLU and max pooling.

    conv 5x5x6 (padding 2, so C1 sees 32x32 as in the paper) - pool - conv 5x5x16 - pool -
    fc 120 - fc 84 - fc 10. 61,706 parameters for one input channel.
    """
    s = _seeds(seed)
    features = Sequential(
        [
            Conv2d(in_channels, 6, 5, padding=2, seed=next(s)),
            ReLU(),
            MaxPool2d(2),
            Conv2d(6, 16, 5, seed=next(s)),
            ReLU(),
            MaxPool2d(2),
            Flatten(),
        ]
    )
    classifier = Sequential(
        [
            Linear(16 * 5 * 5, 120, seed=next(s)),
            ReLU(),
            Linear(120, 84, seed=next(s)),
            ReLU(),
            Linear(84, num_classes, seed=next(s)),
        ]
    )
    return Sequential({"features": features, "classifier": classifier})


#: (expand_ratio, out_channels, stride) of the inverted residual blocks of mcunet_tiny.
MCUNET_TINY_BLOCKS = (
    (1, 16, 1),
    (4, 24, 2),
    (4, 24, 1),
    (4, 40, 2),
    (4, 40, 1),
    (4, 64, 1),
    (4, 64, 1),
)


def mcunet_tiny(
    seed: SeedLike = 0, input_size: int = 28, in_channels: int = 1, num_classes: int = 10
) -> Sequential:
    """A small MCUNet/MobileNetV2-style network for 28x28 (MNIST) or 32x32 (CIFAR) inputs.

    stem conv 3x3 stride 2 (16 ch) + BN + ReLU6; the inverted residual blocks of
    :data:`MCUNET_TINY_BLOCKS`; 1x1 conv to 160 ch + BN + ReLU6; global average pool; linear.

    Parameters
    ----------
    seed : int or Generator
    input_size : {28, 32}
        Height and width of the input (any size >= 8 works; 28 and 32 are tested).
    in_channels : int, default 1
    num_classes : int, default 10
    """
    if input_size < 8:
        raise ValueError(f"mcunet_tiny: input_size must be at least 8, got {input_size}")
    s = _seeds(seed)
    layers: list = [
        Conv2d(in_channels, 16, 3, stride=2, padding=1, bias=False, seed=next(s)),
        BatchNorm2d(16),
        ReLU6(),
    ]
    channels = 16
    for expand, out, stride in MCUNET_TINY_BLOCKS:
        layers.append(InvertedResidual(channels, out, stride, expand, seed=next(s)))
        channels = out
    layers += [
        Conv2d(channels, 160, 1, bias=False, seed=next(s)),
        BatchNorm2d(160),
        ReLU6(),
        GlobalAvgPool(),
    ]
    classifier = Sequential([Linear(160, num_classes, seed=next(s))])
    return Sequential({"features": Sequential(layers), "classifier": classifier})
