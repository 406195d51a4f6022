"""Chapter 08: transfer learning on the device -- what to update, and what it costs.

A pretrained model adapts to a new task (``tinyodl.tasks``) by updating some of its
parameters. *Which* ones decides both accuracy and memory, because of one line of calculus
(TinyTL, Cai et al., NeurIPS 2020; GUIDE section 4): for ``a = x W + b``::

    dL/dW = x^T dL/da      needs the layer's input x, kept from forward to backward
    dL/db = dL/da          does not

and a ReLU needs only a 1-bit mask of where it passed. Training memory is dominated by the
inputs kept for ``dL/dW``, so freezing the weights -- even while still back-propagating
through them -- removes most of it. The methods (:data:`METHODS`), set up by :func:`prepare`:

=========================  =====================================================  ==========
method                     trainable                                              keeps
=========================  =====================================================  ==========
``feature_extraction``     the head only (body frozen)                            head input
``finetune_last_k``        the last ``k`` stages of the body + the head           their inputs
``finetune_full``          everything                                             every input
``tinytl_bias``            every bias (batchnorm betas) + the head                ReLU masks
``tinytl_lite_residual``   biases + head + a lite residual branch per block       + small maps
=========================  =====================================================  ==========

TinyTL's **lite residual** branch (:func:`lite_residual_branch`) learns a correction
``a_{i+1} = F_W(a_i) + b + F_wr(reduce(a_i))`` next to each frozen block: 2x2 average pool,
5x5 group convolution (2 groups), 1x1 convolution, bilinear upsampling back to the block's
output size. It works at a quarter of the block's resolution, so the inputs it keeps are
small, and its last normalisation starts with gamma = 0: at the start the model computes
exactly what it did before.

Batchnorm stays in evaluation mode in every method (running statistics from the cloud,
frozen): on a device the batch is small -- often 1 -- and batch statistics would be noise.
Its gamma and beta are parameters like any other (beta is a bias; gamma a per-channel
weight). The head is replaced by a freshly initialised one for new classes (task A) and kept
for new data of the same classes (task B): ``new_head``.

``tinyodl bench transfer`` builds the TinyTL-style table (trainable parameters, analytic and
measured peak training memory at batch 1 and 8, accuracy over 3 seeds) on tasks A and B.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinyodl import nn
from tinyodl.nn.utils import SeedLike, as_generator

METHODS = (
    "feature_extraction",
    "finetune_last_k",
    "finetune_full",
    "tinytl_bias",
    "tinytl_lite_residual",
)

__all__ = [
    "METHODS",
    "FrozenPrefix",
    "add_lite_residuals",
    "body_stages",
    "lite_residual_branch",
    "prepare",
    "trainable_parameters",
    "training_memory",
]


# ----------------------------------------------------------------------------- lite residual


def lite_residual_branch(
    in_channels: int,
    out_channels: int,
    output_size: tuple[int, int],
    seed: SeedLike = 0,
    dtype: str = "float32",
) -> nn.Sequential:
    """TinyTL's lite residual branch: pool 2x2 -> 5x5 group conv (2 groups) -> 1x1 conv ->
    bilinear upsample to ``output_size``.

    Children: ``pool`` (AvgPool2d 2), ``group_conv`` (5x5, padding 2, groups 2, no bias),
    ``group_bn``, ``act`` (ReLU6), ``pointwise`` (1x1, no bias), ``bn`` (gamma starts at 0,
    so the branch outputs exactly 0 at the start), ``upsample``.

    Parameters
    ----------
    in_channels : int
        Channels of the block input (even, for the two groups).
    out_channels : int
        Channels of the block output.
    output_size : (int, int)
        Height and width of the block output.
    seed : int or Generator
    """
    if in_channels % 2:
        raise ValueError(
            f"lite_residual_branch: in_channels must be even for 2 groups, got {in_channels}"
        )
    rng = as_generator(seed)
    branch = nn.Sequential(
        {
            "pool": nn.AvgPool2d(2, dtype=dtype),
            "group_conv": nn.Conv2d(
                in_channels,
                in_channels,
                5,
                padding=2,
                groups=2,
                bias=False,
                seed=int(rng.integers(2**31)),
                dtype=dtype,
            ),
            "group_bn": nn.BatchNorm2d(in_channels, dtype=dtype),
            "act": nn.ReLU6(dtype=dtype),
            "pointwise": nn.Conv2d(
                in_channels, out_channels, 1, bias=False, seed=int(rng.integers(2**31)), dtype=dtype
            ),
            "bn": nn.BatchNorm2d(out_channels, dtype=dtype),
            "upsample": nn.BilinearUpsample(output_size, dtype=dtype),
        }
    )
    branch["bn"].params["weight"].data[:] = 0.0  # the branch starts as the zero function
    return branch


def add_lite_residuals(model: nn.Sequential, input_shape=(1, 28, 28), seed: SeedLike = 0):
    """Wrap every ``InvertedResidual`` block ``B`` of ``model`` as ``Add(B, lite branch)``.

    In place; returns ``model``. The branch of a block reads the block's input and is added
    to its output (after the block's own skip connection, if any).
    """
    rng = as_generator(seed)
    shapes = {r["name"]: r for r in model.describe((1, *input_shape))}
    blocks = [(n, m) for n, m in model.named_layers() if isinstance(m, nn.InvertedResidual)]
    for name, block in blocks:
        out_hw = tuple(shapes[name]["output_shape"][2:])
        branch = lite_residual_branch(
            block.in_channels, block.out_channels, out_hw, rng, block.dtype.name
        )
        model.replace(name, nn.Add(block, branch))
    return model


# ----------------------------------------------------------------------------- frozen prefix


class FrozenPrefix(nn.Sequential):
    """The frozen bottom of a model: run for inference, keep nothing, stop the gradient.

    When every parameter below some layer is frozen, backward has nothing to compute there:
    neither weight gradients nor the input gradient that would only feed them. This
    container runs its layers as at inference -- after each one it drops what the layer
    saved for backward -- and its backward returns None without visiting them, so a
    ``Sequential`` holding it as its first child stops there. (A training engine does the
    same by pruning the frozen part of the backward graph: chapter 12.)
    """

    def _forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        for layer in self._layers.values():
            x = layer.forward(x, False)
            for sub in [layer, *(m for _, m in layer.named_layers())]:
                sub.saved.clear()  # inference: nothing is kept
                sub._output_shape = None
        return x

    def _backward(self, dout: np.ndarray, per_example: bool):
        return None  # nothing below needs a gradient


def _freeze_prefix(model: nn.Sequential) -> None:
    """Move the leading children of ``model["features"]`` without trainable parameters into
    a :class:`FrozenPrefix` named ``"frozen"`` (when there are any)."""
    features = model["features"]
    items = list(features.children().items())
    cut = 0
    for _, layer in items:
        if any(p.trainable for p in layer.parameters()):
            break
        cut += 1
    if cut == 0:
        return
    rest = items[cut:]
    prefix = FrozenPrefix(items[:cut])
    model.replace("features", nn.Sequential([("frozen", prefix), *rest]))


# ----------------------------------------------------------------------------- methods


def body_stages(model: nn.Sequential) -> list[list[str]]:
    """The body's parameterised stages, in order, as lists of layer names.

    A stage is a conv with the batchnorm that follows it, or a whole residual block; layers
    without parameters belong to no stage. For ``mcunet_tiny``: the stem, the 7 blocks and
    the final 1x1 conv: 9 stages.
    """
    stages: list[list[str]] = []
    features = model["features"]
    for local, layer in features.children().items():
        name = f"features.{local}"
        if isinstance(layer, nn.BatchNorm2d) and stages:
            stages[-1].append(name)
        elif layer.num_params():
            stages.append([name])
    return stages


def _new_head(model: nn.Sequential, seed: SeedLike) -> None:
    head = model["classifier"]
    for local, layer in head.children().items():
        if isinstance(layer, nn.Linear):
            shape = (layer.in_features, layer.out_features)
            head.replace(local, nn.Linear(*shape, seed=seed, dtype=layer.dtype.name))


def prepare(
    model: nn.Sequential,
    method: str,
    *,
    k: int = 2,
    new_head: bool = False,
    seed: SeedLike = 0,
    input_shape: tuple[int, ...] = (1, 28, 28),
) -> nn.Sequential:
    """Set up ``model`` (in place) for transfer-learning ``method``; returns it.

    Parameters
    ----------
    model : nn.Sequential
        A ``features`` / ``classifier`` model, e.g. ``tinyodl.tasks.pretrained("A")``.
    method : str
        One of :data:`METHODS`.
    k : int, default 2
        Stages of the body that ``finetune_last_k`` updates (:func:`body_stages`).
    new_head : bool, default False
        Replace the head's linear layer by a fresh one (new classes).
    seed : int or Generator
        Seeds the new head and the lite residual branches.

    The model is left in training mode with every batchnorm in evaluation mode (frozen
    statistics), so ``tinyodl.train.fit`` trains it as prepared. When the bottom of the
    body has no trainable parameter (``feature_extraction``, ``finetune_last_k``), those
    layers move into a :class:`FrozenPrefix` child ``features.frozen`` (their names gain
    ``frozen.``): it runs them for inference only and stops the backward pass there.
    """
    if method not in METHODS:
        raise ValueError(f"prepare: method must be one of {METHODS}, got {method!r}")
    rng = as_generator(seed)
    if new_head:
        _new_head(model, int(rng.integers(2**31)))
    if method == "tinytl_lite_residual":
        add_lite_residuals(model, input_shape, rng)
    model.freeze()
    model.unfreeze("classifier")
    if method == "finetune_full":
        model.unfreeze()
    elif method == "finetune_last_k":
        stages = body_stages(model)
        if not 1 <= k <= len(stages):
            raise ValueError(f"prepare: k must be in 1..{len(stages)}, got {k}")
        model.unfreeze(*[name for stage in stages[-k:] for name in stage])
    elif method in ("tinytl_bias", "tinytl_lite_residual"):
        model.unfreeze(kind="bias")
        if method == "tinytl_lite_residual":
            model.unfreeze(lambda name, layer: ".shortcut" in f".{name}")
    _freeze_prefix(model)
    model.train()
    for _, layer in model.named_layers():
        if isinstance(layer, nn.BatchNorm2d):
            layer.eval()
    return model


def trainable_parameters(model: nn.Layer) -> int:
    """Number of scalars the optimizer updates."""
    return model.num_params(trainable_only=True)


def training_memory(
    model: nn.Sequential,
    x: np.ndarray,
    y: np.ndarray,
    optimizer: Any,
) -> dict[str, int]:
    """Peak training memory of one step: measured (tracemalloc) and analytic.

    Runs two real steps on a copy of ``model`` (the first is the warm-up, the second is
    measured in the steady state) following the layers' own modes (batchnorm frozen), and
    predicts the same step with :func:`tinyodl.memory.analytic_training_memory`.
    ``optimizer`` is a factory ``f(model) -> optimizer``.

    Returns
    -------
    dict with ``measured``, ``analytic`` (total peak bytes), ``batch_size``,
    ``saved_bytes`` (activations kept for backward, read from ``layer.saved``).
    """
    import copy

    from tinyodl.memory import analytic_training_memory, measure_training_step

    work = copy.deepcopy(model)
    opt = optimizer(work)
    measure_training_step(work, opt, x, y)  # warm-up: gradients and state exist
    measured = measure_training_step(work, opt, x, y)  # each layer in its own mode
    predicted = analytic_training_memory(work, x.shape[1:], len(x), optimizer=opt, dtype=x.dtype)
    return {
        "batch_size": len(x),
        "measured": measured.total_peak_bytes,
        "analytic": predicted.total_peak_bytes,
        "saved_bytes": measured.saved_new_bytes,
        "saved_bytes_analytic": predicted.saved_new_bytes,
    }
