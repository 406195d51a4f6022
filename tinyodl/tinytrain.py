"""Chapter 12: TinyTrain's task-adaptive sparse update -- choose what to train on the device.

Kwon et al., "TinyTrain: Resource-Aware Task-Adaptive Sparse Training of DNNs at the
Data-Scarce Edge" (ICML 2024). Chapter 04's sparse update picks its scheme *offline*, by
training every candidate (contribution analysis, Lin et al. 2022): accurate but far too
slow to repeat for each new task. TinyTrain scores layers and channels from **one
backward pass** on the device's own data (GUIDE section 4):

* Fisher potential of output channel ``o`` of a layer, from its activations ``a`` and their
  gradients ``g = dL/da`` over the ``N`` examples of the batch and the ``D`` positions of
  the channel::

      P_o = 1/(2N) * sum_n ( sum_d a[n, o, d] * g[n, o, d] )^2

  (:func:`fisher_potential`), and of the layer ``P_i = sum_o P_o``;
* a layer's score divides its potential by what updating it costs, the parameters and the
  multiply-accumulates relative to the largest layer's::

      s_i = P_i / ( (|W_i| / max_j |W_j|) * (MACs_i / max_j MACs_j) )

  (:func:`layer_scores`);
* :func:`select` walks the layers by decreasing score, gives each the largest channel
  ratio that still fits the memory budget (the channels of largest ``P_o``), and updates
  the biases of every layer from the earliest selected one up (the gradient reaches them
  anyway). The classifier always trains, as in chapter 04's base scheme. The budget uses
  chapter 04's accounting (:func:`tinyodl.sparse_update.memory_cost`), so the two
  selections can be compared on the same budget.

The int8 graph is read through the same integers as training: the activation of a
:class:`~tinyodl.quantization.QConv` is ``s (y_q - z)`` and its gradient ``dL/dy_q / s``,
so ``a * g = (y_q - z) * dL/dy_q``. The notebook (chapters/12_engine.py) compares this
selection with contribution analysis: accuracy after training, and the seconds each
selection takes.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinyodl import nn
from tinyodl.quantization import QConv, QResidual, QuantizedModel
from tinyodl.sparse_update import RATIOS, UpdateScheme, layer_names, memory_cost, n_channels

__all__ = [
    "TinyTrainScheme",
    "apply",
    "fisher_potential",
    "layer_scores",
    "layer_stats",
    "select",
    "train",
]


@dataclass(frozen=True, eq=False)
class TinyTrainScheme(UpdateScheme):
    """An :class:`~tinyodl.sparse_update.UpdateScheme` whose channels were chosen by Fisher
    potential (``channels``: layer -> sorted int64 indices, for the partial layers), with
    the scores that chose them and the seconds the selection took."""

    channels: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    scores: Mapping[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["channels"] = {n: [int(c) for c in ch] for n, ch in self.channels.items()}
        out["scores"] = {n: float(s) for n, s in self.scores.items()}
        out["seconds"] = float(self.seconds)
        return out


def _check(qmodel: Any, x: np.ndarray, y: np.ndarray) -> None:
    if not isinstance(qmodel, QuantizedModel):
        raise TypeError(
            "tinytrain: expected a tinyodl.quantization.QuantizedModel, got "
            f"{type(qmodel).__name__}"
        )
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(
            f"tinytrain: need as many labels as images (>= 1), got {len(x)} and {len(y)}"
        )


def _channel_fisher(y_q: np.ndarray, zero_point: int, g: np.ndarray) -> np.ndarray:
    """``(1/2N) sum_n (sum_d a g)^2`` per channel, from the int8 output and dL/dy_q."""
    a = y_q.astype(np.float64) - zero_point
    prod = a * np.asarray(g, dtype=np.float64)
    per_example = prod.reshape(prod.shape[0], prod.shape[1], -1).sum(axis=2)  # (N, C)
    return (per_example**2).sum(axis=0) / (2 * len(y_q))


def fisher_potential(qmodel: QuantizedModel, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Fisher potential of every output channel of every conv/linear layer (one backward).

    Parameters
    ----------
    qmodel : QuantizedModel
        Not modified (a copy runs the pass, with every tensor frozen: only ``dL/dx`` is
        computed).
    x : float32 (N, C, H, W); y : int labels (N,)

    Returns
    -------
    dict layer name -> float64 (F,), in forward order.
    """
    _check(qmodel, x, y)
    work = copy.deepcopy(qmodel)
    for _, conv in work.named_convs():
        conv.weight_trainable = conv.bias_trainable = False
        conv.zero_grad()
    logits = work.dequantize_output(work.forward_int(work.quantize_input(x), save=True))
    _, dlogits = nn.softmax_cross_entropy(logits, y)
    g = np.asarray(dlogits, dtype=np.float32) * np.float32(work.output.scale)
    out: dict[str, np.ndarray] = {}

    def visit(op, g, input_grad):
        if isinstance(op, QConv):
            out[op.name] = _channel_fisher(op.saved["y"], op.output.zero_point, g)
        return op.backward(g, input_grad=input_grad)

    for i, op in reversed(list(enumerate(work.ops))):
        if isinstance(op, QResidual):  # walk the block by hand to see its layers' gradients
            ga, gb = op.add.backward(g)
            for inner in reversed(op.body):
                ga = visit(inner, ga, True)
            g = ga + gb
        else:
            g = visit(op, g, i > 0)
    return {name: out[name] for name, _ in qmodel.named_convs()}


