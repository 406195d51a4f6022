"""The shipped pretrained models (tinyodl.tasks.pretrained): files, loading, accuracies."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from tinyodl import nn, tasks
from tinyodl.data import load_mnist


@pytest.mark.parametrize("name", ["A", "B"])
def test_pretrained_weights_load_without_pickle_into_fresh_models(name):
    path = tasks.pretrained_path(name)
    assert path.stat().st_size < 500_000
    with zipfile.ZipFile(path) as archive:  # plain .npy members only
        assert all(n.endswith(".npy") for n in archive.namelist())
    a, b = tasks.pretrained(name), tasks.pretrained(name)
    assert not a.training
    va = nn.parameters_to_vector(a)
    np.testing.assert_array_equal(va, nn.parameters_to_vector(b))
    next(iter(a.parameters())).data += 1.0  # adapting one copy leaves the next untouched
    np.testing.assert_array_equal(nn.parameters_to_vector(tasks.pretrained(name)), va)
    info = tasks.pretrained_info(name)
    assert info["task"] == name and info["command"].startswith("python scripts/pretrain.py")
    assert info["cloud_test_accuracy"] > 0.97


def test_pretrained_model_is_clearly_worse_on_task_b_and_blind_on_task_a():
    info = tasks.pretrained_info("B")
    task = tasks.load_task("B")
    model = task.pretrained()
    shifted = task.accuracy(model)
    assert shifted == pytest.approx(info["accuracy_before_adaptation"]["B"]["shipped"], abs=2e-3)
    x, y = load_mnist("test", subset=500)
    clean = (nn.softmax(model.forward(x[:, None] / np.float32(255))).argmax(1) == y).mean()
    assert clean > 0.97 and shifted < clean - 0.2
    assert tasks.pretrained_info("A")["accuracy_before_adaptation"]["A"]["shipped"] == 0.0
