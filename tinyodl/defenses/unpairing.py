"""Similarity unpairing (Hong, Carlini and Kurakin 2023; textbook section 12.6.5).

Adversarial examples crafted on the published on-device model transfer to the cloud model
because the two models' *input gradients* point the same way. Similarity unpairing
fine-tunes the cloud model so that its input gradients decorrelate from the on-device
model's while its accuracy stays:

    min_theta  CE(f_theta(x), y) + lambda * mean_i cos^2(g_i(theta), d_i),
    g_i = dL_cloud(x_i, y_i)/dx_i,   d_i = dL_device(x_i, y_i)/dx_i  (fixed).

(Hong et al. also describe the other order -- fine-tune first, then derive the on-device
model from the fine-tuned one; what matters is that the pair's gradients are unpaired.)

The penalty depends on an input gradient, so its weight gradient is a mixed second
derivative. With ``w_i = dR/dg_i`` (closed form, :func:`cosine_penalty`),

    dR/dtheta = d/dtheta sum_i <w_i, dL_i/dx_i> = (dL/dtheta(x + h w) - dL/dtheta(x - h w)) / (2 h)

(the directional derivative of ``dL/dtheta`` along ``w`` in *input* space; Finlay and
Oberman 2019 use the same trick for input-gradient regularisation): two more
forward/backward passes per step, with the foundation's first-order backward only.
:func:`unpairing_penalty` returns the value and that gradient (checked against finite
differences in the tests); :func:`similarity_unpairing` is the fine-tuning loop.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinyodl.attacks.estimator import Classifier, as_classifier
from tinyodl.nn import softmax_cross_entropy


def _unit_rows(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flat = v.reshape(len(v), -1).astype(np.float64)
    norm = np.linalg.norm(flat, axis=1)
    return flat / np.maximum(norm, 1e-30)[:, None], norm


def cosine_penalty(g: np.ndarray, d: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """``R = mean_i cos^2(g_i, d_i)``, ``dR/dg`` and the cosines.

    ``d cos(g, d) / dg = d_hat / ||g|| - cos * g / ||g||^2``.

    Returns
    -------
    R : float
    dR_dg : ndarray, shape of ``g`` (float64)
    cos : ndarray (N,)
    """
    gh, gn = _unit_rows(g)
    dh, _ = _unit_rows(d)
    cos = (gh * dh).sum(axis=1)
    n = len(g)
    dcos = (dh - cos[:, None] * gh) / np.maximum(gn, 1e-30)[:, None]
    return float(np.mean(cos**2)), ((2.0 * cos / n)[:, None] * dcos).reshape(g.shape), cos


def _trainable(model: Any) -> list:
    return [p for _, p in model.named_parameters() if p.trainable]


def _weight_gradient(model: Any, x: np.ndarray, y: np.ndarray, scale: float) -> list[np.ndarray]:
    """``scale * dL_sum/dtheta`` at ``x`` (evaluation mode), leaving ``param.grad`` as it was."""
    params = _trainable(model)
    kept = [p.grad for p in params]
    for p in params:
        p.grad = None
    try:
        logits = model.forward(x, train=False)
        _, d = softmax_cross_entropy(logits, y, reduction="sum")
        model.backward(d * np.asarray(scale, d.dtype))
        return [np.zeros_like(p.data) if p.grad is None else p.grad for p in params]
    finally:
        for p, g in zip(params, kept, strict=True):
            p.grad = g


def unpairing_penalty(
    cloud: Any, x: np.ndarray, y: np.ndarray, device_grads: np.ndarray, h: float = 1e-3
) -> tuple[float, list[np.ndarray], np.ndarray]:
    """The penalty ``mean_i cos^2(g_i, d_i)`` and its gradient w.r.t. the cloud's weights.

    Parameters
    ----------
    cloud : tinyodl model
    x, y : a batch (N, ...) and its labels
    device_grads : ndarray, shape of ``x``
        The on-device model's input gradients ``d_i`` (held fixed).
    h : float, default 1e-3
        Input-space step of the symmetric difference (along the unit direction of ``w``).

    Returns
    -------
    R : float
    grads : list of ndarray
        ``dR/dtheta`` for the trainable parameters, in model order.
    cos : ndarray (N,)
    """
    g = Classifier(cloud, clip_values=None).loss_gradient(x, y)
    value, w, cos = cosine_penalty(g, device_grads)
    wn = float(np.linalg.norm(w))
    if wn == 0.0:
        return value, [np.zeros_like(p.data) for p in _trainable(cloud)], cos
    step = (h * w / wn).astype(x.dtype)
    plus = _weight_gradient(cloud, x + step, y, wn / (2 * h))
    minus = _weight_gradient(cloud, x - step, y, wn / (2 * h))
    return value, [a - b for a, b in zip(plus, minus, strict=True)], cos


def gradient_similarity(model_a: Any, model_b: Any, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cosine similarity (N,) between the two models' input gradients of the loss."""
    ga = as_classifier(model_a, None).loss_gradient(x, y)
    gb = as_classifier(model_b, None).loss_gradient(x, y)
    a, _ = _unit_rows(ga)
    b, _ = _unit_rows(gb)
    return (a * b).sum(axis=1)


