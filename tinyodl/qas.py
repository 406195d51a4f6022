"""Training the real int8 graph, and quantization-aware scaling (QAS) (chapter 03).

Lin et al., "On-Device Training Under 256KB Memory" (NeurIPS 2022), section 2.1. On a
microcontroller the model *is* the int8 graph: forward runs the integer kernels, and the
trainable tensors are the int8 weights ``W_q`` and int32 biases ``b_q``. Backward sends a
float gradient through the integer graph (:meth:`QuantizedModel.backward
<tinyodl.quantization.QuantizedModel.backward>`; the straight-through estimator at each
clamp) and yields ``G_Wq = dL/dW_q``. Because ``W = s_W W_q``::

    G_Wq = s_W G_W          so    ||W_q|| / ||G_Wq||  =  s_W^-2 ||W|| / ||G_W||

With ``s_W ~ 1e-2`` the int graph's weight-to-gradient ratio is ~1e4 times the float
model's: SGD with the float learning rate barely moves the weights (its effective rate is
``alpha s_W^2``), and differently for every layer and channel. **QAS** rescales
(GUIDE section 4, paper Eq. 4)::

    G~_Wq = G_Wq * s_W^-2     (per output channel)        G~_bq = G_bq * (s_W s_x)^-2

so that ``s_W * (-alpha G~_Wq) = -alpha G_W``: the dequantized QAS update *is* the fp32 SGD
update (up to rounding), and the float learning rate works unchanged.

Where the weights live (``store``):

* ``"shadow"``: an fp32 copy of ``W_q`` (in integer units) takes every update and is
  rounded to int8 after each step -- small updates accumulate;
* ``"int8"``: only the int8 tensor exists; an update below half a step rounds to zero and
  vanishes. :meth:`Int8Optimizer.frozen_fraction` measures how many weights never moved.

:func:`weight_gradient_ratios` computes ``||W|| / ||G||`` per layer for the fp32 model, the
int8 graph and the int8 graph with QAS (the paper's Figure 3); the notebook plots it.
``tinyodl bench qas`` reproduces the shape of the paper's Table 1 on tasks A and B.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tinyodl import nn
from tinyodl.data.batching import BatchSampler
from tinyodl.quant import round_half_away
from tinyodl.quantization import QConv, QuantizedModel

STORES = ("shadow", "int8")
KINDS = ("sgd", "adam")

__all__ = [
    "KINDS",
    "STORES",
    "Int8Optimizer",
    "fit_int8",
    "int8_train_step",
    "qas_gradient_scales",
    "weight_gradient_ratios",
]


def qas_gradient_scales(conv: QConv) -> tuple[np.ndarray, np.ndarray]:
    """QAS factors of one layer: ``s_W^-2`` (broadcast to the weight) and ``(s_W s_x)^-2``.

    Returns
    -------
    weight_factor : float64, shape (F, 1, ...) matching ``conv.weight``
    bias_factor : float64, shape (F,)
    """
    s_w = conv.weight_scale
    weight_factor = (s_w**-2).reshape((-1,) + (1,) * (conv.weight.ndim - 1))
    return weight_factor, (s_w * conv.input.scale) ** -2


class Int8Optimizer:
    """SGD with momentum, or Adam, on the integer weights and biases of a quantized model.

    Parameters
    ----------
    qmodel : QuantizedModel
        Its trainable :class:`~tinyodl.quantization.QConv` layers (``weight_trainable`` /
        ``bias_trainable``) are updated in place.
    kind : {"sgd", "adam"}
    lr : float
    momentum : float, default 0.9
        SGD only (PyTorch's rule: ``buf = momentum * buf + g``).
    betas, eps : Adam's constants.
    qas : bool, default False
        Rescale gradients by ``s_W^-2`` (weights) and ``(s_W s_x)^-2`` (biases) first.
    store : {"shadow", "int8"}
        Keep an fp32 shadow of the integer tensors, or only the integers themselves.

    Attributes
    ----------
    moved : dict name -> bool array
        Which int8 weights have changed at least once since the optimizer was created.
    """

    def __init__(
        self,
        qmodel: QuantizedModel,
        kind: str = "sgd",
        lr: float = 0.01,
        momentum: float = 0.9,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        qas: bool = False,
        store: str = "shadow",
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"Int8Optimizer: kind must be one of {KINDS}, got {kind!r}")
        if store not in STORES:
            raise ValueError(f"Int8Optimizer: store must be one of {STORES}, got {store!r}")
        if lr < 0:
            raise ValueError(f"Int8Optimizer: lr must be >= 0, got {lr}")
        self.qmodel, self.kind, self.lr, self.momentum = qmodel, kind, float(lr), momentum
        self.betas, self.eps, self.qas, self.store = tuple(betas), eps, bool(qas), store
        self.layers = dict(qmodel.named_convs())
        self.state: dict[str, dict[str, np.ndarray]] = {}
        self.moved = {n: np.zeros(c.weight.shape, bool) for n, c in self.layers.items()}
        self.step_count = 0

    def zero_grad(self) -> None:
        self.qmodel.zero_grad()

    def _direction(self, key: str, grad: np.ndarray) -> np.ndarray:
        """The optimizer's update direction for one tensor (state kept under ``key``)."""
        slots = self.state.setdefault(key, {})
        if self.kind == "sgd":
            if not self.momentum:
                return grad
            buf = slots.get("momentum_buffer")
            if buf is None:
                buf = slots["momentum_buffer"] = np.array(grad, dtype=np.float32)
            else:
                buf *= np.float32(self.momentum)
                buf += grad
            return buf
        b1, b2 = self.betas
        if "exp_avg" not in slots:
            slots["exp_avg"] = np.zeros_like(grad, dtype=np.float32)
            slots["exp_avg_sq"] = np.zeros_like(grad, dtype=np.float32)
        m, v = slots["exp_avg"], slots["exp_avg_sq"]
        m *= np.float32(b1)
        m += np.float32(1 - b1) * grad
        v *= np.float32(b2)
        v += np.float32(1 - b2) * grad * grad
        t = self.step_count
        denom = np.sqrt(v / np.float32(1 - b2**t))
        denom += np.float32(self.eps)
        return (m / np.float32(1 - b1**t)) / denom

    def _apply(self, key: str, current: np.ndarray, delta: np.ndarray, lo: int, hi: int):
        """New integer tensor after adding ``delta`` (integer units) in the chosen store."""
        if self.store == "int8":  # only integers exist: |delta| < 0.5 rounds to no change
            return np.clip(current + round_half_away(delta), lo, hi)
        slots = self.state.setdefault(key, {})
        if "shadow" not in slots:
            slots["shadow"] = current.astype(np.float32)
        shadow = slots["shadow"]
        shadow += delta
        np.clip(shadow, lo, hi, out=shadow)
        rounded = shadow + np.copysign(np.float32(0.5), shadow)  # half away from zero
        return np.trunc(rounded, out=rounded)

    def step(self) -> None:
        """Update every trainable int8 weight and int32 bias that has a gradient."""
        self.step_count += 1
        for name, conv in self.layers.items():
            w_factor, b_factor = np.float32(1.0), np.float32(1.0)
            if self.qas:
                w_factor, b_factor = (f.astype(np.float32) for f in qas_gradient_scales(conv))
            if conv.weight_trainable and conv.weight_grad is not None:
                grad = conv.weight_grad * w_factor
                delta = np.float32(-self.lr) * self._direction(f"{name}.weight", grad)
                new = self._apply(f"{name}.weight", conv.weight, delta, -127, 127)
                new = new.astype(np.int8)
                self.moved[name] |= new != conv.weight
                conv.weight = new
            if conv.bias_trainable and conv.bias_grad is not None:
                grad = conv.bias_grad * b_factor
                delta = np.float32(-self.lr) * self._direction(f"{name}.bias", grad)
                new = self._apply(f"{name}.bias", conv.bias, delta, -(2**31), 2**31 - 1)
                conv.bias = new.astype(np.int32)

    def frozen_fraction(self) -> float:
        """Share of trainable int8 weights whose value never changed (the vanished updates)."""
        masks = [m for n, m in self.moved.items() if self.layers[n].weight_trainable]
        total = sum(m.size for m in masks)
        return 1.0 - sum(int(m.sum()) for m in masks) / max(total, 1)

    def state_nbytes(self) -> int:
        """Bytes of the optimizer state (momentum / Adam moments) and fp32 shadows."""
        return sum(a.nbytes for slots in self.state.values() for a in slots.values())


# ----------------------------------------------------------------------------- training


def int8_train_step(
    qmodel: QuantizedModel, optimizer: Int8Optimizer, x: np.ndarray, y: np.ndarray
) -> tuple[float, np.ndarray]:
    """One step: quantize ``x``, integer forward (saving), float loss, backward, update.

    The gradients are freed after the update (as a training engine applies each update and
    frees its gradient), so between steps only the weights and the optimizer state live.
    Returns the loss and the (float) logits.
    """
    optimizer.zero_grad()
    logits = qmodel.dequantize_output(qmodel.forward_int(qmodel.quantize_input(x), save=True))
    loss, dlogits = nn.softmax_cross_entropy(logits, y)
    qmodel.backward(dlogits)
    optimizer.step()
    optimizer.zero_grad()
    return float(loss), logits


def fit_int8(
    qmodel: QuantizedModel,
    optimizer: Int8Optimizer,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    schedule: Callable[[int], float] | None = None,
    progress: bool = False,
) -> list[float]:
    """Train the int8 graph with mini-batches in the order :func:`tinyodl.train.fit` uses.

    The batches come from :class:`tinyodl.data.BatchSampler` with the same seed, so an
    fp32 run through ``fit`` and an int8 run here see identical batches. Returns the
    per-step losses; raises ``FloatingPointError`` naming the step if the loss is not finite.
    """
    sampler = BatchSampler(len(x), batch_size, seed)
    losses: list[float] = []
    total = epochs * len(sampler)
    from tqdm.auto import tqdm

    with tqdm(total=total, disable=not progress, leave=False, unit="step") as bar:
        while sampler.epoch < epochs:
            for idx in sampler:
                if schedule is not None:
                    optimizer.lr = schedule(len(losses))
                loss, _ = int8_train_step(qmodel, optimizer, x[idx], y[idx])
                if not np.isfinite(loss):
                    raise FloatingPointError(
                        f"fit_int8: the loss is not finite at step {len(losses)}"
                    )
                losses.append(loss)
                bar.update(1)
    return losses


# ----------------------------------------------------------------------------- ||W|| / ||G||


def weight_gradient_ratios(
    float_model: nn.Sequential, qmodel: QuantizedModel, x: np.ndarray, y: np.ndarray
) -> dict[str, dict[str, float]]:
    """``||W|| / ||G||`` per layer for fp32, int8 and int8 with QAS (paper Fig. 3).

    Parameters
    ----------
    float_model : nn.Sequential
        The folded float model the int8 model was made from (``fold_model``); its conv and
        linear layers must have the integer layers' names.
    qmodel : QuantizedModel
    x, y : one batch

    Returns
    -------
    dict name -> {"fp32", "int8", "int8_qas"} for every conv/linear layer, in order.
    """
    layers = dict(float_model.named_layers())
    float_model.zero_grad()
    logits = float_model.forward(x, train=False)
    _, d = nn.softmax_cross_entropy(logits, y)
    float_model.backward(d)
    qmodel.zero_grad()
    out = qmodel.dequantize_output(qmodel.forward_int(qmodel.quantize_input(x), save=True))
    _, dq = nn.softmax_cross_entropy(out, y)
    qmodel.backward(dq)
    ratios = {}
    for name, conv in qmodel.named_convs():
        w = layers[name].params["weight"]
        w_factor, _ = qas_gradient_scales(conv)
        wq = conv.weight.astype(np.float64)
        g = conv.weight_grad.astype(np.float64)
        ratios[name] = {
            "fp32": float(np.linalg.norm(w.data) / np.linalg.norm(w.grad)),
            "int8": float(np.linalg.norm(wq) / np.linalg.norm(g)),
            "int8_qas": float(np.linalg.norm(wq) / np.linalg.norm(g * w_factor)),
        }
    qmodel.zero_grad()
    float_model.zero_grad()
    return ratios


def trainable_parameters(qmodel: QuantizedModel) -> int:
    """Number of int8 weights and int32 biases the optimizer may change."""
    total = 0
    for _, conv in qmodel.named_convs():
        total += conv.weight.size if conv.weight_trainable else 0
        total += conv.bias.size if conv.bias_trainable else 0
    return total


def describe_optimizer(opt: Int8Optimizer) -> dict[str, Any]:
    """Plain summary (JSON) of an optimizer's settings."""
    return {"kind": opt.kind, "lr": opt.lr, "qas": opt.qas, "store": opt.store}
