"""The benchmark package: sub-command discovery, the PyTorch twins, smoke runs (no timings)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tinyodl import backend, models
from tinyodl.bench import _int8, benchmark_names, load_benchmark
from tinyodl.cli import main


def test_every_benchmark_follows_the_contract():
    assert {"kernels", "train"} <= set(benchmark_names())
    for name in benchmark_names():
        module = load_benchmark(name)
        assert isinstance(module.HELP, str) and module.HELP
        assert callable(module.add_arguments) and callable(module.main)


def test_mcunet_pointwise_shapes_follow_the_model():
    shapes = _int8.mcunet_pointwise_shapes(batch=2)
    # every 1x1 conv of mcunet_tiny appears once per distinct (M, K, N)
    convs = [
        r for r in models.mcunet_tiny(seed=0).describe((2, 1, 28, 28))
        if r["type"] == "Conv2d" and r["config"]["kernel_size"] == (1, 1)
    ]  # fmt: skip
    want = {(2 * r["input_shape"][2] * r["input_shape"][3], r["input_shape"][1],
             r["output_shape"][1]) for r in convs}  # fmt: skip
    assert {s[1:] for s in shapes} == want and len(shapes) == len(want)
    assert ("1x1 16->64 @14x14", 2 * 196, 16, 64) in shapes


def test_scratch_bytes_sees_numpy_buffers():
    def uses_scratch():
        tmp = np.ones(1_000_000, np.uint8)  # 1 MB of scratch, freed before returning
        return np.zeros(10, np.uint8) + tmp[:10]

    assert 1_000_000 <= _int8.scratch_bytes(uses_scratch) < 1_100_000


@pytest.mark.torch
@pytest.mark.parametrize("name", ["mlp_2nn", "cnn_mcmahan", "lenet5", "mcunet_tiny"])
def test_torch_twins_have_the_same_parameters(name):
    from tinyodl.bench import _torch

    ours = models.__dict__[name](seed=0)
    theirs = _torch.torch_model(name)
    assert sum(p.data.size for _, p in ours.named_parameters()) == sum(
        p.numel() for p in theirs.parameters()
    )
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    import torch

    assert tuple(theirs(torch.from_numpy(x)).shape) == ours.forward(x, train=False).shape


@pytest.mark.torch
def test_fbgemm_baselines_compute_the_same_layer():
    """The PyTorch int8 baselines see the same integers as tinyodl's kernels."""
    from tinyodl.bench import _torch

    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (3, 5)).astype(np.int8)
    w = rng.integers(-127, 128, (4, 5)).astype(np.int8)
    out = _torch.fbgemm_linear(x, w)()  # scale 0.02 * 0.01 / 1.0, zero point 128
    acc = (x.astype(np.int64) + 128) @ w.T.astype(np.int64)
    want = np.clip(np.round(acc * 0.02 * 0.01) + 128, 0, 255)
    assert np.abs(out.int_repr().numpy().astype(np.int64) - want).max() <= 1
    xc = rng.integers(-128, 128, (1, 2, 5, 5)).astype(np.int8)
    wc = rng.integers(-127, 128, (3, 2, 3, 3)).astype(np.int8)
    assert tuple(_torch.fbgemm_conv(xc, wc, 1, 1, 1)().shape) == (1, 3, 5, 5)


def test_bench_train_quick_writes_json(tmp_path, capsys):
    path = tmp_path / "train.json"
    assert main(["bench", "train", "--quick", "--threads2", "--numpy", "--json", str(path)]) == 0
    results = json.loads(path.read_text())
    train = results["summary"]["train"]
    rows = [r for r in results["rows"] if r["group"] == "train"]
    if backend.cython_available():  # "tinyodl" is the compiled backend, numpy beside it
        assert all(r["backend"] == "cython" and r["numpy_s"] > 0 for r in rows)
    assert [(r["model"], r["batch"]) for r in train] == [("cnn_mcmahan", 2), ("mcunet_tiny", 2)]
    assert all(r["samples_per_s"] > 0 for r in train)
    if "torch" in results["machine"]:
        assert all(r["vs_torch"] > 0 for r in train)
    assert results["summary"]["threads2"]["train_speedup"] > 0
    assert "samples/s" in capsys.readouterr().out
