"""DP-SGD: per-example clipping, Gaussian noise and Poisson sampling (Abadi et al. 2016).

Chapter 10, section "DP-SGD". One step of DP-SGD on a lot ``B`` drawn by Poisson sampling
(each of the n examples joins independently with probability ``q = L / n``, so the lot size
varies around its expectation L):

    g_i      = grad of loss(x_i)                          per example (never averaged first)
    g_i     <- g_i / max(1, ||g_i|| / C)                  clip the whole gradient to norm C
    g_tilde  = (sum_{i in B} g_i + N(0, sigma^2 C^2 I)) / L   noise once, divide by the
                                                           *expected* lot size L
    w       <- optimizer step with g_tilde

(GUIDE section 5). The per-example gradients come from ``model.backward(dout,
per_example=True)``, which every Linear/Conv2d/DepthwiseConv2d computes vectorized from what
its backward already holds (``tinyodl.nn.functional.linear_per_example_grads``,
``conv2d_per_example_grads``: one einsum over the batch, no loop over examples). With
``clipping="ghost"`` the norms come from :mod:`tinyodl.privacy.ghost` instead, and no
per-example gradient is ever stored; the update is the same.

Functions, in the order of the step: :func:`poisson_sample`, :func:`per_example_gradients`,
:func:`clip_and_sum`, :func:`gaussian_noise`, all put together by :class:`DPSGD`;
:func:`tinyodl.privacy.training.fit_dpsgd` is the training loop with the accountant. Tests
hold the step equal to Opacus 1.6 on an identical PyTorch model given the same lot and the
same noise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinyodl.nn.conv_layers import Conv2d
from tinyodl.nn.errors import PerExampleGradientError
from tinyodl.nn.layers import Linear
from tinyodl.nn.losses import mse_loss, softmax_cross_entropy
from tinyodl.nn.norm import _BatchNorm
from tinyodl.nn.utils import SeedLike, as_generator, layer_label
from tinyodl.privacy import ghost
from tinyodl.privacy.accountant import epsilon as _epsilon

__all__ = [
    "CLIPPING_METHODS",
    "DPSGD",
    "UnsupportedLayerError",
    "clip_and_sum",
    "gaussian_noise",
    "per_example_gradients",
    "poisson_batches",
    "poisson_sample",
    "validate_model",
]

#: ``"per_example"`` materialises every g_i (``param.grad_sample``); ``"ghost"`` never does.
CLIPPING_METHODS = ("per_example", "ghost")

LossFn = Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]]


class UnsupportedLayerError(PerExampleGradientError, ValueError):
    """A layer for which DP-SGD cannot compute per-example gradients (the message names it).

    A :class:`tinyodl.nn.PerExampleGradientError` (what ``backward(per_example=True)`` raises
    for such a layer), and a ``ValueError`` (a configuration the caller must change)."""


def _sum_loss(loss: str | LossFn) -> LossFn:
    """``f(logits, y) -> (summed loss, dlogits)``: per-example gradients must not be averaged."""
    if callable(loss):
        return loss
    losses = {"cross_entropy": softmax_cross_entropy, "mse": mse_loss}
    if loss not in losses:
        raise ValueError(
            f"DP-SGD: loss must be one of {sorted(losses)} or a callable, got {loss!r}"
        )
    fn = losses[loss]
    return lambda logits, y: fn(logits, y, reduction="sum")


def _mean_over_copies(loss_fn: LossFn, multiplicity: int) -> LossFn:
    """The loss of an example with K augmented copies: the mean of its copies' losses."""
    if multiplicity == 1:
        return loss_fn

    def loss(logits, y):
        value, dlogits = loss_fn(logits, y)
        return value / multiplicity, dlogits / np.asarray(multiplicity, dlogits.dtype)

    return loss


# ----------------------------------------------------------------------------- sampling


