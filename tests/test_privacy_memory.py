"""Chapter 10: measured (tracemalloc) against analytic memory of per-example gradients and
ghost norms, and ghost clipping's saving on a whole clipped step."""

import numpy as np
import pytest

from tinyodl import models, nn
from tinyodl.privacy import memory


def _close(measured, analytic):
    # measured includes array headers and small temporaries: 10% plus a few KiB
    return abs(measured - analytic) <= 0.10 * analytic + 8192


def test_per_layer_measured_memory_matches_the_analytic_model(backend_name):
    model = nn.Sequential(
        [
            nn.Conv2d(3, 16, 3, stride=2, padding=1, seed=0),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, groups=4, seed=1),
            nn.ReLU(),
            nn.DepthwiseConv2d(32, 3, padding=1, seed=2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(32 * 8 * 8, 10, seed=3),
        ]
    )
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((12, 3, 16, 16)).astype(np.float32), rng.integers(0, 10, 12)
    rows = memory.layer_memory_table(model, x, y)
    assert [r["type"] for r in rows] == ["Conv2d", "Conv2d", "DepthwiseConv2d", "Linear"]
    for r in rows:
        assert _close(r["per_example_bytes"], r["per_example_analytic"]), r
        assert _close(r["ghost_bytes"], r["ghost_analytic"]), r
    # Linear: N numbers instead of N copies of the weight
    assert rows[-1]["ghost_bytes"] * 100 < rows[-1]["per_example_bytes"]
    # the mixed rule: Gram matrices (2 G L^2 numbers per example) only where smaller than g_n
    # (F K); all three convolutions here have 8 x 8 outputs, L = 64
    for r, layer in zip(rows[:3], [model[0], model[2], model[4]], strict=True):
        w = layer.params["weight"]
        gram_is_smaller = 2 * layer.groups * 64**2 < w.shape[0] * np.prod(w.shape[1:])
        assert r["ghost_method"] == ("ghost" if gram_is_smaller else "materialize")
    assert rows[2]["ghost_method"] == "materialize"  # depthwise: g_n is only C KH KW


def test_ghost_clipping_saves_memory_on_the_abadi_network_with_the_same_sums():
    model = nn.Sequential([nn.Linear(60, 1000, seed=0), nn.ReLU(), nn.Linear(1000, 10, seed=1)])
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((200, 60)).astype(np.float32), rng.integers(0, 10, 200)
    pe = memory.measure_clipping_step(model, x, y, "per_example", clip_norm=4.0)
    gh = memory.measure_clipping_step(model, x, y, "ghost", clip_norm=4.0)
    for name, value in pe["sums"].items():
        np.testing.assert_allclose(gh["sums"][name], value, rtol=2e-4, atol=1e-4)
    # the per-example tensor alone is 200 x 71,010 float32 = 56.8 MB
    assert pe["peak_bytes"] > 200 * 71_010 * 4
    assert gh["peak_bytes"] * 5 < pe["peak_bytes"]


def test_analytic_model_of_a_cnn_classifier():
    model = models.cnn_mcmahan(seed=0)
    fc = model["classifier.0"]
    pred = memory.analytic_layer_bytes(fc, (32, 3136), (32, 512))
    assert pred["per_example_bytes"] == 32 * (3136 * 512 + 512) * 4
    conv = model["features.0"]
    pred = memory.analytic_layer_bytes(conv, (32, 1, 28, 28), (32, 32, 28, 28))
    assert pred["ghost_method"] == "materialize"  # L = 784: Gram matrices would be huge
    with pytest.raises(TypeError, match="ReLU"):
        memory.analytic_layer_bytes(nn.ReLU(), (1, 2), (1, 2))
