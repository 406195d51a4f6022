"""Replaying a training step on the tape: walking the layer tree, the loss, the update.

Used by :func:`tinyodl.memory.analytic.analytic_training_memory`; the per-layer rules are in
:mod:`tinyodl.memory._rules`. Containers follow ``tinyodl.nn``: ``Sequential`` rebinds its
running ``x`` (so a layer's input is freed after the next layer ran, unless saved),
``InvertedResidual`` adds ``x`` at the end, ``Add`` sums body and shortcut.
"""

from __future__ import annotations

from typing import Any

from tinyodl.memory import _rules
from tinyodl.memory._tape import ELIDE_BYTES, Buf

OPTIMIZERS = ("sgd", "sgd_momentum", "adam")

# ----------------------------------------------------------------------------- walking


def _local_rules(layer: Any) -> tuple | None:
    return _rules.LEAF_RULES.get(type(layer).__name__)


def _is_sequential(layer: Any) -> bool:
    from tinyodl.nn import InvertedResidual, Sequential

    return type(layer) in (Sequential, InvertedResidual)


def _unsupported(name: str, layer: Any) -> NotImplementedError:
    known = sorted(_rules.LEAF_RULES) + ["Sequential", "InvertedResidual", "Add", "FrozenPrefix"]
    return NotImplementedError(
        f"analytic_training_memory: no memory rule for layer {name!r} of type "
        f"{type(layer).__name__}; supported types are {known}"
    )


def _join(prefix: str, local: str) -> str:
    return f"{prefix}.{local}" if prefix else local


def forward(ctx: _rules.Context, name: str, layer: Any, x: Buf, shape: tuple) -> Buf:
    """Replay ``layer.forward`` on an input block ``x`` of ``shape``; returns the output."""
    tape = ctx.tape
    out_shape = layer.output_shape(shape)
    rules = _local_rules(layer)
    if rules is not None:
        before = tape.start_local()
        out = rules[0](ctx, name, layer, x, shape, out_shape, ctx.mode(layer))
        ctx.rows[name]["forward_peak"] = tape.local_peak - before
        return out
    if type(layer).__name__ == "FrozenPrefix":  # chapter 08: inference only, nothing kept
        return _frozen_forward(ctx, name, layer, x, shape)
    if type(layer).__name__ == "Add":
        y = forward(ctx, _join(name, "body"), layer.body, x, shape)
        s = tape.ref(x)
        if layer.shortcut is not None:
            tape.drop(s)
            s = forward(ctx, _join(name, "shortcut"), layer.shortcut, x, shape)
        out = tape.new(ctx.nbytes(out_shape), "activations")
        tape.drop(y, s)
        return out
    if not _is_sequential(layer):
        raise _unsupported(name, layer)
    h = tape.ref(x)
    for local, child in layer.children().items():
        out = forward(ctx, _join(name, local), child, h, shape)
        tape.drop(h)
        h, shape = out, child.output_shape(shape)
    if getattr(layer, "use_residual", False):  # InvertedResidual: y + x
        out = tape.new(ctx.nbytes(shape), "activations")
        tape.drop(h)
        h = out
    return h


def backward(ctx: _rules.Context, name: str, layer: Any, dout: Buf, shape: tuple) -> Buf:
    """Replay ``layer.backward(dout)`` (``shape`` is the layer's input shape); returns dx."""
    tape = ctx.tape
    out_shape = layer.output_shape(shape)
    if type(layer).__name__ == "FrozenPrefix":  # the gradient stops here
        return tape.new(0)
    rules = _local_rules(layer)
    if rules is not None:
        before = tape.start_local()
        dx = rules[1](ctx, name, layer, dout, shape, out_shape)
        ctx.rows[name]["backward_peak"] = tape.local_peak - before
        return dx
    if type(layer).__name__ == "Add":
        parts = [backward(ctx, _join(name, "body"), layer.body, dout, shape)]
        if layer.shortcut is not None:
            parts.append(backward(ctx, _join(name, "shortcut"), layer.shortcut, dout, shape))
        dx = tape.new(ctx.nbytes(shape))
        tape.drop(*parts)
        return dx
    shapes, s = [], shape
    for child in layer.children().values():
        shapes.append(s)
        s = child.output_shape(s)
    h = tape.ref(dout)
    for (local, child), s in reversed(list(zip(layer.children().items(), shapes, strict=True))):
        dx = backward(ctx, _join(name, local), child, h, s)
        tape.drop(h)
        h = dx
    if getattr(layer, "use_residual", False):  # dx + dout
        dx = tape.new(ctx.nbytes(shape))
        tape.drop(h)
        h = dx
    return h


