"""Chapter 02: magnitude masks, masked training, the gradual schedule, channel pruning, storage.

The channel-pruning oracle: removing channels that the next layer does not read (its
input weights for them are zero) must not change the model's output. That holds through
batchnorm, depthwise convolutions, flattening and residual blocks, so it checks every
slicing rule at once.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinyodl import models, nn, pruning
from tinyodl.pruning import get_layer

SHAPE = (1, 28, 28)


def _trained_like(model, seed=0):
    """Random non-trivial batchnorm statistics, so that eval-mode checks mean something."""
    rng = np.random.default_rng(seed)
    for _, layer in model.named_layers():
        if isinstance(layer, nn.BatchNorm2d):
            c = layer.num_features
            layer.params["weight"].data[...] = rng.uniform(0.5, 1.5, c)
            layer.params["bias"].data[...] = rng.normal(0, 0.2, c)
            layer.buffers["running_mean"][...] = rng.normal(0, 0.3, c)
            layer.buffers["running_var"][...] = rng.uniform(0.5, 2, c)
    return model


# ----------------------------------------------------------------------------- magnitude masks


@pytest.mark.parametrize("s", [0.0, 0.3, 0.9])
def test_layer_masks_prune_exactly_the_smallest(s):
    model = models.lenet5(seed=1)
    masks = pruning.magnitude_masks(model, s, "layer")
    weights = pruning.prunable_weights(model)
    assert list(masks) == list(weights)
    for name, mask in masks.items():
        w = np.abs(weights[name].data)
        assert mask.shape == w.shape and mask.dtype == bool
        assert (~mask).sum() == round(s * w.size)
        if 0 < s:
            assert w[~mask].max() <= w[mask].min()  # the oracle: a threshold per layer


def test_global_masks_use_one_threshold():
    model = models.mlp_2nn(seed=0)
    masks = pruning.magnitude_masks(model, 0.8, "global")
    weights = pruning.prunable_weights(model)
    pruned = np.concatenate([np.abs(weights[n].data)[~m] for n, m in masks.items()])
    kept = np.concatenate([np.abs(weights[n].data)[m] for n, m in masks.items()])
    assert pruned.max() <= kept.min()
    total = sum(w.size for w in weights.values())
    assert pruned.size == round(0.8 * total)
    per_layer = [1 - m.mean() for m in masks.values()]
    assert max(per_layer) - min(per_layer) > 0.05  # layers end up with different sparsities


def test_apply_masks_and_sparsity():
    model = models.mlp_2nn(seed=0)
    masks = pruning.magnitude_masks(model, 0.5, "layer")
    pruning.apply_masks(model, masks)
    assert pruning.sparsity(model) == pytest.approx(0.5, abs=1e-6)
    assert pruning.sparsity(masks) == pytest.approx(0.5, abs=1e-6)
    assert all(v == pytest.approx(0.5, abs=1e-3) for v in pruning.layer_sparsities(model).values())
    with pytest.raises(ValueError, match="sparsity must be in"):
        pruning.magnitude_masks(model, 1.0)
    with pytest.raises(ValueError, match="scope"):
        pruning.magnitude_masks(model, 0.5, "net")
    with pytest.raises(KeyError, match="no parameter"):
        pruning.apply_masks(model, {"nope.weight": masks["features.1.weight"]})


def test_masked_optimizer_keeps_pruned_weights_at_zero():
    from tinyodl.train import fit

    rng = np.random.default_rng(0)
    x = rng.random((64, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    model = models.mlp_2nn(seed=0)
    masks = pruning.magnitude_masks(model, 0.7, "global")
    pruning.apply_masks(model, masks)
    before = {n: p.data.copy() for n, p in model.named_parameters()}
    opt = pruning.MaskedOptimizer(nn.SGD(model, lr=0.1, momentum=0.9, weight_decay=1e-3), masks)
    fit(model, opt, x, y, epochs=3, batch_size=16, seed=0, progress=False)
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        assert np.all(params[name].data[~mask] == 0)
        assert not np.allclose(params[name].data[mask], before[name][mask])  # the rest trains
        state = opt.state_dict()[f"{name}.momentum_buffer"]
        assert np.all(state[~mask] == 0)  # no optimizer state builds up for pruned weights
    assert opt.lr == 0.1


# ----------------------------------------------------------------------------- gradual schedule


def test_gradual_sparsity_formula():
    f = pruning.gradual_sparsity
    assert f(0, 0.9, 10, 110) == 0.0
    assert f(10, 0.9, 10, 110) == 0.0  # s_i at t_0
    assert f(110, 0.9, 10, 110) == pytest.approx(0.9)
    assert f(500, 0.9, 10, 110) == pytest.approx(0.9)
    assert f(60, 0.9, 10, 110) == pytest.approx(0.9 * (1 - 0.5**3))  # halfway: 87.5% of s_f
    assert f(69, 0.9, 10, 110, frequency=20) == f(50, 0.9, 10, 110)  # held between events
    assert f(60, 0.9, 10, 110, initial_sparsity=0.5) == pytest.approx(0.9 - 0.4 * 0.125)
    with pytest.raises(ValueError, match="end_step > begin_step"):
        f(5, 0.9, 10, 10)


@settings(max_examples=50, deadline=None)
@given(
    final=st.floats(0.05, 0.99),
    begin=st.integers(0, 100),
    length=st.integers(1, 500),
    freq=st.integers(1, 50),
)
def test_gradual_sparsity_rises_monotonically_to_the_target(final, begin, length, freq):
    values = [
        pruning.gradual_sparsity(t, final, begin, begin + length, frequency=freq)
        for t in range(begin + length + 5)
    ]
    assert all(b >= a - 1e-12 for a, b in zip(values, values[1:], strict=False))
    assert values[-1] == pytest.approx(final) and values[0] == 0.0


def test_gradual_pruner_in_fit_reaches_the_target_and_never_revives():
    from tinyodl.train import fit

    rng = np.random.default_rng(1)
    x = rng.random((96, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 96)
    model = models.mlp_2nn(seed=2)
    pruner = pruning.GradualPruner(model, 0.9, begin_step=2, end_step=20, frequency=3)
    seen = []

    def watch(step, epoch, loss):
        pruner.callback(step, epoch, loss)
        seen.append({n: m.copy() for n, m in pruner.masks.items()})

    opt = pruner.wrap(nn.SGD(model, lr=0.05, momentum=0.9))
    fit(model, opt, x, y, epochs=4, batch_size=16, seed=0, progress=False, callback=watch)
    assert pruning.sparsity(model) == pytest.approx(0.9, abs=1e-6)
    assert [s for _, s in pruner.history] == sorted(s for _, s in pruner.history)
    assert len(pruner.history) >= 5
    for earlier, later in zip(seen, seen[1:], strict=False):
        for n in earlier:
            assert not np.any(later[n] & ~earlier[n])  # a pruned weight stays pruned


@pytest.mark.slow
def test_prune_and_finetune_keeps_accuracy_on_a_learnable_task():
    from tinyodl.data import load_mnist, to_float
    from tinyodl.train import evaluate, fit

    images, labels = load_mnist("train")
    x, y = to_float(images[:2000]), labels[:2000]
    model = models.mlp_2nn(seed=0)
    fit(
        model,
        nn.SGD(model, lr=0.05, momentum=0.9),
        x[:1500],
        y[:1500],
        epochs=2,
        batch_size=32,
        seed=0,
        progress=False,
    )
    dense = evaluate(model, x[1500:], y[1500:])[1]
    pruner, _ = pruning.prune_and_finetune(
        model,
        nn.SGD(model, lr=0.05, momentum=0.9),
        x[:1500],
        y[:1500],
        final_sparsity=0.9,
        epochs=2,
        batch_size=32,
        seed=1,
    )
    assert pruning.sparsity(model) == pytest.approx(0.9, abs=1e-6)
    assert evaluate(model, x[1500:], y[1500:])[1] > dense - 0.03


# ----------------------------------------------------------------------------- channel pruning


def test_channel_groups_of_the_course_models():
    names = {
        "mlp_2nn": ["features.1", "features.3"],
        "lenet5": ["features.0", "features.3", "classifier.0", "classifier.2"],
        "cnn_mcmahan": ["features.0", "features.3", "classifier.0"],
    }
    for model_name, expected in names.items():
        groups = pruning.channel_groups(getattr(models, model_name)(seed=0), SHAPE)
        assert [g.producer for g in groups] == expected
    lenet = {g.producer: g for g in pruning.channel_groups(models.lenet5(seed=0), SHAPE)}
    assert lenet["features.3"].spatial == 25 and lenet["features.3"].consumer == "classifier.0"
    mcu = pruning.channel_groups(models.mcunet_tiny(seed=0), SHAPE)
    # the hidden width of the 6 expanding blocks, and the last 1x1 conv before the classifier
    assert [g.producer for g in mcu] == [f"features.{i}.expand" for i in range(4, 10)] + [
        "features.10"
    ]
    for g in mcu[:-1]:
        block = g.producer.rsplit(".", 1)[0]
        assert g.followers == [f"{block}.{n}" for n in ("expand_bn", "depthwise", "depthwise_bn")]
        assert g.consumer == f"{block}.project"
    assert mcu[-1].followers == ["features.11"] and mcu[-1].consumer == "classifier.0"


def _silence_channels(model, group, drop):
    """Zero the consumer's input weights of the channels ``drop`` (they are then unread)."""
    w = get_layer(model, group.consumer).params["weight"].data
    for c in drop:
        w[:, c * group.spatial : (c + 1) * group.spatial] = 0


