"""fit() with the real tinyodl.nn models and optimizers on the shipped MNIST subset."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tinyodl import nn
from tinyodl.checkpoint import load_checkpoint
from tinyodl.data import load_mnist, to_float
from tinyodl.train import evaluate, fit

RUN = {"epochs": 2, "batch_size": 32, "seed": 3, "progress": False}


@pytest.fixture(scope="module")
def mnist_small():
    images, labels = load_mnist("train", subset=600)
    test_images, test_labels = load_mnist("test", subset=300)
    return to_float(images), labels, to_float(test_images), test_labels


def small_net(seed=0):
    """An MLP with every kind of state: parameters, BN buffers, a dropout generator."""
    return nn.Sequential(
        [
            nn.Conv2d(1, 4, 3, stride=2, seed=seed),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Flatten(),
            nn.Dropout(0.2, seed=seed + 1),
            nn.Linear(4 * 13 * 13, 10, seed=seed + 2),
        ]
    )


def _weights(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def test_fit_learns_mnist(mnist_small):
    x, y, x_test, y_test = mnist_small
    model = small_net()
    hist = fit(model, nn.SGD(model, lr=0.1, momentum=0.9), x, y, **RUN, x_val=x_test, y_val=y_test)
    loss, acc = evaluate(model, x_test, y_test)
    assert acc > 0.75  # chance is 0.10
    assert hist.val_accuracy[-1] == acc and hist.val_loss[-1] == pytest.approx(loss)
    assert np.mean(hist.step_loss[-5:]) < 0.5 * np.mean(hist.step_loss[:5])


@pytest.mark.parametrize("make_opt", [lambda m: nn.SGD(m, 0.05, momentum=0.9), nn.Adam])
def test_interrupted_nn_run_resumes_exactly(tmp_path, mnist_small, make_opt):
    x, y, x_test, y_test = mnist_small
    reference = small_net()
    fit(reference, make_opt(reference), x, y, **RUN, x_val=x_test, y_val=y_test)

    def stop(step, epoch, loss):
        if step == 26:  # mid-epoch 1 (19 steps per epoch)
            raise KeyboardInterrupt

    path = tmp_path / "ck.npz"
    model = small_net()
    with pytest.raises(KeyboardInterrupt):
        fit(model, make_opt(model), x, y, **RUN, checkpoint_path=path, checkpoint_every=5,
            x_val=x_test, y_val=y_test, callback=stop)  # fmt: skip
    assert load_checkpoint(path)[1]["step"] == 25
    model = small_net(seed=99)  # different initial weights and dropout seed: all restored
    fit(model, make_opt(model), x, y, **RUN, checkpoint_path=path, resume=True,
        x_val=x_test, y_val=y_test)  # fmt: skip
    got, want = _weights(model), _weights(reference)
    assert got.keys() == want.keys()
    for key in want:
        assert np.array_equal(got[key], want[key]), key


KILLED_RUN = """
import os, sys
import numpy as np
from tinyodl import nn
from tinyodl.data import load_mnist, to_float
from tinyodl.train import fit

images, labels = load_mnist("train", subset=300)
model = nn.Sequential([nn.Flatten(), nn.Dropout(0.1, seed=1), nn.Linear(784, 10, seed=0)])
kill_at = int(sys.argv[2])

def die(step, epoch, loss):
    if step == kill_at:
        os._exit(9)  # no cleanup, no exception handlers: like SIGKILL

fit(model, nn.SGD(model, 0.1, momentum=0.9), to_float(images), labels, epochs=3,
    batch_size=25, seed=5, progress=False, checkpoint_path=sys.argv[1], checkpoint_every=4,
    resume=True, callback=die if kill_at >= 0 else None)
np.save(sys.argv[1] + ".weights.npy", model.state_dict()["2.weight"])
"""


def test_killed_process_resumes_exactly(tmp_path):
    def run(path, kill_at):
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        script = textwrap.dedent(KILLED_RUN)
        cmd = [sys.executable, "-c", script, str(path), str(kill_at)]
        return subprocess.run(cmd, env=env, check=False, capture_output=True, text=True)

    ref = run(tmp_path / "ref.npz", -1)
    assert ref.returncode == 0, ref.stderr
    killed = run(tmp_path / "run.npz", 18)
    assert killed.returncode == 9, killed.stderr
    assert load_checkpoint(tmp_path / "run.npz")[1]["step"] == 16
    resumed = run(tmp_path / "run.npz", -1)
    assert resumed.returncode == 0, resumed.stderr
    want = np.load(tmp_path / "ref.npz.weights.npy")
    got = np.load(tmp_path / "run.npz.weights.npy")
    assert np.array_equal(got, want)


def test_divergence_with_real_model(mnist_small):
    x, y, _, _ = mnist_small
    model = nn.Sequential([nn.Flatten(), nn.Linear(784, 10, seed=0)])
    from tinyodl.train import DivergenceError

    with np.errstate(all="ignore"), pytest.raises(DivergenceError) as info:
        fit(model, nn.SGD(model, lr=1e30), x * 1e10, y, **RUN)
    assert info.value.step <= 2
    assert info.value.where in ("loss", "1.weight", "1.bias")
