"""The compiled schedule and its memory plan: derive backward, reorder, plan lifetimes (chapter 12).

:func:`build_schedule` turns a traced :class:`~tinyodl.engine.graph.Graph` into a flat list
of :class:`Step` s -- quantize the input, the forward nodes, the loss, the *derived*
backward nodes, the updates -- each naming the buffers it reads, allocates and changes in
place. Nothing here runs a kernel: it is compile time.

* **Derive backward.** Each forward node contributes its backward steps (TTE's "backward
  graph at compile time"): a conv gives ``mask`` (straight-through clamp, in place, then
  ``dL/dacc = M * g``), ``dx``, ``db``, ``dW``; an add gives the two scaled gradients; a
  global average pool its broadcast.
* **Prune.** A step is emitted only if its result is needed: ``dx`` only if the input
  ``requires_grad``, ``dW`` only for a layer with trainable channels (and then only those
  channels), ``db`` only for a trainable bias; a forward node keeps its clamp mask only if
  a gradient will pass through it, and its input only if its weight trains.
* **Reorder.** With ``reorder=True`` each layer's update is emitted right after its
  gradient (``db`` -> ``update_b``, ``dW`` -> ``update_w``), so the gradient buffer dies at
  once; with ``reorder=False`` all updates run after the backward (as
  ``optimizer.step()`` after ``loss.backward()``), and every gradient lives until then.
* **Plan.** :func:`plan_memory` frees every buffer right after its last use (a liveness
  analysis) and walks the schedule adding up live bytes: the lifetime table and the
  planned peak. Each step may also need short-lived scratch inside its kernel
  (``workspace``), which :func:`tinyodl.engine.compile_training` profiles for every step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinyodl.engine.graph import Graph, LayerUpdate

__all__ = ["ARRAY_HEADER_BYTES", "Buffer", "MemoryPlan", "Step", "build_schedule", "plan_memory"]

#: What one live ndarray costs besides its data, as tracemalloc counts it in CPython 3.11 /
#: numpy 2 (the object, its shape and strides, a dict slot): 160-230 bytes measured. On a
#: microcontroller this is a few bytes of tensor descriptor; here it is ~20 KB at the peak
#: of mcunet_tiny's full update, so the plan counts it.
ARRAY_HEADER_BYTES = 192


@dataclass
class Buffer:
    """One planned array: its size, what it is, and the steps that create and free it."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    kind: str
    nbytes: int
    alloc: int = -1
    free: int = -1


@dataclass
class Step:
    """One operation of the compiled schedule.

    ``kind`` selects the executor function (``tinyodl.engine.plan.KERNELS``); ``node`` is
    the forward node's name; ``reads``/``allocs``/``inplace`` are buffer names; ``frees``
    (filled by :func:`plan_memory`) are released right after the step runs; ``reuse`` maps
    an allocated buffer to the one whose memory it takes over (read for the last time by
    this step and overwritten in place: the depthwise ``dx`` over its ``dout``).
    """

    kind: str
    node: str
    reads: list[str] = field(default_factory=list)
    allocs: list[str] = field(default_factory=list)
    inplace: list[str] = field(default_factory=list)
    frees: list[str] = field(default_factory=list)
    workspace: int = 0
    reuse: dict[str, str] = field(default_factory=dict)

    def label(self) -> str:
        return f"{self.kind}({self.node})"


