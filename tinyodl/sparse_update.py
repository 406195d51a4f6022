"""Chapter 04: sparse update -- update only what pays for its memory.

Lin et al., "On-Device Training Under 256KB Memory" (NeurIPS 2022), section 2.2; GUIDE
section 4. Backpropagation through a frozen layer costs almost nothing (a 1-bit ReLU mask,
the weights are read from flash), updating a layer's *bias* costs a 32-bit gradient per
channel, but updating its *weights* keeps the layer's int8 input alive from forward to
backward (``dL/dW = x^T dL/da``) and needs a 32-bit gradient per updated weight. An
:class:`UpdateScheme` says what to update:

* ``bias_depth = k``: the biases of the last ``k`` layers (the classifier is layer ``-1``);
* ``weights = {layer: r}``: the weights of ``layer``, output channels ratio ``r`` in
  :data:`RATIOS`, the channels of largest weight L2 norm (:func:`select_channels`).

"Layers" are the convolutions and linear layers in forward order
(:func:`layer_names`; for a :class:`~tinyodl.quantization.QuantizedModel` its
``named_convs``, for a float ``nn`` model its Conv2d/DepthwiseConv2d/Linear layers).

The paper chooses the scheme offline, in three steps, all here:

1. :func:`memory_cost` -- the scheme's extra training memory in the paper's accounting
   (8-bit activations and weights, 32-bit biases and gradients, 1-bit ReLU masks), next to
   :func:`measured_memory` (tracemalloc) and tinyodl's analytic replay of the same step;
2. :func:`contribution_analysis` -- the accuracy gain of each bias depth and of each
   (layer, ratio), each trained alone on top of the classifier, measured on a held-out split;
3. a search that maximises the summed gains under a memory budget, assuming they add up:
   :func:`evolutionary_search` (the paper's) and :func:`exact_search` (exhaustive,
   vectorised; feasible when the candidate space is at most a few million schemes).

:func:`train` then trains the int8 graph with the found scheme and QAS
(:class:`SparseInt8Optimizer` zeroes the gradient rows of the channels not selected).
``tinyodl bench sparse_update`` runs all of it on task A; ``tinyodl demo`` trains with the
scheme it found.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

#: Channel ratios a layer's weights may be updated with (0: not at all).
RATIOS: tuple[float, ...] = (0.0, 0.125, 0.25, 0.5, 1.0)

__all__ = [
    "RATIOS",
    "ContributionTable",
    "SparseInt8Optimizer",
    "UpdateScheme",
    "apply_scheme",
    "contribution_analysis",
    "evolutionary_search",
    "exact_search",
    "layer_names",
    "mask_gradients",
    "measured_memory",
    "memory_cost",
    "select_channels",
    "train",
]


# ----------------------------------------------------------------------------- the scheme


@dataclass(frozen=True)
class UpdateScheme:
    """What a sparse update trains.

    Parameters
    ----------
    bias_depth : int
        Biases of the last ``bias_depth`` layers are updated (0: none).
    weights : dict layer name -> ratio
        Weights of each named layer are updated for ``ceil(ratio * out_channels)`` output
        channels (those of largest L2 norm); ratio in :data:`RATIOS`. A ratio of 0 is the
        same as leaving the layer out.
    """

    bias_depth: int = 0
    weights: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if int(self.bias_depth) != self.bias_depth or self.bias_depth < 0:
            raise ValueError(f"UpdateScheme: bias_depth must be an int >= 0, got {self.bias_depth}")
        for name, r in self.weights.items():
            if not any(math.isclose(r, q) for q in RATIOS):
                raise ValueError(
                    f"UpdateScheme: ratio of layer {name!r} must be one of {RATIOS}, got {r}"
                )
        clean = {n: float(r) for n, r in sorted(self.weights.items()) if r > 0}
        object.__setattr__(self, "weights", clean)
        object.__setattr__(self, "bias_depth", int(self.bias_depth))

    def __hash__(self) -> int:
        return hash((self.bias_depth, tuple(self.weights.items())))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (ratios as fractions' floats)."""
        return {"bias_depth": self.bias_depth, "weights": dict(self.weights)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> UpdateScheme:
        return cls(int(d["bias_depth"]), dict(d.get("weights", {})))

    def __str__(self) -> str:
        parts = [f"{n}@{Fraction(r).limit_denominator(8)}" for n, r in self.weights.items()]
        return f"biases of last {self.bias_depth}; weights: {', '.join(parts) or 'none'}"


def _is_quantized(model: Any) -> bool:
    from tinyodl.quantization import QuantizedModel

    return isinstance(model, QuantizedModel)


def _layers(model: Any) -> list[tuple[str, Any]]:
    """``(name, layer)`` of the conv/linear layers in forward order."""
    if _is_quantized(model):
        return list(model.named_convs())
    from tinyodl import nn

    kinds = (nn.Conv2d, nn.DepthwiseConv2d, nn.Linear)
    return [(n, m) for n, m in model.named_layers() if isinstance(m, kinds)]


def layer_names(model: Any) -> list[str]:
    """Names of the layers a scheme may refer to, in forward order (classifier last)."""
    return [n for n, _ in _layers(model)]


def _weight(layer: Any) -> np.ndarray:
    return layer.weight if hasattr(layer, "kind") else layer.params["weight"].data


def _is_depthwise(layer: Any) -> bool:
    from tinyodl import nn

    return getattr(layer, "kind", None) == "depthwise" or isinstance(layer, nn.DepthwiseConv2d)


def _out_axis(layer: Any) -> int:
    """Axis of the output channels in the weight: 0, except tinyodl's float Linear (K, F)."""
    from tinyodl import nn

    return 1 if isinstance(layer, nn.Linear) else 0


def n_channels(out_channels: int, ratio: float) -> int:
    """Output channels updated at ``ratio``: ``ceil(ratio * out_channels)``."""
    return int(math.ceil(ratio * out_channels - 1e-9))


def select_channels(layer: Any, ratio: float) -> np.ndarray:
    """Output channels to update: the ``ceil(ratio * F)`` of largest weight L2 norm.

    Parameters
    ----------
    layer : QConv or nn.Conv2d / nn.DepthwiseConv2d / nn.Linear
    ratio : float in :data:`RATIOS`

    Returns
    -------
    int64 array, sorted increasingly. Ties keep the lower channel index (stable sort).
    """
    if not any(math.isclose(ratio, q) for q in RATIOS):
        raise ValueError(f"select_channels: ratio must be one of {RATIOS}, got {ratio}")
    w = np.asarray(_weight(layer), dtype=np.float64)
    w = np.moveaxis(w, _out_axis(layer), 0).reshape(w.shape[_out_axis(layer)], -1)
    if hasattr(layer, "weight_scale"):  # int8: the real weight is s_W * W_q
        w = w * np.asarray(layer.weight_scale, dtype=np.float64).reshape(-1, 1)
    norms = np.sqrt((w * w).sum(axis=1))
    k = n_channels(len(norms), ratio)
    order = np.argsort(-norms, kind="stable")
    return np.sort(order[:k]).astype(np.int64)


# ----------------------------------------------------------------------------- applying it


def _check_names(model: Any, scheme: UpdateScheme) -> list[tuple[str, Any]]:
    layers = _layers(model)
    names = [n for n, _ in layers]
    unknown = sorted(set(scheme.weights) - set(names))
    if unknown:
        raise ValueError(f"apply_scheme: unknown layers {unknown}; the model has {names}")
    if scheme.bias_depth > len(layers):
        raise ValueError(
            f"apply_scheme: bias_depth {scheme.bias_depth} > the model's {len(layers)} layers"
        )
    return layers


def apply_scheme(model: Any, scheme: UpdateScheme) -> Any:
    """Make ``model`` train exactly what ``scheme`` says (in place); returns ``model``.

    Everything else is frozen. On a :class:`~tinyodl.quantization.QuantizedModel` this sets
    each ``QConv``'s ``weight_trainable`` / ``bias_trainable``; on a float ``nn`` model the
    parameters' ``trainable`` flags (every parameter outside the conv/linear layers, e.g.
    batchnorm, is frozen). A partial ratio stores the selected channels as
    ``update_channels`` (int64 array): on the QConv, whose backward then computes only those
    rows of ``dL/dW_q`` (``weight_grad`` has shape ``(len(update_channels), ...)``; a
    depthwise layer keeps only those channels' input) and whose optimizer updates only those
    rows; or on the float weight ``Parameter``, where :func:`mask_gradients` (call it before
    the float optimizer's ``step``) zeroes the other channels' gradients -- a mask, not a
    saving. ``update_channels`` is None where the whole weight trains.
    """
    layers = _check_names(model, scheme)
    first_bias = len(layers) - scheme.bias_depth
    if not _is_quantized(model):
        model.freeze()
    for i, (name, layer) in enumerate(layers):
        ratio = scheme.weights.get(name, 0.0)
        channels = select_channels(layer, ratio) if 0 < ratio < 1 else None
        if _is_quantized(model):
            layer.weight_trainable = ratio > 0
            layer.bias_trainable = i >= first_bias
            layer.update_channels = channels
        else:
            layer.params["weight"].trainable = ratio > 0
            layer.params["weight"].update_channels = channels
            if "bias" in layer.params:
                layer.params["bias"].trainable = i >= first_bias
    return model


def mask_gradients(model: Any) -> None:
    """Float models: zero the weight-gradient rows of the channels a partial ratio does not
    update. (A QConv computes only the selected rows: nothing to do.)"""
    if _is_quantized(model):
        return  # QConv computes the selected rows' gradient only (compact)
    for _, layer in _layers(model):
        p = layer.params["weight"]
        channels, grad = getattr(p, "update_channels", None), p.grad
        if channels is None or grad is None:
            continue
        axis = _out_axis(layer)
        keep = np.zeros(grad.shape[axis], dtype=bool)
        keep[channels] = True
        index = [slice(None)] * grad.ndim
        index[axis] = ~keep
        grad[tuple(index)] = 0


def trainable_parameters(model: Any, scheme: UpdateScheme) -> int:
    """Scalars the scheme updates (selected weight channels and biases)."""
    layers = _check_names(model, scheme)
    total, first_bias = 0, len(layers) - scheme.bias_depth
    for i, (name, layer) in enumerate(layers):
        w = _weight(layer)
        f = w.shape[_out_axis(layer)]
        ratio = scheme.weights.get(name, 0.0)
        total += n_channels(f, ratio) * (w.size // f)
        total += f if i >= first_bias else 0
    return total


def _import_int8_optimizer():
    from tinyodl.qas import Int8Optimizer

    return Int8Optimizer


class SparseInt8Optimizer(_import_int8_optimizer()):
    """:class:`tinyodl.qas.Int8Optimizer` that first applies the scheme's gradient mask.

    With a partial ratio, the unselected channels' gradients are zero, so their momentum
    stays zero and their int8 weights never move.
    """

    def step(self) -> None:
        mask_gradients(self.qmodel)
        super().step()


# ----------------------------------------------------------------------------- memory


def _shapes(model: Any, input_shape: tuple[int, ...]) -> dict[str, tuple]:
    """Input and output shape (batch 1) of every conv/linear layer, by name."""
    rows = model.describe((1, *input_shape))
    return {r["name"]: (tuple(r["input_shape"]), tuple(r["output_shape"])) for r in rows}


def _activation(layer: Any, model: Any, name: str, following: dict[str, str]) -> bool:
    """Whether a ReLU-like clamp follows the layer (its 1-bit mask is needed in backward)."""
    if hasattr(layer, "activation"):
        return layer.activation is not None
    return name in following


def _float_activations(model: Any) -> dict[str, str]:
    """Float models: the conv/linear layers followed (after an optional BN) by a ReLU(6)."""
    from tinyodl import nn

    out: dict[str, str] = {}
    last = None
    for name, m in model.named_layers():
        if isinstance(m, (nn.Conv2d, nn.DepthwiseConv2d, nn.Linear)):
            last = name
        elif isinstance(m, (nn.ReLU, nn.ReLU6)) and last is not None:
            out[last] = name
            last = None
        elif not isinstance(m, nn.BatchNorm2d) and not m.children():
            last = None
    return out


def layer_costs(
    model: Any, input_shape: tuple[int, ...], batch_size: int = 1
) -> list[dict[str, Any]]:
    """Per-layer ingredients of :func:`memory_cost` (bytes at ``batch_size``).

    One dict per layer in forward order: ``name``, ``out_channels``, ``mask`` (1-bit ReLU
    mask of the output, 0 without a clamp), ``bias_grad`` (32-bit), and ``weight[r]`` for
    each ratio ``r``: the int8 input kept for ``dL/dW`` (for a depthwise layer only the
    selected channels' input) plus the 32-bit gradient of the selected weights.
    """
    n = int(batch_size)
    shapes = _shapes(model, input_shape)
    following = {} if _is_quantized(model) else _float_activations(model)
    rows = []
    for name, layer in _layers(model):
        (_, *in_rest), (_, *out_rest) = shapes[name]
        w = _weight(layer)
        f = w.shape[_out_axis(layer)]
        per_channel = w.size // f
        x_elems = n * int(np.prod(in_rest))
        weight = {}
        for r in RATIOS:
            c = n_channels(f, r)
            kept = (x_elems * c) // f if _is_depthwise(layer) else (x_elems if c else 0)
            weight[r] = kept + 4 * c * per_channel
        out_elems = n * int(np.prod(out_rest))
        has_act = _activation(layer, model, name, following)
        rows.append(
            {
                "name": name,
                "out_channels": f,
                "mask": -(-out_elems // 8) if has_act else 0,
                "bias_grad": 4 * f,
                "weight": weight,
            }
        )
    return rows


def memory_cost(
    model: Any,
    scheme: UpdateScheme,
    input_shape: tuple[int, ...] = (1, 28, 28),
    batch_size: int = 1,
    *,
    momentum: bool = False,
) -> dict[str, int]:
    """Extra training memory of ``scheme`` in the paper's accounting (bytes).

    Beyond inference (int8 weights in flash, the int8 forward's largest activation pair),
    training needs:

    * ``activations``: the int8 input of every layer whose weights are updated
      (``dL/dW = x^T dL/da``); for a depthwise layer only the selected channels;
    * ``masks``: 1 bit per output element of every clamped layer on the backward path, from
      the earliest updated layer to the output;
    * ``gradients``: 32 bits per updated weight and bias;
    * ``optimizer_state``: 32 bits per updated scalar when ``momentum`` (SGD-M), else 0.

    Returns a dict with those keys and ``total``. Use :func:`layer_costs` for the per-layer
    table.
    """
    rows = layer_costs(model, input_shape, batch_size)
    names = [r["name"] for r in rows]
    unknown = sorted(set(scheme.weights) - set(names))
    if unknown or scheme.bias_depth > len(rows):
        raise ValueError(f"memory_cost: scheme {scheme} does not fit layers {names}")
    first_bias = len(rows) - scheme.bias_depth
    trained = [i for i, r in enumerate(rows) if r["name"] in scheme.weights]
    start = min([*trained, first_bias]) if (trained or scheme.bias_depth) else len(rows)
    activations = gradients = 0
    for i, r in enumerate(rows):
        ratio = scheme.weights.get(r["name"], 0.0)
        kept_and_grad = r["weight"][ratio]
        grad = 4 * n_channels(r["out_channels"], ratio) * _per_channel(model, r["name"])
        activations += kept_and_grad - grad
        gradients += grad + (r["bias_grad"] if i >= first_bias else 0)
    masks = sum(r["mask"] for r in rows[start:])
    state = gradients if momentum else 0
    total = activations + masks + gradients + state
    return {
        "activations": activations,
        "masks": masks,
        "gradients": gradients,
        "optimizer_state": state,
        "total": total,
    }


def _per_channel(model: Any, name: str) -> int:
    layer = dict(_layers(model))[name]
    w = _weight(layer)
    return w.size // w.shape[_out_axis(layer)]


def measured_memory(
    qmodel: Any,
    scheme: UpdateScheme,
    x: np.ndarray,
    y: np.ndarray,
    *,
    lr: float = 1e-3,
    momentum: float = 0.9,
) -> dict[str, int]:
    """tinyodl's measured (tracemalloc) and analytic memory of one int8 QAS step of ``scheme``
    (:func:`sparse_train_step`).

    Works on a copy of ``qmodel``. Returns bytes:

    * ``measured_peak`` / ``analytic_peak``: the step's working memory above what was
      resident (gradients, saved activations, scratch, transients);
    * ``state``: the fp32 shadow and momentum of the trained integers (resident);
    * ``trainable``: bytes of the trained int8 weights and int32 biases;
    * ``measured`` / ``analytic``: peak + state + trainable -- the training memory beyond
      the frozen weights and the input batch (what ``tinyodl demo`` reports).
    """
    from tinyodl.quantization.memory import (
        analytic_int8_training_memory,
        measure_int8_training_step,
    )

    work = apply_scheme(copy.deepcopy(qmodel), scheme)
    opt = SparseInt8Optimizer(work, "sgd", lr=lr, momentum=momentum, qas=True)
    sparse_train_step(work, opt, x, y)  # warm-up: the state exists
    measured = measure_int8_training_step(work, opt, x, y, step_fn=sparse_train_step)
    analytic = analytic_int8_training_memory(
        work, len(x), x.shape[1:], "sgd", momentum, start=_first_trained_op(work)
    )
    trainable = trainable_int8_bytes(work)
    state = opt.state_nbytes()
    return {
        "measured_peak": int(measured.peak_bytes),
        "analytic_peak": int(analytic.peak_bytes),
        "state": int(state),
        "trainable": int(trainable),
        "measured": int(measured.peak_bytes + state + trainable),
        "analytic": int(analytic.peak_bytes + analytic.shadow_and_state + trainable),
    }


def trainable_int8_bytes(qmodel: Any) -> int:
    """Bytes of the int8 weights (selected rows only) and int32 biases that train: what
    must sit in RAM rather than flash."""
    total = 0
    for _, conv in qmodel.named_convs():
        if conv.weight_trainable:
            sel = conv.update_channels
            total += conv.weight.nbytes if sel is None else conv.weight[sel].nbytes
        total += conv.bias.nbytes if conv.bias_trainable else 0
    return total


# ----------------------------------------------------------------------------- training


def _first_trained_op(qmodel: Any) -> int:
    """Index in ``qmodel.ops`` of the first operation holding a trained tensor."""
    for i, op in enumerate(qmodel.ops):
        inner = op.body if hasattr(op, "body") else [op]
        if any(
            getattr(c, "weight_trainable", False) or getattr(c, "bias_trainable", False)
            for c in inner
        ):
            return i
    return len(qmodel.ops)


def sparse_train_step(
    qmodel: Any, optimizer: Any, x: np.ndarray, y: np.ndarray
) -> tuple[float, np.ndarray]:
    """One int8 training step that back-propagates only as deep as the scheme needs.

    The operations before the first one holding a trained tensor run as at inference
    (nothing saved); backward stops at that operation (no input gradient there). All
    gradients are computed, then the optimizer updates (the plain order; chapter 12's
    engine applies each update as soon as its gradient exists). Returns loss and logits.
    """
    from tinyodl import nn

    start = _first_trained_op(qmodel)
    optimizer.zero_grad()
    h = qmodel.quantize_input(x)
    for i, op in enumerate(qmodel.ops):
        h = op.forward(h, save=i >= start)
    logits = qmodel.dequantize_output(h)
    loss, dlogits = nn.softmax_cross_entropy(logits, y)
    g = np.asarray(dlogits, dtype=np.float32) * np.float32(qmodel.output.scale)
    for i in reversed(range(start, len(qmodel.ops))):
        g = qmodel.ops[i].backward(g, input_grad=i > start)
    optimizer.step()
    optimizer.zero_grad()
    return float(loss), logits


def train(
    qmodel: Any,
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
    qas: bool = True,
) -> tuple[Any, SparseInt8Optimizer]:
    """Train a copy of the int8 graph ``qmodel`` with ``scheme``, SGD-M and QAS (``qas=False``:
    plain SGD-M on the integers, chapter 03's baseline).

    Cosine learning-rate decay to 0 over the run; batches from
    :class:`tinyodl.data.BatchSampler` (seeded). Returns ``(trained copy, optimizer)``.
    """
    from tinyodl import schedules
    from tinyodl.qas import fit_int8

    model = apply_scheme(copy.deepcopy(qmodel), scheme)
    opt = SparseInt8Optimizer(model, "sgd", lr=lr, momentum=momentum, qas=qas)
    steps = epochs * -(-len(x) // batch_size)
    fit_int8(
        model,
        opt,
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        schedule=schedules.Cosine(lr, steps),
        progress=progress,
        step_fn=sparse_train_step,
    )
    return model, opt


# ----------------------------------------------------------------------------- contribution


@dataclass
class ContributionTable:
    """Accuracy gains measured by :func:`contribution_analysis`.

    Attributes
    ----------
    base_scheme : UpdateScheme
        What every measured scheme adds to (the classifier's weights and bias).
    base_accuracy : float
    bias : dict k -> gain of updating the biases of the last ``k`` layers (k >= 1)
    weight : dict layer -> {ratio: gain} of also updating that layer's weights
    seconds : float
        Time the analysis took.
    """

    base_scheme: UpdateScheme
    base_accuracy: float
    bias: dict[int, float]
    weight: dict[str, dict[float, float]]
    seconds: float = 0.0

    def gain(self, scheme: UpdateScheme) -> float:
        """Summed gains of ``scheme`` (the additivity assumption of the paper)."""
        total = self.bias.get(scheme.bias_depth, 0.0) if scheme.bias_depth > 1 else 0.0
        for name, r in scheme.weights.items():
            total += self.weight.get(name, {}).get(r, 0.0)
        return total

    def to_dict(self) -> dict[str, Any]:
        return {
            "base_scheme": self.base_scheme.to_dict(),
            "base_accuracy": self.base_accuracy,
            "bias": {str(k): v for k, v in self.bias.items()},
            "weight": {n: {repr(r): g for r, g in d.items()} for n, d in self.weight.items()},
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ContributionTable:
        return cls(
            UpdateScheme.from_dict(d["base_scheme"]),
            float(d["base_accuracy"]),
            {int(k): float(v) for k, v in d["bias"].items()},
            {n: {float(r): float(g) for r, g in v.items()} for n, v in d["weight"].items()},
            float(d.get("seconds", 0.0)),
        )


def contribution_analysis(
    qmodel: Any,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    layers: list[str] | None = None,
    bias_depths: list[int] | None = None,
    ratios: tuple[float, ...] = RATIOS[1:],
    train_kwargs: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> ContributionTable:
    """Measure each part's accuracy gain over updating the classifier alone.

    The base scheme updates the classifier (the last layer's weights and bias). Each bias
    depth ``k`` in ``bias_depths`` (default ``2..len(layers)``) and each ``(layer, ratio)``
    is trained *on top of the base*, on ``(x_train, y_train)`` with :func:`train`, and
    scored on the held-out ``(x_val, y_val)``; its gain is the accuracy minus the base's.

    Parameters
    ----------
    qmodel : QuantizedModel
    layers : list of str, optional
        Candidate layers for weight updates (default: every layer but the classifier).
    train_kwargs : dict, optional
        Passed to :func:`train` (epochs, batch_size, lr, seed).
    """
    from tinyodl.train import evaluate

    start = time.perf_counter()
    names = layer_names(qmodel)
    head = names[-1]
    layers = [n for n in names[:-1]] if layers is None else list(layers)
    bias_depths = list(range(2, len(names) + 1)) if bias_depths is None else list(bias_depths)
    kwargs = dict(train_kwargs or {})
    base = UpdateScheme(1, {head: 1.0})

    def score(scheme: UpdateScheme) -> float:
        model, _ = train(qmodel, scheme, x_train, y_train, **kwargs)
        return float(evaluate(model, x_val, y_val, batch_size=500)[1])

    jobs = [("base", 0, 0.0)] + [("bias", k, 0.0) for k in bias_depths]
    jobs += [("weight", n, r) for n in layers for r in ratios]
    from tqdm.auto import tqdm

    results: dict[tuple, float] = {}
    for job in tqdm(jobs, disable=not progress, desc="contribution analysis", leave=False):
        kind, what, r = job
        if kind == "base":
            scheme = base
        elif kind == "bias":
            scheme = UpdateScheme(what, {head: 1.0})
        else:
            scheme = UpdateScheme(1, {head: 1.0, what: r})
        results[job] = score(scheme)
    base_acc = results[("base", 0, 0.0)]
    bias = {k: results[("bias", k, 0.0)] - base_acc for k in bias_depths}
    weight = {n: {r: results[("weight", n, r)] - base_acc for r in ratios} for n in layers}
    return ContributionTable(base, base_acc, bias, weight, time.perf_counter() - start)


# ----------------------------------------------------------------------------- search


class _Space:
    """The search space: bias depth and one ratio per candidate layer, with a vectorised
    cost (from :func:`layer_costs`) and gain (from a :class:`ContributionTable`)."""

    def __init__(self, model, table, layers, input_shape, batch_size, momentum) -> None:
        self.rows = layer_costs(model, input_shape, batch_size)
        self.names = [r["name"] for r in self.rows]
        self.head = self.names[-1]
        self.layers = list(layers if layers is not None else table.weight)
        self.depths = [1, *sorted(k for k in table.bias if k > 1)]
        self.ratios = list(RATIOS)
        self.table, self.model = table, model
        self.input_shape, self.batch_size, self.momentum = input_shape, batch_size, momentum

    def scheme(self, depth_i: int, ratio_i: tuple[int, ...]) -> UpdateScheme:
        w = {self.head: 1.0}
        w.update({n: self.ratios[j] for n, j in zip(self.layers, ratio_i, strict=True) if j})
        return UpdateScheme(self.depths[depth_i], w)

    def cost(self, scheme: UpdateScheme) -> int:
        return memory_cost(
            self.model, scheme, self.input_shape, self.batch_size, momentum=self.momentum
        )["total"]

    def gain(self, scheme: UpdateScheme) -> float:
        return self.table.gain(scheme)


def _result(space: _Space, scheme: UpdateScheme, budget: int, evaluated: int, start: float):
    return {
        "scheme": scheme,
        "gain": space.gain(scheme),
        "cost": space.cost(scheme),
        "budget": int(budget),
        "evaluated": int(evaluated),
        "seconds": time.perf_counter() - start,
    }


def exact_search(
    model: Any,
    table: ContributionTable,
    budget_bytes: int,
    *,
    layers: list[str] | None = None,
    input_shape: tuple[int, ...] = (1, 28, 28),
    batch_size: int = 1,
    momentum: bool = False,
    max_schemes: int = 5_000_000,
) -> dict[str, Any]:
    """The best scheme under ``budget_bytes`` by enumerating every one.

    The space is every bias depth measured in ``table`` times every ratio of every
    candidate layer (``len(depths) * 5 ** len(layers)``); above ``max_schemes`` it raises
    ``ValueError`` (use :func:`evolutionary_search`). The classifier is always updated.
    Costs and gains are computed for all schemes at once with numpy: the cost of a scheme
    is masks(from its earliest updated layer) + bias gradients + sum of weight costs.

    Returns dict: ``scheme``, ``gain``, ``cost``, ``budget``, ``evaluated``, ``seconds``.
    """
    start = time.perf_counter()
    space = _Space(model, table, layers, input_shape, batch_size, momentum)
    size = len(space.depths) * len(space.ratios) ** len(space.layers)
    if size > max_schemes:
        raise ValueError(
            f"exact_search: {size:,} schemes exceed max_schemes={max_schemes:,}; "
            "use fewer layers or evolutionary_search"
        )
    grid = np.array(list(itertools.product(range(len(space.ratios)), repeat=len(space.layers))))
    grid = grid.reshape(-1, len(space.layers))
    index = {n: i for i, n in enumerate(space.names)}
    L = len(space.names)
    mult = 2 if momentum else 1
    w_cost = np.zeros(len(grid), dtype=np.int64)
    w_gain = np.zeros(len(grid))
    first_w = np.full(len(grid), L - 1)  # the classifier is always updated
    for j, name in enumerate(space.layers):
        row = space.rows[index[name]]
        per_channel = _per_channel(model, name)
        costs = []
        for r in space.ratios:
            grad = 4 * n_channels(row["out_channels"], r) * per_channel
            costs.append(row["weight"][r] + (mult - 1) * grad)
        w_cost += np.array(costs, dtype=np.int64)[grid[:, j]]
        w_gain += np.array([table.weight[name].get(r, 0.0) if r else 0.0 for r in space.ratios])[
            grid[:, j]
        ]
        first_w = np.where(grid[:, j] > 0, np.minimum(first_w, index[name]), first_w)
    head = space.rows[-1]
    head_cost = head["weight"][1.0] + (mult - 1) * 4 * head["out_channels"] * _per_channel(
        model, space.head
    )
    masks_from = np.cumsum([r["mask"] for r in space.rows][::-1])[::-1]  # masks of i..L-1
    best = (-np.inf, None, None)
    for d, depth in enumerate(space.depths):
        bias = mult * sum(r["bias_grad"] for r in space.rows[L - depth :])
        start_layer = np.minimum(first_w, L - depth)
        cost = head_cost + bias + w_cost + masks_from[start_layer]
        gain = w_gain + (table.bias.get(depth, 0.0) if depth > 1 else 0.0)
        gain = np.where(cost <= budget_bytes, gain, -np.inf)
        i = int(np.argmax(gain - 1e-12 * cost))  # ties: the cheaper scheme
        if not np.isfinite(gain[i]):
            continue
        if gain[i] > best[0] or (best[2] is not None and gain[i] == best[0] and cost[i] < best[2]):
            best = (gain[i], (d, tuple(grid[i])), cost[i])
    if best[1] is None:
        raise ValueError(f"exact_search: no scheme fits {budget_bytes} bytes")
    return _result(space, space.scheme(*best[1]), budget_bytes, size, start)


def evolutionary_search(
    model: Any,
    table: ContributionTable,
    budget_bytes: int,
    *,
    layers: list[str] | None = None,
    input_shape: tuple[int, ...] = (1, 28, 28),
    batch_size: int = 1,
    momentum: bool = False,
    population: int = 50,
    generations: int = 40,
    mutation: float = 0.1,
    parents: float = 0.25,
    seed: int | np.random.Generator = 0,
) -> dict[str, Any]:
    """The paper's evolutionary search for the scheme with the largest summed gain.

    A genome is (bias-depth index, ratio index per candidate layer). Each generation keeps
    the best ``parents`` fraction of the distinct feasible genomes (over budget: fitness
    -inf), and refills the population alternately with mutations of a parent (one gene
    redrawn, each other with probability ``mutation``) and uniform crossovers of two
    parents. The summed gain of a genome is only looked up in the contribution table, so
    the cost of the search is the number of distinct genomes evaluated. Returns the same
    dict as :func:`exact_search`.
    """
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    space = _Space(model, table, layers, input_shape, batch_size, momentum)
    n_genes = 1 + len(space.layers)
    highs = np.array([len(space.depths)] + [len(space.ratios)] * len(space.layers))
    cache: dict[tuple, float] = {}

    def fitness(g: np.ndarray) -> float:
        key = tuple(int(v) for v in g)
        if key not in cache:
            s = space.scheme(key[0], key[1:])
            cache[key] = space.gain(s) if space.cost(s) <= budget_bytes else -np.inf
        return cache[key]

    pop = [np.zeros(n_genes, dtype=int)]  # the classifier-only scheme: always feasible?
    while len(pop) < population:
        g = rng.integers(0, highs)
        g[1:] *= rng.random(n_genes - 1) < 0.3  # start sparse
        pop.append(g)
    n_parents = max(2, int(parents * population))
    for _ in range(generations):
        distinct = {tuple(int(v) for v in g): g for g in pop}.values()  # keeps diversity
        ranked = sorted(distinct, key=fitness, reverse=True)
        elite = [g for g in ranked[:n_parents] if np.isfinite(fitness(g))] or ranked[:1]
        children = []
        while len(elite) + len(children) < population:
            a = elite[rng.integers(len(elite))]
            if len(children) % 2:  # crossover: each gene from one of two parents
                b = elite[rng.integers(len(elite))]
                child = np.where(rng.random(n_genes) < 0.5, a, b)
            else:  # mutation: one gene redrawn, each other with probability `mutation`
                child = a.copy()
                redraw = rng.random(n_genes) < mutation
                redraw[rng.integers(n_genes)] = True
                child[redraw] = rng.integers(0, highs)[redraw]
            children.append(child)
        pop = elite + children
    best = max(pop, key=fitness)
    if not np.isfinite(fitness(best)):
        raise ValueError(f"evolutionary_search: no scheme fits {budget_bytes} bytes")
    key = tuple(int(v) for v in best)
    return _result(space, space.scheme(key[0], key[1:]), budget_bytes, len(cache), start)


def search_callable(kind: str) -> Callable[..., dict[str, Any]]:
    """``"exact"`` or ``"evolutionary"`` -> the search function."""
    return {"exact": exact_search, "evolutionary": evolutionary_search}[kind]