@pytest.mark.parametrize("model_name", ["mlp_2nn", "lenet5", "mcunet_tiny"])
def test_removing_unread_channels_does_not_change_the_output(model_name):
    model = _trained_like(getattr(models, model_name)(seed=3))
    rng = np.random.default_rng(0)
    x = rng.random((8, *SHAPE)).astype(np.float32)
    plan = {}
    for g in pruning.channel_groups(model, SHAPE):
        drop = rng.choice(g.channels, size=g.channels // 2, replace=False)
        _silence_channels(model, g, drop)
        plan[g.producer] = np.setdiff1d(np.arange(g.channels), drop)
    model.eval()
    expected = model.forward(x)
    pruned = copy.deepcopy(model)
    for g in pruning.channel_groups(pruned, SHAPE):
        pruning.prune_group(pruned, g, plan[g.producer])
    assert pruned.num_params() < model.num_params()
    np.testing.assert_allclose(pruned.forward(x), expected, rtol=1e-4, atol=1e-5)
    assert pruned["features"].training is False  # modes carried over


def test_residual_blocks_keep_their_block_boundaries():
    model = _trained_like(models.mcunet_tiny(seed=0))
    pruned = pruning.channel_prune(model, 0.5, SHAPE)
    for i in range(3, 10):
        a, b = model[f"features.{i}"], pruned[f"features.{i}"]
        assert b.use_residual == a.use_residual
        assert b["project"].out_channels == a["project"].out_channels  # the residual width
        if i > 3:
            assert b["depthwise"].out_channels == a["depthwise"].out_channels // 2
            assert b["expand_bn"].num_features == b["expand"].out_channels
    x = np.random.default_rng(0).random((4, *SHAPE)).astype(np.float32)
    assert pruned.forward(x, train=True).shape == (4, 10)
    pruned.backward(np.ones((4, 10), dtype=np.float32))  # trains after pruning


def test_add_container_body_is_pruned_inside_only():
    body = nn.Sequential(
        [
            nn.Conv2d(4, 8, 3, padding=1, seed=0),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 4, 3, padding=1, seed=1),
        ]
    )
    model = nn.Sequential(
        [
            nn.Conv2d(1, 4, 3, padding=1, seed=2),
            nn.Add(body),
            nn.ReLU(),
            nn.GlobalAvgPool(),
            nn.Linear(4, 3, seed=3),
        ]
    )
    groups = pruning.channel_groups(model, (1, 6, 6))
    assert [(g.producer, g.consumer) for g in groups] == [("1.body.0", "1.body.3")]
    pruned = pruning.channel_prune(model, 0.5, (1, 6, 6))
    assert pruned["1"].body["0"].out_channels == 4 and pruned["1"].body["1"].num_features == 4
    x = np.random.default_rng(0).random((2, 1, 6, 6)).astype(np.float32)
    assert pruned.forward(x).shape == (2, 3)


