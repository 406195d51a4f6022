"""Executing the compiled schedule: the step kernels, the optimizer, :func:`compile_training`.

Each :class:`~tinyodl.engine.schedule.Step` kind has one function here, ``fn(plan, step,
env) -> dict`` of the buffers it allocates; ``env`` maps buffer names to arrays and the
executor deletes a buffer right after the step the plan frees it in, so the arrays alive
at any moment are exactly the plan's live set. The arithmetic mirrors
:meth:`QConv.backward <tinyodl.quantization.QConv.backward>` and
:class:`tinyodl.qas.Int8Optimizer` (SGD, optional momentum, QAS, fp32 shadow or pure
int8), so one compiled step gives the same integers as ``forward_int(save=True)``,
``backward`` and ``Int8Optimizer.step`` -- bit for bit when every channel of a layer is
updated (``tests/test_engine.py``).
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinyodl import nn, ops
from tinyodl.engine.graph import Graph, LayerUpdate, requires_grad, resolve_scheme, trace
from tinyodl.engine.schedule import (
    ARRAY_HEADER_BYTES,
    MemoryPlan,
    Step,
    build_schedule,
    plan_memory,
)
from tinyodl.qas import qas_gradient_scales
from tinyodl.quant import round_half_away

__all__ = ["KERNELS", "SGDConfig", "TrainingPlan", "compile_training", "fit"]


def _unpack(bits: np.ndarray, shape) -> np.ndarray:
    n = int(np.prod(shape))
    return np.unpackbits(bits, count=n).view(bool).reshape(shape)


def _channel_shape(ndim: int) -> tuple[int, ...]:
    return (1, -1) if ndim == 2 else (1, -1, 1, 1)


# ----------------------------------------------------------------------------- forward


#: Values per block of the elementwise steps (input quantization, clamp masks): their numpy
#: temporaries (float64 in the quantizer, a casting buffer in the mask) stay a few KiB
#: instead of a few times the tensor. Elementwise, so the bits are the same.
BLOCK = 256


def k_quantize(plan, step, env):
    x, qp = env["x"], plan.graph.qmodel.input
    flat = np.ascontiguousarray(x).reshape(-1)
    q = np.empty(flat.shape, dtype=np.int8)
    for i in range(0, flat.size, BLOCK):
        q[i : i + BLOCK] = qp.quantize(flat[i : i + BLOCK])
    return {"a:input": q.reshape(x.shape)}


def _forward_scratch_per_channel(conv, out_shape) -> int:
    """Bytes of the int8 forward kernel's scratch that grow with the output channels.

    numpy reference: the weight row widened (about 3 bytes per weight) and an int32
    accumulator per output value. Compiled kernel: it requantizes each MR x NR block of
    accumulators as it completes (``kernels/int8.pyx``), so only its (i, j, c) copy of the
    weight row remains (1 byte per weight; none for a pointwise layer whose C is a multiple
    of 4, whose rows are read in place).
    """
    from tinyodl import backend

    if backend.get_backend() != "cython":
        return 3 * conv.weight[0].size + 4 * int(np.prod(out_shape)) // conv.out_channels
    pointwise = conv.weight.shape[2:] == (1, 1) and tuple(conv.stride) == (1, 1)
    if pointwise and tuple(conv.padding) == (0, 0) and conv.weight.shape[1] % 4 == 0:
        return 0
    return conv.weight[0].size


def _conv_forward(conv, x: np.ndarray, limit: int | None) -> np.ndarray:
    """``conv.forward(x)``, a few output channels at a time when its scratch is large.

    Computing ``limit // per_channel`` output channels per call bounds the part of the
    kernel's scratch that grows with them (:func:`_forward_scratch_per_channel`). Integer
    arithmetic: the result is exactly ``conv.forward(x)``.
    """
    out_shape = conv.output_shape(x.shape)
    if conv.kind == "linear":
        return conv.forward(x)
    per_channel = max(1, _forward_scratch_per_channel(conv, out_shape))
    if limit is None or per_channel * conv.out_channels <= limit or conv.kind == "linear":
        return conv.forward(x)
    if conv.kind == "conv" and conv.groups != 1:
        return conv.forward(x)
    step = max(1, int(limit) // per_channel)
    y = np.empty(out_shape, dtype=np.int8)
    zi, zo = conv.input.zero_point, conv.output.zero_point
    clamp = (conv.act_min, conv.act_max, conv.rounding)
    for f0 in range(0, conv.out_channels, step):
        sl = slice(f0, min(f0 + step, conv.out_channels))
        rq = (conv.multiplier[sl], conv.shift[sl])
        if conv.kind == "depthwise":
            xs = np.ascontiguousarray(x[:, sl])
            geometry = (conv.stride, conv.padding)
            y[:, sl] = ops.depthwise_conv2d_s8(
                xs, conv.weight[sl], conv.bias[sl], zi, zo, *rq, *geometry, *clamp
            )
        else:
            geometry = (conv.stride, conv.padding, 1)
            y[:, sl] = ops.conv2d_s8(
                x, conv.weight[sl], conv.bias[sl], zi, zo, *rq, *geometry, *clamp
            )
    return y


def k_forward(plan, step, env):
    node = plan.nodes[step.node]
    args = [env[f"a:{t}"] for t in node.inputs]
    if node.kind == "conv":
        y = _conv_forward(node.op, args[0], plan.scratch_limit)
    else:
        y = node.op.forward(*args) if node.kind == "add" else node.op.forward(args[0])
    out = {f"a:{node.output}": y}
    mask = f"m:{node.output}"
    if mask in step.allocs:  # 1 bit per value: did the output sit strictly inside the clamp?
        lo, hi = (node.op.act_min, node.op.act_max) if node.kind == "conv" else (-128, 127)
        out[mask] = np.packbits((y > lo) & (y < hi), axis=None)
    saved = f"s:{node.name}"
    if saved in step.allocs:  # partial depthwise update: keep only its channels' inputs
        out[saved] = np.ascontiguousarray(args[0][:, plan.updates[node.name].channels])
    return out


def k_loss(plan, step, env):
    qmodel = plan.graph.qmodel
    logits = qmodel.dequantize_output(env[step.reads[0]])
    loss, dlogits = nn.softmax_cross_entropy(logits, env["y"])
    plan.last_loss = float(loss)
    g = np.asarray(dlogits, dtype=np.float32) * np.float32(qmodel.output.scale)
    return {step.allocs[0]: g}


# ----------------------------------------------------------------------------- backward


def k_bwd_mask(plan, step, env):
    """``g <- mask * g * M`` in place: the clamp's straight-through estimator, then d acc."""
    node = plan.nodes[step.node]
    g = env[step.inplace[0]]
    _mask_in_place(g, env[step.reads[0]])
    _scale_channels_in_place(g, node.op._multiplier32)
    return {}


