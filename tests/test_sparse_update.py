"""Chapter 04: sparse update -- schemes, channel selection, memory accounting, search."""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pytest

from tinyodl import nn, qas
from tinyodl import sparse_update as su
from tinyodl.sparse_update import UpdateScheme


@pytest.fixture(scope="module")
def setup():
    from tinyodl.demo import _setup

    task, model, qmodel, x_test, y_test = _setup(0, 4, 32, 40)
    return task, model, qmodel


def _grads(qmodel, x, y):
    qmodel.zero_grad()
    logits = qmodel.dequantize_output(qmodel.forward_int(qmodel.quantize_input(x), save=True))
    _, d = nn.softmax_cross_entropy(logits, y)
    qmodel.backward(d)
    return {n: c.weight_grad for n, c in qmodel.named_convs() if c.weight_grad is not None}


# ----------------------------------------------------------------------------- the scheme


def test_scheme_validates_ratios_and_drops_zero_ratios():
    with pytest.raises(ValueError, match="ratio of layer 'a' must be one of"):
        UpdateScheme(1, {"a": 0.3})
    with pytest.raises(ValueError, match="bias_depth"):
        UpdateScheme(-1)
    s = UpdateScheme(2, {"b": 0.0, "a": 0.125})
    assert s.weights == {"a": 0.125}
    assert UpdateScheme.from_dict(s.to_dict()) == s
    assert hash(s) == hash(UpdateScheme(2, {"a": 0.125}))


def test_select_channels_takes_the_largest_real_l2_norms(setup):
    _, _, qmodel = setup
    conv = dict(qmodel.named_convs())["features.9.project"]
    real = conv.weight.astype(np.float64) * conv.weight_scale[:, None, None, None]
    norms = [np.linalg.norm(real[o].ravel()) for o in range(conv.out_channels)]
    for ratio in su.RATIOS[1:]:
        k = math.ceil(ratio * conv.out_channels)
        expected = sorted(sorted(range(len(norms)), key=lambda o: -norms[o])[:k])
        assert su.select_channels(conv, ratio).tolist() == expected
    assert len(su.select_channels(conv, 0.0)) == 0
    with pytest.raises(ValueError, match="select_channels: ratio"):
        su.select_channels(conv, 0.3)


def test_apply_scheme_freezes_everything_else_and_names_unknown_layers(setup):
    _, _, qmodel = setup
    names = su.layer_names(qmodel)
    scheme = UpdateScheme(3, {"features.10": 0.25, names[-1]: 1.0})
    m = su.apply_scheme(copy.deepcopy(qmodel), scheme)
    for i, (name, conv) in enumerate(m.named_convs()):
        assert conv.bias_trainable == (i >= len(names) - 3)
        assert conv.weight_trainable == (name in scheme.weights)
    assert len(dict(m.named_convs())["features.10"].update_channels) == 40
    assert dict(m.named_convs())[names[-1]].update_channels is None
    with pytest.raises(ValueError, match=r"unknown layers \['nope'\]"):
        su.apply_scheme(copy.deepcopy(qmodel), UpdateScheme(1, {"nope": 1.0}))


@pytest.mark.parametrize("layer", ["features.9.project", "features.9.depthwise"])
def test_partial_channel_gradient_is_the_full_gradients_rows(setup, layer):
    task, _, qmodel = setup
    x, y = task.x_train[:3], task.y_train[:3]
    full = su.apply_scheme(copy.deepcopy(qmodel), UpdateScheme(0, {layer: 1.0}))
    part = su.apply_scheme(copy.deepcopy(qmodel), UpdateScheme(0, {layer: 0.25}))
    g_full, g_part = _grads(full, x, y)[layer], _grads(part, x, y)[layer]
    sel = su.select_channels(dict(qmodel.named_convs())[layer], 0.25)
    assert g_part.shape[0] == len(sel)
    np.testing.assert_allclose(g_part, g_full[sel], rtol=1e-5, atol=1e-6)