def layer_stats(qmodel: QuantizedModel, input_shape: tuple[int, ...]) -> dict[str, dict[str, int]]:
    """Weights ``|W_i|`` and MACs per example of every conv/linear layer.

    ``input_shape`` is one example's (C, H, W).
    """
    rows = {r["name"]: r for r in qmodel.describe((1, *input_shape))}
    stats = {}
    for name, conv in qmodel.named_convs():
        out_shape = rows[name]["output_shape"]
        positions = int(np.prod(out_shape[2:])) if len(out_shape) == 4 else 1
        per_output = conv.weight[0].size  # C/groups * KH * KW (or K for a linear layer)
        stats[name] = {
            "params": int(conv.weight.size),
            "macs": int(conv.out_channels * positions * per_output),
        }
    return stats


def layer_scores(
    fisher: Mapping[str, np.ndarray], stats: Mapping[str, Mapping[str, int]]
) -> dict[str, float]:
    """``s_i = P_i / ((|W_i| / max |W|) * (MACs_i / max MACs))`` for every layer."""
    max_p = max(s["params"] for s in stats.values())
    max_m = max(s["macs"] for s in stats.values())
    return {
        name: float(fisher[name].sum())
        / ((stats[name]["params"] / max_p) * (stats[name]["macs"] / max_m))
        for name in fisher
    }


def _top_channels(potential: np.ndarray, ratio: float) -> tuple[int, ...]:
    k = n_channels(len(potential), ratio)
    order = np.argsort(-potential, kind="stable")
    return tuple(int(c) for c in np.sort(order[:k]))


