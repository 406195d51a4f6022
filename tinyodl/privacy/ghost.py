"""Ghost clipping: per-example gradient norms without per-example gradients.

Chapter 10, section "memory". DP-SGD needs ``||g_n||``, the norm of every example's whole
gradient, before it can clip; the plain way materialises ``g_n`` for every parameter, a
tensor ``N`` times the size of the model. But a layer's per-example gradient is a product
of two things backward already holds -- the layer input ``a_n`` and the output gradient
``d_n`` -- and its norm can be read off them directly (Goodfellow 2015; Li et al. 2022
"ghost clipping"; Bu et al. 2023 "book-keeping"):

* Linear, ``g_n = d_n a_n^T`` (an outer product):
  ``||g_n||^2 = ||d_n||^2 ||a_n||^2``  -- two vectors of N numbers instead of N (out x in).
* Conv2d, ``g_n = D_n U_n^T`` with ``U_n = im2col(a_n)`` (K x L) and ``D_n`` (F x L), per group:
  ``||g_n||^2 = sum_{l, l'} (U_n^T U_n)_{l l'} (D_n^T D_n)_{l l'}``  -- two L x L Gram matrices.
  That is cheaper than ``g_n`` (F x K) only when ``2 L^2 < F K``; :func:`conv2d_sq_norms`
  picks the smaller of the two per layer ("mixed ghost clipping", Bu et al. 2022).
* Biases: ``g_n`` is ``d_n`` summed over positions -- as small as the bias itself.

With the norms, the clip factors ``c_n = min(1, C / ||g_n||)`` are known, and the clipped
sum ``sum_n c_n g_n`` is one ordinary weight-gradient call on the re-weighted output
gradients ``c_n d_n`` (:func:`clipped_weight_sums`) -- the same numbers as clipping the
materialised ``g_n``, at a fraction of the memory. The notebook and ``tinyodl bench
dpmemory`` measure the two side by side.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tinyodl import ops
from tinyodl.nn.conv_layers import Conv2d
from tinyodl.nn.layers import Linear

__all__ = [
    "clipped_weight_sums",
    "conv2d_ghost_is_cheaper",
    "conv2d_sq_norms",
    "layer_sq_norms",
    "linear_sq_norms",
]


def linear_sq_norms(x: np.ndarray, dout: np.ndarray, multiplicity: int = 1) -> np.ndarray:
    """``||d_n a_n^T||_F^2 = ||d_n||^2 ||a_n||^2`` for every example.

    With augmentation multiplicity K (De et al. 2022) example n owns K consecutive rows
    (its augmented copies) and its gradient is ``g_n = sum_k d_nk a_nk^T``, whose squared
    norm is ``sum_{k,l} (a_nk . a_nl)(d_nk . d_nl)``: two K x K Gram matrices per example.

    Parameters
    ----------
    x : ndarray, shape (N K, in)      the layer input
    dout : ndarray, shape (N K, out)  the gradient of the (summed) loss w.r.t. the output
    multiplicity : int
        K, rows per example (1: one row each).

    Returns
    -------
    ndarray, shape (N,), float64
    """
    if multiplicity == 1:
        x_sq = np.einsum("ni,ni->n", x, x).astype(np.float64)
        return x_sq * np.einsum("no,no->n", dout, dout).astype(np.float64)
    a, d = _by_example(x, multiplicity), _by_example(dout, multiplicity)  # (N, K, in / out)
    gram_a = np.matmul(a, a.transpose(0, 2, 1))  # (N, K, K)
    gram_d = np.matmul(d, d.transpose(0, 2, 1))
    return np.einsum("nkl,nkl->n", gram_a, gram_d).astype(np.float64)


def _by_example(rows: np.ndarray, multiplicity: int) -> np.ndarray:
    """``(N K, ...)`` rows as ``(N, K, ...)``: the K copies of each example side by side."""
    if multiplicity < 1 or len(rows) % multiplicity:
        raise ValueError(
            f"ghost norms: {len(rows)} rows do not split into groups of multiplicity {multiplicity}"
        )
    return rows.reshape((len(rows) // multiplicity, multiplicity) + rows.shape[1:])


def conv2d_ghost_is_cheaper(w_shape: Sequence[int], out_hw: tuple[int, int], groups: int) -> bool:
    """True when the two Gram matrices (2 G L^2 numbers) are smaller than ``g_n`` (F K)."""
    f, k = int(w_shape[0]), int(np.prod(w_shape[1:]))
    positions = int(out_hw[0]) * int(out_hw[1])
    return 2 * groups * positions**2 < f * k


def conv2d_sq_norms(
    x: np.ndarray,
    dout: np.ndarray,
    w_shape: Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    groups: int = 1,
    method: str = "auto",
    multiplicity: int = 1,
) -> np.ndarray:
    """Per-example squared norms of a convolution's weight gradient.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    dout : ndarray, shape (N, F, OH, OW)
    w_shape : (F, C/groups, KH, KW)
    stride, padding, groups : as in the convolution
    method : {"auto", "ghost", "materialize"}
        ``"ghost"``: through the Gram matrices (memory N G L^2); ``"materialize"``: form this
        layer's ``g_n`` (memory N F K) and square it; ``"auto"``: the cheaper one.
    multiplicity : int
        Rows per example (augmentation multiplicity, see :func:`linear_sq_norms`): the copies'
        positions are laid side by side, so an example has ``K L`` columns instead of ``L``.

    Returns
    -------
    ndarray, shape (N,), float64 (the products run in the input's dtype)
    """
    rows, f, oh, ow = dout.shape
    positions = multiplicity * oh * ow  # an example's columns: its copies side by side
    if method == "auto":
        cheaper = conv2d_ghost_is_cheaper(w_shape, (positions, 1), groups)
        method = "ghost" if cheaper else "materialize"
    if method not in ("ghost", "materialize"):
        raise ValueError(f"conv2d_sq_norms: method must be auto/ghost/materialize, got {method!r}")
    cols = ops.im2col(x, tuple(w_shape[2:]), stride, padding)  # (N K, C*KH*KW, L)
    cols = _copies_side_by_side(cols.reshape(rows, groups, -1, oh * ow), multiplicity)
    d = _copies_side_by_side(dout.reshape(rows, groups, f // groups, oh * ow), multiplicity)
    if method == "ghost":
        gram_u = np.matmul(cols.transpose(0, 1, 3, 2), cols)  # (N, G, L, L)
        gram_d = np.matmul(d.transpose(0, 1, 3, 2), d)
        return np.einsum("nglm,nglm->n", gram_u, gram_d).astype(np.float64)
    g = np.matmul(d, cols.transpose(0, 1, 3, 2))  # this layer's g_n only: (N, G, F/G, K)
    return np.einsum("ngfk,ngfk->n", g, g).astype(np.float64)


def _copies_side_by_side(a: np.ndarray, multiplicity: int) -> np.ndarray:
    """``(N K, G, R, L)`` -> ``(N, G, R, K L)``: each example's copies as more positions."""
    if multiplicity == 1:
        return a
    a = _by_example(a, multiplicity)  # (N, K, G, R, L)
    n, k, g, r, length = a.shape
    return a.transpose(0, 2, 3, 1, 4).reshape(n, g, r, k * length)


def layer_sq_norms(
    layer, x: np.ndarray, dout: np.ndarray, method: str = "auto", multiplicity: int = 1
) -> np.ndarray:
    """Squared per-example gradient norms of a layer's *trainable* parameters, summed.

    Parameters
    ----------
    layer : Linear, Conv2d or DepthwiseConv2d
    x, dout : the layer's input and output gradient (``last_input``, ``last_grad_output``)
    method : passed on to :func:`conv2d_sq_norms`
    multiplicity : int
        K rows per example (augmentation multiplicity); an example's gradient is the sum
        over its rows.

    Returns
    -------
    ndarray, shape (N,), float64 (N = rows / K)
    """
    weight, bias = layer.params["weight"], layer.params.get("bias")
    total = np.zeros(len(x) // max(multiplicity, 1))
    if isinstance(layer, Linear):
        if weight.trainable:
            total += linear_sq_norms(x, dout, multiplicity)
        db = dout
    elif isinstance(layer, Conv2d):
        if weight.trainable:
            total += conv2d_sq_norms(
                x, dout, weight.shape, layer.stride, layer.padding, layer.groups, method,
                multiplicity,
            )  # fmt: skip
        db = dout.sum(axis=(2, 3))
    else:
        raise TypeError(f"layer_sq_norms: no ghost norm for {type(layer).__name__}")
    if bias is not None and bias.trainable:
        db = _by_example(db, multiplicity).sum(axis=1)
        total += np.einsum("nf,nf->n", db, db)
    return total


def clipped_weight_sums(layer, x: np.ndarray, dout: np.ndarray, factors: np.ndarray) -> dict:
    """``sum_n c_n g_n`` for each trainable parameter of ``layer``, without any ``g_n``.

    The clipped sum is the ordinary weight gradient of the re-weighted output gradient
    ``c_n d_n``, so it costs one backward-weight call (:mod:`tinyodl.ops`).

    Returns
    -------
    dict local parameter name -> ndarray of the parameter's shape and dtype
    """
    weight, bias = layer.params["weight"], layer.params.get("bias")
    scale = factors.astype(dout.dtype).reshape((-1,) + (1,) * (dout.ndim - 1))
    weighted = dout * scale
    sums = {}
    if isinstance(layer, Linear):
        if weight.trainable:
            sums["weight"] = ops.linear_backward_weight(weighted, x)
        bias_sum = weighted.sum(axis=0)
    elif isinstance(layer, Conv2d):
        if weight.trainable:
            sums["weight"] = ops.conv2d_backward_weight(
                weighted, x, weight.shape, layer.stride, layer.padding, layer.groups
            )
        bias_sum = weighted.sum(axis=(0, 2, 3))
    else:
        raise TypeError(f"clipped_weight_sums: no ghost clipping for {type(layer).__name__}")
    if bias is not None and bias.trainable:
        sums["bias"] = bias_sum
    return {k: v.astype(layer.params[k].dtype, copy=False) for k, v in sums.items()}