def _frozen_forward(ctx: _rules.Context, name: str, layer: Any, x: Buf, shape: tuple) -> Buf:
    """``tinyodl.transfer.FrozenPrefix``: each child runs in inference mode and what it
    saved is released right after it."""
    train, ctx.train = ctx.train, False
    h = ctx.tape.ref(x)
    for local, child in layer.children().items():
        child_name = _join(name, local)
        out = forward(ctx, child_name, child, h, shape)
        ctx.tape.drop(h)
        h, shape = out, child.output_shape(shape)
        for key in [k for k in ctx.saved if k == child_name or k.startswith(child_name + ".")]:
            _rules._release_saved(ctx, key)
    ctx.train = train
    return h


# ----------------------------------------------------------------------------- loss, update


def loss_gradient(ctx: _rules.Context, loss: str, logits_shape: tuple) -> Buf:
    """softmax_cross_entropy / mse_loss of tinyodl.nn.losses; returns dlogits."""
    tape, nbytes = ctx.tape, ctx.nbytes(logits_shape)
    if loss == "mse":
        diff = tape.new(nbytes)
        tape.spike(nbytes)  # diff**2
        dpred = tape.new(nbytes)  # 2 * scale * diff
        tape.drop(diff)
        return dpred
    targets = tape.new(nbytes)  # one-hot
    z = tape.new(nbytes)  # logits - max
    tape.spike(nbytes)  # exp(z)
    logp = tape.new(nbytes)  # z - log(sum)
    tape.drop(z)
    tape.spike(nbytes)  # targets * logp
    dlogits = tape.chain(nbytes, 4)  # (exp(logp) * s - targets) * scale
    tape.drop(targets, logp)
    return dlogits


def resolve_optimizer(optimizer: Any) -> tuple[str, float, bool]:
    """(kind, weight_decay, nesterov) from a name or an optimizer of tinyodl.nn."""
    if isinstance(optimizer, str):
        if optimizer not in OPTIMIZERS:
            raise ValueError(
                f"analytic_training_memory: optimizer must be one of {OPTIMIZERS} or an "
                f"optimizer instance, got {optimizer!r}"
            )
        return optimizer, 0.0, False
    kind = type(optimizer).__name__
    wd = float(getattr(optimizer, "weight_decay", 0.0))
    if kind == "Adam":
        return "adam", wd, False
    if kind == "SGD":
        name = "sgd_momentum" if optimizer.momentum else "sgd"
        return name, wd, bool(optimizer.nesterov)
    raise ValueError(f"analytic_training_memory: unknown optimizer type {kind}")


def update(ctx: _rules.Context, kind: str, wd: float, nesterov: bool, size: int) -> list[Buf]:
    """One parameter's update (optim.py); returns newly created state blocks."""
    tape, state = ctx.tape, []
    small = size < ELIDE_BYTES
    if ctx.backend == "cython" and kind != "adam":  # ops.sgd_update: one pass, in place
        if kind == "sgd_momentum" and not ctx.grads_resident:
            state = [tape.new(size, "optimizer_state")]  # the momentum buffer
        return state
    g = tape.chain(size, 2) if wd else None  # grad + wd * p
    if kind == "adam":
        if not ctx.grads_resident:
            state = [tape.new(size, "optimizer_state"), tape.new(size, "optimizer_state")]
        tape.spike(size)  # (1 - b1) * grad
        tape.spike(*([size, size] if small else [size]))  # (1 - b2) * grad * grad
        t1 = tape.new(size)  # v / (1 - b2^t)
        denom = tape.new(size)  # sqrt(...)
        tape.drop(t1)
        if small:  # + eps
            d2 = tape.new(size)
            tape.drop(denom)
            denom = d2
        tape.spike(*([size, size] if small else [size]))  # c * m / denom
        tape.drop(denom)
    elif kind == "sgd_momentum":
        if not ctx.grads_resident:
            state = [tape.new(size, "optimizer_state")]  # np.array(grad, copy=True)
        # grad = grad + momentum * buf (Nesterov) or buf: the weight-decayed grad is released
        nest = tape.chain(size, 2) if nesterov else None
        tape.drop(g)
        g = nest
        tape.spike(size)  # lr * grad
    else:
        tape.spike(size)  # lr * grad
    tape.drop(g)
    return state
