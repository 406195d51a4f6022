"""Greedy layer-wise training with auxiliary heads (chapter 05).

End-to-end backpropagation keeps the activations of *every* layer until the backward pass
reaches them. Greedy layer-wise training (Belilovsky, Eickenberg, Oyallon, "Greedy Layerwise
Learning Can Scale to ImageNet", ICML 2019) never back-propagates through more than one
block. The network is a chain of blocks ``B_1, ..., B_J``; block ``j`` gets a small
*auxiliary head* ``A_j`` (average pooling to 2x2 and a linear classifier) and is trained,
with its head, to classify the output of the blocks before it, which are frozen:

    for j = 1..J:
        x_j = B_{j-1}(...B_1(x))                       frozen: forward only, nothing kept
        minimise  L( A_j(B_j(x_j; W_j); V_j), y )      over (W_j, V_j)
        freeze B_j

The last head is the network's classifier. Only block ``j``'s activations are alive during
its backward pass (the frozen prefix runs as inference: each of its blocks keeps nothing
once its output exists), so the training memory is that of the largest *block*, not of the
whole network. The price: block ``j`` never learns from the blocks above it.

The chapter also measures the end of that line, *forward-only* training: a frozen body
(random, or pretrained elsewhere) and only a head trained on its features.

=============================  =============================================================
function                       what it does
=============================  =============================================================
:class:`Frozen`                runs a trained part as inference inside a model: evaluation
                               mode, nothing saved, no gradient below it
:func:`conv_blocks`            the chapter's CNN as a list of blocks (conv + BN + ReLU)
:func:`auxiliary_head`         the small head of a block (average pool to 2x2 + linear)
:func:`stage_model`            the model trained at stage j: Frozen(prefix), block j, head j
:func:`greedy_layerwise_fit`   trains block by block; returns the assembled model
:func:`head_only_fit`          forward-only: a head on a frozen body
:func:`sgd_fit`                the training recipe every method uses (SGD, cosine schedule)
:func:`analytic_stage_memory`  the memory of one stage predicted from :mod:`tinyodl.memory`
=============================  =============================================================

The notebook ``chapters/05_layerwise.py`` compares accuracy and measured peak training
memory; ``tinyodl bench layerwise`` produces the headline figures.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinyodl.history import History
from tinyodl.nn import (
    SGD,
    AvgPool2d,
    BatchNorm2d,
    Conv2d,
    Flatten,
    Layer,
    Linear,
    ReLU,
    Sequential,
    build_layer,
    layer_spec,
)
from tinyodl.nn.utils import SeedLike, as_generator

__all__ = [
    "Frozen",
    "LayerwiseResult",
    "StageResult",
    "analytic_stage_memory",
    "auxiliary_head",
    "conv_blocks",
    "end_to_end_model",
    "greedy_layerwise_fit",
    "head_only_fit",
    "heads_for",
    "pretrained_body",
    "recalibrate_batchnorm",
    "sgd_fit",
    "stage_model",
]


def _release(layer: Layer) -> None:
    """Drop what ``layer`` and its sub-layers saved for a backward pass that will not come."""
    for sub in [layer, *(child for _, child in layer.named_layers())]:
        sub.saved.clear()
        sub._output_shape = None


class Frozen(Layer):
    """A trained part of a network run as inference inside a trainable model.

    Forward runs ``body`` in evaluation mode (batchnorm uses its running statistics), child
    by child, and drops what each child saved as soon as it has run: at any moment only one
    child's working memory exists. Backward stops there: nothing below a frozen part trains,
    so it returns a zero gradient that costs no memory (a broadcast view of one zero).

    Parameters
    ----------
    body : Layer (or spec)
        Usually a ``Sequential`` of trained blocks. Its parameters are frozen
        (``trainable = False``) so that optimizers built on the whole model skip them.
    """

    def __init__(self, body: Layer | dict) -> None:
        body = build_layer(body)
        super().__init__(body.dtype)
        self.body = body
        self.body.freeze()
        self._adopt("body", body)
        self._x_shape: tuple[int, ...] | None = None

    def children(self) -> dict[str, Layer]:
        return {"body": self.body}

    def config(self) -> dict[str, Any]:
        return {"body": layer_spec(self.body)}

    def output_shape(self, input_shape):
        return self.body.output_shape(input_shape)

    def _forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        self._x_shape = x.shape
        parts = list(self.body.children().values()) if isinstance(self.body, Sequential) else []
        for part in parts or [self.body]:
            x = part.forward(x, train=False)
            _release(part)
        return x

    def _backward(self, dout: np.ndarray, per_example: bool) -> np.ndarray:
        return np.broadcast_to(np.zeros((), dtype=self.dtype), self._x_shape)


# ----------------------------------------------------------------------------- architecture


def _seeds(seed: SeedLike):
    rng = as_generator(seed)
    while True:
        yield int(rng.integers(2**31))


def conv_blocks(
    channels: Sequence[int] = (32, 32, 32, 32),
    strides: Sequence[int] = (2, 1, 1, 1),
    in_channels: int = 1,
    seed: SeedLike = 0,
) -> list[Sequential]:
    """The chapter's CNN body as blocks of conv 3x3 (padding 1) + BN + ReLU.

    Block ``j`` has ``channels[j]`` filters and stride ``strides[j]``. The defaults make
    four *equal* blocks on 28x28 MNIST (32x14x14 after each; 28,640 parameters): every
    block keeps the same activations for its backward pass, so training one block at a
    time needs a quarter of the activation memory of end-to-end training.
    """
    if len(channels) != len(strides) or not channels:
        raise ValueError(
            f"conv_blocks: channels and strides need the same non-zero length, got "
            f"{len(channels)} and {len(strides)}"
        )
    s = _seeds(seed)
    blocks, c_in = [], int(in_channels)
    for c, stride in zip(channels, strides, strict=True):
        conv = Conv2d(c_in, c, 3, stride=stride, padding=1, bias=False, seed=next(s))
        blocks.append(Sequential([conv, BatchNorm2d(c), ReLU()]))
        c_in = c
    return blocks


def auxiliary_head(
    in_shape: tuple[int, ...],
    num_classes: int = 10,
    hidden: int | None = None,
    seed: SeedLike = 0,
) -> Sequential:
    """The auxiliary classifier of a block whose output has shape ``(C, H, W)``.

    Average pooling to a 2x2 map (as in Belilovsky et al. 2019), flatten, then a linear
    layer ``4C -> num_classes`` (or ``4C -> hidden -> ReLU -> num_classes``). The pooling
    window is ``ceil(H / 2)`` with the padding that makes the output 2x2. For a feature
    vector ``(F,)`` (a body ending in global pooling) the head is the linear part alone.
    """
    dims = tuple(int(v) for v in in_shape)
    layers: list[Layer] = []
    if len(dims) == 3:
        c, h, w = dims
        if h < 2 or w < 2:
            raise ValueError(f"auxiliary_head: the feature map must be at least 2x2, got {dims}")
        kh, kw = math.ceil(h / 2), math.ceil(w / 2)
        pad = (math.ceil((2 * kh - h) / 2), math.ceil((2 * kw - w) / 2))
        layers += [AvgPool2d((kh, kw), padding=pad), Flatten()]
        features = 4 * c
    elif len(dims) == 1:
        features = dims[0]
    else:
        raise ValueError(f"auxiliary_head: expected (C, H, W) or (F,), got {dims}")
    s = _seeds(seed)
    if hidden:
        layers += [Linear(features, hidden, seed=next(s)), ReLU()]
        layers.append(Linear(hidden, num_classes, seed=next(s)))
    else:
        layers.append(Linear(features, num_classes, seed=next(s)))
    return Sequential(layers)


def heads_for(
    blocks: Sequence[Layer],
    input_shape: tuple[int, ...],
    num_classes: int = 10,
    hidden: int | None = None,
    seed: SeedLike = 0,
) -> list[Sequential]:
    """One :func:`auxiliary_head` per block, sized from the block's output shape."""
    s = _seeds(seed)
    shape, heads = (1, *input_shape), []
    for block in blocks:
        shape = block.output_shape(shape)
        heads.append(auxiliary_head(shape[1:], num_classes, hidden, seed=next(s)))
    return heads


