"""Trading compute for memory: segment checkpointing (chapter 06).

Backpropagation keeps what every layer saved in its forward pass until the backward pass
reaches it, so training memory grows with depth. Chen et al. (2016) cut the chain of ``n``
layers into ``k`` segments, keep only each segment's input during the forward pass, and
recompute the inside of a segment when the backward pass gets there: about ``n/k + k``
activations alive instead of ``n`` -- ``2 sqrt(n)`` at ``k = sqrt(n)`` -- for one extra
forward pass. Gruslys et al. (2016) choose the checkpoints by dynamic programming to
recompute as little as possible under a memory budget.

================================  ==========================================================
piece                             what it does
================================  ==========================================================
:class:`CheckpointedSequential`   the executor: a ``Sequential`` that keeps boundaries and
                                  recomputes, gradients bit-identical to plain backprop
                                  (dropout generators and batchnorm statistics handled)
:class:`ChainProfile`             the planner's view of a chain: bytes and cost per layer
:func:`profile_chain`             reads a ``ChainProfile`` off a real model and batch
:func:`simulate_plan`             the memory model: a plan's peak, allocation by allocation
:func:`plan_checkpoints`          the exact DP planner (least recomputation within a budget)
:func:`plan_greedy`               Chen's budgeted greedy, for comparison
:func:`measure_backprop`          tracemalloc peak of forward + backward, to check the model
:func:`deep_cnn`, ...             deep chains to measure on
================================  ==========================================================

The notebook ``chapters/06_checkpointing.py`` measures peak memory against extra compute;
``tinyodl bench checkpointing`` produces the headline figures. The planner's interface (for
the training engine of chapter 12) is in ``docs/architecture.md``.
"""

from tinyodl.checkpointing.chains import deep_cnn, equal_linear_chain
from tinyodl.checkpointing.planner import (
    ChainProfile,
    CheckpointPlan,
    brute_force_plan,
    evaluate_plan,
    min_peak_bytes,
    plan_checkpoints,
    plan_greedy,
    segment_peak,
    segment_starts,
    simulate_plan,
    sqrt_segments,
)
from tinyodl.checkpointing.profile import (
    BackpropMemory,
    forward_macs,
    measure_backprop,
    preserved_state,
    profile_chain,
)
from tinyodl.checkpointing.sequential import (
    CheckpointedSequential,
    checkpoint_sequential,
    release_saved,
)

__all__ = [
    "BackpropMemory",
    "ChainProfile",
    "CheckpointPlan",
    "CheckpointedSequential",
    "brute_force_plan",
    "checkpoint_sequential",
    "deep_cnn",
    "equal_linear_chain",
    "evaluate_plan",
    "forward_macs",
    "measure_backprop",
    "min_peak_bytes",
    "plan_checkpoints",
    "plan_greedy",
    "preserved_state",
    "profile_chain",
    "release_saved",
    "segment_peak",
    "segment_starts",
    "simulate_plan",
    "sqrt_segments",
]
