"""The checkpoint planner of chapter 06: memory model, dynamic programme, Chen's greedy.

Two independent computations of a plan's peak are held equal: the allocation replay
(``simulate_plan``) and the per-segment formula the planners use (``segment_peak`` summed
with the boundaries kept before each segment). The dynamic programme is checked against
brute force over every segmentation of small random chains.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyodl.checkpointing import (
    ChainProfile,
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


@st.composite
def chains(draw, max_layers=8):
    n = draw(st.integers(1, max_layers))
    sizes = draw(st.lists(st.integers(0, 9), min_size=n + 1, max_size=n + 1))
    small = st.lists(st.integers(0, 5), min_size=n, max_size=n)
    return ChainProfile(
        input_bytes=sizes[:-1],
        output_bytes=sizes[1:],
        saved_bytes=draw(small),
        saves_input=draw(st.lists(st.booleans(), min_size=n, max_size=n)),
        forward_cost=draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)),
        workspace_bytes=draw(small),
        forward_workspace_bytes=draw(small),
        input_resident=draw(st.booleans()),
        dout_resident=draw(st.booleans()),
    )


def all_boundaries(n):
    for mask in range(2 ** (n - 1)):
        yield [i + 1 for i in range(n - 1) if mask >> i & 1]


def formula_peak(profile, boundaries):
    starts = [0, *boundaries]
    ends = [*boundaries, profile.n]
    kept, peak = 0, 0
    for lo, hi in zip(starts, ends, strict=True):
        peak = max(peak, kept + segment_peak(profile, lo, hi, hi == profile.n))
        kept += profile.boundary_bytes(lo)
    return peak


# ----------------------------------------------------------------------------- the model


def test_sqrt_segments_cuts_near_equal_segments():
    assert sqrt_segments(16) == (4, 8, 12)
    assert sqrt_segments(10, 3) == (4, 7)
    assert sqrt_segments(5, 1) == ()
    assert sqrt_segments(5, 5) == (1, 2, 3, 4)
    assert sqrt_segments(1) == ()
    with pytest.raises(ValueError, match="segments must be in"):
        sqrt_segments(4, 5)


def test_segment_starts_are_validated():
    assert segment_starts(5, [2, 4]) == (0, 2, 4)
    for bad in ([0], [3, 2], [5], [2, 2]):
        with pytest.raises(ValueError, match=r"strictly increasing layer indices in \(0, 5\)"):
            segment_starts(5, bad)


def test_profile_checks_its_numbers():
    with pytest.raises(ValueError, match="output_bytes has 1 entries"):
        ChainProfile([1, 1], [1], [0, 0], [True, True], [1, 1])
    with pytest.raises(ValueError, match="must equal input_bytes"):
        ChainProfile([1, 2], [3, 4], [0, 0], [True, True], [1, 1])
    with pytest.raises(ValueError, match="saved_bytes must be >= 0"):
        ChainProfile([1], [1], [-1], [True], [1])
    with pytest.raises(ValueError, match="forward_cost must be finite"):
        ChainProfile([1], [1], [0], [True], [float("nan")])


def test_textbook_chain_keeps_n_over_k_plus_k():
    """16 equal layers that keep their input: plain backprop holds 15 inputs (the first is
    the batch) plus the gradient in flight; 4 segments hold 3 boundaries, 3 inputs of the
    segment being recomputed and the gradient: Chen's n/k + k = 8, less the batch."""
    chain = ChainProfile.uniform(16)
    assert simulate_plan(chain, ()) == 16
    assert simulate_plan(chain, (4, 8, 12)) == 7
    assert simulate_plan(chain, (8,)) == 9
    peaks = {k: simulate_plan(chain, sqrt_segments(16, k)) for k in range(1, 17)}
    assert peaks[4] == min(peaks.values()) < peaks[2] < peaks[1]  # k = sqrt(16) is optimal
    assert evaluate_plan(chain, (4, 8, 12)).recompute_fraction == 0.75


