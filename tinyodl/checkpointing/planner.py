"""Where to put the checkpoints: a memory model of segment checkpointing, and its planners.

This module knows nothing about layers or arrays: it works on a :class:`ChainProfile`, a few
numbers per layer of a chain (bytes and forward cost), so that any executor -- the
:class:`~tinyodl.checkpointing.CheckpointedSequential` of this chapter, or a compile-time
training engine (chapter 12) -- can ask it for a plan. ``docs/architecture.md``
("Checkpoint planner") states the interface.

The memory model
----------------
A plan is the list of *segment starts* ``0 = s_0 < s_1 < ... < s_{k-1} < n``. During the
forward pass a segment other than the last keeps only its input (its *boundary*) and drops
what its layers saved; during the backward pass it recomputes its layers from the boundary,
then back-propagates through them. The last segment keeps its activations (Chen et al.
2016): recomputing it right after the forward pass would gain nothing. So while segment
``j`` is worked on, memory holds

    the boundaries of the segments before it   K_j = sum of boundary(s_i), i < j
  + what segment j itself holds                P_j (its boundary, the activations its layers
                                               save, the gradient flowing through it)

and the peak is ``max_j (K_j + P_j)`` -- Chen's ``O(n/k + k)`` for ``k`` equal segments of
``n`` equal layers, minimal at ``k = sqrt(n)``. :func:`simulate_plan` replays the executor's
allocations and frees one by one (reference counts, as CPython frees arrays) and gives the
peak in bytes; it is the model the notebook compares with tracemalloc.

The extra compute
-----------------
Every layer before the last segment runs forward twice. The recomputation of a plan is
therefore ``sum(forward_cost[:s_{k-1}])``: it depends only on *where the last segment
starts*. Minimising recomputation under a memory budget means starting the last segment as
early as the budget allows.

Why dynamic programming, and not Chen's greedy
----------------------------------------------
Chen et al. (2016, Sec. 4.3) place checkpoints greedily: walk the layers, close a segment
when its memory would pass a threshold, and try several thresholds. The greedy fills the
*first* segments as full as it can, which pushes the last segment late and costs
recomputation (:func:`plan_greedy`; the notebook shows plans where it recomputes more than
needed or finds no plan at all although one exists). Gruslys et al. (2016) instead solve the
budgeted problem exactly by dynamic programming over the chain; :func:`plan_checkpoints`
does the same for one level of recomputation:

    kept[0] = 0
    kept[i] = min over h < i of  kept[h] + boundary(h)
              such that the segment [h, i) fits:  kept[h] + P(h, i) <= budget

``kept[i]`` is the least boundary memory any feasible segmentation of layers ``0..i-1`` must
keep while layer ``i`` onwards runs. Less kept memory never hurts a later segment, so keeping
the minimum is optimal (the principle of optimality holds). The plan then starts its last
segment at the smallest ``p`` with ``kept[p] + P_last(p, n) <= budget``, and among the plans
that recompute the same, the one with the lowest peak is returned. O(n^2) segment
evaluations; the tests check it against brute force over all ``2^(n-1)`` plans of small
chains.

Gruslys et al. also allow a recomputed segment to be checkpointed again (several levels of
recomputation, memory down to O(log n)); tinyodl's executor has one level, so the planner
plans for one level.

Chapter 06 (trading compute for memory). Chen, Xu, Zhang, Guestrin, "Training Deep Nets
with Sublinear Memory Cost", arXiv:1604.06174 (2016); Gruslys, Munos, Danihelka, Lanctot,
Graves, "Memory-Efficient Backpropagation Through Time", NeurIPS 2016.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "ChainProfile",
    "CheckpointPlan",
    "brute_force_plan",
    "evaluate_plan",
    "plan_checkpoints",
    "plan_greedy",
    "segment_starts",
    "simulate_plan",
    "sqrt_segments",
]


@dataclass(frozen=True)
class ChainProfile:
    """The numbers the planner needs about a chain of ``n`` layers (all byte counts >= 0).

    Parameters
    ----------
    input_bytes : sequence of int, length n
        Bytes of the input of layer ``i``: what a segment starting at ``i`` keeps as its
        boundary, and the size of the gradient ``dL/d(input)`` that layer ``i``'s backward
        returns.
    output_bytes : sequence of int, length n
        Bytes of the output of layer ``i`` (``input_bytes[i + 1]`` for ``i < n - 1``).
    saved_bytes : sequence of int, length n
        Bytes layer ``i`` keeps for its backward *besides* a reference to its input (a ReLU
        mask, max-pool indices, batchnorm's ``x_hat``...).
    saves_input : sequence of bool, length n
        Whether layer ``i`` keeps its input for backward (a Linear or Conv2d whose weight
        trains: ``dW = dout^T x``).
    forward_cost : sequence of float, length n
        Cost of one forward pass of layer ``i`` (MACs, FLOPs or seconds; only sums and
        ratios are used).
    workspace_bytes : sequence of int, length n, optional
        Short-lived bytes of layer ``i``'s backward besides its returned gradient (internal
        gradients of a block, a weight-gradient temporary). Default 0.
    forward_workspace_bytes : sequence of int, length n, optional
        Short-lived bytes of layer ``i``'s forward besides its output and what it saves
        (kernel temporaries such as ``x @ W.T`` before ``+ b``, im2col columns). Default 0.
    input_resident : bool, default True
        The chain's input exists anyway (the batch): keeping it costs nothing. False for a
        chain inside a bigger model whose input would otherwise be freed.
    dout_resident : bool, default True
        The gradient of the chain's output is given (allocated before the backward pass).
    names : sequence of str, optional
        Layer names, for tables.
    """

    input_bytes: Sequence[int]
    output_bytes: Sequence[int]
    saved_bytes: Sequence[int]
    saves_input: Sequence[bool]
    forward_cost: Sequence[float]
    workspace_bytes: Sequence[int] | None = None
    forward_workspace_bytes: Sequence[int] | None = None
    input_resident: bool = True
    dout_resident: bool = True
    names: Sequence[str] | None = None

    def __post_init__(self) -> None:
        n = len(self.input_bytes)
        fields = {
            "output_bytes": self.output_bytes,
            "saved_bytes": self.saved_bytes,
            "saves_input": self.saves_input,
            "forward_cost": self.forward_cost,
        }
        for key in ("workspace_bytes", "forward_workspace_bytes"):
            if getattr(self, key) is None:
                object.__setattr__(self, key, (0,) * n)
            fields[key] = getattr(self, key)
        if self.names is not None:
            fields["names"] = self.names
        for key, values in fields.items():
            if len(values) != n:
                raise ValueError(
                    f"ChainProfile: {key} has {len(values)} entries, input_bytes has {n}"
                )
        byte_fields = ("input_bytes", "output_bytes", "saved_bytes", "workspace_bytes")
        for key in (*byte_fields, "forward_workspace_bytes"):
            values = [int(v) for v in getattr(self, key)]
            if any(v < 0 for v in values):
                raise ValueError(f"ChainProfile: {key} must be >= 0, got {values}")
            object.__setattr__(self, key, tuple(values))
        chained = self.output_bytes[:-1] == self.input_bytes[1:]
        if not chained:
            raise ValueError(
                "ChainProfile: the output of layer i is the input of layer i + 1, so "
                f"output_bytes[:-1] must equal input_bytes[1:]; got {list(self.output_bytes)} "
                f"and {list(self.input_bytes)}"
            )
        costs = tuple(float(c) for c in self.forward_cost)
        if any(not math.isfinite(c) or c < 0 for c in costs):
            raise ValueError(f"ChainProfile: forward_cost must be finite and >= 0, got {costs}")
        object.__setattr__(self, "forward_cost", costs)
        object.__setattr__(self, "saves_input", tuple(bool(s) for s in self.saves_input))

    @property
    def n(self) -> int:
        """Number of layers in the chain."""
        return len(self.input_bytes)

    @classmethod
    def uniform(
        cls, n: int, activation_bytes: int = 1, cost: float = 1.0, **kwargs: object
    ) -> ChainProfile:
        """``n`` equal layers that each keep their input (Chen's textbook chain)."""
        a = int(activation_bytes)
        return cls([a] * n, [a] * n, [0] * n, [True] * n, [cost] * n, **kwargs)

    def boundary_bytes(self, i: int) -> int:
        """Bytes kept for a segment starting at layer ``i`` (0 for a resident chain input)."""
        return 0 if (i == 0 and self.input_resident) else self.input_bytes[i]

    def total_forward_cost(self) -> float:
        """Cost of one forward pass through the whole chain."""
        return float(sum(self.forward_cost))


@dataclass
class CheckpointPlan:
    """A segmentation of a chain and what it costs under the memory model.

    Attributes
    ----------
    starts : tuple of int
        Segment starts; ``starts[0] == 0``. ``boundaries`` are the starts after the first,
        the argument of :class:`~tinyodl.checkpointing.CheckpointedSequential`.
    peak_bytes : int
        Predicted peak of forward + backward above the resident memory
        (:func:`simulate_plan`).
    recompute_cost : float
        Forward cost of the layers run twice (all layers before the last segment).
    forward_cost : float
        Cost of one forward pass of the whole chain; ``recompute_fraction`` is the ratio.
    budget_bytes : int or None
        The budget the plan was made for (None: not planned against a budget).
    method : str
        How the plan was made ("dp", "greedy", "brute_force", "sqrt", "given").
    """

    starts: tuple[int, ...]
    peak_bytes: int
    recompute_cost: float
    forward_cost: float
    budget_bytes: int | None = None
    method: str = "given"
    segment_peaks: list[int] = field(default_factory=list)

    @property
    def boundaries(self) -> tuple[int, ...]:
        """Segment starts after the first (the layers whose input is kept)."""
        return self.starts[1:]

    @property
    def num_segments(self) -> int:
        return len(self.starts)

    @property
    def recompute_fraction(self) -> float:
        """Extra forward compute as a fraction of one forward pass."""
        return self.recompute_cost / self.forward_cost if self.forward_cost else 0.0

    def __str__(self) -> str:
        budget = "" if self.budget_bytes is None else f", budget {self.budget_bytes:,} B"
        return (
            f"CheckpointPlan({self.method}: {self.num_segments} segments starting at "
            f"{list(self.starts)}, peak {self.peak_bytes:,} B, recompute "
            f"{self.recompute_fraction:.0%} of a forward pass{budget})"
        )


# ----------------------------------------------------------------------------- plans


def segment_starts(n: int, boundaries: Sequence[int] = ()) -> tuple[int, ...]:
    """``(0, *boundaries)`` after checking they are increasing layer indices in ``(0, n)``."""
    starts = (0, *(int(b) for b in boundaries))
    ok = all(a < b for a, b in itertools.pairwise(starts)) and (n == 0 or starts[-1] < n)
    if not ok or (n == 0 and len(starts) > 1):
        raise ValueError(
            f"segment boundaries must be strictly increasing layer indices in (0, {n}), "
            f"got {list(boundaries)}"
        )
    return starts


def sqrt_segments(n: int, segments: int | None = None) -> tuple[int, ...]:
    """Boundaries of ``segments`` near-equal segments (default ``round(sqrt(n))``, Chen).

    >>> sqrt_segments(16)
    (4, 8, 12)
    >>> sqrt_segments(10, 3)
    (4, 7)
    """
    if n < 0:
        raise ValueError(f"sqrt_segments: n must be >= 0, got {n}")
    k = max(1, round(math.sqrt(n))) if segments is None else int(segments)
    if not 1 <= k <= max(n, 1):
        raise ValueError(f"sqrt_segments: segments must be in [1, {max(n, 1)}], got {segments}")
    sizes = [n // k + (1 if j < n % k else 0) for j in range(k)]
    return tuple(int(b) for b in np.cumsum(sizes)[:-1])


# ----------------------------------------------------------------------------- simulation


class _Live:
    """Live bytes with reference counts; tracks the peak (resident blocks are free)."""

    def __init__(self) -> None:
        self.refs: dict[object, int] = {}
        self.size: dict[object, int] = {}
        self.live = 0
        self.peak = 0

    def alloc(self, key: object, nbytes: int) -> None:
        self.refs[key], self.size[key] = 1, nbytes
        self.live += nbytes
        self.peak = max(self.peak, self.live)

    def ref(self, key: object) -> None:
        self.refs[key] += 1

    def drop(self, key: object) -> None:
        self.refs[key] -= 1
        if self.refs[key] == 0:
            self.live -= self.size.pop(key)
            del self.refs[key]

    def spike(self, nbytes: int) -> None:
        self.peak = max(self.peak, self.live + nbytes)


def _run_forward(
    p: ChainProfile, live: _Live, lo: int, hi: int, x0: object, tag: str, keep: bool
) -> None:
    """Layers ``lo..hi-1`` forward from the live input ``x0`` (the running variable's reference).

    Leaves the output ``("x", hi, tag)`` live. With ``keep`` each layer's saved tensors stay
    (``("saved", i)`` and, if it saves its input, a reference to it); without, they are
    dropped as soon as the layer has run.
    """
    x = x0
    for i in range(lo, hi):
        y = ("x", i + 1, tag)
        live.alloc(y, p.output_bytes[i])
        live.alloc(("saved", i), p.saved_bytes[i])
        live.spike(p.forward_workspace_bytes[i])
        if p.saves_input[i]:
            live.ref(x)
        if not keep:
            live.drop(("saved", i))
            if p.saves_input[i]:
                live.drop(x)
        live.drop(x)  # the running variable moves on to the output
        x = y


def _run_backward(p: ChainProfile, live: _Live, lo: int, hi: int, x0: object, tag: str) -> None:
    """Back-propagate through layers ``hi-1..lo``, whose saved tensors are live.

    Starts from the live gradient ``("g", hi)`` and leaves ``("g", lo)`` live; ``x0`` is the
    input of layer ``lo``.
    """
    for i in reversed(range(lo, hi)):
        live.alloc(("g", i), p.input_bytes[i])
        live.spike(p.workspace_bytes[i])
        live.drop(("saved", i))
        if p.saves_input[i]:
            live.drop(x0 if i == lo else ("x", i, tag))
        live.drop(("g", i + 1))


def simulate_plan(profile: ChainProfile, boundaries: Sequence[int] = ()) -> int:
    """Peak bytes of forward + backward under a plan, by replaying every allocation.

    The replay follows :class:`~tinyodl.checkpointing.CheckpointedSequential` step by step:
    outputs, saved tensors and gradients are allocated and freed with reference counts (a
    tensor lives while a layer, a boundary or the running variable holds it). The chain's
    output is dropped after the forward pass; the input and the output gradient are resident
    unless the profile says otherwise. This is a different computation from the segment
    formula the planners use (:func:`segment_peak`); the tests hold the two equal.

    Parameters
    ----------
    profile : ChainProfile
    boundaries : sequence of int
        Segment starts after 0 (empty: plain backpropagation).

    Returns
    -------
    int
        The highest live bytes, above the resident memory.
    """
    p, n = profile, profile.n
    starts = segment_starts(n, boundaries)
    if n == 0:
        return 0
    live = _Live()
    ends = [*starts[1:], n]
    live.alloc(("x", 0, "f"), 0 if p.input_resident else p.input_bytes[0])
    for lo, hi in zip(starts, ends, strict=True):
        last = hi == n
        if not last:  # the boundary: one more reference to the segment's input
            live.ref(("x", lo, "f"))
        _run_forward(p, live, lo, hi, ("x", lo, "f"), "f", keep=last)
    live.drop(("x", n, "f"))  # the caller consumes the output
    live.alloc(("g", n), 0 if p.dout_resident else p.output_bytes[n - 1])
    _run_backward(p, live, starts[-1], n, ("x", starts[-1], "f"), "f")
    for lo, hi in reversed(list(zip(starts[:-1], ends[:-1], strict=True))):
        tag = f"r{lo}"  # recomputed tensors are new arrays; the boundary's reference
        _run_forward(p, live, lo, hi, ("x", lo, "f"), tag, keep=True)  # becomes the variable
        live.drop(("x", hi, tag))  # the recomputed output is not needed
        _run_backward(p, live, lo, hi, ("x", lo, "f"), tag)
    return live.peak


def evaluate_plan(
    profile: ChainProfile, boundaries: Sequence[int] = (), method: str = "given"
) -> CheckpointPlan:
    """A :class:`CheckpointPlan` for given boundaries: its simulated peak and recomputation."""
    starts = segment_starts(profile.n, boundaries)
    return CheckpointPlan(
        starts=starts,
        peak_bytes=simulate_plan(profile, starts[1:]),
        recompute_cost=_recompute(profile, starts),
        forward_cost=profile.total_forward_cost(),
        method=method,
    )


def _recompute(profile: ChainProfile, starts: Sequence[int]) -> float:
    return float(sum(profile.forward_cost[: starts[-1]])) if profile.n else 0.0


# ----------------------------------------------------------------------------- segment formula


def segment_peak(profile: ChainProfile, lo: int, hi: int, last: bool) -> int:
    """Peak bytes that segment ``[lo, hi)`` itself holds (``P`` in the module docstring).

    Everything the segment allocates is counted: its boundary (for a segment other than the
    last), the outputs and saved tensors of its layers, the gradient flowing through it and
    each layer's backward workspace. Add the boundaries of the segments before it for the
    memory at that moment: ``peak(plan) = max_j (K_j + segment_peak(j))``.

    Parameters
    ----------
    profile : ChainProfile
    lo, hi : int
        The segment's layers are ``lo..hi-1`` (``0 <= lo < hi <= n``).
    last : bool
        The last segment keeps its activations from the forward pass (``hi == n``); the
        others are recomputed during the backward pass.
    """
    p = profile
    if not 0 <= lo < hi <= p.n or (last and hi != p.n):
        raise ValueError(f"segment_peak: bad segment [{lo}, {hi}) of a chain of {p.n} layers")
    b = p.boundary_bytes(lo)
    # the gradient that arrives at the segment's output during the backward pass
    if hi == p.n:
        g_in = 0 if p.dout_resident else p.output_bytes[-1]
    else:
        g_in = p.input_bytes[hi]

    def held(m: int) -> int:  # bytes of the input of layer m while it is alive
        return b if m == lo else p.input_bytes[m]

    peak, kept = 0, 0  # kept: saved tensors of layers lo..i-1 (and inputs they keep)
    for i in range(lo, hi):
        new = p.output_bytes[i] + p.saved_bytes[i] + p.forward_workspace_bytes[i]
        step = kept + held(i) + new
        if last:  # the forward pass of the last segment, keeping everything
            peak = max(peak, step)
        else:  # the first forward pass (boundary kept, nothing else) and the recomputation
            first = b + (p.input_bytes[i] if i > lo else 0) + new
            peak = max(peak, first, g_in + step)
        kept += p.saved_bytes[i] + (held(i) if p.saves_input[i] else 0)
        g_out = g_in if i == hi - 1 else p.input_bytes[i + 1]
        backward_i = kept + g_out + p.input_bytes[i] + p.workspace_bytes[i]
        peak = max(peak, backward_i)
    return peak


class _SegmentTable:
    """``segment_peak`` of every segment of a chain, computed once (O(n^3) time, n^2 ints)."""

    def __init__(self, profile: ChainProfile) -> None:
        n = profile.n
        self.nonlast = [
            [segment_peak(profile, lo, hi, False) if hi > lo else 0 for hi in range(n)]
            for lo in range(n)
        ]
        self.last = [segment_peak(profile, lo, n, True) for lo in range(n)]


def _kept_boundaries(
    profile: ChainProfile, table: _SegmentTable, budget: float
) -> tuple[list[float], list[int]]:
    """The dynamic programme: least boundary memory ``kept[i]`` before a segment starting at
    ``i``, over all feasible segmentations of layers ``0..i-1``, and the argmin ``parent``."""
    n = profile.n
    kept, parent = [math.inf] * n, [-1] * n
    kept[0] = 0
    for i in range(1, n):
        for h in range(i):
            if kept[h] + table.nonlast[h][i] <= budget:
                candidate = kept[h] + profile.boundary_bytes(h)
                if candidate < kept[i]:
                    kept[i], parent[i] = candidate, h
    return kept, parent


def _feasible_last_starts(profile: ChainProfile, table: _SegmentTable, budget: float) -> list[int]:
    """Every start of the last segment that some plan within ``budget`` can use."""
    kept, _ = _kept_boundaries(profile, table, budget)
    return [p for p in range(profile.n) if kept[p] + table.last[p] <= budget]


def _fits(profile: ChainProfile, table: _SegmentTable, start: int, budget: float) -> bool:
    """Can a plan within ``budget`` start its last segment at ``start``?"""
    kept, _ = _kept_boundaries(profile, table, budget)
    return kept[start] + table.last[start] <= budget


def _smallest_budget(lo: int, hi: int, feasible) -> int:
    """Smallest integer ``b`` in ``[lo, hi]`` with ``feasible(b)`` (``feasible(hi)`` holds)."""
    while lo < hi:
        mid = (lo + hi) // 2
        if feasible(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi


def min_peak_bytes(profile: ChainProfile) -> int:
    """The lowest peak any segmentation of the chain reaches (the smallest usable budget)."""
    if profile.n == 0:
        return 0
    table = _SegmentTable(profile)
    plain = table.last[0]
    return _smallest_budget(0, plain, lambda b: bool(_feasible_last_starts(profile, table, b)))


def plan_checkpoints(profile: ChainProfile, budget_bytes: int | None = None) -> CheckpointPlan:
    """The plan that recomputes least while its peak stays within ``budget_bytes``.

    Dynamic programming over the chain (module docstring): exact for the memory model of
    :func:`simulate_plan` and one level of recomputation. Among the plans with the least
    recomputation it returns one with the lowest peak.

    Parameters
    ----------
    profile : ChainProfile
    budget_bytes : int, optional
        Memory budget for forward + backward above the resident memory (the quantity of
        :func:`simulate_plan`). None: the lowest-memory plan (and, among those, the one
        that recomputes least).

    Returns
    -------
    CheckpointPlan
        ``method == "dp"``; ``boundaries`` is the argument of ``CheckpointedSequential``.

    Raises
    ------
    ValueError
        If no segmentation fits the budget; the message gives the smallest budget that does.

    Examples
    --------
    >>> chain = ChainProfile.uniform(16)       # 16 equal layers, 1 byte of activation each
    >>> plan_checkpoints(chain, budget_bytes=100).boundaries   # everything fits: no checkpoint
    ()
    >>> plan = plan_checkpoints(chain, budget_bytes=9)
    >>> plan.peak_bytes <= 9, plan.recompute_cost
    (True, 8.0)
    """
    n = profile.n
    if n == 0:
        return evaluate_plan(profile, (), method="dp")
    table = _SegmentTable(profile)
    budget = min_peak_bytes(profile) if budget_bytes is None else int(budget_bytes)
    starts = _feasible_last_starts(profile, table, budget)
    if not starts:
        raise ValueError(
            f"plan_checkpoints: no segmentation of the {n}-layer chain fits in {budget:,} "
            f"bytes; the lowest peak any plan reaches is {min_peak_bytes(profile):,} bytes"
        )
    # Recomputation depends only on the last segment's start; several starts can cost the
    # same (layers of cost 0). Among those, take the one whose plan can peak lowest.
    costs = {p: _recompute(profile, (p,)) for p in starts}
    cheapest = min(costs.values())
    tightest = {
        p: _smallest_budget(0, budget, lambda b, p=p: _fits(profile, table, p, b))
        for p in starts
        if costs[p] == cheapest
    }
    start = min(tightest, key=lambda p: (tightest[p], p))
    _, parent = _kept_boundaries(profile, table, tightest[start])
    chain = [start]
    while chain[-1] != 0:
        chain.append(parent[chain[-1]])
    plan = evaluate_plan(profile, chain[::-1][1:], method="dp")
    plan.budget_bytes = None if budget_bytes is None else int(budget_bytes)
    return plan


def plan_greedy(profile: ChainProfile, budget_bytes: int) -> CheckpointPlan:
    """Chen et al.'s budgeted greedy: grow each segment until the next layer would not fit.

    Walks the layers once; a segment is closed (and its successor's input becomes a
    boundary) as soon as adding the next layer would take the memory of that moment above
    the budget. Simple and linear, but not optimal: filling the first segments to the brim
    pushes the last segment back, so more layers are recomputed than needed, and it can miss
    a plan that exists (compare :func:`plan_checkpoints`).

    Raises
    ------
    ValueError
        If the greedy segmentation does not fit the budget.
    """
    n, budget = profile.n, int(budget_bytes)
    if n == 0:
        return evaluate_plan(profile, (), method="greedy")
    starts, kept, lo = [0], 0, 0
    for i in range(1, n):
        if kept + segment_peak(profile, lo, i + 1, i + 1 == n) > budget:
            kept += profile.boundary_bytes(lo)  # close the segment before layer i
            starts.append(i)
            lo = i
    plan = evaluate_plan(profile, starts[1:], method="greedy")
    plan.budget_bytes = budget
    if plan.peak_bytes > budget:
        raise ValueError(
            f"plan_greedy: the greedy segmentation {starts} peaks at {plan.peak_bytes:,} "
            f"bytes, above the budget of {budget:,} (plan_checkpoints may still find a plan)"
        )
    return plan


def brute_force_plan(profile: ChainProfile, budget_bytes: int) -> CheckpointPlan | None:
    """Try all ``2^(n-1)`` segmentations (n <= 16); the one recomputing least, then with the
    lowest peak, that fits the budget (None if none fits). For tests and the notebook."""
    n = profile.n
    if n > 16:
        raise ValueError(f"brute_force_plan: 2^{n - 1} plans are too many; use n <= 16")
    best = None
    for mask in range(2 ** max(n - 1, 0)):
        boundaries = [i + 1 for i in range(n - 1) if mask >> i & 1]
        plan = evaluate_plan(profile, boundaries, method="brute_force")
        if plan.peak_bytes > budget_bytes:
            continue
        key = (plan.recompute_cost, plan.peak_bytes)
        if best is None or key < (best.recompute_cost, best.peak_bytes):
            best = plan
    if best is not None:
        best.budget_bytes = int(budget_bytes)
    return best
