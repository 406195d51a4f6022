"""Chapter 12: the TTE-style training engine (tinyodl.engine).

Oracles: one compiled step must give the same integers as the eager int8 training step of
chapter 03 (``int8_train_step`` + ``Int8Optimizer``), with chapter 04's sparse schemes
applied by ``sparse_update.apply_scheme``; its measured peak (tracemalloc) must match the
plan within 10%.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinyodl import backend, tasks
from tinyodl.engine import compile_training, plan_memory, trace
from tinyodl.engine.schedule import ARRAY_HEADER_BYTES, Buffer, Step
from tinyodl.qas import Int8Optimizer, int8_train_step
from tinyodl.sparse_update import UpdateScheme, apply_scheme

BATCH = (2, 1, 28, 28)


@pytest.fixture(scope="module")
def task():
    return tasks.load_task("A")


@pytest.fixture(scope="module")
def base_qmodel(task):
    from tinyodl.bench.qas import starting_points

    return starting_points(task, tasks.calibration_images("A", 64))["int8_sgdm"]


def _batches(task, n, size=2):
    return [
        (task.x_train[i * size : (i + 1) * size], task.y_train[i * size : (i + 1) * size])
        for i in range(n)
    ]


def _same_integers(a, b) -> bool:
    return all(
        np.array_equal(ca.weight, cb.weight) and np.array_equal(ca.bias, cb.bias)
        for (_, ca), (_, cb) in zip(a.named_convs(), b.named_convs(), strict=True)
    )


def _reference(qmodel, scheme, steps, **opt):
    """The eager path: chapter 04's scheme flags, chapter 03's step and optimizer."""
    ref = copy.deepcopy(qmodel)
    if scheme is None:
        for _, c in ref.named_convs():
            c.weight_trainable = c.bias_trainable = True
    else:
        apply_scheme(ref, scheme)
    optimizer = Int8Optimizer(ref, kind="sgd", **opt)
    losses = [int8_train_step(ref, optimizer, x, y)[0] for x, y in steps]
    return ref, losses


FULL = None
SPARSE = UpdateScheme(
    bias_depth=6,
    weights={
        "classifier.0": 1.0,
        "features.10": 0.5,
        "features.9.project": 0.25,
        "features.9.depthwise": 0.5,
    },
)


@pytest.mark.parametrize("backend_name", ["numpy", "cython"])
@pytest.mark.parametrize("scheme", [FULL, SPARSE], ids=["full", "sparse"])
@pytest.mark.parametrize("reorder", [True, False], ids=["reordered", "at_end"])
def test_plan_gives_the_same_integers_as_eager_backprop(
    base_qmodel, task, backend_name, scheme, reorder
):
    if backend_name not in backend.available_backends():
        pytest.skip("cython kernels not built")
    with backend.use_backend(backend_name):
        steps = _batches(task, 3)
        opt = dict(lr=0.02, momentum=0.9, qas=True, store="shadow")
        ref, ref_losses = _reference(base_qmodel, scheme, steps, **opt)
        mine = copy.deepcopy(base_qmodel)
        if scheme is None:
            for _, c in mine.named_convs():
                c.weight_trainable = c.bias_trainable = True
        plan = compile_training(mine, BATCH, scheme=scheme, reorder=reorder, profile=False, **opt)
        losses = [plan.step(x, y) for x, y in steps]
    assert losses == ref_losses  # the same forward each step: bit-equal
    assert _same_integers(mine, ref)  # bit-equal integers after 3 updates
    assert not _same_integers(mine, base_qmodel)  # and something did change


@pytest.mark.parametrize("store,momentum", [("int8", 0.0), ("shadow", 0.0), ("int8", 0.9)])
def test_optimizer_variants_match(base_qmodel, task, store, momentum):
    steps = _batches(task, 2)
    opt = dict(lr=0.05, momentum=momentum, qas=True, store=store)
    ref, _ = _reference(base_qmodel, SPARSE, steps, **opt)
    mine = copy.deepcopy(base_qmodel)
    plan = compile_training(mine, BATCH, scheme=SPARSE, profile=False, **opt)
    for x, y in steps:
        plan.step(x, y)
    assert _same_integers(mine, ref)


def test_scheme_none_follows_apply_scheme_flags(base_qmodel, task):
    steps = _batches(task, 2)
    opt = dict(lr=0.02, momentum=0.0, qas=True, store="shadow")  # the engine's defaults
    ref, _ = _reference(base_qmodel, SPARSE, steps, **opt)
    mine = apply_scheme(copy.deepcopy(base_qmodel), SPARSE)
    plan = compile_training(mine, BATCH, lr=0.02, profile=False)
    for x, y in steps:
        plan.step(x, y)
    assert _same_integers(mine, ref)


@pytest.mark.parametrize("scheme", [FULL, SPARSE], ids=["full", "sparse"])
@pytest.mark.parametrize("reorder", [True, False], ids=["reordered", "at_end"])
def test_measured_peak_within_10_percent_of_plan(base_qmodel, task, scheme, reorder):
    mine = copy.deepcopy(base_qmodel)
    if scheme is None:
        for _, c in mine.named_convs():
            c.weight_trainable = c.bias_trainable = True
    plan = compile_training(mine, (1, 1, 28, 28), scheme=scheme, reorder=reorder, lr=0.01)
    x, y = task.x_train[:1], task.y_train[:1]
    plan.step(x, y)  # warm-up (imports, numpy caches)
    measured = plan.measure(task.x_train[1:2], task.y_train[1:2]).peak_bytes
    planned = plan.memory_plan.peak_bytes
    assert abs(measured - planned) <= 0.10 * planned, (measured, planned)


def test_reordering_frees_each_gradient_at_its_update(base_qmodel):
    full = copy.deepcopy(base_qmodel)
    for _, c in full.named_convs():
        c.weight_trainable = c.bias_trainable = True
    late = compile_training(full, (1, 1, 28, 28), reorder=False, profile=False)
    early = compile_training(full, (1, 1, 28, 28), reorder=True, profile=False)
    for plan in (late, early):
        for b in plan.memory_plan.buffers:
            assert 0 <= b.alloc <= b.free
    # reordered: every weight gradient dies in the update right after it is made
    for b in early.memory_plan.buffers:
        if b.kind in ("weight_grad", "bias_grad"):
            assert early.steps[b.free].kind.startswith("update")
            # a depthwise layer whose dx overwrites its dout updates after that dx (which
            # reads the old weights): its dW waits one step
            between = [s.kind for s in early.steps[b.alloc + 1 : b.free]]
            assert between in ([], ["bwd_dx_inplace"]), (b.name, between)
    # at the end: all of them are alive at once before the first update
    first_update = min(i for i, s in enumerate(late.steps) if s.kind.startswith("update"))
    grads = [b for b in late.memory_plan.buffers if b.kind == "weight_grad"]
    assert all(b.alloc < first_update <= b.free for b in grads)
    total_grads = sum(b.nbytes for b in grads)
    assert late.memory_plan.buffer_peak_bytes >= total_grads
    assert (
        early.memory_plan.buffer_peak_bytes < late.memory_plan.buffer_peak_bytes - total_grads // 2
    )


def test_pruning_removes_the_frozen_part(base_qmodel):
    head_only = UpdateScheme(bias_depth=1, weights={"classifier.0": 1.0})
    plan = compile_training(
        copy.deepcopy(base_qmodel), (1, 1, 28, 28), scheme=head_only, profile=False
    )
    backward = [s for s in plan.steps if s.kind.startswith(("bwd", "update"))]
    assert {s.node for s in backward} == {"classifier.0"}
    assert not any(s.kind == "bwd_dx" for s in backward)  # no gradient for the features
    kinds = {b.kind for b in plan.memory_plan.buffers}
    assert "mask" in kinds  # the classifier's clamp mask
    masks = [b.name for b in plan.memory_plan.buffers if b.kind == "mask"]
    assert masks == ["m:classifier.0"]
    # every forward activation but the classifier's input dies in the forward pass
    loss_step = next(i for i, s in enumerate(plan.steps) if s.kind == "loss")
    alive = [
        b.name for b in plan.memory_plan.buffers if b.kind == "activation" and b.free > loss_step
    ]
    assert alive == ["a:features.13"]


def test_partial_depthwise_keeps_only_its_channels(base_qmodel):
    scheme = UpdateScheme(bias_depth=0, weights={"features.9.depthwise": 0.25})
    plan = compile_training(
        copy.deepcopy(base_qmodel), (1, 1, 28, 28), scheme=scheme, profile=False
    )
    saved = {b.name: b for b in plan.memory_plan.buffers if b.kind == "saved"}
    assert saved["s:features.9.depthwise"].shape == (1, 64, 4, 4)  # 256 channels -> 64
    dw = next(b for b in plan.memory_plan.buffers if b.name == "dW:features.9.depthwise")
    assert dw.shape == (64, 1, 3, 3)


def test_plan_memory_is_the_maximum_of_live_bytes():
    bufs = {
        n: Buffer(n, (s,), "uint8", "activation", s) for n, s in [("a", 100), ("b", 50), ("c", 30)]
    }
    steps = [
        Step("s0", "n", allocs=["a"]),
        Step("s1", "n", reads=["a"], allocs=["b"]),
        Step("s2", "n", reads=["b"], allocs=["c"], workspace=7),
        Step("s3", "n", reads=["c"]),
    ]
    plan = plan_memory(steps, bufs)
    h = ARRAY_HEADER_BYTES
    assert plan.live_bytes == [100 + h, 150 + 2 * h, 80 + 2 * h, 30 + h]
    assert plan.peak_bytes == 150 + 2 * h and plan.peak_step == 1
    assert [s.frees for s in steps] == [[], ["a"], ["b"], ["c"]]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(1, 1000), min_size=1, max_size=8),
    data=st.data(),
)
def test_plan_memory_matches_a_brute_force_replay(sizes, data):
    names = [f"b{i}" for i in range(len(sizes))]
    bufs = {n: Buffer(n, (s,), "uint8", "grad", s) for n, s in zip(names, sizes, strict=True)}
    steps = [Step("make", n, allocs=[n]) for n in names]
    for _ in range(data.draw(st.integers(0, 6))):
        steps.append(Step("use", "x", reads=[data.draw(st.sampled_from(names))]))
    plan = plan_memory(steps, bufs)
    last = {}
    for i, s in enumerate(steps):
        for n in (*s.reads, *s.allocs):
            last[n] = i
    live = [
        sum(
            sizes[k] + ARRAY_HEADER_BYTES
            for k, n in enumerate(names)
            if bufs[n].alloc <= i <= last[n]
        )
        for i in range(len(steps))
    ]
    assert plan.live_bytes == live
    assert plan.peak_bytes == max(live)


def test_errors_name_what_is_wrong(base_qmodel, task):
    from tinyodl import models

    with pytest.raises(TypeError, match="QuantizedModel"):
        trace(models.mcunet_tiny(), (1, 1, 28, 28))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        trace(base_qmodel, (1, 28, 28))
    plan = compile_training(copy.deepcopy(base_qmodel), (1, 1, 28, 28), profile=False)
    with pytest.raises(ValueError, match=r"compiled for inputs \(1, 1, 28, 28\).*\(2, 1, 28, 28\)"):
        plan.step(task.x_train[:2], task.y_train[:2])
    bad = SimpleNamespace(bias_depth=0, weights={"features.99": 1.0})
    with pytest.raises(KeyError, match="features.99"):
        compile_training(copy.deepcopy(base_qmodel), (1, 1, 28, 28), scheme=bad, profile=False)
    with pytest.raises(ValueError, match="store"):
        compile_training(base_qmodel, (1, 1, 28, 28), store="fp16", profile=False)


def test_profile_restores_the_model(base_qmodel):
    mine = copy.deepcopy(base_qmodel)
    compile_training(mine, (1, 1, 28, 28), scheme=SPARSE, lr=1.0)  # profiles one step
    assert _same_integers(mine, base_qmodel)


@pytest.mark.parametrize("name", ["numpy", "cython"])
def test_scratch_limit_lowers_the_peak_without_changing_the_result(base_qmodel, task, name):
    """The numpy reference's kernels hold whole-layer int32 accumulators and float weight
    copies: chunks lower its peak. The compiled ones keep a few blocks of scratch whatever
    the layer (int8 operands read in place), so the limit changes little there."""
    if name not in backend.available_backends():
        pytest.skip(f"backend {name} not available")
    steps = _batches(task, 2, size=1)
    models, peaks = [], []
    for limit in (None, 8192):
        mine = copy.deepcopy(base_qmodel)
        with backend.use_backend(name):
            plan = compile_training(
                mine, (1, 1, 28, 28), scheme=SPARSE, lr=0.05, scratch_limit=limit
            )
            for x, y in steps:
                plan.step(x, y)
        models.append(mine)
        peaks.append(plan.memory_plan.peak_bytes)
    assert _same_integers(*models)
    assert peaks[1] < (0.8 if name == "numpy" else 1.1) * peaks[0], peaks
