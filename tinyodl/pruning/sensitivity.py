"""Per-layer sensitivity scan: how much accuracy each layer loses when pruned alone.

Han et al. (2015) and Li et al. (2017) prune one layer at a time at increasing sparsity and
watch the accuracy: layers whose accuracy stays flat can be pruned hard, sensitive ones
(often the first and the last) lightly. The scan below does exactly that for both kinds
of pruning; nothing is retrained, so it measures the damage of pruning before fine-tuning.
Chapter 02 (pruning).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tinyodl.pruning.magnitude import apply_masks, magnitude_masks, prunable_weights
from tinyodl.pruning.structured import channel_groups, channel_prune

KINDS = ("magnitude", "channel")


def sensitivity_scan(
    model: Any,
    evaluate: Callable[[Any], float],
    sparsities: Sequence[float] = (0.25, 0.5, 0.75, 0.9),
    kind: str = "magnitude",
    input_shape: tuple[int, ...] | None = None,
    criterion: str = "l1",
) -> dict[str, np.ndarray]:
    """Accuracy of ``model`` with one layer pruned at a time.

    Parameters
    ----------
    model : tinyodl.nn.Layer
        Left unchanged (weights are restored after each trial).
    evaluate : callable model -> float
        E.g. ``lambda m: tinyodl.train.evaluate(m, x_val, y_val)[1]``.
    sparsities : sequence of float in [0, 1)
    kind : {"magnitude", "channel"}, default "magnitude"
        Unstructured pruning of each Linear/Conv2d weight, or removing that fraction of the
        channels of each :func:`~tinyodl.pruning.channel_groups` group.
    input_shape : tuple
        One input's shape, needed for ``kind="channel"``.
    criterion : str
        Channel ranking for ``kind="channel"`` (:func:`~tinyodl.pruning.channel_scores`).

    Returns
    -------
    dict name -> ndarray (len(sparsities),)
        Weight names (magnitude) or producer names (channel), in model order.
    """
    if kind not in KINDS:
        raise ValueError(f"sensitivity_scan: kind must be one of {KINDS}, got {kind!r}")
    out = {}
    if kind == "magnitude":
        for name, p in prunable_weights(model).items():
            saved = p.data.copy()
            accs = []
            for s in sparsities:
                apply_masks(model, magnitude_masks(model, s, "layer", [name]))
                accs.append(evaluate(model))
                p.data[...] = saved
            out[name] = np.array(accs)
        return out
    if input_shape is None:
        raise ValueError("sensitivity_scan: kind='channel' needs input_shape, e.g. (1, 28, 28)")
    for group in channel_groups(model, input_shape):
        accs = [
            evaluate(channel_prune(model, {group.producer: s}, input_shape, criterion))
            for s in sparsities
        ]
        out[group.producer] = np.array(accs)
    return out
