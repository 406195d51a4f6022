"""A TTE-style training engine: compile one training step of an int8 model (chapter 12).

Lin et al., "On-Device Training Under 256KB Memory" (NeurIPS 2022), section 2.3, move the
work of an autodiff runtime to *compile time*. The Tiny Training Engine (TTE) traces the
forward graph, derives the backward graph from it, prunes every node that serves only
frozen tensors (sparse update makes most of them frozen), reorders the operators so each
update is applied -- in place -- as soon as its gradient exists and the gradient buffer is
freed, and plans the memory of the resulting schedule. On the STM32F746 with batch 1 the
paper reports (peak memory, full update / sparse update / sparse + reordered):
MobileNetV2 2939 / 335 / 141 KB, ProxylessNAS 2745 / 326 / 135 KB, MCUNet 3650 / 560 /
173 KB; reordering alone saves 2.4-3.2x (GUIDE section 4).

tinyodl's engine does the same to a :class:`~tinyodl.quantization.QuantizedModel`:

==============================  ==========================================================
stage                           where
==============================  ==========================================================
trace the forward graph         :func:`~tinyodl.engine.graph.trace` (the ``describe()`` walk)
what trains                     :func:`~tinyodl.engine.graph.resolve_scheme` (sparse update
                                scheme: bias depth, layers, channels)
prune                           :func:`~tinyodl.engine.graph.requires_grad` +
                                :func:`~tinyodl.engine.schedule.build_schedule`
derive backward, reorder        :func:`~tinyodl.engine.schedule.build_schedule`
plan memory (lifetime table)    :func:`~tinyodl.engine.schedule.plan_memory`
execute, in-place updates       :class:`~tinyodl.engine.plan.TrainingPlan` ``.step(x, y)``
==============================  ==========================================================

``compile_training(qmodel, (N, C, H, W), scheme=...)`` runs them all. Executing the plan gives
the same integers as :func:`tinyodl.qas.int8_train_step` with ``Int8Optimizer(kind="sgd")``
(bit-equal for full-channel updates; the tests say so), and its measured peak
(``plan.measure``, tracemalloc) matches ``plan.memory_plan.peak_bytes`` within 10%.
Chapter 12's notebook shows the lifetime table and the full / sparse / sparse + reordered
breakdown; ``tinyodl bench engine`` records it.
"""

from tinyodl.engine.graph import (
    Graph,
    LayerUpdate,
    Node,
    requires_grad,
    resolve_scheme,
    top_l2_channels,
    trace,
)
from tinyodl.engine.plan import KERNELS, SGDConfig, TrainingPlan, compile_training, fit
from tinyodl.engine.schedule import Buffer, MemoryPlan, Step, build_schedule, plan_memory

__all__ = [
    "KERNELS",
    "Buffer",
    "Graph",
    "LayerUpdate",
    "MemoryPlan",
    "Node",
    "SGDConfig",
    "Step",
    "TrainingPlan",
    "build_schedule",
    "compile_training",
    "fit",
    "plan_memory",
    "requires_grad",
    "resolve_scheme",
    "top_l2_channels",
    "trace",
]