def select(
    qmodel: QuantizedModel,
    x: np.ndarray,
    y: np.ndarray,
    budget_bytes: int,
    *,
    batch_size: int = 1,
    ratios: tuple[float, ...] = (1.0, 0.5, 0.25, 0.125),
    max_layers: int | None = None,
    momentum: bool = False,
) -> TinyTrainScheme:
    """TinyTrain's task-adaptive selection under ``budget_bytes``.

    Parameters
    ----------
    qmodel : QuantizedModel
    x, y : the device's labelled data (one backward pass over all of it)
    budget_bytes : int
        Bound on :func:`tinyodl.sparse_update.memory_cost` ``["total"]`` at ``batch_size``
        (``momentum``: count SGD-M state), as chapter 04's searches use.
    ratios : channel ratios to try per layer, largest first (from
        :data:`tinyodl.sparse_update.RATIOS`)
    max_layers : int, optional
        At most this many layers besides the classifier.

    Returns
    -------
    TinyTrainScheme
        ``bias_depth``, ``weights`` (ratios), ``channels`` (Fisher-chosen indices of the
        partial layers), ``scores`` and ``seconds`` (the selection's own time).

    Raises
    ------
    ValueError
        If even the classifier alone does not fit the budget (naming both numbers).
    """
    start = time.perf_counter()
    _check(qmodel, x, y)
    if any(r not in RATIOS or r == 0 for r in ratios):
        raise ValueError(f"tinytrain.select: ratios must come from {RATIOS[1:]}, got {ratios}")
    names = layer_names(qmodel)
    head, index = names[-1], {n: i for i, n in enumerate(names)}
    fisher = fisher_potential(qmodel, x, y)
    scores = layer_scores(fisher, layer_stats(qmodel, x.shape[1:]))

    def cost(depth: int, weights: dict[str, float]) -> int:
        scheme = UpdateScheme(depth, weights)
        return memory_cost(qmodel, scheme, x.shape[1:], batch_size, momentum=momentum)["total"]

    weights, depth, chosen = {head: 1.0}, 1, {}
    if cost(depth, weights) > budget_bytes:
        raise ValueError(
            f"tinytrain.select: the classifier alone needs {cost(depth, weights)} bytes, "
            f"more than the budget of {budget_bytes}"
        )
    ranked = sorted(names[:-1], key=lambda n: -scores[n])
    for name in ranked:
        if max_layers is not None and len(weights) - 1 >= max_layers:
            break
        for r in sorted(ratios, reverse=True):
            trial = {**weights, name: r}
            deeper = len(names) - min(index[n] for n in trial)  # biases from there up
            fits = [d for d in (max(deeper, depth), depth) if cost(d, trial) <= budget_bytes]
            if fits:
                weights, depth = trial, fits[0]
                if r < 1:
                    chosen[name] = _top_channels(fisher[name], r)
                break
    return TinyTrainScheme(
        depth, weights, channels=chosen, scores=scores, seconds=time.perf_counter() - start
    )


def apply(qmodel: QuantizedModel, scheme: UpdateScheme) -> QuantizedModel:
    """:func:`tinyodl.sparse_update.apply_scheme`, then the scheme's own ``channels`` (if any)
    as each partial layer's ``update_channels``; in place, returns ``qmodel``."""
    from tinyodl.sparse_update import apply_scheme

    apply_scheme(qmodel, scheme)
    convs = dict(qmodel.named_convs())
    for name, ch in (getattr(scheme, "channels", None) or {}).items():
        convs[name].update_channels = np.asarray(ch, dtype=np.int64)
    return qmodel


def train(
    qmodel: QuantizedModel,
    scheme: UpdateScheme,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int = 1,
    batch_size: int = 1,
    lr: float = 0.01,
    momentum: float = 0.9,
    seed: int = 0,
    progress: bool = False,
) -> tuple[QuantizedModel, Any]:
    """Train a copy of ``qmodel`` with ``scheme`` on chapter 12's engine (reordered, QAS).

    SGD (``momentum``), cosine decay to 0, seeded batches (:func:`tinyodl.engine.fit`).
    Returns ``(trained copy, plan)``.
    """
    from tinyodl import engine, schedules

    model = copy.deepcopy(qmodel)
    plan = engine.compile_training(
        model, x.shape[1:], batch_size=batch_size, scheme=scheme, lr=lr, momentum=momentum
    )
    steps = epochs * (len(x) // batch_size)
    engine.fit(
        plan,
        x,
        y,
        epochs=epochs,
        seed=seed,
        schedule=schedules.Cosine(lr, steps),
        progress=progress,
    )
    return model, plan


def ratio_name(r: float) -> str:
    """``0.125 -> "1/8"`` (for tables)."""
    return "1" if r >= 1 else f"1/{round(1 / r)}" if math.isclose(1 / r, round(1 / r)) else str(r)
