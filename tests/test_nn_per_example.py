"""Per-example gradients (DP-SGD): right, or refused with a clear error.

A batchnorm in training mode normalises each example with statistics of the whole batch, so
one example's gradient depends on the others: ``backward(per_example=True)`` must refuse it
(naming the layer) before touching any gradient. In evaluation mode batchnorm is a fixed
per-channel affine map and per-example gradients are well defined for every parameter.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

from tinyodl import models, nn


def _data(n: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, 28, 28))
    return x, rng


def _small_bn_model() -> nn.Sequential:
    return nn.Sequential(
        {
            "conv": nn.Conv2d(2, 4, 3, padding=1, seed=1),
            "bn": nn.BatchNorm2d(4),
            "act": nn.ReLU(),
            "dw": nn.DepthwiseConv2d(4, 3, padding=1, seed=2, channel_multiplier=2),
            "bn2": nn.BatchNorm2d(8),
            "pool": nn.GlobalAvgPool(),
            "fc": nn.Linear(8, 3, seed=3),
            "bn1d": nn.BatchNorm1d(3),
        }
    )


def _settle_statistics(model, x) -> None:
    """Move the running statistics away from (0, 1) with two training-mode passes."""
    model.train()
    for _ in range(2):
        model.forward(x)
        model.backward(np.zeros(model.forward(x).shape))  # clear the saved tensors
    model.zero_grad(set_to_none=True)


def test_training_mode_batchnorm_is_refused_before_any_gradient_is_touched():
    model = models.mcunet_tiny(seed=0).astype("float64")
    x, rng = _data()
    out = model.forward(x)
    dout = rng.standard_normal(out.shape)
    with pytest.raises(nn.PerExampleGradientError, match=r"BatchNorm2d 'features\.1'.*eval"):
        model.backward(dout, per_example=True)
    assert all(p.grad is None and p.grad_sample is None for p in model.parameters())
    dx = model.backward(dout)  # the forward's saved tensors are intact: a plain backward works
    assert dx.shape == x.shape


def test_refusal_is_a_backward_error_and_names_a_nested_layer():
    model = _small_bn_model()
    model.eval()
    model["bn2"].train()  # only this one mixes the examples
    x = np.random.default_rng(0).standard_normal((4, 2, 5, 5)).astype(np.float32)
    out = model.forward(x)
    with pytest.raises(nn.BackwardError, match="'bn2'"):
        model.backward(np.ones_like(out), per_example=True)


@pytest.mark.parametrize("name", ["mcunet_tiny", "lenet5"])
def test_eval_mode_grad_samples_sum_to_the_batch_gradient_and_match_single_examples(name):
    model = getattr(models, name)(seed=0).astype("float64")
    x, rng = _data(3)
    _settle_statistics(model, x)
    model.eval()
    out = model.forward(x)
    dout = rng.standard_normal(out.shape)
    model.backward(dout, per_example=True)
    batch = {k: (p.grad.copy(), p.grad_sample.copy()) for k, p in model.named_parameters()}
    if name == "mcunet_tiny":  # batchnorm parameters have per-example gradients too
        assert batch["features.1.weight"][1].shape == (3, 16)
    for key, (grad, sample) in batch.items():
        assert sample.shape == (3, *grad.shape), key
        np.testing.assert_allclose(sample.sum(axis=0), grad, rtol=1e-10, atol=1e-12, err_msg=key)
    for i in range(3):  # the per-example gradient is the gradient of that example alone
        model.zero_grad(set_to_none=True)
        model.forward(x[i : i + 1])
        model.backward(dout[i : i + 1])
        for key, p in model.named_parameters():
            np.testing.assert_allclose(
                batch[key][1][i], p.grad, rtol=1e-9, atol=1e-12, err_msg=f"{key}, example {i}"
            )


def test_a_frozen_statistics_batchnorm_inside_a_training_model_is_accepted():
    model = _small_bn_model().astype("float64")
    x = np.random.default_rng(1).standard_normal((5, 2, 6, 6))
    _settle_statistics(model, x)
    model.train()
    for name in ("bn", "bn2", "bn1d"):
        model[name].eval()  # fine-tuning with fixed statistics, as DP-SGD needs
    model.forward(x)
    model.backward(np.ones((5, 3)), per_example=True)
    gamma = model["bn"].params["weight"]
    assert gamma.grad_sample.shape == (5, 4)
    np.testing.assert_allclose(gamma.grad_sample.sum(0), gamma.grad, rtol=1e-12)
    assert model["dw"].params["weight"].grad_sample.shape == (5, 8, 1, 3, 3)


def test_frozen_batchnorm_parameters_get_no_grad_sample():
    model = _small_bn_model().eval()
    model.freeze("bn")
    x = np.random.default_rng(1).standard_normal((2, 2, 6, 6)).astype(np.float32)
    model.forward(x)
    model.backward(np.ones((2, 3), np.float32), per_example=True)
    assert model["bn"].params["weight"].grad_sample is None
    assert model["bn"].params["bias"].grad_sample is None
    assert model["bn2"].params["weight"].grad_sample.shape == (2, 8)


def test_grad_samples_match_torch_example_by_example():
    torch = pytest.importorskip("torch")

    ours = _small_bn_model().astype("float64")
    x = np.random.default_rng(2).standard_normal((4, 2, 6, 6))
    _settle_statistics(ours, x)
    ours.eval()
    theirs = torch.nn.Sequential(
        OrderedDict(
            conv=torch.nn.Conv2d(2, 4, 3, padding=1),
            bn=torch.nn.BatchNorm2d(4),
            act=torch.nn.ReLU(),
            dw=torch.nn.Conv2d(4, 8, 3, padding=1, groups=4),
            bn2=torch.nn.BatchNorm2d(8),
            pool=torch.nn.AdaptiveAvgPool2d(1),
            flat=torch.nn.Flatten(),
            fc=torch.nn.Linear(8, 3),
            bn1d=torch.nn.BatchNorm1d(3),
        )
    ).double()
    theirs.load_state_dict(nn.torch_state_dict(ours), strict=True)
    theirs.eval()
    dout = np.random.default_rng(3).standard_normal((4, 3))
    ours.forward(x)
    ours.backward(dout, per_example=True)

    xt, dt = torch.from_numpy(x), torch.from_numpy(dout)
    for i in range(len(x)):  # PyTorch autograd on one example at a time
        theirs.zero_grad()
        (theirs(xt[i : i + 1]) * dt[i : i + 1]).sum().backward()
        for key, p in theirs.named_parameters():
            np.testing.assert_allclose(
                dict(ours.named_parameters())[key].grad_sample[i],
                p.grad.numpy(),
                rtol=1e-9,
                atol=1e-12,
                err_msg=f"{key}, example {i}",
            )