def _numel(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


class _Builder:
    def __init__(self, graph: Graph, updates: dict[str, LayerUpdate], req: dict[str, bool]):
        self.graph, self.updates, self.req = graph, updates, req
        self.steps: list[Step] = []
        self.buffers: dict[str, Buffer] = {}

    def buf(self, name, shape, dtype, kind, nbytes=None) -> str:
        shape = tuple(int(s) for s in shape)
        if nbytes is None:
            nbytes = _numel(shape) * np.dtype(dtype).itemsize
        self.buffers[name] = Buffer(name, shape, dtype, kind, int(nbytes))
        return name

    def step(self, kind, node, reads=(), allocs=(), inplace=(), reuse=None) -> None:
        self.steps.append(Step(kind, node, list(reads), list(allocs), list(inplace)))
        self.steps[-1].reuse = dict(reuse or {})

    # -- forward
    def forward(self) -> None:
        g = self.graph
        self.step(
            "quantize", "input", allocs=[self.buf("a:input", g.input_shape, "int8", "activation")]
        )
        for node in g.nodes:
            allocs = [self.buf(f"a:{node.output}", node.out_shape, "int8", "activation")]
            if self.req[node.output] and node.kind in ("conv", "add"):
                n = _numel(node.out_shape)
                allocs.append(self.buf(f"m:{node.output}", (n,), "uint8", "mask", -(-n // 8)))
            u = self.updates.get(node.name)
            if node.kind == "conv" and u is not None and u.weight and not u.full:
                if node.op.kind == "depthwise":  # only the updated channels' inputs
                    shape = (node.in_shapes[0][0], len(u.channels), *node.in_shapes[0][2:])
                    allocs.append(self.buf(f"s:{node.name}", shape, "int8", "saved"))
            self.step("forward", node.name, [f"a:{t}" for t in node.inputs], allocs)

    def loss(self) -> None:
        last = self.graph.nodes[-1]
        out = self.buf(f"g:{last.output}", last.out_shape, "float32", "grad")
        self.step("loss", last.name, [f"a:{last.output}"], [out])

    # -- backward
    def backward(self, reorder: bool) -> list[tuple[str, str]]:
        pending: list[tuple[str, str]] = []  # (kind, layer) updates not yet emitted
        for node in reversed(self.graph.nodes):
            if not self.req[node.output]:
                continue  # pruned: no trainable tensor at or below this node
            if node.kind == "conv":
                pending += self._conv_backward(node, reorder)
            elif node.kind == "add":
                self._add_backward(node)
            else:  # gap, flatten: reshape the gradient back
                src = node.inputs[0]
                if self.req[src]:
                    out = self._grad_buffer(src, node.in_shapes[0])
                    self.step(f"bwd_{node.kind}", node.name, [f"g:{node.output}"], [out])
            self._accumulate(node)
        return pending

    def _grad_buffer(self, tensor, shape, prefix="g") -> str:
        return self.buf(f"{prefix}:{tensor}", shape, "float32", "grad")

    def _accumulate(self, node) -> None:
        """After a residual body's first node: add the add's skip gradient to its ``dx``.

        Backward meets the add first (it creates ``gs:t``), then the body down to its first
        node, whose ``dx`` is ``g:t``; the sum is done in place, as ``ga + gb``.
        """
        for t in node.inputs:
            skip, grad = f"gs:{t}", f"g:{t}"
            if skip in self.buffers and grad in self.buffers:
                if not any(s.kind == "accumulate" and s.node == t for s in self.steps):
                    self.step("accumulate", t, [skip], inplace=[grad])

    def _conv_backward(self, node, reorder: bool) -> list[tuple[str, str]]:
        u, src, g = self.updates[node.name], node.inputs[0], f"g:{node.output}"
        pending = []
        self.step("bwd_mask", node.name, [f"m:{node.output}"], inplace=[g])
        # a stride-1 "same" depthwise layer writes dx over dout (channel c needs only
        # channel c): after db and dW have read dout, before the weight update
        in_place = (
            self.req[src]
            and node.op.kind == "depthwise"
            and tuple(node.in_shapes[0]) == tuple(node.out_shape)
        )
        if self.req[src] and not in_place:
            self.step("bwd_dx", node.name, [g], [self._grad_buffer(src, node.in_shapes[0])])
        if u.bias:
            db = self.buf(f"db:{node.name}", (node.op.out_channels,), "float32", "bias_grad")
            self.step("bwd_db", node.name, [g], [db])
            pending.append(("update_b", node.name))
            if reorder:
                self.step("update_b", node.name, [db])
        if u.weight:
            shape = (len(u.channels), *node.op.weight.shape[1:])
            dw = self.buf(f"dW:{node.name}", shape, "float32", "weight_grad")
            saved = f"s:{node.name}" if f"s:{node.name}" in self.buffers else f"a:{src}"
            self.step("bwd_dw", node.name, [g, saved], [dw])
            pending.append(("update_w", node.name))
        if in_place:
            dx = self._grad_buffer(src, node.in_shapes[0])
            self.step("bwd_dx_inplace", node.name, [g], [dx], reuse={dx: g})
        if u.weight and reorder:
            self.step("update_w", node.name, [f"dW:{node.name}"])
        return pending

    def _add_backward(self, node) -> None:
        body, skip = node.inputs
        allocs = [self._grad_buffer(body, node.in_shapes[0])]
        if self.req[skip]:
            allocs.append(self._grad_buffer(skip, node.in_shapes[1], prefix="gs"))
        reads = [f"g:{node.output}", f"m:{node.output}"]
        self.step("bwd_add", node.name, reads, allocs)

    def updates_at_end(self, pending) -> None:
        """Non-reordered: every update after the backward, in forward order (weight, bias)."""
        order = {n.name: i for i, n in enumerate(self.graph.nodes)}
        rank = {"update_w": 0, "update_b": 1}
        for kind, name in sorted(pending, key=lambda p: (order[p[1]], rank[p[0]])):
            grad = f"dW:{name}" if kind == "update_w" else f"db:{name}"
            self.step(kind, name, [grad])


def build_schedule(
    graph: Graph, updates: dict[str, LayerUpdate], req: dict[str, bool], reorder: bool = True
) -> tuple[list[Step], dict[str, Buffer]]:
    """Forward, loss, derived and pruned backward, updates (reordered or at the end)."""
    b = _Builder(graph, updates, req)
    b.forward()
    b.loss()
    pending = b.backward(reorder)
    if not reorder:
        b.updates_at_end(pending)
    return b.steps, b.buffers


# ----------------------------------------------------------------------------- memory plan


@dataclass
class MemoryPlan:
    """The lifetime table of every buffer of one training step and its planned peak.

    Attributes
    ----------
    buffers : list of Buffer
        Every transient array of the step with ``alloc`` / ``free`` step indices.
    steps : list of Step
    live_bytes : list of int
        Bytes of planned buffers alive during each step (outputs included; each buffer
        counts its data plus :data:`ARRAY_HEADER_BYTES`).
    peak_bytes : int
        ``max_s (live_bytes[s] + steps[s].workspace)``: the planned step peak above the
        resident memory (frozen and trainable weights, optimizer state, the input batch).
    peak_step : int
        Index of the step where it happens.
    state_bytes : int
        Resident training state: fp32 shadows and momentum buffers of the updated tensors.
    trainable_bytes : int
        Bytes of the updated int8 weight channels and int32 biases.
    """

    buffers: list[Buffer]
    steps: list[Step]
    live_bytes: list[int]
    peak_bytes: int
    peak_step: int
    state_bytes: int = 0
    trainable_bytes: int = 0

    @property
    def buffer_peak_bytes(self) -> int:
        """The peak of the planned buffers alone (no kernel workspace): a lower bound."""
        return max(self.live_bytes, default=0)

    @property
    def training_bytes(self) -> int:
        """Planned peak training memory: trainable tensors + state + the step's peak."""
        return self.trainable_bytes + self.state_bytes + self.peak_bytes

    def by_kind(self, at_peak: bool = True) -> dict[str, int]:
        """Bytes per buffer kind, alive at the peak step (or summed over all buffers)."""
        out: dict[str, int] = {}
        s = self.peak_step
        for b in self.buffers:
            if not at_peak or b.alloc <= s <= b.free:
                out[b.kind] = out.get(b.kind, 0) + b.nbytes
        return out

    def table(self) -> list[dict[str, Any]]:
        """The lifetime table as plain rows (name, kind, shape, dtype, bytes, alloc, free)."""
        return [
            {
                "name": b.name,
                "kind": b.kind,
                "shape": list(b.shape),
                "dtype": b.dtype,
                "bytes": b.nbytes,
                "alloc": b.alloc,
                "free": b.free,
                "alloc_step": self.steps[b.alloc].label(),
                "free_step": self.steps[b.free].label(),
            }
            for b in self.buffers
        ]


def plan_memory(steps: list[Step], buffers: dict[str, Buffer]) -> MemoryPlan:
    """Free each buffer after its last use; return the lifetime table and the planned peak."""
    for b in buffers.values():
        b.alloc = b.free = -1
    last: dict[str, int] = {}
    for i, s in enumerate(steps):
        for name in s.allocs:
            if buffers[name].alloc >= 0:
                raise ValueError(f"engine: buffer {name!r} is allocated twice")
            buffers[name].alloc = i
        for name in (*s.reads, *s.allocs, *s.inplace):
            if name not in buffers or buffers[name].alloc < 0:
                raise ValueError(f"engine: step {s.label()} uses {name!r} before it exists")
            last[name] = i
    for s in steps:
        s.frees = []
    for name, i in last.items():
        buffers[name].free = i
        steps[i].frees.append(name)
    for i, s in enumerate(steps):
        for new, old in s.reuse.items():
            if buffers[old].free != i or buffers[new].nbytes != buffers[old].nbytes:
                raise ValueError(f"engine: step {s.label()} cannot reuse {old!r} for {new!r}")
    live, lives = 0, []
    peak, peak_step = 0, 0
    for i, s in enumerate(steps):
        reused = set(s.reuse.values())
        live += sum(buffers[n].nbytes + ARRAY_HEADER_BYTES for n in s.allocs if n not in s.reuse)
        lives.append(live)
        if live + s.workspace > peak:
            peak, peak_step = live + s.workspace, i
        live -= sum(buffers[n].nbytes + ARRAY_HEADER_BYTES for n in s.frees if n not in reused)
    ordered = sorted(buffers.values(), key=lambda b: (b.alloc, b.name))
    return MemoryPlan(ordered, steps, lives, peak, peak_step)
