"""PyTorch interop: state dicts in both directions, on the four models of tinyodl.models."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tinyodl import models, nn
from tinyodl.nn import load_torch_state_dict, torch_state_dict

torch = pytest.importorskip("torch")
from torch_models import BUILDERS, randomize_batchnorm  # noqa: E402

pytestmark = pytest.mark.torch
MODELS = list(BUILDERS)


def _torch_model(name: str, seed: int = 1):
    torch.manual_seed(seed)
    model = BUILDERS[name]()
    randomize_batchnorm(model, seed)
    return model.eval()


def _x(n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, 28, 28)).astype(np.float32)


@pytest.mark.parametrize("name", MODELS)
def test_loaded_model_computes_what_the_torch_model_computes(name):
    theirs = _torch_model(name)
    ours = load_torch_state_dict(getattr(models, name)(seed=0), theirs.state_dict()).eval()
    x = _x()
    with torch.no_grad():
        expected = theirs(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours.forward(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_export_loads_strictly_into_torch_and_computes_the_same(name):
    ours = getattr(models, name)(seed=3)
    ours.forward(_x(4, seed=1))  # one training step's statistics: non-trivial running stats
    ours.eval()
    theirs = BUILDERS[name]().eval()
    theirs.load_state_dict(torch_state_dict(ours), strict=True)
    x = _x(seed=2)
    with torch.no_grad():
        expected = theirs(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours.forward(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_round_trips_are_exact(name):
    theirs = _torch_model(name, seed=5)
    ours = load_torch_state_dict(getattr(models, name)(seed=0), theirs.state_dict())
    back = torch_state_dict(ours)
    assert list(back) == list(theirs.state_dict())  # same names, same order
    for key, value in theirs.state_dict().items():
        assert torch.equal(back[key], value), key  # num_batches_tracked included
    again = load_torch_state_dict(getattr(models, name)(seed=9), back)
    for key, value in ours.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[key], value, err_msg=key)


def test_num_batches_tracked_is_skipped_on_import_and_counted_on_export():
    theirs = _torch_model("mcunet_tiny")
    ours = load_torch_state_dict(models.mcunet_tiny(seed=0), theirs.state_dict())
    assert not any("num_batches_tracked" in k for k in ours.state_dict())
    bn = ours["features.1"]
    assert bn.num_batches_tracked == 7
    ours.train().forward(_x(2))
    assert torch_state_dict(ours)["features.1.num_batches_tracked"].item() == 8


def test_order_mapping_loads_a_torch_model_with_other_names():
    flat = torch.nn.Sequential(*BUILDERS["lenet5"]().features, *BUILDERS["lenet5"]().classifier)
    with torch.no_grad():
        for p in flat.parameters():
            p.normal_(0, 0.1)
    ours = load_torch_state_dict(models.lenet5(seed=0), flat.state_dict(), mapping="order")
    x = _x()
    with torch.no_grad():
        expected = flat(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours.forward(x), expected, rtol=1e-4, atol=1e-5)
    back = torch.nn.Sequential(*BUILDERS["lenet5"]().features, *BUILDERS["lenet5"]().classifier)
    back.load_state_dict(torch_state_dict(ours, mapping=list(back.state_dict())), strict=True)
    for key, value in flat.state_dict().items():  # exported in order, under PyTorch's names
        assert torch.equal(back.state_dict()[key], value), key
    with pytest.raises(nn.StateDictError, match="4 PyTorch names"):
        torch_state_dict(ours, mapping=["a", "b", "c", "d"])


def test_dict_and_function_mappings_and_export_renaming():
    theirs = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    ours = nn.Sequential({"flat": nn.Flatten(), "fc": nn.Linear(4, 3)})
    load_torch_state_dict(
        ours, theirs.state_dict(), mapping={"1.weight": "fc.weight", "1.bias": "fc.bias"}
    )
    np.testing.assert_array_equal(
        ours["fc"].params["weight"].data, theirs[1].weight.detach().numpy()
    )
    other = nn.Sequential({"flat": nn.Flatten(), "fc": nn.Linear(4, 3, seed=5)})
    load_torch_state_dict(other, theirs.state_dict(), mapping=lambda k: k.replace("1.", "fc."))
    np.testing.assert_array_equal(other.state_dict()["fc.bias"], ours.state_dict()["fc.bias"])
    exported = torch_state_dict(ours, mapping=lambda k: k.replace("fc.", "1."))
    theirs.load_state_dict(exported, strict=True)
    arrays = torch_state_dict(ours, as_numpy=True)
    assert all(isinstance(v, np.ndarray) for v in arrays.values())


def test_a_wrong_shape_names_both_sides_and_writes_nothing():
    theirs = BUILDERS["lenet5"]()
    theirs.classifier[4] = torch.nn.Linear(84, 7)  # 7 classes instead of 10
    ours = models.lenet5(seed=0)
    before = ours.state_dict()
    with pytest.raises(nn.StateDictError, match=r"'classifier\.4\.weight' has shape \(7, 84\)"):
        load_torch_state_dict(ours, theirs.state_dict())
    for key, value in before.items():  # the layers before the bad one were not written either
        np.testing.assert_array_equal(ours.state_dict()[key], value, err_msg=key)


def test_missing_and_unexpected_entries_are_named():
    theirs = BUILDERS["mlp_2nn"]().state_dict()
    del theirs["classifier.0.bias"]
    theirs["extra.weight"] = torch.zeros(3)
    with pytest.raises(nn.StateDictError, match=r"\['extra\.weight'\].*\['classifier\.0\.bias'\]"):
        load_torch_state_dict(models.mlp_2nn(seed=0), theirs)
    ours = models.mlp_2nn(seed=0)
    del theirs["extra.weight"]
    load_torch_state_dict(ours, theirs, strict=False)  # loads what is there
    np.testing.assert_array_equal(
        ours.state_dict()["classifier.0.weight"], theirs["classifier.0.weight"].numpy()
    )


def test_order_mapping_refuses_a_different_layout():
    flat = torch.nn.Sequential(torch.nn.Linear(784, 200), torch.nn.Linear(10, 10))
    with pytest.raises(nn.StateDictError, match="mapping='order'"):
        load_torch_state_dict(models.mlp_2nn(seed=0), flat.state_dict(), mapping="order")


def test_tinyodl_does_not_import_torch():
    code = (
        "import sys, numpy as np, tinyodl, tinyodl.nn as nn, tinyodl.models as m\n"
        "sd = nn.torch_state_dict(m.lenet5(), as_numpy=True)\n"
        "nn.load_torch_state_dict(m.lenet5(seed=1), sd)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_half_and_bfloat16_tensors_are_read_through_float32():
    theirs = torch.nn.Linear(4, 3).to(torch.bfloat16)
    ours = load_torch_state_dict(nn.Linear(4, 3), theirs.state_dict())
    expected = theirs.weight.detach().float().numpy()
    np.testing.assert_array_equal(ours.params["weight"].data, expected)
    load_torch_state_dict(ours, torch.nn.Linear(4, 3).half().state_dict())
