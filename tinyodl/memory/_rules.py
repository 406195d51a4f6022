"""Per-layer memory rules: what each tinyodl.nn layer allocates, saves and frees.

Each rule replays, on a :class:`~tinyodl.memory._tape.Tape`, the arrays that the layer's
``forward``/``backward`` (``tinyodl/nn``) and the kernels of the active backend
(``tinyodl/reference`` for numpy, ``kernels/*.pyx`` for Cython) create, in the order they do.
What a layer *saves* must match ``layer.saved`` exactly (tests check it):

=================  =====================================================================
layer              saved for backward
=================  =====================================================================
Linear, Conv2d     the input ``x`` -- only if the weight is trainable (needed for dW only)
ReLU, ReLU6        a bool mask of the input shape (1 byte per element)
MaxPool2d          the int64 argmax of every window (output shape)
BatchNorm1d/2d     ``inv_std`` (C,); ``x_hat`` (input shape) in training or if gamma trains
Dropout            a bool keep-mask (input shape), in training with p > 0
Softmax            its output (input shape)
Flatten, pools...  nothing but shapes (AvgPool2d, GlobalAvgPool, Identity, BilinearUpsample)
=================  =====================================================================

Transients ("scratch") modelled per backend, for one call:

* numpy conv forward: padded copy of x, then im2col columns ``N*C*KH*KW*OH*OW`` and the
  matmul result before it is copied into the output;
* numpy conv backward: the column gradient (same size as the columns) plus its matmul
  temporary, a padded dx, and for dW the columns again plus the per-example products
  ``N*F*K`` summed over the batch;
* Cython conv: one image's columns ``C*KH*KW*OH*OW`` (none for 1x1/stride-1); float32
  stride-1 "same" convs instead pack their filters and one panel block per thread
  (``_implicit_scratch``; the input gradient also copies the flipped filters), and a
  float32 weight gradient with K >= 256 or K < 64 keeps dW^T and dout^T of up to 8 images beside the
  columns; depthwise convs take one thread's phase planes and a virtual output plane
  (see ``_dw_scratch``); a float32 linear forward at a small batch copies x^T;
* Cython batchnorm (``kernels/norm.pyx``): no temporaries, only its results;
* numpy max pooling: two padded copies, the windows and five int64 index arrays forward;
  the index buffer of ``np.add.at`` backward;
* ``x * mask`` (ReLU, dropout) casts the bool mask through a ufunc buffer of at most
  ``np.getbufsize()`` (8192) elements -- not in the compiled ReLU kernels
  (``kernels/elementwise.pyx``), nor in the compiled SGD update (no temporaries).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinyodl._shapes import padding4
from tinyodl.memory._tape import ELIDE_BYTES, Buf, Tape

Shape = tuple[int, ...]
INT64 = 8
BOOL = 1
#: Fixed working memory of ``np.add.at`` besides its index buffer (measured, numpy 2.x).
UFUNC_AT_OVERHEAD = 5 * 1024


def numel(shape: Shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


@dataclass
class Context:
    """Everything a rule needs besides the layer: the tape, backend and training flags."""

    tape: Tape
    backend: str
    itemsize: int
    grads_resident: bool
    train: bool | None = None  # None: each layer follows its own mode (layer.training)
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    saved: dict[str, list[Buf]] = field(default_factory=dict)
    new_grads: list[Buf] = field(default_factory=list)

    def nbytes(self, shape: Shape) -> int:
        return numel(shape) * self.itemsize

    def mode(self, layer: Any) -> bool:
        """The mode ``layer.forward`` runs in: the forced one, else the layer's own."""
        return bool(getattr(layer, "training", True)) if self.train is None else self.train

    def accumulate(self, param: Any, grad_tmp: Buf) -> None:
        """``Parameter.accumulate_grad``: copy on first use, ``+=`` afterwards."""
        if not param.trainable:
            return
        if not self.grads_resident:
            self.new_grads.append(self.tape.new(grad_tmp.nbytes, "gradients"))


