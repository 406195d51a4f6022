"""The deep chains chapter 06 measures: equal layers, and a plain deep CNN for MNIST.

Checkpointing pays off on *deep* networks, where the activations of many layers pile up.
The course models of :mod:`tinyodl.models` are shallow, so the chapter builds two chains:

* :func:`equal_linear_chain` -- ``n`` identical ``Linear(width, width)`` layers (optionally
  each followed by a ReLU): the textbook setting of Chen et al. (2016), where every layer
  keeps exactly one activation of the same size and "activations alive" is a count;
* :func:`deep_cnn` -- a stem, ``depth`` identical conv 3x3 + batchnorm + ReLU (+ dropout)
  blocks and a global-average-pool classifier, for 28x28 images: a real network with the
  layers whose recomputation needs care (batchnorm statistics, dropout masks).
"""

from __future__ import annotations

from tinyodl.nn import (
    BatchNorm2d,
    Conv2d,
    Dropout,
    GlobalAvgPool,
    Linear,
    ReLU,
    Sequential,
)
from tinyodl.nn.utils import SeedLike, as_generator

__all__ = ["deep_cnn", "equal_linear_chain"]


def _seeds(seed: SeedLike):
    rng = as_generator(seed)
    while True:
        yield int(rng.integers(2**31))


def equal_linear_chain(
    n: int = 16, width: int = 64, relu: bool = False, seed: SeedLike = 0
) -> Sequential:
    """``n`` links ``Linear(width, width)`` (``Sequential([Linear, ReLU])`` with ``relu``).

    Input and output (N, width). Without ReLU every link keeps exactly its input: one
    activation of ``N * width * 4`` bytes, the unit in which chapter 06 counts.
    """
    if n < 1 or width < 1:
        raise ValueError(f"equal_linear_chain: need n >= 1 and width >= 1, got {n}, {width}")
    s = _seeds(seed)
    if relu:
        links = [Sequential([Linear(width, width, seed=next(s)), ReLU()]) for _ in range(n)]
        return Sequential(links)
    return Sequential([Linear(width, width, seed=next(s)) for _ in range(n)])


def deep_cnn(
    depth: int = 16,
    channels: int = 16,
    dropout: float = 0.0,
    seed: SeedLike = 0,
    in_channels: int = 1,
    num_classes: int = 10,
) -> Sequential:
    """A plain deep CNN as one flat chain of ``depth + 3`` links.

    ``stem``: conv 3x3 stride 2 (28x28 -> 14x14) + BN + ReLU; ``block0`` ... ``block{depth-1}``:
    conv 3x3 (``channels`` -> ``channels``, same padding) + BN + ReLU (+ ``Dropout(dropout)``);
    ``pool``: global average pool; ``classifier``: ``Linear(channels, num_classes)``.

    Every block keeps the same activations (conv input, ``x_hat``, ReLU mask, dropout mask),
    so the chain is deep and even, the setting where sqrt(n) checkpointing shines.
    """
    if depth < 1:
        raise ValueError(f"deep_cnn: depth must be >= 1, got {depth}")
    s = _seeds(seed)
    c = int(channels)
    links: dict = {
        "stem": Sequential(
            [Conv2d(in_channels, c, 3, stride=2, padding=1, seed=next(s)), BatchNorm2d(c), ReLU()]
        )
    }
    for i in range(depth):
        block = [Conv2d(c, c, 3, padding=1, bias=False, seed=next(s)), BatchNorm2d(c), ReLU()]
        if dropout > 0:
            block.append(Dropout(dropout, seed=next(s)))
        links[f"block{i}"] = Sequential(block)
    links["pool"] = GlobalAvgPool()
    links["classifier"] = Linear(c, num_classes, seed=next(s))
    return Sequential(links)
