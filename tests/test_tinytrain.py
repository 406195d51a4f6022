"""Chapter 12: TinyTrain's task-adaptive selection (tinyodl.tinytrain), and its benchmark."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from tinyodl import tinytrain
from tinyodl.sparse_update import UpdateScheme, layer_names, memory_cost, n_channels


@pytest.fixture(scope="module")
def setup():
    from tinyodl.bench.engine import starting_qmodel

    task, qmodel = starting_qmodel(0, per_class=10, n_calib=64)
    return task, qmodel


def _fisher_by_hooks(qmodel, x, y):
    """Oracle: record dL/dy_q by wrapping each layer's own backward; explicit loops."""
    from tinyodl import nn

    work = copy.deepcopy(qmodel)
    seen = {}
    for name, conv in work.named_convs():
        conv.weight_trainable = conv.bias_trainable = False
        original = conv.backward

        def recorder(g, input_grad=True, conv=conv, original=original, name=name):
            seen[name] = (conv.saved["y"].copy(), np.array(g, dtype=np.float64))
            return original(g, input_grad)

        conv.backward = recorder
    logits = work.dequantize_output(work.forward_int(work.quantize_input(x), save=True))
    _, d = nn.softmax_cross_entropy(logits, y)
    work.backward(d)
    out = {}
    for name, conv in work.named_convs():
        yq, g = seen[name]
        n, f = yq.shape[:2]
        p = np.zeros(f)
        for o in range(f):
            for i in range(n):
                a = (yq[i, o].astype(np.float64) - conv.output.zero_point).ravel()
                p[o] += float(np.dot(a, g[i, o].ravel())) ** 2
        out[name] = p / (2 * n)
    return out


def test_fisher_potential_matches_a_hooked_backward(setup):
    task, qmodel = setup
    x, y = task.x_train[:6], task.y_train[:6]
    mine = tinytrain.fisher_potential(qmodel, x, y)
    oracle = _fisher_by_hooks(qmodel, x, y)
    assert list(mine) == layer_names(qmodel)
    for name in oracle:
        np.testing.assert_allclose(mine[name], oracle[name], rtol=1e-9, atol=1e-300)
    assert sum(float(v.sum()) for v in mine.values()) > 0


def test_fisher_potential_leaves_the_model_alone(setup):
    task, qmodel = setup
    before = copy.deepcopy(qmodel)
    tinytrain.fisher_potential(qmodel, task.x_train[:4], task.y_train[:4])
    for (_, a), (_, b) in zip(qmodel.named_convs(), before.named_convs(), strict=True):
        assert np.array_equal(a.weight, b.weight) and a.weight_trainable == b.weight_trainable
        assert a.weight_grad is None and not a.saved


def test_layer_scores_formula():
    fisher = {"a": np.array([1.0, 3.0]), "b": np.array([2.0])}
    stats = {"a": {"params": 10, "macs": 100}, "b": {"params": 5, "macs": 400}}
    scores = tinytrain.layer_scores(fisher, stats)
    assert scores["a"] == pytest.approx(4.0 / ((10 / 10) * (100 / 400)))  # 16
    assert scores["b"] == pytest.approx(2.0 / ((5 / 10) * (400 / 400)))  # 4


def test_layer_stats_counts_macs(setup):
    _, qmodel = setup
    stats = tinytrain.layer_stats(qmodel, (1, 28, 28))
    assert stats["features.0"] == {"params": 16 * 9, "macs": 16 * 14 * 14 * 9}
    assert stats["features.3.depthwise"]["macs"] == 16 * 14 * 14 * 9
    assert stats["classifier.0"] == {"params": 1600, "macs": 1600}


@pytest.mark.parametrize("budget", [16 * 1024, 64 * 1024])
def test_select_fits_the_budget_and_chooses_by_fisher(setup, budget):
    task, qmodel = setup
    x, y = task.x_train, task.y_train
    scheme = tinytrain.select(qmodel, x, y, budget)
    assert isinstance(scheme, UpdateScheme)
    assert memory_cost(qmodel, scheme, (1, 28, 28), 1)["total"] <= budget
    assert scheme.weights["classifier.0"] == 1.0 and len(scheme.weights) > 1
    fisher = tinytrain.fisher_potential(qmodel, x, y)
    convs = dict(qmodel.named_convs())
    for name, r in scheme.weights.items():
        if r < 1:
            ch = np.asarray(scheme.channels[name])
            assert len(ch) == n_channels(convs[name].out_channels, r)
            rest = np.setdiff1d(np.arange(convs[name].out_channels), ch)
            assert fisher[name][ch].min() >= fisher[name][rest].max()
    # the highest-scoring layer that fits alone is chosen first
    ranked = sorted(layer_names(qmodel)[:-1], key=lambda n: -scheme.scores[n])
    assert ranked[0] in scheme.weights
    json.dumps(scheme.to_dict())  # plain data


def test_select_errors(setup):
    task, qmodel = setup
    with pytest.raises(ValueError, match="classifier alone needs .* budget of 100"):
        tinytrain.select(qmodel, task.x_train, task.y_train, 100)
    with pytest.raises(ValueError, match="labels"):
        tinytrain.select(qmodel, task.x_train[:3], task.y_train[:2], 10**6)
    with pytest.raises(TypeError, match="QuantizedModel"):
        tinytrain.select(task.pretrained(), task.x_train, task.y_train, 10**6)


def test_train_updates_only_the_selected_channels(setup):
    task, qmodel = setup
    scheme = tinytrain.TinyTrainScheme(
        1, {"classifier.0": 1.0, "features.10": 0.25}, channels={"features.10": (3, 7, 8)}
    )
    # features.10 has 160 channels: ratio 1/4 is 40, but explicit channels win
    model, plan = tinytrain.train(qmodel, scheme, task.x_train[:20], task.y_train[:20], lr=0.05)
    before, after = dict(qmodel.named_convs()), dict(model.named_convs())
    changed = np.flatnonzero(
        (before["features.10"].weight != after["features.10"].weight).reshape(160, -1).any(axis=1)
    )
    assert set(changed) <= {3, 7, 8} and len(changed) > 0
    assert np.array_equal(before["features.9.project"].weight, after["features.9.project"].weight)
    assert plan.updates["features.10"].channels.tolist() == [3, 7, 8]


def test_bench_engine_quick(tmp_path):
    from tinyodl.cli import main

    path = tmp_path / "engine.json"
    args = ["bench", "engine", "--quick", "--skip-selection", "--no-progress", "--json", str(path)]
    assert main(args) == 0
    doc = json.loads(path.read_text())
    assert set(doc) >= {"machine", "command", "rows", "summary"}
    configs = {r["config"] for r in doc["rows"]}
    assert configs == {"full", "full_reordered", "sparse", "sparse_reordered"}
    assert doc["summary"]["max_abs_plan_error"] < 0.10
    ratios = doc["summary"]["step_peak_ratios"]
    assert ratios["full_over_full_reordered"] > 1.5  # reordering frees every gradient early
    assert ratios["full_over_sparse_reordered"] > ratios["full_over_sparse"]
