"""The course models: parameter counts from the papers, shapes, seeds, gradients."""

from __future__ import annotations

import numpy as np
import pytest

from tinyodl import models, nn


def test_mlp_2nn_has_the_fedavg_parameter_count():
    model = models.mlp_2nn(seed=0)
    assert model.num_params() == 199_210  # McMahan et al. 2017
    assert model.forward(np.zeros((2, 1, 28, 28))).shape == (2, 10)
    assert model.forward(np.zeros((2, 784))).shape == (2, 10)


def test_cnn_mcmahan_has_the_fedavg_parameter_count():
    model = models.cnn_mcmahan(seed=0)
    assert model.num_params() == 1_663_370  # McMahan et al. 2017, same padding
    assert model.forward(np.zeros((2, 1, 28, 28))).shape == (2, 10)


def test_lenet5_parameter_count_and_shape():
    model = models.lenet5(seed=0)
    # C1 6*(25+1), C3 16*(6*25+1), F5 120*(400+1), F6 84*(120+1), output 10*(84+1)
    assert model.num_params() == 6 * 26 + 16 * 151 + 120 * 401 + 84 * 121 + 10 * 85
    assert model.forward(np.zeros((2, 1, 28, 28))).shape == (2, 10)


@pytest.mark.parametrize("size, channels", [(28, 1), (32, 3)])
def test_mcunet_tiny_shapes(size, channels):
    model = models.mcunet_tiny(seed=0, input_size=size, in_channels=channels, num_classes=7)
    assert 50_000 <= model.num_params() <= 150_000
    assert model.forward(np.zeros((2, channels, size, size)), train=False).shape == (2, 7)
    rows = model.describe((1, channels, size, size))
    assert rows[-1]["output_shape"] == (1, 7)
    assert sum(isinstance(m, nn.InvertedResidual) for _, m in model.named_layers()) >= 4


@pytest.mark.parametrize("builder", [models.mlp_2nn, models.cnn_mcmahan, models.lenet5])
def test_seeds_reproduce_and_differ(builder):
    a, b, c = builder(seed=1), builder(seed=np.random.default_rng(1)), builder(seed=2)
    va, vb, vc = (nn.parameters_to_vector(m) for m in (a, b, c))
    np.testing.assert_array_equal(va, vb)
    assert not np.array_equal(va, vc)
    assert a.names() == ["features", "classifier"]


@pytest.mark.parametrize("builder", [models.mlp_2nn, models.lenet5])  # cnn: see torch test
def test_whole_models_gradcheck(builder):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1, 28, 28))
    errors = nn.check_layer_gradients(builder(seed=0), x, num_checks=8)
    assert len(errors) == 1 + len(builder().parameters())
    assert max(errors.values()) < 1e-5, errors


def test_mcunet_tiny_input_gradient_gradcheck():
    model = models.mcunet_tiny(seed=0, input_size=8, in_channels=1, num_classes=3)
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8))
    errors = nn.check_layer_gradients(model.freeze(), x, train=False)
    assert set(errors) == {"x"} and errors["x"] < 1e-6


def test_a_few_sgd_steps_reduce_the_loss():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 16)
    model = models.mlp_2nn(seed=0)
    opt = nn.SGD(model, lr=0.05, momentum=0.9)
    losses = []
    for _ in range(10):
        loss, d = nn.softmax_cross_entropy(model.forward(x), y)
        model.zero_grad()
        model.backward(d)
        opt.step()
        losses.append(loss)
    assert losses[-1] < 0.5 * losses[0]
