"""Dense and element-wise layers: Linear, ReLU, ReLU6, Softmax, Flatten, Dropout (chapter 00).

Each layer is a thin class around a pair of :mod:`tinyodl.nn.functional` functions. What a
layer saves for backward is chosen by what it will need (TinyTL, Cai et al. 2020): a Linear
layer with a frozen weight does not keep its input, ReLU keeps a boolean mask.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinyodl.nn import functional as F
from tinyodl.nn.errors import LayerShapeError
from tinyodl.nn.init import initialize
from tinyodl.nn.layer import Layer
from tinyodl.nn.utils import SeedLike, as_generator, check_shape, layer_label


class Linear(Layer):
    """Fully connected layer ``y = x @ W.T + b``.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool, default True
    seed : int or Generator, default 0
        Seeds the weight initializer.
    init : str, default "kaiming_normal"
        A key of :data:`tinyodl.nn.init.INITIALIZERS`; the bias starts at zero.
    dtype : default "float32"

    Shapes: x (N, in_features) -> y (N, out_features); ``weight`` (out, in), ``bias`` (out,).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        seed: SeedLike = 0,
        init: str = "kaiming_normal",
        dtype: str = "float32",
    ) -> None:
        super().__init__(dtype)
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.bias, self.seed, self.init = bool(bias), seed, init
        shape = (self.out_features, self.in_features)
        self._param("weight", initialize(init, shape, seed, self.dtype))
        if self.bias:
            self._param("bias", np.zeros(self.out_features))

    def config(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias,
            "seed": self.seed,
            "init": self.init,
            "dtype": self.dtype.name,
        }

    def output_shape(self, input_shape):
        check_shape(self, "input", input_shape, (None, self.in_features), self._expected())
        return (int(input_shape[0]), self.out_features)

    def _expected(self) -> str:
        return f"(N, {self.in_features}) (use Flatten before a Linear layer on images)"

    def _forward(self, x, train):
        self.output_shape(x.shape)
        b = self.params["bias"].data if self.bias else None
        y, cache = F.linear_forward(x, self.params["weight"].data, b)
        if self.params["weight"].trainable:  # x is needed only for dW
            self._save(x=cache["x"])
        return y

    def _backward(self, dout, per_example):
        weight = self.params["weight"]
        dx, dw, db = F.linear_backward(
            dout, {"w": weight.data, **self.saved}, self.needs_input_grad
        )
        if dw is not None:
            weight.accumulate_grad(dw)
        if self.bias:
            self.params["bias"].accumulate_grad(db)
        if per_example:
            self._fill_grad_samples(dout)
        return dx

    def _fill_grad_samples(self, dout: np.ndarray) -> None:
        """Per-example gradients (DP-SGD): ``outer(dout[n], x[n])`` and ``dout[n]``."""
        weight = self.params["weight"]
        if weight.trainable:
            weight.grad_sample, _ = F.linear_per_example_grads(dout, self.saved["x"])
        if self.bias and self.params["bias"].trainable:
            self.params["bias"].grad_sample = dout.copy()


class ReLU(Layer):
    """``max(x, 0)``, any shape. Saves a boolean mask (1 byte per element), not ``x``."""

    def __init__(self, dtype: str = "float32") -> None:
        super().__init__(dtype)

    def config(self) -> dict[str, Any]:
        return {"dtype": self.dtype.name}

    def _forward(self, x, train):
        y, cache = F.relu_forward(x)
        self._save(mask=cache["mask"])
        return y

    def _backward(self, dout, per_example):
        return F.relu_backward(dout, self.saved)


class ReLU6(ReLU):
    """``min(max(x, 0), 6)`` (MobileNetV2). Saves the mask ``0 < x < 6``."""

    def _forward(self, x, train):
        y, cache = F.relu6_forward(x)
        self._save(mask=cache["mask"])
        return y

    def _backward(self, dout, per_example):
        return F.relu6_backward(dout, self.saved)


class Softmax(Layer):
    """Softmax along ``dim`` (default 1, the classes of (N, C) logits), as ``torch.nn.Softmax``.

    Saves its output ``s`` (input shape), which its backward
    ``dx = s * (dout - sum(dout * s, dim))`` needs. To train a classifier, feed the logits to
    :func:`tinyodl.nn.softmax_cross_entropy` instead (stabler, and it saves nothing); this
    layer is for models whose output must be probabilities (distillation, attention).
    """

    def __init__(self, dim: int = 1, dtype: str = "float32") -> None:
        super().__init__(dtype)
        self.dim = int(dim)

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, "dtype": self.dtype.name}

    def output_shape(self, input_shape):
        if not -len(input_shape) <= self.dim < len(input_shape):
            raise LayerShapeError(
                f"{layer_label(self)}: expected an input with an axis dim={self.dim}, "
                f"got shape {tuple(input_shape)}"
            )
        return tuple(int(s) for s in input_shape)

    def _forward(self, x, train):
        self.output_shape(x.shape)
        y, cache = F.softmax_forward(x, self.dim)
        self._save(out=cache["out"])
        return y

    def _backward(self, dout, per_example):
        return F.softmax_backward(dout, {"out": self.saved["out"], "axis": self.dim})


class Flatten(Layer):
    """``(N, d1, d2, ...) -> (N, d1*d2*...)``; a reshape, it saves nothing."""

    def __init__(self, dtype: str = "float32") -> None:
        super().__init__(dtype)
        self._x_shape: tuple[int, ...] | None = None

    def config(self) -> dict[str, Any]:
        return {"dtype": self.dtype.name}

    def output_shape(self, input_shape):
        if len(input_shape) < 2:
            check_shape(self, "input", input_shape, (None, None), "(N, ...) with at least 2 dims")
        return (int(input_shape[0]), int(np.prod(input_shape[1:], dtype=np.int64)))

    def _forward(self, x, train):
        self._x_shape = x.shape
        return x.reshape(self.output_shape(x.shape))

    def _backward(self, dout, per_example):
        return dout.reshape(self._x_shape)


class Dropout(Layer):
    """Inverted dropout (Srivastava et al. 2014): active only when ``train=True``.

    Parameters
    ----------
    p : float, default 0.5
        Probability of zeroing an element.
    seed : int or Generator, default 0
        Seeds the masks; the layer keeps its own Generator (``self.rng``).
    """

    def __init__(self, p: float = 0.5, seed: SeedLike = 0, dtype: str = "float32") -> None:
        super().__init__(dtype)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p, self.seed = float(p), seed
        self.rng = as_generator(seed)

    def config(self) -> dict[str, Any]:
        return {"p": self.p, "seed": self.seed, "dtype": self.dtype.name}

    def _forward(self, x, train):
        y, cache = F.dropout_forward(x, self.p, self.rng, train)
        if "mask" in cache:
            self._save(mask=cache["mask"])
        return y

    def _backward(self, dout, per_example):
        if "mask" not in self.saved:
            return dout
        return F.dropout_backward(dout, {"mask": self.saved["mask"], "p": self.p})


class Identity(Layer):
    """``y = x``; a placeholder, e.g. for a batchnorm folded away by ``fold_batchnorm``."""

    def __init__(self, dtype: str = "float32") -> None:
        super().__init__(dtype)

    def config(self) -> dict[str, Any]:
        return {"dtype": self.dtype.name}

    def _forward(self, x, train):
        return x

    def _backward(self, dout, per_example):
        return dout
