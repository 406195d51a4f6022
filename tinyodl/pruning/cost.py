"""What pruning buys: parameters, multiply-accumulates and measured inference time.

``count_macs`` counts the multiply-accumulates of one example's forward pass from the
layer shapes (:meth:`tinyodl.nn.Layer.describe`): a convolution producing an (F, OH, OW)
output from C input channels with a KH x KW kernel and ``groups`` groups costs
``F * OH * OW * (C / groups) * KH * KW``; a linear layer ``in * out``. Everything else
(activations, pooling, batchnorm) is left out, as is usual. ``inference_time`` measures the
forward pass; compare two models only by the ratio of times measured in the same process,
as :func:`speedup` does (alternating the two, best round of each).
Chapter 02 (pruning).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from tinyodl._timing import median_time
from tinyodl.nn import LAYER_TYPES, Conv2d, Linear


def count_macs(model: Any, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one example's forward pass through ``model``.

    Parameters
    ----------
    model : tinyodl.nn.Layer
    input_shape : tuple
        One input without the batch, e.g. ``(1, 28, 28)``.
    """
    total = 0
    for row in model.describe((1, *input_shape)):
        kind = LAYER_TYPES.get(row["type"])
        if kind is None or not row["leaf"]:
            continue
        if issubclass(kind, Linear):
            total += row["config"]["in_features"] * row["config"]["out_features"]
        elif issubclass(kind, Conv2d):
            cin, cout = row["input_shape"][1], row["output_shape"][1]
            kh, kw = row["config"]["kernel_size"]
            groups = row["config"].get("groups", cin)  # DepthwiseConv2d: one group per channel
            total += int(np.prod(row["output_shape"][2:])) * cout * (cin // groups) * kh * kw
    return int(total)


def inference_time(model: Any, x: np.ndarray, repeats: int = 5, batch_size: int = 256) -> float:
    """Median seconds of one forward pass over ``x`` (evaluation mode, batches of 256).

    Every layer's mode is restored afterwards. Times depend on the machine and its load:
    report the ratio of two models timed in the same process.
    """
    modes = [(layer, layer.training) for layer in [model, *(c for _, c in model.named_layers())]]
    model.eval()

    def run() -> None:
        for i in range(0, len(x), batch_size):
            model.forward(x[i : i + batch_size])

    try:
        return median_time(run, repeats=repeats, warmup=1)
    finally:
        for layer, mode in modes:
            layer.training = mode


def speedup(baseline: Any, model: Any, x: np.ndarray, rounds: int = 7, batch_size: int = 256):
    """How many times faster ``model``'s forward pass over ``x`` is than ``baseline``'s.

    The two are timed in alternation, ``rounds`` times each, and each keeps its fastest
    round: the round least disturbed by other work on the machine, and a burst of load
    affects both alike. Returns ``(speedup, seconds_baseline, seconds_model)``.
    """
    times = {id(baseline): [], id(model): []}
    saved = []
    for net in (baseline, model):
        saved += [(layer, layer.training) for layer in [net, *(c for _, c in net.named_layers())]]
        net.eval()
    try:
        for _ in range(rounds + 1):  # the first round warms up
            for net in (baseline, model):
                start = time.perf_counter()
                for i in range(0, len(x), batch_size):
                    net.forward(x[i : i + batch_size])
                times[id(net)].append(time.perf_counter() - start)
    finally:
        for layer, mode in saved:
            layer.training = mode
    t_base, t_model = min(times[id(baseline)][1:]), min(times[id(model)][1:])
    return t_base / t_model, t_base, t_model