def test_channel_prune_ranks_by_the_criterion_and_leaves_the_original():
    model = _trained_like(models.mcunet_tiny(seed=0))
    before = {k: v.copy() for k, v in model.state_dict().items()}
    group = pruning.channel_groups(model, SHAPE)[0]
    gamma = model[f"{group.followers[0]}"].params["weight"].data
    pruned = pruning.channel_prune(model, {group.producer: 0.75}, SHAPE, criterion="bn_gamma")
    keep = np.sort(np.argsort(-np.abs(gamma))[: group.channels // 4])
    np.testing.assert_array_equal(pruned[group.followers[0]].params["weight"].data, gamma[keep])
    w = model[group.producer].params["weight"].data.reshape(group.channels, -1)
    l1 = pruning.channel_prune(model, {group.producer: 0.75}, SHAPE, criterion="l1")
    keep_l1 = np.sort(np.argsort(-np.abs(w).sum(1))[: group.channels // 4])
    np.testing.assert_array_equal(
        l1[group.producer].params["weight"].data.reshape(len(keep_l1), -1), w[keep_l1]
    )
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_channel_pruning_errors_are_clear():
    model = models.lenet5(seed=0)
    group = pruning.channel_groups(model, SHAPE)[0]
    with pytest.raises(ValueError, match=r"keep must hold 1 to 6 channel indices"):
        pruning.prune_group(model, group, [7])
    with pytest.raises(KeyError, match="not prunable groups"):
        pruning.channel_prune(model, {"classifier.4": 0.5}, SHAPE)
    with pytest.raises(ValueError, match="must be in"):
        pruning.channel_prune(model, 1.0, SHAPE)
    with pytest.raises(ValueError, match="needs a BatchNorm2d"):
        pruning.channel_scores(model, group, "bn_gamma")


def test_count_macs_matches_hand_counts():
    # LeNet-5: 28*28*6*25 + 10*10*16*6*25 + 400*120 + 120*84 + 84*10
    assert pruning.count_macs(models.lenet5(seed=0), SHAPE) == 117_600 + 240_000 + 58_920
    assert pruning.count_macs(models.mlp_2nn(seed=0), SHAPE) == 784 * 200 + 200 * 200 + 2000
    dw = nn.Sequential([nn.DepthwiseConv2d(3, 3, padding=1, seed=0)])
    assert pruning.count_macs(dw, (3, 5, 5)) == 3 * 25 * 9
    half = pruning.channel_prune(models.lenet5(seed=0), 0.5, SHAPE)
    # 3 and 8 conv channels, 60 and 42 hidden units
    assert pruning.count_macs(half, SHAPE) == (
        28 * 28 * 3 * 25 + 10 * 10 * 8 * 3 * 25 + 200 * 60 + 60 * 42 + 42 * 10
    )


def test_inference_time_restores_every_mode():
    model = models.lenet5(seed=0)
    model["features.1"].eval()
    x = np.zeros((4, *SHAPE), dtype=np.float32)
    assert pruning.inference_time(model, x, repeats=1) > 0
    assert model.training and not model["features.1"].training and model["features.0"].training


def test_sensitivity_scan_restores_the_model():
    from tinyodl.train import predict

    model = _trained_like(models.lenet5(seed=0))
    x = np.random.default_rng(0).random((64, *SHAPE)).astype(np.float32)
    reference = predict(model, x)

    def agreement(m):
        return float(np.mean(predict(m, x) == reference))

    before = {k: v.copy() for k, v in model.state_dict().items()}
    mag = pruning.sensitivity_scan(model, agreement, [0.0, 0.5, 0.99])
    assert list(mag) == list(pruning.prunable_weights(model))
    assert all(v[0] == 1.0 for v in mag.values()) and min(v[-1] for v in mag.values()) < 1.0
    ch = pruning.sensitivity_scan(model, agreement, [0.0, 0.9], "channel", SHAPE)
    assert list(ch) == ["features.0", "features.3", "classifier.0", "classifier.2"]
    assert all(v[0] == 1.0 for v in ch.values())
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    with pytest.raises(ValueError, match="input_shape"):
        pruning.sensitivity_scan(model, agreement, [0.5], "channel")


# ----------------------------------------------------------------------------- storage

sparse_arrays = hnp.arrays(
    np.float32,
    hnp.array_shapes(min_dims=1, max_dims=4, max_side=7),
    elements=st.sampled_from([0.0, 0.0, 0.0, 1.5, -2.25, 3.0]),
)


@settings(max_examples=60, deadline=None)
@given(w=sparse_arrays)
def test_bitmask_and_csr_round_trip_with_the_stated_sizes(w):
    n, nnz = w.size, int(np.count_nonzero(w))
    bm = pruning.to_bitmask(w)
    np.testing.assert_array_equal(bm.to_dense(), w)
    assert bm.nbytes == -(-n // 8) + 4 * nnz
    csr = pruning.to_csr(w)
    np.testing.assert_array_equal(csr.to_dense().reshape(w.shape), w)
    rows = w.shape[0] if w.ndim > 1 else 1
    assert csr.nbytes == nnz * (4 + csr.col_index.itemsize) + (rows + 1) * csr.row_ptr.itemsize


def test_csr_equals_scipy():
    sparse = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(0)
    w = rng.standard_normal((20, 300)).astype(np.float32) * (rng.random((20, 300)) < 0.1)
    ours, ref = pruning.to_csr(w), sparse.csr_matrix(w)
    np.testing.assert_array_equal(ours.values, ref.data)
    np.testing.assert_array_equal(ours.col_index, ref.indices)
    np.testing.assert_array_equal(ours.row_ptr, ref.indptr)
    assert ours.col_index.dtype == np.uint16 and ours.row_ptr.dtype == np.uint16


def test_model_storage_at_90_percent():
    model = models.mlp_2nn(seed=0)
    pruning.apply_masks(model, pruning.magnitude_masks(model, 0.9, "layer"))
    rows = pruning.model_storage(model)
    total = rows[-1]
    assert total["name"] == "total" and total["sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert total["dense"] == 4 * (784 * 200 + 200 * 200 + 2000)
    assert total["bitmask"] < total["csr"] < total["dense"] / 3


def test_speedup_alternates_and_restores_modes():
    small = pruning.channel_prune(models.lenet5(seed=0), 0.5, SHAPE)
    big = models.lenet5(seed=0)
    big["features.1"].eval()
    x = np.zeros((8, *SHAPE), dtype=np.float32)
    ratio, t_big, t_small = pruning.speedup(big, small, x, rounds=2)
    assert ratio == pytest.approx(t_big / t_small) and t_big > 0 and t_small > 0
    assert big.training and not big["features.1"].training and small.training
