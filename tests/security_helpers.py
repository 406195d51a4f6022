"""Small models and data for the chapter 11 (security) tests."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from tinyodl import models, nn
from tinyodl.data import load_mnist, to_float
from tinyodl.train import fit


def tiny_mlp(seed: int = 0, dtype: str = "float32", classes: int = 3) -> nn.Sequential:
    """Flatten - Linear(16, 12) - ReLU - Linear(12, classes), for (N, 1, 4, 4) inputs."""
    features = nn.Sequential([nn.Flatten(), nn.Linear(16, 12, seed=seed), nn.ReLU()])
    classifier = nn.Sequential([nn.Linear(12, classes, seed=seed + 1)])
    model = nn.Sequential({"features": features, "classifier": classifier})
    return model.astype(dtype) if dtype != "float32" else model


def blobs(n: int = 90, seed: int = 0, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Separable classes in [0, 1]^(1x4x4): class c lights up its own block of pixels."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.uniform(0.0, 0.3, size=(n, 16))
    for c in range(classes):
        x[y == c, 5 * c : 5 * c + 5] += 0.6
    return np.clip(x, 0, 1).reshape(n, 1, 4, 4).astype(np.float32), y.astype(np.int64)


def trained_tiny(
    seed: int = 0, dtype: str = "float32"
) -> tuple[nn.Sequential, np.ndarray, np.ndarray]:
    """A tiny MLP trained to fit :func:`blobs` (a few hundred SGD steps)."""
    x, y = blobs(seed=seed)
    model = tiny_mlp(seed, dtype)
    fit(model, nn.SGD(model, lr=0.5), x, y, epochs=60, batch_size=30, seed=seed, progress=False)
    model.eval()
    return model, x, y


@lru_cache(maxsize=1)
def _mnist_mlp_state() -> tuple[dict, np.ndarray, np.ndarray]:
    xi, yi = load_mnist("train")
    x, y = to_float(xi), yi.astype(np.int64)
    model = models.mlp_2nn(seed=0)
    fit(
        model,
        nn.SGD(model, lr=0.1, momentum=0.9),
        x,
        y,
        epochs=1,
        batch_size=64,
        seed=0,
        progress=False,
    )
    return model.state_dict(), x, y


def mnist_mlp() -> nn.Sequential:
    """``mlp_2nn`` trained one epoch on the shipped subset (~97% test accuracy); cached."""
    state, _, _ = _mnist_mlp_state()
    model = models.mlp_2nn(seed=0)
    model.load_state_dict({k: v.copy() for k, v in state.items()})
    model.eval()
    return model


def mnist_test(n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    xi, yi = load_mnist("test")
    return to_float(xi[:n]), yi[:n].astype(np.int64)