@settings(max_examples=150, deadline=None)
@given(chains())
def test_segment_formula_equals_the_allocation_replay(profile):
    for boundaries in all_boundaries(profile.n):
        assert formula_peak(profile, boundaries) == simulate_plan(profile, boundaries)


def test_resident_input_and_gradient_are_free():
    base = dict(
        input_bytes=[5, 3], output_bytes=[3, 7], saved_bytes=[0, 0], saves_input=[True, True]
    )
    resident = ChainProfile(**base, forward_cost=[1, 1])
    not_resident = ChainProfile(
        **base, forward_cost=[1, 1], input_resident=False, dout_resident=False
    )
    assert simulate_plan(not_resident) > simulate_plan(resident)


# ----------------------------------------------------------------------------- planners


@settings(max_examples=150, deadline=None)
@given(chains(), st.integers(0, 60))
def test_dynamic_programme_matches_brute_force(profile, budget):
    best = brute_force_plan(profile, budget)
    if best is None:
        with pytest.raises(ValueError, match="lowest peak any plan reaches"):
            plan_checkpoints(profile, budget)
        return
    plan = plan_checkpoints(profile, budget)
    assert plan.peak_bytes <= budget
    assert plan.peak_bytes == simulate_plan(profile, plan.boundaries)
    assert (plan.recompute_cost, plan.peak_bytes) == (best.recompute_cost, best.peak_bytes)


@settings(max_examples=60, deadline=None)
@given(chains())
def test_min_peak_is_the_lowest_peak_of_any_plan(profile):
    lowest = min(simulate_plan(profile, b) for b in all_boundaries(profile.n))
    assert min_peak_bytes(profile) == lowest
    assert plan_checkpoints(profile).peak_bytes == lowest


@settings(max_examples=100, deadline=None)
@given(chains(), st.integers(0, 60))
def test_greedy_fits_the_budget_but_never_beats_the_programme(profile, budget):
    try:
        greedy = plan_greedy(profile, budget)
    except ValueError:
        return
    assert greedy.peak_bytes <= budget
    assert plan_checkpoints(profile, budget).recompute_cost <= greedy.recompute_cost


def test_greedy_recomputes_more_than_needed_on_the_textbook_chain():
    chain = ChainProfile.uniform(16)
    greedy, best = plan_greedy(chain, 8), plan_checkpoints(chain, 8)
    assert best.peak_bytes <= 8 and greedy.peak_bytes <= 8
    assert best.recompute_cost < greedy.recompute_cost


def test_planner_trades_memory_for_compute_monotonically():
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 50, 21).tolist()
    chain = ChainProfile(
        sizes[:-1], sizes[1:], rng.integers(0, 20, 20).tolist(), [True] * 20, sizes[:-1]
    )
    budgets = np.linspace(min_peak_bytes(chain), simulate_plan(chain), 12).astype(int)
    plans = [plan_checkpoints(chain, int(b)) for b in budgets]
    costs = [p.recompute_cost for p in plans]
    assert costs == sorted(costs, reverse=True)  # more memory never costs more compute
    assert costs[-1] == 0 and costs[0] > 0
    assert all(p.peak_bytes <= b for p, b in zip(plans, budgets, strict=True))


def test_infeasible_budget_names_the_smallest_usable_one():
    chain = ChainProfile.uniform(16)
    with pytest.raises(ValueError, match="lowest peak any plan reaches is 6 bytes"):
        plan_checkpoints(chain, 5)


def test_empty_and_single_layer_chains():
    empty = ChainProfile([], [], [], [], [])
    assert plan_checkpoints(empty).boundaries == ()
    one = ChainProfile.uniform(1, activation_bytes=4)
    assert plan_checkpoints(one, 100).boundaries == ()
    assert "1 segments" in str(plan_checkpoints(one, 100))


def test_docstring_examples():
    import doctest

    from tinyodl.checkpointing import planner, sequential

    for module in (planner, sequential):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
