"""Batch normalisation, pure numpy reference (chapter 00; Ioffe & Szegedy 2015).

The layer :class:`tinyodl.nn.BatchNorm2d` and :func:`tinyodl.nn.functional.batchnorm_forward`
call these through :mod:`tinyodl.ops`; the compiled twin is ``kernels/norm.pyx`` (same
signatures, same results up to float rounding). Statistics are taken over the batch and,
for (N, C, L) and (N, C, H, W) inputs, over the other axes: one mean and variance per
channel C.
"""

from __future__ import annotations

import numpy as np

from tinyodl.reference._checks import check_float


def _axes(x: np.ndarray) -> tuple[int, ...]:
    """Axes a batchnorm averages over: all but the channel axis 1 (batch, length, H, W)."""
    return (0, *range(2, x.ndim))


def _per_channel(v: np.ndarray, ndim: int) -> np.ndarray:
    """View a (C,) vector so it broadcasts against (N, C), (N, C, L) or (N, C, H, W)."""
    return v.reshape(1, -1, *([1] * (ndim - 2)))


def check_batchnorm(fn: str, x, gamma, beta, train, running_mean, running_var):
    """Validate the arguments of :func:`batchnorm_forward` (shared by both backends)."""
    if not isinstance(x, np.ndarray) or x.ndim not in (2, 3, 4):
        got = x.shape if isinstance(x, np.ndarray) else type(x).__name__
        raise ValueError(f"{fn}: x must be (N, C), (N, C, L) or (N, C, H, W), got {got}")
    x = check_float(fn, "x", x, x.ndim)
    c = x.shape[1]
    for name, v in (("gamma", gamma), ("beta", beta)):
        if not isinstance(v, np.ndarray) or v.shape != (c,):
            got = v.shape if isinstance(v, np.ndarray) else type(v).__name__
            raise ValueError(f"{fn}: {name} must have shape ({c},), got {got}")
    if not train:
        if running_mean is None or running_var is None:
            raise ValueError(f"{fn}: evaluation mode needs running_mean/running_var")
        for name, v in (("running_mean", running_mean), ("running_var", running_var)):
            if np.shape(v) != (c,):
                raise ValueError(f"{fn}: {name} must have shape ({c},), got {np.shape(v)}")
    return x


def batchnorm_forward(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    eps: float = 1e-5,
    train: bool = True,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
):
    """``y = gamma * (x - mean) / sqrt(var + eps) + beta`` per channel.

    Parameters
    ----------
    x : float array, shape (N, C), (N, C, L) or (N, C, H, W)
    gamma, beta : arrays, shape (C,)
    eps : float
    train : bool
        Batch statistics (biased variance) in training, the running ones in evaluation.
    running_mean, running_var : arrays, shape (C,), needed in evaluation

    Returns
    -------
    out : array, shape of x
    x_hat : array, shape of x -- the normalised input, ``(x - mean) * inv_std``
    inv_std : array (C,) -- ``1 / sqrt(var + eps)``
    mean, var : arrays (C,) -- the statistics used (the batch's in training)
    """
    x = check_batchnorm("batchnorm_forward", x, gamma, beta, train, running_mean, running_var)
    axes = _axes(x)
    if train:
        mean = x.mean(axis=axes)
        var = x.var(axis=axes)
    else:
        mean, var = running_mean, running_var
    inv_std = (1.0 / np.sqrt(var + eps)).astype(x.dtype)
    x_hat = (x - _per_channel(mean, x.ndim)) * _per_channel(inv_std, x.ndim)
    out = _per_channel(gamma, x.ndim) * x_hat + _per_channel(beta, x.ndim)
    return out, x_hat, inv_std, mean, var


def batchnorm_backward(
    dout: np.ndarray,
    x_hat: np.ndarray | None,
    gamma: np.ndarray,
    inv_std: np.ndarray,
    train: bool,
):
    """Gradients of :func:`batchnorm_forward`.

    In training mode the mean and variance depend on every example (M = values averaged
    per channel)::

        dx = gamma * inv_std / M * (M * dout - sum(dout) - x_hat * sum(dout * x_hat))

    In evaluation mode the statistics are constants: ``dx = gamma * inv_std * dout``.
    ``dgamma = sum(dout * x_hat)`` needs ``x_hat``; without it (frozen gamma in evaluation)
    ``dgamma`` is None.

    Returns
    -------
    dx : array, shape of dout
    dgamma : array (C,) or None
    dbeta : array (C,)
    """
    axes = _axes(dout)
    scale = _per_channel(gamma * inv_std, dout.ndim)
    dbeta = dout.sum(axis=axes)
    dgamma = None if x_hat is None else (dout * x_hat).sum(axis=axes)
    if not train:
        return dout * scale, dgamma, dbeta
    if x_hat is None:
        raise ValueError("batchnorm_backward: training mode needs x_hat")
    m = dout.size // dout.shape[1]
    dx = (scale / m) * (
        m * dout
        - _per_channel(dbeta, dout.ndim)
        - x_hat * _per_channel((dout * x_hat).sum(axis=axes), dout.ndim)
    )
    return dx, dgamma, dbeta