def end_to_end_model(blocks: Sequence[Layer], head: Layer) -> Sequential:
    """``Sequential({"features": blocks..., "classifier": head})`` sharing the layers."""
    features = Sequential({f"block{j}": b for j, b in enumerate(blocks)})
    return Sequential({"features": features, "classifier": head})


def stage_model(blocks: Sequence[Layer], heads: Sequence[Layer], j: int) -> Sequential:
    """The model trained at stage ``j``: ``Frozen(blocks[:j])``, ``blocks[j]``, ``heads[j]``.

    The layers are shared with ``blocks``/``heads`` (training it trains them). At stage 0
    there is no frozen part. Note: the blocks before ``j`` are frozen by this call.
    """
    if not 0 <= j < len(blocks) or len(heads) != len(blocks):
        raise ValueError(f"stage_model: stage {j} of {len(blocks)} blocks with {len(heads)} heads")
    parts: dict[str, Layer] = {}
    if j > 0:
        prefix = Sequential({f"block{i}": b for i, b in enumerate(blocks[:j])})
        parts["frozen"] = Frozen(prefix)
    parts["block"] = blocks[j]
    parts["head"] = heads[j]
    return Sequential(parts)


# ----------------------------------------------------------------------------- training


@dataclass
class StageResult:
    """One stage of greedy training: block ``stage`` with its auxiliary head.

    Attributes
    ----------
    stage : int
    history : History
        What :func:`tinyodl.train.fit` recorded (per-step loss, per-epoch accuracies).
    val_accuracy : float or None
        Accuracy of block ``stage``'s head on the validation set after the stage.
    seconds : float
        Wall time of the stage.
    trainable_params : int
        Parameters trained in the stage (block + head).
    """

    stage: int
    history: History
    val_accuracy: float | None
    seconds: float
    trainable_params: int


