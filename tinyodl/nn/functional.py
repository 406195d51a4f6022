"""Layers as forward/backward function pairs, in the style of the CS231n assignments.

Chapter 00 (foundations). Each ``*_forward`` returns ``(out, cache)``; the matching
``*_backward(dout, cache)`` returns the gradient with respect to the input (and the
parameters). ``cache`` is a plain dict, so you can see -- and count the bytes of -- what a
layer must keep between its forward and backward pass:

* ``linear``/``conv2d``: the input ``x`` is needed only for ``dW`` (TinyTL, Cai et al. 2020).
  Leave ``"x"`` out of the cache and the backward returns ``dw = None``.
* ``relu``/``relu6``: a boolean mask (1 byte per element, 1 bit in a packed engine).
* ``maxpool2d``: the argmax of each window; ``avgpool2d``: nothing but shapes.
* ``batchnorm``: the normalised input ``x_hat`` and ``1/sqrt(var + eps)``.

The matrix work is done by :mod:`tinyodl.ops` (numpy reference or Cython kernels).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tinyodl import ops

Cache = dict

# ----------------------------------------------------------------------------- linear


def linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None):
    """``out = x @ w.T + b``.

    Parameters
    ----------
    x : ndarray, shape (N, in)
    w : ndarray, shape (out, in)
    b : ndarray, shape (out,), optional

    Returns
    -------
    out : ndarray, shape (N, out)
    cache : dict with ``x`` and ``w``
    """
    out = ops.linear_forward(x, w, b)
    return out, {"x": x, "w": w}


def linear_backward(dout: np.ndarray, cache: Cache, need_dx: bool = True):
    """Gradients of :func:`linear_forward`.

    ``need_dx=False`` skips ``dx`` (None): the input of a model's first layer is data.

    Returns
    -------
    dx : ndarray, shape (N, in), or None  ``dout @ w``
    dw : ndarray (out, in) or None    ``dout.T @ x``; None when ``"x"`` is not cached
    db : ndarray, shape (out,)        ``dout.sum(0)``
    """
    dx = ops.linear_backward_input(dout, cache["w"]) if need_dx else None
    dw = ops.linear_backward_weight(dout, cache["x"]) if "x" in cache else None
    return dx, dw, ops.bias_grad(dout)  # dout.sum(axis=0)


def linear_per_example_grads(dout: np.ndarray, x: np.ndarray):
    """Per-example gradients of a linear layer (for DP-SGD, chapter 10).

    Returns
    -------
    dw_sample : ndarray, shape (N, out, in)   ``dw_sample[n] = outer(dout[n], x[n])``
    db_sample : ndarray, shape (N, out)       ``dout``
    """
    return np.einsum("no,ni->noi", dout, x), dout.copy()


# ----------------------------------------------------------------------------- conv2d


def conv2d_forward(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    groups: int = 1,
):
    """2-D (grouped) convolution, NCHW.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    w : ndarray, shape (F, C/groups, KH, KW)
    b : ndarray, shape (F,), optional
    stride, padding : int or pair
    groups : int

    Returns
    -------
    out : ndarray, shape (N, F, OH, OW)
    cache : dict with ``x``, ``w``, ``x_shape``, ``stride``, ``padding``, ``groups``
    """
    out = ops.conv2d_forward(x, w, b, stride, padding, groups)
    cache = {"x": x, "w": w, "x_shape": x.shape, "stride": stride, "padding": padding}
    cache["groups"] = groups
    return out, cache


def conv2d_backward(dout: np.ndarray, cache: Cache, need_dx: bool = True):
    """Gradients of :func:`conv2d_forward`.

    ``need_dx=False`` skips ``dx`` (None): the input of a model's first layer is data.

    Returns
    -------
    dx : ndarray, shape (N, C, H, W), or None
    dw : ndarray, shape (F, C/groups, KH, KW), or None when ``"x"`` is not cached
    db : ndarray, shape (F,)
    """
    geometry = (cache["stride"], cache["padding"], cache["groups"])
    w = cache["w"]
    dx = ops.conv2d_backward_input(dout, w, cache["x_shape"], *geometry) if need_dx else None
    dw = None
    if "x" in cache:
        dw = ops.conv2d_backward_weight(dout, cache["x"], w.shape, *geometry)
    return dx, dw, ops.bias_grad(dout)  # dout.sum(axis=(0, 2, 3))


def conv2d_per_example_grads(
    dout: np.ndarray,
    x: np.ndarray,
    w_shape: Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    groups: int = 1,
):
    """Per-example conv gradients: ``dw[n] = dout[n] @ im2col(x)[n].T`` per group.

    Returns
    -------
    dw_sample : ndarray, shape (N, F, C/groups, KH, KW)
    db_sample : ndarray, shape (N, F)
    """
    n, f = dout.shape[:2]
    kh, kw = w_shape[2], w_shape[3]
    cols = ops.im2col(x, (kh, kw), stride, padding)  # (N, C*KH*KW, L)
    cols = cols.reshape(n, groups, cols.shape[1] // groups, cols.shape[-1])  # (N, G, K, L)
    d = dout.reshape(n, groups, f // groups, cols.shape[-1])  # (N, G, F/G, L)
    dw = np.einsum("ngfl,ngkl->ngfk", d, cols)
    return dw.reshape(n, *w_shape), dout.sum(axis=(2, 3))


# ----------------------------------------------------------------------------- activations


def relu_forward(x: np.ndarray):
    """``max(x, 0)``; the cache is the boolean mask ``x > 0``, not ``x``.

    ``x * (x > 0)`` in one pass (:func:`tinyodl.reference.elementwise.relu_forward`).
    """
    out, mask = ops.relu_forward(x)
    return out, {"mask": mask}


def relu_backward(dout: np.ndarray, cache: Cache) -> np.ndarray:
    """``dout * (x > 0)`` (:func:`tinyodl.reference.elementwise.relu_backward`)."""
    return ops.relu_backward(dout, cache["mask"])


def relu6_forward(x: np.ndarray):
    """``min(max(x, 0), 6)``; the cache is the mask ``0 < x < 6`` (where the slope is 1)."""
    mask = (x > 0) & (x < 6)
    return np.clip(x, 0, 6), {"mask": mask}


def relu6_backward(dout: np.ndarray, cache: Cache) -> np.ndarray:
    """``dout * (0 < x < 6)``."""
    return dout * cache["mask"]


def softmax_forward(x: np.ndarray, axis: int = 1):
    """Softmax of ``x`` along ``axis`` (the classes of (N, C)), computed stably.

    ``exp(x - max) / sum(exp(x - max))``; the cache keeps the output ``s``.
    """
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    out = e / e.sum(axis=axis, keepdims=True)
    return out, {"out": out, "axis": axis}


def softmax_backward(dout: np.ndarray, cache: Cache) -> np.ndarray:
    """``dx = s * (dout - sum(dout * s))`` along the softmax axis, ``s`` the output."""
    s, axis = cache["out"], cache.get("axis", 1)
    return s * (dout - (dout * s).sum(axis=axis, keepdims=True))


# ----------------------------------------------------------------------------- pooling


def maxpool2d_forward(x: np.ndarray, kernel_size, stride=None, padding=0, ceil_mode=False):
    """Max pooling; the cache keeps the argmax of each window (int64) and ``x.shape``.

    ``ceil_mode`` rounds the output size up (PyTorch's rule). A NaN wins its window.
    """
    out, argmax = ops.maxpool2d_forward(x, kernel_size, stride, padding, ceil_mode)
    return out, {"argmax": argmax, "x_shape": x.shape}


def maxpool2d_backward(dout: np.ndarray, cache: Cache) -> np.ndarray:
    """Send each output gradient to the pixel that won its window."""
    return ops.maxpool2d_backward(dout, cache["argmax"], cache["x_shape"])


def avgpool2d_forward(
    x: np.ndarray, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True
):
    """Average pooling; the cache holds only the geometry.

    ``count_include_pad=True`` (PyTorch's default) counts padding as zeros (divisor
    ``KH*KW``); False divides by the number of real pixels in each window. ``ceil_mode``
    rounds the output size up; window positions past the padding are never counted.
    """
    out = ops.avgpool2d_forward(x, kernel_size, stride, padding, ceil_mode, count_include_pad)
    cache = {"x_shape": x.shape, "kernel_size": kernel_size, "stride": stride}
    cache.update(padding=padding, ceil_mode=ceil_mode, count_include_pad=count_include_pad)
    return out, cache


def avgpool2d_backward(dout: np.ndarray, cache: Cache) -> np.ndarray:
    """Spread each output gradient evenly over its window (``dout / divisor``)."""
    return ops.avgpool2d_backward(
        dout,
        cache["x_shape"],
        cache["kernel_size"],
        cache["stride"],
        cache["padding"],
        cache.get("ceil_mode", False),
        cache.get("count_include_pad", True),
    )


def global_avgpool_forward(x: np.ndarray):
    """Mean over H and W: ``(N, C, H, W) -> (N, C)`` (an average pool with an H x W window)."""
    n, c, h, w = x.shape
    out = ops.avgpool2d_forward(x, (h, w))
    return out.reshape(n, c), {"x_shape": x.shape}


def global_avgpool_backward(dout: np.ndarray, cache: Cache) -> np.ndarray:
    """Each pixel receives ``dout[n, c] / (H * W)``."""
    n, c, h, w = cache["x_shape"]
    return ops.avgpool2d_backward(dout.reshape(n, c, 1, 1), (n, c, h, w), (h, w))


# ----------------------------------------------------------------------------- batchnorm


def batchnorm_forward(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    eps: float = 1e-5,
    train: bool = True,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
):
    """Batch normalisation (Ioffe & Szegedy 2015) per channel of (N, C), (N, C, L), (N, C, H, W).

    ``y = gamma * (x - mean) / sqrt(var + eps) + beta``, with the batch mean and (biased)
    variance in training and the running statistics in evaluation. Updating the running
    statistics is the layer's job: the cache returns the batch ``mean`` and ``var``.

    The arithmetic is the kernel ``batchnorm_forward`` of :mod:`tinyodl.ops` (read the
    numpy version in ``tinyodl/reference/norm.py``).

    Returns
    -------
    out : ndarray, same shape as x
    cache : dict with ``x_hat``, ``inv_std`` (C,), ``gamma``, ``train``; plus ``mean`` and
        ``var`` (C,) of the batch in training mode
    """
    out, x_hat, inv_std, mean, var = ops.batchnorm_forward(
        x, gamma, beta, eps, train, running_mean, running_var
    )
    cache = {"x_hat": x_hat, "inv_std": inv_std, "gamma": gamma, "train": train}
    if train:
        cache.update(mean=mean, var=var)
    return out, cache


def batchnorm_backward(dout: np.ndarray, cache: Cache):
    """Gradients of :func:`batchnorm_forward`.

    In training mode the mean and variance depend on every example, which gives the
    compact form (M = number of values averaged per channel)::

        dx = gamma * inv_std / M * (M * dout - sum(dout) - x_hat * sum(dout * x_hat))

    In evaluation mode the statistics are constants: ``dx = gamma * inv_std * dout``.
    ``dgamma`` needs ``x_hat``; when it is not cached (frozen gamma, evaluation mode)
    ``dgamma`` is None.

    Returns
    -------
    dx : ndarray, shape of dout
    dgamma, dbeta : ndarray, shape (C,)
    """
    return ops.batchnorm_backward(
        dout, cache.get("x_hat"), cache["gamma"], cache["inv_std"], cache["train"]
    )


def batchnorm_per_example_grads(dout: np.ndarray, cache: Cache):
    """Per-example ``dgamma`` and ``dbeta`` of an *evaluation-mode* batchnorm (DP-SGD).

    With the running statistics the layer is ``y = gamma * x_hat + beta`` per channel and
    each example's gradient is its own sum over the non-batch axes. (In training mode the
    batch statistics couple the examples and per-example gradients are not defined.)

    Returns
    -------
    dgamma_sample : ndarray (N, C), or None when ``"x_hat"`` is not cached
    dbeta_sample : ndarray (N, C)
    """
    if cache["train"]:
        raise ValueError(
            "batchnorm_per_example_grads: undefined in training mode (the batch statistics "
            "mix the examples); use evaluation mode"
        )
    axes = tuple(range(2, dout.ndim))
    x_hat = cache.get("x_hat")
    dgamma = None if x_hat is None else (dout * x_hat).sum(axis=axes)
    return dgamma, dout.sum(axis=axes)


# ----------------------------------------------------------------------------- dropout


def dropout_forward(
    x: np.ndarray,
    p: float,
    rng: np.random.Generator | None = None,
    train: bool = True,
    mask: np.ndarray | None = None,
):
    """Inverted dropout: zero each entry with probability ``p``, scale the rest by 1/(1-p).

    Parameters
    ----------
    x : ndarray
    p : float in [0, 1)
        Drop probability.
    rng : numpy Generator
        Draws the mask (needed in training mode unless ``mask`` is given).
    train : bool
        In evaluation mode dropout is the identity.
    mask : boolean ndarray, optional
        A fixed keep-mask (True = keep), e.g. for a gradient check.

    Returns
    -------
    out : ndarray
    cache : dict with the boolean keep ``mask`` and ``p`` (empty in evaluation mode)
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout_forward: p must be in [0, 1), got {p}")
    if not train or p == 0.0:
        return x, {}
    if mask is None:
        if rng is None:
            raise ValueError("dropout_forward: training mode needs rng (or a fixed mask)")
        mask = rng.random(x.shape) >= p
    return x * mask / x.dtype.type(1.0 - p), {"mask": mask, "p": p}


def dropout_backward(dout: np.ndarray, cache: Cache) -> np.ndarray:
    """``dout * mask / (1 - p)``; the identity if the forward pass was in evaluation mode."""
    if "mask" not in cache:
        return dout
    return dout * cache["mask"] / dout.dtype.type(1.0 - cache["p"])
