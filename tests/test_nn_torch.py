"""PyTorch autograd as an oracle for layers, whole models and optimizers."""

from __future__ import annotations

import numpy as np
import pytest

from tinyodl import models, nn

pytestmark = pytest.mark.torch


def _t(a):
    import torch

    return torch.tensor(np.asarray(a), dtype=torch.float64)


def _compare_layer(ours, theirs, x, rng, train=True):
    """Same forward, input gradient and parameter gradients (float64)."""
    import torch

    ours.astype(np.float64)
    theirs.double().train(train)
    xt = _t(x).requires_grad_(True)
    yt = theirs(xt)
    y = ours.forward(x, train)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-10)
    dout = rng.standard_normal(y.shape)
    yt.backward(_t(dout))
    dx = ours.backward(dout)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-9, atol=1e-10)
    for name, p in ours.named_parameters():
        expected = dict(theirs.named_parameters())[name].grad.numpy()
        np.testing.assert_allclose(p.grad, expected, rtol=1e-9, atol=1e-10, err_msg=name)
    return torch


def _copy_into_torch(ours, theirs):
    import torch

    with torch.no_grad():
        for name, p in ours.named_parameters():
            dict(theirs.named_parameters())[name].copy_(_t(p.data))


def test_linear_matches_torch(rng):
    import torch

    ours = nn.Linear(5, 3, seed=0)
    theirs = torch.nn.Linear(5, 3)
    _copy_into_torch(ours, theirs)
    _compare_layer(ours, theirs, rng.standard_normal((4, 5)), rng)


@pytest.mark.parametrize("groups", [1, 2])
def test_conv_matches_torch(backend_name, rng, groups):
    import torch

    ours = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=groups, seed=0)
    theirs = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=groups)
    _copy_into_torch(ours, theirs)
    _compare_layer(ours, theirs, rng.standard_normal((2, 4, 7, 7)), rng)


@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_matches_torch(rng, train):
    import torch

    ours, theirs = nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3).double()
    ours.params["weight"].data[:] = rng.uniform(0.5, 2, 3)
    ours.params["bias"].data[:] = rng.standard_normal(3)
    _copy_into_torch(ours, theirs)
    x = rng.standard_normal((4, 3, 3, 3)) * 2 + 1
    if not train:  # first move the running statistics with one training step
        ours.astype(np.float64).forward(x)
        theirs(_t(x))
    _compare_layer(ours, theirs, x, rng, train)
    np.testing.assert_allclose(ours.buffers["running_mean"], theirs.running_mean.numpy())
    np.testing.assert_allclose(ours.buffers["running_var"], theirs.running_var.numpy())


@pytest.mark.parametrize(
    "ours, make",
    [
        (lambda: nn.MaxPool2d(3, 2, 1), lambda t: t.nn.MaxPool2d(3, 2, 1)),
        (lambda: nn.AvgPool2d(2), lambda t: t.nn.AvgPool2d(2)),
        (nn.ReLU6, lambda t: t.nn.ReLU6()),
        (nn.GlobalAvgPool, lambda t: t.nn.Sequential(t.nn.AdaptiveAvgPool2d(1), t.nn.Flatten())),
    ],
)
def test_parameter_free_layers_match_torch(backend_name, rng, ours, make):
    import torch

    x = rng.uniform(-3, 9, (2, 3, 6, 6))
    _compare_layer(ours(), make(torch), x, rng)


def test_cnn_mcmahan_forward_backward_matches_torch(rng):
    import torch
    from torch import nn as tnn

    ours = models.cnn_mcmahan(seed=0).astype(np.float64)
    theirs = tnn.Sequential(
        tnn.Conv2d(1, 32, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Conv2d(32, 64, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(),
        tnn.Linear(3136, 512), tnn.ReLU(), tnn.Linear(512, 10),
    ).double()  # fmt: skip
    torch_params = list(theirs.parameters())
    with torch.no_grad():
        for tp, p in zip(torch_params, ours.parameters(), strict=True):
            tp.copy_(_t(p.data))
    x, labels = rng.standard_normal((3, 1, 28, 28)), np.array([1, 7, 3])
    xt = _t(x).requires_grad_(True)
    logits_t = theirs(xt)
    torch.nn.functional.cross_entropy(logits_t, torch.tensor(labels)).backward()
    logits = ours.forward(x)
    np.testing.assert_allclose(logits, logits_t.detach().numpy(), rtol=1e-9, atol=1e-10)
    _, dlogits = nn.softmax_cross_entropy(logits, labels)
    dx = ours.backward(dlogits)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-8, atol=1e-12)
    for tp, p in zip(torch_params, ours.parameters(), strict=True):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-8, atol=1e-12)


OPTIMIZERS = [
    ("sgd", {"lr": 0.1}),
    ("sgd", {"lr": 0.1, "momentum": 0.9}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2}),
    ("adam", {"lr": 0.01}),
    ("adam", {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 1e-2}),
]


@pytest.mark.parametrize("kind, kwargs", OPTIMIZERS)
def test_optimizers_match_torch(kind, kwargs):
    import torch

    rng = np.random.default_rng(0)
    ours = [nn.Parameter(rng.standard_normal((3, 2))), nn.Parameter(rng.standard_normal(4))]
    frozen = nn.Parameter(rng.standard_normal(2), trainable=False)
    theirs = [_t(p.data).requires_grad_(True) for p in ours]
    opt = (nn.SGD if kind == "sgd" else nn.Adam)([*ours, frozen], **kwargs)
    topt = (torch.optim.SGD if kind == "sgd" else torch.optim.Adam)(theirs, **kwargs)
    before = frozen.data.copy()
    for _ in range(5):
        grads = [rng.standard_normal(p.shape) for p in ours]
        for p, tp, g in zip(ours, theirs, grads, strict=True):
            p.grad = g.copy()
            tp.grad = _t(g)
        opt.step()
        topt.step()
    for p, tp in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(frozen.data, before)


@pytest.mark.parametrize("train", [True, False])
def test_inverted_residual_matches_torch(backend_name, rng, train):
    import torch
    from torch import nn as tnn

    ours = nn.InvertedResidual(4, 4, stride=1, expand_ratio=3, seed=0)
    hidden = 12
    body = tnn.Sequential(
        tnn.Conv2d(4, hidden, 1, bias=False), tnn.BatchNorm2d(hidden), tnn.ReLU6(),
        tnn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden, bias=False), tnn.BatchNorm2d(hidden),
        tnn.ReLU6(), tnn.Conv2d(hidden, 4, 1, bias=False), tnn.BatchNorm2d(4),
    ).double()  # fmt: skip

    class Residual(tnn.Module):
        def __init__(self):
            super().__init__()
            self.body = body

        def forward(self, x):
            return x + self.body(x)

    theirs = Residual()
    with torch.no_grad():
        for tp, p in zip(body.parameters(), ours.parameters(), strict=True):
            tp.copy_(_t(p.data))
    theirs.train(train)
    x = rng.standard_normal((3, 4, 5, 5)) * 2
    ours.astype(np.float64)
    xt = _t(x).requires_grad_(True)
    yt = theirs(xt)
    y = ours.forward(x, train)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-9, atol=1e-10)
    dout = rng.standard_normal(y.shape)
    yt.backward(_t(dout))
    np.testing.assert_allclose(ours.backward(dout), xt.grad.numpy(), rtol=1e-8, atol=1e-10)
    for tp, p in zip(body.parameters(), ours.parameters(), strict=True):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-7, atol=1e-10)
