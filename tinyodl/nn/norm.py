"""Batch normalisation for conv feature maps, and folding it into the conv (chapter 00/13).

Training mode normalises with the batch statistics and updates the running ones
(PyTorch semantics: ``running = (1 - momentum) * running + momentum * batch``, the running
variance uses the unbiased batch variance). Evaluation mode uses the running statistics,
which makes batchnorm an affine map per channel that :func:`fold_batchnorm` merges into
the preceding convolution for deployment.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinyodl.nn import functional as F
from tinyodl.nn.conv_layers import Conv2d
from tinyodl.nn.layer import Layer
from tinyodl.nn.utils import check_shape, layer_label


class _BatchNorm(Layer):
    """Shared code of :class:`BatchNorm1d` and :class:`BatchNorm2d` (channel axis 1)."""

    #: accepted input ranks and how the expected shape is shown in errors
    _ranks: tuple[int, ...] = (4,)
    _shape_text = "(N, {c}, H, W)"

    def __init__(
        self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, dtype: str = "float32"
    ) -> None:
        super().__init__(dtype)
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), float(momentum)
        self._param("weight", np.ones(self.num_features))
        self._param("bias", np.zeros(self.num_features))
        self.buffers["running_mean"] = np.zeros(self.num_features, dtype=self.dtype)
        self.buffers["running_var"] = np.ones(self.num_features, dtype=self.dtype)
        self._train = True  # the mode of the last forward pass
        self.num_batches_tracked = 0  # training-mode batches seen (PyTorch's buffer; not saved)

    def config(self) -> dict[str, Any]:
        return {
            "num_features": self.num_features,
            "eps": self.eps,
            "momentum": self.momentum,
            "dtype": self.dtype.name,
        }

    def output_shape(self, input_shape):
        c, text = self.num_features, self._shape_text.format(c=self.num_features)
        rank = len(input_shape) if len(input_shape) in self._ranks else self._ranks[0]
        check_shape(self, "input", input_shape, (None, c) + (None,) * (rank - 2), text)
        return tuple(int(s) for s in input_shape)

    def _per_example_refusal(self) -> str | None:
        if self._output_shape is None or not self._train:
            return None
        return (
            "per-example gradients are undefined in training mode, where the batch mean and "
            "variance make every example's output depend on the others. Use evaluation mode "
            "(layer.eval() or model.eval(): running statistics, a per-channel affine map, as "
            "Opacus requires) or replace the batchnorm (e.g. fold_batchnorm for a trained model)"
        )

    def _forward(self, x, train):
        self.output_shape(x.shape)
        if train and x.size <= x.shape[1]:
            raise ValueError(
                f"{layer_label(self)}: training mode needs more than one value per channel "
                f"(batch statistics), got input {x.shape}; use evaluation mode for this input"
            )
        gamma, beta = self.params["weight"], self.params["bias"]
        y, cache = F.batchnorm_forward(
            x,
            gamma.data,
            beta.data,
            self.eps,
            train,
            self.buffers["running_mean"],
            self.buffers["running_var"],
        )
        if train:
            self._update_running_stats(cache["mean"], cache["var"], x.size // x.shape[1])
            self.num_batches_tracked += 1
        self._train = train
        self._save(inv_std=cache["inv_std"])
        if train or gamma.trainable:  # x_hat: for dx in training mode, for dgamma always
            self._save(x_hat=cache["x_hat"])
        return y

    def _update_running_stats(self, mean: np.ndarray, var: np.ndarray, m: int) -> None:
        unbiased = var * (m / (m - 1))
        for key, batch in (("running_mean", mean), ("running_var", unbiased)):
            buf = self.buffers[key]
            buf *= 1.0 - self.momentum
            buf += self.momentum * batch

    def _backward(self, dout, per_example):
        gamma, beta = self.params["weight"], self.params["bias"]
        cache = {"gamma": gamma.data, "train": self._train, **self.saved}
        dx, dgamma, dbeta = F.batchnorm_backward(dout, cache)
        if dgamma is not None:
            gamma.accumulate_grad(dgamma)
        beta.accumulate_grad(dbeta)
        if per_example:  # evaluation mode only (backward refused training mode before)
            gamma.grad_sample, beta.grad_sample = F.batchnorm_per_example_grads(dout, cache)
            if not gamma.trainable:
                gamma.grad_sample = None
            if not beta.trainable:
                beta.grad_sample = None
        return dx


class BatchNorm2d(_BatchNorm):
    """Per-channel batch normalisation of (N, C, H, W) inputs (Ioffe & Szegedy 2015).

    Parameters
    ----------
    num_features : int
        Number of channels C.
    eps : float, default 1e-5
    momentum : float, default 0.1
        Weight of the batch statistics in the running averages.
    dtype : default "float32"

    Attributes
    ----------
    params : ``weight`` (gamma, ones) and ``bias`` (beta, zeros), shape (C,)
    buffers : ``running_mean`` (zeros) and ``running_var`` (ones), shape (C,)

    Per-example gradients (``backward(dout, per_example=True)``) exist in evaluation mode
    only; in training mode they are refused (see ``docs/architecture.md``).
    """


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of features (N, C) or sequences (N, C, L), per channel C.

    Parameters, attributes and modes as in :class:`BatchNorm2d` (PyTorch's
    ``torch.nn.BatchNorm1d``): statistics over the batch (and L) for each of the C channels.
    """

    _ranks = (2, 3)
    _shape_text = "(N, {c}) or (N, {c}, L)"


def fold_batchnorm(conv: Conv2d, bn: BatchNorm2d) -> Conv2d:
    """Merge an evaluation-mode batchnorm into the convolution before it.

    With ``s = gamma / sqrt(running_var + eps)`` per output channel,
    ``bn(conv(x)) = conv'(x)`` where ``W' = W * s`` and ``b' = (b - running_mean) * s + beta``.

    Parameters
    ----------
    conv : Conv2d (or DepthwiseConv2d)
    bn : BatchNorm2d with ``num_features == conv.out_channels``

    Returns
    -------
    Conv2d
        A new convolution with a bias; the inputs are not modified.
    """
    if not isinstance(conv, Conv2d) or type(bn) is not BatchNorm2d:
        raise TypeError(
            f"fold_batchnorm: expected (Conv2d, BatchNorm2d), got "
            f"({type(conv).__name__}, {type(bn).__name__})"
        )
    if bn.num_features != conv.out_channels:
        raise ValueError(
            f"fold_batchnorm: {layer_label(bn)} has {bn.num_features} channels but "
            f"{layer_label(conv)} has {conv.out_channels} output channels"
        )
    scale = bn.params["weight"].data / np.sqrt(bn.buffers["running_var"] + bn.eps)
    bias = conv.params["bias"].data if conv.bias else np.zeros(conv.out_channels)
    folded = type(conv)(**{**conv.config(), "bias": True})
    folded.params["weight"].data[...] = conv.params["weight"].data * scale[:, None, None, None]
    folded.params["bias"].data[...] = (bias - bn.buffers["running_mean"]) * scale + bn.params[
        "bias"
    ].data
    return folded
