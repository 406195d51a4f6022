"""Trading compute for memory: segment checkpointing (chapter 06)."""

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
