"""What PyTorch users expect besides the basics: AdamW, a depthwise channel multiplier,
BatchNorm1d and a Softmax layer -- each against PyTorch, plus gradient checks."""

from __future__ import annotations

import numpy as np
import pytest

from tinyodl import nn


def _torch():
    return pytest.importorskip("torch")


# ----------------------------------------------------------------------------- AdamW


def _grads(step: int, shapes) -> list[np.ndarray]:
    rng = np.random.default_rng(100 + step)
    return [rng.standard_normal(s) for s in shapes]


@pytest.mark.torch
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adamw_matches_torch_and_its_state_dict_round_trips(weight_decay):
    torch = _torch()
    shapes = [(3, 4), (4,)]
    init = [np.random.default_rng(i).standard_normal(s) for i, s in enumerate(shapes)]
    ours = [nn.Parameter(a.copy()) for a in init]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    kw = dict(lr=0.05, betas=(0.8, 0.95), eps=1e-7, weight_decay=weight_decay)
    opt, topt = nn.AdamW(ours, **kw), torch.optim.AdamW(theirs, **kw)
    for step in range(3):
        for p, t, g in zip(ours, theirs, _grads(step, shapes), strict=True):
            p.grad, t.grad = g.copy(), torch.tensor(g)
        opt.step()
        topt.step()
    state = opt.state_dict()  # resume into a fresh optimizer, then continue both
    opt = nn.AdamW(ours, **kw)
    opt.load_state_dict(state)
    for step in range(3, 6):
        for p, t, g in zip(ours, theirs, _grads(step, shapes), strict=True):
            p.grad, t.grad = g.copy(), torch.tensor(g)
        opt.step()
        topt.step()
    for i, (p, t) in enumerate(zip(ours, theirs, strict=True)):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-12, atol=1e-14)
        torch_state = topt.state_dict()["state"][i]
        np.testing.assert_allclose(opt.state[str(i)]["exp_avg"], torch_state["exp_avg"].numpy())
        np.testing.assert_allclose(
            opt.state[str(i)]["exp_avg_sq"], torch_state["exp_avg_sq"].numpy()
        )
        assert int(opt.state[str(i)]["step"]) == int(torch_state["step"]) == 6


def test_adamw_decay_is_decoupled_from_the_moments():
    # zero gradient: Adam's L2 decay would enter the moments; AdamW only shrinks the weight
    p, q = nn.Parameter(np.array([2.0])), nn.Parameter(np.array([2.0]))
    p.grad, q.grad = np.zeros(1), np.zeros(1)
    adamw, adam = nn.AdamW([p], lr=0.1, weight_decay=0.5), nn.Adam([q], lr=0.1, weight_decay=0.5)
    adamw.step()
    adam.step()
    np.testing.assert_allclose(p.data, [2.0 * (1 - 0.1 * 0.5)])
    np.testing.assert_allclose(adamw.state["0"]["exp_avg"], [0.0])
    assert adam.state["0"]["exp_avg"][0] != 0.0
    assert nn.AdamW([p]).weight_decay == 0.01  # PyTorch's default


# ----------------------------------------------------------------------------- depthwise


@pytest.mark.torch
@pytest.mark.parametrize("multiplier", [1, 2, 3])
def test_depthwise_multiplier_matches_torch_grouped_conv(backend_name, multiplier):
    torch = _torch()
    ours = nn.DepthwiseConv2d(3, 3, stride=2, padding=1, channel_multiplier=multiplier, seed=0)
    ours.astype(np.float64)
    assert ours.params["weight"].shape == (3 * multiplier, 1, 3, 3)
    theirs = torch.nn.Conv2d(3, 3 * multiplier, 3, 2, 1, groups=3).double()
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(ours.params["weight"].data))
        theirs.bias.copy_(torch.from_numpy(np.arange(3.0 * multiplier)))
    ours.params["bias"].data[:] = np.arange(3.0 * multiplier)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 6))
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    y = ours.forward(x)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    dout = rng.standard_normal(y.shape)
    yt.backward(torch.tensor(dout))
    np.testing.assert_allclose(ours.backward(dout), xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.params["weight"].grad, theirs.weight.grad.numpy(), rtol=1e-10)


