"""Greedy layer-wise training (chapter 05): frozen prefixes, heads, stages, measured memory."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyodl import layerwise as L
from tinyodl import nn
from tinyodl.data import load_mnist, to_float
from tinyodl.memory import (
    analytic_training_memory,
    measure_peak,
    measure_training_step,
)

SHAPE = (1, 28, 28)


def small_blocks(seed=0):
    return L.conv_blocks((8, 8, 8), (2, 2, 1), seed=seed)


@pytest.fixture(scope="module")
def mnist():
    images, labels = load_mnist("train")
    keep = np.random.default_rng(0).permutation(len(images))[:600]
    return to_float(images[keep]), labels[keep].astype(np.int64)


def batch(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, *SHAPE), dtype=np.float32), rng.integers(0, 10, n)


# ----------------------------------------------------------------------------- Frozen


def test_frozen_runs_the_body_as_inference_and_keeps_nothing():
    blocks = small_blocks()
    body = nn.Sequential(blocks)
    x, _ = batch()
    body.train()
    frozen = L.Frozen(body)
    y = frozen.forward(x, train=True)  # the model trains; the frozen part does not
    assert np.array_equal(y, body.forward(x, train=False))
    frozen.forward(x)
    assert not any(layer.saved for _, layer in frozen.named_layers())
    assert all(not p.trainable for p in body.parameters())
    dx = frozen.backward(np.ones_like(y))
    assert dx.shape == x.shape and not dx.any()
    assert dx.strides == (0, 0, 0, 0)  # a broadcast zero: no memory


def test_frozen_forward_retains_only_its_output():
    body = nn.Sequential(small_blocks())
    x, _ = batch(64)
    frozen = L.Frozen(body)
    frozen.forward(x)
    plain = measure_peak(body.forward, x, False)
    kept = measure_peak(frozen.forward, x)
    out = kept.result.nbytes
    # the output and small objects (one-off interpreter caches, a few KB when other tests ran
    # first in the process), nothing else: any kept activation would be >= 100 KB here
    assert kept.retained_bytes < out + 16384
    assert plain.retained_bytes > out + 64 * 8 * 14 * 14  # plain layers keep masks


def test_stage_gradients_equal_a_plain_model_with_a_frozen_prefix():
    blocks, heads = small_blocks(), L.heads_for(small_blocks(), SHAPE, seed=1)
    x, y = batch()
    stage = L.stage_model(blocks, heads, 2)
    _, d = nn.softmax_cross_entropy(stage.forward(x), y)
    stage.backward(d)
    ref_blocks, ref_heads = small_blocks(), L.heads_for(small_blocks(), SHAPE, seed=1)
    for b in ref_blocks[:2]:
        b.eval().freeze()
    ref = nn.Sequential([*ref_blocks, ref_heads[2]])
    _, d_ref = nn.softmax_cross_entropy(ref.forward(x), y)
    ref.backward(d_ref)
    assert np.array_equal(d, d_ref)
    got = dict(stage.named_parameters())
    for name, p in ref.named_parameters():
        local = {"2": "block", "3": "head"}.get(name.split(".")[0])
        if local is None:
            assert p.grad is None
            continue
        q = got[".".join([local, *name.split(".")[1:]])]
        assert np.array_equal(p.grad, q.grad), name


# ----------------------------------------------------------------------------- architecture


def test_conv_blocks_are_equal_blocks():
    blocks = L.conv_blocks()
    shape = (2, *SHAPE)
    for block in blocks:
        shape = block.output_shape(shape)
        assert shape == (2, 32, 14, 14)
    params = 32 * 9 + 3 * 32 * 32 * 9 + 4 * 2 * 32  # convs without bias, BN gamma/beta
    assert sum(b.num_params() for b in blocks) == params
    with pytest.raises(ValueError, match="same non-zero length"):
        L.conv_blocks((8, 8), (1,))


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 5), st.integers(2, 30), st.integers(2, 30))
def test_auxiliary_head_pools_any_map_to_two_by_two(c, h, w):
    head = L.auxiliary_head((c, h, w), num_classes=7)
    assert head.output_shape((3, c, h, w)) == (3, 7)
    pool = head[0].output_shape((3, c, h, w))
    assert pool == (3, c, 2, 2)


def test_auxiliary_head_variants_and_errors():
    assert L.auxiliary_head((160,)).output_shape((2, 160)) == (2, 10)
    mlp = L.auxiliary_head((8, 7, 7), hidden=32)
    assert [type(layer).__name__ for layer in mlp] == [
        "AvgPool2d", "Flatten", "Linear", "ReLU", "Linear"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="at least 2x2"):
        L.auxiliary_head((8, 1, 5))
    with pytest.raises(ValueError, match=r"expected \(C, H, W\) or \(F,\)"):
        L.auxiliary_head((8, 5))


def test_stage_model_checks_its_arguments():
    blocks = small_blocks()
    with pytest.raises(ValueError, match="stage 3 of 3 blocks"):
        L.stage_model(blocks, L.heads_for(blocks, SHAPE), 3)
    with pytest.raises(ValueError, match="with 2 heads"):
        L.stage_model(blocks, L.heads_for(blocks, SHAPE)[:2], 0)


# ----------------------------------------------------------------------------- training


def test_greedy_training_trains_one_block_at_a_time(mnist):
    x, y = mnist
    blocks, heads = small_blocks(), L.heads_for(small_blocks(), SHAPE, seed=1)
    snapshots = []

    def after(stage, result):
        snapshots.append([b.state_dict() for b in blocks])

    result = L.greedy_layerwise_fit(
        blocks, heads, x, y, epochs=2, batch_size=32, seed=0, lr=0.2,
        x_val=x[:200], y_val=y[:200], progress=False, callback=after,
    )  # fmt: skip
    # a block (weights *and* batchnorm statistics) never changes after its own stage
    for j in range(len(blocks)):
        for later in snapshots[j:]:
            for key, value in snapshots[j][j].items():
                assert np.array_equal(value, later[j][key]), (j, key)
    # ... and does not change before it either
    fresh = small_blocks()
    for j in range(1, len(blocks)):
        for key, value in fresh[j].state_dict().items():
            assert np.array_equal(snapshots[j - 1][j][key], value), (j, key)
    assert [s.stage for s in result.stages] == [0, 1, 2]
    for s in result.stages:  # every stage learns: its loss goes down
        assert np.mean(s.history.step_loss[-5:]) < 0.95 * np.mean(s.history.step_loss[:5])
        assert 0.0 <= s.val_accuracy <= 1.0
    model = result.model
    assert model["classifier"] is heads[-1] and model["features.block1"] is blocks[1]
    assert not model.training and all(p.trainable for p in model.parameters())
    assert result.stages[1].trainable_params == blocks[1].num_params() + heads[1].num_params()


def test_greedy_training_needs_one_head_per_block(mnist):
    x, y = mnist
    with pytest.raises(ValueError, match="one head per block"):
        L.greedy_layerwise_fit(small_blocks(), [], x, y, epochs=1, batch_size=8, seed=0)


def test_head_only_training_leaves_the_body_alone(mnist):
    x, y = mnist
    body = nn.Sequential(small_blocks())
    before = body.state_dict()
    head = L.auxiliary_head(body.output_shape((1, *SHAPE))[1:])
    model, history = L.head_only_fit(
        body, head, x, y, epochs=1, batch_size=32, seed=0, progress=False
    )
    assert all(np.array_equal(v, body.state_dict()[k]) for k, v in before.items())
    assert history.step_loss[-1] < history.step_loss[0]
    assert model["head"] is head


def test_recalibrated_batchnorm_averages_the_batch_statistics(mnist):
    x, _ = mnist
    block = L.conv_blocks((4,), (1,), seed=0)[0]
    L.recalibrate_batchnorm(block, x[:90], batch_size=30)
    assert not any(layer.saved for _, layer in block.named_layers())
    conv, bn = block[0], block[1]
    means = [conv.forward(x[i : i + 30]).mean(axis=(0, 2, 3)) for i in (0, 30, 60)]
    assert np.allclose(bn.buffers["running_mean"], np.mean(means, axis=0), rtol=1e-5)
    assert bn.momentum == 0.1 and not block.training


def test_pretrained_body_without_the_shipped_model_uses_other_digits(mnist):
    x, y = mnist
    body, text = L.pretrained_body(x, y, epochs=1, batch_size=32, use_shipped=False, progress=False)
    assert "digits 0,1,2,3,4" in text and "pretrained here" in text
    assert body.output_shape((1, *SHAPE)) == (1, 32, 14, 14)


# ----------------------------------------------------------------------------- memory


def test_batchnorm_forward_memory_rule_matches_the_measurement():
    """Inference through batchnorm peaks at three input-sized arrays (no elision)."""
    x = np.random.default_rng(0).random((64, 16, 28, 28), dtype=np.float32)
    for train in (True, False):
        model = nn.Sequential([nn.BatchNorm2d(16)])
        model.forward(x, train)
        measured = measure_peak(model.forward, x, train).peak_bytes
        predicted = analytic_training_memory(model, x.shape[1:], 64, train=train)
        assert abs(predicted.phase_peaks["forward"] - measured) / measured < 0.02


def test_one_block_at_a_time_needs_less_memory_as_predicted(backend_name):
    """Measured (tracemalloc) against the analytic model, end to end and at every stage."""
    blocks = L.conv_blocks(seed=0)
    heads = L.heads_for(blocks, SHAPE, seed=1)
    x, y = batch(32)

    def measured(model):
        opt = nn.SGD(model, lr=0.0, momentum=0.9)
        measure_training_step(model, opt, x, y)
        return measure_training_step(model, opt, x, y), opt

    e2e, opt = measured(L.end_to_end_model(blocks, heads[-1]))
    predicted = analytic_training_memory(L.end_to_end_model(blocks, heads[-1]), SHAPE, 32, opt)
    assert abs(predicted.total_peak_bytes - e2e.total_peak_bytes) / e2e.total_peak_bytes < 0.05
    stages = []
    for j in range(len(blocks)):
        report, opt = measured(L.stage_model(blocks, heads, j))
        predicted = L.analytic_stage_memory(blocks, heads, j, SHAPE, 32, opt)
        error = (predicted.total_peak_bytes - report.total_peak_bytes) / report.total_peak_bytes
        assert abs(error) < 0.05, (j, error)
        stages.append(report)
    # The numpy backend's whole-batch im2col scratch (one conv's worth, needed by every
    # stage too) takes a larger share of its peak, so the saving is smaller there.
    share = 0.7 if backend_name == "cython" else 0.85
    assert max(s.total_peak_bytes for s in stages) < share * e2e.total_peak_bytes
    # saved activations: one block (and a head) instead of four
    assert max(s.saved_new_bytes for s in stages) < 0.35 * e2e.saved_new_bytes


def test_frozen_mobilenet_style_body_feeds_a_linear_head():
    """The shipped pretrained model is an mcunet_tiny: its features end in a (N, 160) vector."""
    from tinyodl import models

    body = models.mcunet_tiny(seed=0)["features"]
    x, y = batch(8)
    head = L.auxiliary_head(body.output_shape((1, *SHAPE))[1:])
    assert [type(layer).__name__ for layer in head] == ["Linear"]
    model = nn.Sequential({"frozen": L.Frozen(body), "head": head})
    before = body.state_dict()
    opt = nn.SGD(model, lr=0.1)
    _, d = nn.softmax_cross_entropy(model.forward(x), y)
    model.backward(d)
    opt.step()
    assert all(np.array_equal(v, body.state_dict()[k]) for k, v in before.items())
    assert head[0].params["weight"].grad is not None
    assert not any(layer.saved for _, layer in body.named_layers())