@dataclass
class LayerwiseResult:
    """The outcome of :func:`greedy_layerwise_fit`.

    ``model`` is ``Sequential({"features": blocks, "classifier": last head})`` in
    evaluation mode (all parameters trainable again); ``stages`` one :class:`StageResult`
    per block; ``heads`` all auxiliary heads (``heads[j]`` classifies from block ``j``).
    """

    model: Sequential
    stages: list[StageResult] = field(default_factory=list)
    heads: list[Layer] = field(default_factory=list)


def _sgd(model: Layer, lr: float, momentum: float, weight_decay: float) -> SGD:
    return SGD(model, lr=lr, momentum=momentum, weight_decay=weight_decay)


def sgd_fit(
    model: Layer,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    **fit_kwargs: Any,
) -> History:
    """The training recipe of every method in chapter 05: :func:`tinyodl.train.fit` with SGD
    (momentum, weight decay) and a cosine schedule from ``lr`` to 0 over all steps.

    ``fit_kwargs`` go to ``fit`` (``x_val``, ``y_val``, ``progress``, ...). Only the
    trainable parameters of ``model`` change (a :class:`Frozen` part has none).
    """
    from tinyodl.schedules import Cosine
    from tinyodl.train import fit

    steps = epochs * math.ceil(len(x) / batch_size)
    opt = _sgd(model, lr, momentum, weight_decay)
    return fit(
        model,
        opt,
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        schedule=Cosine(lr, max(steps, 1)),
        **fit_kwargs,
    )