def poisson_sample(n: int, sample_rate: float, rng: SeedLike = None) -> np.ndarray:
    """Indices of a Poisson-sampled lot: each of ``n`` examples joins with probability q.

    Returns
    -------
    ndarray of int64, sorted; its length is Binomial(n, q) and may be 0.
    """
    if not 0.0 <= sample_rate <= 1.0:
        raise ValueError(f"poisson_sample: sample_rate must be in [0, 1], got {sample_rate!r}")
    return np.flatnonzero(as_generator(rng).random(int(n)) < sample_rate).astype(np.int64)


def poisson_batches(
    n: int, sample_rate: float, steps: int, rng: SeedLike = None
) -> Iterator[np.ndarray]:
    """``steps`` independent Poisson lots (see :func:`poisson_sample`) from one generator."""
    gen = as_generator(rng)
    for _ in range(int(steps)):
        yield poisson_sample(n, sample_rate, gen)


# ----------------------------------------------------------------------------- per-example grads


def _leaves(model) -> list[tuple[str, Any]]:
    layers = [(model.name or type(model).__name__, model), *model.named_layers()]
    return [(name, layer) for name, layer in layers if not layer.children()]


def _freeze_hint(name: str) -> str:
    return f"freeze it (model.freeze({name!r}); model[{name!r}].eval()) or remove it"


def validate_model(model, clipping: str = "per_example") -> None:
    """Refuse models DP-SGD cannot train, naming the layer (as Opacus's ModuleValidator).

    * A batchnorm in training mode normalises each example with the statistics of the whole
      lot, so an example's gradient depends on the others and its per-example gradient does
      not exist -- even when the batchnorm itself is frozen, because its backward mixes the
      examples for every layer below it. (``backward(per_example=True)`` refuses it too,
      after the forward; this check says so before any computation.) In evaluation mode it
      is a fixed per-channel affine map, and allowed.
    * With ``clipping="ghost"``, only Linear and Conv2d/DepthwiseConv2d may hold trainable
      parameters.

    Raises
    ------
    UnsupportedLayerError
    """
    if clipping not in CLIPPING_METHODS:
        raise ValueError(f"DP-SGD: clipping must be one of {CLIPPING_METHODS}, got {clipping!r}")
    for name, layer in _leaves(model):
        if isinstance(layer, _BatchNorm) and layer.training:
            raise UnsupportedLayerError(
                f"DP-SGD: {layer_label(layer)} is in training mode: batch statistics mix the "
                f"examples of a lot, so per-example gradients do not exist; "
                + _freeze_hint(name)
                + " (evaluation mode uses its running statistics)"
            )
        trainable = [k for k, p in layer.params.items() if p.trainable]
        if clipping == "ghost" and trainable and not isinstance(layer, Linear | Conv2d):
            raise UnsupportedLayerError(
                f"DP-SGD (ghost clipping): {layer_label(layer)} has trainable parameters "
                f"{trainable} but ghost norms exist only for Linear and Conv2d; freeze it "
                f"(model.freeze({name!r})) or use clipping='per_example'"
            )


def _check_forward(model) -> None:
    """After a forward: any layer that mixed the examples (``_per_example_refusal``, the
    hook of ``tinyodl.nn``) is refused, naming it. Ghost clipping runs a plain backward,
    which would not refuse by itself."""
    for layer in [model, *(child for _, child in model.named_layers())]:
        reason = layer._per_example_refusal()
        if reason is not None:
            raise UnsupportedLayerError(f"DP-SGD: {layer_label(layer)}: {reason}")


