"""Segment checkpointing (chapter 06): bit-identical gradients and measured memory.

The central claim -- recomputing a segment gives *exactly* the numbers of the first pass --
is checked with ``np.array_equal`` on outputs, input gradients, parameter gradients,
per-example gradients, batchnorm running statistics and dropout generators, on both
backends, over several training steps. Two negative controls show that those comparisons
can fail: without restoring the random state (or the running statistics) they do.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyodl import models, nn
from tinyodl.checkpointing import (
    CheckpointedSequential,
    checkpoint_sequential,
    measure_backprop,
    plan_checkpoints,
    profile_chain,
    sequential,
    simulate_plan,
)
from tinyodl.memory import analytic_training_memory, measure_training_step


def conv_chain(seed=0, dropout=0.2):
    """A 10-link CNN chain with batchnorm and dropout inside the segments."""
    s = iter(np.random.default_rng(seed).integers(0, 2**31, 20).tolist())
    layers = [nn.Sequential([nn.Conv2d(1, 6, 3, padding=1, seed=next(s)), nn.BatchNorm2d(6)])]
    for _ in range(5):
        layers.append(
            nn.Sequential(
                [
                    nn.Conv2d(6, 6, 3, padding=1, seed=next(s)),
                    nn.BatchNorm2d(6),
                    nn.ReLU(),
                    nn.Dropout(dropout, seed=next(s)),
                ]
            )
        )
    layers += [nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(dropout, seed=next(s))]
    layers += [nn.Linear(6 * 5 * 5, 10, seed=next(s))]
    return layers


def batch(n=8, size=10, seed=1):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, size, size), dtype=np.float32), rng.integers(0, 10, n)


def run_steps(model, x, y, steps=2, per_example=False):
    """A few SGD steps; everything each step produced, as plain arrays."""
    opt = nn.SGD(model, lr=0.1, momentum=0.9)
    record = []
    for _ in range(steps):
        opt.zero_grad()
        out = model.forward(x)
        _, dout = nn.softmax_cross_entropy(out, y)
        dx = model.backward(dout, per_example=per_example)
        grads = {k: p.grad.copy() for k, p in model.named_parameters() if p.grad is not None}
        samples = {
            k: p.grad_sample.copy()
            for k, p in model.named_parameters()
            if p.grad_sample is not None
        }
        opt.step()
        rngs = [
            layer.rng.bit_generator.state
            for _, layer in model.named_layers()
            if isinstance(layer, nn.Dropout)
        ]
        record.append((out, dx, grads, samples, model.state_dict(), rngs))
    return record


def assert_identical(a, b):
    assert len(a) == len(b)
    for step_a, step_b in zip(a, b, strict=True):
        out_a, dx_a, g_a, s_a, state_a, rng_a = step_a
        out_b, dx_b, g_b, s_b, state_b, rng_b = step_b
        assert np.array_equal(out_a, out_b), "outputs differ"
        assert np.array_equal(dx_a, dx_b), "input gradients differ"
        assert g_a.keys() == g_b.keys() and s_a.keys() == s_b.keys()
        for k in g_a:
            assert np.array_equal(g_a[k], g_b[k]), f"gradient of {k} differs"
        for k in s_a:
            assert np.array_equal(s_a[k], s_b[k]), f"per-example gradient of {k} differs"
        for k in state_a:  # weights after the step and batchnorm running statistics
            assert np.array_equal(state_a[k], state_b[k]), f"{k} differs"
        assert rng_a == rng_b, "dropout generators ended in different states"


# ----------------------------------------------------------------------------- bit-identical


@pytest.mark.parametrize("boundaries", [(), (1,), (2, 5, 7), (1, 2, 3, 4, 5, 6, 7, 8, 9)])
def test_gradients_are_bit_identical_to_plain_backprop(backend_name, boundaries):
    x, y = batch()
    plain = run_steps(nn.Sequential(conv_chain()), x, y)
    ckpt = run_steps(CheckpointedSequential(conv_chain(), boundaries=boundaries), x, y)
    assert_identical(plain, ckpt)


@settings(max_examples=15, deadline=None)
@given(st.sets(st.integers(1, 9)), st.booleans())
def test_any_segmentation_is_bit_identical(boundaries, per_example):
    """Per-example gradients need batchnorm in evaluation mode (batch statistics mix the
    examples), so those runs are in evaluation mode."""
    x, y = batch(n=4)
    plain = nn.Sequential(conv_chain(dropout=0.5)).train(not per_example)
    ckpt = CheckpointedSequential(conv_chain(dropout=0.5), boundaries=sorted(boundaries))
    ckpt.train(not per_example)
    assert_identical(run_steps(plain, x, y, 1, per_example), run_steps(ckpt, x, y, 1, per_example))


def test_per_example_gradients_are_refused_up_front_as_without_checkpointing():
    x, y = batch()
    for model in (nn.Sequential(conv_chain()), CheckpointedSequential(conv_chain(), segments=3)):
        _, dout = nn.softmax_cross_entropy(model.forward(x), y)
        with pytest.raises(nn.PerExampleGradientError, match="BatchNorm2d '0.1'"):
            model.backward(dout, per_example=True)
        assert all(p.grad is None for p in model.parameters())  # nothing was touched


def test_inverted_residual_blocks_of_mcunet_tiny(backend_name):
    x, y = batch(n=4, size=28)
    plain = models.mcunet_tiny(seed=0)
    ckpt = models.mcunet_tiny(seed=0)
    ckpt["features"] = checkpoint_sequential(ckpt["features"])
    assert ckpt["features"].boundaries == (4, 8, 11)  # 14 links, round(sqrt(14)) = 4 segments
    assert_identical(run_steps(plain, x, y), run_steps(ckpt, x, y))


def test_eval_mode_recomputes_in_eval_mode():
    x, y = batch()
    plain, ckpt = nn.Sequential(conv_chain()), CheckpointedSequential(conv_chain(), segments=3)
    for model in (plain, ckpt):
        model.eval()
    assert_identical(run_steps(plain, x, y, 1), run_steps(ckpt, x, y, 1))


def test_without_restoring_the_random_state_dropout_masks_differ(monkeypatch):
    """Negative control: the comparison above does catch a recomputation with new masks."""
    monkeypatch.setattr(sequential, "_generators", lambda layers: [])
    x, y = batch()
    plain = run_steps(nn.Sequential(conv_chain(dropout=0.5)), x, y, 1)
    ckpt = run_steps(CheckpointedSequential(conv_chain(dropout=0.5), segments=3), x, y, 1)
    with pytest.raises(AssertionError, match="differ"):
        assert_identical(plain, ckpt)


def test_without_restoring_running_statistics_they_are_updated_twice(monkeypatch):
    """Negative control for batchnorm: the buffers must be put back after recomputation."""
    original = sequential.CheckpointedSequential._recompute

    def recompute_and_update_again(self, layers, x, lo):
        original(self, layers, x, lo)
        h = x
        for layer in layers:  # what a naive recomputation does: update the statistics again
            h = layer.forward(h, self._forward_train)

    monkeypatch.setattr(sequential.CheckpointedSequential, "_recompute", recompute_and_update_again)
    x, y = batch()
    plain = run_steps(nn.Sequential(conv_chain(dropout=0.0)), x, y, 1)
    ckpt = run_steps(CheckpointedSequential(conv_chain(dropout=0.0), segments=3), x, y, 1)
    with pytest.raises(AssertionError, match="running_"):
        assert_identical(plain, ckpt)


# ----------------------------------------------------------------------------- container


def test_wrap_shares_layers_names_and_state():
    model = models.lenet5(seed=0)
    before = model.state_dict()
    features = model["features"]
    model["features"] = checkpoint_sequential(features, segments=2)
    assert model["features.0"] is features["0"]
    assert list(model.state_dict()) == list(before)
    assert model["features"].boundaries == (4,)
    assert model["features"].segments() == [(0, 4), (4, 7)]


def test_config_rebuilds_the_same_segmentation():
    ckpt = CheckpointedSequential(conv_chain(), boundaries=(3, 6))
    again = type(ckpt)(**ckpt.config())
    assert again.boundaries == (3, 6)
    assert [type(c) for c in again] == [type(c) for c in ckpt]


def test_default_is_sqrt_n_segments():
    assert CheckpointedSequential([nn.ReLU() for _ in range(16)]).boundaries == (4, 8, 12)
    assert CheckpointedSequential([nn.ReLU() for _ in range(16)], segments=1).boundaries == ()


def test_bad_arguments_and_edits_raise_clear_errors():
    with pytest.raises(ValueError, match="segments or boundaries, not both"):
        CheckpointedSequential([nn.ReLU()] * 4, segments=2, boundaries=(2,))
    with pytest.raises(ValueError, match=r"CheckpointedSequential.*in \(0, 4\)"):
        CheckpointedSequential([nn.ReLU() for _ in range(4)], boundaries=(4,))
    ckpt = CheckpointedSequential([nn.ReLU() for _ in range(4)], boundaries=(3,))
    del ckpt[3]
    with pytest.raises(ValueError, match=r"in \(0, 3\), got \[3\]"):
        ckpt.forward(np.ones((2, 3), dtype=np.float32))
    with pytest.raises(TypeError, match="expected a Sequential"):
        checkpoint_sequential(nn.ReLU())
    fresh = CheckpointedSequential([nn.ReLU() for _ in range(4)], boundaries=(2,))
    with pytest.raises(nn.BackwardError, match="without a forward"):
        fresh.backward(np.ones((2, 3), dtype=np.float32))


def test_boundaries_are_visible_as_saved_activations():
    ckpt = CheckpointedSequential(conv_chain(), boundaries=(3, 6))
    x, _ = batch()
    ckpt.forward(x)
    # the last segment keeps its activations instead of a boundary
    assert sorted(ckpt.saved) == ["boundary_0", "boundary_3"]
    assert ckpt.saved["boundary_0"] is x
    dropped = [layer for name, layer in ckpt.named_layers() if int(name.split(".")[0]) < 6]
    assert len(dropped) > 6 and not any(layer.saved for layer in dropped)
    assert list(ckpt)[6].saved  # max pooling in the last segment kept its indices


def test_analytic_model_refuses_what_it_does_not_model():
    ckpt = CheckpointedSequential(conv_chain(), boundaries=(3,))
    with pytest.raises(NotImplementedError, match="CheckpointedSequential"):
        analytic_training_memory(ckpt, (1, 10, 10), 4)


# ----------------------------------------------------------------------------- memory


def linear_chain(n=16, width=64, relu=False):
    if relu:
        return [nn.Sequential([nn.Linear(width, width, seed=i), nn.ReLU()]) for i in range(n)]
    return [nn.Linear(width, width, seed=i) for i in range(n)]


def test_sixteen_equal_layers_in_four_segments_keep_about_eight_activations():
    """Measured with tracemalloc: 16 Linear layers each keep one (N, D) activation. Plain
    backprop peaks at ~16 activations, 4 segments at ~7 (3 boundaries + 3 inputs of the
    recomputed segment + the gradient in flight; Chen's n/k + k = 8 counts the batch too)."""
    x = np.random.default_rng(0).standard_normal((512, 64)).astype(np.float32)
    dout = np.random.default_rng(1).standard_normal((512, 64)).astype(np.float32)
    unit = x.nbytes
    plain = measure_backprop(nn.Sequential(linear_chain()), x, dout).peak_bytes / unit
    ckpt = measure_backprop(CheckpointedSequential(linear_chain(), segments=4), x, dout)
    assert 15.5 < plain < 17.0
    assert 6.5 < ckpt.peak_bytes / unit < 8.0
    assert 5.5 < ckpt.kept_bytes / unit < 6.5  # 3 boundaries + the last segment's 3 inputs


@pytest.mark.parametrize("relu", [False, True])
def test_planner_prediction_matches_the_measured_peak(relu):
    x = np.random.default_rng(0).standard_normal((256, 32)).astype(np.float32)
    dout = np.random.default_rng(1).standard_normal((256, 32)).astype(np.float32)
    profile = profile_chain(nn.Sequential(linear_chain(12, 32, relu)), x)
    for boundaries in [(), (3, 6, 9), tuple(range(1, 12))]:
        model = CheckpointedSequential(linear_chain(12, 32, relu), boundaries=boundaries)
        measured = measure_backprop(model, x, dout).peak_bytes
        predicted = simulate_plan(profile, boundaries)
        # 6%: the model misses about 13.6 KB (small Python objects) with ReLU, the same
        # bytes as before the compiled ReLU/SGD kernels made the measured peak 11% smaller
        assert abs(predicted - measured) / measured < 0.06, (boundaries, predicted, measured)


def test_planned_model_stays_within_its_budget_when_measured():
    x, y = batch(n=16, size=10)
    chain = nn.Sequential(conv_chain(dropout=0.0))
    profile = profile_chain(chain, x)
    plain = simulate_plan(profile)
    plan = plan_checkpoints(profile, budget_bytes=int(0.6 * plain))
    model = CheckpointedSequential(conv_chain(dropout=0.0), boundaries=plan.boundaries)
    dout = np.random.default_rng(2).standard_normal((16, 10)).astype(np.float32)
    measured = measure_backprop(model, x, dout).peak_bytes
    assert measured <= 1.05 * plan.peak_bytes <= 1.05 * 0.6 * plain
    assert measured < 0.7 * measure_backprop(chain, x, dout).peak_bytes


def test_profile_reads_what_layers_keep_and_leaves_the_model_untouched():
    chain = nn.Sequential(conv_chain())
    x, _ = batch()
    before = chain.state_dict()
    rng_before = chain["1.3"].rng.bit_generator.state
    profile = profile_chain(chain, x)
    assert all(not layer.saved for _, layer in chain.named_layers())
    assert all(p.grad is None for p in chain.parameters())
    assert chain["1.3"].rng.bit_generator.state == rng_before
    assert all(np.array_equal(v, chain.state_dict()[k]) for k, v in before.items())
    assert profile.n == 10 and profile.names[0] == "0"
    assert profile.saves_input[0] and profile.input_bytes[0] == x.nbytes
    # link 1 keeps the conv input (6x10x10 floats), x_hat, inv_std, a ReLU and a dropout mask
    act = 8 * 6 * 10 * 10
    assert profile.saved_bytes[1] == 4 * act + 4 * 6 + act + act
    assert not profile.saves_input[6]  # max pooling keeps indices, not its input
    assert profile.saved_bytes[6] == 8 * 8 * 6 * 5 * 5
    assert profile.forward_cost[9] == 8 * 150 * 10  # Linear: N * in * out MACs


def test_memory_report_of_chapter_00_works_on_a_checkpointed_model():
    x, y = batch(n=16)
    plain, ckpt = nn.Sequential(conv_chain()), CheckpointedSequential(conv_chain(), segments=3)
    reports = []
    for model in (plain, ckpt):
        opt = nn.SGD(model, lr=0.1)
        measure_training_step(model, opt, x, y)
        reports.append(measure_training_step(model, opt, x, y))
    assert reports[1].peak_bytes < reports[0].peak_bytes
    assert reports[1].saved_bytes < reports[0].saved_bytes