def test_sparse_training_moves_only_the_selected_rows(setup):
    task, _, qmodel = setup
    scheme = UpdateScheme(1, {"features.10": 0.125, "classifier.0": 1.0})
    model, opt = su.train(qmodel, scheme, task.x_train, task.y_train, lr=0.05, batch_size=2)
    before, after = dict(qmodel.named_convs()), dict(model.named_convs())
    sel = su.select_channels(before["features.10"], 0.125)
    rest = np.setdiff1d(np.arange(160), sel)
    w0, w1 = before["features.10"].weight, after["features.10"].weight
    assert np.array_equal(w0[rest], w1[rest])
    assert not np.array_equal(w0[sel], w1[sel])
    assert np.array_equal(before["features.10"].bias, after["features.10"].bias)  # depth 1
    assert not np.array_equal(before["classifier.0"].bias, after["classifier.0"].bias)
    for name in ("features.9.project", "features.0"):
        assert np.array_equal(before[name].weight, after[name].weight)
    assert isinstance(opt, qas.Int8Optimizer)
    assert opt.state["features.10.weight"]["momentum_buffer"].shape[0] == len(sel)


def test_float_models_get_a_gradient_mask(setup):
    task, model, _ = setup
    from tinyodl.quantization import fold_model

    f = fold_model(copy.deepcopy(model))
    su.apply_scheme(f, UpdateScheme(1, {"features.10": 0.5}))
    w = dict(f.named_layers())["features.10"].params["weight"]
    f.zero_grad()
    _, d = nn.softmax_cross_entropy(f.forward(task.x_train[:2], train=True), task.y_train[:2])
    f.backward(d)
    su.mask_gradients(f)
    rows = np.flatnonzero(np.abs(w.grad).reshape(w.grad.shape[0], -1).sum(1))
    assert set(rows) <= set(w.update_channels.tolist()) and len(rows) > 0


# ----------------------------------------------------------------------------- memory


def test_memory_cost_by_hand_for_the_classifier_and_a_depthwise_layer(setup):
    _, _, qmodel = setup
    head = UpdateScheme(1, {"classifier.0": 1.0})
    cost = su.memory_cost(qmodel, head, (1, 28, 28), batch_size=2)
    # int8 input of the classifier (2 x 160), 32-bit gradients of 10x160 + 10, no ReLU after it
    assert cost == {
        "activations": 320,
        "masks": 0,
        "gradients": 4 * 1610,
        "optimizer_state": 0,
        "total": 320 + 4 * 1610,
    }
    dw = UpdateScheme(0, {"features.9.depthwise": 0.25})
    cost = su.memory_cost(qmodel, dw, (1, 28, 28), batch_size=1, momentum=True)
    # 64 of 256 channels: their 4x4 int8 input, 64x9 gradients (+ momentum); masks of the
    # clamped layers from the depthwise conv on: 9.depthwise (256x16), 10 (160x16)
    assert cost["activations"] == 64 * 16
    assert cost["gradients"] == cost["optimizer_state"] == 4 * 64 * 9
    assert cost["masks"] == (256 * 16 + 160 * 16) // 8


def _memories(setup):
    task, _, qmodel = setup
    x, y = task.x_train[:1], task.y_train[:1]
    names = su.layer_names(qmodel)
    full = UpdateScheme(len(names), {n: 1.0 for n in names})
    from tinyodl.demo import SCHEME

    return su.measured_memory(qmodel, full, x, y), su.measured_memory(qmodel, SCHEME, x, y)


def test_sparse_scheme_measures_far_less_than_full_training(setup):
    m_full, m_sparse = _memories(setup)
    assert m_sparse["measured"] < m_full["measured"] / 3
    assert m_sparse["analytic"] < m_full["analytic"] / 3


def test_measured_memory_tracks_the_analytic_replay(setup):
    for m in _memories(setup):  # the replay models each backend's backward scratch
        assert 0.9 < m["measured"] / m["analytic"] < 1.1


