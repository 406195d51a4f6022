"""Chapter 08: transfer-learning methods, TinyTL's lite residual, bilinear upsampling, memory."""

from __future__ import annotations

import numpy as np
import pytest

from tinyodl import models, nn, transfer
from tinyodl.data import load_mnist, to_float


@pytest.fixture(scope="module")
def batch():
    x, y = load_mnist("train", subset=20)
    return to_float(x), y.astype(np.int64)


def _prepared(method, **kw):
    return transfer.prepare(models.mcunet_tiny(seed=0), method, seed=0, **kw)


def _trainable_names(model):
    return {n for n, p in model.named_parameters() if p.trainable}


def test_each_method_trains_what_it_says():
    full = _prepared("finetune_full")
    assert transfer.trainable_parameters(full) == 99_658
    fe = _prepared("feature_extraction", new_head=True)
    assert _trainable_names(fe) == {"classifier.0.weight", "classifier.0.bias"}
    bias = _trainable_names(_prepared("tinytl_bias"))
    assert "classifier.0.weight" in bias and "features.1.bias" in bias  # head + BN betas
    assert all(n.endswith(".bias") for n in bias - {"classifier.0.weight"})
    last = _trainable_names(_prepared("finetune_last_k", k=2))
    assert {n.split(".")[1] for n in last if n.startswith("features")} == {"9", "10", "11"}
    lite = _prepared("tinytl_lite_residual")
    names = _trainable_names(lite)
    assert any(".shortcut.group_conv.weight" in n for n in names)
    assert not any(n.endswith("expand.weight") for n in names)  # the blocks stay frozen


def test_tinytl_bias_keeps_no_layer_input_for_dw(batch):
    x, y = batch
    model = _prepared("tinytl_bias")
    model.forward(x[:4])
    keeps_input = [n for n, m in model.named_layers() if "x" in m.saved]
    assert keeps_input == ["classifier.0"]  # only the head, whose weight trains (TinyTL-B)
    masks = sum(m.saved["mask"].nbytes for _, m in model.named_layers() if "mask" in m.saved)
    stats = sum(m.saved["inv_std"].nbytes for _, m in model.named_layers() if "inv_std" in m.saved)
    head = model["classifier.0"].saved["x"].nbytes
    # measured: the activations a step keeps are exactly the 1-byte masks (+ tiny vectors)
    mem = transfer.training_memory(model, x[:8], y[:8], lambda m: nn.SGD(m, lr=0.01))
    full = transfer.training_memory(
        _prepared("finetune_full"), x[:8], y[:8], lambda m: nn.SGD(m, lr=0.01)
    )
    assert mem["saved_bytes"] == 2 * (masks + head) + stats  # batch 8 vs the 4 above
    assert full["saved_bytes"] > 8 * mem["saved_bytes"]


def test_frozen_prefix_stops_the_backward_pass(batch):
    x, y = batch
    model = _prepared("feature_extraction")
    assert isinstance(model["features.frozen"], transfer.FrozenPrefix)
    logits = model.forward(x[:4])
    assert all(not m.saved for n, m in model.named_layers() if n.startswith("features"))
    _, d = nn.softmax_cross_entropy(logits, y[:4])
    assert model.backward(d) is None
    reference = models.mcunet_tiny(seed=0).eval().freeze()
    reference.unfreeze("classifier")
    ref_logits = reference.forward(x[:4], train=False)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-5, atol=1e-5)
    reference.backward(nn.softmax_cross_entropy(ref_logits, y[:4])[1])
    grad = model["classifier.0"].params["weight"].grad
    np.testing.assert_allclose(grad, reference["classifier.0"].params["weight"].grad, rtol=1e-4)


def test_lite_residual_leaves_the_output_unchanged_at_start_then_learns(batch):
    x, y = batch
    base = models.mcunet_tiny(seed=0).eval()
    model = _prepared("tinytl_lite_residual")
    np.testing.assert_array_equal(model.forward(x, train=False), base.forward(x))
    blocks = [n for n, m in model.named_layers() if isinstance(m, nn.Add)]
    assert len(blocks) == 7
    opt = nn.SGD(model, lr=0.1)
    _, d = nn.softmax_cross_entropy(model.forward(x[:8]), y[:8])
    model.backward(d)
    opt.step()
    gamma = dict(model.named_layers())[f"{blocks[0]}.shortcut.bn"].params["weight"].data
    assert np.abs(gamma).max() > 0  # gamma = 0 still gets a gradient: the branch wakes up
    assert not np.allclose(model.forward(x, train=False), base.forward(x))


