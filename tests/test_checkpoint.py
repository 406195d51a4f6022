"""Checkpoints: round trip, atomic writes, refusal of pickle, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinyodl.checkpoint import (
    CheckpointError,
    load_checkpoint,
    pack_state,
    save_checkpoint,
    unpack_state,
)

ARRAYS = {
    "model/fc.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
    "model/fc.bias": np.array([0.5, -1.0], dtype=np.float64),
    "optim/step": np.array(7, dtype=np.int64),
}
META = {"step": 7, "history": {"loss": [1.0, 0.5]}, "note": "ünïcode", "none": None}


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a
    )


def test_round_trip(tmp_path):
    path = tmp_path / "ck.npz"
    save_checkpoint(path, ARRAYS, META)
    arrays, meta = load_checkpoint(path)
    assert _equal(arrays, ARRAYS)
    assert meta == META


@settings(max_examples=20, deadline=None)
@given(
    arrays=st.dictionaries(
        st.text("abc./_", min_size=1, max_size=8),
        hnp.arrays(
            st.sampled_from([np.float32, np.float64, np.int8, np.int32, np.uint8, np.bool_]),
            hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
        ),
        max_size=4,
    )
)
def test_round_trip_property(tmp_path_factory, arrays):
    path = tmp_path_factory.mktemp("ck") / "p.npz"
    save_checkpoint(path, arrays, {"n": len(arrays)})
    back, meta = load_checkpoint(path)
    assert meta == {"n": len(arrays)}
    assert back.keys() == arrays.keys()
    for key, value in arrays.items():
        assert back[key].dtype == value.dtype
        np.testing.assert_array_equal(back[key], value)


def test_metadata_is_a_json_string_array(tmp_path):
    path = tmp_path / "ck.npz"
    save_checkpoint(path, ARRAYS, META)
    with np.load(path, allow_pickle=False) as raw:
        stored = raw["__metadata__"]
        assert stored.dtype.kind == "U" and stored.shape == (1,)
        assert json.loads(str(stored[0])) == META


def test_object_arrays_are_refused_on_save(tmp_path):
    with pytest.raises(CheckpointError, match="dtype object"):
        save_checkpoint(tmp_path / "o.npz", {"bad": np.array([{}, 1], dtype=object)}, {})
    assert not list(tmp_path.iterdir())


def test_pickled_arrays_are_refused_on_load(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(
        path,
        payload=np.array([print], dtype=object),
        __metadata__=np.array(["{}"]),
        __format__=np.array(["tinyodl-checkpoint-v1"]),
    )
    with pytest.raises(CheckpointError, match="evil.npz.*pickle"):
        load_checkpoint(path)


def test_non_json_metadata(tmp_path):
    with pytest.raises(CheckpointError, match="not JSON"):
        save_checkpoint(tmp_path / "m.npz", {}, {"x": object()})


@pytest.mark.parametrize(
    ("writer", "message"),
    [
        (lambda p: p.write_bytes(b"not a zip file at all"), "not an .npz archive"),
        (lambda p: np.save(p.open("wb"), np.zeros(3)), r"\.npy array"),
        (lambda p: np.savez(p, a=np.zeros(2)), "missing '__format__'"),
        (
            lambda p: np.savez(p, __format__=np.array(["tinyodl-checkpoint-v1"])),
            "missing '__metadata__'",
        ),
        (
            lambda p: np.savez(
                p, __format__=np.array(["tinyodl-checkpoint-v1"]), __metadata__=np.array(["{"])
            ),
            "not valid JSON",
        ),
        (
            lambda p: np.savez(p, __format__=np.array(["other-v9"]), __metadata__=np.array(["{}"])),
            "format",
        ),
    ],
)
def test_wrong_files_raise_checkpoint_error(tmp_path, writer, message):
    path = tmp_path / "wrong.npz"
    writer(path)
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert "wrong.npz" in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="absent.npz: no such file"):
        load_checkpoint(tmp_path / "absent.npz")


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_truncated_file(tmp_path, keep):
    path = tmp_path / "cut.npz"
    save_checkpoint(path, {"w": np.random.default_rng(0).normal(size=(50, 50))}, META)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(keep * len(raw))])
    with pytest.raises(CheckpointError, match="cut.npz"):
        load_checkpoint(path)


def test_flipped_bytes_are_detected(tmp_path):
    path = tmp_path / "flip.npz"
    save_checkpoint(path, {"w": np.zeros((40, 40))}, META)
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("w.npy")
    middle = info.header_offset + 30 + len(info.filename) + 1000
    raw[middle] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="flip.npz.*(corrupt|CRC|Bad)"):
        load_checkpoint(path)


def test_failed_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ck.npz"
    save_checkpoint(path, ARRAYS, META)
    before = path.read_bytes()

    def crash(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"new": np.ones(3)}, {"step": 8})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]  # temp file removed
    assert load_checkpoint(path)[1] == META


CRASH_SCRIPT = """
import os, sys
import numpy as np
from tinyodl.checkpoint import save_checkpoint

def die(fd):
    os._exit(3)  # the process dies after writing the data, before the rename

os.fsync = die
save_checkpoint(sys.argv[1], {"w": np.ones((100, 100))}, {"step": 2})
"""


def test_process_killed_during_write_keeps_the_old_checkpoint(tmp_path):
    path = tmp_path / "ck.npz"
    save_checkpoint(path, ARRAYS, META)
    result = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, str(path)], check=False)
    assert result.returncode == 3
    leftovers = [p for p in tmp_path.iterdir() if p.name != "ck.npz"]
    assert leftovers and leftovers[0].stat().st_size > 0  # the new data was being written
    arrays, meta = load_checkpoint(path)
    assert meta == META and _equal(arrays, ARRAYS)


def test_pack_unpack_nested_state():
    state = {
        "lr": 0.1,
        "step": 3,
        "nesterov": False,
        "name": "sgd",
        "none": None,
        "velocity": [np.ones(2), np.zeros((2, 2), np.float32)],
        "inner": {"a.b": np.arange(3)},
        "scalar": np.float64(2.5),
    }
    arrays, skeleton = pack_state(state, "optim")
    assert all(key.startswith("optim/") for key in arrays)
    assert "optim/velocity/1" in arrays and "optim/inner/a.b" in arrays
    json.dumps(skeleton)
    back = unpack_state(arrays, skeleton)
    assert back["lr"] == 0.1 and back["step"] == 3 and back["nesterov"] is False
    assert back["name"] == "sgd" and back["none"] is None and back["scalar"] == 2.5
    np.testing.assert_array_equal(back["velocity"][1], state["velocity"][1])
    assert back["velocity"][1].dtype == np.float32
    np.testing.assert_array_equal(back["inner"]["a.b"], np.arange(3))


def test_pack_copies_arrays():
    w = np.zeros(3)
    arrays, _ = pack_state({"w": w}, "model")
    w[0] = 1.0
    assert arrays["model/w"][0] == 0.0


def test_pack_rejects_unknown_objects():
    with pytest.raises(CheckpointError, match="optim/f: cannot store a function"):
        pack_state({"f": print.__call__ and (lambda: 0)}, "optim")


def test_unpack_missing_array():
    _, skeleton = pack_state({"w": np.zeros(2)}, "model")
    with pytest.raises(CheckpointError, match="'model/w' is missing"):
        unpack_state({}, skeleton)