def test_the_demo_scheme_fits_256kb_on_the_eager_step(setup):
    """The eager step (chapter 03's QConv.backward) too, since the compiled pointwise
    backward reads the int8 weights in place (it converted and packed them: 392 KB)."""
    from tinyodl.demo import TARGET_BYTES

    assert _memories(setup)[1]["measured"] <= TARGET_BYTES


# ----------------------------------------------------------------------------- search


def _table(qmodel, layers, depths, seed=0):
    rng = np.random.default_rng(seed)
    return su.ContributionTable(
        UpdateScheme(1, {"classifier.0": 1.0}),
        0.5,
        {k: float(rng.uniform(0, 0.1)) for k in depths},
        {n: {r: float(rng.uniform(-0.02, 0.1)) for r in su.RATIOS[1:]} for n in layers},
    )


def _brute_force(qmodel, table, layers, depths, budget):
    """Every scheme, costed one by one with memory_cost (the oracle)."""
    best = (-np.inf, None)
    for depth in [1, *depths]:
        for ratios in itertools.product(su.RATIOS, repeat=len(layers)):
            w = {"classifier.0": 1.0, **dict(zip(layers, ratios, strict=True))}
            s = UpdateScheme(depth, w)
            if su.memory_cost(qmodel, s, (1, 28, 28), 1, momentum=True)["total"] > budget:
                continue
            gain = sum(table.weight[n][r] for n, r in zip(layers, ratios, strict=True) if r)
            gain += table.bias[depth] if depth > 1 else 0.0
            if gain > best[0] + 1e-12:
                best = (gain, s)
    return best


@pytest.mark.parametrize("budget_kb", [16, 24, 48])
def test_exact_search_matches_brute_force_and_evolution_reaches_it(setup, budget_kb):
    _, _, qmodel = setup
    layers, depths = ["features.9.project", "features.9.depthwise", "features.10"], [2, 5, 9]
    table = _table(qmodel, layers, depths, seed=budget_kb)
    budget = budget_kb * 1024
    gain, _ = _brute_force(qmodel, table, layers, depths, budget)
    ex = su.exact_search(qmodel, table, budget, layers=layers, momentum=True)
    assert ex["gain"] == pytest.approx(gain)
    assert ex["cost"] <= budget
    assert ex["cost"] == su.memory_cost(qmodel, ex["scheme"], momentum=True)["total"]
    ev = su.evolutionary_search(qmodel, table, budget, layers=layers, momentum=True, seed=1)
    assert ev["cost"] <= budget
    assert ev["gain"] == pytest.approx(gain)  # a 500-scheme space: evolution finds the optimum
    assert ev["evaluated"] < ex["evaluated"] * 1.0 + 1


def test_search_errors_are_clear(setup):
    _, _, qmodel = setup
    table = _table(qmodel, ["features.10"], [2])
    with pytest.raises(ValueError, match="no scheme fits 10 bytes"):
        su.exact_search(qmodel, table, 10, layers=["features.10"])
    with pytest.raises(ValueError, match="exceed max_schemes"):
        su.exact_search(qmodel, table, 10**6, layers=["features.10"], max_schemes=3)


def test_contribution_analysis_reports_gains_over_the_classifier(setup):
    task, _, qmodel = setup
    x, y = task.x_train, task.y_train
    table = su.contribution_analysis(
        qmodel,
        x,
        y,
        x,
        y,
        layers=["features.10"],
        bias_depths=[3],
        ratios=(1.0,),
        train_kwargs={"epochs": 1, "batch_size": 4, "lr": 0.01},
    )
    assert table.base_scheme == UpdateScheme(1, {"classifier.0": 1.0})
    base, _ = su.train(qmodel, table.base_scheme, x, y, epochs=1, batch_size=4, lr=0.01)
    from tinyodl.train import evaluate

    assert table.base_accuracy == pytest.approx(evaluate(base, x, y)[1])
    assert set(table.bias) == {3} and set(table.weight) == {"features.10"}
    assert -1 <= table.weight["features.10"][1.0] <= 1
    again = su.ContributionTable.from_dict(table.to_dict())
    assert again.bias == table.bias and again.weight == table.weight
