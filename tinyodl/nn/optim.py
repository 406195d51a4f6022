"""Optimizers: SGD (momentum, Nesterov, weight decay), Adam and AdamW (chapter 00).

Both follow PyTorch's update rules, update ``param.data`` in place, skip frozen parameters
and parameters without a gradient, and save their state as plain arrays (``state_dict``).
``opt.lr`` may be changed between steps (learning-rate schedules).

SGD, with ``g = grad + weight_decay * w``::

    buf = g                        (first step)
    buf = momentum * buf + g       (later steps)
    g   = g + momentum * buf  if nesterov else  buf
    w  -= lr * g

Adam (Kingma & Ba 2015), bias-corrected, with L2 weight decay added to the gradient::

    m = b1 m + (1 - b1) g;    v = b2 v + (1 - b2) g^2
    w -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

AdamW (Loshchilov & Hutter 2019) decouples the weight decay from the gradient: the moments
see the raw gradient and the weights shrink directly, ``w -= lr * weight_decay * w``, before
the Adam step -- so the decay is not rescaled by ``1 / sqrt(v)``.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from tinyodl import ops
from tinyodl.nn.parameter import Parameter


def _named(params) -> list[tuple[str, Parameter]]:
    """(name, Parameter) pairs from a model, a dict, pairs, or bare Parameters."""
    if hasattr(params, "named_parameters"):
        return list(params.named_parameters())
    if isinstance(params, dict):
        return list(params.items())
    items = list(params)
    if items and isinstance(items[0], tuple):
        return [(str(n), p) for n, p in items]
    return [(str(i), p) for i, p in enumerate(items)]


class Optimizer:
    """Base class: holds named parameters, per-parameter state and the step count.

    Parameters
    ----------
    params : Layer, dict name -> Parameter, iterable of (name, Parameter) or of Parameter
    lr : float
    """

    _slots: tuple[str, ...] = ()  # names of the per-parameter state arrays

    def __init__(self, params: object, lr: float) -> None:
        self.params = _named(params)
        for name, p in self.params:
            if not isinstance(p, Parameter):
                raise TypeError(f"{type(self).__name__}: {name!r} is not a Parameter")
        if lr < 0:
            raise ValueError(f"{type(self).__name__}: lr must be >= 0, got {lr}")
        self.lr = float(lr)
        self.state: dict[str, dict[str, np.ndarray]] = {}
        self.step_count = 0

    def _active(self) -> Iterable[tuple[str, Parameter]]:
        return ((n, p) for n, p in self.params if p.trainable and p.grad is not None)

    def step(self) -> None:
        """Apply one update to every trainable parameter that has a gradient."""
        self.step_count += 1
        for name, p in self._active():
            self._update(name, p, p.grad)

    def _update(self, name: str, p: Parameter, grad: np.ndarray) -> None:
        raise NotImplementedError

    def zero_grad(self, set_to_none: bool = False) -> None:
        """Reset the gradients of all parameters handled by this optimizer."""
        for _, p in self.params:
            p.zero_grad(set_to_none)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Plain arrays: ``"lr"``, ``"step"`` and ``"<param>.<slot>"`` per parameter."""
        out = {"lr": np.array(self.lr), "step": np.array(self.step_count)}
        for name, slots in self.state.items():
            for slot, value in slots.items():
                out[f"{name}.{slot}"] = np.array(value, copy=True)
        return out

    def check_state_dict(self, state: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
        """Validate a :meth:`state_dict` without changing anything; return the slots.

        Raises ``KeyError`` (missing ``lr``/``step``, unknown parameter or slot) or
        ``ValueError`` (a slot whose shape differs from its parameter), naming the key.
        """
        cls = type(self).__name__
        if not isinstance(state, dict):
            raise TypeError(f"{cls}.load_state_dict: expected a dict, got {type(state).__name__}")
        for key in ("lr", "step"):
            if key not in state:
                raise KeyError(f"{cls}.load_state_dict: missing key {key!r}")
        known = dict(self.params)
        slots: dict[str, dict[str, np.ndarray]] = {}
        for key, value in state.items():
            if key in ("lr", "step"):
                continue
            name, _, slot = key.rpartition(".")
            if name not in known or slot not in self._slots:
                raise KeyError(f"{cls}.load_state_dict: unexpected key {key!r}")
            value = np.asarray(value)
            if slot != "step" and value.shape != known[name].shape:
                raise ValueError(
                    f"{cls}.load_state_dict: {key!r} has shape {value.shape}, "
                    f"parameter has {known[name].shape}"
                )
            slots.setdefault(name, {})[slot] = np.array(value, copy=True)
        return slots

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore from :meth:`state_dict` (parameter names and shapes must match).

        All or nothing: on an error the optimizer keeps its current state.
        """
        slots = self.check_state_dict(state)
        lr, step = float(state["lr"]), int(state["step"])
        self.lr, self.step_count, self.state = lr, step, slots


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov and L2 weight decay.

    Parameters
    ----------
    params : see :class:`Optimizer`
    lr : float
    momentum : float, default 0
    weight_decay : float, default 0
    nesterov : bool, default False (needs momentum > 0)
    """

    _slots = ("momentum_buffer",)

    def __init__(
        self,
        params: object,
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        super().__init__(params, lr)
        if nesterov and momentum <= 0:
            raise ValueError("SGD: nesterov=True needs momentum > 0")
        self.momentum, self.weight_decay, self.nesterov = momentum, weight_decay, nesterov

    def _update(self, name, p, grad):
        # the rule of the module docstring, in one pass: ops.sgd_update (numpy reference in
        # tinyodl/reference/elementwise.py; the compiled kernel is threaded, same bits)
        buf, first = None, False
        if self.momentum:
            slots = self.state.setdefault(name, {})
            buf = slots.get("momentum_buffer")
            if buf is None:
                buf = slots["momentum_buffer"] = np.empty_like(p.data)
                first = True
        ops.sgd_update(
            p.data, grad, buf, self.lr, self.momentum, self.weight_decay, self.nesterov, first
        )


class Adam(Optimizer):
    """Adam with bias correction and L2 weight decay (PyTorch's ``torch.optim.Adam``).

    Parameters
    ----------
    params : see :class:`Optimizer`
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    weight_decay : float, default 0
    """

    _slots = ("exp_avg", "exp_avg_sq", "step")

    def __init__(
        self,
        params: object,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr)
        self.betas, self.eps, self.weight_decay = tuple(betas), eps, weight_decay

    def _update(self, name, p, grad):
        if self.weight_decay:  # L2: the decay goes through the moments
            grad = grad + self.weight_decay * p.data
        self._adam_step(name, p, grad)

    def _adam_step(self, name: str, p: Parameter, grad: np.ndarray) -> None:
        """The bias-corrected Adam update of ``p`` from ``grad`` (no weight decay)."""
        b1, b2 = self.betas
        slots = self.state.setdefault(name, {})
        if "exp_avg" not in slots:
            slots["exp_avg"] = np.zeros_like(p.data)
            slots["exp_avg_sq"] = np.zeros_like(p.data)
            slots["step"] = np.array(0)
        slots["step"] = np.array(int(slots["step"]) + 1)  # per parameter, as in PyTorch
        t = int(slots["step"])
        m, v = slots["exp_avg"], slots["exp_avg_sq"]
        m *= b1
        m += (1 - b1) * grad
        v *= b2
        v += (1 - b2) * grad * grad
        denom = np.sqrt(v / (1 - b2**t)) + self.eps
        p.data -= (self.lr / (1 - b1**t)) * m / denom


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019; ``torch.optim.AdamW``).

    Each step first shrinks the weights, ``w *= 1 - lr * weight_decay``, then applies the
    Adam update computed from the raw gradient (no decay term in the moments).

    Parameters
    ----------
    params : see :class:`Optimizer`
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    weight_decay : float, default 0.01 (PyTorch's default)

    The state (``exp_avg``, ``exp_avg_sq``, ``step`` per parameter) is Adam's.
    """

    def __init__(
        self,
        params: object,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)

    def _update(self, name, p, grad):
        if self.weight_decay:  # decoupled: shrink the weights, not the gradient
            p.data *= 1.0 - self.lr * self.weight_decay
        self._adam_step(name, p, grad)