def per_example_gradients(
    model, x: np.ndarray, y: np.ndarray, loss: str | LossFn = "cross_entropy"
) -> tuple[float, dict[str, np.ndarray]]:
    """Forward, summed loss, and ``backward(per_example=True)``: every trainable ``g_i``.

    Returns
    -------
    loss : float
        The summed loss over the batch.
    grad_samples : dict parameter name -> ndarray (N, *param.shape)
        ``param.grad_sample`` of every trainable parameter.

    Raises
    ------
    UnsupportedLayerError
        If a trainable parameter got no per-example gradient (its layer cannot give one).
    """
    validate_model(model, "per_example")
    value, dlogits = _sum_loss(loss)(model.forward(x), y)
    try:
        model.backward(dlogits, per_example=True)
    except PerExampleGradientError as err:  # a layer that mixed the examples
        raise UnsupportedLayerError(f"DP-SGD: {err}") from err
    grads = {}
    for name, p in model.named_parameters():
        if not p.trainable:
            continue
        if p.grad_sample is None:
            layer_name = name.rpartition(".")[0]
            raise UnsupportedLayerError(
                f"DP-SGD: parameter {name!r} got no per-example gradient: its layer "
                f"{layer_name!r} cannot compute one. Freeze it (model.freeze({layer_name!r}))"
            )
        grads[name] = p.grad_sample
    return float(value), grads