def test_depthwise_multiplier_config_gradients_and_errors(backend_name):
    layer = nn.DepthwiseConv2d(2, 3, padding=1, channel_multiplier=2, seed=1)
    assert layer.out_channels == 4 and layer.groups == 2
    clone = nn.DepthwiseConv2d(**layer.config())
    np.testing.assert_array_equal(clone.params["weight"].data, layer.params["weight"].data)
    folded = nn.fold_batchnorm(layer, nn.BatchNorm2d(4))
    assert folded.channel_multiplier == 2
    errors = nn.check_layer_gradients(layer, np.random.default_rng(0).standard_normal((2, 2, 5, 5)))
    assert max(errors.values()) < 1e-6
    with pytest.raises(ValueError, match="channel_multiplier must be a positive int"):
        nn.DepthwiseConv2d(2, 3, channel_multiplier=0)


# ----------------------------------------------------------------------------- BatchNorm1d


@pytest.mark.torch
@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 6)])
@pytest.mark.parametrize("train", [True, False])
def test_batchnorm1d_matches_torch(shape, train):
    torch = _torch()
    rng = np.random.default_rng(1)
    ours = nn.BatchNorm1d(3, momentum=0.2).astype(np.float64)
    theirs = torch.nn.BatchNorm1d(3, momentum=0.2).double()
    x0 = rng.standard_normal(shape) * 2 + 1
    ours.forward(x0)  # move the running statistics first
    theirs(torch.tensor(x0))
    ours.train(train)
    theirs.train(train)
    x = rng.standard_normal(shape)
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    y = ours.forward(x)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    dout = rng.standard_normal(shape)
    yt.backward(torch.tensor(dout))
    np.testing.assert_allclose(ours.backward(dout), xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours.params["weight"].grad, theirs.weight.grad.numpy(), rtol=1e-9)
    np.testing.assert_allclose(ours.buffers["running_var"], theirs.running_var.numpy())


def test_batchnorm1d_shapes_and_gradients():
    bn = nn.BatchNorm1d(4)
    with pytest.raises(nn.LayerShapeError, match=r"BatchNorm1d: expected input \(N, 4\)"):
        bn.forward(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="more than one value per channel"):
        bn.forward(np.ones((1, 4), np.float32))
    # x from another seed than check_layer_gradients' dout (seed 0): with dout == x the
    # training-mode dx is ~0 and its relative error meaningless
    x = np.random.default_rng(1).standard_normal((6, 4))
    assert max(nn.check_layer_gradients(bn, x).values()) < 1e-6


# ----------------------------------------------------------------------------- Softmax


@pytest.mark.torch
@pytest.mark.parametrize("dim", [1, -1, 0])
def test_softmax_layer_matches_torch(dim):
    torch = _torch()
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4, 5)) * 4
    ours = nn.Softmax(dim).astype(np.float64)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.Softmax(dim)(xt)
    y = ours.forward(x)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12)
    dout = rng.standard_normal(y.shape)
    yt.backward(torch.tensor(dout))
    np.testing.assert_allclose(ours.backward(dout), xt.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_softmax_layer_gradients_stability_and_errors():
    layer = nn.Softmax()
    assert (
        max(nn.check_layer_gradients(layer, np.random.default_rng(0).random((4, 6))).values())
        < 1e-6
    )
    y = layer.forward(np.array([[1000.0, 0.0, -1000.0]], np.float32))
    assert np.isfinite(y).all() and y[0, 0] == 1.0
    with pytest.raises(nn.LayerShapeError, match="Softmax: expected an input with an axis dim=2"):
        nn.Softmax(2).forward(np.ones((2, 3), np.float32))
    assert nn.Softmax(**nn.Softmax(dim=0).config()).dim == 0
