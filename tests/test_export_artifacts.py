"""Chapter 13: training artifacts (.npz + JSON manifest) and model differences."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinyodl import nn
from tinyodl.checkpoint import CheckpointError
from tinyodl.export import (
    apply_diff,
    compress,
    compute_diff,
    decompress,
    load_training_checkpoint,
    save_training_checkpoint,
)
from tinyodl.quantization import quantize_model


def _model(seed=0):
    return nn.Sequential(
        [nn.Conv2d(1, 4, 3, padding=1, seed=seed), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
         nn.Linear(4 * 6 * 6, 3, seed=seed + 1)]
    )  # fmt: skip


def _trained(model, steps=3, seed=0):
    rng = np.random.default_rng(seed)
    opt = nn.Adam(model, lr=1e-2)
    for _ in range(steps):
        x = rng.random((8, 1, 6, 6), dtype=np.float32)
        y = rng.integers(0, 3, 8)
        loss, g = nn.softmax_cross_entropy(model.forward(x, train=True), y)
        model.zero_grad()
        model.backward(g)
        opt.step()
    return model, opt


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("artifact")
    model, opt = _trained(_model())
    rng = np.random.default_rng(42)
    rng.random(5)
    q = quantize_model(model, np.random.default_rng(1).random((16, 1, 6, 6), dtype=np.float32))
    paths = save_training_checkpoint(
        folder / "ckpt", model, opt, step=17, rng=rng, qmodel=q, metadata={"task": "A"}
    )
    return paths, model, opt, rng, q


def test_round_trip_restores_everything(saved):
    (npz, manifest), model, opt, rng, q = saved
    assert npz.suffix == ".npz" and manifest.suffix == ".json"
    ckpt = load_training_checkpoint(manifest)
    fresh, fresh_opt = _model(seed=9), None
    fresh_opt = nn.Adam(fresh, lr=1.0)
    restored_rng = ckpt.restore(fresh, fresh_opt)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[k], v)
    for k, v in opt.state_dict().items():
        np.testing.assert_array_equal(fresh_opt.state_dict()[k], v)
    assert restored_rng.random() == rng.random()  # the same stream continues
    assert ckpt.step == 17 and ckpt.metadata == {"task": "A"}
    for k, v in q.arrays().items():
        np.testing.assert_array_equal(ckpt.quant[k], v)
    name, conv = next(q.named_convs())
    assert ckpt.quant_params[name]["output"] == [conv.output.scale, conv.output.zero_point]
    text = manifest.read_text()
    assert json.loads(text)["version"] == 1 and "sha256" in text


def _copy_pair(paths, folder: Path) -> tuple[Path, Path]:
    out = []
    for p in paths:
        shutil.copy(p, folder / p.name)
        out.append(folder / p.name)
    return out[0], out[1]


def test_clear_errors_for_damaged_files(saved, tmp_path):
    paths = saved[0]
    npz, manifest = _copy_pair(paths, tmp_path)
    data = npz.read_bytes()
    npz.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(CheckpointError, match=r"ckpt\.npz.*SHA-256"):
        load_training_checkpoint(manifest)
    npz.write_bytes(data)
    meta = json.loads(manifest.read_text())
    meta["version"] = 99
    manifest.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="version 99"):
        load_training_checkpoint(npz)
    manifest.write_text("{not json")
    with pytest.raises(CheckpointError, match=r"ckpt\.json.*not a JSON"):
        load_training_checkpoint(npz)
    npz.unlink()
    shutil.copy(paths[1], manifest)
    with pytest.raises(CheckpointError, match=r"ckpt\.npz: no such file"):
        load_training_checkpoint(manifest)


def test_an_edited_step_or_generator_state_is_refused(saved, tmp_path):
    """No array checksum covers the step or the generator state: the manifest's own does (a
    fuzzed digit of the PCG64 increment once loaded silently)."""
    for edit in ("step", "rng"):
        (tmp_path / edit).mkdir()
        npz, manifest = _copy_pair(saved[0], tmp_path / edit)
        meta = json.loads(manifest.read_text())
        if edit == "step":
            meta["step"] += 1
        else:
            meta["rng_state"]["state"]["inc"] += 10
        manifest.write_text(json.dumps(meta, indent=1, sort_keys=True))
        with pytest.raises(CheckpointError, match=r"ckpt\.json.*manifest_sha256"):
            load_training_checkpoint(manifest)
    # the same content written with other whitespace still loads
    (tmp_path / "spaces").mkdir()
    npz, manifest = _copy_pair(saved[0], tmp_path / "spaces")
    manifest.write_text(json.dumps(json.loads(manifest.read_text())))
    assert load_training_checkpoint(manifest).step == load_training_checkpoint(saved[0][1]).step


def test_mismatched_pair_is_refused(saved, tmp_path):
    npz, manifest = _copy_pair(saved[0], tmp_path)
    other, _ = _trained(_model(seed=3))
    save_training_checkpoint(tmp_path / "other", other, step=1)
    shutil.copy(tmp_path / "other.npz", npz)  # arrays of another save beside this manifest
    with pytest.raises(CheckpointError, match="another save"):
        load_training_checkpoint(manifest)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    which=st.sampled_from(["npz", "json"]),
    position=st.floats(0, 1, exclude_max=True),
    action=st.sampled_from(["flip", "truncate", "insert"]),
    byte=st.integers(0, 255),
)
def test_fuzzed_files_fail_cleanly(saved, which, position, action, byte):
    """Any flipped, inserted or truncated byte gives CheckpointError (or, for a change the
    JSON parser ignores such as whitespace, the identical checkpoint) -- never another
    exception, never different arrays."""
    paths = saved[0]
    with tempfile.TemporaryDirectory() as folder:
        npz, manifest = _copy_pair(paths, Path(folder))
        target = npz if which == "npz" else manifest
        data = bytearray(target.read_bytes())
        i = int(position * len(data))
        if action == "flip":
            data[i] ^= byte or 1
        elif action == "insert":
            data.insert(i, byte)
        else:
            del data[i:]
        target.write_bytes(bytes(data))
        try:
            ckpt = load_training_checkpoint(manifest)
        except CheckpointError as err:
            assert str(target.name) in str(err) or "ckpt" in str(err)
            return
    reference = load_training_checkpoint(paths[1])
    assert which == "json"  # a changed .npz can never pass its checksum
    for k, v in reference.model.items():
        np.testing.assert_array_equal(ckpt.model[k], v)
    assert ckpt.step == reference.step and ckpt.rng_state == reference.rng_state


# ----------------------------------------------------------------------------- differences


def test_uncompressed_diff_reproduces_the_trained_model_exactly():
    base = _model()
    trained, _ = _trained(_model(), steps=5)
    diff = compute_diff(base, trained)
    rebuilt = apply_diff(base, diff)
    for k, v in trained.state_dict().items():
        np.testing.assert_array_equal(rebuilt.state_dict()[k], v)
    assert any(np.any(d != 0) for d in diff.delta.values())
    # the base model itself is unchanged
    for k, v in _model().state_dict().items():
        np.testing.assert_array_equal(base.state_dict()[k], v)


@given(
    st.lists(
        st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=True),
        min_size=2,
        max_size=40,
    )
)
def test_diff_exact_for_any_float32_values(values):
    """Even across exponent gaps float64 cannot hold (1e-38 -> 3e38), apply is exact."""
    n = len(values) // 2
    base, trained = nn.Linear(n, 1, bias=False), nn.Linear(n, 1, bias=False)
    base.params["weight"].data[...] = np.float32(values[:n])
    trained.params["weight"].data[...] = np.float32(values[n : 2 * n])
    rebuilt = apply_diff(base, compute_diff(base, trained))
    np.testing.assert_array_equal(rebuilt.params["weight"].data, trained.params["weight"].data)


def test_compressed_diffs_are_smaller_and_close():
    base = _model()
    trained, _ = _trained(_model(), steps=5)
    diff = compute_diff(base, trained)
    int8 = compress(diff, "int8")
    topk = compress(diff, "topk", k_fraction=0.1)
    assert int8.nbytes() < diff.nbytes() / 3
    assert topk.nbytes() < diff.nbytes() / 4
    for name, d in diff.delta.items():
        step = np.max(np.abs(d)) / 127
        approx = decompress(int8).delta[name]
        assert np.max(np.abs(approx - d)) <= step / 2 + 1e-12
        kept = decompress(topk).delta[name]
        k = max(1, int(np.ceil(0.1 * d.size)))
        assert np.count_nonzero(kept) <= k
        # the kept entries are the largest ones
        if np.count_nonzero(kept):
            assert np.min(np.abs(kept[kept != 0])) >= np.sort(np.abs(d).ravel())[-k] - 1e-7
    approx_model = apply_diff(base, int8)
    x = np.random.default_rng(0).random((4, 1, 6, 6), dtype=np.float32)
    np.testing.assert_allclose(
        approx_model.forward(x, train=False), trained.forward(x, train=False), atol=0.05
    )
    with pytest.raises(ValueError, match="method"):
        compress(diff, "gzip")


def test_diff_of_different_architectures_is_refused():
    with pytest.raises(ValueError, match="different arrays|shapes"):
        compute_diff(_model(), nn.Sequential([nn.Linear(3, 3)]))