def greedy_layerwise_fit(
    blocks: Sequence[Layer],
    heads: Sequence[Layer],
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    progress: bool = True,
    callback: Callable[[int, StageResult], None] | None = None,
) -> LayerwiseResult:
    """Train ``blocks`` one at a time, each with its auxiliary head (Belilovsky et al. 2019).

    Stage ``j`` trains ``blocks[j]`` and ``heads[j]`` with :func:`tinyodl.train.fit` (SGD
    with momentum and a cosine schedule over the stage) on the outputs of the frozen
    ``blocks[:j]`` (:class:`Frozen`: computed batch by batch, nothing kept). Then the block
    is frozen and the next stage starts.

    Parameters
    ----------
    blocks, heads : sequences of Layer, same length
        E.g. :func:`conv_blocks` and :func:`heads_for`; trained in place.
    x, y : training images (N, C, H, W) float32 and int labels (N,)
    epochs : int
        Epochs *per stage*.
    batch_size, seed : int
        As for ``fit`` (the same shuffling seed at every stage).
    lr, momentum, weight_decay : float
        SGD settings of every stage.
    x_val, y_val : optional validation set (accuracy per stage).
    progress : bool
        tqdm progress bars.
    callback : callable, optional
        ``callback(stage, StageResult)`` after each stage.

    Returns
    -------
    LayerwiseResult
    """
    from tinyodl.train import evaluate

    if len(blocks) != len(heads) or not blocks:
        raise ValueError(
            f"greedy_layerwise_fit: need one head per block, got {len(blocks)} blocks and "
            f"{len(heads)} heads"
        )
    stages = []
    for j in range(len(blocks)):
        model = stage_model(blocks, heads, j)
        start = time.perf_counter()
        history = sgd_fit(
            model, x, y, epochs=epochs, batch_size=batch_size, seed=seed, lr=lr,
            momentum=momentum, weight_decay=weight_decay, progress=progress,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        val = None if x_val is None else evaluate(model.eval(), x_val, y_val)[1]
        result = StageResult(j, history, val, seconds, model.num_params(trainable_only=True))
        stages.append(result)
        blocks[j].freeze()
        if callback is not None:
            callback(j, result)
    model = end_to_end_model(blocks, heads[-1])
    model.unfreeze()
    return LayerwiseResult(model=model.eval(), stages=stages, heads=list(heads))


def recalibrate_batchnorm(body: Layer, x: np.ndarray, batch_size: int = 250) -> Layer:
    """Set the running statistics of ``body``'s batchnorm layers from data, forward only.

    Runs ``body`` in training mode over ``x`` (no backward, nothing kept), with each
    batchnorm's momentum set so that the running statistics end as the mean over the
    batches of their batch statistics. A cheap way to make frozen *random* features usable:
    no gradient is ever computed. Returns ``body`` (in evaluation mode).
    """
    from tinyodl.nn import BatchNorm2d as BN

    norms = [layer for _, layer in body.named_layers() if isinstance(layer, BN)]
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.buffers["running_mean"][...] = 0
        bn.buffers["running_var"][...] = 0
    try:
        for k, start in enumerate(range(0, len(x), batch_size)):
            for bn in norms:
                bn.momentum = 1.0 / (k + 1)  # running average of the batch statistics
            body.forward(x[start : start + batch_size], train=True)
            _release(body)
    finally:
        for bn, m in zip(norms, momenta, strict=True):
            bn.momentum = m
    return body.eval()


def head_only_fit(
    body: Layer,
    head: Layer,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    progress: bool = True,
) -> tuple[Sequential, History]:
    """Forward-only training: ``head`` learns on the features of the frozen ``body``.

    The body runs as inference (:class:`Frozen`), so training needs the memory of the
    head alone plus one body layer at a time. Returns the model
    ``Sequential({"frozen": Frozen(body), "head": head})`` (evaluation mode) and the history.
    """
    model = Sequential({"frozen": Frozen(body), "head": head})
    history = sgd_fit(
        model, x, y, epochs=epochs, batch_size=batch_size, seed=seed, lr=lr,
        momentum=momentum, weight_decay=weight_decay, x_val=x_val, y_val=y_val,
        progress=progress,
    )  # fmt: skip
    return model.eval(), history


def pretrained_body(
    x: np.ndarray,
    y: np.ndarray,
    *,
    source_classes: Sequence[int] = (0, 1, 2, 3, 4),
    epochs: int = 2,
    batch_size: int = 64,
    seed: int = 0,
    lr: float = 0.1,
    use_shipped: bool = True,
    progress: bool = True,
) -> tuple[Layer, str]:
    """A body pretrained on *other* classes, for the forward-only comparison.

    If tinyodl ships a pretrained ``mcunet_tiny`` (:func:`tinyodl.tasks.pretrained`, task
    A: pretrained "in the cloud" on digits 0-4) and ``use_shipped``, its ``features`` are
    returned. Otherwise :func:`conv_blocks` are trained end to end here on the images of
    ``source_classes`` in ``(x, y)``. Either way the body never saw a label of the other
    digits. Returns ``(body, description)``; the description says which it was.
    """
    from tinyodl import tasks

    if use_shipped and tasks.pretrained_path("A").exists():
        return tasks.pretrained("A")["features"], (
            "the shipped mcunet_tiny pretrained on digits 0-4 (tinyodl.tasks.pretrained('A'))"
        )
    keep = np.isin(y, list(source_classes))
    blocks = conv_blocks(seed=seed + 1)
    head = heads_for(blocks, x.shape[1:], seed=seed + 2)[-1]
    model = end_to_end_model(blocks, head)
    sgd_fit(
        model,
        x[keep],
        y[keep],
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        lr=lr,
        progress=progress,
    )
    digits = ",".join(str(c) for c in source_classes)
    return model["features"].eval(), (
        f"conv_blocks pretrained here, end to end, on the {int(keep.sum())} training images "
        f"of digits {digits} ({epochs} epochs; no shipped pretrained model was found)"
    )


# ----------------------------------------------------------------------------- memory


@dataclass
class StageMemory:
    """Predicted memory of one training step at a stage (bytes), see
    :func:`analytic_stage_memory`. ``total_peak_bytes`` compares with the measured
    ``TrainingMemoryReport.total_peak_bytes``."""

    stage: int
    total_peak_bytes: int
    resident_bytes: int
    inference_peak_bytes: int
    training: Any  # AnalyticMemory of block + head on the frozen prefix's output


def _copy(layer: Layer, trainable: bool) -> Layer:
    """A fresh layer of the same architecture (the analytic model reads shapes only)."""
    copy = build_layer(layer_spec(layer))
    return copy.unfreeze() if trainable else copy.freeze()


def analytic_stage_memory(
    blocks: Sequence[Layer],
    heads: Sequence[Layer],
    j: int,
    input_shape: tuple[int, ...],
    batch_size: int,
    optimizer: Any = "sgd_momentum",
    backend: str | None = None,
) -> StageMemory:
    """Predict the memory of one training step of stage ``j`` from :mod:`tinyodl.memory`.

    The step has two parts. The frozen prefix runs as inference, block by block: its peak is
    the largest ``forward`` phase of :func:`~tinyodl.memory.analytic_training_memory` over
    the prefix's blocks (frozen, evaluation mode), plus the block's input. Then block ``j``
    and its head train on the prefix's output ``h``: their analytic training memory, with
    ``h`` as the input batch. Resident: every parameter and buffer (the frozen prefix's too),
    the images and labels, and the gradients and optimizer state of block + head. So

        total = resident + max(prefix inference peak, bytes(h) + training peak of block j)

    (at stage 0 there is no prefix and ``h`` is the batch itself).
    """
    from tinyodl.memory import analytic_training_memory

    if not 0 <= j < len(blocks):
        raise ValueError(f"analytic_stage_memory: no stage {j} in {len(blocks)} blocks")
    n = int(batch_size)
    shape = (n, *(int(s) for s in input_shape))
    trained = Sequential([_copy(blocks[j], True), _copy(heads[j], True)])
    itemsize = trained.dtype.itemsize
    inference, h_bytes, frozen_bytes = 0, 0, 0
    for block in blocks[:j]:
        copy = _copy(block, False)
        a = analytic_training_memory(copy, shape[1:], n, "sgd", backend=backend, train=False)
        inference = max(inference, h_bytes + a.phase_peaks["forward"])
        frozen_bytes += a.parameters + a.buffers
        shape = block.output_shape(shape)
        h_bytes = int(np.prod(shape)) * itemsize
    train = analytic_training_memory(trained, shape[1:], n, optimizer, backend=backend)
    if j == 0:
        resident, working = train.resident_bytes, train.peak_bytes
    else:
        images = int(np.prod(input_shape)) * n * itemsize
        resident = train.resident_bytes - h_bytes + images + frozen_bytes
        working = max(inference, h_bytes + train.peak_bytes)
    return StageMemory(j, resident + working, resident, inference, train)