def similarity_unpairing(
    cloud: Any,
    device: Any,
    optimizer: Any,
    x: np.ndarray,
    y: np.ndarray,
    lam: float = 1.0,
    epochs: int = 1,
    batch_size: int = 64,
    seed: int = 0,
    h: float = 1e-3,
    max_grad_norm: float | None = 1.0,
    progress: bool = False,
) -> dict[str, list[float]]:
    """Fine-tune ``cloud`` with cross-entropy + ``lam`` * the unpairing penalty.

    Parameters
    ----------
    cloud : tinyodl model
        Updated in place by ``optimizer``.
    device : Classifier or model
        The on-device model (or its differentiable twin); only its input gradients are used.
    optimizer : tinyodl.nn optimizer on ``cloud``
    x, y : training data
    lam : float
        Weight of the penalty.
    epochs, batch_size, seed : as :func:`tinyodl.train.fit`
    h : float
        See :func:`unpairing_penalty`.
    max_grad_norm : float or None, default 1
        Clip the norm of the penalty's weight gradient. ``d cos / d g`` grows like
        ``1 / ||g||``, so the few examples the model is very sure of (tiny input gradients)
        can produce huge steps that wreck the accuracy; clipping keeps the fine-tuning
        gentle (None: no clipping).

    Returns
    -------
    dict of per-step lists: ``loss`` (cross-entropy), ``penalty`` (mean cos^2), ``cos``
    (mean cosine).
    """
    from tinyodl.data import BatchSampler

    dev = as_classifier(device, clip_values=None)
    sampler = BatchSampler(len(x), batch_size, seed)
    log: dict[str, list[float]] = {"loss": [], "penalty": [], "cos": []}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs * len(sampler), desc="similarity unpairing")
    for _ in range(epochs):
        for idx in sampler:
            xb, yb = x[idx], y[idx]
            d = dev.loss_gradient(xb, yb)
            value, pgrads, cos = unpairing_penalty(cloud, xb, yb, d, h)
            optimizer.zero_grad()
            logits = cloud.forward(xb, train=True)
            ce, dlogits = softmax_cross_entropy(logits, yb)
            cloud.backward(dlogits)
            norm = float(np.sqrt(sum(float(np.sum(g * g)) for g in pgrads)))
            scale = lam
            if max_grad_norm is not None and norm > max_grad_norm:
                scale *= max_grad_norm / norm
            for p, g in zip(_trainable(cloud), pgrads, strict=True):
                p.accumulate_grad(np.asarray(scale * g, p.data.dtype))
            optimizer.step()
            log["loss"].append(float(ce))
            log["penalty"].append(value)
            log["cos"].append(float(np.mean(cos)))
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return log


__all__ = ["cosine_penalty", "gradient_similarity", "similarity_unpairing", "unpairing_penalty"]
