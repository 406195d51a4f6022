"""Sequential: names, editing, state dicts, freezing, describe, per-example gradients."""

from __future__ import annotations

import numpy as np
import pytest

from tinyodl import nn


def small_cnn(seed: int = 0) -> nn.Sequential:
    features = nn.Sequential(
        [
            nn.Conv2d(1, 3, 3, padding=1, bias=False, seed=seed),  # BN follows: no bias
            nn.BatchNorm2d(3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        ]
    )
    classifier = nn.Sequential([nn.Linear(12, 4, seed=seed + 1)])
    return nn.Sequential({"features": features, "classifier": classifier})


def test_dotted_names_and_layer_names():
    model = small_cnn()
    names = [n for n, _ in model.named_parameters()]
    assert names == [
        "features.0.weight", "features.1.weight", "features.1.bias",
        "classifier.0.weight", "classifier.0.bias",
    ]  # fmt: skip
    assert [n for n, _ in model.named_buffers()] == [
        "features.1.running_mean",
        "features.1.running_var",
    ]
    layers = dict(model.named_layers())
    assert list(layers)[:3] == ["features", "features.0", "features.1"]
    assert layers["features.0"].name == "features.0"
    assert model.num_params() == 3 * 9 + 6 + 12 * 4 + 4
    assert len(model.parameters()) == 5


def test_whole_model_gradients_and_input_gradient(backend_name):
    model = small_cnn()
    x = np.random.default_rng(0).standard_normal((3, 1, 4, 4))
    errors = nn.check_layer_gradients(model, x)
    assert set(errors) == {"x", *(n for n, _ in model.named_parameters())}
    assert max(errors.values()) < 1e-5, errors


def test_indexing_and_editing():
    model = small_cnn()
    feats = model["features"]
    assert model[0] is feats and model[-1] is model["classifier"]
    assert model["features.2"] is feats[2]
    view = feats[1:3]
    assert isinstance(view, nn.Sequential) and view.names() == ["1", "2"]
    assert feats[1].name == "features.1"  # slicing does not rename the shared layers

    old = model.replace("features.2", nn.ReLU6())
    assert isinstance(old, nn.ReLU) and isinstance(feats[2], nn.ReLU6)
    assert feats[2].name == "features.2"
    feats[3] = nn.AvgPool2d(2)
    feats.insert(0, nn.Identity(), name="pre")
    assert feats.names() == ["pre", "0", "1", "2", "3", "4"]
    model["classifier"].append(nn.ReLU())
    assert model["classifier"].names() == ["0", "1"]
    assert model.forward(np.zeros((2, 1, 4, 4))).shape == (2, 4)
    del feats["pre"]
    assert len(feats) == 5

    with pytest.raises(KeyError, match=r"no child 'nope'; children are \['features'"):
        model["nope"]
    with pytest.raises(IndexError, match="index 9 out of range"):
        model[9]
    with pytest.raises(ValueError, match="already a child named '0'"):
        feats.insert(0, nn.ReLU(), name="0")
    with pytest.raises(TypeError, match="expected a Layer"):
        nn.Sequential([42])


def test_config_rebuilds_the_architecture():
    model = small_cnn(seed=3)
    clone = nn.Sequential(**model.config())
    assert clone.describe((1, 1, 4, 4)) == model.describe((1, 1, 4, 4))
    block = nn.InvertedResidual(4, 8, 2, 3, seed=5)
    clone = nn.build_layer(nn.layer_spec(block))
    assert isinstance(clone, nn.InvertedResidual) and clone.config() == block.config()
    for (_, a), (_, b) in zip(block.named_parameters(), clone.named_parameters(), strict=True):
        np.testing.assert_array_equal(a.data, b.data)


def test_state_dict_round_trip():
    model, other = small_cnn(seed=0), small_cnn(seed=10)
    model.forward(np.random.default_rng(0).standard_normal((4, 1, 4, 4)))  # moves BN stats
    state = model.state_dict()
    assert all(type(v) is np.ndarray for v in state.values())
    assert "features.1.running_var" in state
    other.load_state_dict(state)
    for key, value in other.state_dict().items():
        np.testing.assert_array_equal(value, state[key])
    state["classifier.0.bias"][:] = 99  # a state dict is a copy
    assert not np.any(model["classifier.0"].params["bias"].data == 99)
    x = np.ones((2, 1, 4, 4))
    np.testing.assert_array_equal(model.forward(x, False), other.forward(x, False))


def test_load_state_dict_errors():
    model = small_cnn()
    state = model.state_dict()
    del state["features.1.bias"]
    state["extra"] = np.zeros(1)
    with pytest.raises(KeyError, match=r"missing keys \['features.1.bias'\], unexpected.*extra"):
        model.load_state_dict(state)
    model.load_state_dict(state, strict=False)
    state = model.state_dict()
    state["classifier.0.weight"] = np.zeros((5, 12))
    with pytest.raises(KeyError, match=r"'classifier.0.weight' expected shape \(4, 12\), got"):
        model.load_state_dict(state)


def test_freeze_and_unfreeze_by_name_prefix_kind_and_predicate():
    model = small_cnn()

    def trainable():
        return {n for n, p in model.named_parameters() if p.trainable}

    everything = trainable()
    model.freeze("features")
    assert trainable() == {"classifier.0.weight", "classifier.0.bias"}
    model.unfreeze()
    model.freeze(kind="weight")
    assert trainable() == {n for n in everything if n.endswith("bias")}
    model.unfreeze().freeze("classifier.0.bias", lambda name, layer: isinstance(layer, nn.Conv2d))
    assert trainable() == {"features.1.weight", "features.1.bias", "classifier.0.weight"}
    with pytest.raises(KeyError, match=r"freeze: no layer or parameter named \['feature'\]"):
        model.freeze("feature")
    with pytest.raises(ValueError, match="kind must be 'weight', 'bias' or None"):
        model.freeze(kind="gamma")


def test_frozen_parameters_get_no_gradient_in_a_model():
    model = small_cnn()
    model.forward(np.ones((2, 1, 4, 4)))
    model.backward(np.ones((2, 4)))
    assert model["features.0"].params["weight"].grad is not None
    model.freeze("features.0")
    assert model["features.0"].params["weight"].grad is None
    model.forward(np.ones((2, 1, 4, 4)))
    assert "x" not in model["features.0"].saved
    model.backward(np.ones((2, 4)))
    assert all(p.grad is None for p in model["features.0"].parameters())


def test_describe_rows():
    model = nn.Sequential(
        {"features": nn.Sequential([nn.Conv2d(1, 4, 3, 2, 1), nn.InvertedResidual(4, 4, 1, 2)])}
    )
    rows = {r["name"]: r for r in model.describe((2, 1, 9, 9))}
    conv = rows["features.0"]
    assert conv["type"] == "Conv2d" and conv["leaf"] and conv["children"] == []
    assert conv["input_shape"] == (2, 1, 9, 9) and conv["output_shape"] == (2, 4, 5, 5)
    assert conv["num_params"] == 4 * 9 + 4 and conv["config"]["stride"] == (2, 2)
    block = rows["features.1"]
    assert not block["leaf"] and "depthwise" in block["children"]
    assert rows["features.1.expand"]["output_shape"] == (2, 8, 5, 5)
    assert rows["features"]["num_params"] == model.num_params()
    leaves = sum(r["num_params"] for r in rows.values() if r["leaf"])
    assert leaves == model.num_params()
    with pytest.raises(ValueError, match=r"Conv2d 'features.0': expected input \(N, 1, H, W\)"):
        model.describe((2, 3, 9, 9))


def test_parameters_to_vector_round_trip():
    model = small_cnn()
    vec = nn.parameters_to_vector(model)
    assert vec.shape == (model.num_params(),)
    nn.vector_to_parameters(vec * 0 + 1, model)
    assert all(np.all(p.data == 1) for p in model.parameters())
    nn.vector_to_parameters(vec, model)
    np.testing.assert_array_equal(nn.parameters_to_vector(model), vec)
    model.freeze("features")
    assert nn.parameters_to_vector(model, trainable_only=True).size == 12 * 4 + 4
    with pytest.raises(ValueError, match=r"expected a 1-D vector of \d+ values, got shape \(3,\)"):
        nn.vector_to_parameters(np.zeros(3), model)


def _dp_model(seed=0):
    return nn.Sequential(
        [
            nn.Conv2d(2, 3, 3, 2, 1, seed=seed),
            nn.ReLU(),
            nn.DepthwiseConv2d(3, 3, 1, 1, seed=seed + 1),
            nn.Flatten(),
            nn.Linear(12, 3, seed=seed + 2),
        ]
    ).astype(np.float64)


def test_per_example_gradients_sum_to_batch_and_match_single_examples(backend_name):
    model = _dp_model()
    model[0].freeze(kind="bias")
    rng = np.random.default_rng(0)
    x, dout = rng.standard_normal((5, 2, 4, 4)), rng.standard_normal((5, 3))
    model.forward(x)
    model.backward(dout, per_example=True)
    named = dict(model.named_parameters())
    assert named["0.bias"].grad_sample is None and named["0.bias"].grad is None
    samples = {n: p.grad_sample.copy() for n, p in named.items() if p.trainable}
    for name, g in samples.items():
        assert g.shape == (5, *named[name].shape)
        np.testing.assert_allclose(g.sum(0), named[name].grad, atol=1e-12)
    for i in range(5):
        model.zero_grad(set_to_none=True)
        model.forward(x[i : i + 1])
        model.backward(dout[i : i + 1])
        for name, g in samples.items():
            np.testing.assert_allclose(g[i], named[name].grad, atol=1e-12)