def _scale_channels_in_place(g: np.ndarray, m: np.ndarray) -> None:
    """``g *= m`` per channel (axis 1), a few channels at a time.

    numpy broadcasts ``(N, C, H, W) * (1, C, 1, 1)`` through a buffer of up to 8192 values
    (32 KiB of float32, as much as the gradient itself here); on blocks of about
    :data:`BLOCK` values that buffer stays small. Same products, same bits.
    """
    if g.ndim == 2:
        g *= m.reshape(1, -1)
        return
    n, c = g.shape[:2]
    rows = g.reshape(n, c, -1)
    step = max(1, BLOCK // (n * rows.shape[2]))
    for c0 in range(0, c, step):
        part = rows[:, c0 : c0 + step]
        np.multiply(part, m[c0 : c0 + step].reshape(1, -1, 1), out=part)


def _mask_in_place(g: np.ndarray, bits: np.ndarray) -> None:
    """``g *= mask`` (``bits`` packed, one per value), :data:`BLOCK` values at a time."""
    flat = g.reshape(-1)  # g is C-contiguous: a view
    for i in range(0, flat.size, BLOCK):  # BLOCK is a multiple of 8: whole bytes
        part = flat[i : i + BLOCK]
        mask = np.unpackbits(bits[i // 8 : (i + BLOCK) // 8], count=part.size).view(bool)
        np.multiply(part, mask, out=part)


def _dx_chunks(conv, limit: int | None) -> list[slice]:
    """Input-channel slices whose float32 weight copy stays under ``limit`` bytes.

    The numpy reference and the compiled kernels of other than 1x1 layers convert the
    weight they are given to float32 (4 bytes per weight, more with the float backward's
    packing); given all of it, that copy can be the largest scratch of a sparse step. An
    input channel's gradient needs only the weights that read it (``W[:, c]``; a depthwise
    layer's ``W[c]``), so the engine asks for ``dL/dx`` a few input channels at a time.
    """
    c_in = conv.weight.shape[1] if conv.kind != "depthwise" else conv.weight.shape[0]
    if limit is None or (conv.kind == "conv" and conv.groups != 1) or _int8_dx_in_place(conv):
        return [slice(0, c_in)]
    per_channel = 4 * (conv.weight.size // c_in)
    step = max(1, int(limit) // per_channel)
    return [slice(c, min(c + step, c_in)) for c in range(0, c_in, step)]


def _int8_dx_in_place(conv) -> bool:
    """Does this backend's ``dL/dx`` read the int8 weights in place (no float copy)?

    The compiled pointwise kernel does (``kernels/simd/float_s8a.h``: F x MR floats of
    scratch); the linear one too when ``INT8_OPERAND_GEMM``. Then one call is best.
    """
    from tinyodl import backend

    if backend.get_backend() != "cython":
        return False
    from tinyodl._kernels import int8_backward as kb

    if conv.kind == "linear":
        return bool(getattr(kb, "INT8_OPERAND_GEMM", False))
    pointwise = (
        conv.kind == "conv"
        and conv.groups == 1
        and conv.weight.shape[2:] == (1, 1)
        and tuple(conv.stride) == (1, 1)
        and tuple(conv.padding) == (0, 0)
    )
    return pointwise and bool(getattr(kb, "POINTWISE_DX_IN_PLACE", False))


def k_bwd_dx_inplace(plan, step, env):
    """``dL/dx`` of a stride-1 "same" depthwise layer written over its ``dL/dout``.

    Channel c of ``dx`` needs only channel c of ``dout``, so a few channels at a time are
    computed into a small buffer and copied back over the gradient they came from (the
    schedule lets this buffer take the place of ``dout``, whose last reader this is).
    """
    node = plan.nodes[step.node]
    conv, g = node.op, env[step.reads[0]]
    n, c, h, w = g.shape
    per_channel = 4 * n * h * w
    limit = plan.scratch_limit or 16 * 1024
    step_c = max(1, (limit // 4) // per_channel)
    for c0 in range(0, c, step_c):
        sl = slice(c0, min(c0 + step_c, c))
        shape = (n, sl.stop - sl.start, h, w)
        g[:, sl] = ops.conv2d_s8_backward_input(
            np.ascontiguousarray(g[:, sl]), conv.weight[sl], shape,
            conv.stride, conv.padding, shape[1],
        )  # fmt: skip
    return {step.allocs[0]: g}


def k_bwd_dx(plan, step, env):
    node = plan.nodes[step.node]
    conv, g = node.op, env[step.reads[0]]
    chunks = _dx_chunks(conv, plan.scratch_limit)
    if len(chunks) == 1:
        if conv.kind == "linear":
            return {step.allocs[0]: ops.linear_s8_backward_input(g, conv.weight)}
        dx = ops.conv2d_s8_backward_input(
            g, conv.weight, node.in_shapes[0], conv.stride, conv.padding, conv._groups()
        )
        return {step.allocs[0]: dx}
    dx = np.empty(node.in_shapes[0], dtype=np.float32)
    for sl in chunks:
        if conv.kind == "linear":
            dx[:, sl] = ops.linear_s8_backward_input(g, conv.weight[:, sl])
            continue
        n, _, h, w = node.in_shapes[0]
        shape = (n, sl.stop - sl.start, h, w)
        if conv.kind == "depthwise":
            part = ops.conv2d_s8_backward_input(
                np.ascontiguousarray(g[:, sl]), conv.weight[sl], shape,
                conv.stride, conv.padding, shape[1],
            )  # fmt: skip
        else:
            part = ops.conv2d_s8_backward_input(
                g, conv.weight[:, sl], shape, conv.stride, conv.padding, 1
            )
        dx[:, sl] = part
    return {step.allocs[0]: dx}


def k_bwd_db(plan, step, env):
    g = env[step.reads[0]]
    return {step.allocs[0]: g.sum(axis=0 if g.ndim == 2 else (0, 2, 3))}


def k_bwd_dw(plan, step, env):
    node = plan.nodes[step.node]
    conv, u = node.op, plan.updates[node.name]
    g, x = env[step.reads[0]], env[step.reads[1]]
    zp = conv.input.zero_point
    if not u.full:
        g = np.ascontiguousarray(g[:, u.channels])
    shape = (len(u.channels), *conv.weight.shape[1:])
    if conv.kind == "linear":
        dw = ops.linear_s8_backward_weight(g, x, zp)
    elif conv.kind == "depthwise":  # x holds only the updated channels (or all of them)
        dw = ops.conv2d_s8_backward_weight(g, x, zp, shape, conv.stride, conv.padding, shape[0])
    elif conv.groups == 1 or u.full:
        dw = ops.conv2d_s8_backward_weight(
            g, x, zp, shape, conv.stride, conv.padding, conv._groups()
        )
    else:
        raise NotImplementedError(
            f"engine: partial-channel update of grouped conv {node.name!r} is not supported"
        )
    return {step.allocs[0]: dw}


def k_bwd_add(plan, step, env):
    node = plan.nodes[step.node]
    g = env[step.reads[0]]
    np.multiply(g, _unpack(env[step.reads[1]], g.shape), out=g)
    s = node.op.output.scale
    out = {step.allocs[0]: g * np.float32(node.op.a.scale / s)}
    if len(step.allocs) > 1:
        out[step.allocs[1]] = g * np.float32(node.op.b.scale / s)
    return out


def k_bwd_gap(plan, step, env):
    n, c, h, w = plan.nodes[step.node].in_shapes[0]
    share = (env[step.reads[0]] / np.float32(h * w))[:, :, None, None]
    return {step.allocs[0]: np.broadcast_to(share, (n, c, h, w)).copy()}


def k_bwd_flatten(plan, step, env):
    shape = plan.nodes[step.node].in_shapes[0]
    return {step.allocs[0]: env[step.reads[0]].reshape(shape).copy()}


def k_accumulate(plan, step, env):
    env[step.inplace[0]] += env[step.reads[0]]
    return {}


# ----------------------------------------------------------------------------- updates


@dataclass
class SGDConfig:
    """The engine's optimizer: :class:`tinyodl.qas.Int8Optimizer` with ``kind="sgd"``."""

    lr: float = 0.01
    momentum: float = 0.0
    qas: bool = True
    store: str = "shadow"


def _direction_in_place(plan, key: str, grad: np.ndarray) -> None:
    """``grad <- -lr * (momentum buffer or grad)``: the update ``delta``, in place."""
    cfg = plan.optimizer
    if cfg.momentum:
        buf = plan.state[key]["momentum_buffer"]
        buf *= np.float32(cfg.momentum)
        buf += grad
        np.multiply(np.float32(-cfg.lr), buf, out=grad)
    else:
        np.multiply(np.float32(-cfg.lr), grad, out=grad)


def _apply_shadow(plan, key: str, delta: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """fp32 shadow: ``shadow += delta``, clamp, round half away -- into ``delta``'s buffer."""
    shadow = plan.state[key]["shadow"]
    shadow += delta
    np.clip(shadow, lo, hi, out=shadow)
    np.copysign(np.float32(0.5), shadow, out=delta)
    delta += shadow
    return np.trunc(delta, out=delta)


def _apply_int8(target: np.ndarray, rows, delta: np.ndarray, lo: int, hi: int) -> None:
    """Pure int8: ``target[row] = clip(target[row] + round_half_away(delta), lo, hi)``.

    One output channel at a time, so the float64 rounding (the same arithmetic as
    :class:`tinyodl.qas.Int8Optimizer`) needs scratch of one channel, not of the layer.
    """
    for j, c in enumerate(rows):
        new = round_half_away(delta[j])
        new += target[c]
        np.minimum(new, hi, out=new)
        np.maximum(new, lo, out=new)
        target[c] = new


def _update(plan, key: str, grad: np.ndarray, target: np.ndarray, rows, lo: int, hi: int):
    """One SGD(-M) step of ``target[rows]`` from ``grad``, computed in ``grad``'s own buffer.

    ``grad`` is already QAS-scaled and is owned by the plan (freed right after), so the
    update needs no layer-sized temporaries; the arithmetic is
    :class:`tinyodl.qas.Int8Optimizer`'s, operation for operation (the same bits).
    """
    _direction_in_place(plan, key, grad)
    if plan.optimizer.store == "int8":  # |delta| < 0.5 rounds to no change
        _apply_int8(target, rows, grad, lo, hi)
        return
    new = _apply_shadow(plan, key, grad, lo, hi)
    if len(rows) == len(target):
        target[...] = new  # integral values inside the type's range: the cast is exact
    else:
        target[rows] = new


def k_update_w(plan, step, env):
    conv, u = plan.nodes[step.node].op, plan.updates[step.node]
    grad = env[step.reads[0]]
    factor = plan.factors[step.node][0]
    grad *= factor if u.full else factor[u.channels]
    _update(plan, f"{step.node}.weight", grad, conv.weight, u.channels, -127, 127)
    return {}


def k_update_b(plan, step, env):
    conv = plan.nodes[step.node].op
    grad = env[step.reads[0]]
    grad *= plan.factors[step.node][1]
    rows = np.arange(conv.out_channels)
    if plan.optimizer.store == "int8":  # one vector: round all of it at once
        _direction_in_place(plan, f"{step.node}.bias", grad)
        conv.bias[...] = np.clip(conv.bias + round_half_away(grad), -(2**31), 2**31 - 1)
        return {}
    _update(plan, f"{step.node}.bias", grad, conv.bias, rows, -(2**31), 2**31 - 1)
    return {}


KERNELS: dict[str, Callable[[Any, Step, dict], dict]] = {
    "quantize": k_quantize,
    "forward": k_forward,
    "loss": k_loss,
    "bwd_mask": k_bwd_mask,
    "bwd_dx": k_bwd_dx,
    "bwd_dx_inplace": k_bwd_dx_inplace,
    "bwd_db": k_bwd_db,
    "bwd_dw": k_bwd_dw,
    "bwd_add": k_bwd_add,
    "bwd_gap": k_bwd_gap,
    "bwd_flatten": k_bwd_flatten,
    "accumulate": k_accumulate,
    "update_w": k_update_w,
    "update_b": k_update_b,
}


# ----------------------------------------------------------------------------- the plan


class TrainingPlan:
    """A compiled training step of an int8 model (see :func:`compile_training`).

    Attributes
    ----------
    graph : Graph
    updates : dict name -> LayerUpdate
        What each conv/linear layer updates.
    steps : list of Step
        The schedule, in execution order.
    memory_plan : MemoryPlan
        Lifetime table and planned peak.
    optimizer : SGDConfig
    state : dict key -> {"shadow", "momentum_buffer"}
        Resident fp32 state of the updated tensors (only the updated channels).
    last_loss : float
        Loss of the last :meth:`step`.
    """

    def __init__(self, graph, updates, steps, memory_plan, optimizer, reorder) -> None:
        self.graph, self.updates, self.steps = graph, updates, steps
        self.memory_plan, self.optimizer, self.reorder = memory_plan, optimizer, reorder
        self.nodes = {n.name: n for n in graph.nodes}
        self.factors = {}
        self.state: dict[str, dict[str, np.ndarray]] = {}
        self.last_loss = float("nan")
        self.scratch_limit: int | None = None
        for name, u in updates.items():
            conv = self.nodes[name].op
            w, b = qas_gradient_scales(conv) if optimizer.qas else (np.ones(1), np.ones(1))
            w = np.broadcast_to(w, (conv.out_channels,) + (1,) * (conv.weight.ndim - 1))
            b = np.broadcast_to(b, (conv.out_channels,))
            self.factors[name] = (w.astype(np.float32), b.astype(np.float32))
            if u.weight:
                self._init_state(f"{name}.weight", conv.weight[u.channels])
            if u.bias:
                self._init_state(f"{name}.bias", conv.bias)
        memory_plan.state_bytes = sum(a.nbytes for s in self.state.values() for a in s.values())
        memory_plan.trainable_bytes = sum(
            (len(u.channels) * self.nodes[n].op.weight[0].size if u.weight else 0)
            + (self.nodes[n].op.bias.nbytes if u.bias else 0)
            for n, u in updates.items()
        )

    def _init_state(self, key: str, current: np.ndarray) -> None:
        slots = self.state[key] = {}
        if self.optimizer.store == "shadow":
            slots["shadow"] = current.astype(np.float32)
        if self.optimizer.momentum:
            slots["momentum_buffer"] = np.zeros(current.shape, np.float32)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.graph.input_shape

    @property
    def lr(self) -> float:
        """The learning rate of the next step (set it each step for a schedule)."""
        return self.optimizer.lr

    @lr.setter
    def lr(self, value: float) -> None:
        if not value >= 0:
            raise ValueError(f"TrainingPlan.lr: must be >= 0, got {value}")
        self.optimizer.lr = float(value)

    @property
    def resident_train_bytes(self) -> int:
        """Resident training memory: updated int8/int32 tensors + fp32 shadow and momentum."""
        return self.memory_plan.trainable_bytes + self.memory_plan.state_bytes

    def _check(self, x: np.ndarray, y: np.ndarray) -> None:
        if tuple(x.shape) != self.input_shape:
            raise ValueError(
                f"TrainingPlan.step: the plan was compiled for inputs {self.input_shape}, "
                f"got {tuple(x.shape)}"
            )
        if len(y) != self.input_shape[0]:
            raise ValueError(f"TrainingPlan.step: need {self.input_shape[0]} labels, got {len(y)}")

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One training step: run the schedule on ``(x, y)``; updates the model in place.

        Returns the loss (before the update).
        """
        self._check(x, y)
        env: dict[str, Any] = {"x": x, "y": y}
        for s in self.steps:
            env.update(KERNELS[s.kind](self, s, env))
            for name in s.frees:
                del env[name]
        return self.last_loss

    def profile(self, x: np.ndarray, y: np.ndarray) -> list[int]:
        """Run one step and measure each step's peak above its live buffers (tracemalloc).

        Returns the per-step workspace bytes: the step's peak above the start of the whole
        training step, minus the planned buffers alive during it (kernel scratch,
        temporaries, and the interpreter's small objects that the step's earlier
        operations left alive -- a few KiB of ints, tuples and cached checks that a
        per-operation baseline would miss). The model and the optimizer state are
        restored afterwards.
        """
        self._check(x, y)
        backup = self._snapshot()
        started = not tracemalloc.is_tracing()
        if started:
            tracemalloc.start()
        try:
            gc.collect()
            env: dict[str, Any] = {"x": x, "y": y}
            ws = []
            base = tracemalloc.get_traced_memory()[0]
            for i, s in enumerate(self.steps):
                tracemalloc.reset_peak()
                out = KERNELS[s.kind](self, s, env)
                peak = tracemalloc.get_traced_memory()[1]
                ws.append(max(0, peak - base - self.memory_plan.live_bytes[i]))
                env.update(out)
                del out
                for name in s.frees:
                    del env[name]
        finally:
            if started:
                tracemalloc.stop()
            self._restore(backup)
        return ws

    def memory_plan_buffer(self, name: str) -> int:
        """Planned bytes of buffer ``name`` (data + array header)."""
        return self._sizes[name] + ARRAY_HEADER_BYTES

    def _snapshot(self):
        convs = {
            n: (self.nodes[n].op.weight.copy(), self.nodes[n].op.bias.copy()) for n in self.updates
        }
        state = {k: {s: a.copy() for s, a in v.items()} for k, v in self.state.items()}
        return convs, state, self.last_loss

    def _restore(self, backup) -> None:
        convs, state, loss = backup
        for n, (w, b) in convs.items():
            self.nodes[n].op.weight[...] = w
            self.nodes[n].op.bias[...] = b
        for k, v in state.items():
            for s, a in v.items():
                self.state[k][s][...] = a
        self.last_loss = loss

    def measure(self, x: np.ndarray, y: np.ndarray):
        """Run one real step under tracemalloc: ``tinyodl.memory.MeasuredMemory``."""
        from tinyodl.memory import measure_peak

        return measure_peak(self.step, x, y)

    def summary(self) -> dict[str, Any]:
        """Plain numbers (JSON): steps, buffers, planned peaks, state, what trains."""
        mp = self.memory_plan
        return {
            "input_shape": list(self.input_shape),
            "reorder": self.reorder,
            "steps": len(self.steps),
            "buffers": len(mp.buffers),
            "planned_peak_bytes": mp.peak_bytes,
            "planned_buffer_peak_bytes": mp.buffer_peak_bytes,
            "peak_step": mp.steps[mp.peak_step].label(),
            "state_bytes": mp.state_bytes,
            "trainable_bytes": mp.trainable_bytes,
            "planned_training_bytes": mp.training_bytes,
            "updated": {
                n: {"channels": 0 if u.channels is None else len(u.channels), "bias": u.bias}
                for n, u in self.updates.items()
                if u.weight or u.bias
            },
        }


def compile_training(
    qmodel,
    input_shape: tuple[int, ...],
    *,
    batch_size: int | None = None,
    scheme: Any = None,
    lr: float = 0.01,
    momentum: float = 0.0,
    qas: bool = True,
    store: str = "shadow",
    reorder: bool = True,
    profile: bool = True,
    scratch_limit: int | None = 16 * 1024,
    seed: int = 0,
) -> TrainingPlan:
    """Compile one training step of an int8 model: trace, derive backward, prune, reorder, plan.

    Parameters
    ----------
    qmodel : tinyodl.quantization.QuantizedModel
        Updated in place by :meth:`TrainingPlan.step` (its int8 weights and int32 biases).
    input_shape : (N, C, H, W), or (C, H, W) with ``batch_size``
        The batch shape the plan is compiled for.
    batch_size : int, optional
        N, when ``input_shape`` is one example's shape (default 1).
    scheme : UpdateScheme, optional
        ``bias_depth`` and ``weights`` (layer -> channel ratio; a ``channels`` dict of
        explicit indices is honoured too). Default: the layers' ``weight_trainable`` /
        ``bias_trainable`` flags, all channels.
    lr, momentum, qas, store
        SGD as :class:`tinyodl.qas.Int8Optimizer` (``kind="sgd"``) does it.
    reorder : bool, default True
        Apply each update as soon as its gradient exists and free it (TTE's operator
        reordering); False: all updates after the backward.
    scratch_limit : int or None, default 16 KiB
        Bound the kernels' scratch where it grows with a layer: the forward computes a few
        output channels at a time (the numpy reference's int32 accumulators, the compiled
        kernel's reordered weight rows) and ``dL/dx`` a few input channels at a time (the
        float32 copy of the weight, where the kernel makes one), each under this many bytes
        (None: whole layers at once). The compiled 1x1 and linear backward passes read the
        int8 weights in place and run whole. The results are the same either way (tested
        bit-equal on both backends).
    profile : bool, default True
        Measure each step's kernel workspace (on a random batch drawn from ``seed``; the
        smaller of two profiles; weights restored) and include it in the planned peak.
        False: buffers only.

    Returns
    -------
    TrainingPlan
        ``plan.step(x, y)``, ``plan.memory_plan``.
    """
    if store not in ("shadow", "int8"):
        raise ValueError(f"compile_training: store must be 'shadow' or 'int8', got {store!r}")
    if lr < 0 or momentum < 0:
        raise ValueError(f"compile_training: need lr >= 0 and momentum >= 0, got {lr}, {momentum}")
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) == 3:
        input_shape = (1 if batch_size is None else int(batch_size), *input_shape)
    elif batch_size is not None and input_shape and input_shape[0] != batch_size:
        raise ValueError(
            f"compile_training: input_shape {input_shape} has batch {input_shape[0]}, "
            f"but batch_size={batch_size}"
        )
    graph: Graph = trace(qmodel, input_shape)
    updates: dict[str, LayerUpdate] = resolve_scheme(graph, scheme)
    req = requires_grad(graph, updates)
    steps, buffers = build_schedule(graph, updates, req, reorder=reorder)
    memory_plan: MemoryPlan = plan_memory(steps, buffers)
    plan = TrainingPlan(
        graph, updates, steps, memory_plan, SGDConfig(lr, momentum, qas, store), reorder
    )
    plan._sizes = {b.name: b.nbytes for b in memory_plan.buffers}
    plan.scratch_limit = scratch_limit
    if profile:
        rng = np.random.default_rng(seed)
        x = rng.random(graph.input_shape, dtype=np.float32)
        y = rng.integers(0, qmodel.ops[-1].out_channels, graph.input_shape[0])
        # the smaller of two profiles: the first step of a fresh plan also pays one-time
        # allocations (first-call caches) that no later step repeats
        first, second = plan.profile(x, y), plan.profile(x, y)
        for s, a, b in zip(steps, first, second, strict=True):
            s.workspace = min(a, b)
        refreshed = plan_memory(steps, buffers)
        memory_plan.live_bytes, memory_plan.peak_bytes = refreshed.live_bytes, refreshed.peak_bytes
        memory_plan.peak_step = refreshed.peak_step
    return plan


def fit(
    plan: TrainingPlan,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int = 1,
    seed: int = 0,
    schedule: Callable[[int], float] | None = None,
    progress: bool = False,
) -> list[float]:
    """Train with a compiled plan: seeded batches of the plan's batch size, ``epochs`` times.

    Batches come from :class:`tinyodl.data.BatchSampler` (``drop_last=True``: the plan is
    compiled for one batch shape); ``schedule(step) -> lr`` sets the rate of every step.
    Returns the losses; raises ``FloatingPointError`` naming the step if one is not finite.
    """
    from tqdm.auto import tqdm

    from tinyodl.data.batching import BatchSampler

    sampler = BatchSampler(len(x), plan.input_shape[0], seed, drop_last=True)
    losses: list[float] = []
    with tqdm(total=epochs * len(sampler), disable=not progress, leave=False, unit="step") as bar:
        while sampler.epoch < epochs:
            for idx in sampler:
                if schedule is not None:
                    plan.lr = schedule(len(losses))
                loss = plan.step(x[idx], y[idx])
                if not np.isfinite(loss):
                    raise FloatingPointError(
                        f"engine.fit: the loss is not finite at step {len(losses)}"
                    )
                losses.append(loss)
                bar.update(1)
    return losses
