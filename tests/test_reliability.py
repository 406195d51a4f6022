"""Reliability fixes (issue 5, section 4): each careless-user finding as a test.

Resume validates before writing; corrupt IDX headers and checkpoint metadata name the file;
a checkpoint folder that does not exist fails before training; temporary files of killed
saves are cleaned up; empty batches behave the same on both backends; Ctrl-C in the CLI
prints one line and exits 130.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from tinyodl import models, nn
from tinyodl.checkpoint import (
    CheckpointError,
    load_checkpoint,
    remove_stale_temp_files,
    save_checkpoint,
)
from tinyodl.cli import main
from tinyodl.data import DataFormatError, read_idx
from tinyodl.train import fit


def _data(n: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 6, 6)).astype(np.float32), rng.integers(0, 3, n)


def _net(classes: int = 3, seed: int = 0) -> nn.Sequential:
    return nn.Sequential(
        {
            "features": nn.Sequential(
                [nn.Conv2d(1, 2, 3, seed=seed), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten()]
            ),
            "classifier": nn.Linear(2 * 4 * 4, classes, seed=seed + 1),
        }
    )


def _train(model, opt, path, **kw):
    x, y = _data()
    return fit(model, opt, x, y, epochs=1, batch_size=8, seed=0, progress=False,
               checkpoint_path=path, **kw)  # fmt: skip


def _snapshot(model, opt):
    return model.state_dict(), opt.state_dict()


def _assert_untouched(model, opt, snapshot):
    for key, value in snapshot[0].items():
        np.testing.assert_array_equal(model.state_dict()[key], value, err_msg=key)
    state = opt.state_dict()
    assert state.keys() == snapshot[1].keys()
    for key, value in snapshot[1].items():
        np.testing.assert_array_equal(state[key], value, err_msg=key)


# ----------------------------------------------------------------------------- resume


def test_resume_into_a_model_of_another_shape_changes_nothing(tmp_path):
    path = tmp_path / "run.npz"
    model = _net()
    _train(model, nn.SGD(model, lr=0.1, momentum=0.9), path)
    other = _net(classes=4, seed=5)  # the classifier does not fit the checkpoint
    opt = nn.SGD(other, lr=0.1, momentum=0.9)
    before = _snapshot(other, opt)
    with pytest.raises(CheckpointError, match=r"run\.npz does not fit.*classifier\.weight"):
        _train(other, opt, path, resume=True)
    _assert_untouched(other, opt, before)  # not even the layers before the classifier


def test_resume_whose_optimizer_does_not_fit_leaves_the_model_untouched(tmp_path):
    path = tmp_path / "run.npz"
    model = _net()
    _train(model, nn.SGD(model, lr=0.1, momentum=0.9), path)
    fresh = _net(seed=3)  # same architecture, other weights; but Adam instead of SGD
    opt = nn.Adam(fresh, lr=0.01)
    before = _snapshot(fresh, opt)
    with pytest.raises(CheckpointError, match="does not fit.*momentum_buffer"):
        _train(fresh, opt, path, resume=True)
    _assert_untouched(fresh, opt, before)


def test_load_state_dict_is_all_or_nothing():
    model = _net()
    state = model.state_dict()
    before = {k: v.copy() for k, v in state.items()}
    bad = {k: v + 1 for k, v in state.items()}
    bad["classifier.bias"] = np.zeros(7)  # the last entry is the wrong shape
    with pytest.raises(nn.StateDictError, match="classifier.bias"):
        model.load_state_dict(bad)
    for key, value in before.items():
        np.testing.assert_array_equal(model.state_dict()[key], value)
    opt = nn.SGD(model, lr=0.1, momentum=0.9)
    with pytest.raises(KeyError, match="unexpected key"):
        opt.load_state_dict({"lr": np.array(5.0), "step": np.array(3), "nope.slot": np.ones(1)})
    assert opt.lr == 0.1 and opt.step_count == 0


# ----------------------------------------------------------------------------- checkpoint files


def _rewrite_metadata(path, edit):
    arrays, meta = load_checkpoint(path)
    save_checkpoint(path, arrays, edit(meta))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: {k: v for k, v in m.items() if k != "sampler"}, "metadata has no 'sampler'"),
        (lambda m: {**m, "sampler": [1, 2, 3]}, "metadata 'sampler' is a list"),
        (lambda m: {**m, "sampler": {**m["sampler"], "epoch": "x"}}, "no integer 'epoch'"),
        (lambda m: {**m, "history": None}, "metadata 'history' is a NoneType"),
        (
            lambda m: {**m, "model": {"dict": {"w": {"array": "model/absent"}}}},
            "'model/absent' is missing",
        ),
        (lambda m: {**m, "optim": {"weird": 1}}, "malformed state skeleton"),
    ],
)
def test_bad_checkpoint_metadata_names_the_file(tmp_path, edit, message):
    path = tmp_path / "ck-meta.npz"
    model = _net()
    _train(model, nn.SGD(model, lr=0.1), path)
    _rewrite_metadata(path, edit)
    with pytest.raises(CheckpointError, match=message) as info:
        _train(_net(), nn.SGD(_net(), lr=0.1), path, resume=True)
    assert "ck-meta.npz" in str(info.value)


def test_metadata_that_is_not_an_object_names_the_file(tmp_path):
    path = tmp_path / "list.npz"
    save_checkpoint(path, {"a": np.ones(2)}, [1, 2])  # valid JSON, wrong shape
    with pytest.raises(CheckpointError, match=r"list\.npz: metadata must be a JSON object"):
        load_checkpoint(path)


def test_a_checkpoint_in_a_missing_folder_fails_before_training(tmp_path):
    model = _net()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    path = tmp_path / "no" / "such" / "run.npz"
    with pytest.raises(CheckpointError, match="folder .*such' does not exist") as info:
        _train(model, nn.SGD(model, lr=0.1), path)
    assert ".tmp" not in str(info.value)
    for key, value in before.items():  # no step was taken
        np.testing.assert_array_equal(model.state_dict()[key], value)
    with pytest.raises(CheckpointError, match="does not exist") as info:
        save_checkpoint(path, {"a": np.ones(1)}, {})
    assert ".tmp" not in str(info.value)
    with pytest.raises(CheckpointError, match="is a folder"):
        save_checkpoint(tmp_path, {"a": np.ones(1)}, {})


KILLED_SAVE = """
import os, sys
import numpy as np
from tinyodl.checkpoint import save_checkpoint
os.fsync = lambda fd: os._exit(3)  # die after writing the data, before the rename
save_checkpoint(sys.argv[1], {"w": np.ones((50, 50))}, {"step": 2})
"""


def _killed_save(path) -> list:
    result = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(path)], check=False)
    assert result.returncode == 3
    return sorted(p.name for p in path.parent.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("then", ["save", "load"])
def test_temp_files_of_killed_saves_are_removed_by_the_next_save_or_load(tmp_path, then):
    path = tmp_path / "ck.npz"
    save_checkpoint(path, {"w": np.zeros(2)}, {"step": 1})
    assert len(_killed_save(path)) == 1  # the killed process's temp file stays behind
    live = tmp_path / f".ck.npz.{os.getpid()}.abcdefgh.tmp"  # a save in progress: kept
    other = tmp_path / ".other.npz.1.abcdefgh.tmp"  # another checkpoint's: not ours
    live.write_bytes(b"x")
    other.write_bytes(b"x")
    if then == "save":
        save_checkpoint(path, {"w": np.ones(2)}, {"step": 3})
    else:
        assert load_checkpoint(path)[1]["step"] == 1
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([".other.npz.1.abcdefgh.tmp", live.name, "ck.npz"])
    assert remove_stale_temp_files(path) == []


# ----------------------------------------------------------------------------- IDX headers


def _idx(dims, data: bytes = b"") -> bytes:
    return bytes([0, 0, 0x08, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + data


@pytest.mark.parametrize(
    "content, message",
    [
        (_idx([65536] * 4), r"needs 18446744073709551616 data bytes"),  # 2**64 wraps to 0 in int64
        (_idx([2**32 - 1] * 3, b"\x00" * 8), "needs .* data bytes, the file has 8"),
        (_idx([1] * 65, b"\x07"), "declares 65 dimensions"),
        (_idx([1] * 255, b"\x07"), "declares 255 dimensions"),
    ],
)
def test_idx_headers_with_absurd_dimensions_name_the_file(tmp_path, content, message):
    path = tmp_path / "weird-ubyte"
    path.write_bytes(content)
    with pytest.raises(DataFormatError, match=message) as info:
        read_idx(path)
    assert "weird-ubyte" in str(info.value)


# ----------------------------------------------------------------------------- empty batches


@pytest.mark.parametrize("name", ["mlp_2nn", "cnn_mcmahan", "lenet5", "mcunet_tiny"])
def test_an_empty_batch_works_the_same_on_both_backends(backend_name, name):
    model = getattr(models, name)(seed=0).eval()
    x = np.zeros((0, 1, 28, 28), np.float32)
    out = model.forward(x)
    assert out.shape == (0, 10) and out.dtype == np.float32
    dx = model.backward(np.zeros_like(out), per_example=True)
    assert dx.shape == x.shape
    for key, p in model.named_parameters():
        assert p.grad_sample.shape == (0, *p.shape), key
        np.testing.assert_array_equal(p.grad, np.zeros_like(p.data), err_msg=key)


def test_an_empty_batch_in_training_mode_batchnorm_fails_the_same_clear_way(backend_name):
    model = models.mcunet_tiny(seed=0)
    with pytest.raises(ValueError, match=r"BatchNorm2d 'features\.1': training mode needs more"):
        model.forward(np.zeros((0, 1, 28, 28), np.float32))


# ----------------------------------------------------------------------------- Ctrl-C


@pytest.mark.parametrize(
    "argv",
    [
        ["info"],
        ["demo"],
        ["train"],
        ["grade", "nb.ipynb"],
        ["exercises", "release", "--out", "x"],
        ["bench", "kernels"],
    ],
)
def test_keyboard_interrupt_in_any_command_is_one_line_and_130(monkeypatch, capsys, argv):
    import tinyodl.cli as cli

    def interrupted(args):
        assert args.command == argv[0]
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_dispatch", interrupted)
    assert main(argv) == 130
    assert capsys.readouterr().err == "tinyodl: interrupted\n"


def test_an_interrupt_swallowed_by_a_finalizer_still_ends_the_command(monkeypatch, capsys):
    """Ctrl-C landing in a ``__del__`` cannot propagate (Python prints "Exception ignored"
    and carries on); the command delivers it again and still exits 130 with one line."""
    import tinyodl.cli as cli

    class Finalizer:
        def __del__(self):
            raise KeyboardInterrupt

    def command(args):
        Finalizer()  # collected at once: its KeyboardInterrupt is "unraisable"
        for _ in range(200):  # would finish (exit 0) if the interrupt were lost
            time.sleep(0.01)
        return 0

    monkeypatch.setattr(cli, "_dispatch", command)
    handler, hook = signal.getsignal(signal.SIGINT), sys.unraisablehook
    assert main(["info"]) == 130
    assert capsys.readouterr().err == "tinyodl: interrupted\n"
    assert signal.getsignal(signal.SIGINT) is handler and sys.unraisablehook is hook  # restored


def test_sigint_to_a_running_command_prints_one_line_and_exits_130(tmp_path):
    """A real SIGINT while ``tinyodl train`` loads and trains (every sub-command runs under
    the same handler in ``main``; the test above covers them without a subprocess)."""
    argv = ["train", "--epochs", "3", "--no-progress", "--out", str(tmp_path)]
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tinyodl",
            *argv,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        first = proc.stdout.readline()  # the command is running (main's handler is in place)
        assert first, proc.stderr.read()
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    report = f"exit {proc.returncode}\nstdout: {first}{out}\nstderr: {err}"
    assert proc.returncode == 130, report
    assert err.strip().splitlines() == ["tinyodl: interrupted"], report