def test_lite_residual_branch_shapes_and_errors():
    branch = transfer.lite_residual_branch(16, 24, (7, 7), seed=0)
    assert branch.output_shape((2, 16, 14, 14)) == (2, 24, 7, 7)
    assert branch["group_conv"].groups == 2 and branch["group_conv"].kernel_size == (5, 5)
    with pytest.raises(ValueError, match="in_channels must be even"):
        transfer.lite_residual_branch(15, 24, (7, 7))
    with pytest.raises(ValueError, match="method must be one of"):
        _prepared("lora")
    with pytest.raises(ValueError, match=r"k must be in 1..9"):
        _prepared("finetune_last_k", k=10)


@pytest.mark.parametrize("method", transfer.METHODS)
@pytest.mark.parametrize("n", [1, 8])
def test_analytic_memory_is_within_ten_percent_of_the_measurement(batch, method, n):
    x, y = batch
    model = _prepared(method, new_head=True)
    mem = transfer.training_memory(model, x[:n], y[:n], lambda m: nn.SGD(m, lr=0.01, momentum=0.9))
    assert mem["saved_bytes"] == mem["saved_bytes_analytic"]
    assert abs(mem["analytic"] - mem["measured"]) <= 0.1 * mem["measured"]


# ----------------------------------------------------------------------------- new layers


def test_bilinear_upsample_and_group_conv_gradcheck():
    rng = np.random.default_rng(0)
    up = nn.BilinearUpsample((5, 7)).astype("float64")
    errors = nn.check_layer_gradients(up, rng.standard_normal((2, 3, 3, 4)))
    assert errors["x"] < 1e-7
    group = nn.Conv2d(4, 6, 5, padding=2, groups=2, seed=1).astype("float64")
    errors = nn.check_layer_gradients(group, rng.standard_normal((2, 4, 5, 5)), num_checks=20)
    assert max(errors.values()) < 1e-6, errors
    branch = transfer.lite_residual_branch(4, 6, (6, 6), seed=0).astype("float64")
    branch["bn"].params["weight"].data[:] = 0.5  # a live branch
    errors = nn.check_layer_gradients(
        branch.eval(), rng.standard_normal((2, 4, 6, 6)), train=False, num_checks=10
    )
    assert max(errors.values()) < 1e-5, errors


@pytest.mark.torch
@pytest.mark.parametrize("size", [(4, 4), (8, 6), (3, 10), (2, 2)])
def test_bilinear_upsample_matches_torch(size):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 5))
    layer = nn.BilinearUpsample(size).astype("float64")
    y = layer.forward(x)
    dout = np.random.default_rng(2).standard_normal(y.shape)
    dx = layer.backward(dout)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.interpolate(xt, size=size, mode="bilinear", align_corners=False)
    yt.backward(torch.tensor(dout))
    np.testing.assert_allclose(y, yt.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), atol=1e-12)


@pytest.mark.torch
def test_lite_residual_branch_matches_torch():
    torch = pytest.importorskip("torch")
    branch = transfer.lite_residual_branch(4, 6, (6, 6), seed=3).astype("float64").eval()
    branch["bn"].params["weight"].data[:] = np.linspace(0.5, 1.5, 6)
    x = np.random.default_rng(4).standard_normal((2, 4, 6, 6))
    y = branch.forward(x)
    t = (
        torch.nn.Sequential(
            torch.nn.AvgPool2d(2),
            torch.nn.Conv2d(4, 4, 5, padding=2, groups=2, bias=False),
            torch.nn.BatchNorm2d(4),
            torch.nn.ReLU6(),
            torch.nn.Conv2d(4, 6, 1, bias=False),
            torch.nn.BatchNorm2d(6),
            torch.nn.Upsample(size=(6, 6), mode="bilinear", align_corners=False),
        )
        .double()
        .eval()
    )
    with torch.no_grad():
        t[1].weight.copy_(torch.tensor(branch["group_conv"].params["weight"].data))
        t[4].weight.copy_(torch.tensor(branch["pointwise"].params["weight"].data))
        t[5].weight.copy_(torch.tensor(branch["bn"].params["weight"].data))
    np.testing.assert_allclose(y, t(torch.tensor(x)).detach().numpy(), atol=1e-10)
