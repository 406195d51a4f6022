"""Numerical gradient checking (chapter 00), after the CS231n assignments.

A backward pass is checked against central differences,
``df/dx_i ~= (f(x + h e_i) - f(x - h e_i)) / (2h)``, whose error is O(h^2). Compare with
:func:`rel_error`, ``max |a - b| / max(1e-8, |a| + |b|)``. In float64 with ``h = 1e-6``,
rough expectations for a correct backward are:

* ``< 1e-5``: correct. Typical values are 1e-10 to 1e-6 for linear, conv, pooling and
  batchnorm; the larger ones come from small gradient entries, where the rounding error of
  ``f`` (about ``1e-16 * |f| / h``) dominates -- ``h = 1e-5`` often does a little better;
* ``1e-5 .. 1e-3``: suspicious unless the function has kinks (ReLU, max pooling) that a
  probe ``x +- h`` may cross;
* ``> 1e-2``: almost certainly a bug.

float32 has ~7 significant digits: never gradient-check in float32 (``model.astype(np.float64)``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np

from tinyodl.nn.utils import SeedLike, as_generator


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """Largest relative error ``max |a - b| / max(1e-8, |a| + |b|)`` (see the module docs)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error: shapes differ, {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))


def numerical_gradient(
    f: Callable[[np.ndarray], np.ndarray | float],
    x: np.ndarray,
    h: float = 1e-6,
    df: np.ndarray | None = None,
    indices: list[tuple[int, ...]] | None = None,
) -> np.ndarray:
    """Central-difference gradient of ``f`` at ``x`` (``x`` is perturbed in place, restored).

    Parameters
    ----------
    f : callable
        ``f(x)`` returns a scalar, or an array when ``df`` is given.
    x : ndarray (float64 for meaningful results)
    h : float, default 1e-6
    df : ndarray, optional
        Upstream gradient: the result is the gradient of ``sum(f(x) * df)``, which is how a
        layer's backward is checked against its forward.
    indices : list of index tuples, optional
        Only probe these entries (the others stay 0): a sparse check for big tensors.

    Returns
    -------
    grad : ndarray, shape of x
    """
    grad = np.zeros(x.shape, dtype=np.float64)

    def value() -> float:
        out = f(x)
        return float(np.sum(np.asarray(out) * df)) if df is not None else float(out)

    if indices is None:
        indices = list(np.ndindex(x.shape))
    for i in indices:
        old = x[i]
        x[i] = old + h
        plus = value()
        x[i] = old - h
        minus = value()
        x[i] = old
        grad[i] = (plus - minus) / (2 * h)
    return grad


def _rng_states(layer) -> list:
    """Every Generator inside the layer tree (dropout), to replay the same masks."""
    layers = [layer, *(child for _, child in layer.named_layers())]
    return [
        (g, copy.deepcopy(g.bit_generator.state))
        for g in (getattr(m, "rng", None) for m in layers)
        if isinstance(g, np.random.Generator)
    ]


def check_layer_gradients(
    layer,
    x: np.ndarray,
    seed: SeedLike = 0,
    h: float = 1e-6,
    train: bool | None = None,
    num_checks: int | None = None,
) -> dict[str, float]:
    """Compare a layer's backward with central differences, in float64.

    A float64 deep copy of ``layer`` is checked (the layer itself is not modified). The loss
    is ``sum(forward(x) * dout)`` with a random ``dout``. Random layers (dropout) replay the
    same masks at every probe.

    Parameters
    ----------
    layer : Layer (a single layer or a whole model)
    x : ndarray, an input batch
    seed : int or Generator
        Draws ``dout``.
    h : float, default 1e-6
    train : bool, optional
        Passed to ``forward``: None (the default) follows the layers' modes (a new layer
        is in training mode); True/False forces training or evaluation mode.
    num_checks : int, optional
        Probe only this many random entries of each tensor (CS231n's sparse check), for
        models too big to probe every weight; the relative error is over those entries.

    Returns
    -------
    dict
        ``"x"`` -> relative error of ``dL/dx``, and one entry per trainable parameter
        (dotted name, e.g. ``"expand.weight"``).
    """
    model = copy.deepcopy(layer).astype(np.float64)
    x = np.array(x, dtype=np.float64)
    states = _rng_states(model)

    def run(inp: np.ndarray) -> np.ndarray:
        for gen, state in states:
            gen.bit_generator.state = copy.deepcopy(state)
        return model.forward(inp, train)

    rng = as_generator(seed)
    dout = rng.standard_normal(run(x).shape)
    model.zero_grad(set_to_none=True)
    run(x)
    dx = model.backward(dout)

    def compare(analytic: np.ndarray, target: np.ndarray, f) -> float:
        if num_checks is None or num_checks >= target.size:
            return rel_error(analytic, numerical_gradient(f, target, h, dout))
        flat = rng.choice(target.size, size=num_checks, replace=False)
        idx = [np.unravel_index(i, target.shape) for i in flat]
        numeric = numerical_gradient(f, target, h, dout, idx)
        picked = tuple(np.array(axis) for axis in zip(*idx, strict=True))
        return rel_error(analytic[picked], numeric[picked])

    errors = {"x": compare(dx, x, run)}
    for name, p in model.named_parameters():
        if p.trainable:
            analytic = p.grad if p.grad is not None else np.zeros_like(p.data)
            errors[name] = compare(analytic, p.data, lambda _w: run(x))
    return errors