# ----------------------------------------------------------------------------- kernels


def _pad_bytes(ctx: Context, shape: Shape, padding: tuple[int, ...]) -> int:
    n, c, h, w = shape
    top, bottom, left, right = padding4(padding)
    return n * c * (top + h + bottom) * (left + w + right) * ctx.itemsize


def _conv_kind(layer: Any, in_shape: Shape) -> str:
    """Which Cython path: depthwise, pointwise (1x1, stride 1, no padding) or gemm."""
    c, f, g = in_shape[1], layer.out_channels, layer.groups
    if g == c == f and g > 1:
        return "depthwise"
    if layer.kernel_size == (1, 1) and layer.stride == (1, 1) and layer.padding == (0, 0):
        return "pointwise"
    return "gemm"


def _conv_dw_images() -> int:
    """Images whose dout^T the compiled conv weight gradient holds at once (conv.DW_IMAGES)."""
    import importlib

    return int(getattr(importlib.import_module("tinyodl._kernels.conv"), "DW_IMAGES", 1))


def _dw_scratch(ctx: Context, layer: Any, out_shape: Shape, op: str) -> int:
    """Bytes of one thread's scratch in the Cython depthwise kernels (kernels/simd/float_dw.h).

    The phase planes (stride^2 planes of Hq x Wq) plus one "virtual" output plane
    (OH x Wq); the weight gradient also keeps one such plane per filter tap.
    """
    (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
    oh, ow = out_shape[2], out_shape[3]
    hq, wq = oh + (kh - 1) // sh + 1, ow + (kw - 1) // sw
    elements = sh * sw * hq * wq + oh * wq
    if op == "weight":
        elements += kh * kw * oh * wq
    return elements * ctx.itemsize


def _sgemm_tile(module: str = "conv") -> tuple:
    """(available, MR, NR, ...) of the compiled float32 GEMM (kernels/simd/float_gemm.h)."""
    try:
        import importlib

        return importlib.import_module(f"tinyodl._kernels.{module}").SGEMM_TILE
    except (ImportError, AttributeError):
        return (False, 4, 16, 256)


def _ceil_to(n: int, m: int) -> int:
    return -(-n // m) * m


def _implicit_same(ctx: Context, layer: Any, in_shape: Shape, out_shape: Shape) -> bool:
    """conv.pyx's implicit-GEMM path: float32, no groups, stride 1, output as large as the
    input, at least 64 rows of K, kernels up to 16 x 16, a SIMD build."""
    kh, kw = layer.kernel_size
    return (
        _sgemm_tile()[0] and ctx.itemsize == 4 and layer.groups == 1
        and layer.stride == (1, 1) and tuple(out_shape[2:]) == tuple(in_shape[2:])
        and in_shape[1] * kh * kw >= 64 and kh <= 16 and kw <= 16
    )  # fmt: skip


def _implicit_scratch(ctx: Context, filters: int, channels: int, kernel) -> tuple[int, int]:
    """(packed filters, one thread's panel block + tiles) of ``_conv_same``, in bytes."""
    _, mr, nr, kblock = _sgemm_tile()
    taps = kernel[0] * kernel[1]
    kc = max(1, kblock // taps) * taps
    apack = _ceil_to(filters, mr) * channels * taps * ctx.itemsize
    return apack, (kc * nr + _ceil_to(filters, mr) * nr) * ctx.itemsize


def _im2col_numpy(ctx: Context, shape: Shape, kernel, padding, out_hw) -> Buf:
    """reference im2col: np.pad copy and the (N, C*KH*KW, P) columns; returns the columns."""
    n, c = shape[:2]
    xpad = ctx.tape.new(_pad_bytes(ctx, shape, padding))
    cols = ctx.tape.new(n * c * kernel[0] * kernel[1] * out_hw * ctx.itemsize)
    ctx.tape.drop(xpad)
    return cols


def _col2im_numpy(ctx: Context, shape: Shape, padding) -> Buf:
    """reference col2im: a zero padded image, then the unpadded copy returned as dx."""
    xpad = ctx.tape.new(_pad_bytes(ctx, shape, padding))
    dx = ctx.tape.new(ctx.nbytes(shape))
    ctx.tape.drop(xpad)
    return dx


def conv_forward(ctx: Context, layer: Any, in_shape: Shape, out_shape: Shape) -> Buf:
    n, c = in_shape[:2]
    f, p = out_shape[1], out_shape[2] * out_shape[3]
    kh, kw = layer.kernel_size
    if ctx.backend == "cython":
        kind = _conv_kind(layer, in_shape)
        out = ctx.tape.new(ctx.nbytes(out_shape), "activations")
        if kind != "depthwise" and _implicit_same(ctx, layer, in_shape, out_shape):
            apack, scratch = _implicit_scratch(ctx, f, c, (kh, kw))  # 1x1 with C >= 64 too
            ctx.tape.spike(apack + scratch)  # packed filters, one panel block and the tiles
        elif kind == "gemm":
            ctx.tape.spike(c * kh * kw * p * ctx.itemsize)
        elif kind == "depthwise":
            ctx.tape.spike(_dw_scratch(ctx, layer, out_shape, "forward"))
        return out
    cols = _im2col_numpy(ctx, in_shape, (kh, kw), layer.padding, p)
    out = ctx.tape.new(ctx.nbytes(out_shape), "activations")
    ctx.tape.spike(n * (f // layer.groups) * p * ctx.itemsize)  # one group's matmul result
    ctx.tape.drop(cols)
    return out


def conv_backward_input(ctx: Context, layer: Any, in_shape: Shape, out_shape: Shape) -> Buf:
    n, c = in_shape[:2]
    p = out_shape[2] * out_shape[3]
    kh, kw = layer.kernel_size
    if ctx.backend == "cython":
        kind = _conv_kind(layer, in_shape)
        f = out_shape[1]
        if (
            kind != "depthwise" and _implicit_same(ctx, layer, in_shape, out_shape)
            and c >= _sgemm_tile()[1]
        ):  # fmt: skip  # the same conv of dout with flipped filters (a copy of w first)
            wt = ctx.tape.new(layer.params["weight"].data.size * ctx.itemsize)
            dx = ctx.tape.new(ctx.nbytes(in_shape))
            apack, scratch = _implicit_scratch(ctx, c, f, (kh, kw))
            ctx.tape.spike(apack + scratch)
            ctx.tape.drop(wt)
            return dx
        dx = ctx.tape.new(ctx.nbytes(in_shape))
        if kind == "gemm":
            ctx.tape.spike(c * kh * kw * p * ctx.itemsize)
        elif kind == "depthwise":
            ctx.tape.spike(_dw_scratch(ctx, layer, out_shape, "input"))
        return dx
    cols_bytes = n * c * kh * kw * p * ctx.itemsize
    dcols = ctx.tape.new(cols_bytes)
    ctx.tape.spike(cols_bytes // layer.groups)  # one group's matmul result
    dx = _col2im_numpy(ctx, in_shape, layer.padding)
    ctx.tape.drop(dcols)
    return dx


def conv_backward_weight(ctx: Context, layer: Any, in_shape: Shape, out_shape: Shape) -> Buf:
    n, c = in_shape[:2]
    f, p = out_shape[1], out_shape[2] * out_shape[3]
    kh, kw = layer.kernel_size
    w_bytes = layer.params["weight"].data.size * ctx.itemsize
    if ctx.backend == "cython":
        kind = _conv_kind(layer, in_shape)
        have, _, nr, _ = _sgemm_tile()
        if (
            kind != "depthwise" and have and ctx.itemsize == 4 and layer.groups == 1
            and f >= nr // 2 and (c * kh * kw >= 256 or c * kh * kw < 64)
        ):  # fmt: skip  # dW^T += cols . dout^T on the register tiles, then transposed
            cols = ctx.tape.new(0 if kind == "pointwise" else c * kh * kw * p * ctx.itemsize)
            dout_t = ctx.tape.new(min(n, _conv_dw_images()) * p * f * ctx.itemsize)
            dw_t = ctx.tape.new(w_bytes)
            dw = ctx.tape.new(w_bytes)
            ctx.tape.drop(cols, dout_t, dw_t)
            return dw
        dw = ctx.tape.new(w_bytes)
        if kind == "gemm":
            ctx.tape.spike(c * kh * kw * p * ctx.itemsize)
        elif kind == "depthwise":
            ctx.tape.spike(_dw_scratch(ctx, layer, out_shape, "weight"))
        return dw
    cols = _im2col_numpy(ctx, in_shape, (kh, kw), layer.padding, p)
    dw = ctx.tape.new(w_bytes)
    g = layer.groups
    k = (c // g) * kh * kw
    # (N, F/g, P) @ (N, P, K) -> (N, F/g, K), then .sum(axis=0) -> (F/g, K)
    ctx.tape.spike(n * (f // g) * k * ctx.itemsize, (f // g) * k * ctx.itemsize)
    ctx.tape.drop(cols)
    return dw


def _pool_extra(in_shape: Shape, out_shape: Shape, kernel, stride, padding) -> tuple[int, int]:
    """Rows/columns the last window of a ceil-mode pool reaches past the padding (else 0)."""
    return tuple(  # type: ignore[return-value]
        max(0, (out_shape[2 + a] - 1) * stride[a] + kernel[a] - in_shape[2 + a] - 2 * padding[a])
        for a in (0, 1)
    )


def maxpool_forward(ctx: Context, layer: Any, in_shape: Shape, out_shape: Shape) -> tuple[Buf, Buf]:
    """Returns the output and the int64 argmax (which the layer saves)."""
    n, c = in_shape[:2]
    p = out_shape[2] * out_shape[3]
    idx = n * c * p * INT64
    tape = ctx.tape
    if ctx.backend == "cython":
        out = tape.new(ctx.nbytes(out_shape), "activations")
        return out, tape.new(idx, "activations")
    kh, kw = layer.kernel_size
    eh, ew = _pool_extra(in_shape, out_shape, layer.kernel_size, layer.stride, layer.padding)
    padded = (
        n,
        c,
        in_shape[2] + 2 * layer.padding[0] + eh,
        in_shape[3] + 2 * layer.padding[1] + ew,
    )
    xpad = tape.new(ctx.nbytes(padded))  # np.pad with -inf
    cols = _im2col_numpy(ctx, padded, (kh, kw), (0, 0), p)  # im2col pads (by 0) again
    k = tape.new(idx)  # windows.argmax(axis=2)
    out = tape.new(ctx.nbytes(out_shape), "activations")  # take_along_axis
    ih = tape.chain(idx, 3)  # r*sh + k//kw - ph
    iw = tape.chain(idx, 3)  # s*sw + k%kw - pw
    outside = tape.new(n * c * p * BOOL)  # (ih < 0) | (ih >= H) | ...: bool temporaries
    tape.spike(n * c * p * BOOL, n * c * p * BOOL)
    flat = tape.chain(idx, 2)  # ih*W + iw
    argmax = tape.new(idx, "activations")  # .astype(int64) copies
    tape.drop(flat, outside, ih, iw, k, cols, xpad)
    return out, argmax


def maxpool_backward(ctx: Context, in_shape: Shape, out_shape: Shape) -> Buf:
    dx = ctx.tape.new(ctx.nbytes(in_shape))  # np.zeros dx, then scatter-add
    if ctx.backend == "numpy":  # np.add.at buffers its int64 indices (and some iterator state)
        ctx.tape.spike(min(numel(out_shape), np.getbufsize()) * INT64 + UFUNC_AT_OVERHEAD)
    return dx


def avgpool_forward(
    ctx: Context, in_shape: Shape, out_shape: Shape, kernel, padding, stride=(1, 1)
) -> Buf:
    if ctx.backend == "cython":
        return ctx.tape.new(ctx.nbytes(out_shape), "activations")
    eh, ew = _pool_extra(in_shape, out_shape, kernel, stride, padding)
    shape, ext = in_shape, None
    if eh or ew:  # ceil mode: np.pad past the bottom/right padding first
        shape = (*in_shape[:2], in_shape[2] + eh, in_shape[3] + ew)
        ext = ctx.tape.new(ctx.nbytes(shape))
    cols = _im2col_numpy(ctx, shape, kernel, padding, out_shape[2] * out_shape[3])
    out = ctx.tape.chain(ctx.nbytes(out_shape), 2, "activations")  # sum / divisor
    ctx.tape.drop(cols, ext)
    return out


def avgpool_backward(
    ctx: Context, in_shape: Shape, out_shape: Shape, kernel, padding, stride=(1, 1)
) -> Buf:
    if ctx.backend == "cython":
        return ctx.tape.new(ctx.nbytes(in_shape))
    share = ctx.tape.new(ctx.nbytes(out_shape))  # dout / divisor
    n, c = in_shape[:2]
    dcols = ctx.tape.new(n * c * kernel[0] * kernel[1] * out_shape[2] * out_shape[3] * ctx.itemsize)
    ctx.tape.drop(share)
    eh, ew = _pool_extra(in_shape, out_shape, kernel, stride, padding)
    if not (eh or ew):
        dx = _col2im_numpy(ctx, in_shape, padding)
        ctx.tape.drop(dcols)
        return dx
    ext = _col2im_numpy(ctx, (n, c, in_shape[2] + eh, in_shape[3] + ew), padding)
    ctx.tape.drop(dcols)
    dx = ctx.tape.new(ctx.nbytes(in_shape))  # the crop, made contiguous
    ctx.tape.drop(ext)
    return dx


def _cast_buffer(ctx: Context, n: int) -> int:
    """A ufunc mixing float and bool (``x * mask``) casts the mask through a buffer of at
    most ``np.getbufsize()`` elements of the float type."""
    return min(n, np.getbufsize()) * ctx.itemsize


def chain_bytes_peak(nbytes: int, ops: int) -> int:
    """Peak of :meth:`Tape.chain` (for documentation tables)."""
    return nbytes if ops < 2 or nbytes >= ELIDE_BYTES else 2 * nbytes


# ----------------------------------------------------------------------------- layers
# forward rules: (ctx, name, layer, x, in_shape, out_shape, train) -> output Buf; what the
# layer saves goes to ctx.saved[name] as (key, Buf, shape, dtype) tuples.
# backward rules: (ctx, name, layer, dout, in_shape, out_shape) -> dx Buf.


def _save(ctx: Context, name: str, key: str, buf: Buf, shape: Shape, dtype: str) -> None:
    ctx.saved.setdefault(name, []).append((key, buf, tuple(shape), dtype))


def _release_saved(ctx: Context, name: str) -> None:
    for _, buf, _, _ in ctx.saved.pop(name, []):
        ctx.tape.drop(buf)


def _finish_backward(ctx: Context, name: str, layer: Any, dweight: Buf | None, dbias: Buf) -> None:
    """End of a weighted layer's backward: accumulate the gradients, then free.

    ``dweight`` (None when the weight is frozen) and ``dbias`` go into the parameters'
    gradients (``Parameter.accumulate_grad``); a layer without a bias parameter computed
    ``dbias`` all the same and just drops it. Then the two temporaries and what forward
    saved for the layer are released.
    """
    if dweight is not None:
        ctx.accumulate(layer.params["weight"], dweight)
    if "bias" in layer.params:
        ctx.accumulate(layer.params["bias"], dbias)
    ctx.tape.drop(dweight, dbias)
    _release_saved(ctx, name)


def linear_forward(ctx, name, layer, x, in_shape, out_shape, train):
    out = ctx.tape.new(ctx.nbytes(out_shape), "activations")
    have, _, nr = _sgemm_tile("linear")[:3]
    n = in_shape[0]
    if ctx.backend == "cython" and have and ctx.itemsize == 4 and 0 < n <= 128:
        if 4 * n >= 3 * _ceil_to(n, nr):  # linear.pyx's tiled forward packs x^T
            ctx.tape.spike(ctx.nbytes(in_shape))
    if layer.params["weight"].trainable:  # x is needed only for dW
        _save(ctx, name, "x", ctx.tape.ref(x), in_shape, layer.dtype.name)
    return out


def linear_backward(ctx, name, layer, dout, in_shape, out_shape):
    tape = ctx.tape
    dx = tape.new(ctx.nbytes(in_shape))
    have, _, nr = _sgemm_tile("linear")[:3]
    n = in_shape[0]
    if ctx.backend == "cython" and have and ctx.itemsize == 4 and 0 < n <= 128:
        if 4 * n >= 3 * _ceil_to(n, nr):  # linear.pyx's tiled input gradient packs dout^T
            tape.spike(ctx.nbytes(out_shape))
    dw = db = None
    if name in ctx.saved:  # dW = dout.T @ x
        dw = tape.new(layer.params["weight"].data.size * ctx.itemsize)
    db = tape.new(out_shape[1] * ctx.itemsize)  # dout.sum(axis=0)
    _finish_backward(ctx, name, layer, dw, db)
    return dx


def conv2d_forward(ctx, name, layer, x, in_shape, out_shape, train):
    out = conv_forward(ctx, layer, in_shape, out_shape)
    if layer.params["weight"].trainable:
        _save(ctx, name, "x", ctx.tape.ref(x), in_shape, layer.dtype.name)
    return out


def conv2d_backward(ctx, name, layer, dout, in_shape, out_shape):
    tape = ctx.tape
    dx = conv_backward_input(ctx, layer, in_shape, out_shape)
    dw = conv_backward_weight(ctx, layer, in_shape, out_shape) if name in ctx.saved else None
    db = tape.new(out_shape[1] * ctx.itemsize)  # dout.sum(axis=(0, 2, 3))
    _finish_backward(ctx, name, layer, dw, db)
    return dx


def relu_forward(ctx, name, layer, x, in_shape, out_shape, train):
    n = numel(in_shape)
    if type(layer).__name__ == "ReLU6":  # (x > 0) & (x < 6)
        above, below = ctx.tape.new(n * BOOL), ctx.tape.new(n * BOOL)
        mask = above if n * BOOL >= ELIDE_BYTES else ctx.tape.new(n * BOOL)
        ctx.tape.drop(below, *(() if mask is above else (above,)))
    else:  # x > 0
        mask = ctx.tape.new(n * BOOL)
    mask.kind = "activations"
    _save(ctx, name, "mask", mask, in_shape, "bool")
    out = ctx.tape.new(ctx.nbytes(out_shape), "activations")
    if type(layer).__name__ != "ReLU6" and ctx.backend == "numpy":
        ctx.tape.spike(_cast_buffer(ctx, n))  # x * mask (the compiled kernel: one pass)
    return out


def relu_backward(ctx, name, layer, dout, in_shape, out_shape):
    dx = ctx.tape.new(ctx.nbytes(in_shape))  # dout * mask
    if type(layer).__name__ == "ReLU6" or ctx.backend == "numpy":
        ctx.tape.spike(_cast_buffer(ctx, numel(in_shape)))
    _release_saved(ctx, name)
    return dx


def maxpool2d_forward(ctx, name, layer, x, in_shape, out_shape, train):
    out, argmax = maxpool_forward(ctx, layer, in_shape, out_shape)
    _save(ctx, name, "argmax", argmax, out_shape, "int64")
    return out


def maxpool2d_backward(ctx, name, layer, dout, in_shape, out_shape):
    dx = maxpool_backward(ctx, in_shape, out_shape)
    _release_saved(ctx, name)
    return dx


def avgpool2d_forward(ctx, name, layer, x, in_shape, out_shape, train):
    geometry = (layer.kernel_size, layer.padding, layer.stride)
    return avgpool_forward(ctx, in_shape, out_shape, *geometry)


def avgpool2d_backward(ctx, name, layer, dout, in_shape, out_shape):
    geometry = (layer.kernel_size, layer.padding, layer.stride)
    return avgpool_backward(ctx, in_shape, out_shape, *geometry)


def gap_forward(ctx, name, layer, x, in_shape, out_shape, train):
    window = (in_shape[2], in_shape[3])
    return avgpool_forward(ctx, in_shape, (*out_shape, 1, 1), window, (0, 0))


def gap_backward(ctx, name, layer, dout, in_shape, out_shape):
    window = (in_shape[2], in_shape[3])
    return avgpool_backward(ctx, in_shape, (*out_shape, 1, 1), window, (0, 0))


def view_forward(ctx, name, layer, x, in_shape, out_shape, train):
    return ctx.tape.ref(x)  # Flatten / Identity: a view, nothing saved


def view_backward(ctx, name, layer, dout, in_shape, out_shape):
    return ctx.tape.ref(dout)


def softmax_forward(ctx, name, layer, x, in_shape, out_shape, train):
    nbytes = ctx.nbytes(in_shape)
    z = ctx.tape.new(nbytes)  # x - max
    e = ctx.tape.new(nbytes)  # exp(z)
    out = ctx.tape.new(nbytes, "activations")  # e / sum(e)
    ctx.tape.drop(z, e)
    _save(ctx, name, "out", ctx.tape.ref(out), in_shape, layer.dtype.name)
    return out


def softmax_backward(ctx, name, layer, dout, in_shape, out_shape):
    nbytes = ctx.nbytes(in_shape)
    ctx.tape.spike(nbytes)  # (dout * s).sum(axis)
    dx = ctx.tape.chain(nbytes, 2)  # s * (dout - sum)
    _release_saved(ctx, name)
    return dx


def dropout_forward(ctx, name, layer, x, in_shape, out_shape, train):
    if not train or layer.p == 0.0:
        return ctx.tape.ref(x)
    n = numel(in_shape)
    draws = ctx.tape.new(n * 8)  # rng.random(shape), float64
    mask = ctx.tape.new(n * BOOL, "activations")
    ctx.tape.drop(draws)
    _save(ctx, name, "mask", mask, in_shape, "bool")
    return ctx.tape.chain(ctx.nbytes(in_shape), 2, "activations")  # x * mask / (1 - p)


def dropout_backward(ctx, name, layer, dout, in_shape, out_shape):
    if name not in ctx.saved:
        return ctx.tape.ref(dout)
    dx = ctx.tape.chain(ctx.nbytes(in_shape), 2)
    _release_saved(ctx, name)
    return dx


def _broadcast_chain(ctx: Context, nbytes: int, ops: int, kind: str = "scratch") -> Buf:
    """``ops`` element-wise operations whose other operand is a per-channel (1, C, 1, 1)
    view: numpy reuses a temporary only when the other operand has its full shape (no
    broadcasting), so every operation allocates a new array and frees the previous one."""
    out = ctx.tape.new(nbytes, kind)
    for _ in range(ops - 1):
        nxt = ctx.tape.new(nbytes, kind)
        ctx.tape.drop(out)
        out = nxt
    return out


def batchnorm_forward(ctx, name, layer, x, in_shape, out_shape, train):
    tape, nbytes, c = ctx.tape, ctx.nbytes(in_shape), in_shape[1]
    if ctx.backend == "cython":  # kernels/norm.pyx: the results only, no temporaries
        out = tape.new(nbytes, "activations")
        x_hat = tape.new(nbytes, "activations")
        inv_std = tape.new(c * ctx.itemsize, "activations")
        _save(ctx, name, "inv_std", inv_std, (c,), layer.dtype.name)
        if train or layer.params["weight"].trainable:
            _save(ctx, name, "x_hat", x_hat, in_shape, layer.dtype.name)
        else:
            tape.drop(x_hat)
        return out
    if train:
        tape.spike(nbytes)  # x.var(): x - mean
    x_hat = _broadcast_chain(ctx, nbytes, 2, "activations")  # (x - mean) * inv_std
    out = _broadcast_chain(ctx, nbytes, 2, "activations")  # gamma * x_hat + beta
    inv_std = tape.new(c * ctx.itemsize, "activations")
    _save(ctx, name, "inv_std", inv_std, (c,), layer.dtype.name)
    if train or layer.params["weight"].trainable:
        _save(ctx, name, "x_hat", x_hat, in_shape, layer.dtype.name)
    else:
        tape.drop(x_hat)
    return out


def batchnorm_backward(ctx, name, layer, dout, in_shape, out_shape):
    tape, nbytes, c = ctx.tape, ctx.nbytes(in_shape), in_shape[1]
    keys = {key for key, *_ in ctx.saved.get(name, [])}
    dbeta = tape.new(c * ctx.itemsize)
    dgamma = None
    if ctx.backend == "cython":  # one pass for the sums, one writes dx
        if "x_hat" in keys:
            dgamma = tape.new(c * ctx.itemsize)
        dx = tape.new(nbytes)
        _finish_backward(ctx, name, layer, dgamma, dbeta)
        return dx
    if "x_hat" in keys:
        tape.spike(nbytes)  # (dout * x_hat).sum()
        dgamma = tape.new(c * ctx.itemsize)
    if not ctx.mode(layer):
        dx = tape.new(nbytes)  # dout * scale
    else:
        t1 = _broadcast_chain(ctx, nbytes, 2)  # m * dout - dbeta (per channel)
        tape.spike(nbytes)  # (dout * x_hat).sum() again
        t2 = tape.new(nbytes)  # x_hat * (...)
        dx = t1 if nbytes >= ELIDE_BYTES else tape.new(nbytes)  # t1 - t2 (same shapes)
        tape.drop(t2, *(() if dx is t1 else (t1,)))
        scaled = tape.new(nbytes)  # (scale / m) * (...): per channel, never elided
        tape.drop(dx)
        dx = scaled
    _finish_backward(ctx, name, layer, dgamma, dbeta)
    return dx


def upsample_forward(ctx, name, layer, x, in_shape, out_shape, train):
    """BilinearUpsample: ``(A_h @ x)`` (N, C, OH, W), then ``@ A_w.T``; saves nothing."""
    n, c, _, w = in_shape
    tmp = ctx.tape.new(n * c * out_shape[2] * w * ctx.itemsize)
    out = ctx.tape.new(ctx.nbytes(out_shape), "activations")
    ctx.tape.drop(tmp)
    return out


def upsample_backward(ctx, name, layer, dout, in_shape, out_shape):
    """``(A_h.T @ dout)`` (N, C, H, OW), then ``@ A_w``."""
    n, c, h, _ = in_shape
    tmp = ctx.tape.new(n * c * h * out_shape[3] * ctx.itemsize)
    dx = ctx.tape.new(ctx.nbytes(in_shape))
    ctx.tape.drop(tmp)
    return dx


#: type name -> (forward rule, backward rule) for the leaf layers of tinyodl.nn.
LEAF_RULES = {
    "Linear": (linear_forward, linear_backward),
    "Conv2d": (conv2d_forward, conv2d_backward),
    "DepthwiseConv2d": (conv2d_forward, conv2d_backward),
    "ReLU": (relu_forward, relu_backward),
    "ReLU6": (relu_forward, relu_backward),
    "MaxPool2d": (maxpool2d_forward, maxpool2d_backward),
    "AvgPool2d": (avgpool2d_forward, avgpool2d_backward),
    "GlobalAvgPool": (gap_forward, gap_backward),
    "Flatten": (view_forward, view_backward),
    "Identity": (view_forward, view_backward),
    "Dropout": (dropout_forward, dropout_backward),
    "Softmax": (softmax_forward, softmax_backward),
    "BatchNorm2d": (batchnorm_forward, batchnorm_backward),
    "BatchNorm1d": (batchnorm_forward, batchnorm_backward),
    "BilinearUpsample": (upsample_forward, upsample_backward),
}
