"""The base class of every layer and container (chapter 00).

A :class:`Layer` is a forward/backward pair with state:

* ``params``  -- dict name -> :class:`~tinyodl.nn.Parameter` (``"weight"``, ``"bias"``);
* ``buffers`` -- dict name -> ndarray of non-trained state (batchnorm running statistics);
* ``saved``   -- dict name -> ndarray of what ``forward`` kept for ``backward``; ``backward``
  empties it, so ``sum(a.nbytes for a in layer.saved.values())`` is the activation memory
  the layer holds between the two passes;
* ``config()`` -- constructor arguments: ``type(layer)(**layer.config())`` rebuilds it;
* ``name``    -- dotted name inside its model, used in error messages;
* ``needs_input_grad`` -- True by default; set it to False on a model's first layer when
  nothing uses ``dL/dx`` (the input is data, as for a tensor without ``requires_grad`` in
  PyTorch): Linear and Conv2d then skip the input-gradient product and their
  :meth:`Layer.backward` returns None. Parameter gradients are unchanged.

Subclasses implement ``_forward(x, train)`` and ``_backward(dout, per_example)``; the public
:meth:`Layer.forward` / :meth:`Layer.backward` add dtype conversion, capture of activations
and the check that every backward follows a forward. Containers override :meth:`children`;
every tree operation (named parameters, state dict, freezing, describe) works on any layer.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from tinyodl.nn import state as _state
from tinyodl.nn.errors import (
    BackwardError,
    DtypeWarning,
    LayerShapeError,
    PerExampleGradientError,
)
from tinyodl.nn.parameter import Parameter
from tinyodl.nn.utils import as_float_input, join_name, layer_label

#: Every Layer subclass by class name, so a config can name the type of a child layer.
LAYER_TYPES: dict[str, type[Layer]] = {}


class Layer:
    """Base class: a differentiable function with parameters, buffers and saved tensors.

    Parameters
    ----------
    dtype : str or numpy dtype, default "float32"
        The float type inputs are converted to and parameters are stored in.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        LAYER_TYPES[cls.__name__] = cls

    def __init__(self, dtype: str | np.dtype = "float32") -> None:
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(
                f"{type(self).__name__}: dtype must be float32 or float64, got {dtype}"
            )
        self.params: dict[str, Parameter] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.saved: dict[str, np.ndarray] = {}
        self.name = ""
        self.training = True
        self.needs_input_grad = True  # False: backward may skip dL/dx and return None
        self._requested_train: bool | None = None
        self.capturing = False
        self.last_input: np.ndarray | None = None
        self.last_output: np.ndarray | None = None
        self.last_grad_output: np.ndarray | None = None
        self._output_shape: tuple[int, ...] | None = None  # set by forward, cleared by backward
        self._dtype_warned = False  # the precision-loss warning is given once per layer

    # ------------------------------------------------------------------ subclass API
    def _forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        raise NotImplementedError

    def _backward(self, dout: np.ndarray, per_example: bool) -> np.ndarray:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Constructor arguments: ``type(self)(**self.config())`` builds an equal layer."""
        return {}

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of the output for an input of shape ``input_shape`` (validated).

        The default is a shape-preserving layer; layers that change the shape override it.
        """
        return tuple(int(s) for s in input_shape)

    def children(self) -> dict[str, Layer]:
        """Direct sub-layers by local name (empty for a leaf layer)."""
        return {}

    def _per_example_refusal(self) -> str | None:
        """Why this layer's last forward pass has no per-example gradients (None: it has).

        A layer whose output for one example depends on the other examples of the batch
        (batchnorm with batch statistics) overrides this; :meth:`backward` refuses
        ``per_example=True`` through it before touching any gradient.
        """
        return None

    # ------------------------------------------------------------------ forward / backward
    def forward(self, x: np.ndarray, train: bool | None = None) -> np.ndarray:
        """Compute the output and keep what backward needs in ``saved``.

        Parameters
        ----------
        x : ndarray
            Converted to the layer's dtype (float32 unless :meth:`astype` was called): the
            parameters decide the compute type. A cast that loses precision (float64 data
            into a float32 model) gives one :class:`~tinyodl.nn.DtypeWarning` per layer;
            a lossless one (float32 into a float64 model) is silent. Integer arrays are
            refused (see :func:`tinyodl.data.to_float`).
        train : bool, optional
            Training mode (batch statistics in batchnorm, dropout active) or evaluation.
            ``None`` (the default) follows the mode set by :meth:`train` / :meth:`eval`
            (``self.training``), and each sub-layer follows its own mode (so
            ``model.train(); model["features.1"].eval()`` keeps that batchnorm's running
            statistics fixed, as in PyTorch). An explicit value overrides the mode for this
            call and every sub-layer it reaches.
        """
        x = as_float_input(self, x, self.dtype, warn=self._warn_lossy_cast)
        self.saved.clear()  # a new forward replaces what an earlier one (never backpropagated) kept
        self._requested_train = train  # containers pass the caller's request on to children
        y = self._forward(x, self.training if train is None else bool(train))
        self._output_shape = y.shape
        if self.capturing:
            self.last_input, self.last_output = x, y
        return y

    __call__ = forward

    def _warn_lossy_cast(self, from_dtype: np.dtype) -> None:
        """Warn (once for this layer) that an input of ``from_dtype`` loses precision."""
        if self._dtype_warned:
            return
        self._dtype_warned = True
        warnings.warn(
            f"{layer_label(self)}: input of dtype {from_dtype} cast to the layer's dtype "
            f"{self.dtype} (precision is lost; said once per layer). Convert the data "
            f"(x.astype(np.{self.dtype})) or the model (model.astype('{from_dtype}'))",
            DtypeWarning,
            stacklevel=4,
        )

    def backward(self, dout: np.ndarray, per_example: bool = False) -> np.ndarray:
        """Accumulate parameter gradients into ``param.grad`` and return ``dL/dx``
        (None when :attr:`needs_input_grad` is False).

        Parameters
        ----------
        dout : ndarray
            Gradient of the loss w.r.t. the output of the last :meth:`forward`.
        per_example : bool, default False
            Also fill ``param.grad_sample`` (N, *shape) for every trainable parameter
            (Linear, Conv2d, and batchnorm in evaluation mode). Refused with
            :class:`~tinyodl.nn.PerExampleGradientError`, before any gradient is touched,
            when a layer's last forward mixed the examples (batchnorm in training mode).
        """
        if per_example:
            self._check_per_example()
        if self._output_shape is None:
            raise BackwardError(
                f"{layer_label(self)}: backward called without a forward pass "
                "(or twice for one forward)"
            )
        dout = as_float_input(self, dout, self.dtype)
        if dout.shape != self._output_shape:
            raise LayerShapeError(
                f"{layer_label(self)}: expected dout of shape {self._output_shape} "
                f"(the output of forward), got {dout.shape}"
            )
        if self.capturing:
            self.last_grad_output = dout
        dx = self._backward(dout, per_example)
        if not self.needs_input_grad:  # not every layer can skip dL/dx; none returns it
            dx = None
        self.saved.clear()
        self._output_shape = None
        return dx

    def _check_per_example(self) -> None:
        for layer in [self, *(child for _, child in self.named_layers())]:
            reason = layer._per_example_refusal()
            if reason is not None:
                raise PerExampleGradientError(f"{layer_label(layer)}: {reason}")

    # ------------------------------------------------------------------ helpers for subclasses
    def _param(self, name: str, data: np.ndarray) -> Parameter:
        self.params[name] = Parameter(np.asarray(data, dtype=self.dtype))
        return self.params[name]

    def _save(self, **arrays: np.ndarray) -> None:
        self.saved.update(arrays)

    def _adopt(self, local: str, child: Layer) -> None:
        """Give ``child`` its dotted name below this layer (recursively)."""
        if not isinstance(child, Layer):
            raise TypeError(
                f"{layer_label(self)}: child {local!r} must be a Layer, got {type(child).__name__}"
            )
        child._set_name(join_name(self.name, local))

    def _set_name(self, name: str) -> None:
        self.name = name
        for local, child in self.children().items():
            child._set_name(join_name(name, local))

    # ------------------------------------------------------------------ tree walking
    def named_layers(self, prefix: str = "") -> Iterator[tuple[str, Layer]]:
        """Every sub-layer, recursively, in order, as ``(dotted_name, layer)`` (not ``self``)."""
        for local, child in self.children().items():
            name = join_name(prefix, local)
            yield name, child
            yield from child.named_layers(name)

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """``("features.0.weight", Parameter)`` for every parameter, in model order."""
        for local, p in self.params.items():
            yield join_name(prefix, local), p
        for local, child in self.children().items():
            yield from child.named_parameters(join_name(prefix, local))

    def parameters(self) -> list[Parameter]:
        """All parameters (trainable or not), in model order."""
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        """``("features.1.running_mean", array)`` for every buffer."""
        for local, b in self.buffers.items():
            yield join_name(prefix, local), b
        for local, child in self.children().items():
            yield from child.named_buffers(join_name(prefix, local))

    def num_params(self, trainable_only: bool = False) -> int:
        """Number of scalar parameters (optionally only the trainable ones)."""
        return sum(p.size for p in self.parameters() if p.trainable or not trainable_only)

    # ------------------------------------------------------------------ whole-model state
    def zero_grad(self, set_to_none: bool = False) -> None:
        """Reset every gradient (and per-example gradient)."""
        for p in self.parameters():
            p.zero_grad(set_to_none)

    def train(self, mode: bool = True) -> Layer:
        """Set training mode (``mode=True``) or evaluation mode on this layer and every
        sub-layer, as in PyTorch; ``forward(x)`` then follows it. Returns ``self``."""
        for layer in [self, *(child for _, child in self.named_layers())]:
            layer.training = bool(mode)
        return self

    def eval(self) -> Layer:
        """Evaluation mode: batchnorm uses (and no longer updates) its running statistics,
        dropout is off. Same as ``train(False)``; returns ``self``."""
        return self.train(False)

    def capture(self, enabled: bool = True) -> Layer:
        """Keep ``last_input``/``last_output``/``last_grad_output`` in every layer."""
        for layer in [self, *(child for _, child in self.named_layers())]:
            layer.capturing = bool(enabled)
            if not enabled:
                layer.last_input = layer.last_output = layer.last_grad_output = None
        return self

    def astype(self, dtype: str | np.dtype) -> Layer:
        """Convert parameters, buffers and the compute dtype (e.g. float64 for gradcheck)."""
        dtype = np.dtype(dtype)
        for layer in [self, *(child for _, child in self.named_layers())]:
            layer.dtype = dtype
            for p in layer.params.values():
                p.data = p.data.astype(dtype)
                p.grad = None
                p.grad_sample = None
            for key, b in layer.buffers.items():
                layer.buffers[key] = b.astype(dtype)
            layer.saved.clear()
            layer._output_shape = None
            layer._dtype_warned = False
        return self

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and buffer by dotted name (plain arrays)."""
        return _state.state_dict(self)

    def load_state_dict(self, state: dict[str, np.ndarray], strict: bool = True) -> Layer:
        """Copy values from ``state`` into the parameters and buffers (shape-checked).

        All or nothing: everything is validated before anything is written
        (:class:`~tinyodl.nn.StateDictError` otherwise, with the model untouched).
        """
        _state.load_state_dict(self, state, strict)
        return self

    def check_state_dict(self, state: dict[str, np.ndarray], strict: bool = True) -> None:
        """Raise :class:`~tinyodl.nn.StateDictError` if :meth:`load_state_dict` would fail;
        write nothing."""
        _state.check_state_dict(self, state, strict)

    def freeze(self, *targets: str | Callable[[str, Layer], bool], kind: str | None = None):
        """Make parameters non-trainable (their gradients are dropped).

        Parameters
        ----------
        *targets : str or callable
            Layer names, name prefixes (``"features"`` covers ``"features.0"``), full
            parameter names (``"classifier.0.bias"``) or predicates ``f(name, layer)``.
            No target means the whole model.
        kind : {"weight", "bias"}, optional
            Only parameters with this local name.
        """
        _state.set_trainable(self, targets, kind, False, "freeze")
        return self

    def unfreeze(self, *targets: str | Callable[[str, Layer], bool], kind: str | None = None):
        """Make parameters trainable again; same arguments as :meth:`freeze`."""
        _state.set_trainable(self, targets, kind, True, "unfreeze")
        return self

    def describe(self, input_shape: tuple[int, ...]) -> list[dict[str, Any]]:
        """Trace shapes through the model without computing anything.

        Parameters
        ----------
        input_shape : tuple
            Full input shape including the batch, e.g. ``(1, 1, 28, 28)``.

        Returns
        -------
        list of dict
            One dict per sub-layer (containers first, then their children), with keys
            ``name``, ``type``, ``config``, ``input_shape``, ``output_shape``,
            ``num_params``, ``leaf`` (False for containers) and ``children`` (local names).
        """
        rows: list[dict[str, Any]] = []
        self._describe("", tuple(int(s) for s in input_shape), rows)
        return rows

    def _describe(self, name: str, in_shape: tuple[int, ...], rows: list) -> tuple[int, ...]:
        """Append this layer's row(s) to ``rows`` (not for the root) and return its output shape."""
        out_shape = self.output_shape(in_shape)
        if name:
            rows.append(_state.describe_row(self, name, in_shape, out_shape))
        return out_shape

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"