def clip_and_sum(
    grad_samples: dict[str, np.ndarray], clip_norm: float
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Clip each example's whole gradient to norm C and sum over the examples.

    Parameters
    ----------
    grad_samples : dict name -> ndarray (N, *shape)
    clip_norm : float C > 0

    Returns
    -------
    sums : dict name -> ndarray (*shape,)  ``sum_i g_i / max(1, ||g_i|| / C)``
    norms : ndarray (N,), float64           ``||g_i||`` over all parameters, before clipping
    """
    if not clip_norm > 0:
        raise ValueError(f"clip_and_sum: clip_norm must be > 0, got {clip_norm!r}")
    sq = sum(
        np.einsum("ni,ni->n", g.reshape(len(g), -1), g.reshape(len(g), -1), dtype=np.float64)
        for g in grad_samples.values()
    )
    norms = np.sqrt(sq)
    factors = 1.0 / np.maximum(1.0, norms / clip_norm)
    sums = {
        name: np.tensordot(factors.astype(g.dtype), g, axes=(0, 0))
        for name, g in grad_samples.items()
    }
    return sums, norms


def gaussian_noise(
    shapes: dict[str, tuple[int, ...]], std: float, rng: SeedLike = None, dtype=np.float32
) -> dict[str, np.ndarray]:
    """``N(0, std^2)`` arrays, one per name, drawn in the dict's order from one generator."""
    gen = as_generator(rng)
    return {
        name: (std * gen.standard_normal(shape)).astype(dtype) for name, shape in shapes.items()
    }


# ----------------------------------------------------------------------------- the step


def _bookkeeping_pass(model, layers, x, y, loss_fn) -> float:
    """Forward and backward with the trainable layers keeping their input and output
    gradient (``capturing``). Their parameters are frozen for the pass, so backward computes
    only ``dx`` (the weight gradients come from the re-weighted sums instead) and saves
    nothing a frozen layer does not need."""
    trainable = [p for _, layer in layers for p in layer.params.values() if p.trainable]
    for p in trainable:
        p.trainable = False
    for _, layer in layers:  # a forward without backward (evaluation) may have left an input
        layer.saved.clear()  # here that a frozen layer's forward would not overwrite
    try:
        value, dlogits = loss_fn(model.forward(x), y)
        _check_forward(model)
        model.backward(dlogits)
    finally:
        for p in trainable:
            p.trainable = True
    return float(value)


def _ghost_clipped_sums(
    model, x, y, loss_fn, clip_norm, multiplicity: int = 1
) -> tuple[float, dict, np.ndarray]:
    """Clipped sums by ghost norms ("book-keeping", Bu et al. 2023): one forward/backward
    keeps each trainable layer's input and output gradient; the norms come from them, then
    each layer's weight gradient is computed once, from its re-weighted output gradient.
    With ``multiplicity`` K the rows come in groups of K per example (``y`` per row)."""
    validate_model(model, "ghost")
    layers = [
        (name, layer)
        for name, layer in _leaves(model)
        if any(p.trainable for p in layer.params.values())
    ]
    previous = [layer.capturing for _, layer in layers]
    for _, layer in layers:  # only these: parameter-free layers keep nothing extra
        layer.capturing = True
    try:
        value = _bookkeeping_pass(model, layers, x, y, loss_fn)
        sq = np.zeros(len(x) // multiplicity)
        for _, layer in layers:
            layer.last_output = None  # not needed: free it now
            sq += ghost.layer_sq_norms(
                layer, layer.last_input, layer.last_grad_output, multiplicity=multiplicity
            )
        norms = np.sqrt(sq)
        factors = 1.0 / np.maximum(1.0, norms / clip_norm)
        row_factors = np.repeat(factors, multiplicity)  # every copy scaled as its example
        sums = {}
        for name, layer in layers:
            part = ghost.clipped_weight_sums(
                layer, layer.last_input, layer.last_grad_output, row_factors
            )
            prefix = "" if layer is model else f"{name}."
            sums.update({prefix + k: v for k, v in part.items()})
            layer.last_input = layer.last_grad_output = None
    finally:
        for (_, layer), was in zip(layers, previous, strict=True):
            layer.capturing = was
            if not was:
                layer.last_input = layer.last_output = layer.last_grad_output = None
    return value, sums, norms


@dataclass
class DPSGD:
    """DP-SGD on top of any tinyodl optimizer (SGD, Adam, ...).

    Parameters
    ----------
    model : tinyodl Layer / Sequential
    optimizer : tinyodl.nn.Optimizer over the model's parameters
    clip_norm : float
        C, the bound on each example's gradient norm.
    noise_multiplier : float
        sigma: the noise std is ``sigma * C``.
    expected_batch_size : float
        L, what the noisy sum is divided by (``q * n`` under Poisson sampling).
    sample_rate : float, optional
        q, for :meth:`epsilon` (the accountant needs it).
    loss : "cross_entropy", "mse" or callable ``f(logits, y) -> (summed loss, dlogits)``
    clipping : {"per_example", "ghost"}
    max_physical_batch_size : int, optional
        Clip and sum the lot in chunks of at most this many examples (same result, less
        memory); the noise is still added once.
    seed : int or Generator, optional
        The noise generator (``rng``).
    prior : RDPAccountant, optional
        Mechanisms already spent on the same data (e.g. DP-PCA), counted by :meth:`epsilon`.
    multiplicity : int
        K >= 1, augmentation multiplicity (De et al. 2022): the lot's ``x`` holds K
        consecutive rows per example (augmented copies of it) and ``y`` one label per
        example; an example's gradient is the mean over its copies, clipped once, so one
        example still moves the clipped sum by at most C and the accounting is unchanged.

    Attributes
    ----------
    steps_ : int
        Steps taken.
    """

    model: Any
    optimizer: Any
    clip_norm: float
    noise_multiplier: float
    expected_batch_size: float
    sample_rate: float | None = None
    loss: str | LossFn = "cross_entropy"
    clipping: str = "per_example"
    max_physical_batch_size: int | None = None
    seed: SeedLike = None
    prior: Any = None
    multiplicity: int = 1
    steps_: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if not self.clip_norm > 0:
            raise ValueError(f"DPSGD: clip_norm must be > 0, got {self.clip_norm!r}")
        if not self.noise_multiplier >= 0:
            raise ValueError(f"DPSGD: noise_multiplier must be >= 0, got {self.noise_multiplier!r}")
        if not self.expected_batch_size > 0:
            raise ValueError(
                f"DPSGD: expected_batch_size must be > 0, got {self.expected_batch_size!r}"
            )
        if not (isinstance(self.multiplicity, (int, np.integer)) and self.multiplicity >= 1):
            raise ValueError(f"DPSGD: multiplicity must be an int >= 1, got {self.multiplicity!r}")
        validate_model(self.model, self.clipping)
        self.rng = as_generator(self.seed)
        self._loss_fn = _mean_over_copies(_sum_loss(self.loss), int(self.multiplicity))

    def _trainable(self) -> list[tuple[str, Any]]:
        return [(n, p) for n, p in self.model.named_parameters() if p.trainable]

    def clipped_sum(self, x: np.ndarray, y: np.ndarray) -> tuple[dict, np.ndarray, float]:
        """``(sums, norms, summed loss)`` of the lot ``(x, y)`` before noise (``x`` holds
        ``multiplicity`` rows per label of ``y``)."""
        k = int(self.multiplicity)
        if len(x) != k * len(y):
            raise ValueError(
                f"DPSGD: with multiplicity {k} the lot needs {k} rows of x per label, got "
                f"{len(x)} rows for {len(y)} labels"
            )
        params = self._trainable()
        sums = {n: np.zeros(p.shape, p.dtype) for n, p in params}
        norms, total = [np.zeros(0)], 0.0
        chunk = self.max_physical_batch_size or max(len(y), 1)  # in examples
        for start in range(0, len(y), chunk):
            xb, yb = x[start * k : (start + chunk) * k], y[start : start + chunk]
            yb = np.repeat(yb, k) if k > 1 else yb  # one label per row
            if self.clipping == "ghost":
                value, part, n = _ghost_clipped_sums(
                    self.model, xb, yb, self._loss_fn, self.clip_norm, k
                )
            else:
                value, grads = per_example_gradients(self.model, xb, yb, self._loss_fn)
                if k > 1:  # an example's gradient: the sum over its copies (each / K)
                    grads = {name: ghost._by_example(g, k).sum(axis=1) for name, g in grads.items()}
                part, n = clip_and_sum(grads, self.clip_norm)
                for _, p in params:
                    p.grad_sample = None  # free the N x model tensor before the next chunk
            for name in sums:
                sums[name] += part[name]
            norms.append(n)
            total += value
        return sums, np.concatenate(norms), total

    def privatize(
        self, x: np.ndarray, y: np.ndarray, noise: dict[str, np.ndarray] | None = None
    ) -> dict[str, float]:
        """Set every trainable ``param.grad`` to the noisy clipped average of the lot.

        Parameters
        ----------
        x, y : the lot (any size, also 0; ``multiplicity`` rows of ``x`` per label)
        noise : dict name -> ndarray, optional
            Noise to add instead of drawing ``N(0, sigma^2 C^2)`` (to reproduce another
            implementation's step exactly, e.g. Opacus's, in the tests).

        Returns
        -------
        dict with ``batch_size``, ``loss`` (mean over the lot), ``mean_norm`` and
        ``clipped_fraction``
        """
        sums, norms, total = self.clipped_sum(x, y)
        if noise is None:
            shapes = {name: s.shape for name, s in sums.items()}
            std = self.noise_multiplier * self.clip_norm
            dtype = next(iter(sums.values())).dtype if sums else np.float32
            noise = gaussian_noise(shapes, std, self.rng, dtype)
        for name, p in self._trainable():
            p.grad = ((sums[name] + noise[name]) / self.expected_batch_size).astype(p.dtype)
            p.grad_sample = None
        n = len(y)
        return {
            "batch_size": n,
            "loss": total / n if n else float("nan"),
            "mean_norm": float(norms.mean()) if n else float("nan"),
            "clipped_fraction": float(np.mean(norms > self.clip_norm)) if n else float("nan"),
        }

    def step(self, x: np.ndarray, y: np.ndarray, noise: dict | None = None) -> dict[str, float]:
        """:meth:`privatize` then ``optimizer.step()``; returns the step's statistics."""
        stats = self.privatize(x, y, noise)
        self.optimizer.step()
        self.steps_ += 1
        return stats

    def epsilon(self, delta: float, conversion: str = "improved") -> float:
        """Epsilon spent so far (needs ``sample_rate``)."""
        if self.sample_rate is None:
            raise ValueError("DPSGD.epsilon: construct DPSGD with sample_rate= to account")
        return _epsilon(
            q=self.sample_rate,
            noise_multiplier=self.noise_multiplier,
            steps=self.steps_,
            delta=delta,
            conversion=conversion,
            prior=self.prior,
        )
